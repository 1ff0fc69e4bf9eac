"""The objective of a pair of maps: what training and instance optimization of a network minimise.

``similarity(moving o forward, fixed) + similarity(fixed o backward, moving) + weight *
regularizer``, as published for GradICON and uniGradICON: both directions count, and the
regularizer is GradICON on every second point of the grid (the strided variant, points moved
by one cell of noise), ICON, or the diffusion of every field inside the maps.
"""

from __future__ import annotations

import math

import torch

from ..transforms import Composite, Displacement, Transform, Velocity
from .metrics import jacobian_determinant
from .regularizers import diffusion, gradicon, icon
from .similarity import lncc

REGULARIZERS = ("gradicon", "icon", "diffusion", "velocity_diffusion")


def pair_objective(
    forward: Transform,
    backward: Transform,
    moving: torch.Tensor,
    fixed: torch.Tensor,
    similarity=lncc,
    regularizer: str = "gradicon",
    weight: float = 1.5,
    generator=None,
    **terms,
) -> dict:
    """``{"loss", "similarity", "regularization"}`` of the maps ``forward`` (fixed -> moving)
    and ``backward`` of a batch of pairs ``[B, C, *shape]``.

    ``"diffusion"`` reaches every displacement and velocity field inside the maps,
    ``"velocity_diffusion"`` only the velocity fields (what inverse consistency by
    construction regularizes). The noise of the points is drawn from ``generator``.
    ``terms``: the keyword options of :func:`pair_similarity` (masks, intensity conservation,
    a Dice term), for instance optimization as ``unigradicon-register`` does it.
    """
    if regularizer not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {regularizer!r}; known: {', '.join(REGULARIZERS)}")
    alike = pair_similarity(forward, backward, moving, fixed, similarity, **terms)
    if regularizer in ("gradicon", "icon"):
        strided = tuple(math.ceil(n / 2) for n in fixed.shape[2:])
        penalty = (gradicon if regularizer == "gradicon" else icon)(
            forward, backward, strided, noise=1.0, generator=generator
        )
    else:
        kinds = (Velocity,) if regularizer == "velocity_diffusion" else (Displacement, Velocity)
        fields = [f for f in fields_of(forward) + fields_of(backward) if isinstance(f, kinds)]
        if not fields:
            raise ValueError(f"the maps hold no field for {regularizer} to regularize")
        penalty = sum(diffusion(_tensor(f)) for f in fields)
    return {"loss": alike + weight * penalty, "similarity": alike, "regularization": penalty}


def pair_similarity(
    forward: Transform,
    backward: Transform,
    moving: torch.Tensor,
    fixed: torch.Tensor,
    similarity=lncc,
    fixed_mask=None,
    moving_mask=None,
    intensity_conservation: bool = False,
    fixed_labels=None,
    moving_labels=None,
    dice_weight: float = 0.0,
) -> torch.Tensor:
    """``similarity(moving o forward, fixed) + similarity(fixed o backward, moving)``, with
    the terms of ``unigradicon-register``'s instance optimization (docs/command_line.md).

    ``fixed_mask`` restricts the first similarity, ``moving_mask`` the second (each direction
    is compared on its target's side only). ``intensity_conservation``: each warped image is
    multiplied by its map's volume change (:func:`volume_change`), so that a compressed
    region (lung CT, mass-conserving) darkens; the last voxel of each axis is left out.
    ``dice_weight`` > 0 adds that weight times :func:`dice_term` of the label maps
    ``fixed_labels`` and ``moving_labels`` (on the images' grids).
    """
    total = 0.0
    for transform, source, target, mask in (
        (forward, moving, fixed, fixed_mask),
        (backward, fixed, moving, moving_mask),
    ):
        warped = transform.warp(source, padding="zeros")
        if intensity_conservation:
            crop = (..., *[slice(None, -1)] * (target.dim() - 2))
            warped = warped[crop] * volume_change(transform, target.shape[2:])
            target = target[crop]
            mask = None if mask is None else mask[crop]
        # a custom similarity without masks is called as it always was
        masked = {} if mask is None else {"mask": mask}
        total = total + similarity(warped, target, **masked)
    if dice_weight:
        total = total + dice_weight * dice_term(forward, backward, moving_labels, fixed_labels)
    return total


def volume_change(transform: Transform, shape) -> torch.Tensor:
    """The Jacobian determinant of ``transform`` on a grid of ``shape`` by forward differences,
    ``[B, 1, *(n - 1)]``: the published intensity conservation's factor."""
    return jacobian_determinant(transform, shape, differences="forward").unsqueeze(1)


def dice_term(forward: Transform, backward: Transform, moving_labels, fixed_labels) -> torch.Tensor:
    """``1 - soft Dice``, averaged over the non-zero labels present in both label maps
    ``[1, 1, *shape]``, of each map's one-hot labels carried across by linear interpolation
    (border values beyond the grid), both directions summed."""
    if moving_labels is None or fixed_labels is None:
        raise ValueError("the Dice term needs both a fixed and a moving segmentation")
    moving_labels, fixed_labels = moving_labels.long(), fixed_labels.long()
    shared = torch.unique(moving_labels)
    shared = shared[torch.isin(shared, torch.unique(fixed_labels)) & (shared != 0)]
    if shared.numel() == 0:
        raise ValueError("the segmentations share no non-zero label for the Dice term")
    shape = (1, -1, *[1] * (fixed_labels.dim() - 2))
    dtype = forward._dtype()
    moving_hot, fixed_hot = (
        (labels == shared.reshape(shape)).to(dtype) for labels in (moving_labels, fixed_labels)
    )
    total = 0.0
    for transform, source, target in (
        (forward, moving_hot, fixed_hot),
        (backward, fixed_hot, moving_hot),
    ):
        warped = transform.warp(source, padding="border")
        axes = tuple(range(2, warped.dim()))
        overlap = 2 * (warped * target).sum(axes) + 1e-6  # 1e-6: as published, empty is 1
        dice = overlap / (warped.sum(axes) + target.sum(axes) + 1e-6)
        total = total + (1 - dice).mean()
    return total


def fields_of(transform: Transform) -> list:
    """The displacement and velocity fields a transform value is made of, in its order."""
    parts = transform.transforms if isinstance(transform, Composite) else [transform]
    return [part for part in parts if isinstance(part, (Displacement, Velocity))]


def _tensor(field):
    return field.displacement if isinstance(field, Displacement) else field.velocity

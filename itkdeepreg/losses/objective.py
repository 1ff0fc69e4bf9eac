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
) -> dict:
    """``{"loss", "similarity", "regularization"}`` of the maps ``forward`` (fixed -> moving)
    and ``backward`` of a batch of pairs ``[B, C, *shape]``.

    ``"diffusion"`` reaches every displacement and velocity field inside the maps,
    ``"velocity_diffusion"`` only the velocity fields (what inverse consistency by
    construction regularizes). The noise of the points is drawn from ``generator``.
    """
    if regularizer not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {regularizer!r}; known: {', '.join(REGULARIZERS)}")
    alike = similarity(forward.warp(moving, padding="zeros"), fixed) + similarity(
        backward.warp(fixed, padding="zeros"), moving
    )
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


def fields_of(transform: Transform) -> list:
    """The displacement and velocity fields a transform value is made of, in its order."""
    parts = transform.transforms if isinstance(transform, Composite) else [transform]
    return [part for part in parts if isinstance(part, (Displacement, Velocity))]


def _tensor(field):
    return field.displacement if isinstance(field, Displacement) else field.velocity

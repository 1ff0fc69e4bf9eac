"""What every optimization here shares: input checks, the image pyramid, the Adam loop, the result.

Training, instance optimization and optimization-based registration all minimise
``similarity + lambda * regularizer`` (idea 4 of docs/architecture.md); only the parameters
differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..losses import gaussian_blur
from ..sampling import identity_grid, resample, sample
from ..transforms import Transform


@dataclass
class OptimizationResult:
    """The maps fixed -> moving (``forward``) and moving -> fixed (``backward``), and the
    objective at each step before its update, all levels one after the other."""

    forward: Transform
    backward: Transform
    losses: list = field(default_factory=list)


def check_images(moving: torch.Tensor, fixed: torch.Tensor):
    """Raise a clear error for images that cannot be registered."""
    for name, image in (("moving", moving), ("fixed", fixed)):
        if image.dim() not in (4, 5) or image.shape[:2] != (1, 1):
            raise ValueError(
                f"the {name} image must be one 2D or 3D scalar image [1, 1, *shape], "
                f"got {tuple(image.shape)}"
            )
        if not torch.isfinite(image).all():
            raise ValueError(f"the {name} image has NaN or infinite voxels")
        if image.max() == image.min():
            raise ValueError(f"the {name} image is constant: there is nothing to align")
    if moving.dim() != fixed.dim():
        raise ValueError(f"a {moving.dim() - 2}D moving and a {fixed.dim() - 2}D fixed image")


def check_mask(mask, image, name):
    """The mask as a float tensor on the image's grid, or None; an empty mask is refused."""
    if mask is None:
        return None
    mask = torch.as_tensor(mask)
    if mask.shape[-(image.dim() - 2) :] != image.shape[2:]:
        raise ValueError(
            f"the {name} mask has shape {tuple(mask.shape)}, its image {tuple(image.shape)}"
        )
    mask = (mask != 0).to(image.dtype, copy=True).reshape(image.shape).to(image.device)
    if not mask.any():
        raise ValueError(f"the {name} mask is empty: there is nothing to register")
    return mask


def level_shape(shape, factor):
    """The grid of a pyramid level: ``factor`` times coarser, over the same unit cube."""
    return tuple(max(2, math.ceil((n - 1) / factor) + 1) for n in shape)


def downsample(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Gaussian anti-aliasing of ``factor / 2`` voxels, then linear resampling (as ANTs does)."""
    if factor == 1:
        return image
    return resample(gaussian_blur(image, factor / 2), level_shape(image.shape[2:], factor))


class PyramidLevel:
    """A pair at one pyramid level: the images and masks downsampled, the fixed grid's points."""

    def __init__(self, moving, fixed, moving_mask, fixed_mask, factor):
        self.moving = downsample(moving, factor)
        self.fixed = downsample(fixed, factor)
        self.moving_mask = None if moving_mask is None else downsample(moving_mask, factor)
        self.fixed_mask = None if fixed_mask is None else downsample(fixed_mask, factor)
        self.grid = identity_grid(self.fixed.shape[2:], dtype=fixed.dtype, device=fixed.device)

    def similarity(self, points, similarity):
        """``similarity`` of the moving image sampled at ``points`` (one per voxel of the
        fixed grid) and the fixed image, over the fixed mask and the moving mask carried into
        the fixed grid."""
        warped = sample(self.moving, points, padding="zeros")
        mask = self.fixed_mask
        if self.moving_mask is not None:
            warped_mask = sample(self.moving_mask, points, padding="zeros")
            mask = warped_mask if mask is None else mask * warped_mask
        return similarity(warped, self.fixed, mask=mask)


def seeded_generator(like: torch.Tensor, seed: int = 0) -> torch.Generator:
    """A seeded random source on the tensor's device: the same input gives the same result."""
    return torch.Generator(device=like.device).manual_seed(seed)


def minimise(
    objective, parameters, iterations, learning_rate, tolerance, patience, bar, decay_to=1.0
):
    """Adam steps until ``iterations``, or, with a ``tolerance``, until the objective has improved
    by less than ``tolerance`` (relative) over the last ``patience`` steps. GradICON's points
    move every step, so the loss is noisy: a tolerance of 0 would stop at the first uphill step.
    The learning rate falls along a half cosine to ``decay_to`` times itself at the last step
    (1: constant).

    ``bar`` is a tqdm progress bar that counts the steps. Returns the objective at each step.
    """
    optimizer = torch.optim.Adam(parameters, lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(iterations - 1, 1), eta_min=decay_to * learning_rate
    )
    losses = []
    for _ in range(iterations):
        optimizer.zero_grad()
        loss = objective()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.update()
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if tolerance is not None and len(losses) > patience:
            earlier = losses[-patience - 1]
            if earlier - losses[-1] < tolerance * abs(earlier):
                break
    return losses


def progress_bar(total, description, enabled):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, disable=not enabled)

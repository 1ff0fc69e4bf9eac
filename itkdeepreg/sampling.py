"""Sampling tensors at unit-cube coordinates (DESIGN.md, idea 1).

Images are tensors ``[B, C, *shape]``; coordinates are tensors ``[B, D, *spatial]`` whose
channel ``i`` is a position along tensor axis ``i`` in ``[0, 1]`` (voxel ``k`` of ``N`` at
``k / (N - 1)``). ``spatial`` is any shape: a grid, or ``(P,)`` for a list of points.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_MODES = {"linear": "bilinear", "nearest": "nearest"}
_PADDINGS = ("border", "zeros")


def identity_grid(shape, dtype=torch.float32, device=None) -> torch.Tensor:
    """Unit-cube coordinates of every voxel of a grid, ``[1, D, *shape]``."""
    axes = [torch.linspace(0, 1, n, dtype=dtype, device=device) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]


def sample(volume: torch.Tensor, coords: torch.Tensor, mode="linear", padding="border"):
    """Values of ``volume [B, C, *shape]`` at ``coords [B, D, *spatial]``: ``[B, C, *spatial]``.

    ``mode`` is ``"linear"`` or ``"nearest"``; ``padding`` is ``"border"`` (repeat the edge)
    or ``"zeros"``. A batch of one on either side is broadcast to the other's batch. The
    result is on the volume's device, in the wider of the two dtypes.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {sorted(_MODES)}, got {mode!r}")
    if padding not in _PADDINGS:
        raise ValueError(f"padding must be one of {_PADDINGS}, got {padding!r}")
    dimension = volume.dim() - 2
    if coords.shape[1] != dimension:
        raise ValueError(f"coordinates have {coords.shape[1]} channels for a {dimension}D volume")
    batch = max(volume.shape[0], coords.shape[0])
    dtype = torch.promote_types(volume.dtype, coords.dtype)
    dtype = dtype if dtype.is_floating_point else torch.float32
    volume = volume.to(dtype).expand(batch, *volume.shape[1:])
    coords = coords.to(device=volume.device, dtype=dtype).expand(batch, *coords.shape[1:])
    spatial = coords.shape[2:]
    if len(spatial) != dimension:  # grid_sample takes a grid of points: make one, P x 1 (x 1)
        coords = coords.reshape(batch, dimension, -1, *[1] * (dimension - 1))
    # grid_sample wants [-1, 1] coordinates with the last axis in (x, y, z) order
    grid = coords.movedim(1, -1).flip(-1) * 2 - 1
    values = F.grid_sample(
        volume, grid, mode=_MODES[mode], padding_mode=padding, align_corners=True
    )
    return values.reshape(batch, volume.shape[1], *spatial)


def resample(image: torch.Tensor, shape, mode="linear") -> torch.Tensor:
    """``image [B, C, *shape]`` resampled onto a grid of another shape over the same unit cube.

    This is how an image goes onto a model grid (say 175^3) and back; the physical geometry
    of the new grid is ``ImageGeometry.resized(shape)``.
    """
    dtype = image.dtype if image.is_floating_point() else torch.float32
    grid = identity_grid(shape, dtype=dtype, device=image.device)
    return sample(image, grid, mode=mode, padding="border")

"""Measures of a map's regularity: the Jacobian determinant and the share of folded voxels."""

from __future__ import annotations

import torch

from ..sampling import identity_grid
from ..transforms import Transform


def jacobian_determinant(transform: Transform, shape) -> torch.Tensor:
    """``det(d transform / d x)`` at the points of a grid of ``shape``: ``[B, *shape]``.

    Central differences (one-sided at the edges), in unit-cube coordinates on both sides, so
    the identity gives 1 and an orientation-reversing (folded) neighbourhood a value <= 0.
    """
    grid = identity_grid(shape, dtype=transform._dtype(), device=transform._device())
    mapped = transform(grid)
    dimension = len(shape)
    spacing = [1.0 / (n - 1) for n in shape]
    columns = torch.gradient(mapped, spacing=spacing, dim=list(range(2, 2 + dimension)))
    jacobian = torch.stack(columns, -1).movedim(1, -2)  # [B, *shape, D (output), D (input)]
    return torch.linalg.det(jacobian)


def folding_fraction(transform: Transform, shape) -> float:
    """The share of grid points where the map folds (Jacobian determinant <= 0)."""
    return (jacobian_determinant(transform, shape) <= 0).float().mean().item()

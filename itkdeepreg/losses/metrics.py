"""Measures of a registration: the Jacobian determinant, the share of folded voxels, Dice."""

from __future__ import annotations

import torch

from ..sampling import identity_grid
from ..transforms import Transform


def jacobian_determinant(transform: Transform, shape, differences="central") -> torch.Tensor:
    """``det(d transform / d x)`` at the points of a grid of ``shape``: ``[B, *shape]``.

    Central differences (one-sided at the edges), in unit-cube coordinates on both sides, so
    the identity gives 1 and an orientation-reversing (folded) neighbourhood a value <= 0.
    ``differences="forward"``: one value a cell, ``[B, *(n - 1)]``, each axis's step taken to
    the cell's far corner, as the published intensity conservation computes it.
    """
    if differences not in ("central", "forward"):
        raise ValueError(f'differences must be "central" or "forward", got {differences!r}')
    grid = identity_grid(shape, dtype=transform._dtype(), device=transform._device())
    mapped = transform(grid)
    dimension = len(shape)
    if differences == "central":
        spacing = [1.0 / (n - 1) for n in shape]
        columns = torch.gradient(mapped, spacing=spacing, dim=list(range(2, 2 + dimension)))
    else:
        far = (slice(None), slice(None), *[slice(1, None)] * dimension)
        columns = []
        for axis in range(dimension):
            near = list(far)
            near[2 + axis] = slice(None, -1)
            # a difference over one voxel, in unit-cube coordinates per input voxel: times n - 1
            columns.append((mapped[far] - mapped[tuple(near)]) * (shape[axis] - 1))
    jacobian = torch.stack(columns, -1).movedim(1, -2)  # [B, *points, D (output), D (input)]
    return torch.linalg.det(jacobian)


def folding_fraction(transform: Transform, shape) -> float:
    """The share of grid points where the map folds (Jacobian determinant <= 0)."""
    return (jacobian_determinant(transform, shape) <= 0).float().mean().item()


def dice(labels_a: torch.Tensor, labels_b: torch.Tensor, labels=None) -> torch.Tensor:
    """Dice overlap ``2 |A n B| / (|A| + |B|)`` of each label (by default every non-zero label
    of either map), in the order of ``labels``; a label in neither map scores 1."""
    if labels is None:
        labels = torch.unique(torch.cat([labels_a.flatten(), labels_b.flatten()]))
        labels = labels[labels != 0].tolist()
    scores = []
    for label in labels:
        a, b = labels_a == label, labels_b == label
        total = a.sum() + b.sum()
        scores.append(1.0 if total == 0 else (2 * (a & b).sum() / total).item())
    return torch.tensor(scores)

"""Regularizers: inverse consistency of two transform values, and smoothness of a field.

ICON and GradICON take the two maps of a registration, ``forward`` (A's cube to B's, or
fixed to moving) and ``backward`` (the other way), as transform values; they measure how far
``forward o backward`` is from the identity (ICON) or how far its Jacobian is from the identity
matrix (GradICON). Diffusion and bending energy take a field ``[B, D, *shape]`` in unit-cube
units and differentiate it with respect to unit-cube coordinates, so their values do not
depend on the grid's resolution.
"""

from __future__ import annotations

import torch

from ..sampling import identity_grid
from ..transforms import Transform


def icon(forward: Transform, backward: Transform, shape, noise: float = 0.0) -> torch.Tensor:
    """Mean squared distance, in unit-cube units, of ``forward(backward(x))`` from ``x``.

    ``x`` runs over a grid of ``shape``, moved by uniform noise of ``noise`` grid cells.
    """
    points = _points(forward, shape, noise)
    return ((forward(backward(points)) - points) ** 2).sum(1).mean()


def gradicon(
    forward: Transform, backward: Transform, shape, delta: float = 1e-3, noise: float = 0.0
) -> torch.Tensor:
    """Mean squared Frobenius norm of ``J(forward o backward) - I`` by finite differences.

    The Jacobian is estimated at the points of a grid of ``shape`` (a coarse grid gives the
    strided variant the foundation models were trained with) with steps of ``delta`` along
    each axis; the points move by uniform noise of ``noise`` grid cells.
    """
    points = _points(forward, shape, noise)
    error = forward(backward(points)) - points
    total = 0.0
    for axis in range(points.shape[1]):
        step = torch.zeros_like(points)
        step[:, axis] = delta
        moved_error = forward(backward(points + step)) - (points + step)
        total = total + (((moved_error - error) / delta) ** 2).sum(1).mean()
    return total


def diffusion(field: torch.Tensor) -> torch.Tensor:
    """Mean squared Frobenius norm of the field's Jacobian ``sum_k |d u / d x_k|^2``."""
    cells = field.shape[2:]
    return sum((derivative**2).sum(1).mean() for derivative in _derivatives(field, cells))


def bending_energy(field: torch.Tensor) -> torch.Tensor:
    """Mean ``sum_{k, l} |d^2 u / d x_k d x_l|^2`` (mixed derivatives counted twice)."""
    cells = field.shape[2:]
    return sum(
        (second**2).sum(1).mean()
        for first in _derivatives(field, cells)
        for second in _derivatives(first, cells)
    )


def _derivatives(field, shape):
    """Forward differences along each axis of a field sampled on a grid of ``shape``.

    In unit-cube units: a difference over one grid cell, divided by the cell, ``1 / (N - 1)``.
    """
    return [torch.diff(field, dim=axis + 2) * (n - 1) for axis, n in enumerate(shape)]


def _points(transform: Transform, shape, noise):
    dtype, device = transform._dtype(), transform._device()
    points = identity_grid(shape, dtype=dtype, device=device)
    if noise:
        cell = torch.tensor([1.0 / (n - 1) for n in shape], dtype=dtype, device=device)
        cell = cell.reshape(1, -1, *[1] * len(shape))
        points = points + noise * cell * (torch.rand_like(points) * 2 - 1)
    return points

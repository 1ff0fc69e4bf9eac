"""Regularizers: inverse consistency of two transform values, and smoothness of a field.

ICON and GradICON take the two maps of a registration, ``forward`` (fixed cube to moving
cube) and ``backward`` (the other way), as transform values; they measure how far
``forward o backward`` is from the identity (ICON) or how far its Jacobian is from the identity
matrix (GradICON), with the published normalisation (means over points and vector entries).
Diffusion and bending energy take a field ``[B, D, *shape]`` in unit-cube units and
differentiate it with respect to unit-cube coordinates, so their values do not depend on the
grid's resolution.
"""

from __future__ import annotations

import torch

from ..sampling import identity_grid
from ..transforms import Transform


def icon(
    forward: Transform, backward: Transform, shape, noise: float = 0.0, generator=None
) -> torch.Tensor:
    """Mean squared entry of ``forward(backward(x)) - x`` (unit-cube units): ICON, one way.

    ``x`` runs over a grid of ``shape`` moved by Gaussian noise of ``noise`` grid cells
    (standard deviation), drawn from ``generator`` (or torch's global one). The published ICON
    loss adds the other way round as well.
    """
    points = _points(forward, shape, noise, generator)
    return ((forward(backward(points)) - points) ** 2).mean()


def gradicon(
    forward: Transform,
    backward: Transform,
    shape,
    delta: float = 1e-3,
    noise: float = 0.0,
    generator=None,
) -> torch.Tensor:
    """GradICON: how far the Jacobian of ``forward o backward`` is from the identity matrix.

    With ``e(x) = forward(backward(x)) - x`` and steps of ``delta`` along each axis ``k``, the
    loss is ``sum_k mean((e(x + delta u_k) - e(x))^2) / delta^2``, the mean over the points
    of a grid of ``shape`` and the vector entries: the published normalisation, so published
    weights ``lambda`` carry over. The points move by Gaussian noise of ``noise`` grid cells.
    ``gradicon(phi_AB, phi_BA, (88,) * 3, noise=1.0)`` is the strided loss uniGradICON was
    trained with (every second point of 175^3; noise 1/87, published 2/175). ``generator``
    draws the noise.
    """
    points = _points(forward, shape, noise, generator)
    dimension = points.shape[1]
    steps = delta * torch.eye(dimension, dtype=points.dtype, device=points.device)
    # each point and its moves along the axes side by side, in one set of points: the maps
    # are sampled once, and a point's 1 + D samples share their cells in the cache
    moved = torch.stack(
        [points] + [points + step.reshape(1, -1, *[1] * dimension) for step in steps], -1
    )
    error, *moved_errors = (forward(backward(moved)) - moved).unbind(-1)
    return sum((((moved_error - error) / delta) ** 2).mean() for moved_error in moved_errors)


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


def _points(transform: Transform, shape, noise, generator):
    dtype, device = transform._dtype(), transform._device()
    points = identity_grid(shape, dtype=dtype, device=device)
    if noise:
        cell = torch.tensor([1.0 / (n - 1) for n in shape], dtype=dtype, device=device)
        draw = torch.randn(points.shape, generator=generator, dtype=dtype, device=device)
        points = points + noise * cell.reshape(1, -1, *[1] * len(shape)) * draw
    return points

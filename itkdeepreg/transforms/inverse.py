"""Inverses of transform values, exact where the value has one and numerical otherwise."""

from __future__ import annotations

from ..sampling import identity_grid
from .base import Transform
from .composite import Composite, compose
from .field import Displacement


def invert(transform: Transform, iterations: int = 20) -> Transform:
    """The inverse of ``transform``, part by part.

    Affine maps and velocity fields are inverted exactly. A displacement field ``x -> x + u(x)``
    becomes a displacement field ``w`` on the same grid with ``w(y) = -u(y + w(y))``, found by
    fixed-point iteration, with the same rule off the grid. That converges where the field's
    Jacobian stays well inside the unit ball, as for a registration's field: inverting a
    composite part by part keeps each field in its own grid's coordinates, where this holds,
    whatever affine maps surround it.
    """
    if isinstance(transform, Composite):
        return compose(*[invert(t, iterations) for t in reversed(transform.transforms)])
    if not isinstance(transform, Displacement):
        return transform.inverse()
    displacement = transform.displacement
    grid = identity_grid(displacement.shape[2:], displacement.dtype, displacement.device)
    inverse = -displacement
    for _ in range(iterations):
        points = grid + inverse
        inverse = points - transform(points)
    return Displacement(inverse, outside=transform.outside)

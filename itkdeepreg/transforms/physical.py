"""Between unit-cube maps and physical-space maps, through two image geometries."""

from __future__ import annotations

import torch

from ..geometry import ImageGeometry
from .affine import Affine
from .base import Transform
from .composite import compose


def to_physical(transform: Transform, fixed: ImageGeometry, moving: ImageGeometry) -> Transform:
    """The map of physical fixed points to physical moving points (coordinates in (x, y, z)).

    ``transform`` maps the fixed image's unit cube to the moving image's.
    """
    return compose(_affine(moving.unit_to_physical), transform, _affine(fixed.physical_to_unit))


def from_physical(transform: Transform, fixed: ImageGeometry, moving: ImageGeometry) -> Transform:
    """The unit-cube map of a map of physical fixed points to physical moving points."""
    return compose(_affine(moving.physical_to_unit), transform, _affine(fixed.unit_to_physical))


def _affine(matrix) -> Affine:
    return Affine(torch.as_tensor(matrix, dtype=torch.float64))

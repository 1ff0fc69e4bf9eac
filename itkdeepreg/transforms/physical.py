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
    _check(transform, fixed, moving)
    return compose(_affine(moving.unit_to_physical), transform, _affine(fixed.physical_to_unit))


def from_physical(transform: Transform, fixed: ImageGeometry, moving: ImageGeometry) -> Transform:
    """The unit-cube map of a map of physical fixed points to physical moving points."""
    _check(transform, fixed, moving)
    return compose(_affine(moving.physical_to_unit), transform, _affine(fixed.unit_to_physical))


def _check(transform, fixed, moving):
    for name, geometry in (("fixed", fixed), ("moving", moving)):
        if not isinstance(geometry, ImageGeometry):
            raise TypeError(
                f"{name} must be an ImageGeometry (ImageGeometry.from_image(image) for an "
                f"itk.Image), got {type(geometry).__name__}"
            )
    if not transform.dimension == fixed.dimension == moving.dimension:
        raise ValueError(
            f"a {transform.dimension}D transform between a {fixed.dimension}D and a "
            f"{moving.dimension}D image"
        )


def _affine(matrix) -> Affine:
    return Affine(torch.as_tensor(matrix, dtype=torch.float64))

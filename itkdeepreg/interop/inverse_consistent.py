"""A registration's map and its inverse between two images, in ITK's terms."""

from __future__ import annotations

import itk
import numpy as np
import torch

from ..files import write_all
from ..losses import jacobian_determinant
from ..transforms import Transform, exponentiated, from_physical, invert, to_physical
from .images import as_geometry, image_to_tensor, tensor_to_image
from .transformix import write_transformix_parameters
from .transforms import (
    TRANSFORM_SUFFIXES,
    displacement_field_image,
    read_transform,
    to_itk_transform,
    write_displacement_field,
    write_transform,
)


class InverseConsistentTransform:
    """The map from the fixed image to the moving image, and its inverse.

    ``forward`` maps the fixed image's unit cube to the moving image's and ``backward`` the
    reverse (transform values; ``None`` computes it with
    :func:`~itkdeepreg.transforms.invert` when it is first used); ``fixed`` and ``moving`` are
    ``itk.Image`` or
    :class:`~itkdeepreg.geometry.ImageGeometry`. As an ITK transform it maps a physical fixed
    point to a physical moving point, which is what ``itk.ResampleImageFilter``, ANTs and
    transformix expect of the transform that warps the moving image onto the fixed one.
    :meth:`GetITKTransform` is the ``itk.CompositeTransform`` to hand to ITK filters.

    Both maps are held as ITK holds them (:func:`~itkdeepreg.transforms.exponentiated`: an
    integrated velocity field's flow sampled on its grid), so that what is applied
    (``TransformPoint``, ``Warp``, Jacobians) is exactly what is written.
    """

    def __init__(self, forward: Transform, backward: Transform | None, fixed, moving):
        with torch.no_grad():  # an ITK-side value: no graph kept alive
            self.forward = exponentiated(forward)
            self._backward = None if backward is None else exponentiated(backward)
        # kept to be inverted as given: a velocity field exactly, not its sampled flow
        self._to_invert = forward if backward is None else None
        self.fixed_geometry, self.moving_geometry = as_geometry(fixed), as_geometry(moving)

    @property
    def backward(self) -> Transform:
        if self._backward is None:  # only now: warping and Jacobians need no inverse
            with torch.no_grad():
                self._backward = exponentiated(invert(self._to_invert))
            self._to_invert = None
        return self._backward

    def TransformPoint(self, point):
        """The moving physical point (LPS mm, x-y-z) of a fixed physical point."""
        physical = to_physical(
            self.forward.to(dtype=torch.float64), self.fixed_geometry, self.moving_geometry
        )
        points = torch.tensor(np.asarray(point, dtype=np.float64)).reshape(1, -1, 1)
        with torch.no_grad():
            return tuple(physical(points)[0, :, 0].tolist())

    def GetInverseTransform(self) -> InverseConsistentTransform:
        """The inverse: from the moving image to the fixed image."""
        return InverseConsistentTransform(
            self.backward, self.forward, self.moving_geometry, self.fixed_geometry
        )

    def between(self, fixed, moving) -> InverseConsistentTransform:
        """The same physical map as values between the unit cubes of two other images (or
        geometries): how a result starts a registration of images on other grids."""
        fixed, moving = as_geometry(fixed), as_geometry(moving)
        if fixed == self.fixed_geometry and moving == self.moving_geometry:
            return self
        forward = to_physical(self.forward, self.fixed_geometry, self.moving_geometry)
        backward = to_physical(self.backward, self.moving_geometry, self.fixed_geometry)
        return InverseConsistentTransform(
            from_physical(forward, fixed, moving),
            from_physical(backward, moving, fixed),
            fixed,
            moving,
        )

    def Warp(self, image, mode="linear"):
        """``image`` (on the moving image's grid) resampled onto the fixed image's grid through
        the map, in its own pixel type; ``mode``: ``"linear"`` or ``"nearest"``."""
        tensor, geometry = image_to_tensor(image)
        if geometry.shape != self.moving_geometry.shape:
            raise ValueError(
                f"the image has size {geometry.size}, the moving image {self.moving_geometry.size}"
            )
        with torch.no_grad():
            warped = self.forward.warp(tensor, self.fixed_geometry.shape, mode=mode)
        return tensor_to_image(warped, self.fixed_geometry, itk.template(image)[1][0])

    def GetITKTransform(self):
        """The compact export: an ``itk.CompositeTransform`` (double) equal to the map."""
        return to_itk_transform(self.forward, self.fixed_geometry, self.moving_geometry)

    def GetDisplacementField(self):
        """The map at the fixed voxels: physical displacements (mm) on the fixed grid, what
        ANTs calls a warp (``itk.Image[itk.Vector[itk.D, D], D]``)."""
        return displacement_field_image(self.forward, self.fixed_geometry, self.moving_geometry)

    def GetJacobianDeterminant(self):
        """``det`` of the map's physical Jacobian at the fixed voxels, as an ``itk.Image[itk.F]``:
        the moving volume per fixed volume, 1 where the map preserves volume, <= 0 where it
        folds."""
        shape = self.fixed_geometry.shape
        with torch.no_grad():
            unit = jacobian_determinant(self.forward.to(device="cpu", dtype=torch.float64), shape)
        # physical Jacobian = moving's unit->physical @ unit Jacobian @ fixed's physical->unit
        scale = np.linalg.det(self.moving_geometry.unit_to_physical[:-1, :-1]) / np.linalg.det(
            self.fixed_geometry.unit_to_physical[:-1, :-1]
        )
        return tensor_to_image(unit * scale, self.fixed_geometry, itk.F)

    def Write(self, path, inverse_path=None) -> None:
        """Write the map (and its inverse) as ITK transform files (``.h5``: ITK and
        ``antsApplyTransforms`` read it), both or neither."""
        outputs = [(path, self.forward, self.fixed_geometry, self.moving_geometry)]
        if inverse_path is not None:
            outputs.append((inverse_path, self.backward, self.moving_geometry, self.fixed_geometry))
        write_all(
            [
                (target, _writer(write_transform, value, a, b), TRANSFORM_SUFFIXES)
                for target, value, a, b in outputs
            ]
        )

    def WriteDisplacementField(self, path) -> None:
        """Write the map at the fixed voxels as a displacement-field image (an ANTs warp)."""
        write_displacement_field(self.forward, path, self.fixed_geometry, self.moving_geometry)

    def WriteTransformixParameters(self, path, field_path=None) -> None:
        """Write the map as a transformix parameter file with its displacement field, so that
        ``itk.transformix_filter`` (or ``transformix -tp``) applies it:
        :func:`~itkdeepreg.interop.transformix.write_transformix_parameters`."""
        write_transformix_parameters(
            self.forward, path, self.fixed_geometry, self.moving_geometry, field_path
        )

    @classmethod
    def Read(cls, path, fixed, moving, inverse_path=None) -> InverseConsistentTransform:
        """Read a transform file written by :meth:`Write`, ITK or ANTs. Without
        ``inverse_path`` the inverse is computed (exact for affine maps, by fixed-point
        iteration for displacement fields)."""
        forward = read_transform(path, fixed, moving)
        backward = None if inverse_path is None else read_transform(inverse_path, moving, fixed)
        return cls(forward, backward, fixed, moving)


def _writer(write, value, fixed, moving):
    """``write(value, temporary, fixed, moving)`` as a function of the temporary name alone."""
    return lambda temporary: write(value, temporary, fixed, moving)

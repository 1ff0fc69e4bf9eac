"""A registration's map and its inverse between two images, in ITK's terms."""

from __future__ import annotations

import os

import itk
import numpy as np
import torch

from ..files import write_all
from ..geometry import ImageGeometry
from ..losses import jacobian_determinant
from ..transforms import Transform, exponentiated, from_physical, invert, to_physical
from .images import as_geometry, image_to_tensor, tensor_to_image
from .transformix import write_transformix_parameters
from .transforms import (
    TRANSFORM_SUFFIXES,
    _warp_label_array,
    displacement_field_image,
    from_itk_transform,
    read_itk_transform,
    to_itk_transform,
    write_displacement_field,
    write_transform,
)


class InverseConsistentTransform:
    """The map from the fixed image to the moving image, and its inverse.

    ``forward`` maps the fixed image's unit cube to the moving image's and ``backward`` the
    reverse (transform values; ``None`` computes it with
    :func:`~itkdeepreg.transforms.invert` when it is first used); ``fixed`` and ``moving`` are
    ``itk.Image`` or :class:`~itkdeepreg.geometry.ImageGeometry`, or ``None`` where unknown (a
    file read alone): the maps then act on physical points in tensor-axis order (z, y, x mm),
    and what needs the fixed grid (``Warp``, the Jacobian, the displacement field) takes a
    ``reference``. As an ITK transform it maps a physical fixed point to a physical moving
    point, which is what ``itk.ResampleImageFilter``, ANTs and transformix expect of the
    transform that warps the moving image onto the fixed one. ITK's wrapped functions take
    the object itself where they take a transform (``itk.resample_image_filter(transform=
    result)``, ``itk.transformwrite``); :meth:`GetITKTransform` is the ``itk.CompositeTransform``
    as an ITK object of its own.

    Both maps are held as ITK holds them (:func:`~itkdeepreg.transforms.exponentiated`: an
    integrated velocity field's flow sampled on its grid), so that what is applied
    (``TransformPoint``, ``Warp``, Jacobians) is exactly what is written.
    """

    def __init__(self, forward: Transform, backward: Transform | None, fixed=None, moving=None):
        with torch.no_grad():  # an ITK-side value: no graph kept alive
            self.forward = exponentiated(forward)
            self._backward = None if backward is None else exponentiated(backward)
        # kept to be inverted as given: a velocity field exactly, not its sampled flow
        self._to_invert = forward if backward is None else None
        self.fixed_geometry, self.moving_geometry = (
            None if g is None else as_geometry(g) for g in (fixed, moving)
        )
        self._itk = None  # (forward, its ITK export), made when ITK first asks
        self._physical = None  # (forward, it in float64 between physical frames): points

    @property
    def this(self):
        """SWIG's handle on the ITK export: where a wrapped ITK function takes an ITK
        transform, SWIG looks for ``this`` and so takes this object."""
        if self._itk is None or self._itk[0] is not self.forward:
            self._itk = (self.forward, self.GetITKTransform())
        return self._itk[1].this

    def __getstate__(self):
        return {**self.__dict__, "_itk": None, "_physical": None}  # ITK's: no copy, no pickle

    def _frames(self):
        """The fixed and moving geometries, a physical frame for an unknown one."""
        frame = _physical_frame(self.forward.dimension)
        return tuple(frame if g is None else g for g in (self.fixed_geometry, self.moving_geometry))

    def _forward_between(self, fixed, moving) -> Transform:
        """``forward`` between the unit cubes of two other geometries."""
        own = self._frames()
        if (fixed, moving) == own:
            return self.forward
        return from_physical(to_physical(self.forward, *own), fixed, moving)

    def _reference(self, reference) -> ImageGeometry:
        """The grid to work on: ``reference``, else the fixed image's."""
        if reference is not None:
            return as_geometry(reference)
        if self.fixed_geometry is None:
            raise ValueError(
                "this transform was read without its fixed image: give reference= (an image "
                "or ImageGeometry, the grid to work on)"
            )
        return self.fixed_geometry

    @property
    def backward(self) -> Transform:
        if self._backward is None:  # only now: warping and Jacobians need no inverse
            with torch.no_grad():
                self._backward = exponentiated(invert(self._to_invert))
            self._to_invert = None
        return self._backward

    def TransformPoint(self, point):
        """The moving physical point (LPS mm, x-y-z) of a fixed physical point."""
        if self._physical is None or self._physical[0] is not self.forward:
            # made once, as ITK holds its fields in double: a loop over landmarks then costs
            # one lookup a point, not a copy of the field
            physical = to_physical(self.forward.to(dtype=torch.float64), *self._frames())
            self._physical = (self.forward, physical)
        points = torch.tensor(np.asarray(point, dtype=np.float64)).reshape(1, -1, 1)
        with torch.no_grad():
            return tuple(self._physical[1](points)[0, :, 0].tolist())

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
        own_fixed, own_moving = self._frames()
        forward = to_physical(self.forward, own_fixed, own_moving)
        backward = to_physical(self.backward, own_moving, own_fixed)
        return InverseConsistentTransform(
            from_physical(forward, fixed, moving),
            from_physical(backward, moving, fixed),
            fixed,
            moving,
        )

    def Warp(self, image, mode="linear", reference=None):
        """``image`` (on the moving image's grid; on its own grid if the moving image is
        unknown) resampled onto the fixed image's grid (or ``reference``'s) through the map,
        in its own pixel type, as ``itk.ResampleImageFilter`` resamples it (the edge repeated
        up to half a voxel beyond it, 0 further). ``mode``: ``"linear"``, ``"nearest"``, or
        ``"label"`` for label maps (:func:`~itkdeepreg.interop.transforms.warp_labels`: each
        label's indicator interpolated linearly, the most probable label kept; only the
        image's values)."""
        if mode not in ("linear", "nearest", "label"):
            raise ValueError(f'mode must be "linear", "nearest" or "label", got {mode!r}')
        fixed = self._reference(reference)
        own = as_geometry(image)
        moving = own if self.moving_geometry is None else self.moving_geometry
        if own.shape != moving.shape:
            raise ValueError(f"the image has size {own.size}, the moving image {moving.size}")
        if mode == "label":  # ITK through the export: one rule with `itkdeepreg warp`
            array = itk.array_view_from_image(image)
            warped = torch.from_numpy(_warp_label_array(array, moving, self, fixed))
        else:
            tensor = image_to_tensor(image)[0]
            with torch.no_grad():
                value = self._forward_between(fixed, moving)
                # ITK's rule at the moving image's edge: what resampling through the file gives
                warped = value.warp(tensor, fixed.shape, mode=mode, padding="itk")
        return tensor_to_image(warped, fixed, itk.template(image)[1][0])

    def GetITKTransform(self):
        """The compact export: an ``itk.CompositeTransform`` (double) equal to the map."""
        return to_itk_transform(self.forward, *self._frames())

    def GetDisplacementField(self, reference=None):
        """The map at the fixed voxels (or ``reference``'s): physical displacements (mm) on
        that grid, what ANTs calls a warp (``itk.Image[itk.Vector[itk.D, D], D]``)."""
        return displacement_field_image(*self._on(reference))

    def GetJacobianDeterminant(self, reference=None):
        """``det`` of the map's physical Jacobian at the fixed voxels (or ``reference``'s), as
        an ``itk.Image[itk.F]``: the moving volume per fixed volume, 1 where the map preserves
        volume, <= 0 where it folds."""
        value, fixed, moving = self._on(reference)
        with torch.no_grad():
            unit = jacobian_determinant(value.to(device="cpu", dtype=torch.float64), fixed.shape)
        # physical Jacobian = moving's unit->physical @ unit Jacobian @ fixed's physical->unit
        scale = np.linalg.det(moving.unit_to_physical[:-1, :-1]) / np.linalg.det(
            fixed.unit_to_physical[:-1, :-1]
        )
        return tensor_to_image(unit * scale, fixed, itk.F)

    def _on(self, reference):
        """``(forward, fixed, moving)`` with ``fixed`` the grid to work on."""
        fixed, moving = self._reference(reference), self._frames()[1]
        return self._forward_between(fixed, moving), fixed, moving

    def Write(self, path, inverse_path=None) -> None:
        """Write the map (and its inverse) as ITK transform files (``.h5``: ITK and
        ``antsApplyTransforms`` read it), both or neither."""
        fixed, moving = self._frames()
        outputs = [(path, self.forward, fixed, moving)]
        if inverse_path is not None:
            outputs.append((inverse_path, self.backward, moving, fixed))
        write_all(
            [
                (target, _writer(write_transform, value, a, b), TRANSFORM_SUFFIXES)
                for target, value, a, b in outputs
            ]
        )

    def WriteDisplacementField(self, path, reference=None) -> None:
        """Write the map at the fixed voxels (or ``reference``'s) as a displacement-field
        image (an ANTs warp)."""
        value, fixed, moving = self._on(reference)
        write_displacement_field(value, path, fixed, moving)

    def WriteTransformixParameters(self, path, field_path=None, reference=None) -> None:
        """Write the map as a transformix parameter file with its displacement field on the
        fixed grid (or ``reference``'s), so that ``itk.transformix_filter`` (or
        ``transformix -tp``) applies it:
        :func:`~itkdeepreg.interop.transformix.write_transformix_parameters`."""
        value, fixed, moving = self._on(reference)
        write_transformix_parameters(value, path, fixed, moving, field_path)

    @classmethod
    def Read(cls, path, fixed=None, moving=None, inverse_path=None) -> InverseConsistentTransform:
        """Read a transform file written by :meth:`Write`, ITK or ANTs (a displacement-field
        image too: an ANTs warp). The file is enough: without ``fixed`` and ``moving`` the map
        is a physical one, and ``Warp`` and the Jacobian take a ``reference`` grid. Without
        ``inverse_path`` the inverse is computed (exact for affine maps, by fixed-point
        iteration for displacement fields)."""
        forward = read_itk_transform(path)
        backward = None if inverse_path is None else read_itk_transform(inverse_path)
        return cls._of_itk(forward, backward, fixed, moving)

    @classmethod
    def _of_itk(cls, forward, backward=None, fixed=None, moving=None):
        """The result of ITK transforms (fixed -> moving points, and back)."""
        frame = _physical_frame(forward.GetInputSpaceDimension())
        f, m = (frame if g is None else as_geometry(g) for g in (fixed, moving))
        forward = from_itk_transform(forward, f, m)
        backward = None if backward is None else from_itk_transform(backward, m, f)
        return cls(forward, backward, fixed, moving)


def as_inverse_consistent(transform, fixed, moving):
    """``transform`` (fixed -> moving points: an ITK transform, or an
    :class:`InverseConsistentTransform` of any grids) as an :class:`InverseConsistentTransform`
    between ``fixed`` and ``moving``; ``None`` stays ``None``. An ITK transform's inverse is
    computed when it is asked for."""
    if transform is None:
        return None
    if isinstance(transform, InverseConsistentTransform):
        return transform.between(fixed, moving)
    value = from_itk_transform(transform, fixed, moving)
    return InverseConsistentTransform(value, None, fixed, moving)


def jacobian_determinant_image(transform, reference):
    """``det`` of the physical Jacobian of ``transform`` (fixed -> moving points: a transform
    file, ANTs warps included, an ITK transform, or an :class:`InverseConsistentTransform`) at
    the voxels of ``reference`` (an ``itk.Image`` or :class:`~itkdeepreg.geometry.ImageGeometry`),
    as an ``itk.Image[itk.F]``: central differences of the map between the voxels (one-sided
    at the edges), exact for affine maps up to rounding. No moving image is needed."""
    if isinstance(transform, (str, os.PathLike)):
        transform = InverseConsistentTransform.Read(transform)
    elif not isinstance(transform, InverseConsistentTransform):
        transform = InverseConsistentTransform._of_itk(transform)
    return transform.GetJacobianDeterminant(reference)


def _physical_frame(dimension) -> ImageGeometry:
    """A grid of 2 voxels an axis, 1 mm apart at the origin: its unit cube is physical space
    (axes in tensor order), so maps between unknown images are held exactly."""
    return ImageGeometry((2,) * dimension)


def _writer(write, value, fixed, moving):
    """``write(value, temporary, fixed, moving)`` as a function of the temporary name alone."""
    return lambda temporary: write(value, temporary, fixed, moving)

"""Transform values <-> ITK transforms, transform files and displacement-field images.

Every conversion goes through the two image geometries (fixed and moving): a transform value
maps the fixed image's unit cube to the moving image's; an ITK transform maps physical fixed
points to physical moving points, which is what ``itk.resample_image_filter``,
``antsApplyTransforms`` and transformix expect.
"""

from __future__ import annotations

import os
import tempfile

import itk
import numpy as np
import torch

from ..geometry import ImageGeometry
from ..sampling import identity_grid
from ..transforms import (
    Affine,
    Composite,
    Displacement,
    Transform,
    Velocity,
    compose,
    from_physical,
    to_physical,
)
from .images import as_geometry, set_geometry


def to_itk_transform(transform: Transform, fixed, moving):
    """The compact export: an ``itk.CompositeTransform`` equal to ``transform`` everywhere.

    Affine parts become ``itk.AffineTransform``; each displacement (or velocity) field stays on
    its own grid and becomes a ``DisplacementFieldTransform`` in that grid's index space,
    between two affine maps, the layout the published uniGradICON wrapper writes:
    physical fixed -> model-grid index -> field -> physical moving. ``fixed`` and ``moving``
    are ``itk.Image`` or :class:`~itkdeepreg.geometry.ImageGeometry`.
    """
    fixed, moving = _geometries(transform, fixed, moving)
    physical = to_physical(transform, fixed, moving)
    parts = physical.transforms if isinstance(physical, Composite) else [physical]
    dimension = transform.dimension
    items, pending = [], np.eye(dimension + 1)  # ITK transforms in the order they are applied
    for part in reversed(parts):
        if isinstance(part, Affine):
            pending = _matrix(part) @ pending
            continue
        field = part.exponential if isinstance(part, Velocity) else part
        if not isinstance(field, Displacement):
            raise TypeError(f"cannot export a {type(part).__name__} to ITK")
        grid_to_index = ImageGeometry(tuple(reversed(field.displacement.shape[2:]))).unit_to_index
        items += [_itk_affine(grid_to_index @ pending), _index_field(field)]
        pending = np.linalg.inv(grid_to_index)
    items.append(_itk_affine(pending))
    composite = itk.CompositeTransform[itk.D, dimension].New()
    for item in reversed(items):  # ITK applies the transform added last first
        if item is not None:
            composite.AddTransform(item)
    return composite


def displacement_field_image(transform: Transform, fixed, moving):
    """The native export: the map sampled at every voxel of the fixed image.

    An ``itk.Image[itk.Vector[itk.D, D], D]`` with the fixed image's geometry whose vectors are
    physical displacements in millimetres, (x, y, z) order, fixed point to moving point: what
    ITK's ``DisplacementFieldTransform`` holds and ANTs reads as a warp. It equals the map at
    the fixed voxels; between them ITK interpolates it linearly.
    """
    vectors, geometry = _native_displacement(transform, fixed, moving)
    return _vector_image(vectors, geometry)


def to_itk_displacement_field(transform: Transform, fixed, moving):
    """The native export as a double-precision ``itk.DisplacementFieldTransform``."""
    field = displacement_field_image(transform, fixed, moving)
    itk_transform = itk.DisplacementFieldTransform[itk.D, field.GetImageDimension()].New()
    itk_transform.SetDisplacementField(field)
    return itk_transform


def from_itk_transform(itk_transform, fixed, moving) -> Transform:
    """The transform value (fixed unit cube -> moving unit cube) of an ITK transform.

    Takes linear transforms (translation, Euler, versor, similarity, affine, ...),
    displacement-field transforms and composites of these.
    """
    fixed, moving = as_geometry(fixed), as_geometry(moving)
    dimension = itk_transform.GetInputSpaceDimension()
    if dimension != fixed.dimension or moving.dimension != fixed.dimension:
        raise ValueError(
            f"a {dimension}D transform cannot map a {fixed.dimension}D fixed image to a "
            f"{moving.dimension}D moving image"
        )
    return from_physical(compose(*_physical_parts(itk_transform)), fixed, moving)


def read_transform(path, fixed, moving) -> Transform:
    """Read an ITK transform file (``.h5``, ``.tfm``, ``.txt``, ANTs ``.mat``) as a value."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no transform file at {path}")
    try:
        transforms = itk.transformread(str(path))
    except RuntimeError:
        raise ValueError(f"{path} is not a transform file ITK can read") from None
    if len(transforms) != 1:
        raise ValueError(
            f"{path} holds {len(transforms)} transforms that are not in a CompositeTransform; "
            "their order of application is ambiguous"
        )
    return from_itk_transform(transforms[0], fixed, moving)


def write_transform(transform: Transform, path, fixed, moving) -> None:
    """Write the compact export to an ITK transform file (``.h5`` keeps fields exactly)."""
    _write_atomically(
        path,
        lambda temporary: itk.transformwrite([to_itk_transform(transform, fixed, moving)], temporary),
    )


def write_displacement_field(transform: Transform, path, fixed, moving) -> None:
    """Write the native export as a vector image (``.nii.gz``, ``.mha``, ...): an ANTs warp."""

    def write(temporary):
        vectors, geometry = _native_displacement(transform, fixed, moving)
        # ITK wraps no file writer for Image[Vector[D]]; a VectorImage[D] writes the same file
        image = itk.image_from_array(np.ascontiguousarray(vectors), is_vector=True)
        set_geometry(image, geometry)
        itk.imwrite(image, temporary)

    _write_atomically(path, write)


def _geometries(transform, fixed, moving):
    fixed, moving = as_geometry(fixed), as_geometry(moving)
    if not transform.dimension == fixed.dimension == moving.dimension:
        raise ValueError(
            f"a {transform.dimension}D transform between a {fixed.dimension}D and a "
            f"{moving.dimension}D image"
        )
    if any(t.shape[0] != 1 for t in transform._tensors()):
        raise ValueError("only a transform with a batch of one can be exported to ITK")
    return fixed, moving


def _native_displacement(transform, fixed, moving):
    """Physical displacements ``[*shape, D]`` at the fixed voxels, and the fixed geometry."""
    fixed, moving = _geometries(transform, fixed, moving)
    device = next(iter(transform._tensors()), torch.empty(0)).device
    grid = identity_grid(fixed.shape, dtype=torch.float64, device=device)
    with torch.no_grad():
        mapped = transform.to(dtype=torch.float64)(grid)
    unit = grid[0].movedim(0, -1).cpu().numpy()
    moved = moving.to_physical(mapped[0].movedim(0, -1).cpu().numpy())
    return moved - fixed.to_physical(unit), fixed


def _matrix(affine: Affine) -> np.ndarray:
    return affine.matrix[0].detach().cpu().double().numpy()


def _itk_affine(matrix):
    """An ``itk.AffineTransform`` of a homogeneous matrix, or None for the exact identity."""
    if np.array_equal(matrix, np.eye(len(matrix))):
        return None
    dimension = len(matrix) - 1
    affine = itk.AffineTransform[itk.D, dimension].New()
    affine.SetMatrix(itk.matrix_from_array(np.ascontiguousarray(matrix[:-1, :-1])))
    affine.SetOffset(matrix[:-1, -1].tolist())
    return affine


def _index_field(field: Displacement):
    """A DisplacementFieldTransform in the index space of the field's grid."""
    displacement = field.displacement[0].detach().double().cpu()
    shape = displacement.shape[1:]
    # unit-cube displacement along tensor axis i -> index displacement along ITK axis D-1-i
    scale = torch.tensor([n - 1 for n in shape], dtype=torch.float64).reshape(-1, *[1] * len(shape))
    index_vectors = (displacement * scale).flip(0).movedim(0, -1).numpy()
    image = _vector_image(index_vectors, ImageGeometry(tuple(reversed(shape))))
    itk_transform = itk.DisplacementFieldTransform[itk.D, len(shape)].New()
    itk_transform.SetDisplacementField(image)
    return itk_transform


def _vector_image(vectors: np.ndarray, geometry: ImageGeometry):
    """An ``itk.Image[itk.Vector[itk.D, D], D]`` of an array ``[*shape, D]`` on ``geometry``."""
    dimension = geometry.dimension
    image = itk.Image[itk.Vector[itk.D, dimension], dimension].New()
    image.SetRegions(list(geometry.size))
    image.Allocate()
    itk.array_view_from_image(image)[:] = vectors  # Image[Vector[D]] has no wrapped duplicator
    set_geometry(image, geometry)
    return image


def _physical_parts(itk_transform) -> list:
    """Transform values of physical points that compose (first one last) to ``itk_transform``."""
    itk_transform = itk.down_cast(itk_transform)
    name = itk_transform.GetNameOfClass()
    if name == "CompositeTransform":
        count = itk_transform.GetNumberOfTransforms()
        return [p for i in range(count) for p in _physical_parts(itk_transform.GetNthTransform(i))]
    if name == "DisplacementFieldTransform":
        field = itk_transform.GetDisplacementField()
        geometry = ImageGeometry.from_image(field)
        unit_to_physical = geometry.unit_to_physical
        vectors = itk.array_from_image(field).astype(np.float64)
        unit_vectors = vectors @ np.linalg.inv(unit_to_physical[:-1, :-1]).T
        displacement = torch.from_numpy(np.ascontiguousarray(np.moveaxis(unit_vectors, -1, 0)))
        return [
            Affine(torch.from_numpy(unit_to_physical)),
            Displacement(displacement[None], outside="itk"),
            Affine(torch.from_numpy(geometry.physical_to_unit)),
        ]
    if itk_transform.IsLinear():
        # a linear transform is its action on the origin and the unit vectors
        dimension = itk_transform.GetInputSpaceDimension()
        origin = np.asarray(itk_transform.TransformPoint([0.0] * dimension))
        matrix = np.eye(dimension + 1)
        for j in range(dimension):
            unit = [float(i == j) for i in range(dimension)]
            matrix[:-1, j] = np.asarray(itk_transform.TransformPoint(unit)) - origin
        matrix[:-1, -1] = origin
        return [Affine(torch.from_numpy(matrix))]
    raise ValueError(
        f"cannot import an ITK {name}: itkdeepreg reads linear transforms, displacement-field "
        "transforms and composites of them"
    )


def _write_atomically(path, write) -> None:
    """``write(temporary)`` beside ``path``, then rename: no half-written outputs.

    The directory is checked first, so a path that cannot be written fails before the work.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise OSError(f"cannot write {path}: {directory} is not a writable directory")
    name = os.path.basename(path)
    suffix = name[name.index(".") :] if "." in name else ""  # keeps .nii.gz whole
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".partial-", suffix=suffix)
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise

"""Transform values <-> ITK transforms, transform files and displacement-field images.

Every conversion goes through the two image geometries (fixed and moving): a transform value
maps the fixed image's unit cube to the moving image's; an ITK transform maps physical fixed
points to physical moving points, which is what ``itk.resample_image_filter``,
``antsApplyTransforms`` and transformix expect.
"""

from __future__ import annotations

import math
import os

import itk
import numpy as np
import torch
import torch.nn.functional as F

from ..files import IMAGE_SUFFIXES, TRANSFORM_SUFFIXES, write_atomically
from ..geometry import ImageGeometry
from ..transforms import (
    Affine,
    Composite,
    Displacement,
    Transform,
    compose,
    exponentiated,
    from_physical,
    to_physical,
)
from . import transform_files
from .images import (
    as_geometry,
    check_image_file,
    check_scalar_image,
    itk_error_message,
    set_geometry,
    tensor_to_image,
)

_PROBES_PER_AXIS = 33
_NATIVE_POINTS_PER_SLAB = 2**21
_BSPLINE_POINTS = 2**20
_MAX_LABELS = 4096  # more distinct values than this is surely not a label map


def to_itk_transform(transform: Transform, fixed, moving):
    """The compact export: an ``itk.CompositeTransform`` (double) equal to ``transform``.

    Affine parts become ``itk.AffineTransform``. Each displacement (or velocity) field stays on
    its own grid and becomes a ``DisplacementFieldTransform`` in that grid's index space,
    between two affine maps: the layout the published uniGradICON wrapper writes, physical
    fixed -> model-grid index -> field -> physical moving. Where the maps before a field send
    the fixed image off the field's grid, the field is padded with its border values, so ITK
    reads there what torch reads (ITK's own rule is zero displacement beyond half a voxel).

    The export equals the value at every point of the fixed image, each
    ``Velocity(method="integration")`` taken as its flow sampled on its grid (ITK holds fields,
    not flows): it equals :func:`~itkdeepreg.transforms.exponentiated` of the value, which is
    what :class:`~itkdeepreg.interop.InverseConsistentTransform` applies.
    ``fixed`` and ``moving`` are ``itk.Image`` or :class:`~itkdeepreg.geometry.ImageGeometry`.
    """
    fixed, moving = _geometries(transform, fixed, moving)
    physical = to_physical(exponentiated(transform), fixed, moving)
    parts = physical.transforms if isinstance(physical, Composite) else [physical]
    dimension = transform.dimension
    probe = _probe_points(fixed)  # where the export must agree, followed through the parts
    items, pending = [], np.eye(dimension + 1)  # matrices and fields, in the order applied
    for part in reversed(parts):
        if isinstance(part, Affine):
            pending = _matrix(part) @ pending
            probe = part(probe)
            continue
        if not isinstance(part, Displacement):
            raise TypeError(f"cannot export a {type(part).__name__} to ITK")
        field = part.to(device="cpu", dtype=torch.float64)
        grid_to_index = ImageGeometry(tuple(reversed(field.displacement.shape[2:]))).unit_to_index
        items += [grid_to_index @ pending, _index_field(field, probe)]
        pending = np.linalg.inv(grid_to_index)
        probe = field(probe)
    items.append(pending)
    composite = itk.CompositeTransform[itk.D, dimension].New()
    identity = np.eye(dimension + 1)
    kept = [i for i in items if not (isinstance(i, np.ndarray) and np.array_equal(i, identity))]
    for item in reversed(kept or [identity]):  # ITK applies the transform added last first
        composite.AddTransform(_affine_transform(item) if isinstance(item, np.ndarray) else item)
    return composite


def displacement_field_image(transform: Transform, fixed, moving):
    """The native export: the map (:func:`~itkdeepreg.transforms.exponentiated`, as the compact
    export holds it) sampled at every voxel of the fixed image.

    An ``itk.Image[itk.Vector[itk.D, D], D]`` with the fixed image's geometry whose vectors are
    physical displacements in millimetres, (x, y, z) order, fixed point to moving point: what
    ITK's ``DisplacementFieldTransform`` holds and ANTs reads as a warp. It equals the map at
    the fixed voxels; between them ITK interpolates it linearly.
    """
    vectors, geometry = _native_displacement(transform, fixed, moving)
    return _vector_image(vectors, geometry)


def to_itk_displacement_field(transform: Transform, fixed, moving):
    """The native export as a double-precision ``itk.DisplacementFieldTransform``."""
    return _field_transform(*_native_displacement(transform, fixed, moving))


def from_itk_transform(itk_transform, fixed, moving) -> Transform:
    """The transform value (fixed unit cube -> moving unit cube) of an ITK transform.

    Takes linear transforms (translation, Euler, versor, similarity, affine, ...),
    displacement-field transforms and composites of these; an empty composite is the identity.
    """
    fixed, moving = as_geometry(fixed), as_geometry(moving)
    dimension = itk_transform.GetInputSpaceDimension()
    if dimension != fixed.dimension or moving.dimension != fixed.dimension:
        raise ValueError(
            f"a {dimension}D transform cannot map a {fixed.dimension}D fixed image to a "
            f"{moving.dimension}D moving image"
        )
    parts = _physical_parts(itk_transform) or [Affine.identity(dimension, torch.float64)]
    return from_physical(compose(*parts), fixed, moving)


def read_transform(path, fixed, moving) -> Transform:
    """Read an ITK transform file (``.h5``, ``.tfm``, ``.txt``, ANTs ``.mat``) as a value."""
    return from_itk_transform(read_itk_transform(path), fixed, moving)


def read_itk_transform(path):
    """The ITK transform of a transform file: its one transform, or its one composite; a
    displacement-field image (an ANTs warp, ``.nii.gz``, ``.nii``, ``.mha``, ``.nrrd``) is read
    as a ``DisplacementFieldTransform``. Text and MATLAB files are read by
    :mod:`~itkdeepreg.interop.transform_files` (ITK's reader costs seconds of module loading),
    ``.h5`` files and classes it does not build by ITK's reader."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no transform file at {path}")
    if str(path).lower().endswith(IMAGE_SUFFIXES):
        return _read_field_transform(path)
    try:
        records = transform_files.read_records(path)
    except ValueError:
        if _looks_like_parameter_file(path):
            raise _parameter_file_error(path) from None
        raise
    transforms = transform_files.build(path, records) if records is not None else None
    if transforms is None:
        try:
            transforms = itk.transformread(os.fspath(path))
        except RuntimeError as error:
            if _looks_like_parameter_file(path):
                raise _parameter_file_error(path) from None
            raise ValueError(
                f"{path} is not a transform file ITK can read: {itk_error_message(error)}"
            ) from None
    if len(transforms) != 1:
        raise ValueError(
            f"{path} holds {len(transforms)} transforms that are not in a CompositeTransform; "
            "their order of application is ambiguous"
        )
    for part in _flatten(transforms[0]):
        values = itk.array_from_vnl_vector(part.GetParameters())
        if not (np.isfinite(values).all() and np.isfinite(part.GetFixedParameters()).all()):
            raise ValueError(f"{path}: its {part.GetNameOfClass()} holds NaN or infinite values")
    return transforms[0]


def _parameter_file_error(path) -> ValueError:
    return ValueError(
        f"{path} is an elastix parameter file; give an ITK transform file "
        "(.h5, .tfm, .txt, ANTs .mat)"
    )


def _read_field_transform(path):
    """A displacement-field image file as a double ``DisplacementFieldTransform``, through
    the input gate's checks (a truncated NIfTI field would read as zeros)."""
    path = os.fspath(path)
    check_image_file(path)
    io = itk.ImageIOFactory.CreateImageIO(path, itk.CommonEnums.IOFileMode_ReadMode)
    try:
        if io is None:
            raise RuntimeError("no image reader takes it")
        io.SetFileName(path)
        io.ReadImageInformation()
        dimension = io.GetNumberOfDimensions()
        # a VectorImage[D] reader: itk.imread wraps none for double vectors
        reader = itk.ImageFileReader[itk.VectorImage[itk.D, dimension]].New(FileName=path)
        reader.Update()
    except (RuntimeError, KeyError) as error:
        raise ValueError(
            f"{path} is not an image ITK can read: {itk_error_message(error)}"
        ) from None
    image = reader.GetOutput()
    vectors = itk.array_from_image(image)
    if image.GetNumberOfComponentsPerPixel() != dimension:
        raise ValueError(
            f"{path} is not a displacement field: a {dimension}D image needs {dimension} "
            "components per voxel"
        )
    if not np.isfinite(vectors).all():
        raise ValueError(f"{path}: its displacement field holds NaN or infinite values")
    return _field_transform(vectors, ImageGeometry.from_image(image))


def _looks_like_parameter_file(path) -> bool:
    """Whether a file starts like an elastix parameter file: ``(Key ...)`` or ``//``."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            start = file.read(4096).lstrip()
    except OSError:
        return False
    return start.startswith(("(", "//"))


def write_transform(transform: Transform, path, fixed, moving) -> None:
    """Write the compact export to an ITK transform file.

    ``.h5`` keeps fields exactly and is read by ITK and ANTs; ``.tfm`` and ``.txt`` are text;
    ``.mat`` (ANTs, Matlab) holds a single affine transform, so it takes affine values only.
    """
    fixed, moving = _geometries(transform, fixed, moving)
    single_affine = str(path).lower().endswith(".mat")
    if single_affine and not isinstance(to_physical(transform, fixed, moving), Affine):
        raise ValueError(f"cannot write {path}: a .mat file holds one affine transform; use .h5")

    def write(temporary):
        itk_transform = to_itk_transform(transform, fixed, moving)
        if single_affine:
            itk_transform = itk.down_cast(itk_transform.GetNthTransform(0))
        itk.transformwrite([itk_transform], temporary)

    write_atomically(path, write, TRANSFORM_SUFFIXES)


def write_displacement_field(transform: Transform, path, fixed, moving) -> None:
    """Write the native export as a vector image (``.nii.gz``, ``.nii``, ``.mha``, ``.nrrd``).

    ANTs reads it as a warp. The components are double precision, LPS millimetres.
    """
    fixed, moving = _geometries(transform, fixed, moving)

    def write(temporary):
        vectors, geometry = _native_displacement(transform, fixed, moving)
        # ITK wraps no file writer for Image[Vector[D]]; a VectorImage[D] writes the same file
        image = itk.image_from_array(np.ascontiguousarray(vectors), is_vector=True)
        set_geometry(image, geometry)
        itk.imwrite(image, temporary)

    write_atomically(path, write, IMAGE_SUFFIXES)


def warp_labels(image, transform, reference):
    """A label map resampled onto ``reference``'s grid, keeping its labels.

    Each label's indicator is resampled linearly by ``itk.resample_image_filter`` through
    ``transform`` (fixed -> moving points: an ITK transform, or an
    :class:`~itkdeepreg.interop.InverseConsistentTransform`) and each voxel takes the most
    probable label (ties: the smaller label); 0 outside ``image``. ``image``: a scalar
    ``itk.Image``; ``reference``: an ``itk.Image`` or :class:`~itkdeepreg.geometry.ImageGeometry`.
    The result has ``image``'s pixel type and only its values.
    """
    check_scalar_image(image, "the label image")
    array = itk.array_view_from_image(image)
    reference = as_geometry(reference)
    warped = _warp_label_array(array, ImageGeometry.from_image(image), transform, reference)
    return tensor_to_image(torch.from_numpy(warped), reference, itk.template(image)[1][0])


def resample_array(values, geometry, transform, reference, interpolation="linear"):
    """``values`` (an array on ``geometry``) resampled by ITK through ``transform`` (fixed ->
    moving points) onto the grid of ``reference`` (a geometry), in double precision, 0 outside
    ``geometry``; ``interpolation``: ``"linear"`` or ``"nearest"``. An array."""
    image = itk.image_from_array(np.ascontiguousarray(values, dtype=np.float64))
    set_geometry(image, geometry)
    interpolator = {
        "linear": itk.LinearInterpolateImageFunction,
        "nearest": itk.NearestNeighborInterpolateImageFunction,
    }[interpolation].New(image)
    resampled = itk.resample_image_filter(
        image,
        transform=transform,
        interpolator=interpolator,
        size=list(reference.size),
        output_origin=reference.origin.tolist(),
        output_spacing=reference.spacing.tolist(),
        output_direction=itk.matrix_from_array(np.ascontiguousarray(reference.direction)),
        default_pixel_value=0.0,
    )
    return itk.array_from_image(resampled)


def _warp_label_array(array, geometry, transform, reference) -> np.ndarray:
    """:func:`warp_labels` of an array on ``geometry``, as an array on ``reference``."""
    labels = np.unique(array)
    if labels.size > _MAX_LABELS:
        raise ValueError(f"the label image has {labels.size} distinct values; is it a label map?")
    best = np.zeros(reference.shape)
    result = np.zeros(reference.shape, dtype=array.dtype)
    for label in labels:  # one ITK pass per label: memory stays at a few images
        probability = resample_array(array == label, geometry, transform, reference)
        better = probability > best
        best[better] = probability[better]
        result[better] = label
    return result


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
    """Physical displacements ``[*shape, D]`` at the fixed voxels, and the fixed geometry.

    The fixed grid is evaluated in slabs along its first tensor axis, so memory stays near
    the size of the result whatever the image size.
    """
    fixed, moving = _geometries(transform, fixed, moving)
    # the compact export's value, its velocity fields exponentiated once, not once a slab
    transform = exponentiated(transform).to(dtype=torch.float64)
    device = transform._device()
    shape = fixed.shape
    axes = [torch.linspace(0, 1, n, dtype=torch.float64, device=device) for n in shape]
    vectors = np.empty((*shape, fixed.dimension))
    slab = max(1, _NATIVE_POINTS_PER_SLAB // math.prod(shape[1:]))
    for start in range(0, shape[0], slab):
        grid = torch.stack(torch.meshgrid(axes[0][start : start + slab], *axes[1:], indexing="ij"))
        with torch.no_grad():
            mapped = transform(grid[None])[0]
        unit, moved = (t.movedim(0, -1).cpu().numpy() for t in (grid, mapped))
        vectors[start : start + slab] = moving.to_physical(moved) - fixed.to_physical(unit)
    return vectors, fixed


def _probe_points(geometry: ImageGeometry, per_axis=_PROBES_PER_AXIS) -> torch.Tensor:
    """Physical points ``[1, D, P]`` on a lattice over the image, its corners included (with
    ``per_axis=3``: its corners, centre, and the centres of its edges and faces)."""
    axes = [torch.linspace(0, 1, min(n, per_axis), dtype=torch.float64) for n in geometry.shape]
    unit = torch.stack(torch.meshgrid(*axes, indexing="ij")).reshape(geometry.dimension, -1)
    return torch.from_numpy(geometry.to_physical(unit.T.numpy()).T.copy())[None]


def _matrix(affine: Affine) -> np.ndarray:
    return affine.matrix[0].detach().cpu().double().numpy()


def _affine_transform(matrix: np.ndarray):
    dimension = len(matrix) - 1
    affine = itk.AffineTransform[itk.D, dimension].New()
    affine.SetMatrix(itk.matrix_from_array(np.ascontiguousarray(matrix[:-1, :-1])))
    affine.SetOffset(matrix[:-1, -1].tolist())
    return affine


def _index_field(field: Displacement, probe: torch.Tensor):
    """A DisplacementFieldTransform in the index space of the field's grid.

    ``probe`` holds points (in the field's unit cube) where it is read. A field that repeats
    its border values is padded by its border values to cover them, plus one voxel: linear
    interpolation of the padded field is the border rule, and ITK applies it there.
    """
    displacement = field.displacement.detach()
    shape = torch.tensor(displacement.shape[2:], dtype=torch.float64)
    scale = (shape - 1).reshape(1, -1, *[1] * len(shape))
    low = torch.zeros(len(shape), dtype=torch.int64)
    high = torch.zeros(len(shape), dtype=torch.int64)
    if field.outside == "border":
        reached = probe[0] * (shape - 1)[:, None]  # [D, P] in voxels
        below, above = -reached.min(1).values, reached.max(1).values - (shape - 1)
        low = torch.where(below > 1e-6, torch.ceil(below) + 1, 0).long()
        high = torch.where(above > 1e-6, torch.ceil(above) + 1, 0).long()
    pads = [p for axis in reversed(range(len(shape))) for p in (int(low[axis]), int(high[axis]))]
    if any(pads):
        displacement = F.pad(displacement, pads, mode="replicate")
    # unit-cube displacement along tensor axis i -> index displacement along ITK axis D-1-i
    index_vectors = (displacement[0] * scale[0]).flip(0).movedim(0, -1).cpu().numpy()
    origin = -low.flip(0).double().numpy()  # the padded grid starts before index 0
    geometry = ImageGeometry(tuple(reversed(displacement.shape[2:])), origin=origin)
    return _field_transform(index_vectors, geometry)


def _field_transform(vectors: np.ndarray, geometry: ImageGeometry):
    """A double ``DisplacementFieldTransform`` of a copy of ``vectors [*shape, D]`` on
    ``geometry``."""
    itk_transform = itk.DisplacementFieldTransform[itk.D, geometry.dimension].New()
    itk_transform.SetDisplacementField(_vector_image(vectors, geometry))
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
    parts = []
    for part in _flatten(itk_transform):
        name = part.GetNameOfClass()
        if name == "DisplacementFieldTransform":
            field = part.GetDisplacementField()
            vectors = itk.array_from_image(field).astype(np.float64)
            parts += _field_parts(vectors, ImageGeometry.from_image(field))
        elif name == "BSplineTransform":  # elastix's B-splines: sampled, as ITK cannot import them
            parts += _field_parts(*_sampled_bspline(part))
        elif part.IsLinear():
            parts.append(Affine(torch.from_numpy(_linear_matrix(part))))
        else:
            raise ValueError(
                f"cannot import an ITK {name}: itkdeepreg reads linear transforms, "
                "displacement-field and B-spline transforms, and composites of them"
            )
    return parts


def _flatten(itk_transform) -> list:
    """The parts of an ITK transform in ITK's queue order (the last one is applied first),
    nested composites expanded, each down-cast to its own type."""
    itk_transform = itk.down_cast(itk_transform)
    if itk_transform.GetNameOfClass() == "CompositeTransform":
        count = itk_transform.GetNumberOfTransforms()
        return [p for i in range(count) for p in _flatten(itk_transform.GetNthTransform(i))]
    return [itk_transform]


def _linear_matrix(itk_transform) -> np.ndarray:
    """The homogeneous matrix (double) of a linear ITK transform of any type and precision:
    its action on the origin and the unit vectors."""
    dimension = itk_transform.GetInputSpaceDimension()
    origin = np.asarray(itk_transform.TransformPoint([0.0] * dimension), dtype=np.float64)
    matrix = np.eye(dimension + 1)
    for j in range(dimension):
        unit = [float(i == j) for i in range(dimension)]
        matrix[:-1, j] = np.asarray(itk_transform.TransformPoint(unit)) - origin
    matrix[:-1, -1] = origin
    return matrix


def _field_parts(vectors: np.ndarray, geometry: ImageGeometry) -> list:
    """Physical displacements ``[*shape, D]`` on ``geometry`` as transform values of physical
    points, with ITK's rule off the grid (border values up to half a voxel, then zero)."""
    unit_to_physical = geometry.unit_to_physical
    unit_vectors = vectors @ np.linalg.inv(unit_to_physical[:-1, :-1]).T
    displacement = torch.from_numpy(np.ascontiguousarray(np.moveaxis(unit_vectors, -1, 0)))
    return [
        Affine(torch.from_numpy(unit_to_physical)),
        Displacement(displacement[None], outside="itk"),
        Affine(torch.from_numpy(geometry.physical_to_unit)),
    ]


def _sampled_bspline(bspline):
    """A B-spline transform's displacements on a grid over its domain.

    Up to 8 points per control-point cell and axis, fewer where that would pass
    ``_BSPLINE_POINTS`` (ITK evaluates them one by one, about 2 us each): on an elastix brain
    slice, 8 points per cell put the linear interpolation within 0.08 mm of the spline
    (median 0.007 mm), 4 within 0.37 mm (median 0.03 mm).
    """
    mesh = np.array([int(n) for n in bspline.GetTransformDomainMeshSize()])
    dimension = len(mesh)
    affordable = int((_BSPLINE_POINTS ** (1 / dimension) - 1) // mesh.max())
    samples_per_cell = min(8, max(2, affordable))
    extent = np.array([float(x) for x in bspline.GetTransformDomainPhysicalDimensions()])
    geometry = ImageGeometry(
        tuple(mesh * samples_per_cell + 1),
        origin=[float(x) for x in bspline.GetTransformDomainOrigin()],
        spacing=extent / (mesh * samples_per_cell),
        direction=itk.array_from_matrix(bspline.GetTransformDomainDirection()),
    )
    axes = [np.linspace(0, 1, n) for n in geometry.shape]
    unit = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, geometry.dimension)
    points = geometry.to_physical(unit)
    moved = np.array([bspline.TransformPoint(p) for p in points.tolist()])
    return (moved - points).reshape(*geometry.shape, geometry.dimension), geometry

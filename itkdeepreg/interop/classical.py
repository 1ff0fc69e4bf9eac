"""elastix and ANTs registrations as pipeline steps that start from any ITK transform.

:func:`elastix_registration` and :func:`ants_registration` share one contract. They take two
scalar ``itk.Image`` s with their physical geometry, optional masks on the images' grids and an
optional initial ITK transform (fixed physical point -> moving physical point), and they return
one ``itk.CompositeTransform[itk.D, D]`` for the whole result, the initial transform included:

    itk.resample_image_filter(moving, transform=result, use_reference_image=True,
                              reference_image=fixed)

is the registered moving image. The tools are optional dependencies (``itk-elastix``,
``antspyx``), imported on first use.

What each tool does with an initial transform (checked with itk-elastix 0.25.4 and antspyx
0.6.3; tests/test_classical_steps.py guards it):

elastix
    ``SetExternalInitialTransform`` hands elastix the ITK transform itself. elastix composes
    (``HowToCombineTransforms "Compose"``, its default): the initial transform is applied to a
    fixed point first, then the transforms of the parameter maps, in map order. The
    combination transform (``GetCombinationTransform``) includes the initial transform, and
    ``ConvertToItkTransform`` turns it into an ITK ``CompositeTransform`` whose last entry (the
    one applied first) is the very object that was passed in. The transforms of the maps
    convert exactly (translation, Euler, similarity, affine, and B-spline to an ITK
    ``BSplineTransform``). Where they do not convert (``"Add"`` combinations, transforms
    without an ITK counterpart), transformix samples the combination, initial transform
    included, at the fixed voxels and the result is one ``DisplacementFieldTransform``.

ANTs
    ANTsPy passes ``initial_transform`` to ``antsRegistration -r`` (an initial *moving*
    transform) and collapses the output (``-z 1``): ``fwdtransforms`` then holds the initial
    transform, merged into ``0GenericAffine.mat`` where it is linear, or rewritten as its own
    files (a field as a ``Warp.nii.gz``, a B-spline as ``BSpline.txt``) in single precision
    unless ``singleprecision=False``. The stages ANTs optimises are applied to a fixed point
    first, the initial transform last. ANTsPy takes one initial file, so the initial transform
    is written as one composite ``.h5`` into a temporary folder, which is removed with
    everything ANTs writes there once the results are in memory.

Threads: elastix's own ``SetNumberOfThreads`` crashes in ``MultiMetricMultiResolutionRegistration``
(ITKElastix issue #160) and sets ITK's process-wide maximum thread count as a side effect, so
``threads`` sets ITK's global maximum and default thread counts for the call and restores them
afterwards. ANTsPy's ITK reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` once, at its first use
in a process (its first image), and ignores later changes; ``threads`` is applied by setting
that variable before ANTsPy's first use, and a call that cannot apply it warns.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
import warnings

import itk
import numpy as np
import torch

from ..geometry import ImageGeometry
from .images import (
    as_geometry,
    check_same_grid,
    check_scalar_image,
    image_to_tensor,
    tensor_to_image,
)
from .transforms import (
    _affine_transform,
    _field_transform,
    _flatten,
    _linear_matrix,
    _probe_points,
    read_itk_transform,
)

INSTALL_HINT = 'pip install "itkdeepreg[interop]"'
ANTS_THREADS_VARIABLE = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"

# antsRegistrationSyN[Quick][Repro][<subtype>(,<metric parameter>(,<spline distance>))] as
# ANTsPy 0.6 parses it; the other names are checked by ANTsPy itself
_ANTS_SCRIPT = re.compile(
    r"antsRegistrationSyN(Quick)?(Repro)?"
    r"(\[(t|r|a|s|sr|so|b|br|bo)\]|\[(s|sr|so|b|br|bo),[^],\[]+(,[^],\[]+)?\])?"
)
_ANTS_RESERVED = {
    "fixed": "the fixed image is the first argument",
    "moving": "the moving image is the second argument",
    "outprefix": "ants_registration writes ANTs' files into a temporary folder of its own",
    "initial_transform": "give an ITK transform as initial_transform",
    "mask": "give the fixed image's mask as fixed_mask",
}
# the thread count ANTsPy's ITK read at its first use, where this module made that first use
_ants_threads = {"known": False, "threads": None}


def elastix_registration(
    fixed,
    moving,
    parameter_maps,
    initial_transform=None,
    fixed_mask=None,
    moving_mask=None,
    threads=None,
    log=False,
    log_file=None,
):
    """Register ``moving`` to ``fixed`` with elastix, starting from ``initial_transform``.

    ``fixed``, ``moving``: 2D or 3D scalar ``itk.Image`` s of any pixel type (cast to float).
    ``parameter_maps``: a list of elastix parameter maps (``dict[str, list[str]]``, as
    ``itk.ParameterObject.GetParameterMap`` gives them; scalars, numbers and booleans are
    turned into elastix strings), one map, or an ``itk.ParameterObject``. The maps are copied;
    ``WriteResultImage`` is set to ``"false"`` since no image is returned.
    ``initial_transform``: an ITK transform (double precision, fixed point -> moving point) or
    None. ``fixed_mask``, ``moving_mask``: images on their image's grid, non-zero inside.
    ``threads``: ITK's thread count for the call (None: leave it). ``log``: elastix's log on
    the console. ``log_file``: a file to write elastix's log into (replaced; written after a
    failure too), as elastix writes ``elastix.log`` into its ``-out`` folder.

    Returns an ``itk.CompositeTransform[itk.D, D]``: the converted transforms of the maps and
    the initial transform's parts (shared, not copied), or, where elastix's transforms have no
    ITK counterpart, one ``DisplacementFieldTransform`` on the fixed grid sampled by
    transformix (initial transform included).
    """
    classes = _elastix()
    dimension = _check_pair(fixed, moving)
    _check_mask(fixed_mask, fixed, "fixed_mask")
    _check_mask(moving_mask, moving, "moving_mask")
    initial = _check_initial(initial_transform, dimension)
    parameters = _parameter_object(parameter_maps, classes["ParameterObject"])
    threads = _check_threads(threads)
    if log_file is not None and not os.path.isdir(os.path.dirname(os.path.abspath(log_file))):
        raise FileNotFoundError(f"log_file {log_file}: its folder does not exist")
    image_type = itk.Image[itk.F, dimension]
    method = classes["ElastixRegistrationMethod"][image_type, image_type].New()
    method.SetFixedImage(_float_image(fixed))
    method.SetMovingImage(_float_image(moving))
    method.SetParameterObject(parameters)
    if fixed_mask is not None:
        method.SetFixedMask(_mask_image(fixed_mask, fixed))
    if moving_mask is not None:
        method.SetMovingMask(_mask_image(moving_mask, moving))
    if initial is not None:
        method.SetExternalInitialTransform(initial)
    method.SetLogToConsole(bool(log))
    with _itk_threads(threads), _elastix_log_file(method, log_file):
        method.Update()
        parts = _converted_parts(method, initial, fixed)
        if parts is None:
            parts = [_transformix_transform(method, moving, classes["TransformixFilter"], log)]
    return _composite(parts, dimension)


def ants_registration(
    fixed,
    moving,
    type_of_transform="SyN",
    initial_transform=None,
    fixed_mask=None,
    moving_mask=None,
    threads=None,
    **ants_options,
):
    """Register ``moving`` to ``fixed`` with ``ants.registration``, from ``initial_transform``.

    ``fixed``, ``moving``: 2D or 3D scalar ``itk.Image`` s of any pixel type (cast to float),
    handed to ANTsPy with their origin, spacing and direction. ``type_of_transform``: one of
    ANTsPy's names ("Translation", "Rigid", "Affine", "SyN", "SyNOnly",
    "antsRegistrationSyN[s]", ...). ``initial_transform``: an ITK transform (double precision,
    fixed point -> moving point) or None (ANTsPy's default start: the centres of mass, or the
    identity for deformable-only types). ``fixed_mask``, ``moving_mask``: images on their
    image's grid, non-zero inside (ANTsPy's ``mask`` and ``moving_mask``). ``threads``: see the
    module notes. ``ants_options``: passed to ``ants.registration`` (``reg_iterations``,
    ``syn_metric``, ``mask_all_stages``, ``singleprecision``, ...).

    Returns an ``itk.CompositeTransform[itk.D, D]`` of ANTs' forward transforms, which include
    the initial transform: linear parts as ITK linear transforms, warps as
    ``DisplacementFieldTransform`` s (double, in memory).
    """
    dimension = _check_pair(fixed, moving)
    _check_mask(fixed_mask, fixed, "fixed_mask")
    _check_mask(moving_mask, moving, "moving_mask")
    initial = _check_initial(initial_transform, dimension)
    _check_type_of_transform(type_of_transform)
    threads = _check_threads(threads)
    for name in ants_options:
        if name in _ANTS_RESERVED:
            raise TypeError(f"ants_registration sets {name!r} itself: {_ANTS_RESERVED[name]}")
    with _ants_environment(threads) as ants:
        fixed_image = _ants_image(ants, fixed, fixed)
        moving_image = _ants_image(ants, moving, moving)
        if fixed_mask is not None:
            ants_options["mask"] = _ants_image(ants, fixed_mask, fixed, mask=True)
        if moving_mask is not None:
            ants_options["moving_mask"] = _ants_image(ants, moving_mask, moving, mask=True)
        with tempfile.TemporaryDirectory(prefix="itkdeepreg-ants-") as folder:
            if initial is not None:
                path = os.path.join(folder, "initial.h5")
                itk.transformwrite([_composite(_flatten(initial), dimension)], path)
                ants_options["initial_transform"] = [path]
            try:
                result = ants.registration(
                    fixed=fixed_image,
                    moving=moving_image,
                    type_of_transform=type_of_transform,
                    outprefix=os.path.join(folder, "ants_"),
                    **ants_options,
                )
            except ValueError as error:
                if str(error).endswith("does not exist"):
                    raise ValueError(
                        f"type_of_transform={type_of_transform!r} is not one of ANTsPy's "
                        "registration types (see ants.registration), e.g. 'Translation', "
                        "'Rigid', 'Affine', 'SyN', 'SyNOnly', 'antsRegistrationSyN[s]'"
                    ) from error
                raise
            files = result["fwdtransforms"]
            files = [files] if isinstance(files, str) else list(files)
            # ANTs list [Warp, Affine] = ITK queue [Affine, Warp]: ANTs' file k is queue entry k
            parts = [part for path in reversed(files) for part in _read_ants_file(path, dimension)]
    return _composite(parts, dimension)


# ---------------------------------------------------------------------------- checks


def _check_pair(fixed, moving) -> int:
    check_scalar_image(fixed, "fixed")
    check_scalar_image(moving, "moving")
    dimension = fixed.GetImageDimension()
    if moving.GetImageDimension() != dimension:
        raise ValueError(
            f"fixed is {dimension}D and moving is {moving.GetImageDimension()}D: register "
            "images of one dimension"
        )
    for name, image in (("fixed", fixed), ("moving", moving)):
        array = itk.array_view_from_image(image)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ValueError(f"{name} has NaN or infinite voxels")
    return dimension


def _check_mask(mask, image, name):
    if mask is None:
        return
    check_same_grid(mask, image, name)
    if not np.any(itk.array_view_from_image(mask)):
        raise ValueError(f"{name} is empty: no voxel is non-zero")


def _check_threads(threads):
    if threads is None:
        return None
    if isinstance(threads, bool) or int(threads) != threads or threads < 1:
        raise ValueError(f"threads must be a positive whole number or None, got {threads!r}")
    return int(threads)


def _check_type_of_transform(type_of_transform):
    if not isinstance(type_of_transform, str):
        raise TypeError(
            "type_of_transform must be one of ANTsPy's names (a string such as 'SyN'), got "
            f"{type(type_of_transform).__name__}"
        )
    if "antsRegistrationSyN" in type_of_transform and not _ANTS_SCRIPT.fullmatch(type_of_transform):
        raise ValueError(
            f"type_of_transform={type_of_transform!r} is not an antsRegistrationSyN type ANTsPy "
            "understands: antsRegistrationSyN[Quick][Repro][x] with x one of t, r, a, s, sr, "
            "so, b, br, bo (and for s and b types optionally ',<metric parameter>"
            "[,<spline distance>]')"
        )


def _check_initial(transform, dimension):
    """A double ITK transform of ``dimension`` (float linear and field transforms are converted;
    a result of ours, an ``InverseConsistentTransform``, gives its ITK export)."""
    if transform is None:
        return None
    if hasattr(transform, "GetITKTransform"):
        transform = transform.GetITKTransform()
    try:
        transform = itk.down_cast(transform)
        input_dimension = transform.GetInputSpaceDimension()
        output_dimension = transform.GetOutputSpaceDimension()
    except (AttributeError, TypeError):
        raise TypeError(
            f"initial_transform must be an ITK transform, got {type(transform).__name__}"
        ) from None
    if (input_dimension, output_dimension) != (dimension, dimension):
        raise ValueError(
            f"initial_transform maps {input_dimension}D points to {output_dimension}D points; "
            f"the images are {dimension}D"
        )
    if _precision(transform) is itk.D:
        return transform
    return _composite([_double(part) for part in _flatten(transform)], dimension)


# ------------------------------------------------------------------------ transforms


def _precision(transform):
    try:
        return itk.template(transform)[1][0]
    except (KeyError, IndexError, TypeError):
        return None


def _composite(parts, dimension):
    composite = itk.CompositeTransform[itk.D, dimension].New()
    for part in parts:
        composite.AddTransform(part)
    return composite


def _double(transform):
    """A double-precision copy of a float linear or displacement-field transform."""
    if _precision(transform) is itk.D:
        return transform
    if transform.GetNameOfClass() == "DisplacementFieldTransform":
        return _copied_field(transform.GetDisplacementField())
    if transform.IsLinear():
        return _affine_transform(_linear_matrix(transform))
    raise TypeError(
        f"a single-precision {transform.GetNameOfClass()} cannot be converted: give a "
        "double-precision (itk.D) transform"
    )


def _copied_field(field):
    """A double ``DisplacementFieldTransform`` of a copy of the field image ``field``, so that
    nothing refers to a file or a reader."""
    return _field_transform(itk.array_from_image(field), ImageGeometry.from_image(field))


# --------------------------------------------------------------------------- elastix


def _elastix() -> dict:
    try:
        return {
            "ElastixRegistrationMethod": itk.ElastixRegistrationMethod,
            "TransformixFilter": itk.TransformixFilter,
            "ParameterObject": itk.ParameterObject,
        }
    except (AttributeError, ImportError) as error:
        raise ImportError(
            f"elastix_registration needs itk-elastix: {INSTALL_HINT} (or pip install itk-elastix)"
        ) from error


def _elastix_value(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return repr(value.item() if isinstance(value, np.generic) else value)
    raise TypeError(f"an elastix parameter value must be a string or a number, got {value!r}")


def _parameter_map(parameter_map, index) -> dict:
    try:
        items = dict(parameter_map).items()
    except (TypeError, ValueError):
        raise TypeError(
            f"parameter map {index} must be a dict of parameter names to value lists, got "
            f"{type(parameter_map).__name__}"
        ) from None
    result = {}
    for name, values in items:
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            values = [values]
        result[str(name)] = [_elastix_value(v) for v in values]
    if "Transform" not in result:
        raise ValueError(f"parameter map {index} has no 'Transform' entry")
    return result


def _parameter_object(parameter_maps, parameter_object_class):
    """A new ``itk.ParameterObject`` with copies of the maps (the caller's are left as they are)."""
    if hasattr(parameter_maps, "GetNumberOfParameterMaps"):
        maps = [
            parameter_maps.GetParameterMap(i)
            for i in range(parameter_maps.GetNumberOfParameterMaps())
        ]
    elif hasattr(parameter_maps, "keys"):
        maps = [parameter_maps]
    else:
        try:
            maps = list(parameter_maps)
        except TypeError:
            raise TypeError(
                "parameter_maps must be a list of elastix parameter maps or an "
                f"itk.ParameterObject, got {type(parameter_maps).__name__}"
            ) from None
    if not maps:
        raise ValueError(
            "parameter_maps is empty: give at least one elastix parameter map, e.g. "
            "itk.ParameterObject.New().GetDefaultParameterMap('rigid')"
        )
    result = parameter_object_class.New()
    for index, parameter_map in enumerate(maps):
        copy = _parameter_map(parameter_map, index)
        copy["WriteResultImage"] = ["false"]
        result.AddParameterMap(copy)
    return result


def _converted_parts(method, initial, fixed):
    """ITK transforms (queue order) equal to elastix's combination transform, or None.

    The combination, converted by ``ConvertToItkTransform``, is a composite whose last entry
    (applied first) is the external initial transform; that entry is replaced by the initial
    transform's own parts. The parts are checked against the combination at the corners and
    centre of the fixed image.
    """
    combination = method.GetCombinationTransform()
    try:
        converted = itk.down_cast(method.ConvertToItkTransform(combination))
    except RuntimeError:  # ITK's exceptions
        return None  # no ITK counterpart (an "Add" combination, an elastix-only transform)
    if converted.GetNameOfClass() == "CompositeTransform":
        parts = [converted.GetNthTransform(i) for i in range(converted.GetNumberOfTransforms())]
    else:
        parts = [converted]
    if initial is not None:
        parts = parts[:-1] + _flatten(initial)
    parts = [itk.down_cast(part) for part in parts]
    if any(_precision(part) is not itk.D for part in parts):
        return None
    check = _composite(parts, fixed.GetImageDimension())
    for point in _probe_points(as_geometry(fixed), per_axis=3)[0].T.tolist():
        expected = np.asarray(combination.TransformPoint(point))
        if np.abs(np.asarray(check.TransformPoint(point)) - expected).max() > 1e-6 * (
            1 + np.abs(expected).max()
        ):
            return None
    return parts


def _transformix_transform(method, moving, transformix_class, log):
    """elastix's whole map sampled at the fixed voxels by transformix, as a field transform."""
    image_type = itk.Image[itk.F, moving.GetImageDimension()]
    with tempfile.TemporaryDirectory(prefix="itkdeepreg-transformix-") as folder:
        transformix = transformix_class[image_type].New()
        transformix.SetMovingImage(_float_image(moving))
        transformix.SetTransformParameterObject(method.GetTransformParameterObject())
        transformix.SetComputeDeformationField(True)
        transformix.SetOutputDirectory(folder)  # it writes deformationField.nii there
        transformix.SetLogToConsole(bool(log))
        transformix.Update()
        field = transformix.GetOutputDeformationField()
        return _copied_field(field)


@contextlib.contextmanager
def _elastix_log_file(method, path):
    """elastix's log moved into ``path`` after the block, also after a failure (when the log
    says why). elastix logs into its output folder only, where it also writes its
    TransformParameters.0.txt: that folder is a temporary one."""
    if path is None:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="itkdeepreg-elastix-") as folder:
        method.SetOutputDirectory(folder)
        method.SetLogFileName("elastix.log")
        method.SetLogToFile(True)
        try:
            yield
        finally:
            log = os.path.join(folder, "elastix.log")
            if os.path.exists(log):
                shutil.move(log, path)


@contextlib.contextmanager
def _itk_threads(threads):
    """ITK's global maximum and default thread counts set to ``threads``, then restored."""
    if threads is None:
        yield
        return
    threader = itk.MultiThreaderBase
    maximum = threader.GetGlobalMaximumNumberOfThreads()
    default = threader.GetGlobalDefaultNumberOfThreads()
    threader.SetGlobalMaximumNumberOfThreads(threads)
    threader.SetGlobalDefaultNumberOfThreads(threads)
    try:
        yield
    finally:
        threader.SetGlobalMaximumNumberOfThreads(maximum)
        threader.SetGlobalDefaultNumberOfThreads(default)


# ------------------------------------------------------------------------------ ANTs


@contextlib.contextmanager
def _ants_environment(threads):
    """ANTsPy, with ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` set for its first use if asked."""
    first_use = "ants" not in sys.modules
    try:
        import ants
    except ImportError as error:
        raise ImportError(
            f"ants_registration needs ANTsPy: {INSTALL_HINT} (or pip install antspyx)"
        ) from error
    previous = os.environ.get(ANTS_THREADS_VARIABLE)
    if first_use:
        _ants_threads.update(known=True, threads=threads)
        if threads is not None:
            os.environ[ANTS_THREADS_VARIABLE] = str(threads)  # read at ANTsPy's first image
    elif threads is not None:
        fixed_count = _ants_threads["threads"] if _ants_threads["known"] else previous
        if str(fixed_count) != str(threads):
            warnings.warn(
                f"threads={threads} is not applied: ANTsPy reads {ANTS_THREADS_VARIABLE} once, "
                "at its first use in a process, and was used before this call; set the "
                "variable before ANTsPy's first use (or pass the same threads to the first "
                "ants_registration call)",
                RuntimeWarning,
                stacklevel=4,  # the caller of ants_registration
            )
    try:
        yield ants
    finally:
        if first_use and threads is not None:
            if previous is None:
                os.environ.pop(ANTS_THREADS_VARIABLE, None)
            else:
                os.environ[ANTS_THREADS_VARIABLE] = previous


def _ants_image(ants, image, geometry_of, mask=False):
    """The ANTsPy image (float, indexed x, y, z) of an ``itk.Image`` on ``geometry_of``'s grid."""
    array = np.asarray(itk.array_view_from_image(image))
    array = (array != 0).astype(np.float32) if mask else array.astype(np.float32)
    geometry = ImageGeometry.from_image(geometry_of)  # a non-zero start index is in its origin
    return ants.from_numpy(
        np.ascontiguousarray(array.T),  # ITK's arrays are (z, y, x)
        origin=geometry.origin.tolist(),
        spacing=geometry.spacing.tolist(),
        direction=np.asarray(geometry.direction, dtype=np.float64),
    )


def _read_ants_file(path, dimension) -> list:
    """The ITK transforms (queue order, double, in memory) of one file of ANTs' list."""
    parts = _flatten(read_itk_transform(path))  # double: the reader's, a warp image's copy
    for part in parts:
        if part.GetInputSpaceDimension() != dimension:
            raise ValueError(f"ANTs wrote a {part.GetInputSpaceDimension()}D transform to {path}")
    return parts


# ------------------------------------------------------------------------ images


def _float_image(image):
    """A float copy of a scalar image with its geometry (itself if it is float already)."""
    if itk.template(image)[1][0] is itk.F:
        return image
    return tensor_to_image(*image_to_tensor(image))


def _mask_image(mask, image):
    """elastix's mask type (unsigned char, 1 inside) on ``image``'s grid."""
    inside = torch.from_numpy(np.asarray(itk.array_view_from_image(mask)) != 0)
    return tensor_to_image(inside, as_geometry(image), itk.UC)

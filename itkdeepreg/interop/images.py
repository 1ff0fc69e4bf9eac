"""``itk.Image`` <-> torch tensor plus :class:`~itkdeepreg.geometry.ImageGeometry`."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib

import itk
import numpy as np
import torch

from ..geometry import ImageGeometry


def read_image(path):
    """The image of a file ITK reads (or a DICOM folder), as ITK reads it, after the checks
    that ITK does not make; a ``ValueError`` that says why not.

    Refused before any pixel is read: a folder with no DICOM series, an unreadable file, a
    header that declares more voxels than this machine's memory holds, a NIfTI file whose
    pixel data is shorter than its header declares, a truncated or corrupt ``.gz`` file (ITK
    reads both without a word, the rest as zeros), NaN or infinite voxels in a NIfTI file
    (ITK reads them as zeros). After reading: NaN or infinite voxels in any format, ITK's
    own refusals, and pixel types ITK Python wraps no reader for.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return _read_dicom_folder(path)
    check_image_file(path)
    try:
        image = itk.imread(path)
    except RuntimeError as error:
        raise ValueError(f"cannot read {path}: {itk_error_message(error)}") from None
    except TypeError:  # itk.TemplateTypeError: a pixel type ITK Python wraps no reader for
        raise ValueError(
            f"cannot read {path}: ITK Python has no reader for its pixel type"
        ) from None
    array = itk.array_view_from_image(image)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(
            f"{path} has {np.count_nonzero(~np.isfinite(array))} NaN or infinite voxels"
        )
    return image


def check_image_file(path) -> None:
    """What :func:`read_image` checks before ITK reads a file (any image file: a displacement
    field too); a ``ValueError`` that says why not."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"cannot read {path}: no such file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"cannot read {path}: permission denied")
    _check_declared_size(path)
    if path.lower().endswith((".nii", ".nii.gz")):
        _check_nifti(path)
    elif path.lower().endswith(".gz"):
        _check_stream(path, gzip.open)


def _read_dicom_folder(path):
    try:
        return itk.imread(path)
    except (RuntimeError, FileNotFoundError):
        raise ValueError(
            f"cannot read {path}: a folder, and no DICOM series in it; give an image file"
        ) from None


def _check_declared_size(path: str) -> None:
    """Refuse a header that declares more voxels than the memory available holds (as stored,
    or as the float32 tensors every method makes), before ITK allocates them."""
    io = itk.ImageIOFactory.CreateImageIO(path, itk.CommonEnums.IOFileMode_ReadMode)
    if io is None:
        raise ValueError(f"cannot read {path}: not an image file ITK reads")
    io.SetFileName(path)
    try:
        io.ReadImageInformation()
    except RuntimeError as error:
        raise ValueError(f"cannot read {path}: {itk_error_message(error)}") from None
    size = [io.GetDimensions(axis) for axis in range(io.GetNumberOfDimensions())]
    voxels = math.prod(size) * io.GetNumberOfComponents()
    needed = voxels * max(io.GetComponentSize(), 4)
    available = _available_memory()
    if available is not None and needed > available:
        raise ValueError(
            f"cannot read {path}: its header declares {'x'.join(map(str, size))} voxels "
            f"({needed / 2**30:.1f} GiB), more than the {available / 2**30:.1f} GiB of "
            "memory available"
        )


def _available_memory() -> int | None:
    """Bytes of memory available now (Linux: MemAvailable), else the physical memory."""
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


_NIFTI_FLOATS = {16: "f4", 64: "f8"}  # datatype codes of real floating-point voxels


def _nifti_header(header: bytes):
    """``(shape, datatype, bits per voxel, offset of the pixel data)`` of a NIfTI-1 or -2
    header, or ``None`` if ``header`` is not one."""
    for order in "<>":
        if len(header) >= 348 and struct.unpack_from(order + "i", header)[0] == 348:
            dim = struct.unpack_from(order + "8h", header, 40)
            datatype, bitpix = struct.unpack_from(order + "2h", header, 70)
            offset = int(struct.unpack_from(order + "f", header, 108)[0])
        elif len(header) >= 540 and struct.unpack_from(order + "i", header)[0] == 540:
            datatype, bitpix = struct.unpack_from(order + "2h", header, 12)
            dim = struct.unpack_from(order + "8q", header, 16)
            offset = struct.unpack_from(order + "q", header, 168)[0]
        else:
            continue
        if not 1 <= dim[0] <= 7:
            return None
        return tuple(dim[1 : dim[0] + 1]), datatype, bitpix, max(offset, 352), order
    return None


def _check_nifti(path: str) -> None:
    """The pixel data is as long as the header declares, and holds no NaN or infinity."""
    opener = gzip.open if path.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as file:
            header = file.read(540)
    except _BROKEN_STREAM as error:
        raise _broken(path, error) from None
    parsed = _nifti_header(header)
    if parsed is None:
        return  # not a NIfTI header: ITK says what is wrong
    shape, datatype, bitpix, offset, order = parsed
    floats = _NIFTI_FLOATS.get(datatype)
    length, non_finite = _check_stream(
        path, opener, offset, np.dtype(order + floats) if floats else None
    )
    expected = math.prod(shape) * bitpix // 8
    if length - offset < expected:
        raise ValueError(
            f"cannot read {path}: its header declares {'x'.join(map(str, shape))} voxels "
            f"({expected} bytes), the file holds {max(length - offset, 0)} bytes of them "
            "(truncated?)"
        )
    if non_finite:
        raise ValueError(f"{path} has {non_finite} NaN or infinite voxels")


def _check_stream(path: str, opener, offset: int = 0, dtype=None) -> tuple[int, int]:
    """Read the file through: ``(its length, the NaN or infinite values of ``dtype`` after
    ``offset``)``; a ``.gz`` file that is corrupt or cut short is refused here."""
    length, non_finite, pending = 0, 0, b""
    try:
        with opener(path, "rb") as file:
            while chunk := file.read(_CHUNK):
                if dtype is not None:
                    start = max(offset - length, 0)
                    values = pending + chunk[start:]
                    usable = len(values) - len(values) % dtype.itemsize
                    array = np.frombuffer(values[:usable], dtype)
                    non_finite += array.size - np.count_nonzero(np.isfinite(array))
                    pending = values[usable:]
                length += len(chunk)
    except _BROKEN_STREAM as error:
        raise _broken(path, error) from None
    return length, non_finite


_CHUNK = 2**24
_BROKEN_STREAM = (OSError, EOFError, zlib.error)  # what reading a cut or corrupt .gz raises


def _broken(path, error) -> ValueError:
    return ValueError(f"cannot read {path}: a corrupt or truncated gzip file ({error})")


def itk_error_message(error) -> str:
    """The useful line of an ITK exception's text (after ``ITK ERROR: ...:``)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for number, line in enumerate(lines):
        if "ITK ERROR" in line:
            text = line.split("ITK ERROR", 1)[1].lstrip(":").strip()
            if "): " in text:
                text = text.split("): ", 1)[1]
            if not text and number + 1 < len(lines):
                text = lines[number + 1]
            return text
    return lines[0] if lines else type(error).__name__


def check_scalar_image(image, name="image"):
    """Raise a clear error unless ``image`` is a 2D or 3D ``itk.Image`` of scalar pixels."""
    try:
        template, (pixel, dimension) = itk.template(image)
    except Exception:
        raise TypeError(f"{name} must be an itk.Image, got {type(image).__name__}") from None
    if template is not itk.Image:
        raise TypeError(f"{name} must be an itk.Image of scalar pixels, got a {template}")
    if dimension not in (2, 3):
        raise ValueError(f"{name} must be 2D or 3D, got a {dimension}D image")
    if not isinstance(pixel, itk.support.types.itkCType):
        raise TypeError(
            f"{name} has vector pixels ({pixel.__name__}); itkdeepreg takes scalar images"
        )


def image_to_tensor(image, device=None, dtype=torch.float32):
    """``(tensor [1, 1, *shape], geometry)`` of a scalar ``itk.Image`` of any pixel type.

    The tensor axes are the array view's (z, y, x). NaN or infinite voxels are refused.
    """
    check_scalar_image(image)
    array = itk.array_view_from_image(image)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(
            f"image has {np.count_nonzero(~np.isfinite(array))} NaN or infinite voxels"
        )
    tensor = torch.tensor(array, dtype=dtype, device=device)[None, None]
    return tensor, ImageGeometry.from_image(image)


def tensor_to_image(tensor: torch.Tensor, geometry: ImageGeometry, pixel_type=itk.F):
    """An ``itk.Image`` of ``pixel_type`` with ``geometry`` from a ``[1, 1, *shape]`` tensor.

    Integer pixel types are rounded to nearest and clipped to the type's range.
    """
    if not isinstance(geometry, ImageGeometry):
        raise TypeError(f"geometry must be an ImageGeometry, got {type(geometry).__name__}")
    spatial = tuple(tensor.shape[-geometry.dimension :])
    if spatial != geometry.shape or tensor.numel() != math.prod(geometry.shape):
        raise ValueError(
            f"a tensor of shape {tuple(tensor.shape)} is not one image of shape {geometry.shape}"
        )
    array = tensor.detach().reshape(geometry.shape).cpu().numpy()
    numpy_type = np.dtype(pixel_type.dtype)
    if np.issubdtype(numpy_type, np.integer) and array.dtype != numpy_type:
        array = array.astype(np.float64)  # float32 cannot hold the limits of 32-bit types
        if not np.isfinite(array).all():
            raise ValueError(f"cannot store NaN or infinite values as {numpy_type} pixels")
        limits = np.iinfo(numpy_type)
        array = np.clip(np.rint(array), limits.min, limits.max)
    image = itk.image_from_array(np.ascontiguousarray(array, dtype=numpy_type))
    set_geometry(image, geometry)
    return image


def set_geometry(image, geometry: ImageGeometry):
    """Give an ITK image (of the geometry's size) the geometry's origin, spacing and direction."""
    image.SetOrigin(geometry.origin.tolist())
    image.SetSpacing(geometry.spacing.tolist())
    image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(geometry.direction)))


def as_geometry(image_or_geometry) -> ImageGeometry:
    """The geometry of an ``itk.Image`` (of any pixel type: a grid is a grid), or the argument
    itself if it is a geometry."""
    if isinstance(image_or_geometry, ImageGeometry):
        return image_or_geometry
    try:
        template = itk.template(image_or_geometry)[0]
    except Exception:
        template = None
    if template not in (itk.Image, itk.VectorImage):
        raise TypeError(
            f"expected an itk.Image or an ImageGeometry, got {type(image_or_geometry).__name__}"
        )
    return ImageGeometry.from_image(image_or_geometry)


def check_same_grid(image, reference, name="image"):
    """Raise a clear error unless the scalar ``image`` (a mask, a segmentation) lies on the grid
    of ``reference`` (an ``itk.Image`` or a geometry): the same size, and the grid's origin and
    corners within 1e-3 (ITK's units, mm) of the reference's."""
    check_scalar_image(image, name)
    geometry, expected = ImageGeometry.from_image(image), as_geometry(reference)
    if geometry.shape != expected.shape or not np.allclose(
        geometry.unit_to_physical, expected.unit_to_physical, atol=1e-3
    ):
        raise ValueError(
            f"{name} must have its image's grid (same size, origin, spacing and direction); "
            "resample it onto that grid first"
        )

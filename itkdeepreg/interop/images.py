"""``itk.Image`` <-> torch tensor plus :class:`~itkdeepreg.geometry.ImageGeometry`."""

from __future__ import annotations

import gzip
import math
import os
import zlib

import itk
import numpy as np
import torch

from ..geometry import ImageGeometry


def read_image(path):
    """The image of a file ITK reads (or a DICOM folder), as ITK reads it; a ``ValueError``
    that says why not: ITK's message, a pixel type ITK Python wraps no reader for, or a
    truncated or corrupt ``.gz`` file (which ITK reads without a word, the rest as zeros)."""
    path = os.fspath(path)
    _check_gzip(path)
    try:
        return itk.imread(path)
    except RuntimeError as error:
        raise ValueError(f"cannot read {path}: {itk_error_message(error)}") from None
    except TypeError:  # itk.TemplateTypeError: a pixel type ITK Python wraps no reader for
        raise ValueError(
            f"cannot read {path}: ITK Python has no reader for its pixel type"
        ) from None


def _check_gzip(path: str) -> None:
    if not path.lower().endswith(".gz") or not os.path.isfile(path):
        return
    try:
        with gzip.open(path, "rb") as file:
            while file.read(2**24):
                pass
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(
            f"cannot read {path}: a corrupt or truncated gzip file ({error})"
        ) from None


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
    """The geometry of an ``itk.Image``, or the argument itself if it is a geometry."""
    if isinstance(image_or_geometry, ImageGeometry):
        return image_or_geometry
    check_scalar_image(image_or_geometry)
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

"""itkdeepreg: deep and optimization-based image registration for ITK users.

``import itkdeepreg`` loads only the torch core; the ITK interop names below are imported
from :mod:`itkdeepreg.interop` on first use, so the core works where ITK is not installed.
"""

from importlib import import_module

from .geometry import ImageGeometry
from .sampling import identity_grid, resample, sample
from .transforms import (
    Affine,
    Composite,
    Displacement,
    Transform,
    Velocity,
    compose,
    from_physical,
    load_transform,
    to_physical,
)

__version__ = "0.1.0"
__all__ = [
    "Affine",
    "Composite",
    "Displacement",
    "ImageGeometry",
    "Transform",
    "Velocity",
    "compose",
    "from_physical",
    "identity_grid",
    "load_transform",
    "resample",
    "sample",
    "to_physical",
]

_INTEROP = {
    "displacement_field_image",
    "from_itk_transform",
    "image_to_tensor",
    "read_transform",
    "tensor_to_image",
    "to_itk_displacement_field",
    "to_itk_transform",
    "write_displacement_field",
    "write_transform",
}


def __getattr__(name):
    if name in _INTEROP:
        return getattr(import_module(".interop", __name__), name)
    raise AttributeError(f"module 'itkdeepreg' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_INTEROP))

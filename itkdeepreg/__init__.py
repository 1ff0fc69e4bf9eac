"""itkdeepreg: deep and optimization-based image registration for ITK users.

The torch core works where ITK is not installed. Where it is, ``import itkdeepreg`` adds
``DeepRegistrationMethod``, ``deep_registration_method`` and ``InverseConsistentTransform``
to the ``itk`` namespace (:mod:`itkdeepreg.wrapping`); the ITK names below are attributes of
this package too.
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
    invert,
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
    "invert",
    "load_transform",
    "resample",
    "sample",
    "to_physical",
]

_ITK_NAMES = {
    "DeepRegistrationMethod": ".registration",
    "InverseConsistentTransform": ".interop",
    "deep_registration_method": ".registration",
    "displacement_field_image": ".interop",
    "from_itk_transform": ".interop",
    "image_to_tensor": ".interop",
    "read_transform": ".interop",
    "tensor_to_image": ".interop",
    "to_itk_displacement_field": ".interop",
    "to_itk_transform": ".interop",
    "write_displacement_field": ".interop",
    "write_transform": ".interop",
}


def __getattr__(name):
    if name in _ITK_NAMES:
        return getattr(import_module(_ITK_NAMES[name], __name__), name)
    raise AttributeError(f"module 'itkdeepreg' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_ITK_NAMES))


try:  # installed from wrapping/ (pyproject's package-dir); a bare source tree lacks it
    from .wrapping import add_to_itk  # noqa: E402  (after the names it needs)
except ModuleNotFoundError:
    pass
else:
    add_to_itk()

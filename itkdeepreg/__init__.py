"""itkdeepreg: deep and optimization-based image registration for ITK users.

The torch core works where ITK is not installed. Where it is, ``import itkdeepreg`` adds
``DeepRegistrationMethod``, ``deep_registration_method`` and ``InverseConsistentTransform``
to the ``itk`` namespace (:mod:`itkdeepreg.wrapping`); the ITK names below are attributes of
this package too. Every name is imported when first used: ``import itkdeepreg`` loads neither
torch nor ITK.
"""

import pkgutil
from importlib import import_module, metadata

try:
    __version__ = metadata.version("itkdeepreg")
except metadata.PackageNotFoundError:  # a bare source tree
    __version__ = "0+unknown"

# every name is imported on first use, so that the command starts without torch or ITK
_NAMES = {
    "Affine": ".transforms",
    "Composite": ".transforms",
    "Displacement": ".transforms",
    "Transform": ".transforms",
    "Velocity": ".transforms",
    "compose": ".transforms",
    "from_physical": ".transforms",
    "invert": ".transforms",
    "load_transform": ".transforms",
    "to_physical": ".transforms",
    "ImageGeometry": ".geometry",
    "identity_grid": ".sampling",
    "resample": ".sampling",
    "sample": ".sampling",
    # the ITK face: these need ITK
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
__all__ = sorted(n for n, m in _NAMES.items() if m in (".transforms", ".geometry", ".sampling"))


def __getattr__(name):
    if name in _NAMES:
        return getattr(import_module(_NAMES[name], __name__), name)
    if name in {module.name for module in pkgutil.iter_modules(__path__)}:
        return import_module(f".{name}", __name__)  # itkdeepreg.losses without importing it
    raise AttributeError(f"module 'itkdeepreg' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_NAMES))


try:  # installed from wrapping/ (pyproject's package-dir); a bare source tree lacks it
    from .wrapping import add_to_itk
except ModuleNotFoundError:
    pass
else:
    add_to_itk()

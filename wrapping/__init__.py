"""itkdeepreg's classes in the ``itk`` namespace.

ITK modules keep the Python extras that place their classes in ``itk`` in ``wrapping/`` (as
ITKElastix adds ``itk.ElastixRegistrationMethod``). This folder is installed as
``itkdeepreg.wrapping``; ``import itkdeepreg`` calls :func:`add_to_itk`, so
``itk.DeepRegistrationMethod``, ``itk.deep_registration_method`` and
``itk.InverseConsistentTransform`` exist after it, whichever of ``itk`` and ``itkdeepreg`` is
imported first.

Neither ITK nor torch is imported to do so: the names are attributes of the ``itk`` module
found by its ``__getattr__`` (PEP 562), which imports their modules when one is first used, and
when ITK is not imported yet they are added once it is. ``import itkdeepreg`` stays cheap, so
the ``itkdeepreg`` command answers ``--help`` without loading either.
"""

import importlib
import importlib.abc
import importlib.util
import sys

NAMES = {
    "DeepRegistrationMethod": "itkdeepreg.registration",
    "deep_registration_method": "itkdeepreg.registration",
    "InverseConsistentTransform": "itkdeepreg.interop",
}


def add_to_itk() -> None:
    """Add :data:`NAMES` to the ``itk`` module: now if it is imported, else once it is."""
    itk = sys.modules.get("itk", False)
    if itk is None:  # marked unimportable (as the torch-only test does)
        return
    if itk is not False:
        _add_names(itk)
    elif not any(isinstance(finder, _OnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _OnImport())


def _add_names(itk) -> None:
    earlier = vars(itk).get("__getattr__")

    def __getattr__(name):
        if name in NAMES:
            return getattr(importlib.import_module(NAMES[name]), name)
        if earlier is not None:
            return earlier(name)
        raise AttributeError(f"module 'itk' has no attribute {name!r}")

    itk.__getattr__ = __getattr__


class _OnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when ``itk`` is imported, its loader is wrapped so that the names
    are added to the module once ITK has made it."""

    def find_spec(self, name, path=None, target=None):
        if name != "itk":
            return None
        sys.meta_path.remove(self)  # before find_spec, which would come back here
        spec = importlib.util.find_spec("itk")
        if spec is not None and spec.loader is not None:
            spec.loader = _AddingLoader(spec.loader)
        return spec


class _AddingLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        _add_names(sys.modules["itk"])  # ITK replaces its module with a lazy-loading one

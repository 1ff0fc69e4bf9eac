"""itkdeepreg's classes in the ``itk`` namespace.

ITK modules keep the Python extras that place their classes in ``itk`` in ``wrapping/`` (as
ITKElastix adds ``itk.ElastixRegistrationMethod``). This folder is installed as
``itkdeepreg.wrapping``; ``import itkdeepreg`` calls :func:`add_to_itk` when ITK is installed,
so ``itk.DeepRegistrationMethod``, ``itk.deep_registration_method`` and
``itk.InverseConsistentTransform`` exist after it.
"""

NAMES = ("DeepRegistrationMethod", "deep_registration_method", "InverseConsistentTransform")


def add_to_itk() -> bool:
    """Add :data:`NAMES` to the ``itk`` module; False (and nothing done) without ITK."""
    try:
        import itk
    except ImportError:
        return False
    from ..interop import InverseConsistentTransform
    from ..registration import DeepRegistrationMethod, deep_registration_method

    itk.DeepRegistrationMethod = DeepRegistrationMethod
    itk.deep_registration_method = deep_registration_method
    itk.InverseConsistentTransform = InverseConsistentTransform
    return True

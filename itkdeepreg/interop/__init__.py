"""ITK images and transforms (imports ``itk``; the torch core does not)."""

from .images import as_geometry, check_scalar_image, image_to_tensor, set_geometry, tensor_to_image
from .inverse_consistent import InverseConsistentTransform
from .transforms import (
    displacement_field_image,
    from_itk_transform,
    read_transform,
    to_itk_displacement_field,
    to_itk_transform,
    write_displacement_field,
    write_transform,
)

__all__ = [
    "InverseConsistentTransform",
    "as_geometry",
    "check_scalar_image",
    "displacement_field_image",
    "from_itk_transform",
    "image_to_tensor",
    "read_transform",
    "set_geometry",
    "tensor_to_image",
    "to_itk_displacement_field",
    "to_itk_transform",
    "write_displacement_field",
    "write_transform",
]

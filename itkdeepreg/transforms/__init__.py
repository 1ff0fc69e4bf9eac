"""Transform values (idea 2 of docs/architecture.md): torch only, no ITK."""

from .affine import Affine
from .base import Transform, from_dict, load_transform
from .composite import Composite, compose
from .field import Displacement, Velocity, exponentiated
from .inverse import invert
from .physical import from_physical, to_physical

__all__ = [
    "Affine",
    "Composite",
    "Displacement",
    "Transform",
    "Velocity",
    "compose",
    "exponentiated",
    "from_dict",
    "from_physical",
    "invert",
    "load_transform",
    "to_physical",
]

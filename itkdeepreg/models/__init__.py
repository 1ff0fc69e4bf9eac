"""Models as trees of registration steps (idea 3 of docs/architecture.md)."""

from .inference import both_directions, register_pair
from .steps import AffineStep, DisplacementStep, Downsample, TwoStep

__all__ = [
    "AffineStep",
    "DisplacementStep",
    "Downsample",
    "TwoStep",
    "both_directions",
    "register_pair",
]

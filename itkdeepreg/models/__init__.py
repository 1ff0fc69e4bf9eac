"""Models as trees of registration steps (DESIGN.md, idea 3)."""

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

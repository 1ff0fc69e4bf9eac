"""Models as trees of registration steps (DESIGN.md, idea 3)."""

from .inference import register_pair
from .steps import DisplacementStep, Downsample, TwoStep

__all__ = ["DisplacementStep", "Downsample", "TwoStep", "register_pair"]

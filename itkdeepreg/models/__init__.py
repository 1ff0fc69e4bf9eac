"""Models as trees of registration steps (DESIGN.md, idea 3)."""

from .inference import register_pair
from .steps import AffineStep, DisplacementStep, Downsample, TwoStep

__all__ = ["AffineStep", "DisplacementStep", "Downsample", "TwoStep", "register_pair"]

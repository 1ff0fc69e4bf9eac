"""Optimization: registration by optimization, and instance optimization of network answers.

Every function here minimises ``similarity + lambda * regularizer`` with Adam over some
parameters (idea 4 of docs/architecture.md) and returns an :class:`OptimizationResult`: the
forward and backward maps as transform values, and the objective at each step.
"""

from .affine import register_affine
from .deformable import register_deformable
from .instance import optimize_fields, optimize_weights
from .loop import OptimizationResult

__all__ = [
    "OptimizationResult",
    "optimize_fields",
    "optimize_weights",
    "register_affine",
    "register_deformable",
]

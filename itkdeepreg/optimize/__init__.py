"""Optimization: instance optimization of network answers (optimization-based registration will join)."""

from .instance import InstanceOptimization, optimize_fields, optimize_weights

__all__ = ["InstanceOptimization", "optimize_fields", "optimize_weights"]

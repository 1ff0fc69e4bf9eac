"""Training: data, synthetic pairs, augmentation, objectives and the training loop.

Everything here runs without ITK except reading image files (:class:`ImagePairs`).
"""

from .augment import augment
from .config import read_config, run
from .data import ImagePairs
from .loop import train
from .objectives import Objective, Schedule
from .synthetic import SyntheticBatch, SyntheticPairs

__all__ = [
    "ImagePairs",
    "Objective",
    "Schedule",
    "SyntheticBatch",
    "SyntheticPairs",
    "augment",
    "read_config",
    "run",
    "train",
]

"""Named models: the published architectures, to be given their published weights."""

from .gradicon import (
    GRADICON_BRAIN_SHAPE,
    GRADICON_KNEE_SHAPE,
    GRADICON_LUNG_SHAPE,
    UNIGRADICON_SHAPE,
    gradicon_brain_network,
    gradicon_knee_network,
    gradicon_lung_network,
    unigradicon_network,
)
from .preprocessing import preprocess
from .weights import (
    GRADICON_BRAIN,
    GRADICON_KNEE,
    GRADICON_LUNG,
    MULTIGRADICON,
    UNIGRADICON,
    WeightsSource,
    cache_directory,
    fetch,
    load_weights,
    read_state_dict,
)

__all__ = [
    "GRADICON_BRAIN",
    "GRADICON_BRAIN_SHAPE",
    "GRADICON_KNEE",
    "GRADICON_KNEE_SHAPE",
    "GRADICON_LUNG",
    "GRADICON_LUNG_SHAPE",
    "MULTIGRADICON",
    "UNIGRADICON",
    "UNIGRADICON_SHAPE",
    "WeightsSource",
    "cache_directory",
    "fetch",
    "gradicon_brain_network",
    "gradicon_knee_network",
    "gradicon_lung_network",
    "load_weights",
    "preprocess",
    "read_state_dict",
    "unigradicon_network",
]

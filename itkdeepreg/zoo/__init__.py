"""Named models: the published architectures, to be given their published weights."""

from .gradicon import UNIGRADICON_SHAPE, unigradicon_network
from .preprocessing import preprocess
from .weights import (
    MULTIGRADICON,
    UNIGRADICON,
    WeightsSource,
    cache_directory,
    fetch,
    load_weights,
    read_state_dict,
)

__all__ = [
    "MULTIGRADICON",
    "UNIGRADICON",
    "UNIGRADICON_SHAPE",
    "WeightsSource",
    "cache_directory",
    "fetch",
    "load_weights",
    "preprocess",
    "read_state_dict",
    "unigradicon_network",
]

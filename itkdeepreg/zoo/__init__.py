"""Named models: the published architectures, to be given their published weights."""

from .gradicon import UNIGRADICON_SHAPE, unigradicon_network
from .preprocessing import preprocess

__all__ = ["UNIGRADICON_SHAPE", "preprocess", "unigradicon_network"]

"""Named models: the published architectures, to be given their published weights, and the
models of our own, trained folders shipped in ``models/``."""

import os

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
from .preprocessing import preprocess, preprocess_gradicon_brain, preprocess_gradicon_lung
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

OWN_MODELS_FOLDER = os.path.join(os.path.dirname(__file__), "models")
# GradICON trained on synthetic pairs only (recipe: examples/training/synth_gradicon_2d.toml)
OWN_MODELS = ("synth-gradicon-2d",)

__all__ = [
    "GRADICON_BRAIN",
    "GRADICON_BRAIN_SHAPE",
    "GRADICON_KNEE",
    "GRADICON_KNEE_SHAPE",
    "GRADICON_LUNG",
    "GRADICON_LUNG_SHAPE",
    "MULTIGRADICON",
    "OWN_MODELS",
    "OWN_MODELS_FOLDER",
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
    "preprocess_gradicon_brain",
    "preprocess_gradicon_lung",
    "read_state_dict",
    "unigradicon_network",
]

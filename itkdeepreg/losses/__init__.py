"""Similarity losses and regularizers: plain functions of tensors and values.

Idea 4 of docs/architecture.md: objectives wrap models, models do not know their loss.
"""

from .metrics import dice, folding_fraction, jacobian_determinant
from .objective import (
    REGULARIZERS,
    dice_term,
    fields_of,
    pair_objective,
    pair_similarity,
    volume_change,
)
from .regularizers import bending_energy, diffusion, gradicon, icon
from .similarity import (
    gaussian_blur,
    lncc,
    masked_mean,
    mind_ssc,
    mind_ssc_loss,
    mse,
    mutual_information,
    ncc,
    ngf,
    squared_lncc,
)

# similarity measures by the names parameter files, the command line and training use
SIMILARITIES = {
    "lncc": lncc,
    "squared_lncc": squared_lncc,
    "mind": mind_ssc_loss,
    "ncc": ncc,
    "mse": mse,
    "mutual_information": mutual_information,
    "ngf": ngf,
}


def similarity_name(name, names=SIMILARITIES) -> str:
    """The name of ``names`` that ``name`` is, ignoring case (``"LNCC"`` is ``"lncc"``): the one
    lookup of similarity names, which the command line has always lowercased."""
    canonical = {n.lower(): n for n in names}
    if not isinstance(name, str) or name.lower() not in canonical:
        raise ValueError(f"unknown similarity {name!r}; known: {', '.join(names)}")
    return canonical[name.lower()]


def named_similarity(name, table=SIMILARITIES):
    """The similarity function of a name in ``table`` (a function is returned as it is)."""
    if callable(name):
        return name
    return table[similarity_name(name, table)]


__all__ = [
    "REGULARIZERS",
    "SIMILARITIES",
    "bending_energy",
    "dice",
    "dice_term",
    "diffusion",
    "fields_of",
    "folding_fraction",
    "gaussian_blur",
    "gradicon",
    "icon",
    "jacobian_determinant",
    "lncc",
    "masked_mean",
    "mind_ssc",
    "mind_ssc_loss",
    "mse",
    "mutual_information",
    "named_similarity",
    "ncc",
    "ngf",
    "pair_objective",
    "pair_similarity",
    "similarity_name",
    "squared_lncc",
    "volume_change",
]

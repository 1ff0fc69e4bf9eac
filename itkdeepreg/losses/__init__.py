"""Similarity losses and regularizers (DESIGN.md, idea 4): plain functions of tensors and values."""

from .metrics import dice, folding_fraction, jacobian_determinant
from .objective import REGULARIZERS, fields_of, pair_objective
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


def named_similarity(name, table=SIMILARITIES):
    """The similarity function of a name in ``table`` (a function is returned as it is)."""
    if callable(name):
        return name
    if name not in table:
        raise ValueError(f"unknown similarity {name!r}; known: {', '.join(table)}")
    return table[name]


__all__ = [
    "REGULARIZERS",
    "SIMILARITIES",
    "bending_energy",
    "dice",
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
    "squared_lncc",
]

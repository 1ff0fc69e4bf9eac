"""Similarity losses and regularizers (DESIGN.md, idea 4): plain functions of tensors and values."""

from .metrics import dice, folding_fraction, jacobian_determinant
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
    squared_lncc,
)

__all__ = [
    "bending_energy",
    "dice",
    "diffusion",
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
    "ncc",
    "squared_lncc",
]

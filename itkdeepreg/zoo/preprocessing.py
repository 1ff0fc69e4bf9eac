"""The published intensity preprocessing of uniGradICON and of GradICON's lung and brain
models, on tensors."""

from __future__ import annotations

import torch

CT_WINDOW = (-1000.0, 1000.0)  # Hounsfield units
LUNG_WINDOW = (-1000.0, 0.0)  # GradICON's lung model: air to water
MRI_PERCENTILE = 0.99
BRAIN_MAXIMUM = 0.9  # GradICON's brain model: the brightest voxel


def preprocess(
    image: torch.Tensor,
    modality: str,
    mask: torch.Tensor | None = None,
    ct_window=None,
    quantile_range=None,
) -> torch.Tensor:
    """Intensities in ``[0, 1]`` as uniGradICON (and multiGradICON) expect them.

    ``"ct"`` is clipped to ``ct_window`` (default [-1000, 1000] HU) and scaled by the window,
    so a CT keeps its Hounsfield scale whatever it holds; ``"mri"`` is clipped to the
    ``quantile_range`` quantiles of its intensities (default: its minimum and its 0.99
    quantile) and scaled by those two. A ``mask`` zeroes the result where it is not positive
    (:func:`binarised`), as published for input masking.
    """
    image = _floating(image)
    if modality == "ct":
        low, high = CT_WINDOW if ct_window is None else ct_window
    elif modality == "mri":
        _refuse_constant(image)  # before its quantiles, which would say less
        lower, upper = (0.0, MRI_PERCENTILE) if quantile_range is None else quantile_range
        low, high = quantile(image, lower), quantile(image, upper)
        if high <= low:
            raise ValueError(
                f"the quantiles {lower} and {upper} of the image are both {low}: "
                "there is no intensity range to scale"
            )
    else:
        raise ValueError(f"modality must be 'ct' or 'mri', got {modality!r}")
    return _masked(_windowed(image, low, high), mask)


def quantile(image: torch.Tensor, q: float) -> float:
    """The published quantile: the ``int(q n)``-th smallest of ``n`` intensities (the first
    at least, the last at most), so 0 is the minimum."""
    flat = image.flatten()
    k = min(max(int(q * flat.numel()), 1), flat.numel())
    return flat.kthvalue(k).values.item()


def binarised(mask: torch.Tensor) -> torch.Tensor:
    """A mask or label map as the published code reads it (cast to 16-bit integers, so
    truncated toward zero), 1 where positive and 0 elsewhere, as floating point."""
    return (mask.trunc() > 0 if mask.is_floating_point() else mask > 0).to(torch.float32)


def preprocess_gradicon_lung(
    image: torch.Tensor,
    modality: str = "ct",
    mask: torch.Tensor | None = None,
    ct_window=None,
    quantile_range=None,
) -> torch.Tensor:
    """GradICON's lung CT model (published ``lung_network_preprocess``): clipped to
    ``ct_window`` (default [-1000, 0] HU) and scaled by that window, then masked by the lung
    segmentation, which the published model expects."""
    _only(modality, "ct", "lung")
    _no_quantiles(quantile_range, "lung")
    window = LUNG_WINDOW if ct_window is None else ct_window
    return _masked(_windowed(_floating(image), *window), mask)


def preprocess_gradicon_brain(
    image: torch.Tensor,
    modality: str = "mri",
    mask: torch.Tensor | None = None,
    ct_window=None,
    quantile_range=None,
) -> torch.Tensor:
    """GradICON's brain MRI model (published ``brain_network_preprocess``): scaled, not
    shifted or clipped, so that the brightest voxel is 0.9."""
    _only(modality, "mri", "brain")
    _no_quantiles(quantile_range, "brain")
    image = _floating(image)
    _refuse_constant(image)
    if image.max() <= 0:
        raise ValueError("the image has no positive intensity to scale to 0.9")
    return _masked(image * (BRAIN_MAXIMUM / image.max()), mask)


def _floating(image):
    return image if image.is_floating_point() else image.to(torch.float32)


def _windowed(image, low, high):
    image = image.clamp(low, high)
    _refuse_constant(image, " after clipping")
    return (image - low) / (high - low)


def _refuse_constant(image, where=""):
    if image.min() == image.max():
        raise ValueError(f"the image is constant{where}: there is nothing to register")


def _masked(image, mask):
    # published: a label map is binarised (label > 0), then multiplies the image
    return image if mask is None else image * binarised(mask).to(image.dtype)


def _no_quantiles(quantile_range, model):
    if quantile_range is not None:
        raise ValueError(f"GradICON's {model} model scales by no quantiles: drop quantile_range")


def _only(modality, expected, model):
    if modality != expected:
        raise ValueError(
            f"GradICON's {model} model registers {expected.upper()} images, got {modality!r}"
        )

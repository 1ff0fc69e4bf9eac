"""The published intensity preprocessing of uniGradICON and of GradICON's lung and brain
models, on tensors."""

from __future__ import annotations

import torch

CT_WINDOW = (-1000.0, 1000.0)  # Hounsfield units
LUNG_WINDOW = (-1000.0, 0.0)  # GradICON's lung model: air to water
MRI_PERCENTILE = 0.99
BRAIN_MAXIMUM = 0.9  # GradICON's brain model: the brightest voxel


def preprocess(
    image: torch.Tensor, modality: str, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Intensities in ``[0, 1]`` as uniGradICON (and multiGradICON) expect them.

    ``"ct"`` is clipped to the [-1000, 1000] HU window and scaled by the window, so a CT keeps
    its Hounsfield scale whatever it holds; ``"mri"`` is clipped to [its minimum, its 99th
    percentile] and scaled by those two. A ``mask`` (a segmentation, say) zeroes the result
    where its label is not positive, as published for masked registration.
    """
    image = _floating(image)
    if modality == "ct":
        low, high = CT_WINDOW
    elif modality == "mri":
        flat = image.flatten()
        # the published k-th value: the int(0.99 n)-th smallest intensity (at least the first)
        k = min(max(int(MRI_PERCENTILE * flat.numel()), 1), flat.numel())
        low, high = flat.min().item(), flat.kthvalue(k).values.item()
    else:
        raise ValueError(f"modality must be 'ct' or 'mri', got {modality!r}")
    return _masked(_windowed(image, low, high), mask)


def preprocess_gradicon_lung(
    image: torch.Tensor, modality: str = "ct", mask: torch.Tensor | None = None
) -> torch.Tensor:
    """GradICON's lung CT model (published ``lung_network_preprocess``): clipped to
    [-1000, 0] HU and scaled by that window, then masked by the lung segmentation, which the
    published model expects."""
    _only(modality, "ct", "lung")
    return _masked(_windowed(_floating(image), *LUNG_WINDOW), mask)


def preprocess_gradicon_brain(
    image: torch.Tensor, modality: str = "mri", mask: torch.Tensor | None = None
) -> torch.Tensor:
    """GradICON's brain MRI model (published ``brain_network_preprocess``): scaled, not
    shifted or clipped, so that the brightest voxel is 0.9."""
    _only(modality, "mri", "brain")
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
    return image if mask is None else image * (mask > 0).to(image.dtype)


def _only(modality, expected, model):
    if modality != expected:
        raise ValueError(
            f"GradICON's {model} model registers {expected.upper()} images, got {modality!r}"
        )

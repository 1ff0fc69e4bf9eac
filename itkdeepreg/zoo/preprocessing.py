"""The published uniGradICON intensity preprocessing, on tensors."""

from __future__ import annotations

import torch

CT_WINDOW = (-1000.0, 1000.0)  # Hounsfield units
MRI_PERCENTILE = 0.99


def preprocess(
    image: torch.Tensor, modality: str, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Intensities in ``[0, 1]`` as the published networks expect them.

    ``"ct"`` is clipped to [-1000, 1000] HU; ``"mri"`` to [its minimum, its 99th percentile];
    then both are scaled by their minimum and maximum to [0, 1]. A ``mask`` (a segmentation,
    say) multiplies the result, as published for masked registration.
    """
    image = image.to(torch.float32) if not image.is_floating_point() else image
    if modality == "ct":
        low, high = CT_WINDOW
    elif modality == "mri":
        flat = image.flatten()
        # the published k-th value: the int(0.99 n)-th smallest intensity (at least the first)
        k = min(max(int(MRI_PERCENTILE * flat.numel()), 1), flat.numel())
        low, high = flat.min().item(), flat.kthvalue(k).values.item()
    else:
        raise ValueError(f"modality must be 'ct' or 'mri', got {modality!r}")
    image = image.clamp(low, high)
    low, high = image.min(), image.max()
    if high <= low:
        raise ValueError("the image is constant after clipping: there is nothing to register")
    image = (image - low) / (high - low)
    return image if mask is None else image * mask.to(image.dtype)

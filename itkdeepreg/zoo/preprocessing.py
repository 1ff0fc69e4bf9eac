"""The published uniGradICON intensity preprocessing, on tensors."""

from __future__ import annotations

import torch

CT_WINDOW = (-1000.0, 1000.0)  # Hounsfield units
MRI_PERCENTILE = 0.99


def preprocess(
    image: torch.Tensor, modality: str, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Intensities in ``[0, 1]`` as the published networks expect them.

    ``"ct"`` is clipped to the [-1000, 1000] HU window and scaled by the window, so a CT keeps
    its Hounsfield scale whatever it holds; ``"mri"`` is clipped to [its minimum, its 99th
    percentile] and scaled by those two. A ``mask`` (a segmentation, say) zeroes the result
    where its label is not positive, as published for masked registration.
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
    if image.min() == image.max():
        raise ValueError("the image is constant after clipping: there is nothing to register")
    image = (image - low) / (high - low)
    return image if mask is None else image * (mask > 0).to(image.dtype)

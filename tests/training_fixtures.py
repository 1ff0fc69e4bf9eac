"""Shared by tests/test_training.py and the processes it starts with torchrun."""

import torch

from itkdeepreg.models import DisplacementStep
from itkdeepreg.nets import GradICONUNet

BATCH = 4
SIZE = 32


def small_unet() -> DisplacementStep:
    """A 2D GradICON U-Net with every weight non-zero (its last layer starts at zero)."""
    torch.manual_seed(0)
    model = DisplacementStep(GradICONUNet(2))
    torch.nn.init.normal_(model.net.lastConv.weight, std=1e-2)
    return model


def pair_batch():
    generator = torch.Generator().manual_seed(0)
    shape = (BATCH, 1, SIZE, SIZE)
    return torch.rand(shape, generator=generator), torch.rand(shape, generator=generator)


def gradients(model) -> dict:
    return {name: p.grad.clone() for name, p in model.named_parameters()}


class RandomPairs:
    """Noise images: enough to compare loss curves and gradients."""

    def sample(self, batch_size, generator):
        shape = (batch_size, 1, SIZE, SIZE)
        return torch.rand(shape, generator=generator), torch.rand(shape, generator=generator)

"""The U-Net of GradICON and uniGradICON, as published (``tallUNet2`` in icon_registration).

Facts of the published network, written anew here: five levels; channels
``[2 C, 16, 32, 64, 256, 512]`` down and ``[16, 32, 64, 128, 256]`` up; strided 3-wide
convolutions down, each added to a channel-padded average-pool of its input; 4-wide transposed
convolutions up, each added to a linear upsampling of its input, then BatchNorm, a crop to the
skip's size and the skip concatenated; leaky ReLU (slope 0.01) before every convolution; a
zero-initialised last convolution whose output is divided by 10. Parameter names are the
published ones, so published weights load strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DOWN_CHANNELS = (16, 32, 64, 256, 512)
UP_CHANNELS = (16, 32, 64, 128, 256)
MINIMUM_SIZE = 17  # in 3D, torch's avg_pool3d refuses the one-voxel deepest level of 16


class GradICONUNet(nn.Module):
    """Displacement field ``[B, D, *shape]`` of a pair of images ``[B, C, *shape]``, 2D or 3D.

    The images are concatenated as (moving, fixed) channels, as published; the output is in
    unit-cube units (it becomes a :class:`~itkdeepreg.transforms.Displacement`). Any spatial
    size works: odd sizes are rounded up on the way down and cropped on the way up.
    """

    def __init__(
        self,
        dimension: int = 3,
        input_channels: int = 1,
        down_channels=DOWN_CHANNELS,
        up_channels=UP_CHANNELS,
    ):
        super().__init__()
        if dimension not in (2, 3):
            raise ValueError(f"the U-Net is 2D or 3D, got dimension {dimension}")
        if len(down_channels) != 5 or len(up_channels) != 5:
            raise ValueError("the U-Net has five levels: give five down and five up channels")
        self.dimension = dimension
        convolution = (nn.Conv2d, nn.Conv3d)[dimension - 2]
        transposed = (nn.ConvTranspose2d, nn.ConvTranspose3d)[dimension - 2]
        batch_norm = (nn.BatchNorm2d, nn.BatchNorm3d)[dimension - 2]
        down = (2 * input_channels, *down_channels)
        # an up convolution reads its level's down features and the level below's up features
        up_inputs = [down[d + 1] + (up_channels[d + 1] if d < 4 else 0) for d in range(5)]
        self.downConvs = nn.ModuleList(
            convolution(down[d], down[d + 1], kernel_size=3, stride=2, padding=1) for d in range(5)
        )
        self.upConvs = nn.ModuleList(
            transposed(up_inputs[d], up_channels[d], kernel_size=4, stride=2, padding=1)
            for d in range(5)
        )
        self.batchNorms = nn.ModuleList(batch_norm(up_channels[d]) for d in range(5))
        self.lastConv = convolution(up_channels[0] + down[0], dimension, kernel_size=3, padding=1)
        nn.init.zeros_(self.lastConv.weight)  # training starts from the identity map
        nn.init.zeros_(self.lastConv.bias)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        if self.dimension == 3 and min(moving.shape[2:]) < MINIMUM_SIZE:
            raise ValueError(
                f"the 3D U-Net halves every axis five times: it needs at least {MINIMUM_SIZE} "
                f"voxels along each, got {tuple(moving.shape[2:])}"
            )
        average_pool = (F.avg_pool2d, F.avg_pool3d)[self.dimension - 2]
        upsample_mode = ("bilinear", "trilinear")[self.dimension - 2]
        x = torch.cat([moving, fixed], 1)
        skips = []
        for convolution in self.downConvs:
            skips.append(x)
            y = convolution(F.leaky_relu(x))
            pooled = average_pool(x, 2, ceil_mode=True)[:, : y.shape[1]]
            # the pooled input fills the last channels of the output; the first get zeros
            x = y + F.pad(pooled, [0, 0] * self.dimension + [y.shape[1] - pooled.shape[1], 0])
        for level in reversed(range(5)):
            y = self.upConvs[level](F.leaky_relu(x))
            upsampled = F.interpolate(
                x[:, : y.shape[1]], scale_factor=2, mode=upsample_mode, align_corners=False
            )
            x = self.batchNorms[level](y + upsampled)
            skip = skips[level]
            x = x[(slice(None), slice(None)) + tuple(slice(0, n) for n in skip.shape[2:])]
            x = torch.cat([x, skip], 1)
        return self.lastConv(x) / 10

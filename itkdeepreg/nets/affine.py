"""The convolutional affine network of ICON and GradICON, as published (``ConvolutionalMatrixNet``).

Facts of the published network (icon_registration ``networks.py``), written anew here: the
images are concatenated as (moving, fixed) channels; six 3-wide convolutions with stride 1 and
padding 1 take the channels through ``[2 C, 16, 32, 64, 128, 256, 512]``, each preceded by a
ReLU and followed by an average-pool by 2 (``ceil_mode=True``); the 512 features are averaged
over the whole remaining grid, then ``dense2`` (512 -> 300), a ReLU and ``dense3``
(300 -> ``D (D+1)``), whose weight and bias start at zero. The ``D (D+1)`` outputs, read row by
row as a ``[D, D+1]`` matrix ``[A, t]``, become the homogeneous matrix
``S(c) [[I + A, t], [0, 1]] S(-c)``, with ``c = (0.5, ..., 0.5)`` and ``S(v)`` the translation by
``v``; that is
``x -> c + (I + A)(x - c) + t``: the linear part acts about the centre of the unit cube. An
untrained network therefore gives the identity matrix exactly.

Coordinates. The published step that uses this matrix (``FunctionFromMatrix``, later named
``Affine``) multiplies it with the homogeneous coordinates ``[x_0, ..., x_{D-1}, 1]`` of ICON's
identity map and keeps the first ``D`` rows. ICON's identity map puts voxel ``k`` of an axis of
size ``N`` at ``k/(N-1)`` and channel ``i`` is the coordinate along tensor axis ``i``: that is
exactly itkdeepreg's unit-cube convention ("The convention" in docs/architecture.md), so the
published matrix is used as it is, with no reordering or rescaling, as an
:class:`~itkdeepreg.transforms.Affine` mapping the fixed image's unit cube to the moving image's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FEATURES = (16, 32, 64, 128, 256, 512)
HIDDEN = 300
MINIMUM_SIZE_3D = 33  # six halvings: torch's avg_pool3d refuses to pool an axis of one voxel


class ConvolutionalMatrixNet(nn.Module):
    """Homogeneous affine matrix ``[B, D+1, D+1]`` of a pair of images ``[B, C, *shape]``.

    The matrix maps the fixed image's unit cube to the moving image's (channel ``i`` = tensor
    axis ``i``, as published); wrap the network in :class:`~itkdeepreg.models.AffineStep` to get
    an :class:`~itkdeepreg.transforms.Affine` transform value. Parameter names (``convs``,
    ``dense2``, ``dense3``) are the published ones, so published weights load by name.
    """

    def __init__(self, dimension: int = 3, input_channels: int = 1):
        super().__init__()
        if dimension not in (2, 3):
            raise ValueError(f"the affine network is 2D or 3D, got dimension {dimension}")
        self.dimension = dimension
        convolution = (nn.Conv2d, nn.Conv3d)[dimension - 2]
        channels = (2 * input_channels, *FEATURES)
        self.convs = nn.ModuleList(
            convolution(channels[i], channels[i + 1], kernel_size=3, padding=1)
            for i in range(len(FEATURES))
        )
        self.dense2 = nn.Linear(FEATURES[-1], HIDDEN)
        self.dense3 = nn.Linear(HIDDEN, dimension * (dimension + 1))
        nn.init.zeros_(self.dense3.weight)  # training starts from the identity map
        nn.init.zeros_(self.dense3.bias)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        d = self.dimension
        if d == 3 and min(moving.shape[2:]) < MINIMUM_SIZE_3D:
            raise ValueError(
                f"the 3D affine network halves every axis six times: it needs at least "
                f"{MINIMUM_SIZE_3D} voxels along each, got {tuple(moving.shape[2:])}"
            )
        average_pool = (F.avg_pool2d, F.avg_pool3d)[d - 2]
        x = torch.cat([moving, fixed], 1)
        for convolution in self.convs:
            x = average_pool(convolution(F.relu(x)), 2, ceil_mode=True)
        x = x.flatten(2).mean(2)  # the average over what is left of the grid
        parameters = self.dense3(F.relu(self.dense2(x))).reshape(-1, d, d + 1)
        identity = torch.eye(d, dtype=parameters.dtype, device=parameters.device)
        linear = identity + parameters[:, :, :d]
        centre = torch.full((d, 1), 0.5, dtype=parameters.dtype, device=parameters.device)
        # x -> c + L (x - c) + t: the translation column is t + c - L c
        translation = parameters[:, :, d:] + centre - linear @ centre
        last_row = torch.zeros(
            parameters.shape[0], 1, d + 1, dtype=parameters.dtype, device=parameters.device
        )
        last_row[:, :, d] = 1
        return torch.cat([torch.cat([linear, translation], 2), last_row], 1)

"""Registration steps: modules that map a (moving, fixed) pair of images to a transform value.

A step's transform maps the fixed image's unit cube to the moving image's, so that
``transform.warp(moving)`` lies on ``fixed``. Steps nest into a tree and keep no per-call state
(idea 3 of docs/architecture.md). Attribute names are the published ones (``net``, ``netPhi``,
``netPsi``) so that published weights load by name.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..transforms import Affine, Displacement, Transform


class DisplacementStep(nn.Module):
    """A network's output ``[B, D, *shape]`` taken as a displacement field (border rule)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, moving, fixed) -> Transform:
        return Displacement(self.net(moving, fixed))


class AffineStep(nn.Module):
    """A network's output, a homogeneous matrix ``[B, D+1, D+1]``, taken as an affine map.

    The published ``FunctionFromMatrix`` (later ``Affine``) of icon_registration: the matrix acts
    on unit-cube coordinates, channel ``i`` = tensor axis ``i``, which is the published
    convention too, so it becomes an :class:`~itkdeepreg.transforms.Affine` as it is. Use it with
    :class:`~itkdeepreg.nets.ConvolutionalMatrixNet`.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, moving, fixed) -> Transform:
        matrix = self.net(moving, fixed)
        d = moving.dim() - 2
        if matrix.shape != (moving.shape[0], d + 1, d + 1):
            raise ValueError(
                f"an affine step's network must give a matrix [B, {d + 1}, {d + 1}] for images "
                f"{tuple(moving.shape)}, got {tuple(matrix.shape)}"
            )
        return Affine(matrix)


class Downsample(nn.Module):
    """Runs its child on both images average-pooled by 2 (odd sizes round up).

    The child's transform is returned as it is: a transform value maps unit cube to unit
    cube, whatever the resolution of the images it was computed from.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, moving, fixed) -> Transform:
        pool = (F.avg_pool2d, F.avg_pool3d)[moving.dim() - 4]
        return self.net(pool(moving, 2, ceil_mode=True), pool(fixed, 2, ceil_mode=True))


class TwoStep(nn.Module):
    """``netPhi``, then ``netPsi`` on the moving image warped by ``netPhi``'s map.

    The result is ``phi o psi``: ``psi`` refines on the fixed grid, ``phi`` carries the points
    into the moving image.
    """

    def __init__(self, netPhi: nn.Module, netPsi: nn.Module):
        super().__init__()
        self.netPhi = netPhi
        self.netPsi = netPsi

    def forward(self, moving, fixed) -> Transform:
        phi = self.netPhi(moving, fixed)
        psi = self.netPsi(phi.warp(moving, fixed.shape[2:], padding="border"), fixed)
        return phi @ psi

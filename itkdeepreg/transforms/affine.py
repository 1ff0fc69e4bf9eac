"""Affine maps as homogeneous matrices."""

from __future__ import annotations

import torch

from .base import Transform


class Affine(Transform):
    """``x -> M x + t`` with the homogeneous matrix ``[[M, t], [0, 1]]`` of shape ``[B, D+1, D+1]``.

    A ``[D+1, D+1]`` matrix is taken as a batch of one. The matrix keeps its dtype (float64
    for matrices built from image geometry) and device, and follows the coordinates' when
    applied.
    """

    _fields = ("matrix",)

    def __init__(self, matrix):
        matrix = torch.as_tensor(matrix)
        if matrix.dim() == 2:
            matrix = matrix[None]
        size = matrix.shape[-1]
        if matrix.dim() != 3 or matrix.shape[-2] != size or size not in (3, 4):
            raise ValueError(
                f"an affine matrix is [B, D+1, D+1] with D 2 or 3, got {tuple(matrix.shape)}"
            )
        if not matrix.is_floating_point():
            matrix = matrix.to(torch.float64)
        self.matrix = matrix

    @classmethod
    def identity(cls, dimension, dtype=torch.float32, device=None) -> Affine:
        return cls(torch.eye(dimension + 1, dtype=dtype, device=device))

    @property
    def dimension(self) -> int:
        return self.matrix.shape[-1] - 1

    def __call__(self, coords):
        d = self.dimension
        if coords.shape[1] != d:
            raise ValueError(
                f"a {d}D affine map takes coordinates [B, {d}, ...], got {tuple(coords.shape)}"
            )
        matrix = self.matrix.to(device=coords.device, dtype=coords.dtype)
        flat = coords.reshape(coords.shape[0], d, -1)
        mapped = matrix[:, :d, :d] @ flat + matrix[:, :d, d:]
        return mapped.reshape(mapped.shape[0], d, *coords.shape[2:])

    def inverse(self) -> Affine:
        return Affine(torch.linalg.inv(self.matrix))

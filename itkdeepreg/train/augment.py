"""Augmentation of training pairs, as uniGradICON was trained.

Each pair gets a random signed axis permutation (a flip or a swap of axes, the same for both
images, so the pair still shows one anatomy in one orientation), and each image then gets its
own small random affine perturbation, so the network also sees pairs that differ by an affine
map. The published training draws the perturbation as the permutation plus 0.05 times a
standard normal matrix (translation column included) in the ``[-1, 1]`` coordinates of
``torch.nn.functional.affine_grid``, about the grid's centre; here it is expressed in the
library's unit-cube coordinates, where the same draw moves points by half as much.
"""

from __future__ import annotations

import torch

from ..transforms import Affine

PUBLISHED_AFFINE_NOISE = 0.05


def augment(moving, fixed, generator: torch.Generator, permute=True, affine=PUBLISHED_AFFINE_NOISE):
    """``(moving, fixed)`` augmented: ``[B, C, *shape]`` each, the same shapes as given.

    ``permute``: give each pair a random signed axis permutation (shared by its two images).
    ``affine``: the standard deviation of the independent random perturbation of each image's
    matrix and translation (in ``[-1, 1]`` units, as published); 0 for none. Images are read
    linearly, repeating the border. Every draw comes from ``generator``.
    """
    if moving.shape != fixed.shape:
        raise ValueError(f"moving {tuple(moving.shape)} and fixed {tuple(fixed.shape)} differ")
    if not affine >= 0:
        raise ValueError(f"affine must be a number >= 0, got {affine!r}")
    batch, dimension = moving.shape[0], moving.dim() - 2
    shared = random_signed_permutations(batch, dimension, generator) if permute else None
    warped = []
    for image in (moving, fixed):
        matrix = torch.eye(dimension).expand(batch, -1, -1) if shared is None else shared
        matrix = matrix + affine * torch.randn(batch, dimension, dimension, generator=generator)
        # the published translation is in [-1, 1] units: half of it in the unit cube
        shift = affine / 2 * torch.randn(batch, dimension, generator=generator)
        warped.append(_about_centre(matrix, shift).warp(image, padding="border"))
    return warped[0], warped[1]


def random_signed_permutations(batch: int, dimension: int, generator: torch.Generator):
    """``[batch, D, D]`` matrices, each a random axis permutation with random signs."""
    order = torch.rand(batch, dimension, generator=generator).argsort(1)
    signs = torch.randint(0, 2, (batch, dimension), generator=generator) * 2 - 1
    matrices = torch.zeros(batch, dimension, dimension)
    matrices.scatter_(2, order[..., None], signs[..., None].float())
    return matrices


def _about_centre(matrix, shift) -> Affine:
    """The map ``x -> c + M (x - c) + shift`` about the unit cube's centre ``c``."""
    batch, dimension = matrix.shape[:2]
    centre = torch.full((dimension,), 0.5)
    homogeneous = torch.eye(dimension + 1).repeat(batch, 1, 1)
    homogeneous[:, :dimension, :dimension] = matrix
    homogeneous[:, :dimension, dimension] = centre - matrix @ centre + shift
    return Affine(homogeneous)

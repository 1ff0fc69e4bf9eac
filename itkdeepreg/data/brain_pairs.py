"""Brain pairs with a known answer: the bundled MNI152 template warped by a random diffeomorphism.

A pair is the template (fixed) and the template moved by a smooth random diffeomorphism
(moving), each with its own intensity changes: a gamma curve, a smooth multiplicative bias
field and Gaussian noise. The true map from fixed to moving is known at every fixed voxel,
and so are tissue labels on both sides, so a registration can be scored by Dice and by
end-point error. 3D pairs are 99x117x95 at 2 mm; 2D pairs are one axial slice (99x117).

The deformation is the flow of a stationary velocity field ``v`` (white noise blurred with a
Gaussian of ``smoothness`` mm, scaled so its largest vector is ``displacement`` mm),
integrated with fourth-order Runge-Kutta: the true map is ``exp(v)`` and the moving image is
the template sampled through ``exp(-v)``, so ``moving(truth(x)) = template(x)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..geometry import ImageGeometry
from ..losses import dice, folding_fraction, gaussian_blur
from ..sampling import identity_grid, sample
from ..transforms import Displacement, Transform, Velocity
from . import mni152_gm_2mm, mni152_t1_2mm, mni152_wm_2mm

LABELS = {1: "grey matter", 2: "white matter"}  # 0 is everything else


@dataclass
class BrainPair:
    """Images ``[1, 1, *shape]`` on one grid, their labels, and the true map fixed -> moving."""

    fixed: torch.Tensor
    moving: torch.Tensor
    fixed_labels: torch.Tensor
    moving_labels: torch.Tensor
    truth: Displacement
    geometry: ImageGeometry

    @property
    def brain(self) -> torch.Tensor:
        """Where end-point errors count: grey or white matter of the fixed image."""
        return self.fixed_labels > 0

    def itk_images(self):
        """``(fixed, moving)`` as ``itk.Image[itk.F, D]`` with the template's geometry."""
        from ..interop import tensor_to_image  # only here: the torch core imports without ITK

        return tuple(tensor_to_image(image, self.geometry) for image in (self.fixed, self.moving))

    def score(self, forward: Transform) -> dict:
        """How well ``forward`` (fixed cube -> moving cube) registers the pair.

        ``dice``: the mean over grey and white matter of the Dice overlap of the fixed labels
        and the moving labels warped by ``forward`` (nearest neighbour); ``error``: the mean
        distance in mm between ``forward`` and the true map at the brain's voxels; ``folds``:
        the percentage of voxels where ``forward``'s Jacobian determinant is not positive.
        """
        shape = self.geometry.shape
        with torch.no_grad():
            forward = forward.to(dtype=torch.float64)
            grid = identity_grid(shape, dtype=torch.float64)
            millimetres = _millimetres(self.geometry)
            error = ((forward(grid) - self.truth(grid.float())) * millimetres).norm(dim=1)
            warped = forward.warp(self.moving_labels.double(), mode="nearest").long()
            return {
                "dice": dice(warped, self.fixed_labels, list(LABELS)).mean().item(),
                "error": error[self.brain[:, 0]].mean().item(),
                "folds": 100 * folding_fraction(forward, shape),
            }


def brain_pair(
    seed: int = 0,
    dimension: int = 3,
    displacement: float = 6.0,
    smoothness: float = 10.0,
    bias: float = 0.2,
    gamma: float = 0.2,
    noise: float = 0.02,
) -> BrainPair:
    """A pair drawn from ``seed``; the same seed gives the same pair.

    ``displacement``: the largest velocity vector in mm; ``smoothness``: the Gaussian blur of
    the velocity noise in mm; ``bias``: the bias field's log-amplitude; ``gamma``: the gamma
    exponent is ``exp(U(-gamma, gamma))``; ``noise``: the noise's standard deviation (images
    are in [0, 1]).
    """
    if dimension not in (2, 3):
        raise ValueError(f"dimension must be 2 or 3, got {dimension}")
    generator = torch.Generator().manual_seed(seed)
    template, grey, white, geometry = _template(dimension)
    millimetres = _millimetres(geometry)

    sigma = smoothness / float(geometry.spacing.min())
    velocity = gaussian_blur(
        torch.randn(1, dimension, *geometry.shape, generator=generator, dtype=torch.float64), sigma
    )
    velocity = velocity / (velocity**2).sum(1).sqrt().max() * displacement / millimetres
    truth = Velocity(velocity, method="integration").as_displacement(geometry.shape)
    inverse = Velocity(-velocity, method="integration").as_displacement(geometry.shape)

    grid = identity_grid(geometry.shape, dtype=torch.float64)
    maps = torch.cat([template, grey, white], 1)
    moved = sample(maps, inverse(grid), padding="zeros")
    return BrainPair(
        fixed=_intensity_changes(template, geometry, generator, bias, gamma, noise),
        moving=_intensity_changes(moved[:, :1], geometry, generator, bias, gamma, noise),
        fixed_labels=_labels(maps),
        moving_labels=_labels(moved),
        truth=truth.map_tensors(lambda t: t.float()),
        geometry=geometry,
    )


def _millimetres(geometry):
    """Millimetres per unit-cube unit along each tensor axis, ``[1, D, 1, ...]``."""
    lengths = np.linalg.norm(geometry.unit_to_physical[:-1, :-1], axis=0)
    return torch.tensor(lengths).reshape(1, -1, *[1] * geometry.dimension)


def _template(dimension):
    """The T1 image and the grey and white matter maps in [0, 1], float64, and their grid."""
    import itk  # only here: the torch core imports without ITK

    image = itk.imread(mni152_t1_2mm())
    geometry = ImageGeometry.from_image(image)
    arrays = [
        itk.array_from_image(itk.imread(path)) / 255.0
        for path in (mni152_t1_2mm(), mni152_gm_2mm(), mni152_wm_2mm())
    ]
    tensors = [torch.tensor(a, dtype=torch.float64)[None, None] for a in arrays]
    if dimension == 2:  # one axial slice, through the lateral ventricles
        z = round(0.6 * geometry.shape[0])
        tensors = [t[:, :, z] for t in tensors]
        index = geometry.index_to_physical
        origin = index[:2, :] @ np.array([0.0, 0.0, z, 1.0])
        geometry = ImageGeometry(
            geometry.size[:2], origin, geometry.spacing[:2], geometry.direction[:2, :2]
        )
    return (*tensors, geometry)


def _labels(maps):
    """The most probable of background, grey and white matter at each voxel."""
    tissue = maps[:, 1:]
    background = (1 - tissue.sum(1, keepdim=True)).clamp_min(0)
    return torch.cat([background, tissue], 1).argmax(1, keepdim=True)


def _intensity_changes(image, geometry, generator, bias, gamma, noise):
    """``(image ** g) * exp(bias field) + noise``, float32."""
    exponent = math.exp(
        (2 * torch.rand((), generator=generator, dtype=torch.float64).item() - 1) * gamma
    )
    field = gaussian_blur(
        torch.randn(image.shape, generator=generator, dtype=torch.float64),
        50.0 / float(geometry.spacing.min()),  # a bias field varies over centimetres
    )
    field = field / field.abs().max()
    changed = image.clamp_min(0) ** exponent * torch.exp(bias * field)
    changed = changed + noise * torch.randn(image.shape, generator=generator, dtype=torch.float64)
    return changed.float()

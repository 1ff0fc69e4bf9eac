"""Brain pairs with a known answer, in regimes a user meets: the bundled MNI152 template warped.

Every pair is drawn from the skull-stripped MNI152 template (2 mm, 99x117x95; in 2D one axial
slice, 99x117) by known maps, so a registration can be scored against the truth: Dice of
three tissue labels (grey matter, white matter, and the rest of the brain: fluid and deep
structures) and the end-point error over the brain. The regimes (:data:`REGIMES`):

- ``"smooth"``: the template (fixed) and the template moved by one smooth random
  diffeomorphism (moving), on one grid, no affine offset: the benchmark's first, easy case;
- ``"two-sided"``: fixed and moving both warped from the template by independent
  diffeomorphisms of two scales (noise blurred over 15-25 mm and over 5-10 mm; up to about
  8 mm of relative motion), a stronger bias field: neither image is the template;
- ``"affine"``: ``"two-sided"`` and the moving image moved by a random affine map about the
  centre (rotations up to 12 degrees about each axis, translations up to 12 mm, scalings up
  to 8 %): a method needs its own affine stage;
- ``"contrast"``: ``"two-sided"`` with a T2-like moving image made from the tissue maps
  (fluid bright, grey matter mid, white matter dark): the similarity must be multi-modal;
- ``"resolution"``: ``"two-sided"`` with the moving image on another grid: 2.5 times coarser
  along the last physical axis (2x2x5 mm in 3D), an oblique direction (rotated by up to 15
  degrees), a field of view cropped and shifted, and each voxel averaged over its slice.

Each diffeomorphism is the flow of a stationary velocity field, a sum of components (white
noise blurred by a Gaussian, scaled so that its largest vector is the component's amplitude),
integrated with fourth-order Runge-Kutta; the inverse is the flow of the negated field. The
blur widths are not wavelengths of a sinusoid: a 5 mm wavelength would be 2.5 voxels, at the
grid's Nyquist limit, where no method could follow the motion. The fixed image is
``template o a`` and the moving image ``template o b o A`` (``A`` the affine offset,
physical), so the true map from fixed to moving points is
``A^-1 o b^-1 o a``. Each image gets its own intensity changes: a gamma curve, a smooth
multiplicative bias field and Gaussian noise.

Seeds in :data:`TUNING_SEEDS` are for choosing defaults; :data:`HELD_OUT_SEEDS` are for
reporting only.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..geometry import ImageGeometry
from ..losses import dice, gaussian_blur, jacobian_determinant
from ..sampling import identity_grid, sample
from ..transforms import Affine, Displacement, Transform, Velocity
from . import mni152_gm_2mm, mni152_t1_2mm, mni152_wm_2mm

LABELS = {1: "grey matter", 2: "white matter", 3: "rest of the brain"}  # 0 is outside
TUNING_SEEDS = range(1000)  # defaults are chosen on these
HELD_OUT_SEEDS = range(1000, 2000)  # reported figures come from these only


@dataclass(frozen=True)
class Regime:
    """How a pair is drawn.

    ``components``: the velocity field's components, ``(narrowest, widest blur in mm, amplitude
    in mm)``, the blur's standard deviation drawn between the two; ``two_sided``: whether the fixed
    image is warped too (by its own field); ``affine``: the largest rotation (degrees), translation
    (mm) and relative scaling of the moving image's affine offset, or ``None``; ``contrast``:
    ``"t1"`` or ``"t2"`` for the moving image (the fixed one is T1); ``coarse``: the moving grid's
    spacing factor along the last physical axis (1: the template's grid); ``bias``: the bias
    field's log-amplitude; ``gamma``: the gamma exponent is ``exp(U(-gamma, gamma))``;
    ``noise``: the noise's standard deviation (images are in [0, 1]).
    """

    components: tuple = ((10.0, 10.0, 6.0),)
    two_sided: bool = False
    affine: tuple | None = None
    contrast: str = "t1"
    coarse: float = 1.0
    bias: float = 0.2
    gamma: float = 0.2
    noise: float = 0.02


_TWO_SIDED = Regime(components=((15.0, 25.0, 5.0), (5.0, 10.0, 2.0)), two_sided=True, bias=0.35)
REGIMES = {
    "smooth": Regime(),  # one-sided, 10 mm Gaussian (the benchmark's first pairs)
    "two-sided": _TWO_SIDED,
    "affine": dataclasses.replace(_TWO_SIDED, affine=(12.0, 12.0, 0.08)),
    "contrast": dataclasses.replace(_TWO_SIDED, contrast="t2"),
    "resolution": dataclasses.replace(_TWO_SIDED, coarse=2.5),
}


@dataclass
class BrainPair:
    """Images ``[1, 1, *shape]``, each on its grid, their labels, and the true map fixed -> moving
    (fixed unit cube -> moving unit cube)."""

    fixed: torch.Tensor
    moving: torch.Tensor
    fixed_labels: torch.Tensor
    moving_labels: torch.Tensor
    truth: Displacement
    fixed_geometry: ImageGeometry
    moving_geometry: ImageGeometry

    @property
    def brain(self) -> torch.Tensor:
        """Where end-point errors count: the brain in the fixed image."""
        return self.fixed_labels > 0

    def itk_images(self):
        """``(fixed, moving)`` as ``itk.Image[itk.F, D]``, each with its geometry."""
        from ..interop import tensor_to_image  # only here: the torch core imports without ITK

        return (
            tensor_to_image(self.fixed, self.fixed_geometry),
            tensor_to_image(self.moving, self.moving_geometry),
        )

    def score(self, forward: Transform) -> dict:
        """How well ``forward`` (fixed cube -> moving cube) registers the pair.

        ``dice``: the mean over the three labels of the Dice overlap of the fixed labels and
        the moving labels warped by ``forward`` (nearest neighbour); ``error``: the mean
        distance in mm between ``forward`` and the true map at the brain's voxels; ``folds``:
        the percentage of voxels where ``forward`` reverses orientation (physical Jacobian
        determinant not positive).
        """
        shape = self.fixed_geometry.shape
        with torch.no_grad():
            forward = forward.to(dtype=torch.float64)
            grid = identity_grid(shape, dtype=torch.float64)
            to_millimetres = torch.tensor(self.moving_geometry.unit_to_physical[:-1, :-1])
            difference = forward(grid) - self.truth(grid.float()).double()
            error = torch.einsum("ij,bj...->bi...", to_millimetres, difference).norm(dim=1)
            warped = forward.warp(self.moving_labels.double(), shape, mode="nearest").long()
            # unit-cube determinants carry the two grids' orientations: take them out
            orientation = np.sign(
                np.linalg.det(self.moving_geometry.unit_to_physical)
                * np.linalg.det(self.fixed_geometry.unit_to_physical)
            )
            determinant = jacobian_determinant(forward, shape) * orientation
            return {
                "dice": dice(warped, self.fixed_labels, list(LABELS)).mean().item(),
                "error": error[self.brain[:, 0]].mean().item(),
                "folds": 100 * (determinant <= 0).double().mean().item(),
            }


def brain_pair(seed: int = 0, dimension: int = 3, regime: str = "smooth", **changes) -> BrainPair:
    """A pair of ``regime`` drawn from ``seed``; the same arguments give the same pair.

    ``changes`` replace fields of the regime's :class:`Regime` (``displacement`` sets the
    amplitude of every component: ``displacement=0`` gives no deformation).
    """
    if dimension not in (2, 3):
        raise ValueError(f"dimension must be 2 or 3, got {dimension}")
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; known: {', '.join(REGIMES)}")
    if "displacement" in changes:
        amplitude = changes.pop("displacement")
        changes["components"] = tuple(c[:2] + (amplitude,) for c in REGIMES[regime].components)
    settings = dataclasses.replace(REGIMES[regime], **changes)
    generator = torch.Generator().manual_seed(seed)
    maps, geometry = _template(dimension)

    # a: template -> fixed side, b: template -> moving side, in the template's unit cube;
    # flows are integrated at the very points asked for, so the truth is exact
    velocity = _velocity(settings.components, geometry, generator)
    if settings.two_sided:
        fixed_map = _flow(velocity)
        velocity = _velocity(settings.components, geometry, generator)
    else:
        fixed_map = Affine.identity(dimension, torch.float64)
    inverse_moving_map, moving_map = _flow(velocity), _flow(-velocity)

    offset = np.eye(dimension + 1)  # moving physical -> template physical
    if settings.affine is not None:
        offset = _affine_offset(settings.affine, geometry, generator)
    moving_geometry = geometry
    if settings.coarse != 1:
        moving_geometry = _coarse_geometry(settings.coarse, geometry, generator)

    to_template = Affine(geometry.physical_to_unit @ offset @ moving_geometry.unit_to_physical)
    from_template = Affine(
        moving_geometry.physical_to_unit @ np.linalg.inv(offset) @ geometry.unit_to_physical
    )
    truth = (from_template @ inverse_moving_map @ fixed_map).as_displacement(geometry.shape)

    fixed_maps = _sampled(maps, fixed_map, geometry)
    # a thick slice sees its whole thickness: its intensities average samples across it, and
    # its label is the middle sample's
    slices = _across_slices(maps, moving_map @ to_template, moving_geometry, settings.coarse)
    moving_maps, slab = slices[len(slices) // 2], sum(slices) / len(slices)

    fixed = _intensity_changes(_t1(fixed_maps), geometry, generator, settings)
    moving_intensities = _t1(slab) if settings.contrast == "t1" else _t2(slab)
    moving = _intensity_changes(moving_intensities, moving_geometry, generator, settings)
    return BrainPair(
        fixed=fixed,
        moving=moving,
        fixed_labels=_labels(fixed_maps),
        moving_labels=_labels(moving_maps),
        truth=truth.map_tensors(lambda t: t.float()),
        fixed_geometry=geometry,
        moving_geometry=moving_geometry,
    )


def _velocity(components, geometry, generator):
    """A velocity field (unit-cube units) that sums the components, each drawn from noise."""
    millimetres = _millimetres(geometry)
    total = 0
    for narrowest, widest, amplitude in components:  # in mm
        # a fixed width draws nothing: the smooth regime keeps its one draw of noise
        scale = narrowest if narrowest == widest else _uniform(generator, narrowest, widest)
        sigma = scale / float(geometry.spacing.min())
        noise = torch.randn(
            1, geometry.dimension, *geometry.shape, generator=generator, dtype=torch.float64
        )
        component = gaussian_blur(noise, sigma)
        total = total + component / (component**2).sum(1).sqrt().max() * amplitude / millimetres
    return total


def _flow(velocity):
    """The flow of a velocity field at time 1 (Runge-Kutta, 8 steps: within 1e-4 voxel)."""
    return Velocity(velocity.float(), steps=8, method="integration")


def _uniform(generator, low, high):
    return low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64).item()


def _affine_offset(limits, geometry, generator):
    """``x -> R S (x - c) + c + t`` about the grid's centre, homogeneous, physical."""
    degrees, millimetres, scaling = limits
    dimension = geometry.dimension
    angles = [math.radians(_uniform(generator, -degrees, degrees)) for _ in range(dimension)]
    rotation = _rotation(angles[0]) if dimension == 2 else _rotation_3d(angles)
    scales = np.diag([1 + _uniform(generator, -scaling, scaling) for _ in range(dimension)])
    translation = np.array(
        [_uniform(generator, -millimetres, millimetres) for _ in range(dimension)]
    )
    centre = geometry.centre
    linear = rotation @ scales
    matrix = np.eye(dimension + 1)
    matrix[:-1, :-1] = linear
    matrix[:-1, -1] = centre - linear @ centre + translation
    return matrix


def _rotation(angle):
    return np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])


def _rotation_3d(angles):
    """Rotations about x, then y, then z."""
    result = np.eye(3)
    for axis, angle in enumerate(angles):
        rotation = np.eye(3)
        others = [a for a in range(3) if a != axis]
        rotation[np.ix_(others, others)] = _rotation(angle)
        result = rotation @ result
    return result


def _coarse_geometry(factor, geometry, generator):
    """A grid ``factor`` times coarser along the last physical axis, rotated by up to 15 degrees
    about each axis, over 85-95 % of the template's extent, its centre shifted by up to 10 mm."""
    dimension = geometry.dimension
    angles = [math.radians(_uniform(generator, -15, 15)) for _ in range(dimension)]
    rotation = _rotation(angles[0]) if dimension == 2 else _rotation_3d(angles)
    direction = rotation @ geometry.direction
    spacing = geometry.spacing.copy()
    spacing[-1] *= factor
    extent = (np.asarray(geometry.size) - 1) * geometry.spacing
    extent = extent * np.array([_uniform(generator, 0.85, 0.95) for _ in range(dimension)])
    size = [max(2, int(round(e / s)) + 1) for e, s in zip(extent, spacing)]
    shift = np.array([_uniform(generator, -10, 10) for _ in range(dimension)])
    return ImageGeometry.centred(size, spacing, direction, geometry.centre + shift)


def _sampled(maps, transform, geometry, shift=None):
    """The template's maps at ``transform`` of the voxels of ``geometry`` (moved by ``shift``,
    unit-cube units)."""
    grid = identity_grid(geometry.shape, dtype=torch.float64)
    if shift is not None:
        grid = grid + shift
    return sample(maps, transform(grid), mode="linear", padding="zeros")


def _across_slices(maps, transform, geometry, coarse, samples=5):
    """The maps sampled across each voxel's extent along the last physical axis (tensor axis
    0), five times on a coarse grid, once (at the centre) otherwise."""
    fractions = np.linspace(-0.4, 0.4, samples) if coarse != 1 else [0.0]
    shift = torch.zeros(1, geometry.dimension, *[1] * geometry.dimension, dtype=torch.float64)
    result = []
    for fraction in fractions:
        shift[:, 0] = fraction / geometry.voxels_per_unit[0]
        result.append(_sampled(maps, transform, geometry, shift))
    return result


def _millimetres(geometry):
    """Millimetres per unit-cube unit along each tensor axis, ``[1, D, 1, ...]``."""
    lengths = np.linalg.norm(geometry.unit_to_physical[:-1, :-1], axis=0)
    return torch.tensor(lengths).reshape(1, -1, *[1] * geometry.dimension)


def _template(dimension):
    """The T1 image, the grey and white matter maps and the brain mask in [0, 1], float64,
    ``[1, 4, *shape]``, and their grid."""
    import itk  # only here: the torch core imports without ITK

    image = itk.imread(mni152_t1_2mm())
    geometry = ImageGeometry.from_image(image)
    arrays = [
        itk.array_from_image(itk.imread(path)) / 255.0
        for path in (mni152_t1_2mm(), mni152_gm_2mm(), mni152_wm_2mm())
    ]
    arrays.append((arrays[0] > 0).astype(np.float64))  # the template is skull-stripped
    maps = torch.tensor(np.stack(arrays), dtype=torch.float64)[None]
    if dimension == 2:  # one axial slice, through the lateral ventricles
        z = round(0.6 * geometry.shape[0])
        maps = maps[:, :, z]
        index = geometry.index_to_physical
        origin = index[:2, :] @ np.array([0.0, 0.0, z, 1.0])
        geometry = ImageGeometry(
            geometry.size[:2], origin, geometry.spacing[:2], geometry.direction[:2, :2]
        )
    return maps, geometry


def _tissues(maps):
    """Outside, grey matter, white matter and the rest of the brain, ``[1, 4, *shape]``."""
    grey, white, brain = maps[:, 1:2], maps[:, 2:3], maps[:, 3:4]
    rest = (brain - grey - white).clamp_min(0)
    return torch.cat([1 - brain, grey, white, rest], 1)


def _labels(maps):
    """The most probable tissue at each voxel: 0 outside, then :data:`LABELS`."""
    return _tissues(maps).argmax(1, keepdim=True)


def _t1(maps):
    return maps[:, :1]


def _t2(maps):
    """A T2-like image: fluid bright, grey matter mid, white matter dark, nothing outside."""
    _, grey, white, rest = _tissues(maps).split(1, dim=1)
    return 0.95 * rest + 0.55 * grey + 0.3 * white


def _intensity_changes(image, geometry, generator, settings):
    """``(image ** g) * exp(bias field) + noise``, float32."""
    exponent = math.exp(_uniform(generator, -settings.gamma, settings.gamma))
    field = gaussian_blur(
        torch.randn(image.shape, generator=generator, dtype=torch.float64),
        50.0 / float(geometry.spacing.min()),  # a bias field varies over centimetres
    )
    field = field / field.abs().max()
    changed = image.clamp_min(0) ** exponent * torch.exp(settings.bias * field)
    changed = changed + settings.noise * torch.randn(
        image.shape, generator=generator, dtype=torch.float64
    )
    return changed.float()

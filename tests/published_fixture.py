"""What our code is compared with the published code on: uniGradICON weights drawn from a
seed, images given by a formula, two image grids and a smooth map of the network grid.
``tools/make_published_reference.py`` runs the published code (icon_registration and
unigradicon from PyPI) on them and stores what it gives in
``tests/data/published_reference.npz``; ``test_published_parity.py`` runs ours on the same.

Every weight is random, the zero-initialised last convolutions and the BatchNorm statistics
too, so a wrong layer order, axis or convention changes the maps."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

REFERENCE = Path(__file__).parent / "data" / "published_reference.npz"
# The smallest kind of grid the five-level U-Net takes at a quarter of its resolution (each
# axis at least 65), with odd and even, unequal axes so that a swapped axis shows.
SHAPE = (65, 70, 76)
SEED = 20261125
SAMPLES = 4096


def seeded_weights(state: dict, last_gain: float = 0.05) -> dict:
    """Random tensors of the names and shapes of ``state``, drawn from ``SEED`` in name order,
    each at a scale that keeps the activations of a U-Net near one; the last convolutions'
    weights ``last_gain`` times that, which sets how far the maps move points."""
    generator = torch.Generator().manual_seed(SEED)

    def normal(shape, std):
        return torch.randn(shape, generator=generator, dtype=torch.float64).float() * std

    weights = {}
    for name in sorted(state):
        shape = state[name].shape
        if name.endswith("num_batches_tracked"):
            weights[name] = torch.zeros_like(state[name])
        elif name.endswith("running_mean"):
            weights[name] = normal(shape, 0.1)
        elif name.endswith("running_var"):
            uniform = torch.rand(shape, generator=generator, dtype=torch.float64)
            weights[name] = 0.5 + uniform.float()
        elif "batchNorms" in name:
            weights[name] = normal(shape, 0.1) + (1.0 if name.endswith("weight") else 0.0)
        elif name.endswith("bias"):
            weights[name] = normal(shape, 0.01)
        else:
            kernel = math.prod(shape[2:])
            # a transposed convolution's weight is [in, out, *kernel], stride 2 in each axis
            if "upConvs" in name:
                fan_in = shape[0] * kernel / 2 ** len(shape[2:])
            else:
                fan_in = shape[1] * kernel
            # the last convolution small: displacements of a few voxels, not of the whole grid
            gain = last_gain if "lastConv" in name else 1.0
            weights[name] = normal(shape, gain * math.sqrt(2.0 / fan_in))
    return weights


def analytic_pair(shape=SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """(moving, fixed): smooth blobs in ``[0, 1]``, the fixed one shifted and squeezed, as
    float32 arrays of ``shape``; a formula, so the same on every machine."""
    axes = np.meshgrid(*(np.linspace(0.0, 1.0, n) for n in shape), indexing="ij")

    def blobs(centres, width):
        image = sum(
            np.exp(-sum((a - c) ** 2 for a, c in zip(axes, centre)) / width**2)
            for centre in centres
        )
        return (image / image.max()).astype(np.float32)

    moving = blobs([(0.35, 0.4, 0.5), (0.65, 0.6, 0.4), (0.5, 0.3, 0.7)], 0.18)
    fixed = blobs([(0.38, 0.45, 0.48), (0.62, 0.58, 0.45), (0.55, 0.33, 0.66)], 0.16)
    return moving, fixed


def analytic_intensities(shape=(12, 13, 14)) -> dict[str, np.ndarray]:
    """Raw images for the published preprocessing, float32 arrays of ``shape``: a CT whose
    clipped intensities fill only part of the [-1000, 1000] window, an MRI with a few bright
    outliers, and a label map with labels -1, 0, 1 and 2."""
    i, j, k = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    wave = np.sin(0.7 * i + 0.3 * j) * np.cos(0.5 * k - 0.2 * i)
    ct = -1024.0 + 700.0 * (1.0 + wave) + 5.0 * j
    mri = 300.0 + 250.0 * wave + 11.0 * k
    mri[(i + j + k) % 37 == 0] = 5000.0
    labels = np.floor(2.0 * wave + 1.0).clip(-1, 2)
    return {
        name: a.astype(np.float32) for name, a in (("ct", ct), ("mri", mri), ("labels", labels))
    }


# Two image grids in ITK's terms (x, y, z): the bundled MNI template's (flipped x and y), and an
# oblique one of other spacings. Only the geometry of the images counts for an exported map.
FIXED_GRID = dict(
    size=(99, 117, 95),
    origin=(98.0, 134.0, -72.0),
    spacing=(2.0, 2.0, 2.0),
    direction=np.diag([-1.0, -1.0, 1.0]),
)
_turn = np.deg2rad(10.0)
MOVING_GRID = dict(
    size=(80, 100, 90),
    origin=(90.0, 120.0, -60.0),
    spacing=(2.5, 1.8, 2.2),
    direction=np.array(
        [[np.cos(_turn), -np.sin(_turn), 0.0], [np.sin(_turn), np.cos(_turn), 0.0], [0.0, 0.0, 1.0]]
    )
    @ np.diag([-1.0, -1.0, 1.0]),
)
NETWORK_GRID = (175, 175, 175)


def smooth_displacement(shape=NETWORK_GRID) -> torch.Tensor:
    """A smooth displacement ``[1, 3, *shape]`` in unit-cube units, about six voxels of the
    network grid: what a trained network gives, where a random one gives a rough field."""
    from itkdeepreg.sampling import identity_grid

    grid = identity_grid(shape, dtype=torch.float64)[0]
    return torch.stack([0.035 * torch.sin(2 * math.pi * grid[(i + 1) % 3]) for i in range(3)])[
        None
    ].float()


def fixed_points(count=2000) -> np.ndarray:
    """Physical points (x, y, z) [count, 3] of ``FIXED_GRID``, drawn inside it from ``SEED``."""
    from itkdeepreg.geometry import ImageGeometry

    unit_points = np.random.default_rng(SEED).uniform(0.0, 1.0, (count, 3))
    return ImageGeometry(**FIXED_GRID).to_physical(unit_points)


def sample_voxels(shape=SHAPE) -> np.ndarray:
    """``SAMPLES`` voxel indices [n, 3] where the maps are compared, the corners among them."""
    rng = np.random.default_rng(SEED)
    corners = np.array(np.meshgrid(*([0, n - 1] for n in shape), indexing="ij")).reshape(3, -1).T
    drawn = np.stack([rng.integers(0, n, SAMPLES - len(corners)) for n in shape], axis=1)
    return np.concatenate([corners, drawn])


def our_maps(model) -> dict:
    """``model``'s forward and backward maps of ``analytic_pair()`` at ``sample_voxels()``:
    ``[n, 3]`` arrays of unit-cube points, as the reference stores the published ones."""
    from itkdeepreg.models import register_pair
    from itkdeepreg.sampling import identity_grid

    moving, fixed = (torch.from_numpy(image)[None, None] for image in analytic_pair())
    maps = register_pair(model, moving, fixed, inverse=True)
    index = (slice(None), *torch.from_numpy(sample_voxels()).T)
    grid = identity_grid(SHAPE)
    return {name: m(grid)[0][index].T.numpy() for name, m in zip(("forward", "backward"), maps)}


def displacement_in_voxels(points: np.ndarray) -> float:
    """The largest move, in voxels of ``SHAPE``, of maps at ``sample_voxels()``."""
    identity = sample_voxels() / (np.array(SHAPE) - 1)
    return float(np.abs(points - identity).max() * (max(SHAPE) - 1))


# The end-to-end reference (tools/make_published_reference.py --end-to-end): the published
# `unigradicon-register` command on a brain pair, seeded weights, no instance optimization.
END_TO_END = Path(__file__).parent / "data" / "published_end_to_end.npz"
# On a brain, random U-Nets with the default last gain fold the map everywhere and move points
# by 90 mm; a tenth of it moves them by millimetres, as a trained network would.
END_TO_END_LAST_GAIN = 0.005
_BRAIN_CENTRE = np.array([0.0, 18.0, 22.0])  # mm, about the middle of the MNI template
_tilt_z, _tilt_x = np.deg2rad(12.0), np.deg2rad(-8.0)
# oblique (turned about z and x), flipped (det < 0) and anisotropic: the moving image's grid
_MOVING_DIRECTION = (
    np.array(
        [
            [np.cos(_tilt_z), -np.sin(_tilt_z), 0.0],
            [np.sin(_tilt_z), np.cos(_tilt_z), 0.0],
            [0.0, 0.0, 1.0],
        ]
    )
    @ np.array(
        [
            [1.0, 0.0, 0.0],
            [0.0, np.cos(_tilt_x), -np.sin(_tilt_x)],
            [0.0, np.sin(_tilt_x), np.cos(_tilt_x)],
        ]
    )
    @ np.diag([-1.0, 1.0, -1.0])
)
_MOVING_SIZE, _MOVING_SPACING = np.array([76, 104, 62]), np.array([2.5, 1.9, 2.9])
END_TO_END_MOVING_GRID = {
    "size": tuple(int(n) for n in _MOVING_SIZE),
    "origin": _BRAIN_CENTRE - _MOVING_DIRECTION @ (_MOVING_SPACING * (_MOVING_SIZE - 1) / 2),
    "spacing": tuple(_MOVING_SPACING),
    "direction": _MOVING_DIRECTION,
}
# the brain in the moving image is the template turned by these Euler angles (radians, about
# the brain's centre) and shifted (mm): what a registration has to undo
END_TO_END_MOTION = {"angles": (0.06, -0.04, 0.1), "translation": (4.0, -6.0, 3.0)}


def end_to_end_pair(directory) -> tuple[Path, Path]:
    """(fixed, moving) image files (float32 NIfTI) written into ``directory``: the bundled MNI
    T1 template, and the template moved rigidly (``END_TO_END_MOTION``) and resampled onto
    ``END_TO_END_MOVING_GRID``. ITK's linear resampling, so the same on every machine."""
    import itk

    from itkdeepreg.data import mni152_t1_2mm

    template = itk.imread(mni152_t1_2mm(), itk.F)
    motion = itk.Euler3DTransform[itk.D].New()
    motion.SetCenter([float(c) for c in _BRAIN_CENTRE])
    motion.SetRotation(*END_TO_END_MOTION["angles"])
    motion.SetTranslation([float(t) for t in END_TO_END_MOTION["translation"]])
    grid = END_TO_END_MOVING_GRID
    moving = itk.resample_image_filter(
        template,
        transform=motion,
        size=[int(n) for n in grid["size"]],
        output_origin=[float(o) for o in grid["origin"]],
        output_spacing=[float(s) for s in grid["spacing"]],
        output_direction=itk.matrix_from_array(np.ascontiguousarray(grid["direction"])),
    )
    directory = Path(directory)
    fixed_path, moving_path = directory / "fixed.nii.gz", directory / "moving.nii.gz"
    itk.imwrite(template, str(fixed_path))
    itk.imwrite(moving, str(moving_path))
    return fixed_path, moving_path


def brain_points(count=3000) -> np.ndarray:
    """Physical points (x, y, z) [count, 3] inside the template's brain (grey or white matter
    more likely than not), each a voxel centre moved by up to half a voxel, drawn from ``SEED``."""
    import itk

    from itkdeepreg.data import mni152_gm_2mm, mni152_wm_2mm
    from itkdeepreg.geometry import ImageGeometry

    grey, white = (itk.imread(path()) for path in (mni152_gm_2mm, mni152_wm_2mm))
    brain = itk.array_from_image(grey).astype(int) + itk.array_from_image(white) > 127
    rng = np.random.default_rng(SEED)
    voxels = np.argwhere(brain)[:, ::-1]  # (z, y, x) -> ITK index (x, y, z)
    chosen = voxels[rng.choice(len(voxels), count, replace=False)]
    jittered = chosen + rng.uniform(-0.5, 0.5, chosen.shape)
    index_to_physical = ImageGeometry.from_image(grey).index_to_physical
    return jittered @ index_to_physical[:3, :3].T + index_to_physical[:3, 3]


def write_end_to_end_weights(path) -> None:
    """The end-to-end reference's weights file: ``seeded_weights`` for uniGradICON's network
    with ``END_TO_END_LAST_GAIN``, as ``torch.save`` writes a state dict."""
    from itkdeepreg.zoo import unigradicon_network

    state = unigradicon_network().state_dict()
    torch.save(seeded_weights(state, last_gain=END_TO_END_LAST_GAIN), path)

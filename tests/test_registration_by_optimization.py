"""Affine and deformable registration by optimization recover known maps."""

import math

import numpy as np
import pytest
import torch
from conftest import smooth_field

import itkdeepreg as idr
from itkdeepreg import losses
from itkdeepreg.data.brain_pairs import brain_pair
from itkdeepreg.optimize import register_affine, register_deformable


@pytest.fixture(scope="module")
def brain_slice():
    """The bundled template's axial slice, with noise and a bias field, and its grid."""
    pair = brain_pair(0, dimension=2, displacement=0.0)
    return pair.fixed, pair.fixed_geometry, pair.brain[:, 0]


def voxel_error(a, b, shape, region=None):
    """Mean and largest distance in voxels between two maps at the points of a grid."""
    grid = idr.identity_grid(shape, dtype=torch.float64)
    voxels = torch.tensor([n - 1 for n in shape], dtype=torch.float64)
    error = ((a(grid).double() - b(grid).double()) * voxels.reshape(1, -1, *[1] * len(shape))).norm(
        dim=1
    )
    error = error if region is None else error[region]
    return error.mean().item(), error.max().item()


def physical_affine(geometry, angle=0.0, scale=1.0, shift=(0.0, 0.0)):
    """The unit-cube map of a rotation and scaling about the grid's centre, then a shift (mm)."""
    c, s = math.cos(angle), math.sin(angle)
    linear = scale * np.array([[c, -s], [s, c]])
    centre = geometry.to_physical(np.full(2, 0.5))
    physical = np.eye(3)
    physical[:2, :2] = linear
    physical[:2, 2] = centre - linear @ centre + np.asarray(shift)
    return idr.Affine(
        torch.tensor(geometry.physical_to_unit @ physical @ geometry.unit_to_physical)
    )


CASES = {
    "translation": (dict(shift=(6.0, -5.0)), dict(transform="translation")),
    "rigid": (dict(angle=0.17, shift=(4.0, -3.0)), dict(transform="rigid")),
    "affine": (dict(angle=0.12, scale=1.06, shift=(3.0, 2.0)), dict(transform="affine")),
    "rigid, 60 degrees, moments": (
        dict(angle=1.05, shift=(2.0, 2.0)),
        dict(transform="rigid", initialization="moments"),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_known_affine_map_is_recovered_within_half_a_voxel(brain_slice, case):
    fixed, geometry, brain = brain_slice
    truth_arguments, arguments = CASES[case]
    truth = physical_affine(geometry, **truth_arguments)
    moving = truth.inverse().warp(fixed.double()).float()  # moving(truth(x)) = fixed(x)
    result = register_affine(moving, fixed, geometry, geometry, progress=False, **arguments)
    mean, largest = voxel_error(result.forward, truth, geometry.shape, brain)
    assert largest < 0.5, (mean, largest)
    assert voxel_error(result.forward @ result.backward, idr.Affine.identity(2), (9, 9))[1] < 1e-4


def test_moments_initialization_is_what_finds_a_large_rotation(brain_slice):
    fixed, geometry, brain = brain_slice
    truth = physical_affine(geometry, angle=1.05)
    moving = truth.inverse().warp(fixed.double()).float()
    result = register_affine(moving, fixed, geometry, geometry, transform="rigid", progress=False)
    assert voxel_error(result.forward, truth, geometry.shape, brain)[0] > 5  # a local optimum


def test_mutual_information_aligns_an_inverted_contrast(brain_slice):
    fixed, geometry, brain = brain_slice
    truth = physical_affine(geometry, angle=0.12, scale=1.06, shift=(3.0, 2.0))
    moving = truth.inverse().warp(fixed.double()).float()
    moving = (1 - moving) * (moving > 0.05)  # another "modality": dark where fixed is bright
    result = register_affine(
        moving, fixed, geometry, geometry, similarity=losses.mutual_information, progress=False
    )
    assert voxel_error(result.forward, truth, geometry.shape, brain)[1] < 0.5


def textured_pair(shape, amplitude=0.06):
    """A smooth random texture and its image under a known diffeomorphism, ``exp(v)``."""
    generator = torch.Generator().manual_seed(0)
    fixed = losses.gaussian_blur(torch.randn(1, 1, *shape, generator=generator), 2.0)
    fixed = (fixed - fixed.min()) / (fixed.max() - fixed.min())
    truth = idr.Velocity(
        smooth_field(shape, amplitude, seed=3, dtype=torch.float32), method="integration"
    )
    return truth.inverse().warp(fixed), fixed, truth


def interior(shape, margin=3):
    """Voxels whose images stay on the grid: the border has nothing to register."""
    region = torch.zeros(1, *shape, dtype=torch.bool)
    region[(slice(None),) + tuple(slice(margin, -margin) for _ in shape)] = True
    return region


@pytest.mark.parametrize("shape", [(64, 64), (32, 32, 32)], ids=["2D", "3D"])
@pytest.mark.parametrize("parameterization", ["displacement", "velocity"])
def test_a_known_smooth_deformation_is_recovered(shape, parameterization):
    moving, fixed, truth = textured_pair(shape)
    identity = idr.Affine.identity(len(shape))
    before = voxel_error(identity, truth, shape, interior(shape))[0]
    result = register_deformable(moving, fixed, parameterization=parameterization, progress=False)
    after = voxel_error(result.forward, truth, shape, interior(shape))[0]
    assert before > 1.5 and after < 0.5, (before, after)
    if parameterization == "velocity":
        assert losses.folding_fraction(result.forward, shape) == 0
        assert isinstance(result.forward.transforms[-1], idr.Velocity)  # found by regularizers


@pytest.mark.parametrize("decay_to", [1.0, 0.1])
def test_each_step_is_the_learning_rate_falling_along_a_half_cosine(decay_to):
    from itkdeepreg.optimize.loop import minimise, progress_bar

    # a constant gradient makes each of Adam's steps the learning rate itself
    parameter = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    values = []

    def objective():
        values.append(parameter.item())
        return parameter.sum()

    with progress_bar(5, "test", enabled=False) as bar:
        minimise(objective, [parameter], 5, 0.5, None, 10, bar, decay_to=decay_to)
    values.append(parameter.item())
    steps = -np.diff(values)
    cosine = (1 + np.cos(np.pi * np.arange(5) / 4)) / 2
    assert np.allclose(steps, 0.5 * (decay_to + (1 - decay_to) * cosine), rtol=1e-6)


def test_the_symmetric_variant_comes_with_its_inverse():
    shape = (64, 64)
    moving, fixed, truth = textured_pair(shape)
    result = register_deformable(
        moving, fixed, symmetric=True, iterations=(100, 100, 100), learning_rate=0.2, progress=False
    )
    assert voxel_error(result.forward, truth, shape, interior(shape))[0] < 0.5
    # where a map leaves the grid (the truth moves points up to 4 voxels), the other map
    # has no image to learn from and is only extended: compare where both stay on the grid
    region = interior(shape, margin=8)
    for composite in (result.forward @ result.backward, result.backward @ result.forward):
        assert voxel_error(composite, idr.Affine.identity(2), shape, region)[0] < 0.1


def test_the_same_seed_gives_the_same_result_and_the_inputs_are_untouched():
    moving, fixed, _ = textured_pair((32, 32))
    copies = moving.clone(), fixed.clone()

    def run():
        return register_deformable(
            moving, fixed, symmetric=True, iterations=(5, 5, 5), progress=False
        )

    first, second = run(), run()
    grid = idr.identity_grid((32, 32))
    assert torch.equal(first.forward(grid), second.forward(grid))
    assert torch.equal(moving, copies[0]) and torch.equal(fixed, copies[1])


def test_an_affine_result_seeds_a_deformable_one(brain_slice):
    fixed, geometry, brain = brain_slice
    shift = physical_affine(geometry, shift=(6.0, -4.0))
    moving = shift.inverse().warp(fixed.double()).float()
    affine = register_affine(
        moving, fixed, geometry, geometry, transform="translation", progress=False
    )
    result = register_deformable(moving, fixed, initial=affine.forward, progress=False)
    assert voxel_error(result.forward, shift, geometry.shape, brain)[0] < 0.5
    assert voxel_error(result.backward @ result.forward, idr.Affine.identity(2), (9, 9))[0] < 0.05


def test_masks_limit_the_similarity_to_where_they_are_set():
    moving, fixed, truth = textured_pair((64, 64))
    moving = moving.clone()
    moving[..., :, 40:] = 0.5  # garbage on the right, outside the masks
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :, :36] = 1
    region = interior((64, 64)) & (mask[:, 0] > 0)
    region[..., 28:] = False  # keep away from the mask's edge, where the field has no data
    masked = register_deformable(moving, fixed, fixed_mask=mask, moving_mask=mask, progress=False)
    plain = register_deformable(moving, fixed, progress=False)
    masked_error = voxel_error(masked.forward, truth, (64, 64), region)[0]
    assert masked_error < 0.5
    assert masked_error < voxel_error(plain.forward, truth, (64, 64), region)[0]


@pytest.mark.parametrize("register", [register_affine, register_deformable])
def test_bad_inputs_are_refused_clearly(register):
    moving, fixed, _ = textured_pair((16, 16))
    with pytest.raises(ValueError, match="constant"):
        register(torch.ones_like(moving), fixed, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        register(moving, fixed * float("nan"), progress=False)
    with pytest.raises(ValueError, match="mask is empty"):
        register(moving, fixed, fixed_mask=torch.zeros_like(fixed), progress=False)
    with pytest.raises(ValueError, match="mask has shape"):
        register(moving, fixed, moving_mask=torch.ones(1, 1, 8, 8), progress=False)
    with pytest.raises(ValueError, match=r"\[1, 1, \*shape\]"):
        register(moving[0], fixed, progress=False)


def test_options_that_cannot_work_are_refused():
    moving, fixed, _ = textured_pair((16, 16))
    with pytest.raises(ValueError, match="symmetric=True"):
        register_deformable(moving, fixed, regularization={"gradicon": 1.0}, progress=False)
    with pytest.raises(ValueError, match="unknown regularizers"):
        register_deformable(moving, fixed, regularization={"tv": 1.0}, progress=False)
    with pytest.raises(ValueError, match="initial_inverse"):
        field = idr.Displacement(torch.zeros(1, 2, 16, 16))
        register_deformable(moving, fixed, initial=field, progress=False)
    with pytest.raises(ValueError, match="transform must be"):
        register_affine(moving, fixed, transform="similarity", progress=False)

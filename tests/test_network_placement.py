"""How a network method puts its grid on the images, and what it holds of its answer: the
published placement (cells over each image's extent) and the published written map (one
field at the grid's voxels) by default, corner to corner and the exact chain as options."""

import pytest
import torch
import torch.nn.functional as F
from conftest import geometry_pair, smooth_field, smooth_image
from torch import nn

from itkdeepreg.methods import NetworkMethod, Pair, check_options
from itkdeepreg.sampling import identity_grid, resample
from itkdeepreg.transforms import Affine, Composite, Displacement
from itkdeepreg.zoo import preprocess

MODEL_SHAPE = (12, 10, 14)


class TwoFieldNetwork(nn.Module):
    """Two smooth fields chained, whatever the images, as a two-step network's map is; it
    keeps the images it is given."""

    def __init__(self):
        super().__init__()
        self.first = nn.Parameter(smooth_field(MODEL_SHAPE, 0.04, seed=1, dtype=torch.float32))
        self.second = nn.Parameter(smooth_field((6, 5, 7), 0.03, seed=2, dtype=torch.float32))
        self.seen = []

    def forward(self, moving, fixed):
        self.seen.append((moving, fixed))
        return Displacement(self.first) @ Displacement(self.second)


@pytest.fixture
def registered():
    """A method over ``TwoFieldNetwork`` and a pair of oblique, flipped images of other
    sizes than the model grid, one coarser and one finer along some axis."""
    network = TwoFieldNetwork()
    method = NetworkMethod(lambda: network, MODEL_SHAPE)
    fixed_geometry, moving_geometry = geometry_pair(3)
    pair = Pair(
        smooth_image(moving_geometry.shape, torch.float32),
        smooth_image(fixed_geometry.shape, torch.float32) ** 2,
        moving_geometry,
        fixed_geometry,
    )
    return method, network, pair


def placement(geometry, kind="extent") -> Affine:
    return Affine(torch.from_numpy(geometry.placed_to_unit(MODEL_SHAPE, kind)))


def test_by_default_the_network_sees_the_images_as_the_published_code_resizes_them(registered):
    method, network, pair = registered
    method(pair, progress=False)
    moving, fixed = network.seen[0]  # the forward direction's call
    for ours, image in ((moving, pair.moving), (fixed, pair.fixed)):
        published = F.interpolate(
            preprocess(image, "mri"), MODEL_SHAPE, mode="trilinear", align_corners=False
        )
        assert (ours - published).abs().max() < 1e-5
    network.seen.clear()
    method(pair, placement="corners", progress=False)
    moving, fixed = network.seen[0]
    assert torch.equal(fixed, resample(preprocess(pair.fixed, "mri"), MODEL_SHAPE))


def test_the_answer_is_one_field_at_the_grid_voxels_between_the_placements(registered):
    method, network, pair = registered
    result = method(pair, progress=False)
    to_fixed, to_moving = placement(pair.fixed_geometry), placement(pair.moving_geometry)
    parts = result.forward.transforms
    assert [type(p) for p in parts] == [Affine, Displacement, Affine]
    assert parts[1].outside == "itk" and tuple(parts[1].displacement.shape[2:]) == MODEL_SHAPE
    # at the model grid's voxels, placed on the fixed image, it is the network's chain
    grid = identity_grid(MODEL_SHAPE, torch.float64)
    chain = network(None, None).to(dtype=torch.float64)
    expected = to_moving(chain(grid))
    assert (result.forward(to_fixed(grid)) - expected).abs().max() < 1e-6
    # between them it is the sampled field, not the chain: they differ by interpolation
    exact = method(pair, map_form="chain", progress=False)
    assert isinstance(exact.forward, Composite) and len(exact.forward.transforms) == 4
    half_voxel = 0.5 / (torch.tensor(MODEL_SHAPE, dtype=torch.float64) - 1).reshape(1, 3, 1, 1, 1)
    between = to_fixed(grid[..., :-1, :-1, :-1] + half_voxel)
    assert (result.forward(between) - exact.forward(between)).abs().max() > 1e-5
    assert (exact.forward(to_fixed(grid)) - expected).abs().max() < 1e-6


def test_corner_placement_keeps_the_images_cube(registered):
    method, network, pair = registered
    result = method(pair, placement="corners", progress=False)
    assert isinstance(result.forward, Displacement)  # no placement maps: the same cube
    grid = identity_grid(MODEL_SHAPE)
    chain = network(None, None)
    assert (result.forward(grid) - chain(grid)).abs().max() < 1e-6
    exact = method(pair, placement="corners", map_form="chain", progress=False)
    assert [type(p) for p in exact.forward.transforms] == [Displacement, Displacement]


def test_trained_folders_place_corner_to_corner_and_bad_values_are_refused():
    from itkdeepreg.methods import get_method

    assert get_method("unigradicon").placement == "extent"
    assert get_method("synth-gradicon-2d").placement == "corners"
    with pytest.raises(ValueError, match="placement must be None or one of 'extent', 'corners'"):
        check_options("unigradicon", {"placement": "centre"})
    with pytest.raises(ValueError, match="map_form must be one of 'field', 'chain'"):
        check_options("unigradicon", {"map_form": "exact"})

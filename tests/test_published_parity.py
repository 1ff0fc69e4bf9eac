"""Our uniGradICON network against the published one (icon_registration 1.1.9, unigradicon
1.0.6), run by tools/make_published_reference.py on the same random weights and images."""

import numpy as np
import pytest
import torch
from published_fixture import (
    FIXED_GRID,
    MOVING_GRID,
    NETWORK_GRID,
    REFERENCE,
    analytic_intensities,
    analytic_pair,
    displacement_in_voxels,
    fixed_points,
    our_maps,
    sample_voxels,
    seeded_weights,
    smooth_displacement,
)

from itkdeepreg.geometry import ImageGeometry
from itkdeepreg.losses import mind_ssc_loss, mse, ncc
from itkdeepreg.transforms import Affine, Displacement
from itkdeepreg.transforms.physical import to_physical
from itkdeepreg.zoo import (
    load_weights,
    preprocess,
    preprocess_gradicon_brain,
    preprocess_gradicon_lung,
    unigradicon_network,
)


def test_given_the_same_weights_our_network_gives_the_published_maps_within_1e_5():
    reference = np.load(REFERENCE)
    np.testing.assert_array_equal(reference["voxels"], sample_voxels())
    model = unigradicon_network()
    load_weights(model, seeded_weights(model.state_dict()))

    ours = our_maps(model)

    for name in ("forward", "backward"):
        # the maps move points by up to about six voxels: the comparison is not of identities
        assert displacement_in_voxels(reference[name]) > 3
        assert np.abs(ours[name] - reference[name]).max() < 1e-5, name


@pytest.mark.parametrize(
    "recipe, image, masked, published",
    [
        (preprocess, "ct", False, "ct"),
        (preprocess, "mri", False, "mri"),
        (preprocess, "ct", True, "ct_labels"),
        (preprocess_gradicon_lung, "ct", True, "lung"),
        (preprocess_gradicon_brain, "mri", False, "brain"),
    ],
    ids=["ct", "mri", "mask", "gradicon-lung", "gradicon-brain"],
)
def test_our_preprocessing_gives_the_published_intensities(recipe, image, masked, published):
    """The published CT scaling is by the window, not by the clipped image's range, and a
    label map masks where its label is positive."""
    reference = np.load(REFERENCE)
    raw = {name: torch.from_numpy(a) for name, a in analytic_intensities().items()}
    ours = recipe(raw[image], image, raw["labels"] if masked else None)
    assert np.abs(ours.numpy() - reference[f"preprocessed_{published}"]).max() < 1e-6


@pytest.mark.parametrize("name, ours", [("ncc", ncc), ("mse", mse), ("mind_ssc", mind_ssc_loss)])
def test_our_similarity_gives_the_published_value(name, ours):
    """NCC, MSE and MIND-SSC are the published ones to rounding. (LNCC differs by design
    near the edge: ours renormalises its windows there; see docs/losses.md.)"""
    reference = np.load(REFERENCE)
    moving, fixed = (torch.from_numpy(image)[None, None] for image in analytic_pair())
    assert ours(moving, fixed).item() == pytest.approx(float(reference[f"loss_{name}"]), rel=1e-5)


def _published_cube(image: ImageGeometry, network_shape=NETWORK_GRID) -> Affine:
    """The published network grid on an image, as a map of unit cubes, network -> image: the
    geometry's ``"extent"`` placement, which this test holds to the published export."""
    return Affine(torch.from_numpy(image.placed_to_unit(network_shape, "extent")))


def test_a_network_map_exported_lands_where_the_published_export_puts_it():
    """The same map of the network grid, exported between two images (one with flipped axes,
    one oblique with other spacings) by us and by ``create_itk_transform``. Placed as the
    published code places it (cells over the images' extent), the two agree to 1e-3 mm;
    placed corner to corner they differ by less than half a voxel of the network grid (a
    voxel is 1.1 mm here)."""
    reference = np.load(REFERENCE)
    fixed, moving = ImageGeometry(**FIXED_GRID), ImageGeometry(**MOVING_GRID)
    network_map = Displacement(smooth_displacement())
    points = torch.from_numpy(fixed_points()).T[None]
    published = reference["exported"]
    assert np.linalg.norm(published - fixed_points(), axis=1).min() > 5  # mm: a real move

    def distances(transform):
        ours = to_physical(transform, fixed, moving)(points)[0].T.numpy()
        return np.linalg.norm(ours - published, axis=1)

    with_published_grid = _published_cube(moving) @ network_map @ _published_cube(fixed).inverse()
    assert distances(with_published_grid).max() < 1e-3
    assert distances(network_map).max() < 0.5 * 2.0 * 99 / 175

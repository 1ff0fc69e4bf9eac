"""Synthetic SynthMorph-style pairs and the published uniGradICON augmentation."""

import pytest
import torch

from itkdeepreg.sampling import identity_grid
from itkdeepreg.train.augment import augment, random_signed_permutations
from itkdeepreg.train.synthetic import SyntheticPairs


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape, labels", [((48, 40), 12), ((24, 20, 16), 6)])
def test_every_label_map_has_the_requested_number_of_labels(shape, labels):
    batch = SyntheticPairs(shape, labels=labels).generate(3, generator())
    for maps in (batch.moving_labels, batch.fixed_labels):
        assert maps.shape == (3, 1, *shape) and maps.dtype == torch.int64
        for image in maps:
            assert torch.unique(image).tolist() == list(range(labels))
    for image in (batch.moving, batch.fixed):
        assert image.shape == (3, 1, *shape)
        assert image.min() == 0 and image.max() == 1


def label_means(image, labels, count):
    return torch.stack([image[labels == label].mean() for label in range(count)])


def test_the_labels_of_an_image_have_distinct_mean_intensities():
    count = 8
    batch = SyntheticPairs((64, 64), labels=count, blur=0, bias=0).generate(4, generator())
    for image, labels in zip(batch.moving, batch.moving_labels):
        means = label_means(image, labels, count).sort().values
        # drawn one per stratum of [0, 1], then scaled by the min-max and the gamma
        assert means.diff().min() > 0.02


def test_same_contrast_pairs_share_label_means_and_independent_ones_do_not():
    count = 6
    gaps = {}
    for contrast in ("same", "independent"):
        data = SyntheticPairs(
            (64, 64), labels=count, contrast=contrast, intensity_noise=0, blur=0, bias=0, gamma=0
        )
        batch = data.generate(4, generator())
        gaps[contrast] = max(
            (label_means(m, ml, count) - label_means(f, fl, count)).abs().max()
            for m, ml, f, fl in zip(
                batch.moving, batch.moving_labels, batch.fixed, batch.fixed_labels
            )
        )
    assert gaps["same"] < 1e-5 and gaps["independent"] > 0.2


def test_a_background_is_label_0_around_a_blob_and_the_darkest():
    count = 8
    batch = SyntheticPairs((64, 64), labels=count, background=1.0).generate(4, generator())
    for image, labels in zip(batch.moving, batch.moving_labels):
        means = label_means(image, labels, count)
        assert means.argmin() == 0 and means[0] < 0.25  # 0, then noise and min-max
        assert labels[0, 0, 0] == labels[0, -1, -1] == 0  # the corners are outside the blob
    plain = SyntheticPairs((64, 64), labels=count, background=0.0).generate(4, generator())
    assert max((labels == 0).float().mean() for labels in plain.moving_labels) < 0.3


def test_the_pair_differs_by_a_smooth_warp_of_one_label_map():
    batch = SyntheticPairs((64, 64), labels=8).generate(4, generator())
    overlap = (batch.moving_labels == batch.fixed_labels).float().mean()
    assert 0.5 < overlap < 0.98  # related, but not identical


def test_the_same_generator_state_gives_the_same_pairs():
    data = SyntheticPairs((32, 32), labels=5)
    first, second = data.sample(2, generator(3)), data.sample(2, generator(3))
    other = data.sample(2, generator(4))
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize(
    "options",
    [
        dict(shape=(32,)),
        dict(shape=(32, 32), labels=1),
        dict(shape=(32, 32), contrast="bright"),
        dict(shape=(32, 32), blur=float("nan")),
        dict(shape=(32, 32), scales=(1,)),
    ],
)
def test_bad_settings_are_refused(options):
    with pytest.raises(ValueError):
        SyntheticPairs(**options)


def test_signed_permutations_are_orthogonal_with_one_nonzero_per_row():
    matrices = random_signed_permutations(50, 3, generator())
    assert torch.equal(matrices.abs().sum(1), torch.ones(50, 3))
    assert torch.equal(matrices.abs().sum(2), torch.ones(50, 3))
    assert torch.allclose(matrices @ matrices.transpose(1, 2), torch.eye(3).expand(50, 3, 3))
    assert len({tuple(m.flatten().tolist()) for m in matrices}) > 10  # 48 possible


def test_without_permutation_or_noise_augmentation_changes_nothing():
    moving, fixed = torch.rand(2, 1, 12, 10), torch.rand(2, 1, 12, 10)
    out = augment(moving, fixed, generator(), permute=False, affine=0)
    assert torch.allclose(out[0], moving, atol=1e-6) and torch.allclose(out[1], fixed, atol=1e-6)


@pytest.mark.parametrize("shape", [(9, 9), (7, 7, 7)])
def test_the_permutation_is_shared_by_the_two_images_of_a_pair(shape):
    images = torch.rand(6, 1, *shape)
    moved_moving, moved_fixed = augment(images, images.clone(), generator(), affine=0)
    assert torch.allclose(moved_moving, moved_fixed)
    # a signed axis permutation of a cube grid only rearranges voxels
    for before, after in zip(images, moved_moving):
        assert torch.allclose(
            before.flatten().sort().values, after.flatten().sort().values, atol=1e-6
        )
    assert not torch.allclose(moved_moving, images)


def test_the_affine_perturbations_are_independent_and_of_the_published_size():
    # a linear ramp along axis 0 shows the perturbation of each image directly
    shape = (33, 33)
    ramp = identity_grid(shape)[:, :1].expand(400, 1, *shape)
    moving, fixed = augment(ramp, ramp, generator(), permute=False)
    centre = moving[:, 0, 16, 16] - 0.5  # the translation: 0.05 / 2 * N(0, 1) per axis
    assert 0.02 < centre.std() < 0.03
    assert not torch.allclose(moving, fixed)
    # the slope along axis 0: 1 + 0.05 * N(0, 1)
    slope = (moving[:, 0, 20, 16] - moving[:, 0, 12, 16]) / (8 / 32)
    assert 0.04 < slope.std() < 0.06 and abs(slope.mean() - 1) < 0.01


def test_a_pair_of_two_shapes_is_refused():
    with pytest.raises(ValueError, match="differ"):
        augment(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9), generator())

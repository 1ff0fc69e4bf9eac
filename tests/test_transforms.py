import math
import pickle

import pytest
import torch
from conftest import example_transforms, random_affine, smooth_field, smooth_image

import itkdeepreg as idr
from itkdeepreg.transforms import Composite, load_transform


def voxels(coords, shape):
    """Unit-cube coordinates in voxels of a grid of ``shape``."""
    scale = torch.tensor([n - 1 for n in shape], dtype=coords.dtype)
    return coords * scale.reshape(1, -1, *[1] * (coords.dim() - 2))


def test_identity_grid_puts_voxel_k_at_k_over_n_minus_one():
    grid = idr.identity_grid((5, 3))
    assert grid.shape == (1, 2, 5, 3)
    assert torch.equal(grid[0, 0, :, 0], torch.tensor([0, 0.25, 0.5, 0.75, 1]))
    assert torch.equal(grid[0, 1, 0, :], torch.tensor([0, 0.5, 1]))


def test_sample_at_voxel_centres_returns_voxel_values(dimension):
    shape = (5, 6, 7)[:dimension]
    image = torch.rand(1, 2, *shape, dtype=torch.float64)
    torch.testing.assert_close(idr.sample(image, idr.identity_grid(shape, torch.float64)), image)
    points = torch.tensor([[0.25, 0.4, 1 / 6][:dimension]], dtype=torch.float64).T[
        None
    ]  # [1, D, 1]
    expected = image[(0, slice(None)) + (1, 2, 1)[:dimension]]
    torch.testing.assert_close(idr.sample(image, points)[0, :, 0], expected)


def test_sample_padding_and_modes():
    image = torch.arange(4.0).reshape(1, 1, 2, 2) + 1
    outside = torch.tensor([[[2.0], [0.0]]])  # far below the grid
    assert idr.sample(image, outside, padding="border").item() == 3.0
    assert idr.sample(image, outside, padding="zeros").item() == 0.0
    assert idr.sample(image, outside, padding="itk").item() == 0.0
    # ITK's rule: the edge repeated up to half a voxel beyond it (voxels are 1 apart here)
    half_voxel_off = torch.tensor([[[1.45], [-0.45]]])
    assert idr.sample(image, half_voxel_off, padding="itk").item() == 3.0
    assert idr.sample(image, half_voxel_off, padding="zeros").item() < 3.0 * 0.6
    between = torch.tensor([[[0.4], [0.6]]])
    assert idr.sample(image, between, mode="nearest").item() == 2.0
    assert idr.sample(image, between).item() == pytest.approx(1 + 0.4 * 2 + 0.6)
    with pytest.raises(ValueError, match="mode"):
        idr.sample(image, between, mode="cubic")
    with pytest.raises(ValueError, match="padding"):
        idr.sample(image, between, padding="reflect")


@pytest.mark.parametrize("mode, padding", [("bilinear", "zeros"), ("nearest", "border")])
def test_grid_sample_split_across_threads_equals_one_call(mode, padding):
    from itkdeepreg.sampling import grid_sample

    torch.manual_seed(0)
    volume = torch.rand(1, 3, 23, 19, 17, requires_grad=True)
    # 67 x 71 x 59 points: four uneven pieces of 2^16 points or more
    grid = (torch.rand(1, 67, 71, 59, 3) * 2.2 - 1.1).requires_grad_()
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        split = grid_sample(volume, grid, mode, padding)
    finally:
        torch.set_num_threads(threads)
    assert "Split" in type(split.grad_fn.next_functions[0][0]).__name__  # it was split
    whole = torch.nn.functional.grid_sample(
        volume, grid, mode=mode, padding_mode=padding, align_corners=True
    )
    assert torch.equal(split, whole)
    weights = torch.rand_like(whole)
    for a, b in zip(
        torch.autograd.grad((split * weights).sum(), [volume, grid]),
        torch.autograd.grad((whole * weights).sum(), [volume, grid]),
    ):
        torch.testing.assert_close(a, b)


def test_resample_to_model_grid_and_back_is_close_for_smooth_images(dimension):
    shape = (29, 23, 19)[:dimension]
    image = smooth_image(shape)
    there_and_back = idr.resample(idr.resample(image, (64,) * dimension), shape)
    assert (there_and_back - image).abs().max() < 5e-3  # linear interpolation, twice


def test_affine_inverse_composes_to_identity(dimension):
    affine = random_affine(dimension, scale=0.2)
    grid = idr.identity_grid((9,) * dimension, torch.float64)
    for composed in (affine @ affine.inverse(), affine.inverse() @ affine):
        assert isinstance(composed, idr.Affine)  # neighbouring affine maps are multiplied
        assert voxels(composed(grid) - grid, (9,) * dimension).abs().max() < 1e-10


def test_velocity_integration_inverse_composes_to_identity_within_1e4_voxels(dimension):
    shape = (48, 40, 36)[:dimension]
    velocity = idr.Velocity(smooth_field(shape, 0.05, seed=4), method="integration")
    grid = idr.identity_grid(shape, torch.float64)
    moved = voxels(velocity(grid) - grid, shape).abs().max()
    assert moved > 2  # a real deformation, several voxels
    for composed in (velocity @ velocity.inverse(), velocity.inverse() @ velocity):
        assert voxels(composed(grid) - grid, shape).abs().max() < 1e-4


def test_scaling_and_squaring_agrees_with_integration_up_to_interpolation_error(dimension):
    shape = (48, 40, 36)[:dimension]
    field = smooth_field(shape, 0.05, seed=4)
    squared, integrated = idr.Velocity(field), idr.Velocity(field, method="integration")
    grid = idr.identity_grid(shape, torch.float64)
    interior = (slice(None), slice(None)) + (slice(6, -6),) * dimension  # border rules differ
    # the price of interpolating the exponential on its grid, O(h^2): 0.11-0.17 voxel measured
    difference = voxels(squared(grid) - integrated(grid), shape)[interior]
    round_trip = voxels((squared @ squared.inverse())(grid) - grid, shape)[interior]
    assert difference.abs().max() < 0.25 and round_trip.abs().max() < 0.25


def test_velocity_with_zero_steps_is_the_velocity_as_a_displacement():
    field = smooth_field((8, 9), 0.02)
    grid = idr.identity_grid((8, 9), torch.float64)
    torch.testing.assert_close(idr.Velocity(field, steps=0)(grid), grid + field)


def test_composition_applies_the_last_transform_first(dimension):
    translation = torch.eye(dimension + 1, dtype=torch.float64)
    translation[0, dimension] = 0.1
    scaling = torch.diag(torch.tensor([2.0] * dimension + [1.0], dtype=torch.float64))
    shift, scale = idr.Affine(translation), idr.Affine(scaling)
    point = torch.full((1, dimension, 1), 0.25, dtype=torch.float64)
    assert (shift @ scale)(point)[0, 0, 0].item() == pytest.approx(0.6)  # scale first
    assert (scale @ shift)(point)[0, 0, 0].item() == pytest.approx(0.7)


def test_composite_flattens_and_merges_affines(dimension):
    t = example_transforms(dimension)
    nested = t["affine"] @ (t["affine"] @ t["displacement"]) @ t["velocity"]
    assert isinstance(nested, Composite)
    assert [type(p).__name__ for p in nested.transforms] == ["Affine", "Displacement", "Velocity"]
    grid = idr.identity_grid((7,) * dimension, torch.float64)
    expected = t["affine"](t["affine"](t["displacement"](t["velocity"](grid))))
    torch.testing.assert_close(nested(grid), expected)
    with pytest.raises(ValueError, match="3D"):
        idr.compose(t["affine"], random_affine(5 - dimension))


def test_composite_inverse_needs_every_part_invertible(dimension):
    t = example_transforms(dimension)
    invertible = t["affine"] @ idr.Velocity(t["velocity"].velocity, method="integration")
    grid = idr.identity_grid((11,) * dimension, torch.float64)
    assert (
        voxels((invertible.inverse() @ invertible)(grid) - grid, (11,) * dimension).abs().max()
        < 1e-4
    )
    with pytest.raises(NotImplementedError, match="no exact inverse"):
        t["composite"].inverse()


def test_warp_samples_the_image_at_the_mapped_grid(dimension):
    t = example_transforms(dimension)["composite"]
    moving = smooth_image((21, 17, 13)[:dimension])
    fixed_shape = (15, 19, 11)[:dimension]
    warped = t.warp(moving, fixed_shape)
    assert warped.shape == (1, 1, *fixed_shape)
    mapped = t(idr.identity_grid(fixed_shape, torch.float64))
    torch.testing.assert_close(warped, idr.sample(moving, mapped, padding="zeros"))
    labels = (moving * 4).round()
    nearest = t.warp(labels, fixed_shape, mode="nearest")
    assert set(nearest.unique().tolist()) <= set(labels.unique().tolist()) | {0.0}


def saveable_transforms(dimension):
    transforms = example_transforms(dimension)
    field = transforms["velocity"].velocity
    transforms["integration"] = idr.Velocity(field, steps=5, method="integration")
    transforms["itk_rule"] = idr.Displacement(field, outside="itk")
    return transforms


@pytest.mark.parametrize("kind", list(saveable_transforms(2)))
def test_save_and_load_round_trip(tmp_path, kind, dimension):
    transform = saveable_transforms(dimension)[kind]
    path = tmp_path / f"{kind}.pt"
    transform.save(path)
    loaded = load_transform(path)
    assert type(loaded) is type(transform) and loaded.to_dict().keys() == transform.to_dict().keys()
    grid = idr.identity_grid((6, 7, 8)[:dimension], torch.float64) * 1.4 - 0.2  # off the grid too
    assert torch.equal(loaded(grid), transform(grid))
    assert [p.name for p in tmp_path.iterdir()] == [f"{kind}.pt"]  # no temporary left behind
    assert path.stat().st_mode & 0o044  # readable by others, as the umask allows


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_load_refuses_pickled_code_corrupt_and_missing_files(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    pickled = tmp_path / "pickled.pt"
    with open(pickled, "wb") as handle:
        pickle.dump({"format": "itkdeepreg.transform/1", "transform": Payload()}, handle)
    with pytest.raises(ValueError, match="not a readable"):
        load_transform(pickled)
    corrupt = tmp_path / "corrupt.pt"
    example_transforms(2)["affine"].save(corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a readable"):
        load_transform(corrupt)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="not an itkdeepreg transform"):
        load_transform(other)
    with pytest.raises(FileNotFoundError):
        load_transform(tmp_path / "missing.pt")


def test_to_moves_between_dtypes_and_devices():
    transform = example_transforms(2)["composite"]
    single = transform.to(dtype=torch.float32)
    assert all(t.dtype == torch.float32 for t in single._tensors())
    grid = idr.identity_grid((5, 6), torch.float64)
    torch.testing.assert_close(single(grid.float()).double(), transform(grid), atol=1e-6, rtol=0)
    if torch.cuda.is_available():
        on_gpu = transform.to("cuda")
        torch.testing.assert_close(on_gpu(grid.cuda()).cpu(), transform(grid))


def test_as_displacement_samples_the_map_on_a_grid(dimension):
    transform = example_transforms(dimension)["composite"]
    shape = (9, 10, 11)[:dimension]
    grid = idr.identity_grid(shape, torch.float64)
    torch.testing.assert_close(transform.as_displacement(shape)(grid), transform(grid))


def test_warping_an_integer_label_map_keeps_its_labels():
    labels = torch.arange(16).reshape(1, 1, 4, 4)  # int64
    warped = idr.Affine.identity(2).warp(labels, mode="nearest")
    assert torch.equal(warped, labels.float())
    assert torch.equal(idr.resample(labels, (4, 4), mode="nearest"), labels.float())


def test_velocity_keeps_no_state_between_calls():
    field = smooth_field((8, 9), 0.02).requires_grad_()
    velocity = idr.Velocity(field)
    grid = idr.identity_grid((8, 9), torch.float64)
    with torch.no_grad():
        velocity(grid)
    for _ in range(2):  # gradients reach the field on every call, not only the first
        velocity(grid).sum().backward()
    assert field.grad is not None and field.grad.abs().sum() > 0
    before = velocity(grid).detach()
    with torch.no_grad():
        field += 0.01
    assert not torch.equal(velocity(grid), before)


def test_bad_transform_values_are_refused():
    with pytest.raises(ValueError, match="2D affine map takes coordinates"):
        idr.Affine.identity(2)(torch.zeros(1, 3, 5))
    with pytest.raises(ValueError, match="2 spatial axes"):
        idr.Affine.identity(2).warp(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="at least two samples"):
        idr.Displacement(torch.zeros(1, 2, 1, 4))
    with pytest.raises(TypeError, match="ImageGeometry"):
        idr.to_physical(idr.Affine.identity(2), "fixed.nii", "moving.nii")
    with pytest.raises(ValueError, match="whole numbers"):
        idr.ImageGeometry((4.7, 4))
    with pytest.raises(ValueError, match=r"\[B, D\+1, D\+1\]"):
        idr.Affine(torch.eye(5))
    with pytest.raises(ValueError, match="D channels"):
        idr.Displacement(torch.zeros(1, 2, 4, 4, 4))
    with pytest.raises(ValueError, match="floating point"):
        idr.Displacement(torch.zeros(1, 2, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="method"):
        idr.Velocity(torch.zeros(1, 2, 4, 4), method="euler")
    with pytest.raises(TypeError, match="compose"):
        idr.compose(idr.Affine(torch.eye(3)), math.pi)

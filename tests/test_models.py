import json
from pathlib import Path

import pytest
import torch
from conftest import small_gradicon
from torch import nn

import itkdeepreg as idr
from itkdeepreg.models import AffineStep, DisplacementStep, Downsample, TwoStep
from itkdeepreg.nets import ConvolutionalMatrixNet, GradICONUNet
from itkdeepreg.zoo import unigradicon_network

REFERENCE = Path(__file__).parent / "data" / "unigradicon_state_dict_shapes.json"


class Recorder(nn.Module):
    """A step that returns a fixed transform and records the images it was given."""

    def __init__(self, transform):
        super().__init__()
        self.transform = transform
        self.seen = []

    def forward(self, moving, fixed):
        self.seen.append((moving, fixed))
        return self.transform


def shift(axis, amount):
    matrix = torch.eye(3, dtype=torch.float64)
    matrix[axis, 2] = amount
    return idr.Affine(matrix)


def test_unigradicon_state_dict_equals_the_published_names_and_shapes():
    reference = json.loads(REFERENCE.read_text())
    ours = {name: list(t.shape) for name, t in unigradicon_network().state_dict().items()}
    assert ours == reference


def test_two_step_warps_the_moving_image_by_the_first_map_and_composes_phi_after_psi():
    phi, psi = Recorder(shift(0, 0.1)), Recorder(shift(1, 0.2))
    moving = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    fixed = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    transform = TwoStep(phi, psi)(moving, fixed)
    seen_moving, seen_fixed = psi.seen[0]
    assert torch.equal(seen_fixed, fixed)
    torch.testing.assert_close(seen_moving, phi.transform.warp(moving, padding="border"))
    point = torch.tensor([[[0.3], [0.4]]], dtype=torch.float64)
    torch.testing.assert_close(transform(point), phi.transform(psi.transform(point)))


def test_downsample_pools_both_images_and_keeps_the_childs_map():
    child = Recorder(shift(0, 0.1))
    generator = torch.Generator().manual_seed(0)
    moving = torch.rand(1, 1, 9, 12, generator=generator, dtype=torch.float64)
    fixed = torch.rand(1, 1, 9, 12, generator=generator, dtype=torch.float64)
    transform = Downsample(child)(moving, fixed)
    assert transform is child.transform
    pooled_moving, pooled_fixed = child.seen[0]
    assert pooled_moving.shape == pooled_fixed.shape == (1, 1, 5, 6)  # odd sizes round up
    torch.testing.assert_close(pooled_moving[0, 0, 0, 0], moving[0, 0, :2, :2].mean())
    torch.testing.assert_close(
        pooled_moving[0, 0, 4, 0], moving[0, 0, 8, :2].mean()
    )  # last row alone


def test_an_untrained_model_is_the_identity_and_keeps_no_state():
    model = TwoStep(
        Downsample(DisplacementStep(GradICONUNet(2))), DisplacementStep(GradICONUNet(2))
    )
    model.eval()
    attributes = {name: set(vars(m)) for name, m in model.named_modules()}
    moving, fixed = torch.rand(1, 1, 40, 36), torch.rand(1, 1, 40, 36)
    with torch.no_grad():
        transform = model(moving, fixed)
    grid = idr.identity_grid((40, 36))
    torch.testing.assert_close(transform(grid), grid)
    assert {name: set(vars(m)) for name, m in model.named_modules()} == attributes


def small_model():
    return small_gradicon(0.02, batch_norm_statistics=True)


def test_both_directions_in_one_batch_equal_two_single_passes():
    from itkdeepreg.models import register_pair

    model = small_model()
    moving, fixed = torch.rand(1, 1, 48, 40), torch.rand(1, 1, 48, 40)
    forward, backward = register_pair(model, moving, fixed, inverse=True)
    alone_forward = register_pair(model, moving, fixed)
    alone_backward = register_pair(model, fixed, moving)
    grid = idr.identity_grid((48, 40))
    assert (alone_forward(grid) - grid).abs().max() > 1e-3  # a real, non-identity map
    torch.testing.assert_close(forward(grid), alone_forward(grid), atol=1e-5, rtol=0)
    torch.testing.assert_close(backward(grid), alone_backward(grid), atol=1e-5, rtol=0)


def test_inference_keeps_batch_norm_statistics_and_the_models_mode():
    from itkdeepreg.models import register_pair

    model = small_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    transform = register_pair(model, torch.rand(1, 1, 40, 40), torch.rand(1, 1, 40, 40))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training
    assert not any(t.is_inference() for t in transform._tensors())  # usable in autograd


def test_select_picks_one_item_of_a_batched_transform():
    fields = torch.randn(2, 2, 6, 7, dtype=torch.float64) * 0.01
    batched = idr.Affine(torch.eye(3, dtype=torch.float64)) @ idr.Displacement(fields)
    second = batched.select(1)
    grid = idr.identity_grid((6, 7), torch.float64)
    torch.testing.assert_close(second(grid), idr.Displacement(fields[1:])(grid))


def test_register_pair_refuses_mismatched_images():
    from itkdeepreg.models import register_pair

    with pytest.raises(ValueError, match="single images"):
        register_pair(small_model(), torch.rand(1, 1, 40, 40), torch.rand(1, 1, 40, 41))


def test_register_pair_restores_each_submodules_own_mode():
    model = small_model().train()
    model.netPsi.eval()
    register_pair_ = __import__("itkdeepreg.models", fromlist=["register_pair"]).register_pair
    register_pair_(model, torch.rand(1, 1, 40, 40), torch.rand(1, 1, 40, 40))
    assert model.training and model.netPhi.training and not model.netPsi.training


def test_register_pair_follows_the_models_dtype():
    from itkdeepreg.models import register_pair

    transform = register_pair(
        small_model(), torch.rand(1, 1, 40, 40, dtype=torch.float64), torch.rand(1, 1, 40, 40)
    )
    assert transform._dtype() == torch.float32


# AffineStep: the published FunctionFromMatrix, returning an Affine transform value


class MatrixNet(nn.Module):
    """A network that returns the same homogeneous matrix for every pair."""

    def __init__(self, matrix):
        super().__init__()
        self.register_buffer("matrix", torch.as_tensor(matrix, dtype=torch.float32))

    def forward(self, moving, fixed):
        return self.matrix.expand(moving.shape[0], -1, -1)


@pytest.mark.parametrize("shape", [(40, 36), (33, 34, 35)])
def test_an_untrained_affine_step_is_the_identity_map(shape):
    dimension = len(shape)
    step = AffineStep(ConvolutionalMatrixNet(dimension)).eval()
    moving, fixed = torch.rand(2, 2, 1, *shape)
    with torch.no_grad():
        transform = step(moving, fixed)
    assert isinstance(transform, idr.Affine)
    assert transform.matrix.shape == (2, dimension + 1, dimension + 1)
    grid = idr.identity_grid(shape)
    torch.testing.assert_close(
        transform(grid.expand(2, *grid.shape[1:])), grid.expand(2, -1, *shape)
    )
    torch.testing.assert_close(transform.warp(moving), moving)


def test_an_affine_step_shift_warps_the_moving_image_by_that_shift():
    """A translation of one voxel along tensor axis 0 (channel 0): the published convention."""
    net = ConvolutionalMatrixNet(2)
    with torch.no_grad():
        net.dense3.bias[2] = 1 / 19  # t_0: one voxel of a 20-voxel axis 0
    moving = torch.rand(1, 1, 20, 24, dtype=torch.float64)
    transform = AffineStep(net)(moving.float(), moving.float())
    warped = transform.to(dtype=torch.float64).warp(moving)
    torch.testing.assert_close(warped[0, 0, :-1], moving[0, 0, 1:], atol=1e-6, rtol=0)  # float32 t
    point = torch.tensor([[[0.25], [0.5]]])
    torch.testing.assert_close(transform(point), point + torch.tensor([[[1 / 19], [0.0]]]))


def test_two_affine_steps_compose_into_one_matrix_and_with_a_field_into_a_composite():
    first = torch.tensor([[1.1, 0.1, -0.05], [0.0, 0.9, 0.1], [0, 0, 1]])
    second = torch.tensor([[0.95, 0.0, 0.02], [-0.1, 1.05, 0.0], [0, 0, 1]])
    moving, fixed = torch.rand(1, 1, 24, 24), torch.rand(1, 1, 24, 24)
    both = TwoStep(AffineStep(MatrixNet(first)), AffineStep(MatrixNet(second)))(moving, fixed)
    assert isinstance(both, idr.Affine)  # neighbouring affine maps multiply into one
    torch.testing.assert_close(both.matrix[0], first @ second)

    model = TwoStep(AffineStep(MatrixNet(first)), DisplacementStep(GradICONUNet(2))).eval()
    with torch.no_grad():
        transform = model(moving, fixed)
    assert [type(t).__name__ for t in transform.transforms] == ["Affine", "Displacement"]
    grid = idr.identity_grid((24, 24))
    torch.testing.assert_close(transform(grid), idr.Affine(first)(grid))  # untrained U-Net: id


def test_an_affine_step_keeps_each_items_matrix_and_no_state():
    torch.manual_seed(0)
    net = ConvolutionalMatrixNet(2)
    torch.nn.init.normal_(net.dense3.weight, std=0.05)
    step = AffineStep(net).eval()
    attributes = {name: set(vars(m)) for name, m in step.named_modules()}
    moving, fixed = torch.rand(2, 2, 1, 32, 32)
    with torch.no_grad():
        batched = step(moving, fixed)
        alone = step(moving[1:], fixed[1:])
    torch.testing.assert_close(batched.select(1).matrix, alone.matrix)
    assert not torch.allclose(batched.matrix[0], batched.matrix[1])
    assert {name: set(vars(m)) for name, m in step.named_modules()} == attributes


def test_an_affine_steps_transform_saves_and_inverts(tmp_path):
    transform = AffineStep(MatrixNet([[1.1, 0.1, -0.05], [0.0, 0.9, 0.1], [0, 0, 1]]))(
        torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)
    )
    transform.save(tmp_path / "affine.pt")
    loaded = idr.load_transform(tmp_path / "affine.pt")
    assert torch.equal(loaded.matrix, transform.matrix)
    grid = idr.identity_grid((8, 8))
    torch.testing.assert_close(transform.inverse()(transform(grid)), grid)


def test_an_affine_step_refuses_a_network_that_gives_no_homogeneous_matrix():
    with pytest.raises(ValueError, match=r"\[B, 3, 3\]"):
        AffineStep(MatrixNet(torch.eye(4)))(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))

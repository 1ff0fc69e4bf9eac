import json
from pathlib import Path

import pytest
import torch
from conftest import small_gradicon
from torch import nn

import itkdeepreg as idr
from itkdeepreg.models import DisplacementStep, Downsample, TwoStep
from itkdeepreg.nets import GradICONUNet
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

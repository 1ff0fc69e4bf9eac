import json
from pathlib import Path

import torch
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
    moving, fixed = torch.rand(1, 1, 9, 12), torch.rand(1, 1, 9, 12)
    transform = Downsample(child)(moving, fixed)
    assert transform is child.transform
    pooled_moving, pooled_fixed = child.seen[0]
    assert pooled_moving.shape == pooled_fixed.shape == (1, 1, 5, 6)  # odd sizes round up
    assert pooled_moving[0, 0, 0, 0] == moving[0, 0, :2, :2].mean()
    assert pooled_moving[0, 0, 4, 0] == moving[0, 0, 8, :2].mean()  # the last row alone


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

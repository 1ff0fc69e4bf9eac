"""The models of our own: GradICON trained on synthetic pairs only, shipped in the package."""

import os

import pytest
import torch

from itkdeepreg.losses import dice
from itkdeepreg.methods import NetworkMethod, get_method, method_names
from itkdeepreg.models import register_pair
from itkdeepreg.train import SyntheticPairs
from itkdeepreg.zoo import OWN_MODELS, OWN_MODELS_FOLDER

UNSEEN = 10**9  # a data seed far from those of the training steps


@pytest.mark.parametrize("name", OWN_MODELS)
def test_each_model_is_registered_small_and_loads_strictly(name):
    assert name in method_names()
    method = get_method(name)
    assert isinstance(method, NetworkMethod)
    weights = os.path.join(OWN_MODELS_FOLDER, name, "weights.pt")
    assert os.path.getsize(weights) < 20 * 2**20
    model = method.build(progress=False)  # load_weights refuses missing or extra tensors
    assert sum(p.numel() for p in model.parameters()) > 10**5


@pytest.mark.parametrize("name", OWN_MODELS)
def test_each_model_aligns_unseen_synthetic_label_maps(name):
    method = get_method(name)
    model = method.build(progress=False)
    pairs = SyntheticPairs(method.shape, deformation=0.03)
    batch = pairs.generate(2, torch.Generator().manual_seed(UNSEEN))
    before, after = [], []
    for index in range(2):
        moving, fixed = batch.moving[index : index + 1], batch.fixed[index : index + 1]
        moving_labels = batch.moving_labels[index : index + 1].double()
        forward = register_pair(model, moving, fixed)
        warped = forward.warp(moving_labels, mode="nearest").long()
        before.append(dice(batch.moving_labels[index], batch.fixed_labels[index]).mean())
        after.append(dice(warped[0], batch.fixed_labels[index]).mean())
    gain = (sum(after) - sum(before)) / 2
    assert gain > 0.05, (before, after)

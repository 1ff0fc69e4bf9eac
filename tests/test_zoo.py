"""The published GradICON lung, knee and brain architectures and their weights' sources."""

import json
import math
from pathlib import Path

import pytest
import torch

import itkdeepreg as idr
from itkdeepreg import zoo
from itkdeepreg.nets.unet import MINIMUM_SIZE

REFERENCE = Path(__file__).parent / "data" / "unigradicon_state_dict_shapes.json"
NETWORKS = {
    "lung": (zoo.gradicon_lung_network, zoo.GRADICON_LUNG_SHAPE, zoo.GRADICON_LUNG),
    "knee": (zoo.gradicon_knee_network, zoo.GRADICON_KNEE_SHAPE, zoo.GRADICON_KNEE),
    "brain": (zoo.gradicon_brain_network, zoo.GRADICON_BRAIN_SHAPE, zoo.GRADICON_BRAIN),
}


@pytest.mark.parametrize("task", NETWORKS)
def test_state_dict_has_the_published_four_unet_names_and_shapes(task):
    """The published lung/knee/brain ``make_network`` is uniGradICON's tree: same names."""
    reference = json.loads(REFERENCE.read_text())
    network = NETWORKS[task][0]()
    assert {name: list(t.shape) for name, t in network.state_dict().items()} == reference


def test_published_grids_and_that_each_unet_can_run_on_them():
    assert zoo.GRADICON_LUNG_SHAPE == (175, 175, 175)
    assert zoo.GRADICON_KNEE_SHAPE == (80, 192, 192)
    assert zoo.GRADICON_BRAIN_SHAPE == (130, 155, 130)
    for _, shape, _ in NETWORKS.values():
        quarter = [math.ceil(math.ceil(n / 2) / 2) for n in shape]  # where U0 runs
        assert min(quarter) >= MINIMUM_SIZE


def test_each_call_builds_a_network_of_its_own():
    first, second = zoo.gradicon_lung_network(), zoo.gradicon_lung_network()
    assert not set(map(id, first.parameters())) & set(map(id, second.parameters()))


def test_an_untrained_network_gives_four_identity_fields_at_their_resolutions():
    network = zoo.gradicon_knee_network().eval()  # all three are the same tree
    shape = (65, 66, 67)  # the smallest grid whose quarter the 3D U-Net takes
    moving, fixed = torch.rand(2, 1, 1, *shape)
    with torch.no_grad():
        transform = network(moving, fixed)
    assert isinstance(transform, idr.Composite)
    fields = [t.displacement.shape for t in transform.transforms]
    assert all(type(t) is idr.Displacement for t in transform.transforms)
    assert fields == [(1, 3, 17, 17, 17), (1, 3, 33, 33, 34), (1, 3, *shape), (1, 3, *shape)]
    grid = idr.identity_grid(shape)
    torch.testing.assert_close(transform(grid), grid)


@pytest.mark.parametrize("task", NETWORKS)
def test_weights_sources_are_the_published_release_files(task):
    source = NETWORKS[task][2]
    assert source.url == (
        "https://github.com/uncbiag/ICON/releases/download/pretrained_models_v1.0.0/"
        f"{task}_model_weights_step_2.trch"
    )
    assert source.sha256 is None  # not pinned: no session has had the files yet
    names = [s.filename for s in (zoo.UNIGRADICON, zoo.MULTIGRADICON)] + [
        NETWORKS[t][2].filename for t in NETWORKS
    ]
    assert len(set(names)) == len(names)  # no two models share a cache file


def test_published_shaped_weights_load_strictly():
    reference = json.loads(REFERENCE.read_text())
    weights = {k: torch.full(v, 0.5) if v else torch.tensor(3) for k, v in reference.items()}
    network = zoo.load_weights(zoo.gradicon_brain_network(), weights)
    assert torch.equal(network.netPsi.net.lastConv.weight, weights["netPsi.net.lastConv.weight"])
    # the published loader is not strict; a tensor beyond the U-Nets' is named, not ignored
    weights["identity_map"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unexpected identity_map"):
        zoo.load_weights(network, weights)

import json
from pathlib import Path

import pytest
import torch

from itkdeepreg.nets import GradICONUNet

REFERENCE = Path(__file__).parent / "data" / "unigradicon_state_dict_shapes.json"
UNET_PREFIXES = [  # the four U-Nets of uniGradICON: 44^3, 88^3, 175^3, 175^3
    "netPhi.netPhi.net.netPhi.net.net.",
    "netPhi.netPhi.net.netPsi.net.",
    "netPhi.netPsi.net.",
    "netPsi.net.",
]


def test_state_dict_names_and_shapes_equal_each_published_unet():
    reference = json.loads(REFERENCE.read_text())
    ours = {name: list(tensor.shape) for name, tensor in GradICONUNet(3).state_dict().items()}
    covered = set()
    for prefix in UNET_PREFIXES:
        published = {k[len(prefix) :]: v for k, v in reference.items() if k.startswith(prefix)}
        assert published == ours, prefix
        covered |= {prefix + k for k in published}
    assert covered == set(reference)  # uniGradICON is these four U-Nets and nothing else


def test_published_shaped_weights_load_strictly_and_a_wrong_key_does_not():
    net = GradICONUNet(3)
    reference = json.loads(REFERENCE.read_text())
    prefix = UNET_PREFIXES[0]
    weights = {
        k[len(prefix) :]: torch.randn(v) if v else torch.tensor(7)
        for k, v in reference.items()
        if k.startswith(prefix)
    }
    net.load_state_dict(weights, strict=True)
    assert torch.equal(net.lastConv.weight, weights["lastConv.weight"])
    weights["extra.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="extra.weight"):
        net.load_state_dict(weights, strict=True)


def test_parameter_count_is_the_published_17_7_million():
    count = sum(p.numel() for p in GradICONUNet(3).parameters())
    assert count == 17_670_229


@pytest.mark.parametrize("shape", [(37, 50), (64, 64), (21, 22, 23), (17, 18, 19)])
def test_any_size_gives_a_field_of_that_size_starting_at_zero(shape):
    dimension = len(shape)
    net = GradICONUNet(dimension)
    moving, fixed = torch.rand(2, 1, 1, *shape)
    field = net(moving, fixed)
    assert field.shape == (1, dimension, *shape)
    assert torch.count_nonzero(field) == 0  # zero-initialised last layer: the identity map


def test_the_network_learns_from_both_images():
    torch.manual_seed(0)
    net = GradICONUNet(2)
    torch.nn.init.normal_(net.lastConv.weight, std=0.01)
    moving = torch.rand(1, 1, 32, 32, requires_grad=True)
    fixed = torch.rand(1, 1, 32, 32, requires_grad=True)
    field = net(moving, fixed)
    field.square().sum().backward()
    assert field.abs().max() > 0
    assert moving.grad.abs().sum() > 0 and fixed.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())


def test_batch_norm_statistics_do_not_drift_in_eval_mode():
    net = GradICONUNet(2).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net(torch.rand(1, 1, 24, 24), torch.rand(1, 1, 24, 24))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_bad_dimension_and_too_small_images_are_refused():
    with pytest.raises(ValueError, match="2D or 3D"):
        GradICONUNet(4)
    with pytest.raises(ValueError, match="at least 17 voxels"):
        GradICONUNet(3)(torch.rand(1, 1, 16, 40, 40), torch.rand(1, 1, 16, 40, 40))
    small = GradICONUNet(2)(torch.rand(1, 1, 9, 12), torch.rand(1, 1, 9, 12))  # 2D has no limit
    assert small.shape == (1, 2, 9, 12)


def test_pooled_input_fills_the_last_channels_and_the_last_skip_is_the_raw_pair():
    """The published wiring: zero-padded channels in front; skips concatenated after."""
    import torch.nn.functional as F

    net = GradICONUNet(2)
    for convolution in net.downConvs:  # the down path then carries the pooled input alone
        torch.nn.init.zeros_(convolution.weight)
        torch.nn.init.zeros_(convolution.bias)
    seen = {}
    net.downConvs[1].register_forward_hook(
        lambda m, i, o: seen.update(down1=i[0])
    )  # None: keep output
    net.lastConv.register_forward_hook(lambda m, i, o: seen.update(last=i[0]))
    moving, fixed = torch.rand(1, 1, 24, 20), torch.rand(1, 1, 24, 20)
    net(moving, fixed)
    pooled = F.avg_pool2d(torch.cat([moving, fixed], 1), 2, ceil_mode=True)
    assert torch.count_nonzero(seen["down1"][:, :14]) == 0
    torch.testing.assert_close(seen["down1"][:, 14:], F.leaky_relu(pooled))
    torch.testing.assert_close(seen["last"][:, 16:], torch.cat([moving, fixed], 1))

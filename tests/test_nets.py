import json
from pathlib import Path

import pytest
import torch

from itkdeepreg.nets import ConvolutionalMatrixNet, GradICONUNet

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


# ConvolutionalMatrixNet: the published affine network (icon_registration networks.py)


def published_matrix_net_names(dimension):
    """Names and shapes as the published class defines them: ``convs``, ``dense2``, ``dense3``."""
    features = [2, 16, 32, 64, 128, 256, 512]
    kernel = [3] * dimension
    names = {}
    for i in range(6):
        names[f"convs.{i}.weight"] = [features[i + 1], features[i], *kernel]
        names[f"convs.{i}.bias"] = [features[i + 1]]
    names["dense2.weight"], names["dense2.bias"] = [300, 512], [300]
    outputs = dimension * (dimension + 1)
    names["dense3.weight"], names["dense3.bias"] = [outputs, 300], [outputs]
    return names


@pytest.mark.parametrize("dimension", [2, 3])
def test_matrix_net_state_dict_has_the_published_names_and_shapes(dimension):
    net = ConvolutionalMatrixNet(dimension)
    ours = {name: list(t.shape) for name, t in net.state_dict().items()}
    assert ours == published_matrix_net_names(dimension)
    assert list(ours) == list(published_matrix_net_names(dimension))  # and their order


def test_matrix_net_parameter_count():
    assert sum(p.numel() for p in ConvolutionalMatrixNet(3).parameters()) == 4_873_368
    assert sum(p.numel() for p in ConvolutionalMatrixNet(2).parameters()) == 1_728_330


@pytest.mark.parametrize("shape", [(40, 30), (7, 5), (33, 40, 35), (34, 33, 37)])
def test_untrained_matrix_net_gives_exactly_the_identity_for_every_item(shape):
    dimension = len(shape)
    moving, fixed = torch.rand(2, 2, 1, *shape)
    matrix = ConvolutionalMatrixNet(dimension)(moving, fixed)
    assert matrix.shape == (2, dimension + 1, dimension + 1)
    assert torch.equal(matrix, torch.eye(dimension + 1).expand(2, -1, -1))


def published_forward(net, moving, fixed):
    """The published layer order, written out with the network's own layers."""
    import torch.nn.functional as F

    d = net.dimension
    pool = (F.avg_pool2d, F.avg_pool3d)[d - 2]
    x = torch.cat([moving, fixed], 1)
    for convolution in net.convs:
        x = pool(convolution(F.relu(x)), 2, ceil_mode=True)
    x = pool(x, x.shape[2:], ceil_mode=True).reshape(-1, 512)
    x = net.dense3(F.relu(net.dense2(x))).reshape(-1, d, d + 1)
    bottom = torch.zeros(x.shape[0], 1, d + 1, dtype=x.dtype)
    bottom[..., d] = 1
    x = torch.cat([x, bottom], 1)
    x = x + torch.block_diag(torch.eye(d), torch.zeros(1, 1))  # identity added to the linear part
    shift, unshift = torch.eye(d + 1), torch.eye(d + 1)
    shift[:d, d], unshift[:d, d] = 0.5, -0.5
    return shift @ x @ unshift


@pytest.mark.parametrize("shape", [(37, 50), (33, 35, 41)])
def test_matrix_net_equals_the_published_construction(shape):
    torch.manual_seed(0)
    net = ConvolutionalMatrixNet(len(shape))
    torch.nn.init.normal_(net.dense3.weight, std=0.05)
    torch.nn.init.normal_(net.dense3.bias, std=0.1)
    moving, fixed = torch.rand(2, 3, 1, *shape)
    ours = net(moving, fixed)
    torch.testing.assert_close(ours, published_forward(net, moving, fixed))
    assert torch.equal(ours[:, -1], torch.eye(len(shape) + 1)[-1].expand(3, -1))
    assert (ours - torch.eye(len(shape) + 1)).abs().max() > 1e-2  # a real, non-identity map


def test_matrix_net_acts_about_the_centre_of_the_unit_cube():
    """``x -> c + (I + A)(x - c) + t`` with ``c = 0.5``: a pure scaling keeps the centre fixed."""
    net = ConvolutionalMatrixNet(2)
    with torch.no_grad():
        net.dense3.bias.copy_(torch.tensor([0.2, 0.0, 0.0, 0.0, -0.1, 0.0]))  # A = diag(.2, -.1)
    matrix = net(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16))[0]
    centre = torch.tensor([0.5, 0.5, 1.0])
    torch.testing.assert_close(matrix @ centre, centre)
    torch.testing.assert_close(matrix[:2, :2], torch.diag(torch.tensor([1.2, 0.9])))
    with torch.no_grad():
        net.dense3.bias.copy_(torch.tensor([0.0, 0.0, 0.3, 0.0, 0.0, -0.2]))  # t = (.3, -.2)
    matrix = net(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16))[0]
    torch.testing.assert_close(matrix[:2, 2], torch.tensor([0.3, -0.2]))


def test_matrix_net_learns_from_both_images():
    torch.manual_seed(0)
    net = ConvolutionalMatrixNet(2)
    torch.nn.init.normal_(net.dense3.weight, std=0.01)
    moving = torch.rand(1, 1, 32, 32, requires_grad=True)
    fixed = torch.rand(1, 1, 32, 32, requires_grad=True)
    net(moving, fixed).square().sum().backward()
    assert moving.grad.abs().sum() > 0 and fixed.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_matrix_net_refuses_a_bad_dimension_and_too_small_3d_images():
    with pytest.raises(ValueError, match="2D or 3D"):
        ConvolutionalMatrixNet(1)
    with pytest.raises(ValueError, match="at least 33 voxels"):
        ConvolutionalMatrixNet(3)(torch.rand(1, 1, 32, 40, 40), torch.rand(1, 1, 32, 40, 40))


def test_matrix_net_takes_multichannel_images_as_the_unet_does():
    net = ConvolutionalMatrixNet(2, input_channels=3)
    assert net.convs[0].weight.shape == (16, 6, 3, 3)
    assert net(torch.rand(1, 3, 20, 20), torch.rand(1, 3, 20, 20)).shape == (1, 3, 3)

"""Every flag of the published unigradicon-register 1.0.6, with its published meaning (issue 21,
part 3): masks and segmentations, input and loss masking, the Dice term, intensity
conservation, the CT window and the MRI quantile range, --io_lr, --network_weights and
--io_iterations 0. Small 2D images and a one-convolution network: seconds."""

import math
import re
import warnings

import pytest
import torch
from torch import nn

import itkdeepreg as idr
from itkdeepreg import losses
from itkdeepreg.cli import register
from itkdeepreg.cli._base import Parser, UsageError
from itkdeepreg.geometry import ImageGeometry
from itkdeepreg.methods import NetworkMethod, Pair, check_options
from itkdeepreg.models import DisplacementStep
from itkdeepreg.optimize import optimize_fields, optimize_weights
from itkdeepreg.zoo.preprocessing import (
    binarised,
    preprocess,
    preprocess_gradicon_brain,
    preprocess_gradicon_lung,
)

SHAPE = (24, 24)
SEEN = []  # the images the probe network was given (its copies share this list)


class Probe(nn.Module):
    """A displacement from one small convolution, recording what it sees."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.step = DisplacementStep(_Concatenated(nn.Conv2d(2, 2, 3, padding=1)))
        nn.init.normal_(self.step.net.conv.weight, std=1e-3)

    def forward(self, moving, fixed):
        SEEN.append((moving.detach().clone(), fixed.detach().clone()))
        return self.step(moving, fixed)


class _Concatenated(nn.Module):
    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, moving, fixed):
        return self.conv(torch.cat([moving, fixed], 1))


def disc(centre, radius, shape=SHAPE):
    grid = idr.identity_grid(shape)
    centre = torch.tensor(centre).reshape(1, 2, 1, 1)
    return ((grid - centre) ** 2).sum(1, keepdim=True).lt(radius**2).float()


def make_pair(**extras):
    """The same two noisy discs each time, with ``extras`` (masks, segmentations)."""
    noise = torch.rand(2, 1, 1, *SHAPE, generator=torch.Generator().manual_seed(0))
    moving = 100 * disc((0.55, 0.45), 0.25) + 10 * noise[0]
    fixed = 100 * disc((0.5, 0.5), 0.28) + 10 * noise[1]
    geometry = ImageGeometry(SHAPE)  # the size is ITK's (x, y): a square needs no care
    return Pair(moving, fixed, geometry, geometry, **extras)


@pytest.fixture
def method():
    SEEN.clear()
    return NetworkMethod(Probe(), SHAPE, placement="corners")


def run(method, pair, **options):
    SEEN.clear()  # SEEN[0]: (moving, fixed) as this run's network sees them
    check_options(method, options)
    return method(pair, progress=False, **options)


def parse(*arguments):
    parser = Parser(prog="itkdeepreg")
    register.add_parser(parser.add_subparsers())
    return parser.parse_args(["register", "--fixed", "f", "--moving", "m", *arguments])


# the flags


PUBLISHED = [
    *("--fixed_modality", "mri", "--moving_modality", "mri"),
    *("--fixed_mask", "fm.nii", "--moving_mask", "mm.nii", "--input_masking"),
    "--loss_function_masking",
    *("--fixed_segmentation", "fs.nii", "--moving_segmentation", "ms.nii"),
    *("--dice_loss_weight", "0.5", "--intensity_conservation_loss"),
    *("--ct_window", "-200", "300", "--quantile_range", "0.01", "0.95"),
    *("--transform_out", "t.h5", "--warped_moving_out", "w.nii"),
    *("--io_iterations", "50", "--io_lr", "2e-5", "--io_sim", "lncc2"),
    *("--model", "unigradicon", "--network_weights", "w.trch"),
]


def test_every_published_flag_is_accepted_with_its_meaning():
    args = parse(*PUBLISHED)
    assert (args.fixed_mask, args.moving_mask) == ("fm.nii", "mm.nii")
    assert (args.fixed_segmentation, args.moving_segmentation) == ("fs.nii", "ms.nii")
    assert (args.transform_out, args.warped_out, args.method) == ("t.h5", "w.nii", "unigradicon")
    assert register.register_options(args, "unigradicon") == {
        "fixed_modality": "mri",
        "moving_modality": "mri",
        "input_masking": True,
        "loss_masking": True,
        "dice_weight": 0.5,
        "intensity_conservation": True,
        "ct_window": (-200.0, 300.0),
        "quantile_range": (0.01, 0.95),
        "io_iterations": 50,
        "learning_rate": 2e-5,
        "similarity": "squared_lncc",
        "weights": "w.trch",
    }
    # the switches are off unless given, and leave the method's defaults
    plain = register.register_options(parse(), "unigradicon")
    assert plain == {}


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--io_iterations", "0"], "--io_iterations: 0: unigradicon-register refuses 0"),
        (["--io_lr", "0"], "takes numbers > 0, not 0"),
        (["--ct_window", "-1000"], "expected 2 arguments"),
        (["--quantile_range", "-0.1", "0.9"], "takes numbers >= 0, not -0.1"),
        (["--dice_loss_weight", "-1"], "takes numbers >= 0, not -1"),
        (["--input_masking", "true"], "unrecognized arguments: true"),
    ],
)
def test_published_values_refused_as_published(arguments, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        parse(*arguments)


def test_our_io_iterations_0_is_none_and_the_published_none_too():
    assert parse("--io-iterations", "0").io_iterations == 0
    assert parse("--io_iterations", "None").io_iterations is None


@pytest.mark.parametrize(
    "options, message",
    [
        ({"ct_window": (1000.0, -1000.0)}, "ct_window must be None or two numbers"),
        ({"quantile_range": (0.5, 0.5)}, "quantile_range must be None or two quantiles"),
        ({"quantile_range": (0.5, 1.5)}, "quantile_range must be None or two quantiles"),
        ({"learning_rate": 2e-5}, "io_kind and learning_rate must be 'weights'"),
        ({"dice_weight": -1}, "dice_weight must be a number >= 0"),
        ({"loss_masking": "yes"}, "loss_masking must be True or False"),
    ],
)
def test_bad_values_are_refused_before_any_work(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_options("unigradicon", options)


def test_io_lr_is_the_published_rate_of_the_weights():
    check_options("unigradicon", {"io_kind": "weights", "learning_rate": 2e-5})
    check_options("unigradicon", {"learning_rate": 0.05})  # fields: a step in field voxels


# the CT window and the MRI quantile range


def test_ct_window_scales_its_window_to_0_1():
    image = torch.tensor([-600.0, -500.0, 0.0, 250.0, 500.0, 700.0])
    expected = torch.tensor([0.0, 0.0, 0.5, 0.75, 1.0, 1.0])
    torch.testing.assert_close(preprocess(image, "ct", ct_window=(-500, 500)), expected)
    # the default is -1000 1000, and the lung model's -1000 0
    torch.testing.assert_close(preprocess(image, "ct")[2], torch.tensor(0.5))
    torch.testing.assert_close(preprocess_gradicon_lung(image, ct_window=(-500, 500)), expected)


def test_quantile_range_takes_the_published_quantiles():
    image = torch.arange(100.0).flip(0)  # 0 .. 99, in any order
    # the int(q n)-th smallest: 10th (9.0) and 50th (49.0)
    scaled = preprocess(image, "mri", quantile_range=(0.1, 0.5))
    torch.testing.assert_close(scaled[image == 29.0], torch.tensor([0.5]))
    assert scaled.min() == 0 and scaled.max() == 1
    assert (scaled[image <= 9] == 0).all() and (scaled[image >= 49] == 1).all()
    # the default: the minimum and the 0.99 quantile
    torch.testing.assert_close(
        preprocess(image, "mri"), preprocess(image, "mri", None, None, (0, 0.99))
    )
    with pytest.raises(ValueError, match="no intensity range to scale"):
        preprocess(torch.tensor([0.0] * 90 + [1.0] * 10), "mri", quantile_range=(0.1, 0.5))
    with pytest.raises(ValueError, match="scales by no quantiles"):
        preprocess_gradicon_brain(image, quantile_range=(0.1, 0.5))


def test_the_network_sees_the_windows_and_refuses_them_where_no_image_takes_them(method):
    pair = make_pair()
    run(method, pair, fixed_modality="ct", moving_modality="mri", ct_window=(0.0, 50.0))
    moving, fixed = SEEN[0]
    torch.testing.assert_close(fixed, preprocess(pair.fixed, "ct", ct_window=(0, 50)))
    torch.testing.assert_close(moving, preprocess(pair.moving, "mri"))
    with pytest.raises(ValueError, match="ct_window scales CT images, and neither image is CT"):
        run(method, pair, ct_window=(0.0, 50.0))
    with pytest.raises(ValueError, match="quantile_range scales MRI images"):
        run(method, pair, fixed_modality="ct", moving_modality="ct", quantile_range=(0, 0.5))


# masks and segmentations


def test_masks_and_labels_are_binarised_as_published():
    """The published code reads them as 16-bit integers: 0.5 is 0, -2 is outside."""
    values = torch.tensor([0.0, 0.5, 1.0, 1.5, -2.0, 7.0])
    torch.testing.assert_close(binarised(values), torch.tensor([0.0, 0, 1, 1, 0, 1]))
    torch.testing.assert_close(
        binarised(values.to(torch.int16)), torch.tensor([0.0, 0, 1, 1, 0, 1])
    )


def test_input_masking_multiplies_each_preprocessed_image_by_its_mask(method):
    fixed_mask, moving_mask = disc((0.5, 0.5), 0.3), 3 * disc((0.4, 0.4), 0.3)
    pair = make_pair(fixed_mask=fixed_mask, moving_mask=moving_mask)
    run(method, pair, input_masking=True)
    moving, fixed = SEEN[0]
    torch.testing.assert_close(fixed, preprocess(pair.fixed, "mri") * (fixed_mask > 0))
    torch.testing.assert_close(moving, preprocess(pair.moving, "mri") * (moving_mask > 0))


def test_masks_need_both_sides_and_without_a_flag_are_not_used(method):
    mask = disc((0.5, 0.5), 0.3)
    with pytest.raises(ValueError, match="need both a fixed and a moving mask"):
        run(method, make_pair(fixed_mask=mask), input_masking=True)
    with pytest.raises(ValueError, match="need both a fixed and a moving mask"):
        run(method, make_pair(moving_mask=mask), loss_masking=True, io_iterations=1)
    with pytest.warns(UserWarning, match="the masks are not used"):
        run(method, make_pair(fixed_mask=mask, moving_mask=mask))
    torch.testing.assert_close(SEEN[0][1], preprocess(make_pair().fixed, "mri"))


def test_segmentations_are_labels_and_both_without_masks_the_deprecated_masks(method):
    labels = 2 * disc((0.5, 0.5), 0.3)
    with pytest.raises(ValueError, match="segmentations for the Dice term"):
        run(method, make_pair(fixed_segmentation=labels))
    with pytest.raises(ValueError, match="needs both a fixed and a moving segmentation"):
        run(method, make_pair(fixed_segmentation=labels), dice_weight=1.0)
    # the published fallback: input masking by the segmentations, with a DeprecationWarning
    pair = make_pair(fixed_segmentation=labels, moving_segmentation=labels)
    with pytest.warns(DeprecationWarning, match="segmentations used as masks"):
        run(method, pair)
    torch.testing.assert_close(SEEN[0][1], preprocess(pair.fixed, "mri") * (labels > 0))
    # with loss masking asked, the inputs stay whole
    with pytest.warns(DeprecationWarning):
        run(method, pair, loss_masking=True)
    torch.testing.assert_close(SEEN[0][1], preprocess(pair.fixed, "mri"))
    # with the Dice term, they are labels and mask nothing
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(method, pair, dice_weight=1.0)
    torch.testing.assert_close(SEEN[0][1], preprocess(pair.fixed, "mri"))


def test_loss_masking_compares_each_direction_on_its_target_mask():
    moving, fixed = disc((0.55, 0.45), 0.25), disc((0.5, 0.5), 0.28)
    shift = idr.Affine(torch.tensor([[1.0, 0, 0.05], [0, 1, 0], [0, 0, 1]]))
    forward, backward = shift, shift.inverse()
    fixed_mask, moving_mask = disc((0.5, 0.5), 0.35), disc((0.3, 0.6), 0.3)
    masked = losses.pair_similarity(
        forward, backward, moving, fixed, losses.mse, fixed_mask=fixed_mask, moving_mask=moving_mask
    )
    # the fixed mask on the fixed side alone, the moving mask on the moving side alone (not
    # the product of a mask and the other carried across, as optimization methods do)
    expected = losses.mse(forward.warp(moving), fixed, mask=fixed_mask) + losses.mse(
        backward.warp(fixed), moving, mask=moving_mask
    )
    torch.testing.assert_close(masked, expected)
    # what lies outside the masks does not count
    identity, inside = idr.Affine.identity(2), disc((0.5, 0.5), 0.3)
    noise = 5 * torch.rand(2, 1, 1, *SHAPE) * (1 - inside)
    masks = {"fixed_mask": inside, "moving_mask": inside}
    clean = losses.pair_similarity(identity, identity, moving, fixed, losses.mse, **masks)
    noisy = losses.pair_similarity(
        identity, identity, moving + noise[0], fixed + noise[1], losses.mse, **masks
    )
    torch.testing.assert_close(clean, noisy)
    unmasked = losses.pair_similarity(identity, identity, moving + noise[0], fixed, losses.mse)
    assert unmasked > clean


@pytest.mark.parametrize("io_kind", ["fields", "weights"])
def test_the_network_hands_its_masks_and_labels_to_instance_optimization(
    method, io_kind, monkeypatch
):
    from itkdeepreg import methods

    given = {}
    real = {"fields": optimize_fields, "weights": optimize_weights}[io_kind]

    def spy(*arguments, **options):
        given.update(options)
        return real(*arguments, **options)

    monkeypatch.setattr(methods, f"optimize_{io_kind}", spy)
    fixed_mask, moving_mask = -3 * disc((0.5, 0.5), 0.3), disc((0.4, 0.4), 0.3)
    labels = 4 * disc((0.5, 0.5), 0.3) + disc((0.2, 0.2), 0.1)
    pair = make_pair(
        fixed_mask=fixed_mask,
        moving_mask=moving_mask,
        fixed_segmentation=labels,
        moving_segmentation=labels,
    )
    rate = 1e-3 if io_kind == "weights" else 0.05
    result = run(
        method, pair, io_iterations=2, io_kind=io_kind, learning_rate=rate, loss_masking=True,
        dice_weight=2.0, similarity="mse",
    )  # fmt: skip
    assert len(result.losses) == 2 and all(math.isfinite(v) for v in result.losses)
    # the loss masks count where the mask is non-zero (the published masked mean)
    torch.testing.assert_close(given["fixed_mask"], (fixed_mask != 0).float())
    torch.testing.assert_close(given["moving_mask"], (moving_mask != 0).float())
    torch.testing.assert_close(given["fixed_labels"], labels)
    assert given["dice_weight"] == 2.0 and given["intensity_conservation"] is False


# the Dice term


def test_the_dice_term_is_one_minus_soft_dice_over_the_shared_labels():
    identity = idr.Affine.identity(2)
    fixed = disc((0.5, 0.5), 0.3) + 2 * disc((0.2, 0.2), 0.1)  # labels 1 and 2
    moving = disc((0.5, 0.5), 0.3) + 3 * disc((0.8, 0.8), 0.1)  # labels 1 and 3: 1 shared
    assert losses.dice_term(identity, identity, fixed, fixed).item() == pytest.approx(0, abs=1e-6)
    # label 1 alone counts: disc 1 of each map against disc 1 of the other
    one_f, one_m = (fixed == 1).float(), (moving == 1).float()
    dice = 2 * (one_f * one_m).sum() / (one_f.sum() + one_m.sum())
    expected = 2 * (1 - dice)  # both directions
    assert losses.dice_term(identity, identity, moving, fixed).item() == pytest.approx(
        expected.item(), abs=1e-5
    )
    apart = disc((0.2, 0.2), 0.1)
    assert losses.dice_term(
        identity, identity, apart, disc((0.8, 0.8), 0.1)
    ).item() == pytest.approx(2, abs=1e-5)
    with pytest.raises(ValueError, match="share no non-zero label"):
        losses.dice_term(identity, identity, 2 * apart, apart)


def test_the_dice_term_pulls_the_labels_together():
    moving, fixed = disc((0.58, 0.42), 0.22), disc((0.5, 0.5), 0.22)
    identity = idr.Affine.identity(2)
    flat_moving, flat_fixed = torch.zeros_like(moving), torch.zeros_like(fixed)
    flat_moving[..., 0, 0] = flat_fixed[..., 0, 0] = 1  # no image to align: the labels only
    options = {"iterations": 15, "learning_rate": 0.2, "similarity": losses.mse, "progress": False}
    result = optimize_fields(
        identity, identity, flat_moving, flat_fixed, fixed_labels=fixed, moving_labels=moving,
        dice_weight=5.0, **options,
    )  # fmt: skip
    before = losses.dice_term(identity, identity, moving, fixed).item()
    after = losses.dice_term(result.forward, result.backward, moving, fixed).item()
    assert after < 0.7 * before


# intensity conservation


def test_volume_change_is_the_forward_difference_jacobian():
    identity = idr.Affine.identity(2, torch.float64)
    torch.testing.assert_close(
        losses.volume_change(identity, (5, 7)), torch.ones(1, 1, 4, 6, dtype=torch.float64)
    )
    scale = idr.Affine(torch.diag(torch.tensor([2.0, 0.5, 1.0], dtype=torch.float64)))
    torch.testing.assert_close(
        losses.volume_change(scale, (5, 7)), torch.ones(1, 1, 4, 6, dtype=torch.float64)
    )
    stretch = idr.Affine(torch.diag(torch.tensor([2.0, 1.5, 3.0, 1.0], dtype=torch.float64)))
    assert torch.allclose(
        losses.volume_change(stretch, (3, 4, 5)), torch.tensor(9.0, dtype=torch.float64)
    )


def test_intensity_conservation_compares_the_warped_image_times_its_volume_change(method):
    moving, fixed = disc((0.55, 0.45), 0.25), disc((0.5, 0.5), 0.28)
    squeeze = idr.Affine(torch.diag(torch.tensor([0.8, 0.9, 1.0])))
    conserved = losses.pair_similarity(
        squeeze, squeeze.inverse(), moving, fixed, losses.mse, intensity_conservation=True
    )
    crop = (..., slice(None, -1), slice(None, -1))
    expected = losses.mse(
        squeeze.warp(moving, padding="zeros")[crop] * 0.72, fixed[crop]
    ) + losses.mse(squeeze.inverse().warp(fixed, padding="zeros")[crop] / 0.72, moving[crop])
    torch.testing.assert_close(conserved, expected)
    with pytest.raises(ValueError, match="intensity_conservation needs two CT images"):
        run(method, make_pair(), intensity_conservation=True)
    run(method, make_pair(), fixed_modality="ct", moving_modality="ct", intensity_conservation=True,
        io_iterations=1)  # fmt: skip


# a published command line, whole


def test_a_published_command_line_registers(tmp_path):
    import itk

    from itkdeepreg.cli import main
    from itkdeepreg.interop import tensor_to_image
    from itkdeepreg.zoo import OWN_MODELS_FOLDER

    shape, geometry = (40, 40), ImageGeometry((40, 40), spacing=(2.0, 2.0))
    paths = {}
    for name, centre in (("fixed", (0.5, 0.5)), ("moving", (0.55, 0.45))):
        labels = disc(centre, 0.3, shape) + disc(centre, 0.12, shape)  # labels 1 and 2
        images = {
            name: 100 * labels
            + torch.rand(1, 1, *shape, generator=torch.Generator().manual_seed(0)),
            f"{name}_segmentation": labels,
            f"{name}_mask": disc(centre, 0.4, shape),
        }
        for key, image in images.items():
            paths[key] = str(tmp_path / f"{key}.nii.gz")
            itk.imwrite(tensor_to_image(image, geometry, itk.F), paths[key])
    weights = f"{OWN_MODELS_FOLDER}/synth-gradicon-2d/weights.pt"
    transform, warped = tmp_path / "t.h5", tmp_path / "w.nii.gz"
    # instance optimization is left out (a minute on a busy CPU; tested above): the masks and
    # segmentations are read, checked and mask the inputs as the published command does
    arguments = [
        *("register", "--fixed", paths["fixed"], "--moving", paths["moving"], "--quiet"),
        *("--model", "synth-gradicon-2d", "--network_weights", weights),
        *("--fixed_modality", "mri", "--moving_modality", "mri"),
        *("--fixed_mask", paths["fixed_mask"], "--moving_mask", paths["moving_mask"]),
        *("--input_masking", "--loss_function_masking"),
        *("--fixed_segmentation", paths["fixed_segmentation"]),
        *("--moving_segmentation", paths["moving_segmentation"], "--dice_loss_weight", "0.5"),
        *("--quantile_range", "0.01", "0.99", "--io_iterations", "None"),
        *("--io_lr", "0.05", "--io_sim", "lncc"),
        *("--transform_out", str(transform), "--warped_moving_out", str(warped)),
    ]
    assert main(arguments) == 0
    assert transform.is_file() and warped.is_file()
    # the published 0 is refused, in one line, before any work
    assert main([*arguments[:-4], "--io_iterations", "0", "--transform_out", "x.h5"]) == 2

"""Method options are checked before any work: one ValueError line naming the option, the
value and what it must be (issue 24, item 5)."""

import math
import subprocess
import sys

import itk
import numpy as np
import pytest
import torch

import itkdeepreg as idr
from itkdeepreg import methods, registration
from itkdeepreg.methods import Pair, check_options, register_method, run_method

FINDINGS = [
    dict(levels=(0, 0, 0)),  # a ZeroDivisionError deep in the pyramid before
    dict(field_factor=0),  # the same, on the field's grid
    dict(iterations=(-1, -1, -1)),  # "succeeded" with no step taken
]


def blobs(size=12):
    y, x = np.mgrid[:size, :size]
    images = [np.exp(-((x - c) ** 2 + (y - size / 2) ** 2) / 8.0) for c in (5, 6)]
    return [itk.image_from_array(a.astype(np.float32)) for a in images]


@pytest.fixture
def no_work(monkeypatch):
    """Every registration function, and the ITK face's image conversion, fail if reached."""

    def work(*args, **kwargs):
        raise AssertionError("the work started")

    for name in ("register_affine", "register_deformable"):
        monkeypatch.setattr(methods, name, work)
    monkeypatch.setattr("itkdeepreg.optimize.nephi.register_nephi", work)
    monkeypatch.setattr(registration, "image_to_tensor", work)


def tiny_pair(size=12):
    fixed, moving = (torch.from_numpy(itk.array_from_image(i))[None, None] for i in blobs(size))
    geometry = idr.ImageGeometry((size, size))
    return Pair(moving, fixed, geometry, geometry)


def one_line(error, *words):
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


@pytest.mark.parametrize("options", FINDINGS, ids=lambda o: next(iter(o)))
def test_the_findings_are_refused_before_any_work_by_the_itk_face(options, no_work):
    fixed, moving = blobs()
    method = itk.DeepRegistrationMethod.New(fixed_image=fixed, moving_image=moving)
    method.SetMethod("deformable")
    method.SetMethodOptions(options)
    with pytest.raises(ValueError) as error:
        method.Update()
    [(name, value)] = options.items()
    one_line(error, f"{name} must be", repr(value))
    with pytest.raises(ValueError, match=f"^{name} must be"):
        idr.deep_registration_method(fixed, moving, method="deformable", method_options=options)


def test_the_command_line_refuses_a_finding_in_one_line(tmp_path):
    for name, image in zip(("fixed", "moving"), blobs()):
        itk.imwrite(image, str(tmp_path / f"{name}.nii.gz"))
    transform = tmp_path / "T.h5"
    command = [sys.executable, "-m", "itkdeepreg.cli", "register"]
    command += [
        "--fixed",
        str(tmp_path / "fixed.nii.gz"),
        "--moving",
        str(tmp_path / "moving.nii.gz"),
    ]
    command += ["--method", "deformable", "--option", "levels=(0,0,0)"]
    command += ["--transform-out", str(transform), "--quiet"]
    run = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode in (1, 2)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("itkdeepreg: error: "), run.stderr
    assert "levels must be" in lines[0] and "(0, 0, 0)" in lines[0]
    assert "Traceback" not in run.stderr and not transform.exists()


NAN = math.nan
# (method, options, what the message names): one bad value of every option of the methods
BAD = [
    ("deformable", dict(similarity="nope"), "similarity"),
    ("deformable", dict(similarity=3), "similarity"),
    ("deformable", dict(parameterization="bspline"), "parameterization"),
    ("deformable", dict(symmetric="yes"), "symmetric"),
    ("deformable", dict(regularization={"diffusion": -1}), "regularization"),
    ("deformable", dict(regularization={"elastic": 1.0}), "regularization"),
    ("deformable", dict(regularization=[0.1]), "regularization"),
    ("deformable", dict(regularization={"gradicon": 1.5}), "symmetric=True"),
    ("deformable", dict(levels=4), "levels"),
    ("deformable", dict(levels=()), "levels"),
    ("deformable", dict(levels=(4, "2", 1)), "levels"),
    ("deformable", dict(levels=(NAN, 2, 1)), "levels"),
    ("deformable", dict(levels=(4, 2)), "levels and iterations"),
    ("deformable", dict(iterations=50), "iterations"),
    ("deformable", dict(iterations=(1.5, 1, 1)), "iterations"),
    ("deformable", dict(learning_rate=0), "learning_rate"),
    ("deformable", dict(learning_rate="0.1"), "learning_rate"),
    ("deformable", dict(decay_to=-0.1), "decay_to"),
    ("deformable", dict(decay_to=2), "decay_to"),
    ("deformable", dict(field_factor=0.5), "field_factor"),
    ("deformable", dict(smoothing=-1), "smoothing"),
    ("deformable", dict(seed=1.5), "seed"),
    ("deformable", dict(device="gpu"), "device"),
    ("deformable", dict(progress="no"), "progress"),
    ("affine", dict(similarity="nope"), "similarity"),
    ("affine", dict(initialization="random"), "initialization"),
    ("affine", dict(levels=(0, 0, 0)), "levels"),
    ("affine", dict(iterations=(-1, -1, -1)), "iterations"),
    ("affine", dict(levels=(2, 1), iterations=(5,)), "levels and iterations"),
    ("affine", dict(learning_rate=-0.01), "learning_rate"),
    ("affine", dict(device=3.5), "device"),
    ("affine", dict(progress=None), "progress"),
    ("rigid", dict(levels=(0, 0, 0)), "levels"),
    ("translation", dict(iterations=(-1, -1, -1)), "iterations"),
    ("affine-deformable", dict(multimodal="yes"), "multimodal"),
    ("affine-deformable", dict(affine=[1]), "affine"),
    ("affine-deformable", dict(deformable="fast"), "deformable"),
    ("affine-deformable", dict(affine={"levels": (0, 0, 0)}), "affine: levels"),
    ("affine-deformable", dict(deformable={"field_factor": 0}), "deformable: field_factor"),
    (
        "affine-deformable",
        dict(deformable={"bogus": 1}),
        "deformable: the method deformable takes no option bogus",
    ),
    # multimodal's affine stage has two levels: three iteration counts do not fit them
    ("affine-deformable", dict(multimodal=True, affine={"iterations": (9, 9, 9)}), "affine: "),
    ("affine-deformable", dict(device="gpu"), "device"),
    ("affine-deformable", dict(progress=1), "progress"),
    ("nephi", dict(similarity="lncc"), "similarity"),
    ("nephi", dict(iterations=0), "iterations"),
    ("nephi", dict(iterations=(1,)), "iterations"),
    ("nephi", dict(learning_rate=0), "learning_rate"),
    ("nephi", dict(points=1.5), "points"),
    ("nephi", dict(weight=-1), "weight"),
    ("nephi", dict(seed=-1), "seed"),
    ("nephi", dict(device="gpu"), "device"),
    ("nephi", dict(progress="yes"), "progress"),
]


def test_the_sweep_covers_every_option():
    for method in ("deformable", "affine", "affine-deformable", "nephi"):
        swept = {name for m, options, _ in BAD if m == method for name in options}
        assert swept == methods.method_options(method), method


@pytest.mark.parametrize("method, options, named", BAD, ids=lambda v: str(v))
def test_a_bad_value_is_refused_before_any_work(method, options, named, no_work):
    with pytest.raises(ValueError) as error:
        run_method(method, tiny_pair(), **options)
    message = one_line(error, named)
    if named in options:  # one option alone: the message shows its value
        assert f"got {options[named]!r}" in message


@pytest.mark.parametrize(
    "options, named",
    [
        (dict(io_iterations=-1), "io_iterations"),
        (dict(io_kind="everything"), "io_kind"),
        (dict(fixed_modality="pet"), "fixed_modality"),
        (dict(moving_modality=1), "moving_modality"),
        (dict(weights="no such file.pt"), "weights"),
        (dict(similarity="nope"), "similarity"),
        (dict(learning_rate=0), "learning_rate"),
        (dict(device="gpu"), "device"),
    ],
)
def test_network_options_are_checked_without_loading_a_network(options, named):
    with pytest.raises(ValueError, match=f"^{named} must"):
        check_options("unigradicon", options)


def test_valid_options_pass_and_the_defaults_run():
    valid = [
        ("deformable", dict(levels=[2, 1], iterations=[3, 3], symmetric=True)),
        ("deformable", dict(regularization={"gradicon": 1.5, "icon": 0}, symmetric=True)),
        ("deformable", dict(levels=(1.5,), iterations=(1,), field_factor=1, decay_to=0)),
        ("affine", dict(similarity=idr.losses.mse, levels=(np.int64(2),), iterations=(1,))),
        ("affine-deformable", dict(multimodal=True, affine={"iterations": (1, 1)})),
        ("nephi", dict(iterations=np.int64(3), weight=0, device=torch.device("cpu"))),
        ("unigradicon", dict(io_iterations=0, io_kind="weights", learning_rate=None)),
    ]
    for method, options in valid:
        check_options(method, options)
    one = dict(levels=(1,), iterations=(1,), progress=False)
    for method, options in [
        ("affine", one),
        ("deformable", one),
        ("affine-deformable", dict(affine=one, deformable=one, progress=False)),
        ("nephi", dict(iterations=1, points=64, progress=False)),
    ]:
        result = run_method(method, tiny_pair(), **options)
        assert result.losses, method


def test_a_method_without_a_table_takes_any_value():
    def mine(pair, anything=-1, **rest):
        return run_method("affine", pair, levels=(1,), iterations=(1,), progress=False)

    register_method("test-bad-options-mine", mine)
    try:
        run_method("test-bad-options-mine", tiny_pair(), anything=(0, 0, 0), levels=(0, 0))
    finally:
        methods._METHODS.pop("test-bad-options-mine")

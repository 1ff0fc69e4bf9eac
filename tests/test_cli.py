"""The itkdeepreg command: register, warp, jacobian, demo, elastix-like runs and apply."""

import re
import subprocess
import sys
from pathlib import Path

import itk
import numpy as np
import pytest
import torch

import itkdeepreg as idr
from itkdeepreg import cli
from itkdeepreg.cli import main
from itkdeepreg.data.brain_pairs import brain_pair
from itkdeepreg.interop import InverseConsistentTransform, read_transform, tensor_to_image
from itkdeepreg.parameter_files import step_parameters, write_parameter_file
from itkdeepreg.registration import DeepRegistrationMethod

QUICK = ["--method", "deformable", "--option", "iterations=(20,20,5)", "--quiet"]
OUTPUTS = {
    "--transform-out": "transform.h5",
    "--inverse-out": "inverse.h5",
    "--warped-out": "warped.nii.gz",
    "--field-out": "field.nii.gz",
    "--jacobian-out": "jacobian.nii.gz",
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The 2D brain pair and the moving labels as files, and one register run on them."""
    folder = tmp_path_factory.mktemp("cli")
    pair = brain_pair(0, dimension=2)
    fixed, moving = pair.itk_images()
    paths = {name: str(folder / f"{name}.nii.gz") for name in ("fixed", "moving", "labels")}
    itk.imwrite(fixed, paths["fixed"])
    itk.imwrite(moving, paths["moving"])
    labels = tensor_to_image(pair.moving_labels.float(), pair.fixed_geometry, itk.UC)
    itk.imwrite(labels, paths["labels"])
    outputs = {flag: str(folder / name) for flag, name in OUTPUTS.items()}
    arguments = ["register", "--fixed", paths["fixed"], "--moving", paths["moving"], *QUICK]
    for flag, path in outputs.items():
        arguments += [flag, path]
    assert main(arguments) == 0
    return paths, outputs


def array(path):
    return itk.array_from_image(itk.imread(str(path)))


def one_error_line(capsys):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("itkdeepreg: error: "), err
    return lines[0]


def preimage_inside(transform_path, fixed_path, moving_path):
    """Fixed voxels that the transform file maps inside the moving image."""
    fixed, moving = itk.imread(fixed_path), itk.imread(moving_path)
    forward = read_transform(transform_path, fixed, moving)
    shape = itk.array_view_from_image(fixed).shape
    mapped = forward(idr.identity_grid(shape, dtype=torch.float64))[0]
    return ((mapped >= 0) & (mapped <= 1)).all(0).numpy()


def test_register_writes_every_output_on_the_fixed_grid(files):
    paths, outputs = files
    fixed = itk.imread(paths["fixed"])
    field = itk.ImageFileReader[itk.VectorImage[itk.D, 2]].New(FileName=outputs["--field-out"])
    field.Update()
    for image in (itk.imread(outputs[f]) for f in ("--warped-out", "--jacobian-out")):
        assert tuple(image.GetLargestPossibleRegion().GetSize()) == tuple(itk.size(fixed))
        assert np.allclose(image.GetOrigin(), fixed.GetOrigin())
    assert field.GetOutput().GetNumberOfComponentsPerPixel() == 2
    assert np.allclose(field.GetOutput().GetOrigin(), fixed.GetOrigin())
    transform = InverseConsistentTransform.Read(
        outputs["--transform-out"], fixed, itk.imread(paths["moving"]), outputs["--inverse-out"]
    )
    point = (0.0, -20.0)
    back = transform.GetInverseTransform().TransformPoint(transform.TransformPoint(point))
    # 0.1 voxel (2 mm): both files are fields sampled at voxels and linear between them; over
    # the slice their round trip was 0.035 mm on average, 0.21 mm at most
    assert np.allclose(back, point, atol=0.2)
    assert array(outputs["--jacobian-out"]).min() > 0  # no folds


def test_warp_reproduces_the_warped_image(files, tmp_path):
    paths, outputs = files
    out = tmp_path / "warped_again.nii.gz"
    arguments = ["warp", "--fixed", paths["fixed"], "--moving", paths["moving"]]
    assert main([*arguments, "--transform", outputs["--transform-out"], "--out", str(out)]) == 0
    # ITK and torch differ only where the map leaves the moving image (their edge rules)
    inside = preimage_inside(outputs["--transform-out"], paths["fixed"], paths["moving"])
    assert inside.mean() > 0.9
    difference = np.abs(array(out) - array(outputs["--warped-out"]))
    assert difference[inside].max() < 1e-4


def test_jacobian_of_the_file_equals_the_written_jacobian(files, tmp_path):
    paths, outputs = files
    out = tmp_path / "jacobian_again.nii.gz"
    arguments = ["jacobian", "--fixed", paths["fixed"], "--moving", paths["moving"]]
    assert main([*arguments, "--transform", outputs["--transform-out"], "--out", str(out)]) == 0
    assert np.abs(array(out) - array(outputs["--jacobian-out"])).max() < 1e-4


def test_warp_label_keeps_exactly_the_label_set(files, tmp_path):
    paths, outputs = files
    arguments = ["warp", "--fixed", paths["fixed"], "--moving", paths["labels"]]
    arguments += ["--transform", outputs["--transform-out"]]
    label, nearest = tmp_path / "label.nii.gz", tmp_path / "nearest.nii.gz"
    assert main([*arguments, "--out", str(label), "--interpolation", "label"]) == 0
    assert main([*arguments, "--out", str(nearest), "--interpolation", "nearest"]) == 0
    labels, warped = array(paths["labels"]), itk.imread(str(label))
    assert itk.template(warped)[1][0] is itk.UC  # the input's pixel type
    assert set(np.unique(itk.array_from_image(warped))) == set(np.unique(labels))
    assert (itk.array_from_image(warped) == array(nearest)).mean() > 0.95


def test_published_flags(files, tmp_path):
    paths, _ = files
    published = ["--fixed", paths["fixed"], "--moving", paths["moving"], "--model", "deformable"]
    transform, warped = tmp_path / "t.h5", tmp_path / "w.nii.gz"
    arguments = ["register", *published, "--io_iterations", "None", "--io_sim", "lncc2"]
    arguments += ["--option", "iterations=(5,5,2)", "--quiet"]
    arguments += ["--transform_out", str(transform), "--warped_moving_out", str(warped)]
    assert main(arguments) == 0
    assert transform.is_file() and warped.is_file()


def test_instance_optimization_steps_are_refused_for_methods_without_it(files, tmp_path, capsys):
    paths, _ = files
    arguments = ["register", "--fixed", paths["fixed"], "--moving", paths["moving"]]
    arguments += ["--model", "deformable", "--io_iterations", "5"]
    assert main([*arguments, "--transform_out", str(tmp_path / "t.h5")]) == 2
    assert "no instance optimization" in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_initial_transform_is_where_the_registration_starts(files, tmp_path):
    paths, _ = files
    initial = itk.TranslationTransform[itk.D, 2].New()
    initial.SetOffset([3.0, -2.0])
    itk.transformwrite([initial], str(tmp_path / "initial.tfm"))
    out = tmp_path / "t.h5"
    arguments = ["register", "--fixed", paths["fixed"], "--moving", paths["moving"]]
    arguments += ["--method", "deformable", "--initial-transform", str(tmp_path / "initial.tfm")]
    arguments += ["--option", "iterations=(1,)", "--option", "levels=(1,)", "--quiet"]
    assert main([*arguments, "--learning-rate", "1e-9", "--transform-out", str(out)]) == 0
    read = InverseConsistentTransform.Read(
        str(out), itk.imread(paths["fixed"]), itk.imread(paths["moving"])
    )
    assert np.allclose(read.TransformPoint((0.0, -20.0)), (3.0, -22.0), atol=1e-3)


@pytest.mark.parametrize(
    "mistake, code, words",
    [
        ("missing input", 1, "no such file"),
        ("unreadable input", 1, "cannot read"),
        ("truncated input", 1, "truncated gzip"),
        ("unknown method", 2, "unknown method"),
        ("option not taken", 2, "takes no option"),
        ("bad suffix", 2, "must end in"),
        ("missing folder", 1, "not a writable directory"),
        ("no output", 2, "writes nothing"),
    ],
)
def test_mistakes_are_one_line_and_leave_nothing(
    files, tmp_path, capsys, monkeypatch, mistake, code, words
):
    def fail(self):
        raise AssertionError("the registration started")

    monkeypatch.setattr(DeepRegistrationMethod, "Update", fail)  # found before any work
    paths, outputs = files
    fixed, moving, method = paths["fixed"], paths["moving"], "deformable"
    output = ["--transform-out", str(tmp_path / "t.h5")]
    option = []
    if mistake == "missing input":
        moving = str(tmp_path / "nothing.nii.gz")
    elif mistake == "unreadable input":
        moving = outputs["--transform-out"]  # a transform, not an image
    elif mistake == "truncated input":  # ITK alone reads the missing voxels as zeros
        content = Path(paths["moving"]).read_bytes()
        moving = str(Path(paths["moving"]).with_name("truncated.nii.gz"))
        Path(moving).write_bytes(content[: len(content) // 2])
    elif mistake == "unknown method":
        method = "unigradicn"
    elif mistake == "option not taken":
        option = ["--option", "window=3"]
    elif mistake == "bad suffix":
        output = ["--warped-out", str(tmp_path / "warped.png")]
    elif mistake == "missing folder":
        output = ["--transform-out", str(tmp_path / "no" / "t.h5")]
    elif mistake == "no output":
        output = []
    arguments = ["register", "--fixed", fixed, "--moving", moving, "--method", method]
    assert main([*arguments, *option, *output]) == code
    assert words in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_warp_and_jacobian_mistakes(files, tmp_path, capsys):
    paths, _ = files
    common = ["--fixed", paths["fixed"], "--moving", paths["moving"]]
    missing = ["--transform", str(tmp_path / "none.h5"), "--out", str(tmp_path / "o.nii.gz")]
    assert main(["warp", *common, *missing]) == 1
    assert "no such file" in one_error_line(capsys)
    not_a_transform = ["--transform", paths["fixed"], "--out", str(tmp_path / "o.nii.gz")]
    assert main(["jacobian", *common, *not_a_transform]) == 1
    one_error_line(capsys)
    assert main(["warp", *common, "--transform", paths["fixed"]]) == 2  # no --out
    assert "required" in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_demo_writes_every_file_and_registers(tmp_path, capsys):
    out = tmp_path / "demo"  # created
    assert main(["demo", "--dimension", "2", "--out", str(out), "--quiet"]) == 0
    assert {p.name for p in out.iterdir()} == {
        "fixed.nii.gz",
        "moving.nii.gz",
        "transform.h5",
        "inverse.h5",
        "warped.nii.gz",
        "displacement.nii.gz",
        "jacobian.nii.gz",
        "figure.png",
    }
    text = capsys.readouterr().out
    rows = {
        m.group(1): [float(v) for v in m.groups()[1:]]
        for m in re.finditer(r"^(identity|registered)\s+(\S+)\s+(\S+)\s+(\S+)$", text, re.MULTILINE)
    }
    assert rows["registered"][0] > rows["identity"][0]  # Dice
    assert rows["registered"][1] < rows["identity"][1]  # end-point error (mm)
    assert rows["registered"][2] == 0  # folds (%)
    assert re.search(r"registered in \d+\.\d s", text)


def test_elastix_like_run_and_apply(files, tmp_path, capsys):
    paths, _ = files
    elastix = dict(itk.ParameterObject.New().GetDefaultParameterMap("affine", 1))
    elastix = {key: list(values) for key, values in elastix.items()}
    elastix["MaximumNumberOfIterations"] = ["30"]
    write_parameter_file(elastix, tmp_path / "affine.txt")
    ours = step_parameters("deformable", levels=(2, 1), iterations=(10, 10))
    write_parameter_file(ours, tmp_path / "deep.txt")
    out = tmp_path / "out"
    arguments = ["-f", paths["fixed"], "-m", paths["moving"], "-out", str(out), "--quiet"]
    arguments += ["-p", str(tmp_path / "affine.txt"), "-p", str(tmp_path / "deep.txt")]
    assert main(arguments) == 0
    assert {p.name for p in out.iterdir()} == {
        "result.nii.gz",
        "TransformParameters.0.txt",
        "TransformParameters.0_field.nii.gz",
        "transform.h5",
        "inverse.h5",
        "elastix.log",  # the elastix step's own log, as elastix writes it into -out
    }
    applied = tmp_path / "applied"
    parameters = str(out / "TransformParameters.0.txt")
    assert main(["apply", "-in", paths["moving"], "-tp", parameters, "-out", str(applied)]) == 0
    inside = preimage_inside(str(out / "transform.h5"), paths["fixed"], paths["moving"])
    difference = np.abs(array(applied / "result.nii.gz") - array(out / "result.nii.gz"))
    assert difference[inside].max() < 1e-4

    capsys.readouterr()
    wrong = {"Registration": "DeepRegistration", "Model": "deformable", "FixedModality": "CT"}
    write_parameter_file(wrong, tmp_path / "wrong.txt")
    arguments = ["-f", paths["fixed"], "-m", paths["moving"], "-out", str(tmp_path / "none")]
    assert main([*arguments, "-p", str(tmp_path / "wrong.txt")]) == 1
    assert "wrong.txt:3: the method deformable takes no FixedModality" in one_error_line(capsys)
    assert not (tmp_path / "none").exists()


def test_help_of_every_command(capsys):
    for command in ([], ["register"], ["warp"], ["jacobian"], ["demo"], ["apply"]):
        assert main([*command, "--help"]) == 0
        assert "usage: itkdeepreg" in capsys.readouterr().out
    assert main(["-f", "a", "--help"]) == 0  # the elastix-like form
    assert "-fMask" in capsys.readouterr().out
    assert main([]) == 2
    one_error_line(capsys)


def test_the_command_runs_as_a_program():
    result = subprocess.run(
        [sys.executable, "-m", "itkdeepreg.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0
    assert all(command in result.stdout for command in cli.COMMANDS)

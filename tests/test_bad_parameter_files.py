"""Every parameter file of a pipeline is read and checked before the first step runs: a file
that holds no parameters, and an elastix map with a key elastix does not read, are refused."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import itk
import numpy as np
import pytest

from itkdeepreg import pipeline
from itkdeepreg.cli import main
from itkdeepreg.parameter_files import (
    ParameterFileError,
    check_elastix_map,
    is_elastix_key,
    parameter_text,
    parse_parameter_text,
    read_parameter_file,
    step_parameters,
    write_parameter_file,
)
from itkdeepreg.pipeline import ElastixStep, MethodStep, read_pipeline, run_pipeline

KINDS = ("translation", "rigid", "affine", "bspline", "spline", "groupwise")


def affine_map():
    default = itk.ParameterObject.New().GetDefaultParameterMap("affine", 1)
    return {key: list(values) for key, values in dict(default).items()}


def affine_text_with(entry):
    """The default affine map with ``entry`` as line 2 (line 1 is a comment)."""
    return "// elastix affine\n" + entry + "\n" + parameter_text(affine_map())


# each finding as the second file: its name, text, and what the one-line error must say
BAD = {
    "empty": ("", r"empty\.txt: holds no parameters"),
    "comments": ("// only comments\n\n   // here\n", r"comments\.txt: holds no parameters"),
    "iteration": (
        affine_text_with("(MaximumNumberOfIteration 200)"),
        r"iteration\.txt:2: unknown elastix key MaximumNumberOfIteration; did you mean "
        + r"MaximumNumberOfIterations\?",
    ),
    "metrik": (
        affine_text_with('(Metrik "AdvancedMattesMutualInformation")'),
        r"metrik\.txt:2: unknown elastix key Metrik; did you mean Metric\?",
    ),
}


@pytest.fixture
def files(tmp_path):
    """Small images, a real first step and every bad file, in tmp_path."""
    rng = np.random.default_rng(0)
    for name in ("fixed", "moving"):
        image = itk.image_from_array(rng.random((16, 16)).astype(np.float32))
        itk.imwrite(image, str(tmp_path / f"{name}.nii.gz"))
    first = step_parameters("deformable", levels=(1,), iterations=(2,))
    write_parameter_file(first, tmp_path / "first.txt")
    for name, (text, _) in BAD.items():
        (tmp_path / f"{name}.txt").write_text(text)
    return tmp_path


@pytest.fixture
def steps_run(monkeypatch):
    """The steps that ran: a step that runs fails the test."""
    ran = []

    def run(step, *args):
        ran.append(step)
        raise AssertionError(f"a step ran before the pipeline was checked: {step!r}")

    monkeypatch.setattr(pipeline, "_run", run)
    return ran


@pytest.mark.parametrize("name", BAD)
def test_read_pipeline_refuses_the_second_file(files, name):
    with pytest.raises(ParameterFileError, match=BAD[name][1]):
        read_pipeline([files / "first.txt", files / f"{name}.txt"])


@pytest.mark.parametrize("name", BAD)
def test_run_pipeline_refuses_it_before_the_first_step(files, name, steps_run):
    image = itk.imread(str(files / "fixed.nii.gz"))
    with pytest.raises(ParameterFileError, match=BAD[name][1]):
        run_pipeline(image, image, [files / "first.txt", files / f"{name}.txt"])
    with pytest.raises(ParameterFileError, match=BAD[name][1]):  # a step object, then a file
        run_pipeline(image, image, [MethodStep("deformable"), str(files / f"{name}.txt")])
    assert steps_run == []


def test_run_pipeline_checks_elastix_maps_given_in_python(files, steps_run):
    image = itk.imread(str(files / "fixed.nii.gz"))
    misspelt = {**affine_map(), "MaximumNumberOfIteration": ["200"]}
    with pytest.raises(
        ParameterFileError,
        match=r"step 2 \(elastix map 1\): unknown elastix key MaximumNumberOfIteration; "
        r"did you mean MaximumNumberOfIterations\?",
    ):
        run_pipeline(image, image, [MethodStep("deformable"), ElastixStep([misspelt])])
    parameters = itk.ParameterObject.New()
    parameters.AddParameterMap(parameters.GetDefaultParameterMap("rigid"))
    parameters.AddParameterMap({})
    with pytest.raises(ParameterFileError, match=r"step 1 \(elastix map 2\): holds no parameters"):
        run_pipeline(image, image, [ElastixStep(parameters)])
    with pytest.raises(TypeError, match="step 2 is not a pipeline step"):
        run_pipeline(image, image, [MethodStep("deformable"), 42])
    assert steps_run == []


def test_run_pipeline_checks_a_later_method_step_s_option_values(files, steps_run):
    image = itk.imread(str(files / "fixed.nii.gz"))
    bad = MethodStep("affine", {"levels": (0,), "iterations": (5,)})
    with pytest.raises(ValueError, match=r"step 2 \(affine\): levels must be"):
        run_pipeline(image, image, [MethodStep("deformable"), bad])
    assert steps_run == []


@pytest.mark.parametrize("name", BAD)
def test_the_command_refuses_it_in_one_line_and_writes_nothing(files, name, steps_run, capsys):
    out = files / "out"
    arguments = ["-f", files / "fixed.nii.gz", "-m", files / "moving.nii.gz", "-out", out]
    arguments += ["-p", files / "first.txt", "-p", files / f"{name}.txt"]
    assert main(arguments) in (1, 2)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("itkdeepreg: error: "), lines
    assert re.search(BAD[name][1], lines[0])
    assert not out.exists() and steps_run == []


def test_the_command_as_a_program(files):
    out = files / "out"
    arguments = ["-f", files / "fixed.nii.gz", "-m", files / "moving.nii.gz", "-out", out]
    arguments += ["-p", files / "first.txt", "-p", files / "iteration.txt"]
    result = subprocess.run(
        [sys.executable, "-m", "itkdeepreg.cli", *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode in (1, 2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("itkdeepreg: error: "), result.stderr
    assert "iteration.txt:2: unknown elastix key MaximumNumberOfIteration; did you mean" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_every_default_map_of_itk_elastix_passes(kind, tmp_path):
    for resolutions in (1, 4):
        default = itk.ParameterObject.New()
        default.AddParameterMap(default.GetDefaultParameterMap(kind, resolutions))
        assert [key for key in default.GetParameterMap(0) if not is_elastix_key(key)] == []
        default.WriteParameterFile(str(tmp_path / f"{kind}.txt"))  # as elastix writes it
        check_elastix_map(read_parameter_file(tmp_path / f"{kind}.txt"))


def test_the_maps_elastix_writes_pass(files):
    """The TransformParameters maps of a registration (Size, GridSpacing, ...) pass too."""
    image = itk.imread(str(files / "fixed.nii.gz"), itk.F)
    for kind in ("translation", "rigid", "affine", "bspline"):
        parameters = itk.ParameterObject.New()
        default = parameters.GetDefaultParameterMap(kind, 1)
        default["MaximumNumberOfIterations"] = ["2"]
        default["Metric"] = ["AdvancedMeanSquares"]
        parameters.AddParameterMap(default)
        _, written = itk.elastix_registration_method(
            image, image, parameter_object=parameters, log_to_console=False
        )
        keys = dict(written.GetParameterMap(0))
        assert [key for key in keys if not is_elastix_key(key)] == [], kind


def test_labelled_and_numbered_keys_are_elastix_keys():
    for key in ("Metric0Weight", "Metric12RelativeWeight", "Metric1Use", "ErodeFixedMask0"):
        assert is_elastix_key(key)
    for key in ("Metric1NumberOfHistogramBins", "FixedImagePyramid0Schedule", "FullSearchSpace0"):
        assert is_elastix_key(key)
    for key in ("MetricWeight", "Metric1Weigth", "Metric1NumberOfHistogramBin", "metric"):
        assert not is_elastix_key(key)
    text = '(Metric "AdvancedMeanSquares")\n(Metric1NumberOfHistogramBin 32)\n'
    with pytest.raises(
        ParameterFileError, match=r"m\.txt:2: .*did you mean Metric1NumberOfHistogramBins\?"
    ):
        check_elastix_map(parse_parameter_text(text, "m.txt"))


def test_the_key_list_is_installed_with_the_package():
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert (
        "data/elastix_parameters.txt"
        in pyproject["tool"]["setuptools"]["package-data"]["itkdeepreg"]
    )

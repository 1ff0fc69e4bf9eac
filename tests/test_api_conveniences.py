"""What an ITKElastix user expects of the ITK face: images by position in ``New``, similarity
names in any case, a thread count, and elastix's log in a file."""

import itk
import numpy as np
import pytest
import torch

from itkdeepreg.losses import SIMILARITIES
from itkdeepreg.methods import check_options, method_names, method_options
from itkdeepreg.optimize import OptimizationResult
from itkdeepreg.optimize.nephi import SIMILARITIES as NEPHI_SIMILARITIES
from itkdeepreg.pipeline import ElastixStep, run_pipeline
from itkdeepreg.registration import DeepRegistrationMethod, deep_registration_method
from itkdeepreg.transforms import Affine

QUICK = {"levels": (1,), "iterations": (5,)}


@pytest.fixture(scope="module")
def images():
    """A bright square and the same square shifted by two voxels, 32 x 32."""
    fixed = np.zeros((32, 32), np.float32)
    fixed[10:20, 12:22] = 1
    moving = np.roll(fixed, 2, axis=1)
    return itk.image_from_array(fixed), itk.image_from_array(moving)


def test_new_takes_the_fixed_and_the_moving_image_by_position(images):
    fixed, moving = images
    registration = DeepRegistrationMethod.New(fixed, moving, method="translation")
    assert registration.GetFixedImage() is fixed and registration.GetMovingImage() is moving
    registration.SetMethodOptions(QUICK)
    registration.SetShowProgress(False)
    registration.Update()
    assert registration.GetOutput().GetLargestPossibleRegion().GetSize() == (32, 32)
    assert DeepRegistrationMethod.New(fixed).GetMovingImage() is None
    with pytest.raises(TypeError, match="fixed image twice"):
        DeepRegistrationMethod.New(fixed, moving, fixed_image=fixed)
    with pytest.raises(TypeError, match="got 3 images"):
        DeepRegistrationMethod.New(fixed, moving, moving)


def test_similarity_names_are_taken_in_any_case(images):
    fixed, moving = images
    options = {"method_options": QUICK, "show_progress": False}
    _, lower = deep_registration_method(
        fixed, moving, method="translation", metric="ncc", **options
    )
    _, upper = deep_registration_method(
        fixed, moving, method="translation", metric="NCC", **options
    )
    point = [15.0, 15.0]
    assert np.allclose(lower.TransformPoint(point), upper.TransformPoint(point))

    registration = DeepRegistrationMethod.New(fixed, moving, method="deformable")
    registration.SetMetric("Squared_LNCC")
    registration.SetMethodOptions(QUICK)
    registration.SetShowProgress(False)
    registration.Update()

    # every method with a similarity option, networks included (checked, not run)
    for name in method_names():
        if "similarity" in (method_options(name) or ()):
            table = NEPHI_SIMILARITIES if name == "nephi" else SIMILARITIES
            for similarity in table:
                check_options(name, {"similarity": similarity.upper()})
    with pytest.raises(ValueError, match="'squared_lncc'"):  # the canonical names
        check_options("affine", {"similarity": "LNCCC"})


def test_number_of_threads_holds_during_update_and_is_restored(images):
    fixed, moving = images
    seen = []

    def probe(pair, progress=True):
        seen.append(
            (torch.get_num_threads(), itk.MultiThreaderBase.GetGlobalDefaultNumberOfThreads())
        )
        identity = Affine.identity(pair.fixed.dim() - 2)
        return OptimizationResult(identity, identity)

    before = (torch.get_num_threads(), itk.MultiThreaderBase.GetGlobalDefaultNumberOfThreads())
    threads = max(before) + 1  # differs from both
    deep_registration_method(fixed, moving, method=probe, number_of_threads=threads)
    assert seen == [(threads, threads)]
    assert (torch.get_num_threads(), itk.MultiThreaderBase.GetGlobalDefaultNumberOfThreads()) == (
        before
    )

    def failing(pair, progress=True):
        raise RuntimeError("the method failed")

    registration = DeepRegistrationMethod.New(fixed, moving, method=failing)
    registration.SetNumberOfThreads(threads)
    assert registration.GetNumberOfThreads() == threads
    with pytest.raises(RuntimeError, match="the method failed"):
        registration.Update()
    assert (torch.get_num_threads(), itk.MultiThreaderBase.GetGlobalDefaultNumberOfThreads()) == (
        before
    )
    with pytest.raises(ValueError, match="threads"):
        registration.SetNumberOfThreads(0)


def test_elastix_steps_write_elastix_log_into_the_log_directory(images, tmp_path):
    fixed, moving = images
    translation = dict(itk.ParameterObject.New().GetDefaultParameterMap("translation", 1))
    translation["MaximumNumberOfIterations"] = ["10"]
    step = ElastixStep([translation])

    run_pipeline(fixed, moving, [step], log_directory=tmp_path / "one", show_progress=False)
    log = (tmp_path / "one" / "elastix.log").read_text()
    assert "ELASTIX version" in log and "MaximumNumberOfIterations" in log
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["elastix.log"]

    run_pipeline(fixed, moving, [step, step], log_directory=tmp_path / "two", show_progress=False)
    names = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert names == ["elastix.1.log", "elastix.2.log"]


def test_the_command_takes_threads_and_writes_elastix_log_into_out(images, tmp_path, capsys):
    from itkdeepreg.cli import main
    from itkdeepreg.parameter_files import write_parameter_file

    fixed, moving = images
    itk.imwrite(fixed, str(tmp_path / "fixed.nii.gz"))
    itk.imwrite(moving, str(tmp_path / "moving.nii.gz"))
    translation = dict(itk.ParameterObject.New().GetDefaultParameterMap("translation", 1))
    translation = {key: list(values) for key, values in translation.items()}
    translation["MaximumNumberOfIterations"] = ["10"]
    write_parameter_file(translation, tmp_path / "translation.txt")
    inputs = ["-f", str(tmp_path / "fixed.nii.gz"), "-m", str(tmp_path / "moving.nii.gz")]
    before = torch.get_num_threads()

    out = tmp_path / "out"
    arguments = [*inputs, "-p", str(tmp_path / "translation.txt"), "-out", str(out)]
    assert main([*arguments, "-threads", "1", "--quiet"]) == 0
    assert "ELASTIX version" in (out / "elastix.log").read_text()
    assert {p.name for p in out.iterdir()} == {  # nothing else of elastix's
        "elastix.log",
        "result.nii.gz",
        "TransformParameters.0.txt",
        "TransformParameters.0_field.nii.gz",
        "transform.h5",
        "inverse.h5",
    }
    assert torch.get_num_threads() == before

    register = ["register", "--fixed", inputs[1], "--moving", inputs[3], "--quiet"]
    register += ["--method", "translation", "--option", "levels=(1,)"]
    register += ["--option", "iterations=(5,)", "--transform-out", str(tmp_path / "t.h5")]
    assert main([*register, "--threads", "1"]) == 0
    assert torch.get_num_threads() == before
    capsys.readouterr()
    assert main([*register, "--threads", "0"]) == 2
    assert "--threads: must be at least 1, got 0" in capsys.readouterr().err

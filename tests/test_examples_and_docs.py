"""The examples run, the documentation builds without warnings, and CI runs the README's lines."""

import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_round_trip_example_writes_exact_exports(tmp_path, capsys):
    example = runpy.run_path(str(ROOT / "examples" / "itk_round_trip.py"))
    worst = example["main"](str(tmp_path))
    assert worst < 1e-4
    assert {p.name for p in tmp_path.iterdir()} == {
        "transform.h5",
        "warp.nii.gz",
        "warped_by_itk.nii.gz",
    }
    assert "compact (transform.h5)" in capsys.readouterr().out


def test_geometry_example_resamples_onto_the_model_grid():
    example = runpy.run_path(str(ROOT / "examples" / "geometry_and_images.py"))
    model_image = example["main"]()
    assert tuple(model_image.GetLargestPossibleRegion().GetSize()) == (175, 175, 175)
    assert np.asarray(model_image).max() > 50  # the brain is there


def test_transform_values_example_runs(capsys):
    runpy.run_path(str(ROOT / "examples" / "transform_values.py"))["main"]()
    assert "inverse o transform is the identity" in capsys.readouterr().out


def test_losses_example_prints_every_loss(capsys):
    runpy.run_path(str(ROOT / "examples" / "losses.py"))["main"]()
    out = capsys.readouterr().out
    assert "MIND-SSC" in out and "bending energy" in out


def test_unet_example_fits_a_pair():
    before, after = runpy.run_path(str(ROOT / "examples" / "gradicon_unet.py"))["main"]()
    assert after < 0.2 * before


def test_unigradicon_architecture_example_runs_the_tree_end_to_end():
    moved = runpy.run_path(str(ROOT / "examples" / "unigradicon_architecture.py"))["main"]()
    assert moved == 0.0  # untrained: zero-initialised last layers give the identity


def test_instance_optimization_example_improves_on_the_network():
    fields, weights = runpy.run_path(str(ROOT / "examples" / "instance_optimization.py"))["main"]()
    assert fields.losses[-1] < fields.losses[0] and weights.losses[-1] < weights.losses[0]


def test_training_example_trains_registers_and_finetunes(tmp_path):
    example = runpy.run_path(str(ROOT / "examples" / "training.py"))
    warped, transform, tuned = example["main"](str(tmp_path))
    assert np.isfinite(np.asarray(warped)).all()
    assert {"config.toml", "weights.pt", "log.csv"} <= {p.name for p in tuned.iterdir()}


def test_registration_by_optimization_example_registers_and_exports():
    example = runpy.run_path(str(ROOT / "examples" / "registration_by_optimization.py"))
    before, after, itk_difference = example["main"]()
    assert after["error"] < 0.5 * before["error"] and after["dice"] > before["dice"] + 0.05
    assert after["folds"] == 0 and itk_difference < 1e-4


def test_two_arbitrary_images_example_registers_across_pose_and_contrast():
    example = runpy.run_path(str(ROOT / "examples" / "two_arbitrary_images.py"))
    for before, after in example["main"]().values():
        assert after["error"] < 0.3 * before["error"] and after["dice"] > before["dice"] + 0.1
        assert after["folds"] == 0


def test_itk_face_example_registers_the_itk_way(tmp_path):
    example = runpy.run_path(str(ROOT / "examples" / "itk_face.py"))
    before, after, same, itk_difference = example["main"](str(tmp_path))
    assert same and itk_difference < 1e-4
    assert after["dice"] > before["dice"] + 0.05
    assert {p.name for p in tmp_path.iterdir()} == {"transform.h5", "inverse.h5"}


def test_pipeline_example_mixes_elastix_and_our_parameter_files(tmp_path):
    before, after = runpy.run_path(str(ROOT / "examples" / "pipeline.py"))["main"](str(tmp_path))
    assert after > before + 0.3
    assert {p.name for p in tmp_path.iterdir()} == {
        "affine.txt",
        "deep.txt",
        "transform.h5",
        "transform.txt",
        "transform_field.nii.gz",
    }


def test_documentation_builds_without_warnings(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            str(ROOT / "docs"),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "to_itk_transform" in (tmp_path / "api.html").read_text()


def test_ci_runs_exactly_the_readme_quick_start():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- quick-start -->")[1].split("<!-- /quick-start -->")[0]
    commands = [line for line in block.splitlines() if line and not line.startswith("```")]
    assert len(commands) == 2 and commands[1].startswith("python -m pytest")
    assert "quick-start" in (ROOT / ".ci" / "run").read_text()


def test_bad_input_example_refuses_each_attempt_in_one_line(tmp_path):
    outcomes = runpy.run_path(str(ROOT / "examples" / "bad_input.py"))["main"](str(tmp_path))
    for code, err in outcomes.values():
        assert code in (1, 2) and err.startswith("itkdeepreg: error: ") and "\n" not in err

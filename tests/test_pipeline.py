"""Pipelines: elastix, ANTs, transform files and our methods, each step from the result so far."""

import runpy
from pathlib import Path

import itk
import numpy as np
import pytest
import torch
from conftest import resample_by_itk

import itkdeepreg as idr
from itkdeepreg.data.brain_pairs import brain_pair
from itkdeepreg.interop import tensor_to_image
from itkdeepreg.parameter_files import ParameterFileError, step_parameters, write_parameter_file
from itkdeepreg.pipeline import (
    AntsStep,
    ElastixStep,
    MethodStep,
    TransformFileStep,
    read_pipeline,
    run_pipeline,
)

EXAMPLE = runpy.run_path(str(Path(__file__).resolve().parents[1] / "examples" / "pipeline.py"))
COARSE = MethodStep("deformable", {"levels": (4, 2), "iterations": (60, 60)})
FINE = MethodStep("deformable", {"levels": (1,), "iterations": (40,), "learning_rate": 0.1})


@pytest.fixture(scope="module")
def pair():
    """The 2D brain pair with its moving side (image and labels) misaligned by an affine map."""
    brain = brain_pair(0, dimension=2)
    fixed, moving = brain.itk_images()
    labels = tensor_to_image(brain.moving_labels.float(), brain.fixed_geometry, itk.UC)
    moving, labels = EXAMPLE["misaligned"](moving, labels)
    return fixed, moving, labels, brain.fixed_labels


def dice(transform, pair):
    fixed, _, moving_labels, fixed_labels = pair
    warped = itk.array_from_image(transform.Warp(moving_labels, "nearest"))
    return idr.losses.dice(torch.from_numpy(warped.astype(np.int64)), fixed_labels[0, 0], [1, 2])


def test_elastix_then_optimization_then_refinement_improves_dice_at_each_step(pair, tmp_path):
    fixed, moving = pair[:2]
    affine = itk.ParameterObject.New().GetDefaultParameterMap("affine", 3)
    affine["MaximumNumberOfIterations"] = ["200"]
    steps = [ElastixStep([dict(affine)]), COARSE, FINE]
    identity = idr.InverseConsistentTransform(
        idr.Affine.identity(2, torch.float64), idr.Affine.identity(2, torch.float64), fixed, moving
    )
    scores, so_far = [dice(identity, pair).mean().item()], None
    for step in steps:  # a pipeline, one step at a time, to score each
        _, so_far = run_pipeline(
            fixed, moving, [step], initial_transform=so_far, show_progress=False
        )
        scores.append(dice(so_far, pair).mean().item())
    print("Dice after each step:", " -> ".join(f"{score:.3f}" for score in scores))
    assert scores[1] > scores[0] + 0.05 and scores[2] > scores[1] + 0.02 and scores[3] > scores[2]

    # the result as a transformix file: transformix applies it as ITK does
    so_far.WriteTransformixParameters(tmp_path / "result.txt")
    parameters = itk.ParameterObject.New()
    parameters.ReadParameterFile(str(tmp_path / "result.txt"))
    by_transformix = itk.array_from_image(itk.transformix_filter(moving, parameters))
    by_itk = resample_by_itk(moving, so_far.GetITKTransform(), fixed)
    assert np.abs(by_transformix - by_itk).max() < 1e-4


def test_a_pipeline_of_parameter_files_mixes_elastix_and_ours(pair, tmp_path):
    fixed, moving = pair[:2]
    rigid = itk.ParameterObject.New()
    rigid.AddParameterMap(rigid.GetDefaultParameterMap("rigid", 2))
    rigid.WriteParameterFile(str(tmp_path / "rigid.txt"))
    write_parameter_file(
        step_parameters("deformable", levels=(4, 2), iterations=(60, 60)), tmp_path / "deep.txt"
    )
    paths = [tmp_path / "rigid.txt", tmp_path / "deep.txt"]
    steps = read_pipeline(paths)
    assert isinstance(steps[0], ElastixStep) and isinstance(steps[1], MethodStep)
    assert steps[1].options["iterations"] == (60, 60)
    warped, transform = run_pipeline(fixed, moving, paths, show_progress=False)
    assert dice(transform, pair).mean() > 0.9
    assert itk.template(warped)[1] == itk.template(moving)[1]


def test_a_typo_names_its_line_before_anything_runs(tmp_path):
    (tmp_path / "deep.txt").write_text(
        '(Registration "DeepRegistration")\n(Model "deformable")\n(MaximumNumberOfIteration 10)\n'
    )
    with pytest.raises(ParameterFileError, match=r"deep\.txt:3: .*MaximumNumberOfIterations"):
        read_pipeline([tmp_path / "deep.txt"])


def test_an_ants_step_and_a_transform_file_step(pair, tmp_path):
    fixed, moving = pair[:2]
    undo = EXAMPLE["misalignment"]().GetInverseTransform()  # the affine part of the answer
    itk.transformwrite([undo], str(tmp_path / "initial.tfm"))
    _, from_file = run_pipeline(fixed, moving, [TransformFileStep(str(tmp_path / "initial.tfm"))])
    point = [80.0, -110.0]
    np.testing.assert_allclose(
        from_file.TransformPoint(point), undo.TransformPoint(point), atol=1e-6
    )
    ants_step = AntsStep("SyN", {"reg_iterations": (40, 20, 0)})
    _, result = run_pipeline(
        fixed, moving, [ants_step], initial_transform=from_file, show_progress=False
    )
    assert dice(result, pair).mean() > dice(from_file, pair).mean() + 0.01


def test_an_elastix_bspline_step_is_imported_faithfully(pair):
    """elastix's B-spline comes back as an ITK BSplineTransform, which an ElastixStep's result
    samples on the spline's domain (8 points per cell in 2D)."""
    from itkdeepreg.interop import InverseConsistentTransform, from_itk_transform
    from itkdeepreg.interop.classical import elastix_registration

    fixed, moving = pair[:2]
    bspline = itk.ParameterObject.New().GetDefaultParameterMap("bspline", 2, 10.0)
    bspline["MaximumNumberOfIterations"] = ["100"]
    whole = elastix_registration(fixed, moving, [dict(bspline)])
    value = from_itk_transform(whole, fixed, moving)  # what the step does with it
    imported = InverseConsistentTransform(value, idr.invert(value), fixed, moving)
    geometry = idr.ImageGeometry.from_image(fixed)
    points = geometry.to_physical(np.random.default_rng(0).uniform(0.1, 0.9, (200, 2)))
    by_elastix = np.array([whole.TransformPoint(p) for p in points.tolist()])
    assert np.abs(by_elastix - points).max() > 1.0  # it registered
    ours = np.array([imported.TransformPoint(p) for p in points])
    assert np.abs(ours - by_elastix).max() < 0.1


def test_an_option_the_method_does_not_take_names_its_key_and_line(tmp_path):
    (tmp_path / "deep.txt").write_text(
        '(Registration "DeepRegistration")\n(Model "affine")\n'
        '(Regularization "Diffusion")\n(RegularizationWeight 0.1)\n'
    )
    with pytest.raises(
        ParameterFileError, match=r"deep\.txt:3: the method affine takes no Regularization"
    ):
        read_pipeline([tmp_path / "deep.txt"])

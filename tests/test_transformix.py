"""Transformix applies our exported parameter files as ITK applies our transforms."""

import os

import itk
import numpy as np
import pytest
import torch
from conftest import (
    example_transforms,
    geometry_pair,
    preimage_inside,
    resample_by_itk,
    smooth_image,
)

from itkdeepreg.interop import tensor_to_image, to_itk_transform
from itkdeepreg.interop import transformix as T
from itkdeepreg.interop.transformix import write_transformix_parameters
from itkdeepreg.parameter_files import read_parameter_file


def images(dimension):
    fixed, moving = geometry_pair(dimension)  # both oblique and flipped; 3D: not symmetric
    moving_image = tensor_to_image(smooth_image(moving.shape), moving, itk.F)
    fixed_image = tensor_to_image(torch.zeros(1, 1, *fixed.shape), fixed, itk.F)
    return fixed, moving, fixed_image, moving_image


def transformix(path, moving_image):
    parameters = itk.ParameterObject.New()
    parameters.ReadParameterFile(str(path))
    return itk.array_from_image(itk.transformix_filter(moving_image, parameters))


@pytest.mark.parametrize("kind", ["composite", "field_read_off_its_grid"])
def test_transformix_resamples_as_itk_does_with_the_exported_transform(tmp_path, dimension, kind):
    fixed, moving, fixed_image, moving_image = images(dimension)
    transform = example_transforms(dimension)[kind]  # composite: affine @ displacement @ velocity
    path = tmp_path / "transform.txt"
    # the fixed side as an image, the moving side as a geometry: both are taken
    write_transformix_parameters(transform, path, fixed_image, moving)
    by_transformix = transformix(path, moving_image)
    by_itk = resample_by_itk(moving_image, to_itk_transform(transform, fixed, moving), fixed_image)
    assert by_transformix.shape == fixed.shape
    inside = preimage_inside(transform, fixed.shape)
    assert inside.mean() > 0.5
    assert np.abs(by_transformix - by_itk)[inside].max() < 1e-4


def test_the_parameter_file_holds_the_fixed_grid_and_an_absolute_field(tmp_path, monkeypatch):
    fixed, moving, _, moving_image = images(3)
    transform = example_transforms(3)["composite"]
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    write_transformix_parameters(transform, "out/t.txt", fixed, moving)
    assert sorted(os.listdir(tmp_path / "out")) == ["t.txt", "t_field.nii.gz"]
    values = read_parameter_file(tmp_path / "out" / "t.txt").values
    assert values["Transform"] == ("DeformationFieldTransform",)
    assert values["DeformationFieldFileName"] == (str(tmp_path / "out" / "t_field.nii.gz"),)
    assert values["InitialTransformParameterFileName"] == ("NoInitialTransform",)
    assert values["Size"] == tuple(str(n) for n in fixed.size)
    assert np.allclose([float(v) for v in values["Direction"]], fixed.direction.T.ravel())
    assert values["UseDirectionCosines"] == ("true",)

    parameters = itk.ParameterObject.New()
    parameters.ReadParameterFile(str(tmp_path / "out" / "t.txt"))
    assert parameters.GetNumberOfParameterMaps() == 1
    assert parameters.GetParameterMap(0)["DeformationFieldInterpolationOrder"] == ("1",)

    monkeypatch.chdir(tmp_path / "elsewhere")  # an absolute field path works from anywhere
    reference = transformix(tmp_path / "out" / "t.txt", moving_image)
    write_transformix_parameters(transform, tmp_path / "u.txt", fixed, moving, "field.mha")
    assert sorted(os.listdir()) == ["field.mha"]
    assert np.abs(transformix(tmp_path / "u.txt", moving_image) - reference).max() < 1e-6


def test_transformix_opens_a_relative_field_name_from_the_current_directory(tmp_path, monkeypatch):
    """The fact behind the absolute path: not relative to the parameter file's folder."""
    fixed, moving, _, moving_image = images(2)
    transform = example_transforms(2)["composite"]
    folder = tmp_path / "out"
    folder.mkdir()
    write_transformix_parameters(transform, folder / "t.txt", fixed, moving)
    expected = transformix(folder / "t.txt", moving_image)
    text = (folder / "t.txt").read_text()
    absolute = f'(DeformationFieldFileName "{folder / "t_field.nii.gz"}")'
    assert absolute in text
    relative = text.replace(absolute, '(DeformationFieldFileName "t_field.nii.gz")')
    (folder / "relative.txt").write_text(relative)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError):
        transformix(folder / "relative.txt", moving_image)
    monkeypatch.chdir(folder)
    assert np.abs(transformix(folder / "relative.txt", moving_image) - expected).max() == 0


def test_a_failure_leaves_no_files(tmp_path, monkeypatch):
    fixed, moving = geometry_pair(2)
    transform = example_transforms(2)["composite"]
    evaluated = []
    real = T.write_displacement_field
    monkeypatch.setattr(T, "write_displacement_field", lambda *a: evaluated.append(a) or real(*a))
    # bad targets fail before the field is evaluated
    with pytest.raises(ValueError, match=r"\.txt"):
        write_transformix_parameters(transform, tmp_path / "t.nii", fixed, moving)
    with pytest.raises(OSError, match="not a writable directory"):
        write_transformix_parameters(transform, tmp_path / "no" / "t.txt", fixed, moving)
    with pytest.raises(ValueError, match=r"\.nii\.gz"):
        write_transformix_parameters(transform, tmp_path / "t.txt", fixed, moving, "f.png")
    with pytest.raises(ValueError, match="double quote"):
        write_transformix_parameters(transform, tmp_path / "t.txt", fixed, moving, 'a"b.nii')
    assert evaluated == []
    assert os.listdir(tmp_path) == []

    # the parameter file fails after the field was written: the field goes too
    def fail(values, path):
        raise OSError("disk full")

    monkeypatch.setattr(T, "write_parameter_file", fail)
    with pytest.raises(OSError, match="disk full"):
        write_transformix_parameters(transform, tmp_path / "t.txt", fixed, moving)
    assert len(evaluated) == 1
    assert os.listdir(tmp_path) == []

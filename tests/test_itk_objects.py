"""A result where ITK expects a transform, transform files read alone, Jacobians on a reference
grid, and one label rule for every entry point (issue 23)."""

import gc

import itk
import numpy as np
import pytest
import torch
from conftest import (
    example_transforms,
    geometry_pair,
    preimage_inside,
    resample_by_itk,
    smooth_field,
    smooth_image,
)

import itkdeepreg as idr
from itkdeepreg.cli import main
from itkdeepreg.interop import InverseConsistentTransform, tensor_to_image


def images(dimension):
    """Fixed and moving images on oblique, flipped, anisotropic grids, and a result between
    them (an affine map, a field and a velocity field)."""
    fixed, moving = geometry_pair(dimension)
    fixed_image = tensor_to_image(smooth_image(fixed.shape), fixed, itk.F)
    moving_image = tensor_to_image(smooth_image(moving.shape), moving, itk.F)
    result = InverseConsistentTransform(
        example_transforms(dimension)["composite"], None, fixed_image, moving_image
    )
    return fixed_image, moving_image, result


def points_in(image, count=50, seed=0):
    """Physical points spread over an image (where the export equals the map)."""
    geometry = idr.ImageGeometry.from_image(image)
    unit = np.random.default_rng(seed).uniform(0, 1, (count, geometry.dimension))
    return geometry.to_physical(unit)


def test_itk_takes_a_result_where_it_takes_a_transform(tmp_path):
    fixed, moving, result = images(2)
    expected = resample_by_itk(moving, result.GetITKTransform(), fixed)
    resampler = itk.ResampleImageFilter.New(moving, transform=result, reference_image=fixed)
    resampler.SetUseReferenceImage(True)
    del result
    gc.collect()  # ITK holds its own reference to the export
    resampler.Update()
    assert np.array_equal(itk.array_from_image(resampler.GetOutput()), expected)

    result = images(2)[2]
    by_function = itk.resample_image_filter(
        moving, transform=result, use_reference_image=True, reference_image=fixed
    )
    assert np.array_equal(itk.array_from_image(by_function), expected)
    itk.transformwrite([result], str(tmp_path / "t.h5"))
    written = itk.transformread(str(tmp_path / "t.h5"))[0]
    for point in points_in(fixed):
        assert np.allclose(written.TransformPoint(point), result.TransformPoint(point), atol=1e-6)


def test_elastix_and_ants_steps_start_from_a_result():
    from itkdeepreg.interop.classical import _check_initial

    fixed, _, result = images(2)
    initial = _check_initial(result, 2)  # what elastix_ and ants_registration hand on
    for point in points_in(fixed):
        assert np.allclose(initial.TransformPoint(point), result.TransformPoint(point), atol=1e-6)


@pytest.mark.parametrize("dimension", [2, 3], ids=["2D", "3D"])
def test_a_written_transform_is_read_from_the_file_alone(tmp_path, dimension):
    fixed, moving, result = images(dimension)
    result.Write(tmp_path / "t.h5")
    read = InverseConsistentTransform.Read(tmp_path / "t.h5")
    for point in points_in(fixed):
        assert np.allclose(read.TransformPoint(point), result.TransformPoint(point), atol=1e-6)
    # what needs the fixed grid takes it as reference; the moving grid is the image's own
    warped = itk.array_from_image(read.Warp(moving, reference=fixed))
    assert np.abs(warped - itk.array_from_image(result.Warp(moving))).max() < 1e-5
    jacobian = itk.array_from_image(read.GetJacobianDeterminant(fixed))
    assert np.abs(jacobian - itk.array_from_image(result.GetJacobianDeterminant())).max() < 1e-4
    with pytest.raises(ValueError, match="reference="):
        read.Warp(moving)
    # with its images it is the result it was
    with_images = InverseConsistentTransform.Read(tmp_path / "t.h5", fixed, moving)
    assert np.array_equal(itk.array_from_image(with_images.Warp(moving)), warped)


def test_an_elastix_export_is_read_from_the_file_alone(tmp_path):
    from itkdeepreg.interop.classical import elastix_registration

    fixed, moving, _ = images(2)
    parameters = itk.ParameterObject.New().GetDefaultParameterMap("affine", 1)
    parameters["MaximumNumberOfIterations"] = ["30"]
    itk.transformwrite([elastix_registration(fixed, moving, [parameters])], str(tmp_path / "e.h5"))
    by_itk = itk.transformread(str(tmp_path / "e.h5"))[0]
    read = InverseConsistentTransform.Read(tmp_path / "e.h5")
    for point in points_in(fixed):
        assert np.allclose(read.TransformPoint(point), by_itk.TransformPoint(point), atol=1e-6)


def test_an_ants_warp_is_read_from_the_file_alone(tmp_path):
    ants = pytest.importorskip("ants")
    fixed, moving, _ = images(2)
    itk.imwrite(fixed, str(tmp_path / "fixed.nii.gz"))
    itk.imwrite(moving, str(tmp_path / "moving.nii.gz"))
    fixed_ants = ants.image_read(str(tmp_path / "fixed.nii.gz"))
    moving_ants = ants.image_read(str(tmp_path / "moving.nii.gz"))
    registration = ants.registration(
        fixed_ants, moving_ants, "SyNOnly", reg_iterations=(20,), outprefix=f"{tmp_path}/r"
    )
    warp = next(p for p in registration["fwdtransforms"] if p.endswith("Warp.nii.gz"))
    by_ants = ants.apply_transforms(fixed_ants, moving_ants, [warp]).numpy().T
    read = InverseConsistentTransform.Read(warp)
    warped = itk.array_from_image(read.Warp(moving, reference=fixed))
    # ITK and torch differ only where the map leaves the moving image (their edge rules)
    value = InverseConsistentTransform.Read(warp, fixed, moving).forward
    inside = preimage_inside(value, itk.array_view_from_image(fixed).shape)
    assert inside.mean() > 0.8 and np.abs(warped - by_ants)[inside].max() < 1e-4
    identity = resample_by_itk(moving, itk.IdentityTransform[itk.D, 2].New(), fixed)
    assert np.abs(warped - identity)[inside].max() > 0.1  # a map that moves


def test_the_jacobian_needs_only_the_transform_and_a_reference(tmp_path, dimension):
    from itkdeepreg.interop.inverse_consistent import jacobian_determinant_image

    fixed, moving, result = images(dimension)
    result.Write(tmp_path / "t.h5")
    expected = itk.array_from_image(
        InverseConsistentTransform.Read(tmp_path / "t.h5", fixed, moving).GetJacobianDeterminant()
    )
    for transform in (tmp_path / "t.h5", str(tmp_path / "t.h5"), result.GetITKTransform(), result):
        jacobian = jacobian_determinant_image(transform, fixed)
        assert np.abs(itk.array_from_image(jacobian) - expected).max() < 1e-4
    # the command: the transform and a grid (--reference, or --fixed as before), no moving image
    itk.imwrite(fixed, str(tmp_path / "fixed.nii.gz"))
    result.WriteDisplacementField(tmp_path / "warp.nii.gz")  # as an ANTs warp
    for flag, transform in (
        ("--reference", "t.h5"),
        ("--fixed", "t.h5"),
        ("--fixed", "warp.nii.gz"),
    ):
        arguments = ["jacobian", flag, str(tmp_path / "fixed.nii.gz"), "--out"]
        arguments += [str(tmp_path / "j.nii.gz"), "--transform", str(tmp_path / transform)]
        assert main(arguments) == 0
        jacobian = itk.array_from_image(itk.imread(str(tmp_path / "j.nii.gz")))
        # a warp is the map at the voxels, linear between them: the same central differences
        assert np.abs(jacobian - expected).max() < 1e-4
    # an affine map: its determinant everywhere, on any grid
    affine = itk.AffineTransform[itk.D, dimension].New()
    matrix = np.eye(dimension) + 0.1 * np.random.default_rng(1).standard_normal((dimension,) * 2)
    affine.SetMatrix(itk.matrix_from_array(matrix))
    jacobian = itk.array_from_image(jacobian_determinant_image(affine, moving))
    assert np.allclose(jacobian, np.linalg.det(matrix), atol=1e-6)


def test_labels_stay_labels_through_every_entry_point(tmp_path):
    from itkdeepreg.interop.transforms import warp_labels

    fixed, moving, _ = images(2)
    geometry = idr.ImageGeometry.from_image(fixed)
    warp = idr.Displacement(smooth_field(geometry.shape, 0.08, seed=5))
    result = InverseConsistentTransform(warp, None, fixed, moving)
    # three labels (0, 7, 200) in bands across the moving image
    band = (smooth_image(idr.ImageGeometry.from_image(moving).shape)[0, 0] * 3).long().clamp(0, 2)
    values = torch.tensor([0, 7, 200])[band]
    labels = tensor_to_image(
        values[None, None].float(), idr.ImageGeometry.from_image(moving), itk.UC
    )
    result.Write(tmp_path / "t.h5")
    itk.imwrite(fixed, str(tmp_path / "fixed.nii.gz"))
    itk.imwrite(labels, str(tmp_path / "labels.nii.gz"))
    arguments = ["warp", "--fixed", str(tmp_path / "fixed.nii.gz"), "--transform"]
    arguments += [str(tmp_path / "t.h5"), "--moving", str(tmp_path / "labels.nii.gz")]
    assert main([*arguments, "--interpolation", "label", "--out", str(tmp_path / "w.nii.gz")]) == 0
    by_command = itk.array_from_image(itk.imread(str(tmp_path / "w.nii.gz")))

    read = InverseConsistentTransform.Read(tmp_path / "t.h5")
    for warped in (
        result.Warp(labels, "label"),
        read.Warp(labels, "label", reference=fixed),
        warp_labels(labels, result, fixed),
        warp_labels(labels, result.GetITKTransform(), fixed),
    ):
        assert itk.template(warped)[1][0] is itk.UC
        array = itk.array_from_image(warped)
        assert set(np.unique(array)) == {0, 7, 200}
        assert np.array_equal(array, by_command)
    # linear interpolation would have made up values between the labels
    assert len(np.unique(itk.array_from_image(result.Warp(labels)))) > 3

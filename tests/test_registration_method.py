"""The ITK face: DeepRegistrationMethod, deep_registration_method, InverseConsistentTransform."""

import ants
import itk
import numpy as np
import pytest
import torch
from conftest import geometry_pair, resample_by_itk, small_gradicon, smooth_image

import itkdeepreg as idr
from itkdeepreg.data.brain_pairs import brain_pair
from itkdeepreg.interop import InverseConsistentTransform, tensor_to_image, to_itk_transform
from itkdeepreg.methods import NetworkMethod

FAST = {"iterations": (30, 30, 10)}  # seconds, not the defaults' accuracy


@pytest.fixture(scope="module")
def brain():
    """A 2D brain pair as ITK images: float fixed, unsigned-char moving."""
    pair = brain_pair(0, dimension=2)
    fixed = tensor_to_image(pair.fixed, pair.fixed_geometry)
    moving = tensor_to_image(pair.moving.clamp(0, 1) * 255, pair.fixed_geometry, itk.UC)
    return pair, fixed, moving


def test_itk_namespace_has_the_face():
    assert itk.DeepRegistrationMethod is idr.DeepRegistrationMethod
    assert itk.deep_registration_method is idr.deep_registration_method
    assert itk.InverseConsistentTransform is InverseConsistentTransform


def test_object_and_function_give_identical_results(brain):
    pair, fixed, moving = brain
    options = {"method": "deformable", "method_options": FAST, "show_progress": False}
    warped, transform = itk.deep_registration_method(fixed, moving, **options)
    registration = itk.DeepRegistrationMethod.New(fixed_image=fixed, moving_image=moving, **options)
    registration.Update()
    np.testing.assert_array_equal(
        itk.array_from_image(registration.GetOutput()), itk.array_from_image(warped)
    )
    grid = idr.identity_grid(pair.fixed_geometry.shape)
    assert torch.equal(registration.GetTransform().forward(grid), transform.forward(grid))
    # the output: the moving image's pixel type on the fixed grid, and registered
    assert itk.template(warped)[1] == (itk.UC, 2)
    assert idr.ImageGeometry.from_image(warped) == idr.ImageGeometry.from_image(fixed)
    assert pair.score(transform.forward)["dice"] > pair.score(idr.Affine.identity(2))["dice"] + 0.03


def test_setters_map_to_the_method_options_and_unknown_options_are_refused(brain):
    _, fixed, moving = brain
    registration = itk.DeepRegistrationMethod.New(
        fixed_image=fixed, moving_image=moving, method="deformable", show_progress=False
    )
    registration.SetInstanceOptimizationIterations(5)  # networks only
    with pytest.raises(ValueError, match="deformable takes no option io_iterations"):
        registration.Update()
    with pytest.raises(TypeError, match="SetFixedImages"):
        itk.DeepRegistrationMethod.New(fixed_images=fixed)
    with pytest.raises(RuntimeError, match="Update"):
        itk.DeepRegistrationMethod.New().GetOutput()
    with pytest.raises(ValueError, match="both the fixed and the moving"):
        itk.DeepRegistrationMethod.New(fixed_image=fixed).Update()
    with pytest.raises(ValueError, match="no registration method 'unigradicno'"):
        itk.deep_registration_method(fixed, moving, method="unigradicno")


def test_bad_images_and_masks_are_refused(brain):
    pair, fixed, moving = brain
    vector = itk.image_from_array(np.zeros((8, 9, 2), np.float32), is_vector=True)
    with pytest.raises(TypeError, match="scalar pixels"):
        itk.deep_registration_method(fixed, vector, method="deformable")
    constant = tensor_to_image(torch.ones_like(pair.fixed), pair.fixed_geometry)
    with pytest.raises(ValueError, match="constant"):
        itk.deep_registration_method(fixed, constant, method="deformable", show_progress=False)
    small = tensor_to_image(torch.ones(1, 1, 20, 20), idr.ImageGeometry((20, 20)))
    with pytest.raises(ValueError, match="FixedMask must have its image's grid"):
        itk.deep_registration_method(fixed, moving, method="deformable", fixed_mask=small)


def test_initial_transform_is_applied_once(brain):
    """An ITK affine as the initial transform, and a method that barely moves: the result is
    the initial transform (not applied twice, not dropped)."""
    _, fixed, moving = brain
    initial = itk.AffineTransform[itk.D, 2].New()
    initial.SetMatrix(itk.matrix_from_array(np.array([[1.02, 0.05], [-0.03, 0.98]])))
    initial.SetTranslation([2.5, -1.5])
    initial.SetCenter([90.0, -120.0])
    _, transform = itk.deep_registration_method(
        fixed,
        moving,
        method="deformable",
        initial_transform=initial,
        method_options={"levels": (1,), "iterations": (1,), "learning_rate": 1e-6},
        show_progress=False,
    )
    for point in ([90.0, -120.0], [60.0, -80.0], [120.0, -150.0]):
        np.testing.assert_allclose(
            transform.TransformPoint(point), initial.TransformPoint(point), atol=1e-3
        )
    # the inverse of a result is exact for the affine part and close for the field
    back = transform.GetInverseTransform().TransformPoint(transform.TransformPoint([70.0, -90.0]))
    np.testing.assert_allclose(back, [70.0, -90.0], atol=1e-2)


def test_a_result_starts_the_next_registration_exactly(brain):
    _, fixed, moving = brain
    options = {"method": "deformable", "show_progress": False}
    _, first = itk.deep_registration_method(fixed, moving, method_options=FAST, **options)
    still = {"levels": (1,), "iterations": (1,), "learning_rate": 1e-6}
    _, second = itk.deep_registration_method(
        fixed, moving, initial_transform=first, method_options=still, **options
    )
    for point in ([90.0, -120.0], [60.0, -80.0]):
        np.testing.assert_allclose(
            second.TransformPoint(point), first.TransformPoint(point), atol=1e-3
        )


def test_a_network_method_with_segmentations_and_instance_optimization(brain):
    """Any model registers through the face: a small 2D GradICON on a 64^2 grid."""
    pair, fixed, moving = brain
    network = NetworkMethod(small_gradicon(0.01), (64, 64))
    segmentations = {
        f"{side}_segmentation": tensor_to_image(
            (getattr(pair, f"{side}_labels") > 0).float(),
            getattr(pair, f"{side}_geometry"),
            itk.UC,
        )
        for side in ("fixed", "moving")
    }
    options = {"method": network, "show_progress": False}
    _, plain = itk.deep_registration_method(fixed, moving, **options)
    # both segmentations and no masks: the published (deprecated) input masking
    with pytest.warns(DeprecationWarning, match="segmentations used as masks"):
        _, masked = itk.deep_registration_method(fixed, moving, **segmentations, **options)
    _, refined = itk.deep_registration_method(
        fixed, moving, instance_optimization_iterations=20, metric="mse", **options
    )
    grid = idr.identity_grid(pair.fixed_geometry.shape)
    assert not torch.equal(plain.forward(grid), masked.forward(grid))  # the input was masked
    before, after = (pair.score(t.forward)["dice"] for t in (plain, refined))
    assert after > before
    # the model is never changed: a second registration gives the same map
    _, again = itk.deep_registration_method(fixed, moving, **options)
    assert torch.equal(again.forward(grid), plain.forward(grid))


def test_inverse_consistent_transform_in_itk_and_ants(tmp_path, dimension):
    """The written .h5 applied by ANTs and by ITK equals the value; the file reads back; the
    Jacobian image is the physical volume change."""
    fixed, moving = geometry_pair(dimension)
    shape = (9,) * dimension
    field = 0.02 * torch.sin(6 * idr.identity_grid(shape, dtype=torch.float64))
    scale = torch.eye(dimension + 1, dtype=torch.float64)
    scale[0, 0] = 1.1
    forward = idr.Affine(scale) @ idr.Displacement(field)
    transform = InverseConsistentTransform(forward, idr.invert(forward), fixed, moving)
    moving_image = tensor_to_image(smooth_image(moving.shape), moving, itk.F)
    fixed_image = tensor_to_image(torch.zeros(1, 1, *fixed.shape), fixed)

    path, inverse_path = tmp_path / "forward.h5", tmp_path / "inverse.h5"
    transform.Write(path, inverse_path)
    by_itk = resample_by_itk(moving_image, transform.GetITKTransform(), fixed_image)
    to_ants = ants.from_numpy  # ANTs arrays are (x, y, z): the transpose of ITK's
    ants_fixed, ants_moving = (
        to_ants(
            itk.array_from_image(image).T.astype(np.float32),
            origin=list(image.GetOrigin()),
            spacing=list(image.GetSpacing()),
            direction=itk.array_from_matrix(image.GetDirection()),
        )
        for image in (fixed_image, moving_image)
    )
    by_ants = ants.apply_transforms(ants_fixed, ants_moving, [str(path)]).numpy().T
    inside = by_itk != 0
    assert np.abs(by_ants - by_itk)[inside].max() < 1e-4

    read = InverseConsistentTransform.Read(path, fixed, moving, inverse_path)
    for point in (
        fixed.to_physical(np.full(dimension, 0.3)),
        fixed.to_physical(np.full(dimension, 0.7)),
    ):
        np.testing.assert_allclose(
            read.TransformPoint(point), transform.TransformPoint(point), atol=1e-6
        )
        np.testing.assert_allclose(
            transform.GetITKTransform().TransformPoint(point.tolist()),
            transform.TransformPoint(point),
            atol=1e-6,
        )
    jacobian = itk.array_from_image(transform.GetJacobianDeterminant())
    volume = np.linalg.det(moving.unit_to_physical[:-1, :-1]) / np.linalg.det(
        fixed.unit_to_physical[:-1, :-1]
    )
    unit = idr.losses.jacobian_determinant(forward, fixed.shape)[0].numpy()
    np.testing.assert_allclose(jacobian, unit * volume, rtol=1e-5)


def test_writing_both_files_or_neither(tmp_path):
    fixed, moving = geometry_pair(2)
    transform = InverseConsistentTransform(
        idr.Affine.identity(2, torch.float64), idr.Affine.identity(2, torch.float64), fixed, moving
    )
    with pytest.raises(OSError, match="not a writable directory"):
        transform.Write(tmp_path / "forward.h5", tmp_path / "missing" / "inverse.h5")
    with pytest.raises(ValueError, match="must end in one of"):
        transform.Write(tmp_path / "forward.h5", tmp_path / "inverse.png")
    assert list(tmp_path.iterdir()) == []
    assert to_itk_transform(transform.forward, fixed, moving).GetNumberOfTransforms() == 1


def test_a_network_method_loads_its_weights_strictly(brain, tmp_path):
    """SetWeights hands a weights file to the network: loaded by name and shape, or refused."""
    pair, fixed, moving = brain
    trained = small_gradicon(0.01)
    torch.save(trained.state_dict(), tmp_path / "trained.pt")
    untrained = NetworkMethod(small_gradicon(0.0), (64, 64))  # zero last layers: the identity
    options = {"method": untrained, "show_progress": False}
    _, loaded = itk.deep_registration_method(
        fixed, moving, weights=str(tmp_path / "trained.pt"), **options
    )
    _, reference = itk.deep_registration_method(
        fixed, moving, method=NetworkMethod(trained, (64, 64)), show_progress=False
    )
    _, unchanged = itk.deep_registration_method(fixed, moving, **options)
    grid = idr.identity_grid(pair.fixed_geometry.shape)
    assert torch.allclose(loaded.forward(grid), reference.forward(grid), atol=1e-6)
    # loading left the given model alone: the identity (placed on the grid and back)
    assert torch.allclose(unchanged.forward(grid), grid, atol=1e-6)
    state = trained.state_dict()
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(ValueError, match="unexpected extra.weight"):
        itk.deep_registration_method(fixed, moving, weights=str(tmp_path / "extra.pt"), **options)


def test_any_function_is_a_method_and_a_result_starts_images_on_other_grids(brain):
    """A plain function of the pair is a method (no progress option needed), and a result
    used as the initial transform of images on other grids keeps its physical map."""
    from itkdeepreg.optimize import OptimizationResult

    pair, fixed, moving = brain

    def half_voxel_shift(pair):
        matrix = torch.eye(3, dtype=torch.float64)
        matrix[0, 2] = 0.5 / (pair.fixed.shape[2] - 1)
        return OptimizationResult(idr.Affine(matrix), idr.Affine(matrix).inverse())

    _, shifted = itk.deep_registration_method(fixed, moving, method=half_voxel_shift)
    point = [60.0, -90.0]
    assert np.linalg.norm(np.subtract(shifted.TransformPoint(point), point)) > 0.5
    coarse = itk.resample_image_filter(
        fixed,
        size=[50, 59],
        output_spacing=[4.0, 4.0],
        output_origin=fixed.GetOrigin(),
        output_direction=fixed.GetDirection(),
    )
    still = {"levels": (1,), "iterations": (1,), "learning_rate": 1e-6}
    _, again = itk.deep_registration_method(
        coarse,
        moving,
        method="deformable",
        initial_transform=shifted,
        method_options=still,
        show_progress=False,
    )
    np.testing.assert_allclose(
        again.TransformPoint(point), shifted.TransformPoint(point), atol=1e-3
    )

"""The exported ITK transforms do what the torch transform values do, exactly."""

import itertools

import ants
import itk
import numpy as np
import pytest
import torch
from conftest import example_transforms, geometry_pair, preimage_inside, smooth_image

import itkdeepreg as idr
from itkdeepreg.interop import (
    displacement_field_image,
    from_itk_transform,
    read_transform,
    tensor_to_image,
    to_itk_displacement_field,
    to_itk_transform,
    write_displacement_field,
    write_transform,
)

KINDS = ["affine", "displacement", "velocity", "composite", "field_read_off_its_grid"]


def itk_points(transform, points):
    return np.array([transform.TransformPoint(p.tolist()) for p in points])


def torch_points(transform, fixed, moving, points):
    """The physical map of a transform value at physical points ``[P, D]``."""
    physical = idr.to_physical(transform, fixed, moving)
    return physical(torch.from_numpy(points.T[None].copy()))[0].T.numpy()


def resample_with_itk(moving_image, itk_transform, fixed):
    reference = tensor_to_image(torch.zeros(1, 1, *fixed.shape), fixed)
    warped = itk.resample_image_filter(
        moving_image, transform=itk_transform, use_reference_image=True, reference_image=reference
    )
    return itk.array_from_image(warped)


@pytest.fixture(params=KINDS)
def case(request, dimension):
    fixed, moving = geometry_pair(dimension)
    transform = example_transforms(dimension)[request.param]
    moving_tensor = smooth_image(moving.shape)
    return fixed, moving, transform, moving_tensor, tensor_to_image(moving_tensor, moving, itk.D)


@pytest.mark.parametrize("export", ["compact", "native"])
def test_itk_resampling_matches_the_torch_warp(case, export):
    fixed, moving, transform, moving_tensor, moving_image = case
    exported = (to_itk_transform if export == "compact" else to_itk_displacement_field)(
        transform, fixed, moving
    )
    by_itk = resample_with_itk(moving_image, exported, fixed)
    by_torch = transform.warp(moving_tensor, fixed.shape)[0, 0].numpy()
    inside = preimage_inside(transform, fixed.shape)
    assert inside.mean() > 0.5
    assert np.abs(by_itk - by_torch)[inside].max() < 1e-4


def test_compact_export_transforms_any_point_as_the_torch_map(case):
    fixed, moving, transform, _, _ = case
    exported = to_itk_transform(transform, fixed, moving)
    unit = np.random.default_rng(1).uniform(0, 1, (200, fixed.dimension))
    points = fixed.to_physical(unit)
    error = np.abs(itk_points(exported, points) - torch_points(transform, fixed, moving, points))
    assert error.max() < 1e-4  # millimetres


def test_native_export_transforms_fixed_voxels_as_the_torch_map(case):
    fixed, moving, transform, _, _ = case
    exported = to_itk_displacement_field(transform, fixed, moving)
    indices = np.random.default_rng(2).integers(0, fixed.size, (200, fixed.dimension))
    points = np.array([fixed.index_to_physical[:-1] @ np.append(i, 1.0) for i in indices])
    error = np.abs(itk_points(exported, points) - torch_points(transform, fixed, moving, points))
    assert error.max() < 1e-4


def test_compact_export_has_the_published_layout_for_a_model_grid_field():
    fixed, moving = geometry_pair(3)
    transform = example_transforms(3)["displacement"]
    exported = to_itk_transform(transform, fixed, moving)
    parts = [
        itk.down_cast(exported.GetNthTransform(i)) for i in range(exported.GetNumberOfTransforms())
    ]
    assert [p.GetNameOfClass() for p in parts] == [
        "AffineTransform",
        "DisplacementFieldTransform",
        "AffineTransform",
    ]
    field = parts[1].GetDisplacementField()
    assert tuple(field.GetLargestPossibleRegion().GetSize()) == tuple(
        reversed(transform.displacement.shape[2:])
    )
    assert itk.template(field)[1][0] is itk.Vector[itk.D, 3]


def test_native_field_image_is_double_on_the_fixed_grid(dimension):
    fixed, moving = geometry_pair(dimension)
    field = displacement_field_image(example_transforms(dimension)["composite"], fixed, moving)
    assert itk.template(field)[1] == (itk.Vector[itk.D, dimension], dimension)
    assert idr.ImageGeometry.from_image(field) == fixed or np.allclose(
        idr.ImageGeometry.from_image(field).unit_to_physical, fixed.unit_to_physical
    )


@pytest.mark.parametrize("suffix", [".h5", ".tfm"])
def test_transform_file_write_and_read_round_trip(case, tmp_path, suffix):
    fixed, moving, transform, _, _ = case
    path = tmp_path / f"transform{suffix}"
    write_transform(transform, path, fixed, moving)
    [read] = itk.transformread(str(path))
    unit = np.random.default_rng(3).uniform(-0.1, 1.1, (100, fixed.dimension))
    points = fixed.to_physical(unit)
    written = to_itk_transform(transform, fixed, moving)
    tolerance = 0 if suffix == ".h5" else 1e-6  # .tfm writes decimal text
    assert np.abs(itk_points(read, points) - itk_points(written, points)).max() <= tolerance
    value = read_transform(path, fixed, moving)
    inside = fixed.to_physical(np.random.default_rng(4).uniform(0, 1, (100, fixed.dimension)))
    assert (
        np.abs(
            torch_points(value, fixed, moving, inside)
            - torch_points(transform, fixed, moving, inside)
        ).max()
        < 1e-4
    )


def linear_itk_transforms(dimension):
    translation = itk.TranslationTransform[itk.D, dimension].New()
    translation.SetOffset([3.0, -2.0, 1.5][:dimension])
    affine = itk.AffineTransform[itk.D, dimension].New()
    matrix = np.eye(dimension) + 0.1 * np.random.default_rng(5).normal(size=(dimension, dimension))
    affine.SetMatrix(itk.matrix_from_array(matrix))
    affine.SetCenter([5.0, 2.0, -3.0][:dimension])
    affine.SetTranslation([1.0, 2.0, -1.0][:dimension])
    if dimension == 2:
        euler = itk.Euler2DTransform[itk.D].New()
        euler.SetAngle(0.2)
    else:
        euler = itk.Euler3DTransform[itk.D].New()
        euler.SetRotation(0.1, -0.2, 0.3)
    euler.SetCenter([10.0, -5.0, 2.0][:dimension])
    euler.SetTranslation([-1.0, 0.5, 2.0][:dimension])
    return {"translation": translation, "euler": euler, "affine": affine}


def itk_displacement_field_transform(geometry, seed=6):
    """An ITK DisplacementFieldTransform on an oblique grid of its own."""
    dimension = geometry.dimension
    field = itk.Image[itk.Vector[itk.D, dimension], dimension].New()
    field.SetRegions(list(geometry.size))
    field.Allocate()
    vectors = np.random.default_rng(seed).normal(scale=1.5, size=(*geometry.shape, dimension))
    itk.array_view_from_image(field)[:] = vectors
    idr.interop.set_geometry(field, geometry)
    transform = itk.DisplacementFieldTransform[itk.D, dimension].New()
    transform.SetDisplacementField(field)
    return transform


def itk_composite(dimension):
    fixed, moving = geometry_pair(dimension)
    linear = linear_itk_transforms(dimension)
    field_geometry = idr.ImageGeometry(
        (11, 9, 8)[:dimension], fixed.origin - 3.0, fixed.spacing * 3.1, moving.direction
    )
    composite = itk.CompositeTransform[itk.D, dimension].New()
    composite.AddTransform(linear["affine"])
    composite.AddTransform(itk_displacement_field_transform(field_geometry))
    composite.AddTransform(linear["euler"])
    composite.AddTransform(linear["translation"])
    return composite


def test_import_of_linear_displacement_and_composite_transforms(dimension):
    fixed, moving = geometry_pair(dimension)
    transforms = dict(linear_itk_transforms(dimension), composite=itk_composite(dimension))
    transforms["field"] = itk.down_cast(transforms["composite"].GetNthTransform(1))
    points = fixed.to_physical(np.random.default_rng(7).uniform(0, 1, (100, dimension)))
    for name, itk_transform in transforms.items():
        value = from_itk_transform(itk_transform, fixed, moving)
        error = np.abs(
            torch_points(value, fixed, moving, points) - itk_points(itk_transform, points)
        )
        assert error.max() < 1e-6, name


def test_import_then_export_reproduces_transform_point(dimension):
    fixed, moving = geometry_pair(dimension)
    original = itk_composite(dimension)
    again = to_itk_transform(from_itk_transform(original, fixed, moving), fixed, moving)
    # far outside the fixed image too: the field keeps ITK's own buffer and border rules
    points = fixed.to_physical(np.random.default_rng(8).uniform(-1, 2, (300, dimension)))
    assert np.abs(itk_points(again, points) - itk_points(original, points)).max() < 1e-8


def test_ants_mat_file_is_read(tmp_path):
    fixed, moving = geometry_pair(3)
    ants_transform = ants.create_ants_transform(
        transform_type="AffineTransform",
        precision="float",
        dimension=3,
        matrix=np.array([[1.1, 0.1, 0], [0, 0.9, 0.05], [0.02, 0, 1.0]]),
        translation=[4.0, -2.0, 1.0],
        center=[1.0, 2.0, 3.0],
    )
    path = tmp_path / "affine.mat"
    ants.write_transform(ants_transform, str(path))
    value = read_transform(path, fixed, moving)
    points = fixed.to_physical(np.random.default_rng(9).uniform(0, 1, (20, 3)))
    expected = np.array([ants_transform.apply_to_point(p.tolist()) for p in points])
    assert np.abs(torch_points(value, fixed, moving, points) - expected).max() < 1e-4


def test_unreadable_and_unsupported_transforms_are_refused(tmp_path):
    fixed, moving = geometry_pair(3)
    with pytest.raises(FileNotFoundError, match="no transform file"):
        read_transform(tmp_path / "missing.h5", fixed, moving)
    garbage = tmp_path / "garbage.h5"
    garbage.write_text("not a transform")
    with pytest.raises(ValueError, match="not a transform file ITK can read"):
        read_transform(garbage, fixed, moving)
    two = tmp_path / "two.tfm"
    linear = linear_itk_transforms(3)
    itk.transformwrite([linear["affine"], linear["euler"]], str(two))
    with pytest.raises(ValueError, match="2 transforms"):
        read_transform(two, fixed, moving)
    spline = itk.ThinPlateSplineKernelTransform[itk.D, 3].New()
    with pytest.raises(ValueError, match="cannot import an ITK ThinPlateSplineKernelTransform"):
        from_itk_transform(spline, fixed, moving)
    with pytest.raises(ValueError, match="2D"):
        from_itk_transform(linear_itk_transforms(2)["affine"], fixed, moving)
    flat = example_transforms(2)["displacement"]
    for export in (to_itk_transform, to_itk_displacement_field):
        with pytest.raises(ValueError, match="a 2D transform between a 3D and a 3D image"):
            export(flat, fixed, moving)
    batch = idr.Affine(torch.eye(4).repeat(2, 1, 1))
    with pytest.raises(ValueError, match="batch of one"):
        to_itk_transform(batch, fixed, moving)


def test_identity_round_trips_through_a_file(tmp_path, dimension):
    fixed, moving = geometry_pair(dimension)
    same = idr.from_physical(idr.Affine.identity(dimension, torch.float64), fixed, fixed)
    exported = to_itk_transform(same, fixed, fixed)
    assert exported.GetNumberOfTransforms() == 1
    path = tmp_path / "identity.h5"
    write_transform(same, path, fixed, fixed)
    read = read_transform(path, fixed, fixed)
    grid = idr.identity_grid((5,) * dimension, torch.float64)
    torch.testing.assert_close(read(grid), grid)
    empty = itk.CompositeTransform[itk.D, dimension].New()
    torch.testing.assert_close(
        from_itk_transform(empty, fixed, moving)(grid),
        idr.from_physical(idr.Affine.identity(dimension, torch.float64), fixed, moving)(grid),
    )


def test_mat_files_hold_affine_transforms_only(tmp_path):
    fixed, moving = geometry_pair(3)
    transforms = example_transforms(3)
    path = tmp_path / "affine.mat"
    write_transform(transforms["affine"], path, fixed, moving)
    points = fixed.to_physical(np.random.default_rng(10).uniform(0, 1, (20, 3)))
    read = read_transform(path, fixed, moving)
    assert (
        np.abs(
            torch_points(read, fixed, moving, points)
            - torch_points(transforms["affine"], fixed, moving, points)
        ).max()
        < 1e-8
    )
    ants_read = ants.read_transform(str(path))
    expected = torch_points(transforms["affine"], fixed, moving, points)
    # ANTs reads the matrix in single precision
    assert (
        np.abs(np.array([ants_read.apply_to_point(p.tolist()) for p in points]) - expected).max()
        < 1e-4
    )
    with pytest.raises(ValueError, match="one affine transform"):
        write_transform(transforms["composite"], tmp_path / "field.mat", fixed, moving)
    assert [p.name for p in tmp_path.iterdir()] == ["affine.mat"]


class CountingTransform(idr.Transform):
    """The identity, counting how often it is evaluated."""

    calls = 0

    @property
    def dimension(self):
        return 2

    def __call__(self, coords):
        CountingTransform.calls += 1
        return coords


def test_writing_to_an_unwritable_place_fails_before_any_work(tmp_path):
    fixed, moving = geometry_pair(2)
    transform = example_transforms(2)["displacement"]
    with pytest.raises(OSError, match="not a writable directory"):
        write_displacement_field(
            CountingTransform(), tmp_path / "missing" / "w.nii.gz", fixed, moving
        )
    assert CountingTransform.calls == 0
    with pytest.raises(OSError, match="not a writable directory"):
        write_transform(transform, tmp_path / "missing" / "t.h5", fixed, moving)
    for name in ("w.mhd", "w.hdr", "warp"):  # two-file formats cannot be renamed whole
        with pytest.raises(ValueError, match="must end in one of"):
            write_displacement_field(CountingTransform(), tmp_path / name, fixed, moving)
    (tmp_path / "taken.nii.gz").mkdir()
    with pytest.raises(IsADirectoryError):
        write_displacement_field(CountingTransform(), tmp_path / "taken.nii.gz", fixed, moving)
    assert CountingTransform.calls == 0
    assert [p.name for p in tmp_path.iterdir()] == ["taken.nii.gz"]


def test_a_bspline_transform_is_imported_as_a_sampled_field(dimension):
    """elastix gives B-splines; they are sampled on their domain."""
    fixed, moving = geometry_pair(dimension)
    corners = fixed.to_physical(np.array(list(itertools.product([0.0, 1.0], repeat=dimension))))
    bspline = itk.BSplineTransform[itk.D, dimension, 3].New()  # over the fixed image
    bspline.SetTransformDomainOrigin((corners.min(0) - 5).tolist())
    bspline.SetTransformDomainPhysicalDimensions((np.ptp(corners, 0) + 10).tolist())
    mesh = itk.Size[dimension]()
    mesh.Fill(4)
    bspline.SetTransformDomainMeshSize(mesh)
    count = bspline.GetNumberOfParameters()
    smooth = np.sin(np.linspace(0, 6, count)) * 2.0  # mm, varying from point to point
    bspline.SetParameters(itk.OptimizerParameters[itk.D](smooth.tolist()))
    value = from_itk_transform(bspline, fixed, moving)
    points = fixed.to_physical(np.random.default_rng(0).random((300, dimension)))
    expected = itk_points(bspline, points)
    assert np.abs(expected - points).max() > 0.5  # it moves points
    np.testing.assert_allclose(torch_points(value, fixed, moving, points), expected, atol=0.05)

"""elastix and ANTs as pipeline steps: the result holds the initial transform exactly once."""

import sys
import tempfile

import itk
import numpy as np
import pytest
from conftest import oblique_direction

from itkdeepreg.interop import classical
from itkdeepreg.interop.classical import ants_registration, elastix_registration

SHAPE = (64, 64)  # array shape (y, x)


def image_of(function, origin, pixel_type=itk.F, spacing=(1.0, 1.1)):
    """A 2D oblique, flipped image whose voxel at physical point p holds ``function(p)``."""
    direction = oblique_direction(2, 0.5)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")[::-1], -1)
    points = np.asarray(origin) + index @ (direction @ np.diag(spacing)).T  # [y, x, (x, y)]
    array = np.asarray(function(points), dtype=np.dtype(pixel_type.dtype))
    image = itk.image_from_array(np.ascontiguousarray(array))
    image.SetOrigin(list(origin))
    image.SetSpacing(list(spacing))
    image.SetDirection(itk.matrix_from_array(direction))
    return image


def blobs(points):
    x, y = points[..., 0], points[..., 1]
    return 100 * (
        np.exp(-((x - 14) ** 2 / 150 + (y - 30) ** 2 / 90))
        + 0.7 * np.exp(-((x - 34) ** 2 / 70 + (y - 17) ** 2 / 160))
        + 0.5 * np.exp(-((x - 28) ** 2 / 60 + (y - 37) ** 2 / 50))
    )


FIXED_ORIGIN = (-20.0, 40.0)
MOVING_ORIGIN = (-23.0, 37.0)


def affine(matrix, translation):
    transform = itk.AffineTransform[itk.D, 2].New()
    transform.SetMatrix(itk.matrix_from_array(np.asarray(matrix, dtype=np.float64)))
    transform.SetTranslation([float(v) for v in translation])
    return transform


def moved_pair(matrix, translation, pixel_type=itk.F):
    """``fixed`` and ``moving`` with ``moving(T(x)) = fixed(x)`` for the affine ``T``."""
    matrix, translation = np.asarray(matrix), np.asarray(translation)
    inverse = np.linalg.inv(matrix)
    fixed = image_of(blobs, FIXED_ORIGIN, pixel_type)
    moving = image_of(lambda y: blobs((y - translation) @ inverse.T), MOVING_ORIGIN, pixel_type)
    return fixed, moving, affine(matrix, translation)


def small_field_transform(like):
    """A smooth displacement field (up to ~1 mm) on a coarse grid over ``like``."""
    field = itk.Image[itk.Vector[itk.D, 2], 2].New()
    field.SetRegions([9, 9])
    field.SetOrigin(like.GetOrigin())
    field.SetSpacing([8.0, 8.8])
    field.SetDirection(like.GetDirection())
    field.Allocate()
    j, i = np.meshgrid(np.arange(9), np.arange(9), indexing="ij")
    vectors = itk.array_view_from_image(field)
    vectors[..., 0] = 0.8 * np.sin(i / 3.0)
    vectors[..., 1] = -0.6 * np.cos(j / 4.0)
    transform = itk.DisplacementFieldTransform[itk.D, 2].New()
    transform.SetDisplacementField(field)
    return transform


def initial_pair():
    """``fixed``, ``moving`` and the exact map between them: a small warp, then an affine map.

    ``moving(known(z)) = blobs(z)`` and ``fixed(x) = blobs(warp(x))``, so
    ``moving(initial(x)) = fixed(x)`` for ``initial = known o warp``.
    """
    _, moving, known = moved_pair([[1.02, 0.06], [-0.05, 0.97]], [2.5, -1.5])
    warp_transform = small_field_transform(moving)
    initial = itk.CompositeTransform[itk.D, 2].New()
    initial.AddTransform(known)
    initial.AddTransform(warp_transform)  # added last: applied first
    fixed = image_of(
        lambda p: blobs(mapped(warp_transform, p.reshape(-1, 2)).reshape(p.shape)), FIXED_ORIGIN
    )
    return fixed, moving, initial


def fixed_points(image, step=6):
    """Physical points of the fixed image's voxels away from its border, ``[P, 2]``."""
    points = []
    for j in range(8, SHAPE[0] - 8, step):
        for i in range(8, SHAPE[1] - 8, step):
            points.append(np.asarray(image.TransformIndexToPhysicalPoint((i, j))))
    return np.array(points)


def mapped(transform, points):
    return np.array([transform.TransformPoint(p.tolist()) for p in points])


def warp(moving, transform, fixed):
    return itk.array_from_image(
        itk.resample_image_filter(
            moving, transform=transform, use_reference_image=True, reference_image=fixed
        )
    )


def mean_squared_difference(fixed, moving, transform):
    inner = (slice(10, -10), slice(10, -10))
    return float(
        np.mean((warp(moving, transform, fixed) - itk.array_from_image(fixed))[inner] ** 2)
    )


def parts_of(composite):
    return [
        itk.down_cast(composite.GetNthTransform(i)).GetNameOfClass()
        for i in range(composite.GetNumberOfTransforms())
    ]


def elastix_map(transform, iterations, resolutions=1, **extra):
    parameter_map = itk.ParameterObject.New().GetDefaultParameterMap(transform, resolutions)
    parameter_map["Metric"] = ["AdvancedMeanSquares"]  # MI is poorly conditioned on blobs
    parameter_map["MaximumNumberOfIterations"] = [str(iterations)]
    parameter_map.update(extra)
    return parameter_map


@pytest.fixture
def clean_folders(tmp_path, monkeypatch):
    """An empty working directory and an empty folder for temporary files, checked after."""
    work, temporary = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    temporary.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    yield
    assert not list(work.iterdir()) and not list(temporary.iterdir())


# ----------------------------------------------------------------------------- elastix


def test_elastix_rigid_recovers_a_known_shift(clean_folders):
    rotation = 0.04
    matrix = [[np.cos(rotation), -np.sin(rotation)], [np.sin(rotation), np.cos(rotation)]]
    fixed, moving, known = moved_pair(matrix, [2.5, -1.5], pixel_type=itk.SS)
    mask = image_of(lambda p: (blobs(p) > 1).astype(np.float32), FIXED_ORIGIN, itk.UC)
    result = elastix_registration(
        fixed, moving, [elastix_map("rigid", 200, resolutions=2)], fixed_mask=mask
    )
    assert isinstance(result, itk.CompositeTransform[itk.D, 2])
    assert parts_of(result) == ["Euler2DTransform"]  # exact: a rigid map stays rigid
    points = fixed_points(fixed)
    assert np.abs(mapped(result, points) - mapped(known, points)).max() < 0.15  # mm
    identity = itk.IdentityTransform[itk.D, 2].New()
    assert mean_squared_difference(fixed, moving, result) < 0.05 * mean_squared_difference(
        fixed, moving, identity
    )


@pytest.mark.parametrize("as_object", [False, True], ids=["list", "ParameterObject"])
def test_elastix_result_holds_the_initial_transform_once(as_object, clean_folders):
    fixed, moving, initial = initial_pair()  # the start is the optimum: little to move
    maps = [elastix_map("translation", 3)]
    if as_object:
        parameters = itk.ParameterObject.New()
        parameters.AddParameterMap(maps[0])
        maps = parameters
    result = elastix_registration(fixed, moving, maps, initial_transform=initial, threads=1)
    assert parts_of(result) == [
        "TranslationTransform",
        "AffineTransform",
        "DisplacementFieldTransform",
    ]
    points = fixed_points(fixed)
    assert np.abs(mapped(result, points) - mapped(initial, points)).max() < 0.1
    twice = np.abs(mapped(initial, mapped(initial, points)) - mapped(initial, points)).min()
    assert twice > 1.0  # so 0.1 mm tells once from twice (and from never: |initial - id| > 1)


def test_elastix_add_combination_is_sampled_by_transformix(clean_folders):
    fixed, moving, known = moved_pair([[1.02, 0.06], [-0.05, 0.97]], [2.5, -1.5])
    parameter_map = elastix_map("translation", 3, HowToCombineTransforms=["Add"])
    result = elastix_registration(fixed, moving, [parameter_map], initial_transform=known)
    assert parts_of(result) == ["DisplacementFieldTransform"]
    field = itk.down_cast(result.GetNthTransform(0)).GetDisplacementField()
    assert tuple(field.GetLargestPossibleRegion().GetSize()) == SHAPE[::-1]
    points = fixed_points(fixed)
    assert np.abs(mapped(result, points) - mapped(known, points)).max() < 0.1


def test_elastix_threads_with_a_multi_metric_map_and_global_threads_restored(clean_folders):
    threader = itk.MultiThreaderBase
    before = threader.GetGlobalMaximumNumberOfThreads(), threader.GetGlobalDefaultNumberOfThreads()
    fixed, moving, _ = moved_pair(np.eye(2), [1.0, 0.5])
    bspline = itk.ParameterObject.New().GetDefaultParameterMap("bspline", 1, 16.0)
    bspline["MaximumNumberOfIterations"] = ["5"]  # MultiMetricMultiResolutionRegistration
    # elastix's own SetNumberOfThreads crashes here (ITKElastix issue #160)
    result = elastix_registration(fixed, moving, [bspline], threads=1)
    assert parts_of(result) == ["BSplineTransform"]  # exact: an ITK B-spline
    after = threader.GetGlobalMaximumNumberOfThreads(), threader.GetGlobalDefaultNumberOfThreads()
    assert after == before


# -------------------------------------------------------------------------------- ANTs


def test_ants_result_holds_the_initial_transform_once(clean_folders, monkeypatch):
    import ants  # noqa: F401  (ANTsPy used before, with its default thread count)

    fixed, moving, initial = initial_pair()
    monkeypatch.setitem(classical._ants_threads, "known", True)
    monkeypatch.setitem(classical._ants_threads, "threads", None)
    with pytest.warns(RuntimeWarning, match="threads=1 is not applied"):
        result = ants_registration(
            fixed,
            moving,
            "Translation",
            initial_transform=initial,
            threads=1,
            aff_metric="meansquares",
            aff_iterations=(3, 0, 0, 0),
        )
    # ANTs' queue: the initial affine, the initial field (rewritten), then its own stage
    assert parts_of(result) == [
        "AffineTransform",
        "DisplacementFieldTransform",
        "TranslationTransform",
    ]
    points = fixed_points(fixed)
    assert np.abs(mapped(result, points) - mapped(initial, points)).max() < 0.1


def test_ants_syn_improves_a_deformed_pair(clean_folders):
    def deformed(points):
        x, y = points[..., 0], points[..., 1]
        return blobs(np.stack([x + 1.5 * np.sin(y / 9.0), y + 1.2 * np.cos(x / 11.0)], -1))

    fixed = image_of(blobs, FIXED_ORIGIN)
    moving = image_of(deformed, MOVING_ORIGIN, itk.D)
    result = ants_registration(
        fixed, moving, "SyNOnly", reg_iterations=(20, 10), syn_metric="meansquares"
    )
    assert "DisplacementFieldTransform" in parts_of(result)
    field = next(
        itk.down_cast(result.GetNthTransform(i))
        for i in range(result.GetNumberOfTransforms())
        if parts_of(result)[i] == "DisplacementFieldTransform"
    ).GetDisplacementField()
    assert type(field) is itk.Image[itk.Vector[itk.D, 2], 2]
    assert np.allclose(field.GetOrigin(), fixed.GetOrigin(), atol=1e-4)  # on the fixed grid
    identity = itk.IdentityTransform[itk.D, 2].New()
    assert mean_squared_difference(fixed, moving, result) < 0.3 * mean_squared_difference(
        fixed, moving, identity
    )


# --------------------------------------------------------------------------- pipeline


def test_3d_elastix_affine_then_ants_syn_from_it(clean_folders):
    """The pipeline the steps are for: an elastix affine result seeds ANTs SyN (3D, oblique)."""
    shape, spacing = (24, 28, 26), [1.6, 1.3, 1.5]
    direction = oblique_direction(3, 0.5)

    def volume(function, origin):
        index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")[::-1], -1)
        points = np.asarray(origin) + index @ (direction @ np.diag(spacing)).T
        image = itk.image_from_array(np.ascontiguousarray(function(points), dtype=np.float32))
        image.SetOrigin(list(origin))
        image.SetSpacing(spacing)
        image.SetDirection(itk.matrix_from_array(direction))
        return image

    centre = np.array([0.0, 0.0, 0.0]) + direction @ (np.diag(spacing) @ [13.0, 14.0, 12.5])

    def blobs3(p):
        return 100 * (
            np.exp(-(((p - centre - [3, 0, 0]) ** 2) / [60, 40, 80]).sum(-1))
            + 0.7 * np.exp(-(((p - centre + [4, 5, 2]) ** 2) / [40, 70, 50]).sum(-1))
        )

    matrix = np.eye(3) + 0.03 * np.array([[0, 1, 0], [-1, 0, 0.5], [0, -0.5, 0]])
    translation = np.array([1.5, -1.0, 2.0])
    fixed = volume(blobs3, [0.0, 0.0, 0.0])
    moving = volume(lambda y: blobs3((y - translation) @ np.linalg.inv(matrix).T), [1.0, -1.0, 0.5])
    known = itk.AffineTransform[itk.D, 3].New()
    known.SetMatrix(itk.matrix_from_array(matrix))
    known.SetTranslation(translation.tolist())
    parameter_map = itk.ParameterObject.New().GetDefaultParameterMap("affine", 2)
    parameter_map["Metric"] = ["AdvancedMeanSquares"]
    parameter_map["MaximumNumberOfIterations"] = ["200"]
    affine_result = elastix_registration(fixed, moving, [parameter_map])
    points = np.array(
        [
            fixed.TransformIndexToPhysicalPoint([i, j, k])
            for i in (8, 12, 16)
            for j in (8, 14, 20)
            for k in (8, 13, 18)
        ]
    )
    assert np.abs(mapped(affine_result, points) - mapped(known, points)).max() < 0.2
    result = ants_registration(
        fixed,
        moving,
        "SyNOnly",
        initial_transform=affine_result,
        reg_iterations=(10, 5),
        syn_metric="meansquares",
    )
    assert parts_of(result)[-1] == "DisplacementFieldTransform"  # applied first: SyN's warp
    assert np.abs(mapped(result, points) - mapped(known, points)).max() < 0.3
    identity = itk.IdentityTransform[itk.D, 3].New()
    inner = (slice(4, -4),) * 3
    differences = [
        np.mean((warp(moving, t, fixed) - itk.array_from_image(fixed))[inner] ** 2)
        for t in (identity, result)
    ]
    assert differences[1] < 0.02 * differences[0]


# ------------------------------------------------------------------------------ errors


def test_errors():
    fixed, moving, _ = moved_pair(np.eye(2), [0.0, 0.0])
    with pytest.raises(ValueError, match="parameter_maps is empty"):
        elastix_registration(fixed, moving, [])
    with pytest.raises(ValueError, match="parameter_maps is empty"):
        elastix_registration(fixed, moving, itk.ParameterObject.New())
    for bad in ["Foo", "antsRegistrationSyN[zz]"]:
        with pytest.raises(ValueError, match="type_of_transform"):
            ants_registration(fixed, moving, bad)
    with pytest.raises(TypeError, match="type_of_transform"):
        ants_registration(fixed, moving, 3)
    image_4d = itk.Image[itk.F, 4].New()
    image_4d.SetRegions([4, 4, 4, 4])
    image_4d.Allocate()
    with pytest.raises(ValueError, match="2D or 3D"):
        elastix_registration(image_4d, image_4d, [elastix_map("rigid", 1)])
    with pytest.raises(ValueError, match="2D or 3D"):
        ants_registration(image_4d, image_4d)
    with pytest.raises(TypeError, match="itk.Image"):
        ants_registration(np.zeros(SHAPE), moving)
    with pytest.raises(TypeError, match="outprefix"):
        ants_registration(fixed, moving, outprefix="here_")
    with pytest.raises(ValueError, match="grid"):
        elastix_registration(fixed, moving, [elastix_map("rigid", 1)], fixed_mask=moving)
    with pytest.raises(TypeError, match="ITK transform"):
        ants_registration(fixed, moving, initial_transform=np.eye(3))


def test_missing_ants_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ants", None)  # import ants now raises ImportError
    fixed, moving, _ = moved_pair(np.eye(2), [0.0, 0.0])
    with pytest.raises(ImportError, match=r'pip install "itkdeepreg\[interop\]"'):
        ants_registration(fixed, moving)

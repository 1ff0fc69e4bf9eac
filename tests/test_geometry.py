import itk
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import geometry_pair

from itkdeepreg import ImageGeometry
from itkdeepreg.geometry import PLACEMENTS
from itkdeepreg.interop import set_geometry
from itkdeepreg.sampling import identity_grid, sample
from itkdeepreg.transforms import Affine


def itk_image(geometry, start=None):
    image = itk.Image[itk.F, geometry.dimension].New()
    region = itk.ImageRegion[geometry.dimension]()
    region.SetSize(list(geometry.size))
    region.SetIndex(list(start) if start is not None else [0] * geometry.dimension)
    image.SetRegions(region)
    image.Allocate()
    set_geometry(image, geometry)
    return image


def test_unit_cube_corners_are_first_and_last_voxel_centres(dimension):
    geometry, _ = geometry_pair(dimension)
    image = itk_image(geometry)
    # unit (0,...,0) is index 0; unit coordinate along tensor axis i covers ITK axis D-1-i
    last = [n - 1 for n in geometry.size]
    np.testing.assert_allclose(
        geometry.to_physical(np.zeros(dimension)),
        image.TransformIndexToPhysicalPoint([0] * dimension),
        atol=1e-12,
    )
    np.testing.assert_allclose(
        geometry.to_physical(np.ones(dimension)),
        image.TransformIndexToPhysicalPoint(last),
        atol=1e-12,
    )


def test_unit_to_physical_matches_itk_at_continuous_indices(dimension):
    geometry, _ = geometry_pair(dimension)
    image = itk_image(geometry)
    rng = np.random.default_rng(0)
    for _ in range(20):
        index = rng.uniform(-1, np.asarray(geometry.size), dimension)  # inside and outside
        unit = index[::-1] / (np.asarray(geometry.shape) - 1)
        continuous = itk.ContinuousIndex[itk.D, dimension]()
        for axis, value in enumerate(index):
            continuous.SetElement(axis, float(value))
        expected = image.TransformContinuousIndexToPhysicalPoint(continuous)
        np.testing.assert_allclose(geometry.to_physical(unit), expected, atol=1e-10)
        np.testing.assert_allclose(geometry.to_unit(np.asarray(expected)), unit, atol=1e-12)


def test_region_with_non_zero_start_index_folds_into_origin():
    geometry, _ = geometry_pair(3)
    image = itk_image(geometry, start=(5, -2, 3))
    read = ImageGeometry.from_image(image)
    np.testing.assert_allclose(
        read.to_physical(np.zeros(3)), image.TransformIndexToPhysicalPoint([5, -2, 3]), atol=1e-10
    )
    assert read.size == geometry.size


def test_from_image_reads_what_was_set(dimension):
    geometry, _ = geometry_pair(dimension)
    read = ImageGeometry.from_image(itk_image(geometry))
    assert read.size == geometry.size and read.shape == geometry.shape
    np.testing.assert_allclose(read.direction, geometry.direction, atol=1e-15)
    np.testing.assert_allclose(read.spacing, geometry.spacing)
    np.testing.assert_allclose(read.origin, geometry.origin)


def test_resized_grid_covers_the_same_unit_cube(dimension):
    geometry, _ = geometry_pair(dimension)
    model = geometry.resized((175,) * dimension)
    assert model.shape == (175,) * dimension
    np.testing.assert_allclose(model.unit_to_physical, geometry.unit_to_physical, atol=1e-10)
    assert not np.allclose(model.spacing, geometry.spacing)


@pytest.mark.parametrize("model_shape", [(9, 5, 13), (40, 31, 20)], ids=["down", "up"])
def test_the_extent_placement_samples_where_f_interpolate_does(model_shape):
    """The published code resizes onto its grid with F.interpolate(align_corners=False): an
    image sampled at the voxels of the grid placed by "extent" is that resize, both when the
    grid is coarser than the image and when it is finer (where the edge is clamped)."""
    geometry, _ = geometry_pair(3)
    image = torch.rand(1, 1, *geometry.shape, dtype=torch.float64, generator=_generator())
    placement = Affine(torch.from_numpy(geometry.placed_to_unit(model_shape, "extent")))
    ours = sample(image, placement(identity_grid(model_shape, torch.float64)))
    published = F.interpolate(image, size=model_shape, mode="trilinear", align_corners=False)
    assert (ours - published).abs().max() < 1e-12


def test_a_placed_grid_is_a_geometry_of_the_placement(dimension):
    geometry, _ = geometry_pair(dimension)
    shape = (175,) * dimension
    for placement in PLACEMENTS:
        model = geometry.placed(shape, placement)
        assert model.shape == shape and np.array_equal(model.direction, geometry.direction)
        np.testing.assert_allclose(
            model.unit_to_physical,
            geometry.unit_to_physical @ geometry.placed_to_unit(shape, placement),
            atol=1e-10,
        )
    assert geometry.placed(shape, "corners") == geometry.resized(shape)
    # "extent": the grid's cells tile the image's extent, a cell N/n voxels wide
    extent = geometry.placed(shape, "extent")
    np.testing.assert_allclose(
        extent.spacing * 175, geometry.spacing * np.array(geometry.size), rtol=1e-12
    )
    with pytest.raises(ValueError, match="placement must be one of"):
        geometry.placed_to_unit(shape, "centre")


def _generator():
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(size=(4, 4, 4, 4)), "2D or 3D"),
        (dict(size=(4, 1, 4)), "at least two voxels"),
        (dict(size=(4, 4), spacing=[1.0, 0.0]), "positive"),
        (dict(size=(4, 4), origin=[1.0, 2.0, 3.0]), "2 entries"),
        (dict(size=(4, 4), direction=[[1, 0], [2, 0]]), "invertible"),
        (dict(size=(4, 4), origin=[np.nan, 0.0]), "finite"),
    ],
)
def test_bad_geometry_is_refused(arguments, message):
    with pytest.raises(ValueError, match=message):
        ImageGeometry(**arguments)


def test_a_centred_grid_has_its_centre_where_it_was_asked():
    direction = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    geometry = ImageGeometry.centred((7, 4, 5), (1.0, 2.5, 3.0), direction, (10.0, -5.0, 2.0))
    np.testing.assert_allclose(geometry.centre, [10.0, -5.0, 2.0], atol=1e-12)
    first, last = geometry.to_physical(np.zeros(3)), geometry.to_physical(np.ones(3))
    np.testing.assert_allclose((first + last) / 2, geometry.centre, atol=1e-12)
    # one voxel along tensor axis 0 (ITK's z, 5 voxels) is a quarter of the cube
    np.testing.assert_array_equal(geometry.voxels_per_unit, [4, 3, 6])

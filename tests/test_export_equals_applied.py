"""What InverseConsistentTransform writes is what it applies, for every kind of transform.

The .h5 file read back by ITK must map points as ``TransformPoint`` does, resample as ``Warp``
(``GetOutput``) does, and have the Jacobian that ``GetJacobianDeterminant`` reports; the
displacement-field image must agree with both.
"""

import itk
import numpy as np
import pytest
import torch
from conftest import geometry_pair, random_affine, smooth_field

import itkdeepreg as idr
from itkdeepreg.interop import InverseConsistentTransform, tensor_to_image
from itkdeepreg.optimize.loop import OptimizationResult

KINDS = [
    "affine",
    "displacement_border",
    "displacement_itk",
    "velocity_squaring",
    "velocity_integration",
    "composite",
    "network_field",
]


def geometries(dimension):
    """conftest's oblique, flipped, anisotropic pair on small grids of different sizes (tensor
    shapes), so that each case takes a second."""
    shapes = {2: ((12, 14), (15, 13)), 3: ((10, 14, 12), (12, 11, 13))}[dimension]
    return tuple(g.resized(shape) for g, shape in zip(geometry_pair(dimension), shapes))


def make_transform(kind, dimension):
    """Float32 fields (as registrations give them) moving points by 1-3 voxels."""
    grid = (7, 8, 6)[:dimension]
    field = smooth_field(grid, 0.06, seed=5, dtype=torch.float32)
    shift = torch.eye(dimension + 1, dtype=torch.float64)
    shift[0, dimension] = 0.13  # part of the fixed image reads the field off its grid
    if kind == "affine":
        return random_affine(dimension, seed=1, scale=0.08)
    if kind.startswith("displacement"):
        return idr.Displacement(field, outside=kind.split("_")[1]) @ idr.Affine(shift)
    if kind == "network_field":  # a network's answer: one field between its grid's placements
        fixed, moving = geometries(dimension)
        to_fixed, to_moving = (
            idr.Affine(torch.from_numpy(g.placed_to_unit(grid, "extent"))) for g in (fixed, moving)
        )
        return to_moving @ idr.Displacement(field, outside="itk") @ to_fixed.inverse()
    if kind == "velocity_squaring":
        return idr.Velocity(field)
    integrated = idr.Velocity(field, method="integration")
    if kind == "velocity_integration":
        return integrated
    displacement = idr.Displacement(smooth_field(grid, 0.03, seed=6, dtype=torch.float32))
    return random_affine(dimension, seed=1) @ integrated @ displacement


def fixed_points(fixed, count=500):
    """Random physical points of the fixed image: continuous indices in [-0.5, N - 0.5]."""
    index = np.random.default_rng(0).uniform(
        -0.5, np.array(fixed.size) - 0.5, (count, fixed.dimension)
    )
    return index @ fixed.index_to_physical[:-1, :-1].T + fixed.index_to_physical[:-1, -1]


def voxel_points(geometry):
    """The physical points of every voxel, ``[*shape, D]`` (array order, x-y-z vectors)."""
    axes = [np.arange(n) for n in geometry.shape]
    index = np.stack(np.meshgrid(*axes, indexing="ij")[::-1], -1).astype(np.float64)
    return index @ geometry.index_to_physical[:-1, :-1].T + geometry.index_to_physical[:-1, -1]


def physical_jacobian_determinant(mapped, geometry):
    """``det`` of the physical Jacobian of a map given at the voxels, by central differences
    (one-sided at the edges) along the index axes."""
    dimension = geometry.dimension
    # d mapped / d index_k: array axis a is ITK index axis D-1-a
    columns = np.gradient(mapped, axis=tuple(range(dimension)))[::-1]
    by_index = np.stack(columns, -1)  # [..., D out, D index]
    return np.linalg.det(by_index) / np.linalg.det(geometry.index_to_physical[:-1, :-1])


def lands_inside(mapped, moving):
    """Where physical points lie within the moving voxels' hull: Warp must agree with ITK
    beyond it too (ITK repeats the edge for half a voxel, then reads 0)."""
    linear, offset = moving.index_to_physical[:-1, :-1], moving.index_to_physical[:-1, -1]
    index = (mapped - offset) @ np.linalg.inv(linear).T
    return ((index >= 0) & (index <= np.array(moving.size) - 1)).all(-1)


def map_of(itk_transform, points):
    flat = points.reshape(-1, points.shape[-1])
    return np.array([itk_transform.TransformPoint(p.tolist()) for p in flat]).reshape(points.shape)


@pytest.mark.parametrize("kind", KINDS)
def test_the_written_transform_is_the_applied_transform(kind, dimension, tmp_path):
    fixed, moving = geometries(dimension)
    value = make_transform(kind, dimension)
    transform = InverseConsistentTransform(value, None, fixed, moving)
    transform.Write(tmp_path / "forward.h5")
    transform.WriteDisplacementField(tmp_path / "field.nii.gz")
    (written,) = itk.transformread(str(tmp_path / "forward.h5"))

    # points: the file maps them as TransformPoint does
    points = fixed_points(fixed)
    ours = np.array([transform.TransformPoint(p) for p in points])
    by_file = map_of(written, points)
    moved = np.abs(ours - points).max()
    assert np.abs(by_file - ours).max() < 1e-4, (kind, np.abs(by_file - ours).max(), moved)

    # the displacement-field image holds the file's map at the fixed voxels
    voxels = voxel_points(fixed)
    mapped = map_of(written, voxels)
    reader = itk.ImageFileReader[itk.VectorImage[itk.D, dimension]].New(
        FileName=str(tmp_path / "field.nii.gz")
    )
    reader.Update()
    field = itk.array_from_image(reader.GetOutput())
    assert np.abs(voxels + field - mapped).max() < 1e-4

    # GetOutput (Warp) resamples as ITK does through the file
    generator = torch.Generator().manual_seed(1)
    image = tensor_to_image(torch.rand(1, 1, *moving.shape, generator=generator), moving, itk.F)
    reference = tensor_to_image(torch.zeros(1, 1, *fixed.shape), fixed, itk.F)
    warped = itk.array_from_image(transform.Warp(image))
    by_itk = itk.array_from_image(
        itk.resample_image_filter(
            image, transform=written, use_reference_image=True, reference_image=reference
        )
    )
    inside = lands_inside(mapped, moving)
    assert 0.5 < inside.mean() < 1  # and some land at the edge or beyond it
    # measured <= 1.2e-6: torch warps a float32 image in float32 (ITK in double)
    assert np.abs(warped - by_itk).max() < 1e-5

    # the Jacobian reported is the file's; measured <= 1.2e-7, the image is float32
    jacobian = itk.array_from_image(transform.GetJacobianDeterminant())
    assert np.abs(jacobian - physical_jacobian_determinant(mapped, fixed)).max() < 1e-5


def test_get_output_is_the_moving_image_resampled_through_the_written_file(tmp_path):
    """The registration path: a method's integrated velocity field, warped by GetOutput and
    written by GetTransform().Write, is one map."""
    fixed, moving = geometries(3)
    velocity = make_transform("velocity_integration", 3)

    def method(pair):
        return OptimizationResult(velocity, velocity.inverse())

    generator = torch.Generator().manual_seed(1)
    image = tensor_to_image(torch.rand(1, 1, *moving.shape, generator=generator), moving, itk.F)
    reference = tensor_to_image(torch.zeros(1, 1, *fixed.shape), fixed, itk.F)
    warped, transform = idr.deep_registration_method(
        reference, image, method=method, show_progress=False
    )
    transform.Write(tmp_path / "forward.h5", tmp_path / "inverse.h5")
    (written,) = itk.transformread(str(tmp_path / "forward.h5"))
    by_itk = itk.array_from_image(
        itk.resample_image_filter(
            image, transform=written, use_reference_image=True, reference_image=reference
        )
    )
    inside = lands_inside(map_of(written, voxel_points(fixed)), moving)
    assert 0.5 < inside.mean() < 1
    assert np.abs(itk.array_from_image(warped) - by_itk).max() < 1e-5
    (inverse,) = itk.transformread(str(tmp_path / "inverse.h5"))
    point = voxel_points(moving)[5, 5, 5]
    assert np.allclose(
        inverse.TransformPoint(point.tolist()),
        transform.GetInverseTransform().TransformPoint(point),
        atol=1e-4,
    )

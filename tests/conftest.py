"""Shared test material: oblique, flipped, anisotropic geometries and smooth fields."""

import math

import numpy as np
import pytest
import torch

import itkdeepreg as idr


def oblique_direction(dimension, angle):
    """Direction cosines with a rotation and a flip (determinant -1)."""
    c, s = math.cos(angle), math.sin(angle)
    if dimension == 2:
        rotation = np.array([[c, -s], [s, c]])
    else:
        tilt = np.array(
            [[1, 0, 0], [0, math.cos(0.4), -math.sin(0.4)], [0, math.sin(0.4), math.cos(0.4)]]
        )
        rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ tilt
    flip = np.diag([1.0] * (dimension - 1) + [-1.0])
    return rotation @ flip


def geometry_pair(dimension):
    """A fixed and a moving geometry that differ in every respect, both oblique and flipped."""
    if dimension == 2:
        fixed = idr.ImageGeometry((41, 29), [12.0, -30.0], [0.9, 1.7], oblique_direction(2, 0.5))
        moving = idr.ImageGeometry((37, 33), [10.0, -28.0], [1.1, 1.4], oblique_direction(2, 0.4))
    else:
        fixed = idr.ImageGeometry(
            (30, 26, 19), [12.0, -30.0, 4.0], [1.2, 0.8, 2.5], oblique_direction(3, 0.5)
        )
        moving = idr.ImageGeometry(
            (27, 28, 17), [10.0, -28.0, 6.0], [1.1, 0.9, 2.9], oblique_direction(3, 0.4)
        )
    assert np.linalg.det(fixed.direction) < 0 and np.linalg.det(moving.direction) < 0
    return fixed, moving


def smooth_image(shape, dtype=torch.float64):
    """A smooth test image with values in [0, 1]."""
    grid = idr.identity_grid(shape, dtype=dtype)
    wave = sum(torch.sin((3 + 2 * i) * grid[:, i : i + 1] + i) for i in range(len(shape)))
    return (wave / len(shape) + 1) / 2


def smooth_field(shape, amplitude, seed=0, dtype=torch.float64):
    """A random smooth vector field ``[1, D, *shape]`` of about ``amplitude`` (unit-cube units)."""
    generator = torch.Generator().manual_seed(seed)
    dimension = len(shape)
    coarse = torch.randn(1, dimension, *[4] * dimension, generator=generator, dtype=dtype)
    mode = "bilinear" if dimension == 2 else "trilinear"
    return amplitude * torch.nn.functional.interpolate(
        coarse, size=shape, mode=mode, align_corners=True
    )


def random_affine(dimension, seed=0, scale=0.05):
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.eye(dimension + 1, dtype=torch.float64)
    matrix[:dimension] += scale * torch.randn(
        dimension, dimension + 1, generator=generator, dtype=torch.float64
    )
    return idr.Affine(matrix)


def example_transforms(dimension):
    """One transform of every kind, as a registration would produce them."""
    grid = (17, 19) if dimension == 2 else (13, 15, 11)
    affine = random_affine(dimension, seed=1)
    displacement = idr.Displacement(smooth_field(grid, 0.03, seed=2))
    velocity = idr.Velocity(smooth_field(grid, 0.03, seed=3))
    shift = torch.eye(dimension + 1, dtype=torch.float64)
    shift[0, dimension] = 0.2  # sends part of the fixed image off the field's grid
    return {
        "affine": affine,
        "displacement": displacement,
        "velocity": velocity,
        "composite": affine @ displacement @ velocity,
        "field_read_off_its_grid": idr.Displacement(displacement.displacement + 0.02)
        @ idr.Affine(shift),
    }


def preimage_inside(transform, shape):
    """Voxels of a grid whose image under ``transform`` lies inside the range's unit cube."""
    mapped = transform(idr.identity_grid(shape, dtype=torch.float64))[0]
    return ((mapped >= 0) & (mapped <= 1)).all(0).numpy()


@pytest.fixture(params=[2, 3], ids=["2D", "3D"])
def dimension(request):
    return request.param


def small_gradicon(last_layer_std, batch_norm_statistics=False):
    """A 2D two-step GradICON whose last layers are drawn (not zero), so its map is not the identity."""
    from itkdeepreg.models import DisplacementStep, Downsample, TwoStep
    from itkdeepreg.nets import GradICONUNet

    torch.manual_seed(0)
    model = TwoStep(
        Downsample(DisplacementStep(GradICONUNet(2))), DisplacementStep(GradICONUNet(2))
    )
    for module in model.modules():
        if isinstance(module, GradICONUNet):
            torch.nn.init.normal_(module.lastConv.weight, std=last_layer_std)
        if batch_norm_statistics and isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)  # trained-looking statistics
            module.running_var.uniform_(0.5, 2.0)
    return model


def resample_by_itk(moving_image, transform, reference_image):
    """The array of ``itk.resample_image_filter`` of ``moving_image`` through an ITK
    transform onto ``reference_image``'s grid (linear, 0 outside)."""
    import itk

    return itk.array_from_image(
        itk.resample_image_filter(
            moving_image,
            transform=transform,
            use_reference_image=True,
            reference_image=reference_image,
        )
    )

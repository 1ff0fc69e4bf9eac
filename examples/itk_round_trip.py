"""Build a transform, export it to ITK two ways, and resample a brain with ITK and with ANTs' files.

The moving image is the bundled MNI152 T1 (2 mm). The fixed grid is another scan of the same
head: oblique, flipped (direction determinant -1), anisotropic. The transform is a rotation
about the head's centre composed with a smooth diffeomorphism. The script writes

- ``transform.h5``: the compact export (an ITK composite: affine, model-grid field, affine),
  read by ITK, ``antsApplyTransforms`` and ``ants.apply_transforms``;
- ``warp.nii.gz``: the native export (a displacement field on the fixed grid, an ANTs warp);
- ``warped_by_itk.nii.gz``: the moving image resampled onto the fixed grid by ITK;

and checks that ITK's resampling through either export equals the torch warp.

    python examples/itk_round_trip.py [--output-dir DIR]
"""

import argparse
import math
import os

import itk
import numpy as np
import torch

import itkdeepreg as idr
from itkdeepreg.data import mni152_t1_2mm
from itkdeepreg.interop import (
    image_to_tensor,
    tensor_to_image,
    to_itk_displacement_field,
    write_displacement_field,
    write_transform,
)

TOLERANCE = 1e-4  # intensities in [0, 1]


def oblique_fixed_geometry(moving: idr.ImageGeometry) -> idr.ImageGeometry:
    """A tilted, flipped, anisotropic grid centred on the moving image's centre."""
    a, b = 0.3, 0.2
    tilt = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    turn = np.array([[math.cos(b), -math.sin(b), 0], [math.sin(b), math.cos(b), 0], [0, 0, 1]])
    direction = turn @ tilt @ np.diag([-1.0, 1.0, 1.0])  # a flipped x axis
    size, spacing = np.array([80, 96, 70]), np.array([2.4, 2.0, 2.6])
    centre = moving.to_physical(np.full(3, 0.5))
    origin = centre - direction @ (spacing * (size - 1) / 2)
    return idr.ImageGeometry(tuple(size), origin, spacing, direction)


def example_transform(fixed, moving) -> idr.Transform:
    """A 10-degree rotation about the head's centre after a smooth diffeomorphism."""
    centre = moving.to_physical(np.full(3, 0.5))
    angle = math.radians(10)
    rotation = np.eye(4)
    rotation[:3, :3] = [
        [math.cos(angle), -math.sin(angle), 0],
        [math.sin(angle), math.cos(angle), 0],
        [0, 0, 1],
    ]
    rotation[:3, 3] = centre - rotation[:3, :3] @ centre
    physical_rotation = idr.Affine(torch.from_numpy(rotation))
    generator = torch.Generator().manual_seed(0)
    coarse = torch.randn(1, 3, 5, 5, 5, generator=generator, dtype=torch.float64)
    velocity = 0.04 * torch.nn.functional.interpolate(
        coarse, size=(40, 40, 40), mode="trilinear", align_corners=True
    )
    # the deformation maps the fixed unit cube to itself; the rotation, physical space to
    # physical space, becomes a map of the fixed unit cube to the moving one
    return idr.from_physical(physical_rotation, fixed, moving) @ idr.Velocity(velocity)


def main(output_dir):
    os.makedirs(output_dir, exist_ok=True)
    moving_image = itk.imread(mni152_t1_2mm(), itk.F)
    moving_tensor, moving = image_to_tensor(moving_image, dtype=torch.float64)
    moving_tensor = moving_tensor / moving_tensor.max()  # intensities in [0, 1]
    moving_image = tensor_to_image(moving_tensor, moving, itk.F)
    fixed = oblique_fixed_geometry(moving)
    transform = example_transform(fixed, moving)

    warped_by_torch = transform.warp(moving_tensor, fixed.shape)[0, 0].numpy()
    mapped = transform(idr.identity_grid(fixed.shape, torch.float64))[0]
    inside = ((mapped >= 0) & (mapped <= 1)).all(0).numpy()  # preimage inside the moving image

    transform_path = os.path.join(output_dir, "transform.h5")
    warp_path = os.path.join(output_dir, "warp.nii.gz")
    write_transform(transform, transform_path, fixed, moving)
    write_displacement_field(transform, warp_path, fixed, moving)
    reference = tensor_to_image(torch.zeros(1, 1, *fixed.shape), fixed, itk.F)

    def resample(itk_transform):
        return itk.resample_image_filter(
            moving_image,
            transform=itk_transform,
            use_reference_image=True,
            reference_image=reference,
        )

    compact = itk.transformread(transform_path)[0]
    warped_by_itk = resample(compact)
    itk.imwrite(warped_by_itk, os.path.join(output_dir, "warped_by_itk.nii.gz"), compression=True)
    native = to_itk_displacement_field(transform, fixed, moving)
    differences = {
        "compact (transform.h5)": itk.array_from_image(warped_by_itk),
        "native (displacement field)": itk.array_from_image(resample(native)),
    }
    print(f"moving: MNI152 T1 {moving.size}; fixed: oblique flipped grid {fixed.size}")
    print(f"{'export':<30}{'max |ITK - torch|':>20}")
    worst = 0.0
    for name, by_itk in differences.items():
        difference = float(np.abs(by_itk - warped_by_torch)[inside].max())
        worst = max(worst, difference)
        print(f"{name:<30}{difference:>20.2e}")
    print(f"wrote {transform_path}, {warp_path} and warped_by_itk.nii.gz")
    if worst > TOLERANCE:
        raise SystemExit(f"ITK and torch disagree by {worst:.2e} > {TOLERANCE}")
    return worst


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output-dir", default="itkdeepreg-example", help="where to write the files"
    )
    main(parser.parse_args().output_dir)

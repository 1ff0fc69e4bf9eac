"""Transform values: build, evaluate, compose, invert, warp, move and save (torch only, no ITK).

python examples/transform_values.py
"""

import tempfile
from pathlib import Path

import torch

import itkdeepreg as idr


def main():
    shape = (32, 32, 32)
    grid = idr.identity_grid(shape, dtype=torch.float64)  # [1, 3, 32, 32, 32] in [0, 1]

    matrix = torch.eye(4, dtype=torch.float64)
    matrix[0, 3] = 0.05  # a shift along tensor axis 0 (z), in unit-cube units
    affine = idr.Affine(matrix)
    smooth = torch.nn.functional.interpolate(
        0.03 * torch.randn(1, 3, 4, 4, 4, dtype=torch.float64),
        size=shape,
        mode="trilinear",
        align_corners=True,
    )
    velocity = idr.Velocity(smooth, method="integration")  # exact inverse
    displacement = idr.Displacement(smooth)

    transform = affine @ velocity  # the velocity's map first, then the shift
    identity = transform.inverse() @ transform
    voxels = (identity(grid) - grid).abs().max().item() * 31
    print(f"inverse o transform is the identity within {voxels:.1e} voxels")

    image = torch.rand(1, 1, *shape, dtype=torch.float64)
    warped = (transform @ displacement).warp(image)  # linear, zeros outside
    labels = transform.warp((image * 4).round(), mode="nearest")
    print(f"warped {tuple(warped.shape)}; labels stay labels: {sorted(labels.unique().tolist())}")

    points = torch.tensor([[[0.5], [0.5], [0.5]]], dtype=torch.float64)  # [B, D, P]
    print(f"the centre goes to {transform(points)[0, :, 0].tolist()}")

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "transform.pt"
        transform.save(path)
        loaded = idr.load_transform(path)
        assert torch.equal(loaded(grid), transform(grid))
    single = transform.to(dtype=torch.float32)  # or .to("cuda")
    print(
        f"saved and loaded; in float32 the centre goes to {single(points.float())[0, :, 0].tolist()}"
    )


if __name__ == "__main__":
    main()

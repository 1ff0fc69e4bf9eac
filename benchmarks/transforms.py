"""Costs of the spine's operations, side by side in one run: a table of medians and ratios.

    python benchmarks/transforms.py [--grid 64] [--model 96] [--fixed 128] [--repeats 5]

- the exponential of a velocity field on its grid: scaling and squaring against Runge-Kutta
  integration (the exact-inverse method);
- export of a model-grid field to ITK: compact (composite) against native (field on the fixed
  grid), and resampling a fixed-size image with ITK through each, against the torch warp.

On shared CPUs read the ratios; absolute times mean something only on a quiet machine.
"""

import argparse
import statistics
import time

import itk
import torch

import itkdeepreg as idr
from itkdeepreg.interop import tensor_to_image, to_itk_displacement_field, to_itk_transform


def median_seconds(function, repeats):
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def smooth_field(shape, amplitude, dtype=torch.float32):
    coarse = torch.randn(1, 3, 5, 5, 5, generator=torch.Generator().manual_seed(0), dtype=dtype)
    return amplitude * torch.nn.functional.interpolate(
        coarse, size=shape, mode="trilinear", align_corners=True
    )


def main(grid, model, fixed_size, repeats):
    rows = []

    velocity = smooth_field((grid,) * 3, 0.05)
    squared = median_seconds(lambda: idr.Velocity(velocity).exponential(), repeats)
    integrated = median_seconds(
        lambda: idr.Velocity(velocity, method="integration").exponential(), repeats
    )
    rows += [
        (f"velocity exp {grid}^3, scaling and squaring (7)", squared, 1.0),
        (f"velocity exp {grid}^3, Runge-Kutta (16 steps)", integrated, integrated / squared),
    ]

    fixed = idr.ImageGeometry((fixed_size,) * 3, spacing=(1.0, 1.2, 1.5))
    moving = idr.ImageGeometry((fixed_size,) * 3, spacing=(1.1, 1.0, 1.4))
    transform = idr.Displacement(smooth_field((model,) * 3, 0.03))
    compact = median_seconds(lambda: to_itk_transform(transform, fixed, moving), repeats)
    native = median_seconds(lambda: to_itk_displacement_field(transform, fixed, moving), repeats)
    rows += [
        (f"export {model}^3 field, compact", compact, 1.0),
        (f"export {model}^3 field, native on {fixed_size}^3", native, native / compact),
    ]

    image = torch.rand(1, 1, *moving.shape)
    moving_image = tensor_to_image(image, moving)
    reference = tensor_to_image(torch.zeros(1, 1, *fixed.shape), fixed)
    compact_transform = to_itk_transform(transform, fixed, moving)
    native_transform = to_itk_displacement_field(transform, fixed, moving)

    def resample(itk_transform):
        return itk.resample_image_filter(
            moving_image,
            transform=itk_transform,
            use_reference_image=True,
            reference_image=reference,
        )

    torch_warp = median_seconds(lambda: transform.warp(image, fixed.shape), repeats)
    through_compact = median_seconds(lambda: resample(compact_transform), repeats)
    through_native = median_seconds(lambda: resample(native_transform), repeats)
    rows += [
        (f"warp {fixed_size}^3, torch", torch_warp, 1.0),
        (
            f"warp {fixed_size}^3, ITK through compact",
            through_compact,
            through_compact / torch_warp,
        ),
        (f"warp {fixed_size}^3, ITK through native", through_native, through_native / torch_warp),
    ]

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, ITK {itk.Version.GetITKVersion()}"
    )
    print(f"{'operation':<50}{'median s':>10}{'ratio':>8}")
    for name, seconds, ratio in rows:
        print(f"{name:<50}{seconds:>10.3f}{ratio:>8.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=64)
    parser.add_argument("--model", type=int, default=96)
    parser.add_argument("--fixed", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    arguments = parser.parse_args()
    main(arguments.grid, arguments.model, arguments.fixed, arguments.repeats)

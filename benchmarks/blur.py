"""Gaussian blur on a CPU: itkdeepreg's shifted-view sums against conv1d and depthwise conv3d.

Prints the median time of a forward and backward pass for each way, interleaved in one run,
at the sizes that matter: LNCC's five blurred quantities plus the weight at a 2 mm brain grid
(sigma 1.5) and at uniGradICON's 175^3 grid (sigma 5).

    python benchmarks/blur.py [repeats]
"""

import sys

import torch
import torch.nn.functional as F
from memory import forward_backward_medians

from itkdeepreg.losses import gaussian_blur


def kernel(sigma, dtype):
    radius = int(round(2 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=dtype)
    weights = torch.exp(-(offsets**2) / (2 * sigma**2))
    return weights / weights.sum(), radius


def conv1d_blur(image, sigma):
    """One conv1d over all lines along each axis."""
    weights, radius = kernel(sigma, image.dtype)
    for axis in range(2, image.dim()):
        lines = image.movedim(axis, -1)
        blurred = F.conv1d(
            lines.reshape(-1, 1, lines.shape[-1]), weights[None, None], padding=radius
        )
        image = blurred.reshape(lines.shape).movedim(-1, axis)
    return image


def conv3d_blur(image, sigma):
    """A depthwise conv3d with a 1D kernel along each axis."""
    weights, radius = kernel(sigma, image.dtype)
    flat = image.reshape(-1, 1, *image.shape[2:])
    for axis in range(3):
        shape, padding = [1, 1, 1], [0, 0, 0]
        shape[axis], padding[axis] = 2 * radius + 1, radius
        flat = F.conv3d(flat, weights.reshape(1, 1, *shape), padding=tuple(padding))
    return flat.reshape(image.shape)


def main(repeats=5):
    torch.set_num_threads(2)
    ways = {"shifted views (ours)": gaussian_blur, "conv1d": conv1d_blur, "conv3d": conv3d_blur}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {repeats}")
    print("| grid | sigma | channels | " + " | ".join(ways) + " | conv1d / ours |")
    print("|---|---|---|" + "---|" * (len(ways) + 1))
    for shape, sigma in (((95, 117, 99), 1.5), ((175, 175, 175), 5.0)):
        image = torch.rand(1, 6, *shape, requires_grad=True)
        reference = conv1d_blur(image, sigma)
        assert torch.allclose(gaussian_blur(image, sigma), reference, atol=1e-5)
        medians = forward_backward_medians(ways, repeats, image, sigma)
        cells = " | ".join(f"{m:.3f} s" for m in medians.values())
        ratio = medians["conv1d"] / medians["shifted views (ours)"]
        print(f"| {'x'.join(map(str, shape))} | {sigma} | 6 | {cells} | {ratio:.1f} |")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))

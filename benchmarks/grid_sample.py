"""Sampling a batch of one on a CPU: ``F.grid_sample`` against itkdeepreg's split into threads.

Prints the median time of a forward and backward pass each way, interleaved in one run, for
the samplings a 3D registration does: a 3-channel field or a 1-channel image at points near
their own grid, at a 2 mm brain grid and at uniGradICON's 175^3. The points always get a
gradient; the volume does when it is a field being optimised (GradICON's maps), not when it
is an image or a fixed map. 2D sampling is not split (``itkdeepreg.sampling.grid_sample``).

    python benchmarks/grid_sample.py [repeats]
"""

import sys

import torch
import torch.nn.functional as F
from memory import forward_backward_medians

from itkdeepreg.sampling import grid_sample, identity_grid

CASES = [  # (shape, channels, the volume needs a gradient)
    ((95, 117, 99), 3, False),
    ((95, 117, 99), 3, True),
    ((175, 175, 175), 1, False),
    ((175, 175, 175), 3, False),
    ((175, 175, 175), 3, True),
]


def main(repeats=5):
    torch.set_num_threads(2)
    torch.manual_seed(0)
    ways = {
        "F.grid_sample": lambda v, g: F.grid_sample(v, g, align_corners=True),
        "split (ours)": grid_sample,
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {repeats}")
    print("| grid | channels | volume gradient | " + " | ".join(ways) + " | speed-up |")
    print("|---|---|---|" + "---|" * (len(ways) + 1))
    for shape, channels, volume_gradient in CASES:
        volume = torch.rand(1, channels, *shape, requires_grad=volume_gradient)
        # points a few voxels off the grid, in grid_sample's [-1, 1] (x, y, z) layout
        points = identity_grid(shape) + 0.02 * torch.randn(1, len(shape), *shape)
        grid = (points.movedim(1, -1).flip(-1) * 2 - 1).requires_grad_()
        medians = forward_backward_medians(ways, repeats, volume, grid)
        cells = " | ".join(f"{m:.3f} s" for m in medians.values())
        ratio = medians["F.grid_sample"] / medians["split (ours)"]
        grid_name = "x".join(map(str, shape))
        print(f"| {grid_name} | {channels} | {volume_gradient} | {cells} | {ratio:.2f} |")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))

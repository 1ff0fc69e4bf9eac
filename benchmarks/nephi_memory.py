"""Memory of NePhi pairwise optimization against field-level instance optimization, in 3D.

    python benchmarks/nephi_memory.py [--sizes 128 175] [--device cpu|cuda]

One optimization step of each, on random images of size^3: NePhi (``register_nephi`` with
its defaults: 2048 similarity points, 2 hidden layers of 64; and as published: 2 hidden layers
of 128 and the similarity at ``min(100000, 2%)`` of the voxels; both with 128 Fourier
frequencies, 32 + 32 code features, GradICON at 256 points) against a field-level instance optimization step
(``optimize.optimize_fields`` on displacement maps on the grid, as
``benchmarks/unigradicon_speed.py`` measures it). NePhi's answer is left as functions
(``sampled=False``): the step is what is measured, not sampling the answer on the grid.

Each operation runs in a fresh process after its set-up (the images, the maps) and a warm-up
run on a 32^3 pair, which starts the libraries (threads, kernels) without leaving a large
pair's buffers behind; "added peak GB" is the memory it adds at its peak above what that left: resident memory sampled
every 5 ms on a CPU, allocated memory on a GPU. The target: NePhi at most one fifth.
"""

import argparse
import json

import torch
from memory import in_fresh_process, timed_peak

OPERATIONS = {
    "field-level IO step": "fields",
    "NePhi step, our defaults": "nephi",
    "NePhi step, published points": "nephi_published",
}


def measure(operation, size, device):
    from itkdeepreg.optimize import optimize_fields
    from itkdeepreg.optimize.nephi import register_nephi
    from itkdeepreg.transforms import Displacement

    def operation_on(size):
        torch.manual_seed(0)
        shape = (1, 1, size, size, size)
        moving, fixed = torch.rand(shape, device=device), torch.rand(shape, device=device)
        zero = torch.zeros(1, 3, size, size, size, device=device)
        maps = Displacement(zero), Displacement(zero.clone())
        published = min(100000, int(0.02 * size**3))

        def run():
            if operation == "fields":
                optimize_fields(*maps, moving, fixed, iterations=1, progress=False)
            elif operation == "nephi":
                register_nephi(moving, fixed, iterations=1, sampled=False, progress=False)
            else:
                register_nephi(
                    moving,
                    fixed,
                    iterations=1,
                    points=published,
                    hidden_features=128,
                    sampled=False,
                    progress=False,
                )

        return run

    operation_on(32)()
    run = operation_on(size)

    seconds, peak = timed_peak(run, device)
    print(json.dumps({"seconds": seconds, "peak_gb": peak}))


def main(sizes, device):
    print(f"NePhi against field-level IO on {device}, torch {torch.__version__}")
    print(
        f"{'size':>6}  {'operation':<32}{'seconds':>10}{'added peak GB':>15}{'/ field-level':>15}"
    )
    for size in sizes:
        rows = {}
        for name, operation in OPERATIONS.items():
            arguments = ["--sizes", size, "--device", device, "--only", operation]
            rows[name] = in_fresh_process(__file__, *arguments)
        fields = rows["field-level IO step"]["peak_gb"]
        for name, row in rows.items():
            print(
                f"{size:>5}^3  {name:<32}{row['seconds']:>10.2f}{row['peak_gb']:>15.3f}"
                f"{row['peak_gb'] / fields:>15.3f}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 175])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", choices=sorted(OPERATIONS.values()))
    arguments = parser.parse_args()
    if arguments.only:
        measure(arguments.only, arguments.sizes[0], arguments.device)
    else:
        main(arguments.sizes, arguments.device)

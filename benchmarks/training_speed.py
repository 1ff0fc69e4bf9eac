"""Training speed: pairs per second of the training loop, 2D 128^2 and 3D 64^3.

    python benchmarks/training_speed.py [--device cpu|cuda] [--steps 8]

Each row trains a GradICON network with ``itkdeepreg.train.train`` on synthetic pairs
(LNCC + GradICON, augmentation on) for a few steps and reports the median time of a step
(data, augmentation, forward, backward and Adam, as the loop measures it) and of the data
alone. "published" is the U-Net width of the published networks; "small" is the width of the
models of our own in the zoo. Absolute times hold only for the machine they were measured on.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from itkdeepreg.train.augment import augment
from itkdeepreg.train.loop import train
from itkdeepreg.train.synthetic import SyntheticPairs
from itkdeepreg.zoo.gradicon import gradicon_network

WIDTHS = {
    "published": dict(down_channels=(16, 32, 64, 256, 512), up_channels=(16, 32, 64, 128, 256)),
    "small": dict(down_channels=(8, 16, 32, 64, 128), up_channels=(8, 16, 32, 64, 64)),
}
# (dimension, grid, batch, levels, refinements): the 3D grid of 64 allows two levels
SETTINGS = ((2, (128, 128), 8, 3, 1), (3, (64, 64, 64), 2, 2, 0))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__} on {device}, {torch.get_num_threads()} threads")
    header = f"{'grid':<10}{'width':<11}{'batch':>6}{'M params':>10}"
    print(header + f"{'s / step':>10}{'data s':>8}{'pairs / s':>11}")
    for dimension, shape, batch, levels, refinements in SETTINGS:
        data = SyntheticPairs(shape)
        for width, channels in WIDTHS.items():
            torch.manual_seed(0)
            model = gradicon_network(dimension, levels, refinements, **channels)
            rows = train(
                model,
                data,
                steps=args.steps,
                batch_size=batch,
                augment=augment,
                device=device,
                progress=False,
            )
            step = statistics.median(row["seconds"] for row in rows[1:])  # the first warms up
            generator = torch.Generator().manual_seed(0)
            data_times = []
            for _ in range(3):
                start = time.perf_counter()
                augment(*data.sample(batch, generator), generator)
                data_times.append(time.perf_counter() - start)
            parameters = sum(p.numel() for p in model.parameters()) / 1e6
            grid = "x".join(map(str, shape))
            print(
                f"{grid:<10}{width:<11}{batch:>6}{parameters:>10.2f}{step:>10.3f}"
                f"{statistics.median(data_times):>8.3f}{batch / step:>11.1f}"
            )


if __name__ == "__main__":
    main()

"""Pairs per minute of ``itkdeepreg batch`` on a local Dask cluster of 1 and 2 workers, against
a plain loop of ``itkdeepreg register`` commands, on the bundled brain pairs, in one run.

    python benchmarks/batch.py [--pairs 6] [--dimension 2] [--method deformable]

The pairs are the held-out ``two-sided`` brain pairs (seeds from 1000), written as files. Each
way writes the same files per pair (transform, inverse, warped image and the quality report)
and is timed from the command's start to its end, as a user waits for it: the loop starts
torch and ITK once per pair, the batch once per worker (and starts its cluster). On shared
CPUs read the ratios; absolute times mean something only on a quiet machine.
"""

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time

import itk

from itkdeepreg.data.brain_pairs import HELD_OUT_SEEDS, brain_pair


def write_pairs(folder, count, dimension):
    """``count`` brain pairs as files, and the CSV file that lists them."""
    rows = []
    for seed in HELD_OUT_SEEDS[:count]:
        pair = brain_pair(seed, dimension=dimension, regime="two-sided")
        paths = [os.path.join(folder, f"{side}-{seed}.nii.gz") for side in ("fixed", "moving")]
        for image, path in zip(pair.itk_images(), paths):
            itk.imwrite(image, path)
        rows.append([f"pair-{seed}", *paths])
    table = os.path.join(folder, "pairs.csv")
    with open(table, "w", newline="") as file:
        csv.writer(file).writerows([["name", "fixed", "moving"], *rows])
    return table, rows


def command(*arguments):
    return [sys.executable, "-m", "itkdeepreg", *arguments]


def timed(commands) -> float:
    """Wall seconds of the commands run one after the other (each must succeed)."""
    start = time.perf_counter()
    for arguments in commands:
        done = subprocess.run(arguments, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(arguments)} failed:\n{done.stderr}")
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=6, help="how many pairs (default 6)")
    parser.add_argument("--dimension", type=int, choices=(2, 3), default=2)
    parser.add_argument("--method", default="deformable", help="any method (default deformable)")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="itkdeepreg-batch-") as folder:
        table, rows = write_pairs(folder, args.pairs, args.dimension)
        method = ["--method", args.method, "--quiet"]
        loop = []
        for name, fixed, moving in rows:
            out = os.path.join(folder, "loop", name)
            os.makedirs(out)
            outputs = [f"--{kind}-out" for kind in ("transform", "inverse", "warped")]
            files = ["transform.h5", "inverse.h5", "warped.nii.gz"]
            loop.append(
                command("register", "--fixed", fixed, "--moving", moving, *method)
                + [x for flag, f in zip(outputs, files) for x in (flag, os.path.join(out, f))]
                + ["--report", os.path.join(out, "report.json")]
            )
        seconds = {"loop of register commands": timed(loop)}
        for workers in (1, 2):
            out = os.path.join(folder, f"batch-{workers}")
            batch = command("batch", "--pairs", table, "--out", out, *method)
            seconds[f"batch, {workers} worker{'s' * (workers > 1)}"] = timed(
                [batch + ["--workers", str(workers)]]
            )
    print(
        f"{args.pairs} {args.dimension}D brain pairs, method {args.method!r}, {cores} cores, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'':<28}{'seconds':>9}{'pairs/min':>11}{'x loop':>8}")
    base = seconds["loop of register commands"]
    for name, wall in seconds.items():
        print(f"{name:<28}{wall:>9.1f}{60 * args.pairs / wall:>11.2f}{base / wall:>8.2f}")


if __name__ == "__main__":
    main()

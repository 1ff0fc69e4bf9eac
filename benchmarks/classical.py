"""Registration by optimization against ANTs, elastix and FireANTs, regime by regime, side by side.

The pairs are the project's brain benchmark (:mod:`itkdeepreg.data.brain_pairs`): the bundled
MNI152 template warped by known maps, in regimes a user meets (``smooth``, ``two-sided``,
``affine``, ``contrast``, ``resolution``). Every method registers the same pairs in one run,
on the same threads, with its tool's own recipe for two arbitrary images (an affine stage,
then a deformable one; mutual information where the contrasts differ: see
``benchmarks/peers.py``), and is scored the same way: Dice of grey matter, white matter and
the rest of the brain (moving labels warped by nearest neighbour), mean end-point error in mm
over the brain against the true map, the percentage of voxels where the map reverses
orientation, and wall time.

    python benchmarks/classical.py [--regimes two-sided affine ...] [--pairs 2] [--dimension 3]
                                   [--methods ours ants elastix fireants] [--summary]

Seeds start at the held-out ones (``HELD_OUT_SEEDS``); ``--first-seed 0`` takes tuning seeds.
``ours`` is the ``affine-deformable`` method (``multimodal=True`` where the contrasts differ).
A method may also be any registered method or trained model folder, with options:
``--methods deformable "affine-deformable:deformable={'smoothing':2.0}"`` (values in Python
syntax). ``--summary`` ends with our rank among all methods on each column, per regime.

Needs antspyx, itk-elastix and fireants: ``pip install -e ".[benchmark]"`` (fireants is a
benchmark-only peer, never imported by the library).
"""

import argparse
import ast
import statistics
import tempfile
import time
from pathlib import Path

import torch

import itkdeepreg as idr
from itkdeepreg.data.brain_pairs import HELD_OUT_SEEDS, REGIMES, brain_pair
from itkdeepreg.methods import Pair, run_method

COLUMNS = ("dice", "error", "folds", "time")
HIGHER_IS_BETTER = {"dice"}


def multimodal(regime):
    return REGIMES[regime].contrast != "t1"


def peer(name):
    """A peer of benchmarks/peers.py as a function of a pair that returns a transform value."""
    import peers

    def run(pair, regime):
        fixed, moving = pair.itk_images()
        with tempfile.TemporaryDirectory() as directory:
            transform = peers.PEERS[name](fixed, moving, Path(directory), multimodal(regime))
            return idr.from_itk_transform(transform, pair.fixed_geometry, pair.moving_geometry)

    return run


def registered(text):
    """A registered method (or model folder) as ``NAME[:KEY=VALUE,...]``, run on a pair."""
    name, _, settings = text.partition(":")
    options = {}
    for setting in filter(None, settings.split(",")):
        key, _, value = setting.partition("=")
        options[key] = ast.literal_eval(value)

    def run(pair, regime):
        images = Pair(pair.moving, pair.fixed, pair.moving_geometry, pair.fixed_geometry)
        extra = {"multimodal": True} if name == "affine-deformable" and multimodal(regime) else {}
        return run_method(name, images, progress=False, **{**extra, **options}).forward

    return run


def method_of(name):
    if name == "ours":
        return registered("affine-deformable")
    if name in ("ants", "elastix", "fireants"):
        return peer(name)
    return registered(name)


def table(title, scores):
    """Means over pairs (time: median) of each method, as a Markdown table."""
    lines = [title, "| method | Dice | end-point error (mm) | folds (%) | time (s) |"]
    lines.append("|---|---|---|---|---|")
    summary = {}
    for name, rows in scores.items():
        summary[name] = {key: statistics.mean(row[key] for row in rows) for key in COLUMNS}
        summary[name]["time"] = statistics.median(row["time"] for row in rows)
        values = summary[name]
        lines.append(
            f"| {name} | {values['dice']:.4f} | {values['error']:.3f} | {values['folds']:.4f} "
            f"| {values['time']:.1f} |"
        )
    print("\n".join(lines), flush=True)
    return summary


def rank(summary, ours, column):
    """Our place among the methods (identity excluded) on a column; ties share the better one."""
    values = [v[column] for name, v in summary.items() if name != "identity"]
    mine = summary[ours][column]
    better = [v for v in values if (v > mine if column in HIGHER_IS_BETTER else v < mine)]
    return f"{len(better) + 1} of {len(values)}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--first-seed", type=int, default=HELD_OUT_SEEDS.start)
    parser.add_argument("--dimension", type=int, default=3, choices=(2, 3))
    parser.add_argument("--methods", nargs="+", default=["ours", "ants", "elastix", "fireants"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--summary", action="store_true", help="our rank per regime and column")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    methods = {name: method_of(name) for name in arguments.methods}
    seeds = range(arguments.first_seed, arguments.first_seed + arguments.pairs)
    summaries = {}
    for regime in arguments.regimes:
        scores = {name: [] for name in ["identity", *methods]}
        for seed in seeds:
            pair = brain_pair(seed, arguments.dimension, regime)
            identity = idr.Affine.identity(arguments.dimension)
            scores["identity"].append(dict(pair.score(identity), time=0.0))
            for name, method in methods.items():
                start = time.perf_counter()
                forward = method(pair, regime)
                elapsed = time.perf_counter() - start
                scores[name].append(dict(pair.score(forward), time=elapsed))
                print(
                    f"{regime} pair {seed} {name}: "
                    + ", ".join(f"{k} {v:.4g}" for k, v in scores[name][-1].items()),
                    flush=True,
                )
        title = (
            f"\n{regime}: {arguments.pairs} {arguments.dimension}D pairs (seeds {seeds.start}-"
            f"{seeds.stop - 1}), {arguments.threads} threads; means over pairs (time: median)\n"
        )
        summaries[regime] = table(title, scores)
    ours = arguments.methods[0]
    if arguments.summary:
        print(f"\nthe rank of {ours} among {len(methods)} methods (1 is best)\n")
        print("| regime | Dice | end-point error | folds | time |\n|---|---|---|---|---|")
        for regime, summary in summaries.items():
            print(f"| {regime} | " + " | ".join(rank(summary, ours, c) for c in COLUMNS) + " |")


if __name__ == "__main__":
    main()

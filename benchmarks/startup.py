"""How long the command takes to start: wall and CPU seconds of ``--help``, of an error exit, and
of a 2D ``warp``, medians of repeated runs, for one or two source trees side by side.

    python benchmarks/startup.py [--repeats 5] [--before TREE]

"now" is the installed package. ``--before TREE`` times a source tree in the same run (an
older checkout, say ``git worktree add /tmp/before <commit>``; its ``wrapping/`` gets linked
into its package, as an installed package has it), first on ``sys.path``. Each run is a fresh
``python -c``. CPU seconds are the child's user plus system time. On shared
CPUs read the ratios; absolute times mean something only on a quiet machine.
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import itk
import numpy as np

RUN = "import sys; {prepare}from itkdeepreg.cli import main; sys.exit(main({args!r}))"
# another tree first on sys.path, with no editable install's finder to map the name back here
ELSEWHERE = (
    "sys.path.insert(0, {tree!r}); "
    "sys.meta_path[:] = [f for f in sys.meta_path "
    "if 'editable' not in getattr(f, '__module__', '')]; "
)


def timed(tree, args):
    """(wall, CPU) seconds of one run of the command with ``args`` from ``tree`` (None: the
    installed package)."""
    prepare = ELSEWHERE.format(tree=tree) if tree else ""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", RUN.format(prepare=prepare, args=args)],
        capture_output=True,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def inputs(folder):
    """A 2D image and an identity transform file to warp it with."""
    image = itk.image_from_array(np.random.default_rng(0).random((64, 64)).astype(np.float32))
    itk.imwrite(image, os.path.join(folder, "image.nii.gz"))
    itk.transformwrite([itk.TranslationTransform[itk.D, 2].New()], os.path.join(folder, "t.tfm"))
    image_path = os.path.join(folder, "image.nii.gz")
    return {
        "--help": ["--help"],
        "error exit": ["register", "--fixed", image_path, "--moving", image_path],
        "2D warp": ["warp", "--fixed", image_path, "--moving", image_path, "--transform",
                    os.path.join(folder, "t.tfm"), "--out", os.path.join(folder, "w.nii.gz")],
    }  # fmt: skip


def with_wrapping_inside(tree):
    """The tree as installed: ``itkdeepreg/wrapping`` present (linked from ``wrapping/``)."""
    inside = os.path.join(tree, "itkdeepreg", "wrapping")
    if not os.path.exists(inside) and os.path.isdir(os.path.join(tree, "wrapping")):
        os.symlink(os.path.join(tree, "wrapping"), inside)
    return tree


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before", help="an older source tree to time beside this one")
    options = parser.parse_args()
    trees = {"now": None}
    if options.before:
        trees = {"before": with_wrapping_inside(os.path.abspath(options.before)), **trees}
    with tempfile.TemporaryDirectory() as folder:
        commands = inputs(folder)
        results = {}
        for command, args in commands.items():
            for name, tree in trees.items():
                runs = [timed(tree, args) for _ in range(options.repeats)]
                results[command, name] = tuple(statistics.median(r) for r in zip(*runs))
    print(f"medians of {options.repeats} runs, {os.cpu_count()} CPUs")
    header = f"{'command':<12}" + "".join(
        f"{name + ' wall':>13}{name + ' CPU':>12}" for name in trees
    )
    print(header + (f"{'ratio (wall)':>14}" if len(trees) == 2 else ""))
    for command in commands:
        row = f"{command:<12}"
        for name in trees:
            wall, cpu = results[command, name]
            row += f"{wall:>12.2f}s{cpu:>11.2f}s"
        if len(trees) == 2:
            row += f"{results[command, 'before'][0] / results[command, 'now'][0]:>13.1f}x"
        print(row)


if __name__ == "__main__":
    main()

"""``itkdeepreg batch``: a cohort of pairs registered on Dask, a quality report for each."""

from __future__ import annotations

import argparse
import os

from ..options import OPTIONS
from ..outputs import OUTPUT_KINDS
from ._base import CommandError, UsageError, text
from .register import (
    DEFAULT_METHOD,
    add_method_options,
    checked_method,
    flag_dest,
    register_options,
    thread_count,
)

THRESHOLD_NAMES = ("folds_percent", "sd_log_jacobian", "inverse_consistency_p99_mm")


def add_parser(commands) -> None:
    p = commands.add_parser(
        "batch",
        help="register many pairs on Dask, with a quality report for each",
        description=text(
            "Register the pairs of a CSV file (columns fixed, moving, and optionally "
            "fixed_mask, moving_mask, fixed_segmentation, moving_segmentation, "
            "fixed_modality, moving_modality, initial_transform, name), or every image of a "
            "folder onto one fixed image, on a Dask cluster: local worker processes by "
            "default, or an existing cluster (--scheduler). Each pair gets a folder OUT/NAME "
            "with the outputs register would write and report.json, all written or none; "
            "OUT/summary.csv lists every pair with its figures (similarity before and after, "
            "% folds, SD of the log Jacobian determinant, inverse consistency in mm, time), "
            "its status and flags. A rerun skips the pairs that are complete; a pair that "
            "fails is recorded and the others go on. See docs/batch.md.",
        ),
        epilog=(
            "examples:\n"
            "  itkdeepreg batch --pairs pairs.csv --out results --method affine-deformable\n"
            "  itkdeepreg batch --folder scans/ --fixed atlas.nii.gz --out results "
            "--workers 4\n"
            "  itkdeepreg batch --pairs pairs.csv --out results -p affine.txt -p deep.txt "
            "--scheduler tcp://host:8786"
        ),
    )
    inputs = p.add_argument_group("the pairs (a CSV file, or a folder and a fixed image)")
    inputs.add_argument("--pairs", metavar="CSV", help="a CSV file of pairs")
    inputs.add_argument("--folder", metavar="DIR", help="every image of DIR is a moving image")
    inputs.add_argument("--fixed", metavar="IMAGE", help="the fixed image of --folder")
    method = p.add_argument_group("the method (register's)")
    method.add_argument(
        "--method",
        metavar="NAME",
        help=f"a method of register or a trained folder (default: {DEFAULT_METHOD})",
    )
    method.add_argument(
        "-p",
        "--parameters",
        action="append",
        metavar="FILE",
        help="a parameter file instead of a method; repeat for steps run one after the other",
    )
    add_method_options(method)  # register's flags of the method's options
    outputs = p.add_argument_group("outputs")
    outputs.add_argument("--out", required=True, metavar="DIR", help="the output folder")
    outputs.add_argument(
        "--outputs",
        type=output_kinds,
        default=("transform", "inverse", "warped"),
        metavar="KINDS",
        help=f"what each pair's folder gets, of {','.join(OUTPUT_KINDS)} "
        "(default: transform,inverse,warped)",
    )
    outputs.add_argument(
        "--report-metric",
        default="ncc",
        metavar="NAME",
        help="the similarity loss of the report (lower is better; default: ncc)",
    )
    outputs.add_argument(
        "--threshold",
        action="append",
        default=[],
        type=threshold,
        metavar="NAME=VALUE",
        help=f"flag pairs above VALUE, repeatable; NAME: {', '.join(THRESHOLD_NAMES)}",
    )
    cluster = p.add_argument_group("Dask")
    cluster.add_argument(
        "--workers",
        type=thread_count,
        metavar="N",
        help="worker processes of the local cluster (default: one per two cores)",
    )
    cluster.add_argument(
        "--threads-per-worker",
        type=thread_count,
        metavar="N",
        help="torch's and ITK's threads in each task (default: the cores shared out)",
    )
    cluster.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="the scheduler of an existing Dask cluster (tcp://host:8786), instead of a local one",
    )
    cluster.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def output_kinds(value: str) -> tuple:
    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    unknown = [k for k in kinds if k not in OUTPUT_KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(
            f"expected some of {','.join(OUTPUT_KINDS)} separated by commas, got {value!r}"
        )
    return kinds


def threshold(value: str) -> tuple:
    name, equals, number = value.partition("=")
    if not equals or name.strip() not in THRESHOLD_NAMES:
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE with NAME one of {', '.join(THRESHOLD_NAMES)}, got {value!r}"
        )
    try:
        return name.strip(), float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {number!r}") from None


def run(args) -> int:
    if (args.pairs is None) == (args.folder is None):
        raise UsageError("give the pairs: --pairs CSV, or --folder DIR with --fixed IMAGE")
    if (args.folder is None) != (args.fixed is None):
        raise UsageError("--folder and --fixed go together")
    named = [spec.flags[0] for spec in OPTIONS if spec.flags and getattr(args, flag_dest(spec))]
    if args.parameters and (args.method is not None or args.option or named):
        raise UsageError(
            "give --method (with its options) or -p parameter files (which hold them), not both"
        )
    if args.scheduler is not None and args.workers is not None:
        raise UsageError("--workers sizes the local cluster; with --scheduler the cluster is set")
    method = None if args.parameters else checked_method(args.method or DEFAULT_METHOD)
    options = register_options(args, method) if method else {}
    for flag, path in (("--pairs", args.pairs), ("--fixed", args.fixed)):
        if path is not None and not os.path.isfile(path):
            raise CommandError(f"{flag}: no such file: {path}")
    # the command line is right: from here on torch, ITK and Dask
    from ..batch import folder_pairs, format_table, read_pairs, run_batch

    pairs = read_pairs(args.pairs) if args.pairs else folder_pairs(args.folder, args.fixed)
    summary = os.path.join(args.out, "summary.csv")
    try:
        rows = run_batch(
            pairs,
            args.out,
            method=method,
            options=options,
            parameter_files=args.parameters,
            outputs=args.outputs,
            metric=args.report_metric.lower(),
            thresholds=dict(args.threshold),
            workers=args.workers,
            threads=args.threads_per_worker,
            scheduler=args.scheduler,
            progress=not args.quiet,
        )
    except KeyboardInterrupt:
        print(f"stopped; {summary} lists what was done: run the batch again to go on")
        raise
    print(format_table(rows, args.report_metric.lower()))
    counts = {s: sum(r["status"] == s for r in rows) for s in ("registered", "complete")}
    failed = sum(r["status"] == "failed" for r in rows)
    flagged = sum(bool(r.get("flags")) for r in rows)
    print(
        f"{len(rows)} pairs: {counts['registered']} registered, {counts['complete']} complete "
        f"before, {failed} failed, {flagged} flagged; {summary}"
    )
    if failed:
        raise CommandError(
            f"{failed} of {len(rows)} pairs failed (see {summary}); run the batch again to "
            "redo them"
        )
    return 0

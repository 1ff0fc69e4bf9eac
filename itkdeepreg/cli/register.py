"""``itkdeepreg register``: a moving image onto a fixed one, with any method."""

from __future__ import annotations

import argparse
import ast
import os
import re

from ._base import CommandError, UsageError, text

# the registry's names, known here without importing it (torch): a test keeps them equal
METHODS = (
    "affine", "affine-deformable", "deformable", "gradicon-brain", "gradicon-knee",
    "gradicon-lung", "multigradicon", "nephi", "rigid", "synth-gradicon-2d", "translation",
    "unigradicon",
)  # fmt: skip
DEFAULT_METHOD = "unigradicon"
METRICS = ("lncc", "squared_lncc", "mind", "ncc", "mse", "mutual_information", "ngf")
PUBLISHED_METRICS = {"lncc2": "squared_lncc"}  # unigradicon-register --io_sim names
LINEAR_METHODS = ("translation", "rigid", "affine")


def add_parser(commands) -> None:
    names = ", ".join(METHODS)
    p = commands.add_parser(
        "register",
        help="register a moving image onto a fixed image",
        description=text(
            "Register a moving image onto a fixed image with a method of itkdeepreg.methods "
            "(a published network, with or without instance optimization, or registration by "
            "optimization), through itk.DeepRegistrationMethod. Give at least one output; "
            "every output is checked before the registration, and they are written all or "
            "none.",
            "The flags of the published unigradicon-register work too: --fixed_modality, "
            "--moving_modality, --fixed_segmentation, --moving_segmentation, --transform_out, "
            "--warped_moving_out, --io_iterations (None: no instance optimization), --io_sim "
            "(lncc, lncc2, mind) and --model.",
        ),
        epilog=(
            "example:\n"
            "  itkdeepreg register --fixed fixed.nii.gz --moving moving.nii.gz "
            "--method deformable \\\n"
            '      --option "iterations=(50,50,10)" --transform-out transform.h5 '
            "--warped-out warped.nii.gz"
        ),
    )
    inputs = p.add_argument_group("inputs")
    inputs.add_argument("--fixed", required=True, metavar="IMAGE", help="the fixed image")
    inputs.add_argument("--moving", required=True, metavar="IMAGE", help="the moving image")
    for side in ("fixed", "moving"):
        inputs.add_argument(
            f"--{side}-mask",
            metavar="IMAGE",
            help=f"where the similarity counts (non-zero inside), on the {side} image's grid",
        )
        inputs.add_argument(
            f"--{side}-segmentation",
            f"--{side}_segmentation",
            metavar="IMAGE",
            help=f"multiplies the {side} image before registration (the published masking)",
        )
    inputs.add_argument(
        "--initial-transform",
        metavar="TRANSFORM",
        help="an ITK transform file (fixed -> moving points, one transform or a composite) "
        "to start from: an elastix or ANTs affine, an earlier result",
    )
    method = p.add_argument_group("the method")
    method.add_argument(
        "--method",
        "--model",
        default=DEFAULT_METHOD,
        metavar="NAME",
        help=f"one of {names} (default: {DEFAULT_METHOD})",
    )
    for side in ("fixed", "moving"):
        method.add_argument(
            f"--{side}-modality",
            f"--{side}_modality",
            type=str.lower,
            choices=("ct", "mri"),
            help=f"the {side} image's modality: the networks' preprocessing",
        )
    method.add_argument(
        "--metric",
        "--io_sim",
        type=metric_name,
        metavar="NAME",
        help=f"the similarity: {', '.join(METRICS)} (lncc2 is squared_lncc)",
    )
    method.add_argument(
        "--io-iterations",
        "--io_iterations",
        type=io_iterations,
        metavar="N",
        help="instance optimization steps after a network; 'None' (any method): none",
    )
    method.add_argument(
        "--io-kind",
        choices=("fields", "weights"),
        help="instance optimization of residual fields (fit for a CPU) or of the network's "
        "weights (as published)",
    )
    method.add_argument("--weights", metavar="FILE", help="a local weights file for a network")
    method.add_argument("--device", type=device_name, help="cpu, cuda, cuda:1, ...")
    method.add_argument(
        "--option",
        action="append",
        default=[],
        type=option,
        metavar="KEY=VALUE",
        help="any other option of the method, repeatable; the value is a Python literal or a "
        'string: --option "iterations=(50,50,10)" --option symmetric=True',
    )
    method.add_argument(
        "--threads",
        type=thread_count,
        metavar="N",
        help="torch's and ITK's number of threads (default: theirs)",
    )
    method.add_argument("--quiet", action="store_true", help="no progress bars")
    outputs = p.add_argument_group("outputs (at least one)")
    outputs.add_argument(
        "--transform-out",
        "--transform_out",
        metavar="FILE",
        help="the transform, fixed -> moving points (.h5, .tfm, .txt; .mat for affine "
        "methods): ITK and antsApplyTransforms read it",
    )
    outputs.add_argument(
        "--inverse-out", metavar="FILE", help="the inverse transform, moving -> fixed points"
    )
    outputs.add_argument(
        "--warped-out",
        "--warped_moving_out",
        metavar="IMAGE",
        help="the moving image on the fixed grid, in its pixel type",
    )
    outputs.add_argument(
        "--field-out",
        metavar="IMAGE",
        help="the displacement field on the fixed grid (mm): an ANTs warp",
    )
    outputs.add_argument(
        "--jacobian-out", metavar="IMAGE", help="the Jacobian determinant on the fixed grid"
    )
    p.set_defaults(run=run)


def metric_name(text: str) -> str:
    name = PUBLISHED_METRICS.get(text.lower(), text.lower())
    if name not in METRICS:
        raise argparse.ArgumentTypeError(
            f"unknown metric {text!r}; known: {', '.join(METRICS)} (and lncc2)"
        )
    return name


def io_iterations(text: str):
    """``None`` for the published "None" (no instance optimization), else an integer >= 0."""
    if text.strip().lower() == "none":
        return None
    return _whole_number(text, 0, "steps or None")


def thread_count(text: str) -> int:
    """``--threads`` here and the elastix-like ``-threads``: a whole number >= 1."""
    return _whole_number(text, 1, "threads")


def _whole_number(text: str, low: int, noun: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of {noun}: {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def device_name(text: str) -> str:
    """A torch device's name; whether it is here is asked when the command runs."""
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r}")
    return text


def check_device(name: str) -> None:
    import torch

    if name.startswith("cuda"):
        index = int(name.partition(":")[2] or 0)
        if not torch.cuda.is_available():
            raise UsageError(f"argument --device: {name}: no CUDA device here")
        if index >= torch.cuda.device_count():
            raise UsageError(
                f"argument --device: {name}: there are {torch.cuda.device_count()} CUDA devices"
            )


def option(text: str) -> tuple:
    """``key=value``: the value as a Python literal (``(50,50,10)``, ``True``), else a string."""
    key, equals, value = text.partition("=")
    key = key.strip()
    if not equals or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return key, value.strip()


# register's flags that set an option of the method: (argument, flag, option)
NAMED_OPTIONS = (
    ("fixed_modality", "--fixed-modality", "fixed_modality"),
    ("moving_modality", "--moving-modality", "moving_modality"),
    ("metric", "--metric", "similarity"),
    ("io_iterations", "--io-iterations", "io_iterations"),
    ("io_kind", "--io-kind", "io_kind"),
    ("weights", "--weights", "weights"),
    ("device", "--device", "device"),
)


def run(args) -> int:
    from ..files import IMAGE_SUFFIXES, TRANSFORM_SUFFIXES

    method = checked_method(args.method)
    outputs = [
        (flag, path, suffixes)
        for flag, path, suffixes in (
            ("--transform-out", args.transform_out, TRANSFORM_SUFFIXES),
            ("--inverse-out", args.inverse_out, TRANSFORM_SUFFIXES),
            ("--warped-out", args.warped_out, IMAGE_SUFFIXES),
            ("--field-out", args.field_out, IMAGE_SUFFIXES),
            ("--jacobian-out", args.jacobian_out, IMAGE_SUFFIXES),
        )
        if path is not None
    ]
    if not outputs:
        raise UsageError(
            "register writes nothing: give at least one of --transform-out, --inverse-out, "
            "--warped-out, --field-out, --jacobian-out"
        )
    for flag, path, _ in outputs[:2]:
        if path.lower().endswith(".mat") and method not in LINEAR_METHODS:
            raise UsageError(
                f"{flag}: a .mat file holds one affine transform, and {method} gives a "
                "deformation; write .h5"
            )
    # the command line is right: from here on the command needs torch and ITK
    from ..files import write_all
    from ..registration import DeepRegistrationMethod, number_of_threads
    from ..zoo.weights import sha256_of
    from ._files import check_outputs, read_image, read_itk_transform, require_file, write_image

    if args.device is not None:
        check_device(args.device)
    options = register_options(args, method)
    check_outputs(outputs, args)
    if "weights" in options:
        require_file(options["weights"], "--weights")
        # so a user can pin the file they trust (a published download is checked by fetch)
        print(f"--weights {options['weights']}: SHA-256 {sha256_of(options['weights'])}")

    fixed = read_image(args.fixed, "--fixed")
    moving = read_image(args.moving, "--moving")
    inputs = {"fixed_image": fixed, "moving_image": moving}
    for side in ("fixed", "moving"):
        for kind in ("mask", "segmentation"):
            path = getattr(args, f"{side}_{kind}")
            if path is not None:
                inputs[f"{side}_{kind}"] = read_image(path, f"--{side}-{kind}")
    if args.initial_transform is not None:
        inputs["initial_transform"] = read_itk_transform(
            args.initial_transform, "--initial-transform"
        )

    registration = DeepRegistrationMethod.New(**inputs, method=method)
    registration.SetShowProgress(not args.quiet)
    registration.SetMethodOptions(options)
    with number_of_threads(args.threads):  # the outputs are computed too (fields, Jacobians)
        try:
            registration.Update()
        except (ValueError, TypeError) as error:
            raise CommandError(f"{method}: {error}") from None
        transform = registration.GetTransform()

        writers = {
            "--transform-out": transform.Write,
            "--inverse-out": lambda t: transform.GetInverseTransform().Write(t),
            "--warped-out": lambda t: write_image(registration.GetOutput(), t),
            "--field-out": transform.WriteDisplacementField,
            "--jacobian-out": lambda t: write_image(transform.GetJacobianDeterminant(), t),
        }
        write_all([(path, writers[flag], suffixes) for flag, path, suffixes in outputs])
    return 0


def checked_method(name: str) -> str:
    if name not in METHODS and not os.path.isdir(name):
        raise UsageError(
            f"unknown method {name!r} (not a name, nor a training folder); known: "
            f"{', '.join(METHODS)}"
        )
    return name


def register_options(args, method) -> dict:
    """The method's options from the named flags given and from ``--option``, each checked
    against the options ``method`` takes."""
    from ..methods import method_options, takes_option

    takes = method_options(method)
    known = ", ".join(sorted(takes - {"progress"})) if takes is not None else "any option"
    options = {}
    for argument, flag, option in NAMED_OPTIONS:
        value = getattr(args, argument)
        if value is None:  # not given, or --io-iterations None: leave it to the method
            continue
        if not takes_option(method, option):
            if option == "io_iterations":
                raise UsageError(
                    f"--io-iterations {value}: the method {method} has no instance "
                    "optimization (only the networks have); --io-iterations None is accepted"
                )
            raise UsageError(
                f"{flag}: the method {method} takes no option {option}; it takes: {known}"
            )
        options[option] = value
    flags = {option: flag for _, flag, option in NAMED_OPTIONS}
    flags["progress"] = "--quiet"
    given = set()
    for key, value in args.option:
        if key in flags:
            raise UsageError(f"--option {key}=...: use {flags[key]}")
        if key in given:
            raise UsageError(f"--option {key} is given twice")
        if not takes_option(method, key):
            raise UsageError(
                f"--option {key}: the method {method} takes no option {key}; it takes: {known}"
            )
        given.add(key)
        options[key] = value
    return options

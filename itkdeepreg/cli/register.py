"""``itkdeepreg register``: a moving image onto a fixed one, with any method."""

from __future__ import annotations

import argparse
import ast
import os
import time

from ..options import OPTIONS, InvalidValue, read_value
from ._base import CommandError, UsageError, text

# the registry's names, known here without importing it (torch): a test keeps them equal
METHODS = (
    "affine", "affine-deformable", "deformable", "gradicon-brain", "gradicon-knee",
    "gradicon-lung", "multigradicon", "nephi", "rigid", "synth-gradicon-2d", "translation",
    "unigradicon",
)  # fmt: skip
DEFAULT_METHOD = "unigradicon"
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
            "Every flag of the published unigradicon-register 1.0.6 works too, with its "
            "meaning (docs/command_line.md): --fixed_modality, --moving_modality, "
            "--fixed_mask, --moving_mask, --input_masking, --loss_function_masking, "
            "--fixed_segmentation, --moving_segmentation, --dice_loss_weight, "
            "--intensity_conservation_loss, --ct_window, --quantile_range, --transform_out, "
            "--warped_moving_out, --io_iterations (None: no instance optimization), --io_lr, "
            "--io_sim (lncc, lncc2, mind), --network_weights and --model. Our defaults "
            "differ: no instance optimization unless asked, and of residual fields unless "
            "--io-kind weights.",
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
            f"--{side}_mask",
            metavar="IMAGE",
            help=f"the {side} image's mask, on its grid: where the similarity counts "
            "(optimization methods); a network uses it as --input-masking and "
            "--loss-masking say",
        )
        inputs.add_argument(
            f"--{side}-segmentation",
            f"--{side}_segmentation",
            metavar="IMAGE",
            help=f"the {side} image's label map: a network's Dice term (--dice-weight), or "
            "with the other and no masks, both as masks (deprecated, as published); "
            "optimization methods: multiplies the image",
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
    add_method_options(method)
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
    outputs.add_argument(
        "--report",
        metavar="FILE",
        help="the quality figures of itkdeepreg batch (.json or .csv): NCC before and after, "
        "%% folds, SD of the log Jacobian determinant, inverse consistency (mm), flags",
    )
    p.set_defaults(run=run)


def add_method_options(group) -> None:
    """The flags of a method's options, ``register``'s and ``batch``'s: one per entry of the
    table of options that has flags (itkdeepreg.options), and ``--option`` for the rest."""
    for spec in OPTIONS:  # the table's options that have flags
        if spec.flags and spec.kind == "bool":  # given: true, as the published switches
            group.add_argument(*spec.flags, action="store_const", const=True, help=spec.help)
        elif spec.flags:
            group.add_argument(
                *spec.flags,
                type=value_reader(spec),
                nargs=(spec.count or "+") if spec.many else None,
                metavar=spec.metavar,
                help=flag_help(spec),
                action=PublishedZero,
            )
    group.add_argument(
        "--option",
        action="append",
        default=[],
        type=option,
        metavar="KEY=VALUE",
        help="any other option of the method, repeatable; the value is a Python literal or a "
        'string: --option "iterations=(50,50,10)" --option symmetric=True',
    )


class PublishedZero(argparse.Action):
    """Stores a flag's value, and refuses ``--io_iterations 0`` as unigradicon-register does
    (its None is no instance optimization; our ``--io-iterations 0`` is none too)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string == "--io_iterations" and values == 0:
            raise argparse.ArgumentError(
                self, "0: unigradicon-register refuses 0; None is no instance optimization"
            )
        setattr(namespace, self.dest, values)


def value_reader(spec):
    """The type of ``spec``'s flags: a value read as a parameter file reads it."""

    def read(text: str):
        try:
            return read_value(spec, text)
        except InvalidValue as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    read.__name__ = spec.option  # argparse names the type in some errors
    return read


def flag_dest(spec) -> str:
    """Where argparse puts the value of ``spec``'s flags: ``--io-iterations`` in
    ``args.io_iterations``."""
    return spec.flags[0].removeprefix("--").replace("-", "_")


def flag_help(spec) -> str:
    """A flag's help: the table's line, and the names a choice takes where the metavar does
    not show them, with the published spellings."""
    if spec.kind != "choice" or spec.metavar.startswith("{"):
        return spec.help
    published = "".join(f" ({name} is {value})" for name, value in spec.aliases.items())
    return f"{spec.help}: {', '.join(spec.rule.values())}{published}"


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


def run(args) -> int:
    method = checked_method(args.method)
    outputs = [  # (flag, path, kind of itkdeepreg.cli._outputs)
        (flag, path, kind)
        for flag, path, kind in (
            ("--transform-out", args.transform_out, "transform"),
            ("--inverse-out", args.inverse_out, "inverse"),
            ("--warped-out", args.warped_out, "warped"),
            ("--field-out", args.field_out, "field"),
            ("--jacobian-out", args.jacobian_out, "jacobian"),
            ("--report", args.report, "report"),
        )
        if path is not None
    ]
    if not outputs:
        raise UsageError(
            "register writes nothing: give at least one of --transform-out, --inverse-out, "
            "--warped-out, --field-out, --jacobian-out, --report"
        )
    for flag, path, _ in outputs[:2]:
        if path.lower().endswith(".mat") and method not in LINEAR_METHODS:
            raise UsageError(
                f"{flag}: a .mat file holds one affine transform, and {method} gives a "
                "deformation; write .h5"
            )
    # the command line is right: from here on the command needs torch and ITK
    from ..files import write_all
    from ..outputs import OUTPUTS, output_writers
    from ..quality import flags, quality_figures
    from ..registration import DeepRegistrationMethod, number_of_threads
    from ..zoo.weights import sha256_of
    from ._files import check_outputs, read_image, read_itk_transform, require_file

    if args.device is not None:
        check_device(args.device)
    options = register_options(args, method)
    outputs = [(flag, path, OUTPUTS[kind][1], kind) for flag, path, kind in outputs]
    check_outputs([output[:3] for output in outputs], args)
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
        start = time.perf_counter()
        try:
            registration.Update()
        except (ValueError, TypeError) as error:
            raise CommandError(f"{method}: {error}") from None
        transform = registration.GetTransform()
        report = None
        if args.report is not None:  # the figures of a batch's report.json, for one pair
            figures = quality_figures(
                fixed,
                moving,
                transform,
                inputs.get("initial_transform"),
                "ncc",
                mask=inputs.get("fixed_mask"),
            )
            report = {
                "fixed": args.fixed,
                "moving": args.moving,
                "method": method,
                **figures,
                "seconds": time.perf_counter() - start,
                "flags": flags(figures, "ncc"),
            }
        writers = output_writers(transform, registration.GetOutput(), report)
        write_all([(path, writers[kind], suffixes) for _, path, suffixes, kind in outputs])
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
    flags = {"progress": "--quiet"}
    for spec in OPTIONS:
        if not spec.flags:
            continue
        flag, option = spec.flags[0], spec.option
        flags[option] = flag
        value = getattr(args, flag_dest(spec))
        if value is None:  # not given, or --io-iterations None: leave it to the method
            continue
        if not takes_option(method, option):
            if option == "io_iterations":
                raise UsageError(
                    f"{flag} {value}: the method {method} has no instance "
                    f"optimization (only the networks have); {flag} None is accepted"
                )
            raise UsageError(
                f"{flag}: the method {method} takes no option {option}; it takes: {known}"
            )
        options[option] = tuple(value) if spec.many else value
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

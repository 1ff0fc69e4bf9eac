"""The ``itkdeepreg`` command.

::

    itkdeepreg register --fixed F --moving M [--method NAME] [options] --transform-out T.h5 ...
    itkdeepreg warp --fixed F --moving M --transform T.h5 --out W.nii.gz [--interpolation label]
    itkdeepreg jacobian --fixed F --moving M --transform T.h5 --out J.nii.gz
    itkdeepreg demo [--out DIR] [--dimension 2|3]
    itkdeepreg -f F -m M -p a.txt [-p b.txt ...] -out DIR [-fMask ..] [-mMask ..] [-t0 T]
    itkdeepreg apply -in IMAGE -tp TransformParameters.0.txt -out DIR

``register`` also takes the published ``unigradicon-register`` flags (``--fixed_modality``,
``--transform_out``, ``--io_iterations``, ``--io_sim``, ``--model``, ...). A user's mistake
(a missing file, an unknown method, an output that cannot be written) is one line on stderr,
``itkdeepreg: error: ...``, and a non-zero exit code: 2 for a wrong command line, 1 for a
problem with the files. Every output target is checked before any work, and the outputs of a
run are written whole, all of them, or not at all.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import os
import signal
import sys
import textwrap
import threading
import time

import itk
import numpy as np
import torch

from . import __version__
from .files import temporary_name, unfinished_outputs, write_all
from .geometry import ImageGeometry
from .interop import InverseConsistentTransform, check_scalar_image, tensor_to_image
from .interop.images import itk_error_message, read_image
from .interop.transformix import transformix_outputs
from .interop.transforms import FIELD_SUFFIXES, TRANSFORM_SUFFIXES, read_itk_transform
from .methods import SIMILARITIES, method_names, method_options, takes_option
from .registration import DEFAULT_METHOD, DeepRegistrationMethod, deep_registration_method
from .zoo.weights import sha256_of

PROGRAM = "itkdeepreg"
COMMANDS = ("register", "warp", "jacobian", "demo", "apply", "train", "finetune")
IMAGE_SUFFIXES = FIELD_SUFFIXES  # single-file formats only: written whole, then renamed
_OUR_SUFFIXES = (*IMAGE_SUFFIXES, *TRANSFORM_SUFFIXES, ".png")  # the files we name ourselves
METRICS = tuple(SIMILARITIES)
_PUBLISHED_METRICS = {"lncc2": "squared_lncc"}  # unigradicon-register --io_sim names
_LINEAR_METHODS = ("translation", "rigid", "affine")
_ELASTIX_FLAGS = ("-f", "-m", "-p", "-out", "-fMask", "-mMask", "-t0")
_MAX_LABELS = 4096  # --interpolation label on more distinct values is surely not a segmentation


class UsageError(Exception):
    """A wrong command line: exit code 2."""


class CommandError(Exception):
    """A problem with the files or the data: exit code 1."""


class _Terminated(BaseException):
    """SIGTERM, raised where the command is, so that what it was writing is removed."""


def main(argv=None) -> int:
    """Run the command with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    argv = sys.argv[1:] if argv is None else [os.fspath(a) for a in argv]
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _dispatch(argv)
    except UsageError as error:
        _report(error)
        return 2
    except (CommandError, ValueError, OSError, ImportError) as error:
        _report(error)
        return 1
    except KeyboardInterrupt:
        _report("interrupted")
        return 130
    except _Terminated:
        _report("terminated")
        return 128 + signal.SIGTERM
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _terminate(number, frame):
    raise _Terminated


def _report(error, kind="error") -> None:
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"{PROGRAM}: {kind}: {message}", file=sys.stderr)


def _dispatch(argv) -> int:
    elastix_like = argv and argv[0] not in COMMANDS and any(a in _ELASTIX_FLAGS for a in argv)
    parser = _elastix_parser() if elastix_like else _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version
        return int(done.code or 0)
    if elastix_like:
        return _elastix(args)
    if args.command is None:
        raise UsageError(
            f"give a command ({', '.join(COMMANDS)}) or the elastix-like -f -m -p -out; "
            f"see {PROGRAM} --help"
        )
    return args.run(args)


# ---------------------------------------------------------------------------------------------
# the command line


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``itkdeepreg: error: ...``), raised, not exited."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        command = self.prog[len(PROGRAM) :].strip()  # "register" for "itkdeepreg register"
        raise UsageError(f"{command}: {message}" if command else message)


_DESCRIPTION = "Deep and optimization-based image registration for ITK, ANTs and elastix users."
_EPILOG = """\
elastix-like (no command):
  itkdeepreg -f FIXED -m MOVING -p STEP.txt [-p STEP.txt ...] -out DIR
             [-fMask MASK] [-mMask MASK] [-t0 TRANSFORM] [-threads N] [--quiet]
  runs the parameter files one after the other (elastix maps and our
  (Registration "DeepRegistration") steps mixed) and writes result.nii.gz,
  TransformParameters.0.txt (for transformix), transform.h5 and inverse.h5 into DIR.

'itkdeepreg COMMAND --help' describes each command."""


def _text(*paragraphs: str) -> str:
    """Paragraphs filled to the terminal's usual width (the help keeps our line breaks)."""
    return "\n\n".join(textwrap.fill(" ".join(p.split()), 79) for p in paragraphs)


def _parser() -> _Parser:
    parser = _Parser(prog=PROGRAM, description=_DESCRIPTION, epilog=_EPILOG)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    _register_parser(commands)
    _warp_parser(commands)
    _jacobian_parser(commands)
    _demo_parser(commands)
    _apply_parser(commands)
    _training_parsers(commands)
    return parser


def _register_parser(commands) -> None:
    names = ", ".join(method_names())
    p = commands.add_parser(
        "register",
        help="register a moving image onto a fixed image",
        description=_text(
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
        type=_metric,
        metavar="NAME",
        help=f"the similarity: {', '.join(METRICS)} (lncc2 is squared_lncc)",
    )
    method.add_argument(
        "--io-iterations",
        "--io_iterations",
        type=_io_iterations,
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
    method.add_argument("--device", type=_device, help="cpu, cuda, cuda:1, ...")
    method.add_argument(
        "--option",
        action="append",
        default=[],
        type=_option,
        metavar="KEY=VALUE",
        help="any other option of the method, repeatable; the value is a Python literal or a "
        'string: --option "iterations=(50,50,10)" --option symmetric=True',
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
    p.set_defaults(run=_register)


def _warp_parser(commands) -> None:
    p = commands.add_parser(
        "warp",
        help="resample an image through a transform file",
        description=_text(
            "Resample the moving image (or a segmentation) onto the fixed image's grid through "
            "a transform file (fixed -> moving points): ours, or any file ITK reads (ANTs and "
            "elastix-exported ITK transforms included). ITK does the resampling, in double "
            "precision; outside the moving image the value is 0."
        ),
    )
    _transform_file_arguments(
        p, "the reference grid", "the image to resample", "the resampled image"
    )
    p.add_argument(
        "--interpolation",
        choices=("linear", "nearest", "label"),
        default="linear",
        help="linear (default), nearest, or label: label-preserving for segmentations (each "
        "label's indicator interpolated linearly, the most probable label kept)",
    )
    p.set_defaults(run=_warp)


def _jacobian_parser(commands) -> None:
    p = commands.add_parser(
        "jacobian",
        help="the Jacobian determinant of a transform file",
        description=_text(
            "Write the physical Jacobian determinant of a transform file (fixed -> moving "
            "points) at the fixed image's voxels: the moving volume per fixed volume, 1 where "
            "the map keeps volume, <= 0 where it folds."
        ),
    )
    _transform_file_arguments(
        p, "the fixed image (its grid)", "the moving image (its grid)", "the Jacobian image"
    )
    p.set_defaults(run=_jacobian)


def _transform_file_arguments(p, fixed, moving, out) -> None:
    """The flags of the commands that read a transform file between two images."""
    p.add_argument("--fixed", required=True, metavar="IMAGE", help=fixed)
    p.add_argument("--moving", required=True, metavar="IMAGE", help=moving)
    p.add_argument("--transform", required=True, metavar="TRANSFORM", help="the transform file")
    p.add_argument("--out", required=True, metavar="IMAGE", help=out)


def _demo_parser(commands) -> None:
    p = commands.add_parser(
        "demo",
        help="register the bundled brain pair and write every output",
        description=_text(
            "Register the bundled default pair, the MNI152 template and the template moved by "
            "a known diffeomorphism with its own intensity changes, by optimization "
            '(method "deformable": no weights to download). Writes fixed.nii.gz, '
            "moving.nii.gz, transform.h5, inverse.h5, warped.nii.gz, displacement.nii.gz, "
            "jacobian.nii.gz and figure.png, and prints Dice, end-point error and folds "
            "before and after."
        ),
    )
    p.add_argument(
        "--out",
        default="itkdeepreg-demo",
        metavar="DIR",
        help="the output folder, created if missing (default: itkdeepreg-demo)",
    )
    p.add_argument("--dimension", type=int, choices=(2, 3), default=3, help="3D or one slice")
    p.add_argument("--device", type=_device, help="cpu, cuda, ...")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=_demo)


def _training_parsers(commands) -> None:
    for name, summary, detail in (
        (
            "train",
            "train a network (a GradICON model by default) from a configuration file",
            "Build the network that [model] describes and train it on [data] (synthetic "
            "SynthMorph-style pairs by default, or images from a folder, a CSV file or a list "
            "of files) under [objective]. ",
        ),
        (
            "finetune",
            "fine-tune a registered network (uniGradICON, say) on your images",
            "Start from the network of [model] method (its weights, grid and modality; "
            "[model] weights for others) and train it on [data] at a low learning rate. ",
        ),
    ):
        p = commands.add_parser(
            name,
            help=summary,
            description=_text(
                detail + "The output folder receives checkpoint.pt (a run continues from it), "
                "log.csv, config.toml and weights.pt; the folder is then a method: "
                "itkdeepreg register --method FOLDER. Under torchrun, every process trains "
                "on its own batches (data parallel). Keys and defaults: docs/training.md."
            ),
        )
        p.add_argument(
            "config", nargs="?", metavar="CONFIG", help="the configuration (.toml, .yaml)"
        )
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="TABLE.KEY=VALUE",
            help="override a key, value in TOML syntax (--set train.steps=200); repeatable",
        )
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.set_defaults(run=_train, finetune=name == "finetune")


def _train(args) -> int:
    from .train import distributed
    from .train.config import read_config, run

    config = read_config(args.config, args.set, finetune=args.finetune)
    rows = run(config, progress=not args.quiet)
    distributed.teardown()
    output = config["train"]["output"]
    if rows:
        print(f"step {rows[-1]['step']}: loss {rows[-1]['loss']:.4f}; wrote into {output}:")
    else:
        print(f"nothing to do: {output} holds a checkpoint of every step asked for")
    print(f"  weights.pt, checkpoint.pt, log.csv, config.toml; use: --method {output}")
    return 0


def _apply_parser(commands) -> None:
    p = commands.add_parser(
        "apply",
        help="transformix-like: apply a transform parameter file",
        description=_text(
            "Apply a transformix parameter file (elastix's TransformParameters.0.txt, or ours) "
            "to an image with itk.transformix_filter; writes DIR/result.nii.gz."
        ),
    )
    p.add_argument("-in", dest="image", required=True, metavar="IMAGE", help="the image")
    p.add_argument(
        "-tp", dest="parameters", required=True, metavar="FILE", help="the parameter file"
    )
    p.add_argument("-out", dest="out", required=True, metavar="DIR", help="the output folder")
    p.set_defaults(run=_apply)


def _elastix_parser() -> _Parser:
    p = _Parser(
        prog=PROGRAM,
        description=_text(
            "elastix-like: register with parameter files run one after the other (elastix "
            'maps and our (Registration "DeepRegistration") steps mixed). Writes '
            "DIR/result.nii.gz, DIR/TransformParameters.0.txt with its field (apply it with "
            "transformix or 'itkdeepreg apply'), DIR/transform.h5 and DIR/inverse.h5."
        ),
    )
    p.add_argument("-f", dest="fixed", required=True, metavar="IMAGE", help="the fixed image")
    p.add_argument("-m", dest="moving", required=True, metavar="IMAGE", help="the moving image")
    p.add_argument(
        "-p",
        dest="parameters",
        action="append",
        required=True,
        metavar="FILE",
        help="a parameter file; repeat for steps run one after the other",
    )
    p.add_argument("-out", dest="out", required=True, metavar="DIR", help="the output folder")
    p.add_argument("-fMask", dest="fixed_mask", metavar="IMAGE", help="the fixed mask")
    p.add_argument("-mMask", dest="moving_mask", metavar="IMAGE", help="the moving mask")
    p.add_argument(
        "-t0", dest="initial", metavar="TRANSFORM", help="an ITK transform file to start from"
    )
    p.add_argument("-threads", dest="threads", type=int, metavar="N", help="the number of threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _metric(text: str) -> str:
    name = _PUBLISHED_METRICS.get(text.lower(), text.lower())
    if name not in METRICS:
        raise argparse.ArgumentTypeError(
            f"unknown metric {text!r}; known: {', '.join(METRICS)} (and lncc2)"
        )
    return name


def _io_iterations(text: str):
    """``None`` for the published "None" (no instance optimization), else an integer >= 0."""
    if text.strip().lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of steps or None: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 or None, got {value}")
    return value


def _device(text: str) -> str:
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text}: no CUDA device here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"{text}: there are {torch.cuda.device_count()} CUDA devices"
            )
    return text


def _option(text: str) -> tuple:
    """``key=value``: the value as a Python literal (``(50,50,10)``, ``True``), else a string."""
    key, equals, value = text.partition("=")
    key = key.strip()
    if not equals or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return key, value.strip()


# ---------------------------------------------------------------------------------------------
# register

# register's flags that set an option of the method: (argument, flag, option)
_NAMED_OPTIONS = (
    ("fixed_modality", "--fixed-modality", "fixed_modality"),
    ("moving_modality", "--moving-modality", "moving_modality"),
    ("metric", "--metric", "similarity"),
    ("io_iterations", "--io-iterations", "io_iterations"),
    ("io_kind", "--io-kind", "io_kind"),
    ("weights", "--weights", "weights"),
    ("device", "--device", "device"),
)


def _register(args) -> int:
    method = _checked_method(args.method)
    options = _register_options(args, method)
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
        if path.lower().endswith(".mat") and method not in _LINEAR_METHODS:
            raise UsageError(
                f"{flag}: a .mat file holds one affine transform, and {method} gives a "
                "deformation; write .h5"
            )
    _check_outputs(outputs, args)
    if "weights" in options:
        _require_file(options["weights"], "--weights")
        # so a user can pin the file they trust (a published download is checked by fetch)
        print(f"--weights {options['weights']}: SHA-256 {sha256_of(options['weights'])}")

    fixed = _read_image(args.fixed, "--fixed")
    moving = _read_image(args.moving, "--moving")
    inputs = {"fixed_image": fixed, "moving_image": moving}
    for side in ("fixed", "moving"):
        for kind in ("mask", "segmentation"):
            path = getattr(args, f"{side}_{kind}")
            if path is not None:
                inputs[f"{side}_{kind}"] = _read_image(path, f"--{side}-{kind}")
    if args.initial_transform is not None:
        inputs["initial_transform"] = _read_itk_transform(
            args.initial_transform, "--initial-transform"
        )

    registration = DeepRegistrationMethod.New(**inputs, method=method)
    registration.SetShowProgress(not args.quiet)
    registration.SetMethodOptions(options)
    try:
        registration.Update()
    except (ValueError, TypeError) as error:
        raise CommandError(f"{method}: {error}") from None
    transform = registration.GetTransform()

    writers = {
        "--transform-out": transform.Write,
        "--inverse-out": lambda t: transform.GetInverseTransform().Write(t),
        "--warped-out": lambda t: _write_image(registration.GetOutput(), t),
        "--field-out": transform.WriteDisplacementField,
        "--jacobian-out": lambda t: _write_image(transform.GetJacobianDeterminant(), t),
    }
    write_all([(path, writers[flag], suffixes) for flag, path, suffixes in outputs])
    return 0


def _checked_method(name: str) -> str:
    if name not in method_names() and not os.path.isdir(name):
        raise UsageError(
            f"unknown method {name!r} (not a name, nor a training folder); known: "
            f"{', '.join(method_names())}"
        )
    return name


def _register_options(args, method) -> dict:
    """The method's options from the named flags given and from ``--option``, each checked
    against the options ``method`` takes."""
    takes = method_options(method)
    known = ", ".join(sorted(takes - {"progress"})) if takes is not None else "any option"
    options = {}
    for argument, flag, option in _NAMED_OPTIONS:
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
    flags = {option: flag for _, flag, option in _NAMED_OPTIONS}
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


# ---------------------------------------------------------------------------------------------
# warp and jacobian


def _warp(args) -> int:
    _check_outputs([("--out", args.out, IMAGE_SUFFIXES)], args)
    fixed = _read_image(args.fixed, "--fixed", scalar=False)
    moving = _read_image(args.moving, "--moving")
    transform = _read_itk_transform(args.transform, "--transform")
    dimension = moving.GetImageDimension()
    if fixed.GetImageDimension() != dimension or transform.GetInputSpaceDimension() != dimension:
        raise CommandError(
            f"a {transform.GetInputSpaceDimension()}D transform, a {fixed.GetImageDimension()}D "
            f"fixed image and a {dimension}D moving image"
        )
    # ITK, not our torch warp: the command applies a transform file exactly as ITK (and
    # antsApplyTransforms) read it, so it takes every transform ITK reads (B-splines, ANTs
    # composites, ...) with no conversion to our values and no inverse computed, and it checks
    # our export independently of the code that wrote it.
    array = itk.array_view_from_image(moving)
    if args.interpolation == "label":
        warped = _warp_labels(moving, array, fixed, transform)
    else:
        warped = _resample(moving, array.astype(np.float64), fixed, transform, args.interpolation)
    image = tensor_to_image(  # in the moving image's pixel type, on the fixed grid
        torch.from_numpy(warped), ImageGeometry.from_image(fixed), itk.template(moving)[1][0]
    )
    write_all([(args.out, lambda t: _write_image(image, t), IMAGE_SUFFIXES)])
    return 0


def _resample(moving, values: np.ndarray, fixed, transform, interpolation="linear"):
    """``values`` on the moving image's grid resampled onto the fixed grid by ITK (double
    precision, 0 outside the moving image), as an array."""
    image = itk.image_from_array(np.ascontiguousarray(values, dtype=np.float64))
    image.CopyInformation(moving)
    interpolator = {
        "linear": itk.LinearInterpolateImageFunction,
        "nearest": itk.NearestNeighborInterpolateImageFunction,
    }[interpolation].New(image)
    resampled = itk.resample_image_filter(
        image,
        transform=transform,
        interpolator=interpolator,
        size=itk.size(fixed),
        output_origin=fixed.GetOrigin(),
        output_spacing=fixed.GetSpacing(),
        output_direction=fixed.GetDirection(),
        output_start_index=fixed.GetLargestPossibleRegion().GetIndex(),
        default_pixel_value=0.0,
    )
    return itk.array_from_image(resampled)


def _warp_labels(moving, array, fixed, transform) -> np.ndarray:
    """Label-preserving resampling: each label's indicator resampled linearly (one ITK pass per
    label), the most probable label kept; 0 outside the moving image, as in the other modes."""
    labels = np.unique(array)
    if labels.size > _MAX_LABELS:
        raise CommandError(
            f"--interpolation label: the moving image has {labels.size} distinct values; "
            "is it a segmentation?"
        )
    best = None
    for label in labels:
        probability = _resample(moving, array == label, fixed, transform)
        if best is None:
            best = np.zeros_like(probability)
            result = np.zeros(probability.shape, dtype=array.dtype)
        better = probability > best
        best[better] = probability[better]
        result[better] = label
    return result


def _jacobian(args) -> int:
    _check_outputs([("--out", args.out, IMAGE_SUFFIXES)], args)
    fixed = _read_image(args.fixed, "--fixed", scalar=False)
    moving = _read_image(args.moving, "--moving", scalar=False)
    _require_file(args.transform, "--transform")
    try:
        with _native_stderr_silenced():  # HDF5 prints its own diagnostics on a bad file
            transform = InverseConsistentTransform.Read(args.transform, fixed, moving)
    except (ValueError, TypeError) as error:
        raise CommandError(f"--transform: {error}") from None
    determinant = transform.GetJacobianDeterminant()
    write_all([(args.out, lambda t: _write_image(determinant, t), IMAGE_SUFFIXES)])
    return 0


# ---------------------------------------------------------------------------------------------
# demo


def _demo(args) -> int:
    from .data.brain_pairs import brain_pair
    from .figure import write_registration_figure
    from .transforms import Affine

    names = {
        "fixed": "fixed.nii.gz",
        "moving": "moving.nii.gz",
        "transform": "transform.h5",
        "inverse": "inverse.h5",
        "warped": "warped.nii.gz",
        "displacement": "displacement.nii.gz",
        "jacobian": "jacobian.nii.gz",
        "figure": "figure.png",
    }
    with _output_folder(args.out, "--out"):
        paths = {key: os.path.join(args.out, name) for key, name in names.items()}
        _check_outputs([("--out", path, _OUR_SUFFIXES) for path in paths.values()], args)
        pair = brain_pair(seed=0, dimension=args.dimension)
        fixed, moving = pair.itk_images()
        size = "x".join(str(n) for n in pair.fixed_geometry.size)
        print(
            f"the MNI152 template ({args.dimension}D, {size} at 2 mm) and the template moved by "
            "a known diffeomorphism, with its own intensity changes",
            flush=True,
        )
        options = {"device": args.device} if args.device else {}
        start = time.perf_counter()
        warped, transform = deep_registration_method(
            fixed, moving, method="deformable", show_progress=not args.quiet, **options
        )
        seconds = time.perf_counter() - start
        before = pair.score(Affine.identity(args.dimension))
        after = pair.score(transform.forward)
        spacing = tuple(reversed(pair.fixed_geometry.spacing.tolist()))  # tensor axes: z, y, x
        writers = {
            "fixed": lambda t: _write_image(fixed, t),
            "moving": lambda t: _write_image(moving, t),
            "transform": lambda t: transform.Write(t),
            "inverse": lambda t: transform.GetInverseTransform().Write(t),
            "warped": lambda t: _write_image(warped, t),
            "displacement": transform.WriteDisplacementField,
            "jacobian": lambda t: _write_image(transform.GetJacobianDeterminant(), t),
            "figure": lambda t: write_registration_figure(
                t,
                pair.fixed,
                pair.moving,
                transform.forward,
                title=f'itkdeepreg demo: method "deformable", {args.dimension}D brain pair',
                spacing=spacing,
            ),
        }
        write_all([(paths[key], writers[key], _OUR_SUFFIXES) for key in names])
    print()
    print(f"{'':<12}{'Dice':>8}{'error (mm)':>14}{'folds (%)':>12}")
    for name, score in (("identity", before), ("registered", after)):
        print(f"{name:<12}{score['dice']:>8.3f}{score['error']:>14.2f}{score['folds']:>12.2f}")
    print(f'\nregistered in {seconds:.1f} s (method "deformable"); wrote into {args.out}:')
    print("  " + ", ".join(names.values()))
    print(
        "again from the files: itkdeepreg register --fixed "
        f"{paths['fixed']} --moving {paths['moving']} --method deformable "
        "--transform-out transform.h5"
    )
    return 0


# ---------------------------------------------------------------------------------------------
# elastix-like and transformix-like


def _elastix(args) -> int:
    from .pipeline import read_pipeline, run_pipeline

    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"-threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
        itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(args.threads)
    for path in args.parameters:
        _require_file(path, "-p")
    steps = read_pipeline(args.parameters)  # every file read and checked before anything runs
    fixed = _read_image(args.fixed, "-f")
    moving = _read_image(args.moving, "-m")
    masks = {
        name: _read_image(path, flag)
        for name, path, flag in (
            ("fixed_mask", args.fixed_mask, "-fMask"),
            ("moving_mask", args.moving_mask, "-mMask"),
        )
        if path is not None
    }
    initial = None if args.initial is None else _read_itk_transform(args.initial, "-t0")
    with _output_folder(args.out, "-out"):
        paths = {
            "result": os.path.join(args.out, "result.nii.gz"),
            "parameters": os.path.join(args.out, "TransformParameters.0.txt"),
            "field": os.path.join(args.out, "TransformParameters.0_field.nii.gz"),
            "transform": os.path.join(args.out, "transform.h5"),
            "inverse": os.path.join(args.out, "inverse.h5"),
        }
        _check_outputs([("-out", path, _OUR_SUFFIXES) for path in paths.values()], args)
        try:
            warped, transform = run_pipeline(
                fixed,
                moving,
                steps,
                initial_transform=initial,
                show_progress=not args.quiet,
                **masks,
            )
        except RuntimeError as error:
            if "elastix" not in str(error).lower():
                raise
            # a parameter map elastix refuses: the user's, not a bug of ours
            raise CommandError(f"elastix failed on a -p map: {itk_error_message(error)}") from None
        write_all(
            [
                (paths["result"], lambda t: _write_image(warped, t), _OUR_SUFFIXES),
                (paths["transform"], lambda t: transform.Write(t), _OUR_SUFFIXES),
                (
                    paths["inverse"],
                    lambda t: transform.GetInverseTransform().Write(t),
                    _OUR_SUFFIXES,
                ),
                *transformix_outputs(
                    transform.forward,
                    paths["parameters"],
                    transform.fixed_geometry,
                    transform.moving_geometry,
                    paths["field"],
                ),
            ]
        )
    print(f"wrote {', '.join(os.path.basename(p) for p in paths.values())} into {args.out}")
    return 0


def _apply(args) -> int:
    from .parameter_files import read_parameter_file

    _require_file(args.parameters, "-tp")
    entries = read_parameter_file(args.parameters).values  # a clear error for a bad file
    field = entries.get("DeformationFieldFileName")
    if field and not os.path.exists(field[0]):
        raise CommandError(
            f"-tp: {args.parameters} names the field {field[0]}, which does not exist"
        )
    image = _read_image(args.image, "-in")
    image = itk.cast_image_filter(
        image, ttype=(type(image), itk.Image[itk.F, image.GetImageDimension()])
    )
    with _output_folder(args.out, "-out"):
        result_path = os.path.join(args.out, "result.nii.gz")
        _check_outputs([("-out", result_path, _OUR_SUFFIXES)], args)
        parameters = itk.ParameterObject.New()
        try:
            parameters.ReadParameterFile(args.parameters)
            result = itk.transformix_filter(image, parameters)
        except RuntimeError as error:
            raise CommandError(f"transformix: {itk_error_message(error)}") from None
        write_all([(result_path, lambda t: _write_image(result, t), _OUR_SUFFIXES)])
    print(f"wrote {result_path}")
    return 0


# ---------------------------------------------------------------------------------------------
# files


def _require_file(path, flag) -> None:
    if not os.path.exists(path):
        raise CommandError(f"{flag}: no such file: {path}")


def _read_image(path, flag, scalar=True):
    """An image file (any format ITK reads, or a DICOM folder); one-line errors."""
    _require_file(path, flag)
    try:
        with _native_stderr_silenced():  # GDCM and MetaIO print their own diagnostics
            image = read_image(path)
    except ValueError as error:
        raise CommandError(f"{flag}: {error}") from None
    if scalar:
        try:
            check_scalar_image(image, f"{flag} {path}")
        except (TypeError, ValueError) as error:
            raise CommandError(str(error)) from None
    return image


def _read_itk_transform(path, flag):
    """The transform of an ITK transform file: one transform, or one composite."""
    _require_file(path, flag)
    try:
        with _native_stderr_silenced():  # HDF5 prints its own diagnostics on a bad file
            return read_itk_transform(path)
    except ValueError as error:
        raise CommandError(f"{flag}: {error}") from None


def _write_image(image, path) -> None:
    itk.imwrite(image, os.fspath(path), compression=True)


# the arguments that name files a command reads: an output may never name one of them
_INPUTS = {
    "fixed": "--fixed",
    "moving": "--moving",
    "fixed_mask": "--fixed-mask",
    "moving_mask": "--moving-mask",
    "fixed_segmentation": "--fixed-segmentation",
    "moving_segmentation": "--moving-segmentation",
    "initial_transform": "--initial-transform",
    "transform": "--transform",
    "weights": "--weights",
    "initial": "-t0",
    "image": "-in",
    "parameters": "-p",
}


def _check_outputs(outputs, args) -> None:
    """Refuse, before any work, outputs that cannot be written or that name an input of
    ``args``: ``(flag, path, suffixes)``. Report what a killed run left among them."""
    inputs = []
    for argument, flag in _INPUTS.items():
        paths = getattr(args, argument, None)
        inputs += [(flag, path) for path in ([paths] if isinstance(paths, str) else paths or ())]
    seen = {}
    for flag, path, suffixes in outputs:
        absolute = os.path.realpath(path)
        if absolute in seen:
            raise UsageError(f"{seen[absolute]} and {flag} both name {path}")
        seen[absolute] = flag
        for input_flag, input_path in inputs:
            if os.path.realpath(input_path) == absolute or _same_file(path, input_path):
                raise UsageError(
                    f"{flag} {path} is the input {input_flag}: it would be overwritten"
                )
        try:
            temporary_name(path, suffixes)
        except ValueError as error:
            raise UsageError(f"{flag}: {error}") from None
        except OSError as error:
            raise CommandError(f"{flag}: {error}") from None
    unfinished = unfinished_outputs([path for _, path, _ in outputs])
    if unfinished:
        _report(f"{unfinished}; this run writes them anew", kind="warning")


def _same_file(a, b) -> bool:
    """Whether two existing paths are one file (hard links, bind mounts)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@contextlib.contextmanager
def _output_folder(path, flag):
    """Create the folder ``path`` (and missing parents) for the outputs; if the run fails, the
    folders it created are removed again when they are still empty."""
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise CommandError(f"{flag}: {path} is not a folder")
    created, folder = [], path
    while not os.path.exists(folder):
        created.append(folder)
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise CommandError(f"{flag}: cannot create {path}: {folder} is not a writable folder")
    for folder in reversed(created):
        os.mkdir(folder)
    try:
        yield path
    except BaseException:
        for folder in created:  # the deepest first
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise


@contextlib.contextmanager
def _native_stderr_silenced():
    """Discard what C libraries (HDF5) print to file descriptor 2; Python errors still rise."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


if __name__ == "__main__":
    sys.exit(main())

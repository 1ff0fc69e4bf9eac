"""The one table of a registration method's named options, and the reader of their values.

Each :class:`Option` names one option three ways: the key of a parameter-file step
(``Metric``), which is also the ITK face's ``SetMetric``/``GetMetric``; the method's keyword
option (``similarity``); and the ``itkdeepreg register`` flags (``--metric``, then the published
``unigradicon-register`` alias ``--io_sim``). :func:`read_values` reads a value from text for
all three faces alike: a parameter file's values, a flag's argument, a string given to a setter.

Only the standard library is used: the command line answers ``--help`` without torch or ITK.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field


class InvalidValue(ValueError):
    """A value an option does not take; the message reads after the key or the flag:
    ``takes "CT" or "MRI", not "PET"``."""


@dataclass(frozen=True)
class Option:
    """One named option of a registration method.

    ``key``: the parameter-file key, and the ITK face's ``Set<key>``/``Get<key>`` unless
    ``accessor`` names them otherwise (``Transform``: ``GetTransform`` is the result).
    ``option``: the method's keyword option. ``kind``: ``"choice"`` (``rule`` maps the names
    written in files to the option's values; a name is read in any case, ``_`` ignored),
    ``"int"``, ``"float"`` or ``"number"`` (an int where the text is one, else a float; ``rule``
    is the bound, ``"> 0"`` or ``">= 1"``), ``"bool"``, or ``"str"`` (``rule``: ``None``, or a
    pattern the text must match and how to say it). ``many``: one value or more, as a tuple.
    ``aliases``: other spellings of values, the published command's (``lncc2``, ``None``).
    ``flags``: ``register``'s flags, the documented one first; none for options set through
    ``--option``; a ``"bool"`` flag takes no value (given: true). ``metavar`` and ``help``:
    the flag's, and a line for the docs. ``count``: the exact number of values, where
    ``many`` (a window's two ends).
    """

    key: str
    option: str
    kind: str
    rule: object = None
    many: bool = False
    aliases: dict = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    metavar: str | tuple | None = None
    help: str = ""
    accessor: str | None = None
    count: int | None = None

    @property
    def accessor_name(self) -> str:
        """What follows ``Set``/``Get`` on :class:`~itkdeepreg.DeepRegistrationMethod`."""
        return self.accessor or self.key


MODALITIES = {"CT": "ct", "MRI": "mri"}
IO_KINDS = {"Fields": "fields", "Weights": "weights"}
PARAMETERIZATIONS = {"Velocity": "velocity", "Displacement": "displacement"}
# the keys of itkdeepreg.losses.SIMILARITIES (a test checks; not imported here: torch)
METRICS = {
    "LNCC": "lncc",
    "SquaredLNCC": "squared_lncc",
    "MIND": "mind",
    "NCC": "ncc",
    "MSE": "mse",
    "MutualInformation": "mutual_information",
    "NGF": "ngf",
}
DEVICE = (r"cpu|mps|cuda(:\d+)?", '"cpu", "cuda" or "cuda:N" (or "mps")')

OPTIONS = (
    Option(
        "FixedModality", "fixed_modality", "choice", MODALITIES,
        flags=("--fixed-modality", "--fixed_modality"), metavar="{ct,mri}",
        help="the fixed image's modality: the networks' preprocessing",
    ),
    Option(
        "MovingModality", "moving_modality", "choice", MODALITIES,
        flags=("--moving-modality", "--moving_modality"), metavar="{ct,mri}",
        help="the moving image's modality: the networks' preprocessing",
    ),
    Option(
        "Metric", "similarity", "choice", METRICS, aliases={"lncc2": "squared_lncc"},
        flags=("--metric", "--io_sim"), metavar="NAME",
        help="the similarity",
    ),
    Option(
        "InstanceOptimizationIterations", "io_iterations", "int", ">= 0",
        aliases={"None": None}, flags=("--io-iterations", "--io_iterations"), metavar="N",
        help="instance optimization steps after a network; None (any method): none",
    ),
    Option(
        "InstanceOptimization", "io_kind", "choice", IO_KINDS,
        flags=("--io-kind",), metavar="{fields,weights}",
        help="instance optimization of residual fields (fit for a CPU) or of the network's "
        "weights (as published)",
    ),
    Option(
        "Weights", "weights", "str", flags=("--weights", "--network_weights"), metavar="FILE",
        help="a local weights file for a network",
    ),
    Option(
        "CTWindow", "ct_window", "float", many=True, count=2,
        flags=("--ct-window", "--ct_window"), metavar=("MIN", "MAX"),
        help="the Hounsfield window of CT images, scaled to [0, 1] (default: -1000 1000)",
    ),
    Option(
        "QuantileRange", "quantile_range", "float", ">= 0", many=True, count=2,
        flags=("--quantile-range", "--quantile_range"), metavar=("LOWER", "UPPER"),
        help="the quantiles of an MRI's intensities scaled to 0 and 1 (default: its minimum "
        "and its 0.99 quantile)",
    ),
    Option(
        "InputMasking", "input_masking", "bool",
        flags=("--input-masking", "--input_masking"),
        help="a network's preprocessed images multiplied by their masks (both needed)",
    ),
    Option(
        "LossMasking", "loss_masking", "bool",
        flags=("--loss-masking", "--loss_function_masking"),
        help="instance optimization's similarity restricted to the masks (both needed): the "
        "fixed mask's for the fixed side, the moving mask's for the other",
    ),
    Option(
        "DiceWeight", "dice_weight", "float", ">= 0",
        flags=("--dice-weight", "--dice_loss_weight"), metavar="WEIGHT",
        help="a Dice term of the segmentations (both needed) in instance optimization, "
        "this weight times it (default 0: none)",
    ),
    Option(
        "IntensityConservation", "intensity_conservation", "bool",
        flags=("--intensity-conservation", "--intensity_conservation_loss"),
        help="instance optimization compares each warped CT times its volume change "
        "(mass-conserving; both images CT)",
    ),
    Option(
        "Device", "device", "str", DEVICE, flags=("--device",), metavar="DEVICE",
        help="the torch device: cpu, cuda, cuda:1, ... (default: the images', the CPU)",
    ),
    Option(
        "MaximumNumberOfIterations", "iterations", "int", ">= 1", many=True,
        help="optimization steps, one count per pyramid level",
    ),
    Option(
        "ImagePyramidSchedule", "levels", "number", ">= 1", many=True,
        help="the pyramid: one shrink factor per level",
    ),
    Option(
        "Transform", "parameterization", "choice", PARAMETERIZATIONS,
        accessor="Parameterization",
        help="what deformable registration optimises: a velocity or a displacement field",
    ),
    Option("Symmetric", "symmetric", "bool", help="optimise both directions (deformable)"),
    Option(
        "Multimodal", "multimodal", "bool",
        help="images of different contrasts (affine-deformable)",
    ),
    Option(
        "LearningRate", "learning_rate", "float", "> 0",
        flags=("--learning-rate", "--io_lr"), metavar="RATE",
        help="Adam's learning rate; after a network, instance optimization's: 2e-5 of the "
        "weights, or a step in residual-field voxels (default 0.1) with fields",
    ),
)  # fmt: skip
"""The table. A method takes the options it takes: ``unigradicon`` the modalities and
instance optimization, ``deformable`` the pyramid; any other option is set through
``SetMethodOptions`` or ``register --option KEY=VALUE``.

:meta hide-value:
"""

BY_KEY = {option.key: option for option in OPTIONS}
BY_OPTION = {option.option: option for option in OPTIONS}


def read_values(spec: Option, values: tuple[str, ...]):
    """The option value of ``spec``'s values as text (one, or one or more where ``spec.many``),
    or :class:`InvalidValue`."""
    if not spec.many:
        if len(values) != 1:
            raise InvalidValue(f"takes one value, got {len(values)}")
        return read_value(spec, values[0])
    noun = {"int": "integers", "choice": "names"}.get(spec.kind, "numbers")
    if spec.count is not None and len(values) != spec.count:
        raise InvalidValue(f"takes {spec.count} {noun}, got {len(values)}")
    if not values:
        raise InvalidValue(f"takes one or more {noun}")
    return tuple(read_value(spec, text) for text in values)


def read_value(spec: Option, text: str):
    """The option value of one value of ``spec`` as text, or :class:`InvalidValue`."""
    kind, rule = spec.kind, spec.rule
    aliases = {_normal(name): value for name, value in spec.aliases.items()}
    if _normal(text) in aliases:
        return aliases[_normal(text)]
    if kind == "choice":
        by_normal = {_normal(name): option for name, option in rule.items()}
        if _normal(text) not in by_normal:
            raise InvalidValue(f'takes {_either([*rule, *spec.aliases])}, not "{text}"')
        return by_normal[_normal(text)]
    if kind == "bool":
        if text.lower() not in ("true", "false"):
            raise InvalidValue(f'takes "true" or "false", not "{text}"')
        return text.lower() == "true"
    if kind == "str":
        if rule is not None and not re.fullmatch(rule[0], text):
            raise InvalidValue(f'takes {rule[1]}, not "{text}"')
        return text
    whole = re.fullmatch(r"[+-]?\d+", text)
    nouns = "integers" if kind == "int" else "numbers"
    also = f" or {_either(spec.aliases)}" if spec.aliases else ""
    if kind == "int" and not whole:
        raise InvalidValue(f'takes integers{also}, not "{text}"')
    try:
        number = int(text) if whole and kind != "float" else float(text)
    except ValueError:
        raise InvalidValue(f'takes numbers{also}, not "{text}"') from None
    if not math.isfinite(number) or not _meets(number, rule):
        raise InvalidValue(f"takes {nouns}{f' {rule}' if rule else ''}{also}, not {text}")
    return number


def read_text(spec: Option, text: str):
    """``text`` given where a Python value is taken (a setter, ``--option``): read as a
    parameter file reads it, whitespace-separated where ``spec.many``; or :class:`InvalidValue`."""
    return read_values(spec, tuple(text.split()) if spec.many else (text,))


def _either(names) -> str:
    quoted = [f'"{name}"' for name in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def _normal(name: str) -> str:
    return name.lower().replace("_", "")


def _meets(number, bound: str) -> bool:
    """Whether ``number`` is within ``bound``, ``"> 0"`` or ``">= 1"`` (``None``: any)."""
    if bound is None:
        return True
    relation, limit = bound.split()
    return number > float(limit) if relation == ">" else number >= float(limit)

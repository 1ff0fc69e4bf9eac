"""Elastix-style parameter files: reading, writing, and the options of an itkdeepreg step.

A parameter file is text with one ``(Key value value ...)`` entry per line. ``//`` starts a
comment, also at the end of an entry; strings are in double quotes, numbers and ``true`` /
``false`` are bare (``"true"`` is accepted too). :func:`read_parameter_file` reads any elastix
or transformix file into a :class:`ParameterMap` that remembers the line of every key, so an
error found later still names its line.

A file with ``(Registration "DeepRegistration")`` is one of our registration steps;
:func:`step_options` checks it against :data:`STEP_KEYS` (the table of options of
:mod:`itkdeepreg.options`, which the ITK face's setters and the command's flags share) and
gives the keyword options of a registration method, and :func:`step_parameters` is its
reverse. Any other file is an elastix map: :func:`check_elastix_map` checks its keys against those elastix reads. Only the standard
library is used here: the module imports without torch or ITK.
"""

from __future__ import annotations

import difflib
import functools
import math
import numbers
import os
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from .files import write_atomically
from .options import OPTIONS, InvalidValue, Option, read_values

PARAMETER_FILE_SUFFIXES = (".txt",)
STEP_MARKER = "DeepRegistration"


class ParameterFileError(ValueError):
    """A parameter file that cannot be read or used; the message starts with ``path:line:``."""


def _error(path, line, message) -> ParameterFileError:
    where = f"{path}:{line}" if line is not None else f"{path}"
    return ParameterFileError(f"{where}: {message}")


@dataclass
class ParameterMap:
    """The entries of one parameter file.

    ``values``: each key's values as strings, unquoted, in file order; ``lines``: each key's
    1-based line; ``path``: the file, or ``"<text>"``.
    """

    values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    path: str = "<text>"

    @property
    def is_ours(self) -> bool:
        """Whether this is an itkdeepreg step: ``(Registration "DeepRegistration")``."""
        return self.values.get("Registration") == (STEP_MARKER,)

    def as_elastix(self) -> dict[str, list[str]]:
        """The map as ``itk.ParameterObject.AddParameterMap`` takes it (keys to string lists)."""
        return {key: list(values) for key, values in self.values.items()}


# ----------------------------------------------------------------------------------- reading

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def parse_parameter_text(text: str, path: str = "<text>") -> ParameterMap:
    """The :class:`ParameterMap` of a parameter file's text; ``path`` names it in errors.

    Raises :class:`ParameterFileError` naming the line for a line that is neither blank, a
    comment nor one ``(Key value ...)`` entry, unbalanced parentheses or quotes, a missing or
    quoted key, an entry with no value, and a key given twice (both lines are named).
    """
    path = str(path)
    parameters = ParameterMap(path=path)
    for number, line in enumerate(text.split("\n"), start=1):
        entry = _parse_line(line.rstrip("\r"), path, number)
        if entry is None:
            continue
        key, values = entry
        if key in parameters.values:
            first = parameters.lines[key]
            raise _error(path, number, f"{key} is given twice, on lines {first} and {number}")
        parameters.values[key] = values
        parameters.lines[key] = number
    return parameters


def read_parameter_file(path) -> ParameterMap:
    """Read a parameter file (UTF-8 or ASCII text) into a :class:`ParameterMap`."""
    name = os.fspath(path)
    if not os.path.isfile(name):
        if os.path.isdir(name):
            raise IsADirectoryError(f"{name} is a directory, not a parameter file")
        raise FileNotFoundError(f"no parameter file at {name}")
    with open(name, "rb") as file:
        data = file.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise _error(
            name, line, f"not a text file: byte {data[error.start]:#04x} is not UTF-8"
        ) from None
    return parse_parameter_text(text, name)


_TOKEN = re.compile(r'\s+|//.*|[()]|"[^"]*"?|(?:(?!//)[^\s()"])+')


def _parse_line(line: str, path: str, number: int):
    """``(key, values)`` of one line, or ``None`` for a blank or comment line."""
    tokens = []  # (text, quoted)
    opened = closed = False
    for match in _TOKEN.finditer(line):
        token = match.group()
        if token.isspace() or token.startswith("//"):
            continue
        if closed:
            if token == "(":
                raise _error(path, number, "two entries on one line; write one entry per line")
            rest = line[match.start() :].strip()
            raise _error(path, number, f"unexpected text after the entry: {rest!r}")
        if not opened:
            if token == ")":
                raise _error(path, number, "unbalanced parentheses: ')' without '('")
            if token != "(":
                raise _error(
                    path,
                    number,
                    f"expected one (Key value ...) entry or a // comment, got {line.strip()!r}",
                )
            opened = True
        elif token == "(":
            raise _error(path, number, "unbalanced parentheses: '(' inside an entry")
        elif token == ")":
            closed = True
        elif token.startswith('"'):
            if len(token) < 2 or not token.endswith('"'):
                raise _error(path, number, 'unbalanced quotes: a string has no closing "')
            tokens.append((token[1:-1], True))
        else:
            tokens.append((token, False))
    if not opened:
        return None
    if not closed:
        raise _error(path, number, "unbalanced parentheses: no ')' closes the entry")
    if not tokens or tokens[0][1] or not tokens[0][0]:
        raise _error(path, number, "empty key: an entry starts with a bare key, (Key value ...)")
    key = tokens[0][0]
    if not _KEY.match(key):
        raise _error(path, number, f"{key!r} is not a key: keys are words of letters and digits")
    if len(tokens) == 1:
        raise _error(path, number, f"({key}) has no value")
    return key, tuple(text for text, _ in tokens[1:])


# ----------------------------------------------------------------------------------- writing


def parameter_text(values: dict) -> str:
    """The text of a parameter file with ``values``: one ``(Key value ...)`` line per key.

    A value is a string, a number, a bool or a list or tuple of these. Strings (and paths) are
    quoted, integers and floats are bare (floats at full ``repr`` precision), bools are
    ``"true"`` / ``"false"``. An empty list is refused: elastix cannot read it back.
    """
    lines = []
    for key, value in values.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(f"cannot write the key {key!r}: keys are words of letters and digits")
        items = list(value) if isinstance(value, (tuple, list)) else [value]
        if not items:
            raise ValueError(f"cannot write {key} with no value: elastix cannot read it back")
        lines.append(f"({key} {' '.join(_format_value(key, item) for item in items)})")
    return "".join(line + "\n" for line in lines)


def write_parameter_file(values: dict, path) -> None:
    """Write ``values`` (see :func:`parameter_text`) to ``path`` (``.txt``), whole or not at all.

    The values are checked before anything is written; an unwritable path fails with nothing
    left behind.
    """
    text = parameter_text(values)

    def write(temporary):
        with open(temporary, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)

    write_atomically(path, write, PARAMETER_FILE_SUFFIXES)


def _format_value(key, value) -> str:
    if isinstance(value, bool):
        return '"true"' if value else '"false"'
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"cannot write {key} = {number}: elastix reads finite numbers only")
        return repr(number)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        if any(c in value for c in '"\n\r'):
            raise ValueError(
                f"cannot write {key} = {value!r}: a value cannot hold a double quote or a newline"
            )
        return f'"{value}"'
    raise TypeError(
        f"cannot write {key} = {value!r}: values are strings, numbers and bools, "
        f"not {type(value).__name__}"
    )


# ------------------------------------------------------------------------- our step's options


# the table of options (itkdeepreg.options) gives every key but these three: Model names the
# method, and Regularization with RegularizationWeight make one option, a dict of weights
_MODEL = Option("Model", "method", "str")
_REGULARIZERS = {  # the names of itkdeepreg.optimize.deformable.REGULARIZERS (a test checks)
    "Diffusion": "diffusion",
    "BendingEnergy": "bending_energy",
    "GradICON": "gradicon",
    "ICON": "icon",
}
_REGULARIZATION = Option("Regularization", "regularization", "choice", _REGULARIZERS, many=True)
_WEIGHT = Option("RegularizationWeight", "regularization", "float", ">= 0", many=True)

STEP_KEYS = {_MODEL.key: _MODEL, **{spec.key: spec for spec in OPTIONS}}
"""Our step's keys: ``Model`` and the table :data:`itkdeepreg.options.OPTIONS`; besides them,
``Registration`` (the marker) and ``Regularization`` with ``RegularizationWeight`` (together
the ``regularization`` option, a dict of weights by name).

:meta hide-value:
"""

_ALL_KEYS = ["Registration", *STEP_KEYS, _REGULARIZATION.key, _WEIGHT.key]


def _write(spec: Option, value) -> tuple:
    """The values to write for the option value ``value``, or :class:`InvalidValue`."""
    if spec.kind == "choice":
        names = {option: name for name, option in spec.rule.items()}
        if value not in names:
            raise InvalidValue(f"takes {' or '.join(map(repr, names))}, not {value!r}")
        return (names[value],)
    if spec.kind == "bool" and not isinstance(value, bool):
        raise InvalidValue(f"takes True or False, not {value!r}")
    if spec.kind == "str":
        if spec.rule is not None:
            value = str(value)  # a torch.device prints as "cuda:0"
        elif isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str):
            raise InvalidValue(f"takes a string, not {value!r}")
    if isinstance(value, (str, bytes)) or not isinstance(value, Collection):
        return (value,)
    return tuple(value)


@dataclass
class StepOptions:
    """A step read from a parameter file: the method's name and its keyword options.

    ``lines`` maps each option (``"method"`` included) to its line, so a later error, say a
    method that takes no such option, can name it with :meth:`error`.
    """

    method: str
    options: dict
    lines: dict[str, int]
    path: str

    def error(self, option: str, message: str) -> ParameterFileError:
        """A :class:`ParameterFileError` ``"path:line: message"`` at ``option``'s line."""
        return _error(self.path, self.lines.get(option), message)


def step_key(option: str) -> str:
    """The key of a step file that sets the keyword ``option`` (``"regularization"`` is set by
    ``Regularization`` with ``RegularizationWeight``)."""
    return next(
        spec.key for spec in (*STEP_KEYS.values(), _REGULARIZATION) if spec.option == option
    )


def step_options(parameter_map: ParameterMap, methods: Collection[str]) -> StepOptions:
    """The method and options of one of our steps, checked against :data:`STEP_KEYS`.

    ``methods``: the known method names (``Model`` must be one). Every error names the line:
    an unknown key (with the nearest known one when it is close), an unknown model, a wrong
    value or count of values, ``Regularization`` without as many ``RegularizationWeight``
    values, and no ``Model`` at all.
    """
    values, lines, path = parameter_map.values, parameter_map.lines, parameter_map.path
    if not parameter_map.is_ours:
        found = values.get("Registration")
        if found is None:
            raise _error(path, None, f'not an itkdeepreg step: no (Registration "{STEP_MARKER}")')
        given = " ".join(f'"{v}"' for v in found)
        raise _error(
            path,
            lines["Registration"],
            f'not an itkdeepreg step: (Registration {given}) is not (Registration "{STEP_MARKER}")',
        )
    for key in values:
        if key not in _ALL_KEYS:
            raise _error(path, lines[key], f"unknown key {key}{_suggestion(key)}")
    if "Model" not in values:
        raise _error(
            path,
            lines["Registration"],
            'this step names no method: add a (Model "...") entry, e.g. (Model "unigradicon")',
        )
    given = [s for s in STEP_KEYS.values() if s.key in values]
    options = {s.option: _option(parameter_map, s) for s in given}
    # a published None (InstanceOptimizationIterations "None") leaves the method's default
    options = {option: value for option, value in options.items() if value is not None}
    option_lines = {s.option: lines[s.key] for s in given if s.option in options}
    method = options.pop("method")
    if method not in methods:
        known = ", ".join(f'"{m}"' for m in sorted(methods))
        raise _error(path, lines["Model"], f'unknown Model "{method}"; known: {known}')
    regularization = _regularization(parameter_map)
    if regularization is not None:
        options["regularization"] = regularization
        option_lines["regularization"] = lines["Regularization"]
    levels, iterations = options.get("levels"), options.get("iterations")
    if levels is not None and iterations is not None and len(levels) != len(iterations):
        raise _error(
            path,
            lines["MaximumNumberOfIterations"],
            f"MaximumNumberOfIterations has {len(iterations)} values but "
            f"ImagePyramidSchedule (line {lines['ImagePyramidSchedule']}) has "
            f"{len(levels)} levels: give one iteration count per level",
        )
    return StepOptions(method, options, option_lines, path)


def _option(parameter_map: ParameterMap, spec: Option):
    """The option value of ``spec.key`` in ``parameter_map``, or an error at its line."""
    try:
        return read_values(spec, parameter_map.values[spec.key])
    except InvalidValue as error:
        line = parameter_map.lines[spec.key]
        raise _error(parameter_map.path, line, f"{spec.key} {error}") from None


def _regularization(parameter_map):
    values, lines, path = parameter_map.values, parameter_map.lines, parameter_map.path
    names, weights = values.get("Regularization"), values.get("RegularizationWeight")
    if names is None and weights is None:
        return None
    if names is None:
        raise _error(
            path,
            lines["RegularizationWeight"],
            "RegularizationWeight without Regularization: name the regularizers it weighs",
        )
    if weights is None:
        raise _error(
            path,
            lines["Regularization"],
            "Regularization without RegularizationWeight: give one weight per regularizer",
        )
    parsed = _option(parameter_map, _REGULARIZATION)
    if len(set(parsed)) != len(parsed):
        raise _error(path, lines["Regularization"], "Regularization names a regularizer twice")
    if len(weights) != len(names):
        raise _error(
            path,
            lines["RegularizationWeight"],
            f"RegularizationWeight has {_count(weights, 'value')} for "
            f"{_count(names, 'Regularization name')} (line {lines['Regularization']}): "
            "give one weight per regularizer",
        )
    return dict(zip(parsed, _option(parameter_map, _WEIGHT)))


def _count(items, noun):
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _suggestion(key: str) -> str:
    by_lower = {k.lower(): k for k in _ALL_KEYS}
    close = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.7)
    if close:
        return f"; did you mean {by_lower[close[0]]}?"
    return f"; an itkdeepreg step takes {', '.join(_ALL_KEYS)}"


def step_parameters(method: str, **options) -> dict[str, tuple]:
    """The entries of a step file for ``method`` with ``options``: the reverse of
    :func:`step_options`. Options that are ``None`` are left out (the method's default).

    ``step_parameters("deformable", similarity="lncc", iterations=(100, 50))`` is
    ``{"Registration": ("DeepRegistration",), "Model": ("deformable",), "Metric": ("LNCC",),
    "MaximumNumberOfIterations": (100, 50)}``.
    Each value is checked as :func:`step_options` will check it when the file is read back.
    """
    by_option = {spec.option: spec for spec in STEP_KEYS.values()}
    entries = {"Registration": (STEP_MARKER,), "Model": _checked(by_option["method"], method)}
    for option, value in options.items():
        if value is None:
            continue
        if option == "regularization":
            entries.update(_regularization_entries(value))
        elif option in by_option and option != "method":
            entries[by_option[option].key] = _checked(by_option[option], value)
        else:
            known = ", ".join(sorted([*by_option, "regularization"]))
            raise ValueError(f"no parameter-file key for the option {option!r}; known: {known}")
    return entries


def _checked(spec: Option, value) -> tuple:
    """The values to write for ``value``, checked by reading their text back as
    :func:`step_options` will."""
    try:
        written = _write(spec, value)
        text = parameter_text({spec.key: written}) if written else ""
        read_values(spec, parse_parameter_text(text).values.get(spec.key, ()))
    except (InvalidValue, TypeError, ValueError) as error:
        raise ValueError(f"{spec.option}={value!r}: {spec.key} {error}") from None
    return written


def _regularization_entries(regularization) -> dict:
    if not isinstance(regularization, dict) or not regularization:
        raise ValueError(
            f"regularization={regularization!r}: give a dict of weights by regularizer name, "
            'e.g. {"diffusion": 0.05}'
        )
    names = {option: name for name, option in _REGULARIZERS.items()}
    for name, weight in regularization.items():
        if name not in names:
            raise ValueError(
                f"regularization: unknown regularizer {name!r}; known: {', '.join(names)}"
            )
        if (
            isinstance(weight, bool)
            or not isinstance(weight, numbers.Real)
            or not math.isfinite(weight)
            or weight < 0
        ):
            raise ValueError(f"regularization: the weight of {name} must be a number >= 0")
    return {
        "Regularization": tuple(names[name] for name in regularization),
        "RegularizationWeight": tuple(float(w) for w in regularization.values()),
    }


# ------------------------------------------------------------------------------ elastix maps

ELASTIX_KEYS_FILE = Path(__file__).parent / "data" / "elastix_parameters.txt"
_COMPONENTS = (
    "Registration|FixedImagePyramid|MovingImagePyramid|Interpolator|ImageSampler|Metric|"
    "Optimizer|Transform|ResampleInterpolator|Resampler"
)
# elastix reads a component's key also after the component's label, "Metric1NumberOfHistogramBins"
_LABELLED = re.compile(rf"(?P<label>(?:{_COMPONENTS})\d+)(?P<key>\w+)")
# and numbers some keys itself
_NUMBERED = re.compile(
    r"Metric\d+(?:Weight|RelativeWeight|Use)|Erode(?:Fixed|Moving)Mask\d+|FullSearchSpace\d+"
)


@functools.cache
def elastix_keys() -> frozenset[str]:
    """The keys elastix reads from a parameter file, as listed in :data:`ELASTIX_KEYS_FILE`
    (the file says where they come from)."""
    lines = ELASTIX_KEYS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def is_elastix_key(key: str) -> bool:
    """Whether elastix reads ``key``: a listed key, one after a component's label
    (``Metric1NumberOfHistogramBins``), or a numbered one (``Metric0Weight``)."""
    labelled = _LABELLED.fullmatch(key)
    known = elastix_keys()
    return (
        key in known
        or bool(_NUMBERED.fullmatch(key))
        or (labelled is not None and labelled["key"] in known)
    )


def check_elastix_map(parameter_map: ParameterMap) -> None:
    """Refuse, with a :class:`ParameterFileError`, a map that holds no parameters and a key
    elastix does not read (elastix would ignore it without a word), at the key's line and with
    the nearest known key when one is close."""
    path = parameter_map.path
    if not parameter_map.values:
        raise _error(path, None, "holds no parameters: not one (Key value ...) entry")
    for key in parameter_map.values:
        if not is_elastix_key(key):
            line = parameter_map.lines.get(key)
            raise _error(path, line, f"unknown elastix key {key}{_elastix_suggestion(key)}")


def _elastix_suggestion(key: str) -> str:
    by_lower = {k.lower(): k for k in elastix_keys()}
    labelled = _LABELLED.fullmatch(key)
    label, rest = (labelled["label"], labelled["key"]) if labelled else ("", key)
    close = difflib.get_close_matches(rest.lower(), list(by_lower), n=1, cutoff=0.7)
    if close:
        return f"; did you mean {label}{by_lower[close[0]]}?"
    return "; elastix reads no such key (the keys it reads: itkdeepreg/data/elastix_parameters.txt)"

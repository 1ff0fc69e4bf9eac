"""ITK's text (``.tfm``, ``.txt``) and MATLAB (``.mat``, ANTs' affines) transform files, read
without ITK's transform reader.

ITK's reader sits in a module that depends on ITK's displacement-field module and, through it,
on a dozen more (smoothing, FFT, thresholding, ...): 10-12 s of loading on this machine before
one affine is read. What these two formats hold (linear transforms, B-splines, composites of
them) is built here from ITK's transform module, which reading any image loads anyway, by the
class name the file gives, as ITK's transform factory does; a name this module cannot build
returns ``None`` so that the caller hands the file to ITK's reader.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import itk

_COMPOSITE = "CompositeTransform"


@dataclass(frozen=True)
class Record:
    """One transform of a file: its class as written (``AffineTransform_double_3_3``), its
    numbers (``None`` where the file gives none), and where it starts (a line, or a matrix)."""

    name: str
    parameters: list[float] | None
    fixed_parameters: list[float] | None
    where: str


def read_records(path) -> list[Record] | None:
    """The transforms of a ``.tfm``/``.txt`` or ``.mat`` file, in file order; ``None`` for
    another kind of file. Raises ``ValueError`` on a file these formats cannot be."""
    lower = str(path).lower()
    if lower.endswith((".tfm", ".txt")):
        return _text_records(path)
    if lower.endswith(".mat"):
        return _matlab_records(path)
    return None


def build(path, records: list[Record]):
    """The ITK transforms (double precision) of ``records``, as ITK's reader returns them: a
    composite takes every transform after it. ``None`` if a class is not one built here.
    Each transform must get exactly its numbers: ITK would take a short list as defaults."""
    transforms = []
    composite = None
    for record in records:
        transform = _instance(record.name)
        if transform is None:
            return None
        if record.name.startswith(_COMPOSITE + "_"):
            composite = transform
            transforms.append(transform)
            continue
        for key, values in (
            ("FixedParameters", record.fixed_parameters),
            ("Parameters", record.parameters),
        ):
            count = (  # a B-spline's parameter count follows from its fixed parameters
                transform.GetNumberOfFixedParameters()
                if key == "FixedParameters"
                else transform.GetNumberOfParameters()
            )
            if len(values or ()) != count:
                given = len(values) if values is not None else "none"
                raise ValueError(
                    f"{path}: its {transform.GetNameOfClass()} ({record.where}) needs {count} "
                    f"{key}, the file gives {given}"
                )
            if count and key == "FixedParameters":
                transform.SetFixedParameters(_parameters(values))
            elif count:
                transform.SetParametersByValue(_parameters(values))
        if composite is not None:
            composite.AddTransform(transform)
        else:
            transforms.append(transform)
    return transforms


def _instance(name: str):
    """A new double-precision ITK transform of the class ``name`` names, or ``None``. Each
    template instance of the class is asked its name, as ITK's factory registers them (a file
    in single precision is read into double, as ITK's double reader does)."""
    class_name, _, suffix = name.partition("_")
    wanted = f"{class_name}_{suffix.replace('float', 'double', 1)}"
    try:
        template = getattr(itk, class_name)
        keys = list(template.keys())
    except (AttributeError, TypeError):
        return None
    for key in keys:
        key = key if isinstance(key, tuple) else (key,)
        if key[0] is not itk.D:
            continue
        transform = template[key].New()
        if transform.GetTransformTypeAsString() == wanted:
            return transform
    return None


def _parameters(values):
    array = itk.OptimizerParameters[itk.D](len(values))
    for index, value in enumerate(values):
        array[index] = value
    return array


def _text_records(path) -> list[Record]:
    """ITK's text format: ``Transform:``, ``Parameters:`` and ``FixedParameters:`` lines, ``#``
    comments. ITK reads a number it cannot parse, or a missing line, as the transform's
    default: here such a file is refused with its line."""
    records = []
    with open(path, encoding="utf-8", errors="replace") as file:
        for number, line in enumerate(file, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, colon, values = (part.strip() for part in line.partition(":"))
            if not colon:
                raise ValueError(f"{path}, line {number}: not 'Key: values'")
            if key == "Transform":
                records.append(Record(values, None, None, f"line {number}"))
            elif key in ("Parameters", "FixedParameters"):
                if not records:
                    raise ValueError(f"{path}, line {number}: {key} before any Transform line")
                try:
                    numbers = [float(v) for v in values.split()]
                except ValueError:
                    numbers = [math.nan]
                if not all(map(math.isfinite, numbers)):
                    raise ValueError(f"{path}, line {number}: not a list of finite numbers")
                field = "parameters" if key == "Parameters" else "fixed_parameters"
                records[-1] = _with(records[-1], **{field: numbers})
    if not records:
        raise ValueError(f"{path} names no transform (no 'Transform:' line)")
    return records


def _with(record: Record, **changes) -> Record:
    return Record(**{**record.__dict__, **changes})


# vnl's MATLAB v4 matrices, as ITK's MatlabTransformIO writes them (ANTs' .mat): five int32
# (type, rows, columns, imaginary, name length), the name with its NUL, then the values by
# column; the type's thousands say big-endian, its hundreds by row (a vector either way), its
# tens single precision
_HEADER = struct.Struct("<5i")
_KINDS = (0, 10, 100, 110)


def _matlab_records(path) -> list[Record]:
    """The (parameters, ``fixed``) matrix pairs of a MATLAB v4 transform file."""
    with open(path, "rb") as file:
        data = file.read()
    matrices = []
    offset = 0
    while offset < len(data):
        name, values, offset = _matlab_matrix(path, data, offset)
        matrices.append((name, values))
    if not matrices or len(matrices) % 2:
        raise ValueError(
            f"{path} is not an ITK MATLAB transform file: it holds {len(matrices)} matrices, "
            "not pairs of parameters and fixed parameters"
        )
    records = []
    for index in range(0, len(matrices), 2):
        (name, parameters), (fixed_name, fixed) = matrices[index : index + 2]
        if fixed_name != "fixed":
            raise ValueError(f"{path}: matrix {index + 2} is {fixed_name!r}, not 'fixed'")
        if not all(map(math.isfinite, parameters + fixed)):
            raise ValueError(f"{path}: its {name} holds NaN or infinite values")
        records.append(Record(name, parameters, fixed, f"matrix {index + 1}"))
    return records


def _matlab_matrix(path, data: bytes, offset: int):
    """``(name, values, next offset)`` of the matrix at ``offset``."""
    truncated = ValueError(f"{path} is not an ITK MATLAB transform file: it is cut short")
    if offset + _HEADER.size > len(data):
        raise truncated
    kind, rows, columns, imaginary, name_length = _HEADER.unpack_from(data, offset)
    order = "<"
    if kind not in _KINDS:  # big-endian: the header reads right the other way round
        kind, rows, columns, imaginary, name_length = struct.unpack_from(">5i", data, offset)
        order = ">"
        if kind - 1000 not in _KINDS:
            raise ValueError(f"{path} is not an ITK MATLAB transform file (matrix type {kind})")
    if imaginary or rows < 0 or columns < 0 or not 0 < name_length <= 1024:
        raise ValueError(f"{path} is not an ITK MATLAB transform file: a malformed header")
    offset += _HEADER.size
    value = "f" if kind % 100 == 10 else "d"
    count = rows * columns
    end = offset + name_length + count * struct.calcsize(value)
    if end > len(data):
        raise truncated
    name = data[offset : offset + name_length].split(b"\0", 1)[0].decode("ascii", "replace")
    values = list(struct.unpack_from(f"{order}{count}{value}", data, offset + name_length))
    return name, values, end

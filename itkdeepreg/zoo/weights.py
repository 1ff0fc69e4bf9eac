"""Published weights: download into a user cache, verify, and load strictly and safely."""

from __future__ import annotations

import hashlib
import os
import pickletools
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..files import write_all

_CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightsSource:
    """Where a weights file is published, the name it gets in the cache, and its SHA-256.

    ``sha256`` is ``None`` where the published file's checksum has not been pinned yet; the
    download's own SHA-256 is then recorded beside it (``<filename>.sha256``) and checked on
    every later use, and loading still checks every name and shape.
    """

    url: str
    filename: str
    sha256: str | None = None


_RELEASES = "https://github.com/uncbiag/uniGradICON/releases/download"
UNIGRADICON = WeightsSource(
    f"{_RELEASES}/unigradicon_weights/Step_2_final.trch", "unigradicon-1.0.trch"
)
MULTIGRADICON = WeightsSource(
    f"{_RELEASES}/multigradicon_weights/Step_2_final.trch", "multigradicon-1.0.trch"
)

# GradICON's lung, knee and brain models (icon_registration pretrained_models/lung_ct.py,
# init_network): the published code loads these files with strict=False, so whether they hold
# tensors beyond the four U-Nets' has not been checked here (load_weights would name them)
_ICON_RELEASES = "https://github.com/uncbiag/ICON/releases/download/pretrained_models_v1.0.0"
GRADICON_LUNG = WeightsSource(
    f"{_ICON_RELEASES}/lung_model_weights_step_2.trch", "gradicon-lung-1.0.trch"
)
GRADICON_KNEE = WeightsSource(
    f"{_ICON_RELEASES}/knee_model_weights_step_2.trch", "gradicon-knee-1.0.trch"
)
GRADICON_BRAIN = WeightsSource(
    f"{_ICON_RELEASES}/brain_model_weights_step_2.trch", "gradicon-brain-1.0.trch"
)


def cache_directory() -> Path:
    """``$ITKDEEPREG_CACHE``, else ``$XDG_CACHE_HOME/itkdeepreg``, else ``~/.cache/itkdeepreg``."""
    if os.environ.get("ITKDEEPREG_CACHE"):
        return Path(os.environ["ITKDEEPREG_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "itkdeepreg"


def fetch(source: WeightsSource, cache: Path | None = None, progress: bool = True) -> Path:
    """The path of ``source``'s file in the cache, downloaded first if it is not there.

    The download is written under a temporary name and renamed once its SHA-256 matches (with
    no checksum pinned, once it reads as a state dict, its digest recorded in
    ``<filename>.sha256`` beside it), so an interrupted or corrupt download never takes the
    file's place. A cached file is checked on every use against the pin, else the record: a
    file planted in the cache, or changed since, is refused.
    """
    cache = Path(cache) if cache is not None else cache_directory()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(
            f"cannot use {cache} as the weights cache ({error}); set ITKDEEPREG_CACHE"
        ) from None
    path = cache / source.filename
    record = cache / f"{source.filename}.sha256"
    if path.is_file():
        _check_cached(path, record, source.sha256)
        return path
    digest = hashlib.sha256()

    def download(temporary):
        try:
            response = urllib.request.urlopen(source.url, timeout=60)
        except (urllib.error.URLError, OSError) as error:
            raise OSError(_how_to_supply(source, cache, error)) from None
        total = int(response.headers.get("Content-Length") or 0) or None
        with response, open(temporary, "wb") as file:
            bar = _progress(total, source.filename) if progress else None
            while chunk := response.read(_CHUNK):
                file.write(chunk)
                digest.update(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            if bar is not None:
                bar.close()
        if total is not None and os.path.getsize(temporary) != total:
            raise OSError(f"the download of {source.url} was cut short")
        _verify(source.url, source.sha256, digest.hexdigest())
        if source.sha256 is None:  # no checksum to trust: at least it must read as weights
            try:
                read_state_dict(temporary)
            except ValueError as error:  # named by its URL, not by the temporary name
                why = str(error).removeprefix(f"{temporary} ")
                raise ValueError(f"the download of {source.url} {why}") from None

    def write_record(temporary):  # sha256sum's format: `sha256sum -c` checks it too
        Path(temporary).write_text(f"{digest.hexdigest()}  {source.filename}\n")

    outputs = [(path, download, None)]
    if source.sha256 is None:  # the file and its record: both or neither
        outputs.append((record, write_record, None))
    write_all(outputs)
    return path


def _how_to_supply(source: WeightsSource, cache: Path, error) -> str:
    """Why the weights could not be downloaded, and the two ways to give them by hand."""
    reason = getattr(error, "reason", error)
    record = (  # a file put in the cache by hand needs its checksum beside it (_check_cached)
        f"with its checksum beside it (cd {cache} && sha256sum {source.filename} > "
        f"{source.filename}.sha256)"
        if source.sha256 is None
        else f"(its SHA-256 must be {source.sha256})"
    )
    return (
        f"could not download {source.url} ({reason}). Download it where you can and give it "
        f"with --weights FILE (weights= in Python), or put it in the weights cache as "
        f"{cache / source.filename} {record}; the cache is $ITKDEEPREG_CACHE, else "
        "$XDG_CACHE_HOME/itkdeepreg, else ~/.cache/itkdeepreg"
    )


def _check_cached(path: Path, record: Path, pinned: str | None) -> None:
    """Refuse a cached file whose SHA-256 is not the pinned one, or (none pinned) the one
    recorded when it was downloaded."""
    actual = sha256_of(path)
    if pinned is not None:
        _verify(f"{path} (delete it to download again)", pinned, actual)
        return
    try:
        recorded = record.read_text().split()[0]
    except (OSError, IndexError):
        raise ValueError(
            f"{path} was not downloaded by itkdeepreg (there is no record of its SHA-256 in "
            f"{record.name}): delete it to download again, or pass your own file as the weights"
        ) from None
    if actual != recorded:
        raise ValueError(
            f"{path} changed since it was downloaded (SHA-256 {actual}, recorded {recorded}): "
            "delete it to download again"
        )


def sha256_of(path) -> str:
    """The SHA-256 of a file, in hex: what a cached file is checked against, and what to print
    beside results made with a ``--weights`` file."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_torch_file(path):
    """What a torch file holds, read without executing any pickled code. A file that cannot be
    read so is refused with a one-line ValueError that names it and says why."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(_why_unreadable(path, error)) from None


def read_state_dict(path) -> dict:
    """The tensors of a weights file, read without executing any pickled code."""
    state = read_torch_file(path)
    if not _is_state_dict(state):
        raise ValueError(f"{path} {_holds(state, path)}")
    return state


def load_weights(model: nn.Module, weights) -> nn.Module:
    """Load a state dict (or a file of one) into ``model`` strictly: every name and shape, and
    real, finite values for every floating-point weight.

    A missing, extra, misshapen, integer or complex, NaN or infinite tensor is refused with a
    message that names it, before any weight of the model changes.
    """
    state = read_state_dict(weights) if isinstance(weights, (str, os.PathLike)) else weights
    not_tensors = [name for name, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ValueError(
            f"the weights hold values that are not tensors: {', '.join(not_tensors[:10])}"
        )
    problems = weight_problems(model, state)
    if problems:
        listed = "; ".join(problems[:10]) + (
            f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        )
        raise ValueError(f"the weights do not fit the model: {listed}")
    model.load_state_dict(state, strict=True)
    return model


def weight_problems(model: nn.Module, state: dict) -> list[str]:
    """What keeps the state dict ``state`` from loading into ``model``, tensor by tensor: a
    missing, extra or misshapen one; an integer or complex one for a floating-point weight
    (load_state_dict would cast it silently); NaN or infinite values."""
    expected = model.state_dict()
    problems = [
        f"missing {name} {list(t.shape)}" for name, t in expected.items() if name not in state
    ]
    problems += [f"unexpected {name}" for name in state if name not in expected]
    for name, t in expected.items():
        given = state.get(name)
        if given is None:
            continue
        if not isinstance(given, torch.Tensor):
            problems.append(f"{name} is a {type(given).__name__}, not a tensor")
        elif given.shape != t.shape:
            problems.append(
                f"{name} has shape {list(given.shape)}, the model needs {list(t.shape)}"
            )
        elif (t.is_floating_point() and not given.is_floating_point()) or (
            given.is_complex() and not t.is_complex()
        ):
            problems.append(f"{name} is {_dtype(given)}, the model needs {_dtype(t)}")
        elif given.is_floating_point() and not torch.isfinite(given).all():
            nan, inf = int(given.isnan().sum()), int(given.isinf().sum())
            problems.append(f"{name} holds {nan} NaN and {inf} infinite of {given.numel()} values")
    return problems


def _dtype(tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def _is_state_dict(state) -> bool:
    return isinstance(state, dict) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    )


def _holds(state, path) -> str:
    """What a file that loads, but is not a state dict, holds, in a few words."""
    if not isinstance(state, dict):
        return f"holds a {type(state).__name__}, not a state dict (a dict of named tensors)"
    others = [
        f"{k} ({type(v).__name__})" for k, v in state.items() if not isinstance(v, torch.Tensor)
    ]
    others = others or [f"{k!r} ({type(k).__name__})" for k in state if not isinstance(k, str)]
    text = f"holds a dict with entries that are not named tensors: {', '.join(others[:5])}"
    inner = [k for k, v in state.items() if isinstance(v, dict) and v and _is_state_dict(v)]
    if inner:  # a training checkpoint, most likely
        text += (
            f"; its {inner[0]!r} entry is a state dict: save it alone with "
            f"torch.save(torch.load({str(path)!r}, weights_only=True)[{inner[0]!r}], 'weights.pt')"
        )
    return text


def _why_unreadable(path, error) -> str:
    """Why torch refused ``path``: the globals its pickle would import or call (found in its
    opcodes, none of them run), else how the file is broken."""
    safe = _torch_safe_globals()
    beyond = sorted(  # those of torch last: the others tell more
        (
            name
            for name in _pickled_globals(path)
            if (name not in safe if safe is not None else name.split(".")[0] != "torch")
        ),
        key=lambda name: (name.startswith("torch."), name),
    )
    if beyond:
        more = f" and {len(beyond) - 5} more" if len(beyond) > 5 else ""
        return (
            f"{path} holds pickled Python objects beyond tensors: loading it would import or "
            f"call {', '.join(beyond[:5])}{more}; refused, as that could run any code (where "
            "you trust the file, load it in its own code and save its state_dict() alone)"
        )
    detail = f"{type(error).__name__}: {str(error).strip().split('. ')[0]}"[:200]
    with open(path, "rb") as file:
        head = file.read(4)
    if not head:
        return f"{path} is empty"
    if head == b"PK\x03\x04":  # torch's zip format, broken
        return f"{path} is a truncated or corrupt torch file ({detail})"
    return f"{path} is not a torch file, or a corrupt or truncated one ({detail})"


def _torch_safe_globals():
    """The globals torch's weights-only unpickler accepts (a private list of torch's: without
    it, None)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return set(_get_allowed_globals())
    except ImportError:
        return None


_STRINGS = {
    "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE",
    "BINUNICODE8",
}  # fmt: skip


def _pickled_globals(path) -> set[str]:
    """The globals (``module.name``) named by the pickles of a torch file, read from their
    opcodes without running any: what unpickling would import, and could call."""
    found = set()
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for name in archive.namelist():
                    if name.rsplit("/", 1)[-1] == "data.pkl":
                        with archive.open(name) as file:
                            _scan_pickle(file, found)
        else:
            with open(path, "rb") as file:
                for _ in range(5):  # torch's legacy format: pickles, then raw tensor data
                    _scan_pickle(file, found)
    except Exception:  # noqa: BLE001  broken past some point: what was found before it
        pass
    return found


def _scan_pickle(file, found: set) -> None:
    """Add the globals of the pickle at ``file``'s position to ``found``."""
    memo, pushed = {}, [None, None]  # strings kept in the memo; the last two values pushed
    for opcode, arg, _ in pickletools.genops(file):
        kind = opcode.name
        if kind in ("GLOBAL", "INST"):  # "module name"; protocols 0-2 say __builtin__
            found.add(arg.replace(" ", ".").replace("__builtin__.", "builtins.", 1))
        elif kind == "STACK_GLOBAL" and all(isinstance(s, str) for s in pushed):
            found.add(".".join(pushed))
        if kind == "MEMOIZE":
            memo[len(memo)] = pushed[-1]
        elif kind in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = pushed[-1]
        elif kind not in ("FRAME", "PROTO", "STOP"):
            value = arg if kind in _STRINGS else memo.get(arg) if kind.endswith("GET") else None
            pushed = [pushed[-1], value]


def _verify(what, expected, actual):
    if expected is not None and actual != expected:
        raise ValueError(
            f"SHA-256 of {what} is {actual}, expected {expected}: the file is not the published one"
        )


def _progress(total, name):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=name)

"""Published weights: download into a user cache, verify, and load strictly and safely."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..files import write_atomically

_CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightsSource:
    """Where a weights file is published, the name it gets in the cache, and its SHA-256.

    ``sha256`` is ``None`` where the published file's checksum has not been pinned yet; the
    download is then kept unverified, and loading still checks every name and shape.
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
    no checksum pinned, once it reads as a state dict), so an interrupted or corrupt download
    never takes the file's place.
    """
    cache = Path(cache) if cache is not None else cache_directory()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(
            f"cannot use {cache} as the weights cache ({error}); set ITKDEEPREG_CACHE"
        ) from None
    path = cache / source.filename
    if path.is_file():
        _verify(f"{path} (delete it to download again)", source.sha256, sha256_of(path))
        return path

    def download(temporary):
        digest = hashlib.sha256()
        try:
            response = urllib.request.urlopen(source.url, timeout=60)
        except (urllib.error.URLError, OSError) as error:
            raise OSError(f"could not download {source.url}: {error}") from None
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
            read_state_dict(temporary)

    write_atomically(path, download)
    return path


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(path) -> dict:
    """The tensors of a weights file, read without executing any pickled code."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{path} is not a readable weights file (corrupt, truncated, or it carries code): "
            f"{error}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return state


def load_weights(model: nn.Module, weights) -> nn.Module:
    """Load a state dict (or a file of one) into ``model`` strictly: every name and shape.

    A missing, extra or misshapen tensor is refused with a message that names it, before any
    weight of the model changes.
    """
    state = read_state_dict(weights) if isinstance(weights, (str, os.PathLike)) else weights
    not_tensors = [name for name, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ValueError(
            f"the weights hold values that are not tensors: {', '.join(not_tensors[:10])}"
        )
    expected = model.state_dict()
    problems = [
        f"missing {name} {list(t.shape)}" for name, t in expected.items() if name not in state
    ]
    problems += [f"unexpected {name}" for name in state if name not in expected]
    problems += [
        f"{name} has shape {list(state[name].shape)}, the model needs {list(t.shape)}"
        for name, t in expected.items()
        if name in state and state[name].shape != t.shape
    ]
    if problems:
        listed = "; ".join(problems[:10]) + (
            f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        )
        raise ValueError(f"the weights do not fit the model: {listed}")
    model.load_state_dict(state, strict=True)
    return model


def _verify(what, expected, actual):
    if expected is not None and actual != expected:
        raise ValueError(
            f"SHA-256 of {what} is {actual}, expected {expected}: the file is not the published one"
        )


def _progress(total, name):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=name)

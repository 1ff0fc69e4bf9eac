"""What the commands share to read their inputs and write their outputs (imported by a
command when it runs: it loads ITK)."""

from __future__ import annotations

import contextlib
import os
import sys

from ..files import IMAGE_SUFFIXES, TRANSFORM_SUFFIXES, temporary_name, unfinished_outputs
from ..interop.images import check_scalar_image
from ..interop.images import read_image as read_image_file
from ..interop.transforms import read_itk_transform as read_itk_transform_file
from ._base import CommandError, UsageError, report

OUR_SUFFIXES = (*IMAGE_SUFFIXES, *TRANSFORM_SUFFIXES, ".png")  # the files we name ourselves


def require_file(path, flag) -> None:
    if not os.path.exists(path):
        raise CommandError(f"{flag}: no such file: {path}")


def read_image(path, flag, scalar=True):
    """An image file (any format ITK reads, or a DICOM folder); one-line errors."""
    require_file(path, flag)
    try:
        with native_stderr_silenced():  # GDCM and MetaIO print their own diagnostics
            image = read_image_file(path)
    except ValueError as error:
        raise CommandError(f"{flag}: {error}") from None
    if scalar:
        try:
            check_scalar_image(image, f"{flag} {path}")
        except (TypeError, ValueError) as error:
            raise CommandError(str(error)) from None
    return image


def read_itk_transform(path, flag):
    """The transform of an ITK transform file: one transform, or one composite."""
    require_file(path, flag)
    try:
        with native_stderr_silenced():  # HDF5 prints its own diagnostics on a bad file
            return read_itk_transform_file(path)
    except ValueError as error:
        raise CommandError(f"{flag}: {error}") from None


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


def check_outputs(outputs, args) -> None:
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
            if os.path.realpath(input_path) == absolute or same_file(path, input_path):
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
        report(f"{unfinished}; this run writes them anew", kind="warning")


def same_file(a, b) -> bool:
    """Whether two existing paths are one file (hard links, bind mounts)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@contextlib.contextmanager
def output_folder(path, flag):
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
def native_stderr_silenced():
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

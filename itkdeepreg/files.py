"""Writing outputs whole or not at all."""

from __future__ import annotations

import os
import uuid


def write_atomically(path, write, suffixes=None) -> None:
    """Call ``write(temporary)`` on a name beside ``path``, then rename it to ``path``.

    A reader never sees a half-written file, and a failed write leaves nothing behind. The
    target is checked first (its suffix against ``suffixes``, its directory), so a path that
    cannot be written fails before the work that ``write`` does.
    """
    write_all([(path, write, suffixes)])


def write_all(outputs) -> None:
    """Several outputs, all or none: ``outputs`` is a list of ``(path, write, suffixes)``.

    Every target is checked before any writing starts; each file is written under a temporary
    name, and the files are renamed into place only when all of them are complete.
    """
    temporaries = [temporary_name(path, suffixes) for path, _, suffixes in outputs]
    try:
        for (_, write, _), temporary in zip(outputs, temporaries):
            write(temporary)
        for (path, _, _), temporary in zip(outputs, temporaries):
            os.replace(temporary, os.fspath(path))
    except BaseException:
        for temporary in temporaries:
            if os.path.exists(temporary):
                os.unlink(temporary)
        raise


def temporary_name(path, suffixes=None) -> str:
    """A name beside ``path`` to write it under, once ``path`` is known to be writable: its
    suffix is one of ``suffixes`` and its directory exists and is writable."""
    path = os.fspath(path)
    name = os.path.basename(path)
    suffix = os.path.splitext(name)[1]
    if suffixes is not None:
        matching = [s for s in suffixes if name.lower().endswith(s)]
        if not matching:
            raise ValueError(
                f"cannot write {path}: the name must end in one of {', '.join(suffixes)}"
            )
        suffix = max(matching, key=len)  # .nii.gz, not .gz
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path}: it is a directory")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise OSError(f"cannot write {path}: {directory} is not a writable directory")
    # not created in advance (as mkstemp would, mode 0600): the writer creates it under the umask
    return os.path.join(directory, f".partial-{uuid.uuid4().hex}{suffix}")

"""Writing outputs whole or not at all.

Each output is written under a temporary name beside its target, and the set is renamed into
place only when every file is complete. A journal beside the first target names the set while
it is written and published: a run killed outright (SIGKILL, a power cut) leaves its journal,
and the next run on any of those targets reports what it finds (:func:`unfinished_outputs`)
and removes the temporary files left behind. SIGINT and SIGTERM that arrive while the files are
renamed into place wait until the set is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import uuid

TRANSFORM_SUFFIXES = (".h5", ".hdf5", ".tfm", ".txt", ".mat")  # ITK transform files
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")  # single-file images: renamed whole
_JOURNAL_PREFIX = ".itkdeepreg-writing-"


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
    targets = [os.path.abspath(path) for path, _, _ in outputs]
    temporaries = [temporary_name(path, suffixes) for path, _, suffixes in outputs]
    journal = _journal_name(targets[0])
    _write_journal(journal, targets, temporaries, publishing=False)
    publishing = False
    try:
        for (_, write, _), temporary in zip(outputs, temporaries):
            write(temporary)
        with _signals_deferred():
            _write_journal(journal, targets, temporaries, publishing=True)
            publishing = True
            for target, temporary in zip(targets, temporaries):
                os.replace(temporary, target)
            os.unlink(journal)
    except BaseException:
        # a set cut off while it was put in place keeps its journal for the next run to report
        for leftover in temporaries if publishing else [*temporaries, journal]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        raise
    _clear_journals(targets)


def unfinished_outputs(paths) -> str | None:
    """What a killed run left among ``paths``' targets, in words (``None``: nothing), after
    removing its temporary files: a set cut off while it was published (some files new, some
    from before), or temporary files of a set that was never published."""
    wanted = {os.path.abspath(path) for path in paths}
    messages = []
    for journal, entry in _journals(wanted):
        if entry["publishing"]:
            shared = sorted(set(entry["targets"]) & wanted)
            messages.append(
                "a run was killed while it put its outputs in place; these may be a mix of "
                f"its files and older ones: {', '.join(shared)}"
            )
        for leftover in entry["temporaries"]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        if not entry["publishing"]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(journal)
    return "; ".join(messages) or None


def _journals(targets):
    """``(path, entry)`` of every journal beside ``targets`` that names one of them."""
    for directory in sorted({os.path.dirname(t) for t in targets}):
        with contextlib.suppress(OSError):
            names = [n for n in os.listdir(directory) if n.startswith(_JOURNAL_PREFIX)]
            for name in names:
                path = os.path.join(directory, name)
                try:
                    with open(path, encoding="utf-8") as file:
                        entry = json.load(file)
                except (OSError, ValueError):
                    continue  # being written, or cut short: nothing to act on
                if set(entry.get("targets", ())) & set(targets):
                    yield path, entry


def _clear_journals(targets) -> None:
    """After a complete set: journals of earlier killed runs whose targets it all replaced."""
    for journal, entry in list(_journals(set(targets))):
        if set(entry["targets"]) <= set(targets):
            for leftover in [*entry["temporaries"], journal]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)


def _journal_name(target: str) -> str:
    return os.path.join(os.path.dirname(target), f"{_JOURNAL_PREFIX}{uuid.uuid4().hex}.json")


def _write_journal(path, targets, temporaries, publishing) -> None:
    """The journal, replaced whole: a reader sees the old entry or the new one."""
    staging = f"{path}.{uuid.uuid4().hex}"
    entry = {"targets": targets, "temporaries": temporaries, "publishing": publishing}
    with open(staging, "w", encoding="utf-8") as file:
        json.dump(entry, file)
    os.replace(staging, path)


@contextlib.contextmanager
def _signals_deferred():
    """SIGINT and SIGTERM received inside the block take effect when it ends (in the main
    thread, where Python runs signal handlers; elsewhere nothing changes)."""
    numbers = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.getsignal(number) for number in numbers}
    if threading.current_thread() is not threading.main_thread() or None in previous.values():
        yield
        return
    received = []
    for number in numbers:
        signal.signal(number, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if received:
            signal.raise_signal(received[0])


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
    temporary = os.path.join(directory, f".partial-{uuid.uuid4().hex}{suffix}")
    try:  # a file made and removed: access() says yes to root in /proc, /sys, read-only mounts
        open(temporary, "xb").close()
        os.unlink(temporary)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise OSError(
            f"cannot write {path}: {directory} is not a writable directory ({reason})"
        ) from None
    # not left in place (as mkstemp would, mode 0600): the writer creates it under the umask
    return temporary

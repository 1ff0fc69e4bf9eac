"""What every command's parser needs: the errors, the one-line reports, argparse's setup. It
imports neither torch nor ITK, so that ``--help`` and usage errors answer at once."""

from __future__ import annotations

import argparse
import sys
import textwrap

PROGRAM = "itkdeepreg"


class UsageError(Exception):
    """A wrong command line: exit code 2."""


class CommandError(Exception):
    """A problem with the files or the data: exit code 1."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``itkdeepreg: error: ...``), raised, not exited."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        command = self.prog[len(PROGRAM) :].strip()  # "register" for "itkdeepreg register"
        raise UsageError(f"{command}: {message}" if command else message)


def text(*paragraphs: str) -> str:
    """Paragraphs filled to the terminal's usual width (the help keeps our line breaks)."""
    return "\n\n".join(textwrap.fill(" ".join(p.split()), 79) for p in paragraphs)


def report(error, kind="error") -> None:
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"{PROGRAM}: {kind}: {message}", file=sys.stderr)

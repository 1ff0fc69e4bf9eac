"""The ``itkdeepreg`` command.

::

    itkdeepreg register --fixed F --moving M [--method NAME] [options] --transform-out T.h5 ...
    itkdeepreg batch --pairs PAIRS.csv --out DIR [--method NAME | -p a.txt ...] [--scheduler A]
    itkdeepreg warp --fixed F --moving M --transform T [--transform [T2,1] ...] --out W.nii.gz
    itkdeepreg jacobian --reference F --transform T.h5 --out J.nii.gz
    itkdeepreg demo [--out DIR] [--dimension 2|3]
    itkdeepreg -f F -m M -p a.txt [-p b.txt ...] -out DIR [-fMask ..] [-mMask ..] [-t0 T]
    itkdeepreg apply [-in IMAGE] -tp TransformParameters.0.txt -out DIR [-def all] [-jac all]

``register`` also takes the published ``unigradicon-register`` flags (``--fixed_modality``,
``--transform_out``, ``--io_iterations``, ``--io_sim``, ``--model``, ...). A user's mistake
(a missing file, an unknown method, an output that cannot be written) is one line on stderr,
``itkdeepreg: error: ...``, and a non-zero exit code: 2 for a wrong command line, 1 for a
problem with the files. Every output target is checked before any work, and the outputs of a
run are written whole, all of them, or not at all.

Each command is a module of this package (its parser, and ``run``, which imports what the
command needs when it runs): parsing the command line, ``--help``, ``--version`` and usage
errors load neither torch nor ITK.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from .. import __version__
from . import apply, batch, demo, elastix, jacobian, register, train, warp
from ._base import PROGRAM, CommandError, Parser, UsageError, report

COMMANDS = ("register", "batch", "warp", "jacobian", "demo", "apply", "train", "finetune")
_DESCRIPTION = "Deep and optimization-based image registration for ITK, ANTs and elastix users."
_EPILOG = """\
elastix-like (no command):
  itkdeepreg -f FIXED -m MOVING -p STEP.txt [-p STEP.txt ...] -out DIR
             [-fMask MASK] [-mMask MASK] [-t0 TRANSFORM] [-threads N] [--quiet]
  runs the parameter files one after the other (elastix maps and our
  (Registration "DeepRegistration") steps mixed) and writes result.nii.gz,
  TransformParameters.0.txt (for transformix), transform.h5, inverse.h5 and
  elastix.log (of the elastix steps) into DIR.

'itkdeepreg COMMAND --help' describes each command."""


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
        report(error)
        return 2
    except (CommandError, ValueError, OSError, ImportError) as error:
        report(error)
        return 1
    except KeyboardInterrupt:
        report("interrupted")
        return 130
    except _Terminated:
        report("terminated")
        return 128 + signal.SIGTERM
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _terminate(number, frame):
    raise _Terminated


def _dispatch(argv) -> int:
    elastix_like = argv and argv[0] not in COMMANDS and any(a in elastix.FLAGS for a in argv)
    parser = elastix.parser() if elastix_like else _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version
        return int(done.code or 0)
    if elastix_like:
        return elastix.run(args)
    if args.command is None:
        raise UsageError(
            f"give a command ({', '.join(COMMANDS)}) or the elastix-like -f -m -p -out; "
            f"see {PROGRAM} --help"
        )
    return args.run(args)


def _parser() -> Parser:
    parser = Parser(prog=PROGRAM, description=_DESCRIPTION, epilog=_EPILOG)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    for command in (register, batch, warp, jacobian, demo, apply, train):
        command.add_parser(commands)
    return parser

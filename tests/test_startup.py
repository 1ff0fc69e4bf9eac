"""The command starts without torch or ITK: --help, --version and usage errors answer at once,
and Ctrl-C at any moment is one line (issues 23 and 24; benchmarks/startup.py times it)."""

import signal
import subprocess
import sys
import textwrap
import time

from itkdeepreg import options
from itkdeepreg.cli import register

# a process where importing torch or ITK raises, then the command
WITHOUT_TORCH_OR_ITK = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None
    sys.modules["itk"] = None
    from itkdeepreg.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def run_without_torch_or_itk(*arguments):
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH_OR_ITK, *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_version_and_usage_errors_need_neither_torch_nor_itk():
    for arguments in (["--help"], ["register", "--help"], ["warp", "--help"], ["--version"]):
        done = run_without_torch_or_itk(*arguments)
        assert done.returncode == 0, done.stderr
        assert "usage:" in done.stdout or "itkdeepreg" in done.stdout
    for arguments, words in (
        (["register", "--fixed", "f.nii"], "the following arguments are required"),
        (["register", "--fixed", "f", "--moving", "m", "--method", "nope"], "unknown method"),
        (["register", "--fixed", "f", "--moving", "m", "--metric", "Lnc"], 'not "Lnc"'),
        (["register", "--fixed", "f", "--moving", "m", "--device", "gpu"], 'not "gpu"'),
        (["warp", "--fixed", "f"], "the following arguments are required"),
        ([], "give a command"),
    ):
        done = run_without_torch_or_itk(*arguments)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("itkdeepreg: error: ") and words in done.stderr
        assert done.stderr.count("\n") == 1


def test_the_command_knows_the_registry_s_names_without_importing_it():
    from itkdeepreg.losses import SIMILARITIES
    from itkdeepreg.methods import method_names
    from itkdeepreg.registration import DEFAULT_METHOD

    assert tuple(method_names()) == register.METHODS
    assert tuple(SIMILARITIES) == tuple(options.METRICS.values())
    assert DEFAULT_METHOD == register.DEFAULT_METHOD


def _catches_sigterm(pid) -> bool:
    """Whether the process has a handler for SIGTERM (Linux: the SigCgt mask in /proc)."""
    with open(f"/proc/{pid}/status") as status:
        caught = next(line for line in status if line.startswith("SigCgt:")).split()[1]
    return bool(int(caught, 16) >> (signal.SIGTERM - 1) & 1)


def test_ctrl_c_while_the_command_loads_torch_and_itk_is_one_line(tmp_path):
    """From the moment main() runs, before torch and ITK are imported (seconds), Ctrl-C is
    its own one line."""
    child = subprocess.Popen(
        [sys.executable, "-m", "itkdeepreg", "register", "--fixed", "f.nii.gz", "--moving",
         "m.nii.gz", "--method", "affine", "--transform-out", str(tmp_path / "t.h5")],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    while not _catches_sigterm(child.pid):  # main() has begun: next, it imports torch and ITK
        time.sleep(0.01)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err
    assert err == "itkdeepreg: error: interrupted\n"


def test_python_m_itkdeepreg_is_the_command():
    done = subprocess.run(
        [sys.executable, "-m", "itkdeepreg", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.startswith("itkdeepreg ")

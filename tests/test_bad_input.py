"""Bad input and faults: what is refused, and what is never left behind (docs/reliability.md).

Each test is one finding of a probe made as a careless or hostile user would: the attempt,
the exit code, the message, the files left.
"""

import gzip
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import itk
import numpy as np
import pytest

from itkdeepreg.cli import main
from itkdeepreg.files import unfinished_outputs, write_all
from itkdeepreg.interop.images import read_image
from itkdeepreg.interop.transforms import read_itk_transform

AFFINE = ["--method", "affine", "--option", "iterations=(2,)", "--option", "levels=(1,)"]


def one_error_line(capsys, kind="error"):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"itkdeepreg: {kind}: "), err
    return lines[0]


def files_in(folder):
    return sorted(os.listdir(folder))


@pytest.fixture
def image(tmp_path):
    """A small 3D image as .nii.gz, .nii and .mha, its array, and the folder."""
    array = np.random.default_rng(0).random((12, 14, 16)).astype(np.float32)
    paths = {}
    for suffix in (".nii.gz", ".nii", ".mha"):
        paths[suffix] = str(tmp_path / f"image{suffix}")
        itk.imwrite(itk.image_from_array(array), paths[suffix])
    return paths, array


# ---------------------------------------------------------------------------------------------
# the input gate: images


def _nifti_bytes(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as file:
        return file.read()


def _write_nifti(path, data):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as file:
        file.write(data)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_with_half_its_voxels_is_refused(image, tmp_path, suffix):
    paths, _ = image
    data = _nifti_bytes(paths[suffix])
    short = str(tmp_path / f"short{suffix}")
    _write_nifti(short, data[: 352 + (len(data) - 352) // 2])  # ITK read the rest as zeros
    with pytest.raises(ValueError, match="header declares 16x14x12 voxels"):
        read_image(short)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_infinite_voxels_are_refused_in_every_format(tmp_path, suffix, value):
    array = np.ones((6, 7, 8), np.float32)
    array[2, 3, 4] = value  # ITK's NIfTI reader reads NaN as 0
    path = str(tmp_path / f"bad{suffix}")
    itk.imwrite(itk.image_from_array(array), path)
    with pytest.raises(ValueError, match="1 NaN or infinite voxels"):
        read_image(path)


@pytest.mark.parametrize("size", [800, 30000])
def test_a_header_declaring_too_many_voxels_is_refused_before_allocation(image, tmp_path, size):
    paths, _ = image
    header = bytearray(_nifti_bytes(paths[".nii.gz"]))
    struct.pack_into("<8h", header, 40, 3, size, size, size, 1, 1, 1, 1)
    path = str(tmp_path / f"declared{size}.nii.gz")
    _write_nifti(path, bytes(header))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=f"declares {size}x{size}x{size} voxels"):
        read_image(path)
    assert time.perf_counter() - start < 5  # 800^3 floats would take seconds to allocate


def test_a_folder_without_dicom_and_a_missing_file_are_named(tmp_path, capsys, image):
    paths, _ = image
    empty = tmp_path / "folder"
    empty.mkdir()
    with pytest.raises(ValueError, match="a folder, and no DICOM series in it"):
        read_image(empty)
    with pytest.raises(ValueError, match="no such file"):
        read_image(tmp_path / "missing.nii.gz")
    out = str(tmp_path / "t.h5")
    assert main(["register", "--fixed", str(empty), "--moving", paths[".nii"], *AFFINE,
                 "--transform-out", out, "--quiet"]) == 1  # fmt: skip
    assert "--fixed: cannot read" in one_error_line(capsys)
    assert not os.path.exists(out)


def test_the_command_refuses_a_truncated_nifti_in_one_line(image, tmp_path, capsys):
    paths, _ = image
    data = _nifti_bytes(paths[".nii.gz"])
    short = str(tmp_path / "short.nii.gz")
    _write_nifti(short, data[:-1000])
    out = str(tmp_path / "warped.nii.gz")
    code = main(["register", "--fixed", paths[".nii"], "--moving", short, *AFFINE,
                 "--warped-out", out, "--quiet"])  # fmt: skip
    assert code == 1
    assert "--moving: cannot read" in one_error_line(capsys)
    assert not os.path.exists(out)


# ---------------------------------------------------------------------------------------------
# the input gate: transforms


def _nan_field_file(path):
    vectors = np.zeros((12, 14, 16, 3))
    vectors[3, 4, 5] = np.nan
    field = itk.Image[itk.Vector[itk.D, 3], 3].New()
    field.SetRegions([16, 14, 12])
    field.Allocate()
    itk.array_view_from_image(field)[:] = vectors
    transform = itk.DisplacementFieldTransform[itk.D, 3].New()
    transform.SetDisplacementField(field)
    itk.transformwrite([transform], path)


@pytest.mark.parametrize("command", ["warp", "jacobian", "register"])
def test_a_field_with_one_nan_vector_is_refused(image, tmp_path, capsys, command):
    paths, _ = image
    field = str(tmp_path / "nan_field.h5")
    _nan_field_file(field)
    out = str(tmp_path / "out.nii.gz")
    images = ["--fixed", paths[".nii"], "--moving", paths[".mha"]]
    arguments = {
        "warp": ["warp", *images, "--transform", field, "--out", out],
        "jacobian": ["jacobian", *images, "--transform", field, "--out", out],
        "register": [
            "register",
            *images,
            *AFFINE,
            "--initial-transform",
            field,
            "--warped-out",
            out,
            "--quiet",
        ],
    }[command]
    assert main(arguments) == 1
    assert "DisplacementFieldTransform holds NaN or infinite values" in one_error_line(capsys)
    assert not os.path.exists(out)


@pytest.mark.parametrize(
    "lines, message",
    [
        (
            ["Parameters: 1 2 3 abc", "FixedParameters: 0 0 0"],
            "line 4: not a list of finite numbers",
        ),
        (["Parameters: 1 0 0 0 1 0 0 0 1 5 0 0"], "needs 3 FixedParameters, the file gives none"),
        (
            ["Parameters: 1 0 0 0 1 0 0 0 1 5 0", "FixedParameters: 0 0 0"],
            "needs 12 Parameters, the file gives 11",
        ),
        (
            ["Parameters: 1 0 0 0 1 0 0 0 1 5 0 nan", "FixedParameters: 0 0 0"],
            "line 4: not a list of finite",
        ),
    ],
)
def test_a_tfm_with_garbage_parameters_is_refused(tmp_path, lines, message):
    path = tmp_path / "garbage.tfm"
    header = [
        "#Insight Transform File V1.0",
        "#Transform 0",
        "Transform: AffineTransform_double_3_3",
    ]
    path.write_text("\n".join([*header, *lines]) + "\n")
    with pytest.raises(ValueError, match=message):
        read_itk_transform(path)


def test_a_composite_tfm_as_itk_writes_it_is_read(tmp_path):
    composite = itk.CompositeTransform[itk.D, 3].New()
    affine = itk.AffineTransform[itk.D, 3].New()
    affine.SetCenter([1.0, 2.0, 3.0])
    composite.AddTransform(affine)
    composite.AddTransform(itk.TranslationTransform[itk.D, 3].New())  # no fixed parameters
    itk.transformwrite([composite], str(tmp_path / "composite.tfm"))
    read = read_itk_transform(tmp_path / "composite.tfm")
    assert read.GetNumberOfTransforms() == 2


# ---------------------------------------------------------------------------------------------
# the output transaction


def test_an_output_never_names_an_input(image, tmp_path, capsys):
    paths, _ = image
    before = Path(paths[".nii.gz"]).read_bytes()
    link = tmp_path / "link.nii.gz"
    link.symlink_to(paths[".nii.gz"])
    for target in (paths[".nii.gz"], str(link)):
        code = main(["register", "--fixed", paths[".nii"], "--moving", paths[".nii.gz"], *AFFINE,
                     "--warped-out", target, "--quiet"])  # fmt: skip
        assert code == 2
        assert "is the input --moving: it would be overwritten" in one_error_line(capsys)
    assert Path(paths[".nii.gz"]).read_bytes() == before


@pytest.mark.parametrize("folder", ["/proc", "/sys", "/proc/self"])
def test_an_output_under_a_system_folder_is_one_line(image, capsys, folder):
    paths, _ = image
    code = main(["register", "--fixed", paths[".nii"], "--moving", paths[".mha"], *AFFINE,
                 "--transform-out", f"{folder}/t.h5", "--quiet"])  # fmt: skip
    assert code == 1
    assert "is not a writable directory" in one_error_line(capsys)


# a child that writes two outputs and stops (prints, then sleeps) after the first rename
_PUBLISHER = textwrap.dedent(
    """
    import os, sys, time
    from itkdeepreg import files

    replace = os.replace
    def slow_replace(source, target):
        replace(source, target)
        if target.endswith("a.txt"):
            print("renamed one", flush=True)
            time.sleep(30)
    files.os.replace = slow_replace

    def writer(text):
        def write(path):
            with open(path, "w") as file:
                file.write(text)
        return write

    folder = sys.argv[1]
    files.write_all([(os.path.join(folder, name), writer("new " + name), None)
                     for name in ("a.txt", "b.txt")])
    print("published", flush=True)
    """
)


def _publish_and_signal(folder, number):
    """Run the publisher on ``folder``, send ``number`` after its first rename."""
    for name in ("a.txt", "b.txt"):
        (folder / name).write_text(f"old {name}")
    child = subprocess.Popen(
        [sys.executable, "-c", _PUBLISHER, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "renamed one"
    child.send_signal(number)
    out, _ = child.communicate(timeout=60)
    return child.returncode, out


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_sigint_during_publication_waits_for_the_whole_set(tmp_path, number):
    code, _ = _publish_and_signal(tmp_path, number)
    assert code != 0  # the signal took effect: after the set was in place
    assert (tmp_path / "a.txt").read_text() == "new a.txt"
    assert (tmp_path / "b.txt").read_text() == "new b.txt"
    assert files_in(tmp_path) == ["a.txt", "b.txt"]  # no temporaries, no journal


def test_sigkill_during_publication_is_reported_by_the_next_run(tmp_path, image, capsys):
    code, _ = _publish_and_signal(tmp_path, signal.SIGKILL)
    assert code == -signal.SIGKILL
    # no truncated file: one new, one old, each whole; the journal and b's temporary remain
    assert (tmp_path / "a.txt").read_text() == "new a.txt"
    assert (tmp_path / "b.txt").read_text() == "old b.txt"
    journals = [n for n in files_in(tmp_path) if n.startswith(".itkdeepreg-writing-")]
    assert len(journals) == 1
    assert json.loads((tmp_path / journals[0]).read_text())["publishing"]
    message = unfinished_outputs([tmp_path / "b.txt"])
    assert "killed while it put its outputs in place" in message and "b.txt" in message
    assert not [n for n in files_in(tmp_path) if n.startswith(".partial-")]  # removed
    # the command on the same outputs says so, then writes them whole
    paths, _ = image
    out = str(tmp_path / "a.nii.gz")
    json_entry = json.loads((tmp_path / journals[0]).read_text())
    json_entry["targets"].append(out)
    (tmp_path / journals[0]).write_text(json.dumps(json_entry))
    transform = str(tmp_path / "identity.tfm")
    itk.transformwrite([itk.TranslationTransform[itk.D, 3].New()], transform)
    assert main(["warp", "--fixed", paths[".nii"], "--moving", paths[".mha"],
                 "--transform", transform, "--out", out]) == 0  # fmt: skip
    assert "killed while it put its outputs in place" in one_error_line(capsys, "warning")


def test_a_failed_writer_leaves_nothing(tmp_path):
    def fails(path):
        Path(path).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_all([(tmp_path / "a.txt", lambda p: Path(p).write_text("a"), None),
                   (tmp_path / "b.txt", fails, None)])  # fmt: skip
    assert files_in(tmp_path) == []


def _command_until_it_works(arguments, number):
    """Start the command, wait for its progress bar, send ``number``; its exit and stderr."""
    child = subprocess.Popen(
        [sys.executable, "-m", "itkdeepreg.cli", *arguments],
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = ""
    while "]" not in seen:  # the first progress line: imports and reading are over
        character = child.stderr.read(1)
        assert character, "the command ended before it showed progress"
        seen += character
    child.send_signal(number)
    _, err = child.communicate(timeout=120)
    return child.returncode, seen + err


@pytest.mark.parametrize("number, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_while_registering_is_one_line_and_leaves_nothing(
    image, tmp_path, number, code
):
    paths, _ = image
    out = tmp_path / "out"
    out.mkdir()
    arguments = ["register", "--fixed", paths[".nii"], "--moving", paths[".mha"], "--method",
                 "deformable", "--option", "iterations=(100000,)", "--option", "levels=(1,)",
                 "--transform-out", str(out / "t.h5"), "--warped-out", str(out / "w.nii.gz")]  # fmt: skip
    returncode, err = _command_until_it_works(arguments, number)
    assert returncode == code, err
    # one line of ours, last (after a progress bar that the signal may cut short)
    message = f"itkdeepreg: error: {'interrupted' if code == 130 else 'terminated'}"
    assert err.rstrip().endswith(message) and err.count("itkdeepreg:") == 1, err
    assert "Traceback" not in err
    assert files_in(out) == []

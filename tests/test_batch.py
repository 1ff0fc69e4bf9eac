"""itkdeepreg batch: pairs on a local Dask cluster, the quality report, reruns, failures,
killed workers, Ctrl-C (issue 22). One cluster of two workers serves the module: its worker
processes take seconds to import torch and ITK."""

import csv
import json
import os
import runpy
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import itk
import numpy as np
import pytest
import torch
from conftest import geometry_pair, smooth_image

from itkdeepreg import batch as B
from itkdeepreg import quality
from itkdeepreg.cli import batch as batch_command
from itkdeepreg.cli import main
from itkdeepreg.data.brain_pairs import brain_pair
from itkdeepreg.files import _write_journal
from itkdeepreg.interop import InverseConsistentTransform, tensor_to_image
from itkdeepreg.methods import models_loaded
from itkdeepreg.transforms import Affine, Displacement, from_physical, invert

QUICK = ["--method", "deformable", "--metric", "MSE", "--option", "iterations=(20,20,5)"]


@pytest.fixture(scope="module")
def client():
    """The module's local cluster: two worker processes of one thread, as the command makes
    them (a pair whose worker dies fails at once; the workers ignore Ctrl-C)."""
    with B._local_client(workers=2, threads=1) as client:
        yield client


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A 2D brain pair and a small oblique, flipped 3D pair, as files."""
    folder = tmp_path_factory.mktemp("images")
    pair = brain_pair(0, dimension=2)
    fixed, moving = pair.itk_images()
    fixed_3d, moving_3d = geometry_pair(3)
    files = {
        "fixed": fixed,
        "moving": moving,
        "fixed_3d": tensor_to_image(smooth_image(fixed_3d.shape).float(), fixed_3d),
        "moving_3d": tensor_to_image(smooth_image(moving_3d.shape).float() ** 2, moving_3d),
    }
    paths = {}
    for name, image in files.items():
        paths[name] = str(folder / f"{name}.nii.gz")
        itk.imwrite(image, paths[name])
    return paths


def write_csv(path, rows, header=("name", "fixed", "moving")):
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def read_summary(out):
    with open(Path(out) / "summary.csv", newline="") as file:
        return {row["name"]: row for row in csv.DictReader(file)}


def field(path, dimension):
    """A displacement field file's vectors (ITK Python reads them as a VectorImage)."""
    reader = itk.ImageFileReader[itk.VectorImage[itk.D, dimension]].New(FileName=str(path))
    reader.Update()
    return itk.array_from_image(reader.GetOutput())


def corners(image):
    """The physical points of an image's corner voxels and of its centre."""
    size = np.asarray(image.GetLargestPossibleRegion().GetSize()) - 1.0
    indices = [size * np.array(c) for c in np.ndindex(*[2] * len(size))] + [size / 2]
    direction = itk.array_from_matrix(image.GetDirection()) * np.asarray(image.GetSpacing())
    return [np.asarray(image.GetOrigin()) + direction @ index for index in indices]


def leftovers(out):
    """Temporary files and journals of unfinished writes under ``out``."""
    return [p for p in Path(out).rglob(".*") if p.is_file()]


def test_batch_gives_the_transforms_of_register_pair_by_pair(client, images, tmp_path, capsys):
    pairs = write_csv(
        tmp_path / "pairs.csv",
        [
            ("brain", images["fixed"], images["moving"]),
            ("reverse", images["moving"], images["fixed"]),
            ("small-3d", images["fixed_3d"], images["moving_3d"]),
        ],
    )
    out = tmp_path / "out"
    common = ["--pairs", pairs, "--out", str(out), *QUICK, "--scheduler", client.scheduler.address]
    batch = ["batch", *common, "--outputs", "transform,field", "--threads-per-worker", "1"]
    assert main([*batch, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "3 pairs: 3 registered, 0 complete before, 0 failed" in printed
    summary = read_summary(out)
    assert list(summary) == ["brain", "reverse", "small-3d"]
    assert {row["status"] for row in summary.values()} == {"registered"}
    for name, fixed, moving in (
        ("brain", images["fixed"], images["moving"]),
        ("reverse", images["moving"], images["fixed"]),
        ("small-3d", images["fixed_3d"], images["moving_3d"]),
    ):
        alone = tmp_path / name
        alone.mkdir()
        arguments = ["register", "--fixed", fixed, "--moving", moving, *QUICK, "--quiet"]
        outputs = ["--field-out", str(alone / "field.nii.gz"), "--report", str(alone / "r.json")]
        outputs += ["--transform-out", str(alone / "transform.h5")]
        assert main([*arguments, "--threads", "1", *outputs]) == 0
        dimension = itk.imread(fixed).GetImageDimension()
        np.testing.assert_allclose(
            field(out / name / "field.nii.gz", dimension),
            field(alone / "field.nii.gz", dimension),
            atol=1e-4,
        )
        batch_file, alone_file = (
            InverseConsistentTransform.Read(str(folder / "transform.h5"))
            for folder in (out / name, alone)
        )
        for point in corners(itk.imread(fixed)):
            assert np.allclose(
                batch_file.TransformPoint(point), alone_file.TransformPoint(point), atol=1e-4
            )
        report = json.loads((out / name / "report.json").read_text())
        alone_report = json.loads((alone / "r.json").read_text())
        for figure in ("ncc_before", "ncc_after", *quality.FIGURES):
            assert report[figure] == pytest.approx(alone_report[figure], rel=1e-3, abs=1e-4)
            assert float(summary[name][figure]) == pytest.approx(report[figure], rel=1e-5)
        assert report["ncc_after"] < report["ncc_before"]  # the registration helped
    assert sorted(p.name for p in (out / "brain").iterdir()) == [
        "field.nii.gz",
        "report.json",
        "transform.h5",
    ]

    # a rerun finds every pair complete and writes nothing new
    times = {p: p.stat().st_mtime_ns for p in out.rglob("*.*") if p.name != "summary.csv"}
    assert main([*batch, "--quiet"]) == 0
    assert {row["status"] for row in read_summary(out).values()} == {"complete"}
    assert times == {p: p.stat().st_mtime_ns for p in times}
    # another method is another batch: each pair is registered anew
    affine = ["--method", "affine", "--option", "iterations=(5,5,5)", "--quiet"]
    assert main(["batch", *common[:4], *affine, "--scheduler", client.scheduler.address]) == 0
    assert {row["status"] for row in read_summary(out).values()} == {"registered"}
    assert not leftovers(out)
    # and its folder holds what it asked for: no field of the earlier registration
    assert sorted(p.name for p in (out / "brain").iterdir()) == [
        "inverse.h5",
        "report.json",
        "transform.h5",
        "warped.nii.gz",
    ]


def test_a_corrupt_file_fails_its_pair_and_the_batch_goes_on(client, images, tmp_path, capsys):
    content = Path(images["moving"]).read_bytes()
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(content[: len(content) // 2])
    pairs = write_csv(
        tmp_path / "pairs.csv",
        [
            ("good", images["fixed"], images["moving"]),
            ("corrupt", images["fixed"], corrupt.name),  # relative to the CSV file
            ("missing", images["fixed"], str(tmp_path / "nothing.nii.gz")),
        ],
    )
    out = tmp_path / "out"
    arguments = ["batch", "--pairs", pairs, "--out", str(out), "--method", "affine"]
    arguments += ["--option", "iterations=(5,5,5)", "--scheduler", client.scheduler.address]
    assert main([*arguments, "--quiet"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("itkdeepreg: error: 2 of 3 pairs failed")
    assert captured.err.count("\n") == 1
    summary = read_summary(out)
    assert [row["status"] for row in summary.values()] == ["registered", "failed", "failed"]
    assert summary["corrupt"]["error"].startswith(f"moving: cannot read {corrupt}: a corrupt")
    assert summary["missing"]["error"] == f"moving: no such file: {tmp_path / 'nothing.nii.gz'}"
    for row in summary.values():
        assert "\n" not in row["error"]
    assert {p.name for p in out.iterdir()} == {"good", "summary.csv"}  # no empty folders
    assert "corrupt" in captured.out and "no such file" in captured.out  # the table


def test_a_killed_worker_fails_its_pair_and_a_rerun_completes_the_batch(client, images, tmp_path):
    names = ["first", "second", "third"]
    pairs = [
        B.BatchPair(name, images["fixed"], images["moving"])
        if n % 2 == 0
        else B.BatchPair(name, images["moving"], images["fixed"])
        for n, name in enumerate(names)
    ]
    out = tmp_path / "out"
    options = {"iterations": (40, 30, 20)}  # a second or more a pair: time to kill its worker
    pids = client.run(os.getpid)
    killed = []

    def kill_the_first_busy_worker():
        while not killed:
            busy = [address for address, keys in client.processing().items() if keys]
            if busy:
                time.sleep(0.3)  # inside the pair
                killed.append(client.processing()[busy[0]][0])
                os.kill(pids[busy[0]], signal.SIGKILL)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_first_busy_worker, daemon=True)
    killer.start()
    rows = B.run_batch(pairs, out, "deformable", options, client=client, progress=False)
    killer.join(timeout=60)
    victim = killed[0].split("-")[1]  # the task's key: register-NAME-TOKEN
    statuses = {row["name"]: row["status"] for row in rows}
    assert statuses == {name: "failed" if name == victim else "registered" for name in names}
    error = next(row["error"] for row in rows if row["name"] == victim)
    assert error == "its worker died while registering it (killed, or out of memory)"
    # nothing half-written: each pair has all its outputs or none of them
    for name in names:
        present = [
            (out / name / f).is_file() for f in ("transform.h5", "inverse.h5", "report.json")
        ]
        assert all(present) or not any(present), name

    # the next run finds a set of outputs cut off while it was put in place, and redoes it
    cut = next(name for name in names if name != victim)
    targets = [str(out / cut / f) for f in ("transform.h5", "inverse.h5", "warped.nii.gz")]
    _write_journal(str(out / cut / ".itkdeepreg-writing-cut.json"), targets, [], publishing=True)
    rows = B.run_batch(pairs, out, "deformable", options, client=client, progress=False)
    expected = {name: "registered" if name in (victim, cut) else "complete" for name in names}
    assert {row["name"]: row["status"] for row in rows} == expected
    assert not leftovers(out)
    assert read_summary(out)[victim]["status"] == "registered"


def test_a_worker_loads_the_network_once_for_all_its_pairs(client, images, tmp_path):
    fixed, moving = images["fixed"], images["moving"]
    pairs = [
        B.BatchPair(f"pair-{n}", *files)
        for n, files in enumerate([(fixed, moving), (moving, fixed)] * 2)
    ]
    rows = B.run_batch(pairs, tmp_path, "synth-gradicon-2d", client=client, progress=False)
    assert {row["status"] for row in rows} == {"registered"}
    workers = {row["worker"] for row in rows}
    assert len(rows) > len(workers)  # a worker registered several pairs
    loaded = client.run(models_loaded)
    assert {loaded[worker] for worker in workers} == {1}


def test_ctrl_c_stops_the_batch_and_its_local_cluster_cleanly(images, tmp_path):
    """Ctrl-C in a terminal reaches the whole process group: the workers ignore it, the
    command records what was done, stops its cluster and says so in one line."""
    import psutil

    pairs = write_csv(
        tmp_path / "pairs.csv",
        [(f"pair-{n}", images["fixed"], images["moving"]) for n in range(6)],
    )
    out = tmp_path / "out"
    command = [sys.executable, "-m", "itkdeepreg", "batch", "--pairs", pairs, "--out", str(out)]
    command += ["--method", "affine", "--option", "iterations=(5,5,5)", "--workers", "1"]
    child = subprocess.Popen(
        [*command, "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's job
    )
    try:
        deadline = time.monotonic() + 240
        while not (out / "pair-0" / "report.json").exists():
            assert child.poll() is None and time.monotonic() < deadline, child.communicate()
            time.sleep(0.1)
        processes = psutil.Process(child.pid).children(recursive=True)
        os.killpg(child.pid, signal.SIGINT)
        stdout, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode == 130, stderr
    assert stderr == "itkdeepreg: error: interrupted\n"  # nothing from Dask, ITK or tqdm
    assert "run the batch again to go on" in stdout
    statuses = [row["status"] for row in read_summary(out).values()]
    assert statuses[0] == "registered" and "interrupted" in statuses, statuses
    assert set(statuses) <= {"registered", "interrupted"}
    psutil.wait_procs(processes, timeout=30)
    assert not [p for p in processes if p.is_running() and p.status() != "zombie"]
    for folder in out.iterdir():  # a pair has its whole set of outputs, or none
        if folder.is_dir():
            assert (folder / "report.json").is_file() == (folder / "transform.h5").is_file()


def test_the_example_registers_a_cohort_and_its_rerun_registers_nothing(client, tmp_path):
    example = runpy.run_path(str(Path(__file__).parents[1] / "examples" / "batch.py"))
    rows, again = example["main"](str(tmp_path), client)
    assert [row["status"] for row in rows] == ["registered", "registered"]
    assert [row["status"] for row in again] == ["complete", "complete"]
    for row in rows:
        assert row["ncc_after"] < 0.7 * row["ncc_before"] and row["folds_percent"] == 0
    assert {p.name for p in (tmp_path / "results" / "subject-1000").iterdir()} == {
        "transform.h5",
        "inverse.h5",
        "warped.nii.gz",
        "report.json",
    }


def test_quality_figures_of_known_maps():
    fixed_geometry, moving_geometry = geometry_pair(2)
    fixed = tensor_to_image(smooth_image(fixed_geometry.shape).float(), fixed_geometry)
    moving = tensor_to_image(smooth_image(moving_geometry.shape).float(), moving_geometry)
    # the identity of physical space: no folds, a constant Jacobian, an exact inverse
    identity = from_physical(Affine.identity(2, torch.float64), fixed_geometry, moving_geometry)
    result = InverseConsistentTransform(identity, None, fixed, moving)
    figures = quality.quality_figures(fixed, moving, result)
    assert figures["ncc_before"] == pytest.approx(figures["ncc_after"], abs=1e-6)
    assert figures["folds_percent"] == 0
    assert figures["sd_log_jacobian"] == pytest.approx(0, abs=1e-6)
    assert figures["inverse_consistency_p99_mm"] == pytest.approx(0, abs=1e-6)
    assert quality.flags(figures, "ncc") == []

    # a field that folds a band, with a wrong inverse (the identity): every flag is raised
    shape = fixed_geometry.shape
    displacement = torch.zeros(1, 2, *shape, dtype=torch.float64)
    displacement[:, 0, shape[0] // 3 : shape[0] // 2] = -0.3  # rows jump back over others
    folding = InverseConsistentTransform(
        identity @ Displacement(displacement), invert(identity), fixed, moving
    )
    figures = quality.quality_figures(fixed, moving, folding)
    assert figures["folds_percent"] > 1
    assert figures["inverse_consistency_p99_mm"] > 5
    found = quality.flags(figures, "ncc", {"sd_log_jacobian": 0.01})
    assert [f.split()[0] for f in found] == [
        "folds_percent",
        "sd_log_jacobian",
        "inverse_consistency_p99_mm",
        "ncc",
    ]
    with pytest.raises(ValueError, match="no threshold 'folds'"):
        quality.flags(figures, "ncc", {"folds": 1})


def test_pairs_from_a_csv_file_and_from_a_folder(tmp_path):
    (tmp_path / "scans").mkdir()
    for name in ("b.nii.gz", "a.mha", "atlas.nii.gz", "notes.txt"):
        (tmp_path / "scans" / name).write_text("")
    pairs = B.folder_pairs(tmp_path / "scans", tmp_path / "scans" / "atlas.nii.gz")
    assert [(p.name, Path(p.moving).name) for p in pairs] == [("a", "a.mha"), ("b", "b.nii.gz")]
    header = ("fixed", "moving", "moving_modality", "initial_transform")
    path = write_csv(
        tmp_path / "pairs.csv",
        [("f.nii", "scans/m.nii.gz", "CT", ""), ("/data/f.nii", "n.nrrd", "", "t.h5")],
        header,
    )
    first, second = B.read_pairs(path)
    assert first == B.BatchPair(
        "m", str(tmp_path / "f.nii"), str(tmp_path / "scans/m.nii.gz"), moving_modality="ct"
    )
    assert (second.fixed, second.initial_transform) == ("/data/f.nii", str(tmp_path / "t.h5"))
    for rows, header, words in (
        ([("f", "m", "x")], ("fixed", "moving", "colour"), "unknown column 'colour'"),
        ([("f",)], ("fixed",), "no column 'moving'"),
        ([("f", "")], ("fixed", "moving"), "line 2: the moving image is missing"),
        ([("f", "m", "pet")], ("fixed", "moving", "fixed_modality"), "must be ct or mri"),
        ([("f", "m"), ("g", "m")], ("fixed", "moving"), "two pairs are named 'm'"),
        ([("f", "m", "../up")], ("fixed", "moving", "name"), "cannot be a folder"),
        ([("f", "m", "x")], ("fixed", "moving"), "3 cells"),
        ([], ("fixed", "moving"), "lists no pairs"),
    ):
        with pytest.raises(ValueError, match=words):
            B.read_pairs(write_csv(tmp_path / "bad.csv", rows, header))


@pytest.mark.parametrize(
    ("arguments", "code", "words"),
    [
        (["--out", "o"], 2, "give the pairs"),
        (["--pairs", "p.csv", "--folder", "d", "--out", "o"], 2, "give the pairs"),
        (["--folder", "d", "--out", "o"], 2, "go together"),
        (["--pairs", "p.csv", "--out", "o", "--method", "nope"], 2, "unknown method"),
        (["--pairs", "p.csv", "--out", "o", "-p", "a.txt", "--method", "affine"], 2, "not both"),
        (["--pairs", "p.csv", "--out", "o", "-p", "a.txt", "--metric", "ncc"], 2, "not both"),
        (["--pairs", "p.csv", "--out", "o", "--metric", "nope"], 2, 'not "nope"'),
        (
            ["--pairs", "p.csv", "--out", "o", "--method", "affine", "--io_iterations", "3"],
            2,
            "no instance optimization",
        ),
        (["--pairs", "p.csv", "--out", "o", "--outputs", "transform,png"], 2, "expected some"),
        (["--pairs", "p.csv", "--out", "o", "--threshold", "folds=1"], 2, "NAME=VALUE"),
        (["--pairs", "p.csv", "--out", "o", "--workers", "0"], 2, "at least 1"),
        (["--pairs", "missing.csv", "--out", "o"], 1, "no such file"),
        (
            ["--pairs", "p.csv", "--out", "o", "--method", "affine", "--option", "x=1"],
            2,  # register's check, a usage error as there
            "no option x",
        ),
        (
            ["--pairs", "p.csv", "--out", "o", "--method", "affine", "--report-metric", "l"],
            1,
            "unknown metric",
        ),
    ],
)
def test_mistakes_are_one_line_before_any_work(
    tmp_path, capsys, monkeypatch, arguments, code, words
):
    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "p.csv", [("f.nii.gz", "m.nii.gz")], ("fixed", "moving"))
    assert main(["batch", *arguments]) == code
    err = capsys.readouterr().err
    assert err.startswith("itkdeepreg: error: ") and err.count("\n") == 1, err
    assert words in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]  # no output folder


def test_the_command_knows_the_thresholds_without_importing_them():
    assert batch_command.THRESHOLD_NAMES == tuple(quality.THRESHOLDS)


def test_batch_help_needs_neither_torch_nor_itk_nor_dask():
    code = (
        "import sys\n"
        "for name in ('torch', 'itk', 'distributed', 'dask'):\n"
        "    sys.modules[name] = None\n"
        "from itkdeepreg.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    for arguments, expected in ((["batch", "--help"], 0), (["batch", "--out", "o"], 2)):
        done = subprocess.run(
            [sys.executable, "-c", code, *arguments],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == expected, done.stderr
    assert (
        "--scheduler"
        in subprocess.run(
            [sys.executable, "-c", code, "batch", "--help"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    )

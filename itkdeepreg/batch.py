"""Batch registration on Dask, with a quality report for every pair (docs/batch.md).

Pairs come from a CSV file (:func:`read_pairs`) or a folder of moving images
(:func:`folder_pairs`). :func:`run_batch` registers them on a Dask cluster: by default a local
one of worker processes, or an existing one by its scheduler's address. Each pair is one task:
a worker reads the pair's files, registers them as ``itkdeepreg register`` would (a method, a
trained folder, or parameter files run as a pipeline), measures the result
(:mod:`itkdeepreg.quality`) and writes its outputs with ``report.json`` into the pair's folder,
whole or not at all (:func:`~itkdeepreg.files.write_all`). Only the report's row comes back,
so a cluster needs a file system its workers share. A rerun skips the pairs whose outputs are
complete; a pair that fails (a bad file, the method's error, its worker killed) is recorded
with its one-line error and the others go on; ``summary.csv`` lists every pair.

This module stands on the command line's input gate (``cli/_files.py``): a batch reads its
files exactly as ``itkdeepreg register`` does.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import os
import signal
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from distributed.diagnostics.plugin import WorkerPlugin

from .files import IMAGE_SUFFIXES, temporary_name, unfinished_outputs, write_all, write_atomically
from .outputs import OUTPUT_KINDS, OUTPUTS
from .quality import FIGURES, check_thresholds, flags, similarity_columns, write_rows

DEFAULT_OUTPUTS = ("transform", "inverse", "warped")
SUMMARY = "summary.csv"
REPORT = "report.json"
FILE_COLUMNS = (
    "fixed",
    "moving",
    "fixed_mask",
    "moving_mask",
    "fixed_segmentation",
    "moving_segmentation",
    "initial_transform",
)
PAIR_COLUMNS = (*FILE_COLUMNS, "fixed_modality", "moving_modality", "name")
# what a folder of moving images holds: single-file formats and MetaImage/NRRD headers
FOLDER_SUFFIXES = (*IMAGE_SUFFIXES, ".mhd", ".nhdr")


@dataclass(frozen=True)
class BatchPair:
    """One pair of a batch: its files (absolute paths), modalities and output folder name."""

    name: str
    fixed: str
    moving: str
    fixed_mask: str | None = None
    moving_mask: str | None = None
    fixed_segmentation: str | None = None
    moving_segmentation: str | None = None
    initial_transform: str | None = None
    fixed_modality: str | None = None
    moving_modality: str | None = None

    def modalities(self) -> dict:
        """The method options this pair sets: its modalities."""
        return {
            f"{side}_modality": getattr(self, f"{side}_modality")
            for side in ("fixed", "moving")
            if getattr(self, f"{side}_modality") is not None
        }


@dataclass(frozen=True)
class Registration:
    """What every pair of a batch gets; it travels to the workers with each pair.

    ``method``: a method name or a trained folder; or ``parameter_files``: a pipeline.
    ``threads``: torch's and ITK's threads per task (``None``: the worker's cores over its
    Dask threads)."""

    method: str | None = None
    parameter_files: tuple = ()
    options: dict = field(default_factory=dict)
    outputs: tuple = DEFAULT_OUTPUTS
    metric: str = "ncc"
    thresholds: dict = field(default_factory=dict)
    threads: int | None = None

    def fingerprint(self, pair: BatchPair) -> dict:
        """What a pair's report records of how it was made: a rerun skips a complete pair
        only if this is the same (another method, option or input redoes it)."""
        return {
            "method": self.method,
            "parameter_files": list(self.parameter_files),
            "options": repr(sorted(self.options.items())),
            "metric": self.metric,
            "pair": dataclasses.asdict(pair),
        }


def read_pairs(path) -> list[BatchPair]:
    """The pairs of a CSV file with the columns ``fixed`` and ``moving`` (image files), and
    optionally ``fixed_mask``, ``moving_mask``, ``fixed_segmentation``,
    ``moving_segmentation``, ``initial_transform`` (an ITK transform file),
    ``fixed_modality``, ``moving_modality`` (``ct`` or ``mri``) and ``name`` (the pair's
    output folder; by default the moving image's name). Relative paths are relative to the
    CSV file's folder; an empty cell is no value."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            header = [cell.strip() for cell in next(reader, [])]
            rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a CSV text file") from None
    except csv.Error as error:
        raise ValueError(f"{path}: {error}") from None
    unknown = [c for c in header if c not in PAIR_COLUMNS]
    if unknown:
        raise ValueError(
            f"{path}: unknown column {unknown[0]!r}; the columns are {', '.join(PAIR_COLUMNS)}"
        )
    for column in ("fixed", "moving"):
        if column not in header:
            raise ValueError(f"{path} has no column {column!r} (its first line names them)")
    if len(set(header)) < len(header):
        raise ValueError(f"{path}: a column is named twice in the first line")
    pairs = []
    for line, row in rows:
        where = f"{path} line {line}"
        if len(row) != len(header):
            raise ValueError(f"{where}: {len(row)} cells, the first line names {len(header)}")
        cells = {column: cell.strip() or None for column, cell in zip(header, row)}
        pairs.append(_pair(cells, folder, where))
    if not pairs:
        raise ValueError(f"{path} lists no pairs")
    return check_pairs(pairs)


def _pair(cells: dict, folder: str, where: str) -> BatchPair:
    for column in ("fixed", "moving"):
        if cells[column] is None:
            raise ValueError(f"{where}: the {column} image is missing")
    for column in FILE_COLUMNS:
        if cells.get(column) is not None:
            cells[column] = os.path.join(folder, os.path.expanduser(cells[column]))
    for column in ("fixed_modality", "moving_modality"):
        if cells.get(column) is not None:
            cells[column] = cells[column].lower()
            if cells[column] not in ("ct", "mri"):
                raise ValueError(f"{where}: {column} must be ct or mri, got {cells[column]!r}")
    cells["name"] = cells.get("name") or image_name(cells["moving"])
    return BatchPair(**cells)


def folder_pairs(folder, fixed) -> list[BatchPair]:
    """Every image of ``folder`` (``.nii.gz``, ``.nii``, ``.mha``, ``.nrrd``, ``.mhd``,
    ``.nhdr``; the fixed image left out) as a moving image onto ``fixed``, named after it."""
    folder, fixed = os.path.abspath(folder), os.path.abspath(fixed)
    if not os.path.isdir(folder):
        raise ValueError(f"{folder} is not a folder")
    moving = [
        os.path.join(folder, name)
        for name in sorted(os.listdir(folder))
        if name.lower().endswith(FOLDER_SUFFIXES)
        and os.path.isfile(os.path.join(folder, name))
        and os.path.join(folder, name) != fixed
    ]
    if not moving:
        raise ValueError(f"{folder} holds no images ({', '.join(FOLDER_SUFFIXES)})")
    return check_pairs([BatchPair(image_name(path), fixed, path) for path in moving])


def image_name(path) -> str:
    """A file's name without its image suffix: ``sub-01.nii.gz`` -> ``sub-01``."""
    name = os.path.basename(os.path.normpath(path))
    matching = [s for s in FOLDER_SUFFIXES if name.lower().endswith(s)]
    return name[: -len(max(matching, key=len))] if matching else name


def check_pairs(pairs) -> list[BatchPair]:
    """``pairs`` if every name can be a folder of its own under the batch's output folder."""
    seen = {}
    for pair in pairs:
        name = pair.name
        if (
            not name
            or name.startswith(".")
            or any(s in name for s in ("/", "\\", os.sep))
            or name == SUMMARY
        ):
            raise ValueError(
                f"the pair name {name!r} cannot be a folder of the output: give a name without "
                "slashes that does not start with a dot"
            )
        if name in seen:
            raise ValueError(
                f"two pairs are named {name!r} (moving images {seen[name]} and {pair.moving}): "
                "give each a name (the CSV column name)"
            )
        seen[name] = pair.moving
    return list(pairs)


def run_batch(
    pairs,
    out,
    method: str | None = None,
    options: dict | None = None,
    parameter_files=None,
    outputs=DEFAULT_OUTPUTS,
    metric: str = "ncc",
    thresholds: dict | None = None,
    workers: int | None = None,
    threads: int | None = None,
    scheduler: str | None = None,
    client=None,
    progress: bool = True,
) -> list[dict]:
    """Register every pair of ``pairs`` into ``out/NAME/`` on Dask; the rows of
    ``out/summary.csv``, one per pair, in order.

    ``pairs``: a CSV file (:func:`read_pairs`) or a list of :class:`BatchPair`
    (:func:`folder_pairs`). ``method`` (default ``"unigradicon"``) with its ``options``, or
    ``parameter_files`` (a pipeline, :func:`~itkdeepreg.pipeline.read_pipeline`). ``outputs``:
    of ``transform``, ``inverse``, ``warped``, ``field``, ``jacobian`` (each pair's
    ``report.json`` is always written). ``metric`` and ``thresholds``: the quality report's
    (:mod:`itkdeepreg.quality`).

    Where: ``client`` (a ``distributed.Client``), else ``scheduler`` (an address), else a
    local cluster of ``workers`` processes (default: one per two cores), each task with
    ``threads`` torch and ITK threads (default: the cores shared out among the workers).

    A pair's row has its ``status``: ``registered`` (now), ``complete`` (by an earlier run:
    skipped), ``failed`` (``error`` says why) or ``interrupted`` (not run: Ctrl-C). The
    figures, ``seconds`` and ``flags`` come from its ``report.json``.
    """
    if isinstance(pairs, (str, os.PathLike)):
        pairs = read_pairs(pairs)
    pairs = check_pairs(pairs)
    if not pairs:
        raise ValueError("the batch has no pairs")
    job = _checked_job(pairs, method, options, parameter_files, outputs, metric, thresholds)
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    summary = os.path.join(out, SUMMARY)
    temporary_name(summary, (".csv",))  # that it can be written, before the work
    done, todo = {}, []
    for pair in pairs:
        row = _complete(pair, job, out)
        if row is None:
            todo.append(pair)
        else:
            done[pair.name] = row
    try:
        if todo:
            done.update(_run(todo, job, out, workers, threads, scheduler, client, progress))
    finally:  # Ctrl-C too: what was done is recorded
        rows = [done.get(p.name) or _stopped(p, job, out) for p in pairs]
        for row in rows:
            if row["status"] in ("registered", "complete"):
                row["flags"] = flags(row, job.metric, job.thresholds)
        write_atomically(
            summary, lambda path: write_rows(path, rows, summary_columns(job.metric)), (".csv",)
        )
    return rows


def _checked_job(pairs, method, options, parameter_files, outputs, metric, thresholds):
    """The batch's :class:`Registration`, every part checked before any pair runs."""
    from .losses import SIMILARITIES
    from .methods import check_options
    from .pipeline import read_pipeline

    options = dict(options or {})
    parameter_files = tuple(os.path.abspath(p) for p in parameter_files or ())
    if parameter_files:
        if method is not None or options:
            raise ValueError("give a method (with its options) or parameter files, not both")
        read_pipeline(parameter_files)  # every file read and checked
        for pair in pairs:
            if pair.modalities() or pair.fixed_segmentation or pair.moving_segmentation:
                raise ValueError(
                    f"pair {pair.name}: modalities and segmentations are options of a method; "
                    "in parameter files, set them in the files"
                )
    else:
        method = method or _default_method()
        if "progress" in options:
            raise ValueError("the option progress is the batch's: each pair runs without bars")
        for modalities in {tuple(sorted(p.modalities().items())) for p in pairs}:
            check_options(method, {**options, **dict(modalities)})
    outputs = tuple(dict.fromkeys(outputs))
    unknown = [o for o in outputs if o not in OUTPUT_KINDS]
    if unknown or not outputs:
        raise ValueError(
            f"outputs must be some of {', '.join(OUTPUT_KINDS)}, got {', '.join(outputs)}"
        )
    if metric not in SIMILARITIES:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(SIMILARITIES)}")
    thresholds = check_thresholds(dict(thresholds or {}))
    return Registration(method, parameter_files, options, outputs, metric, thresholds)


def _default_method() -> str:
    from .registration import DEFAULT_METHOD

    return DEFAULT_METHOD


def summary_columns(metric: str) -> list[str]:
    return [
        "name",
        "status",
        *similarity_columns(metric),
        *FIGURES,
        "seconds",
        "flags",
        "error",
        "fixed",
        "moving",
    ]


def _row(pair: BatchPair, status: str, **values) -> dict:
    row = {"name": pair.name, "status": status, "fixed": pair.fixed, "moving": pair.moving}
    return {**row, **values}


def _targets(pair: BatchPair, job: Registration, out: str) -> dict:
    """``kind -> path`` of the pair's outputs, its report included."""
    folder = os.path.join(out, pair.name)
    return {kind: os.path.join(folder, OUTPUTS[kind][0]) for kind in (*job.outputs, "report")}


def _complete(pair: BatchPair, job: Registration, out: str) -> dict | None:
    """The pair's row if an earlier run wrote all its outputs the same way, else ``None``
    (and what a killed run left among them is removed)."""
    targets = _targets(pair, job, out)
    if unfinished_outputs(list(targets.values())) is not None:
        return None  # a set cut off while it was put in place: written anew
    if not all(os.path.isfile(path) for path in targets.values()):
        return None
    try:
        with open(targets["report"], encoding="utf-8") as file:
            report = json.load(file)
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or report.get("job") != job.fingerprint(pair):
        return None
    return {**report, "status": "complete"}


def _stopped(pair: BatchPair, job: Registration, out: str) -> dict:
    """The row of a pair whose task had not reported when the batch stopped: its outputs may
    be complete all the same (written, then Ctrl-C before the news came)."""
    row = _complete(pair, job, out)
    if row is not None:
        return {**row, "status": "registered"}
    _remove_if_empty(os.path.join(out, pair.name))
    return _row(pair, "interrupted", error="not run: the batch was stopped")


def _remove_if_empty(folder) -> None:
    """Remove a pair's folder that holds nothing: it was made for outputs that never came."""
    with contextlib.suppress(OSError):
        os.rmdir(folder)


def _run(todo, job, out, workers, threads, scheduler, client, progress) -> dict:
    """Register ``todo`` on the cluster; ``name -> row``."""
    from tqdm.auto import tqdm

    with contextlib.ExitStack() as stack:
        if client is None and scheduler is not None:
            from distributed import Client

            client = stack.enter_context(Client(scheduler))
        elif client is None:
            cores = len(os.sched_getaffinity(0))
            workers = workers or max(1, min(len(todo), cores // 2))
            threads = threads or max(1, cores // workers)
            client = stack.enter_context(_local_client(workers, threads))
        job = dataclasses.replace(job, threads=threads)
        bar = stack.enter_context(
            tqdm(total=len(todo), unit="pair", disable=not progress, desc="registering")
        )
        rows, failed = {}, 0
        submitted = stack.enter_context(contextlib.closing(_submitted(client, todo, job, out)))
        for row in submitted:
            rows[row["name"]] = row
            failed += row["status"] == "failed"
            bar.set_postfix(failed=failed, refresh=False)
            bar.update()
        return rows


def _submitted(client, todo, job, out):
    """The rows of ``todo`` as their tasks end. Only as many tasks as the cluster has threads
    are on it at a time, so that a worker that dies takes only its own pair with it; on
    Ctrl-C (any exit) the tasks still there are cancelled."""
    from distributed import as_completed

    pending, running = deque(todo), {}
    finished = as_completed()

    def fill():
        capacity = max(1, sum(client.nthreads().values()))
        while pending and len(running) < capacity:
            pair = pending.popleft()
            key = f"register-{pair.name}-{uuid.uuid4().hex[:8]}"
            future = client.submit(register_files, pair, job, out, key=key, pure=False)
            running[future] = pair
            finished.add(future)

    try:
        fill()
        for future in finished:
            pair = running.pop(future)
            yield _result(future, pair, job, out)
            fill()
    finally:
        for future in running:
            future.cancel()


def _result(future, pair, job, out) -> dict:
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        unfinished_outputs(list(_targets(pair, job, out).values()))  # what it was writing
        _remove_if_empty(os.path.join(out, pair.name))
        error = "its worker died while registering it (killed, or out of memory)"
    except Exception as caught:  # noqa: BLE001  the task could not run (no itkdeepreg there)
        error = f"the task failed: {one_line(caught)}"
    return _row(pair, "failed", error=error)


@contextlib.contextmanager
def _local_client(workers: int, threads: int):
    """A client of a local cluster of ``workers`` processes, one task at a time each, with
    ``threads`` threads for OpenMP (torch, ITK) in each."""
    import dask
    from distributed import Client, LocalCluster

    count = str(threads)
    # a pair whose worker dies is recorded at once (a rerun redoes it), not tried on the next
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # any free port: its HTTP server starts even without one
            # nothing of the workers' own logs: the warnings of workers slow to exit (torch and
            # ITK unloading, killed then), and a heartbeat's error when Ctrl-C closed the
            # scheduler first; a pair's failure is in its row, a dead worker's too
            silence_logs=logging.CRITICAL,
            env={"OMP_NUM_THREADS": count, "MKL_NUM_THREADS": count},
        )
    try:
        with Client(cluster) as client:
            client.register_plugin(_LocalWorker(), name="itkdeepreg-local-worker")
            yield client
    finally:
        cluster.close()


class _LocalWorker(WorkerPlugin):
    """How a worker of the local cluster starts. Ctrl-C in a terminal reaches every process
    of its group: the batch's own process, not the workers, stops the batch (closing the
    cluster kills a busy worker). ITK's lazy loading and tqdm guard themselves with a
    process-shared lock, a semaphore that a killed worker leaves to the resource tracker (which
    warns of it): a worker's tasks are threads, a thread lock is enough."""

    def setup(self, worker):
        from tqdm import tqdm

        with contextlib.suppress(ValueError):  # not the main thread: nothing to do
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        tqdm.set_lock(threading.RLock())
        with contextlib.suppress(ImportError, AttributeError):
            from itk.support.lazy import LazyITKModule

            LazyITKModule.set_lock(threading.RLock())


def register_files(pair: BatchPair, job: Registration, out: str) -> dict:
    """Register one pair into ``out/NAME/`` (a batch's task, run on a worker): its row. The
    pair's own failures are recorded in the row, never raised."""
    start = time.perf_counter()
    folder = os.path.join(out, pair.name)
    created = not os.path.isdir(folder)
    worker = _worker()
    try:
        os.makedirs(folder, exist_ok=True)
        targets = _targets(pair, job, out)
        unfinished_outputs(list(targets.values()))  # removes what a killed run left
        return _register(pair, job, targets, start, worker)
    except Exception as error:  # noqa: BLE001  any failure of one pair is its row's error
        if created:
            _remove_if_empty(folder)
        seconds = time.perf_counter() - start
        return _row(pair, "failed", error=one_line(error), seconds=seconds, worker=worker)


def _register(pair, job, targets, start, worker) -> dict:
    """Register, measure and write the pair; its report."""
    from .cli._files import read_image, read_itk_transform
    from .outputs import output_writers
    from .quality import quality_figures
    from .registration import number_of_threads

    threads = job.threads or _worker_threads()
    with number_of_threads(threads):
        images = {
            column: read_image(getattr(pair, column), column)
            for column in FILE_COLUMNS[:-1]
            if getattr(pair, column) is not None
        }
        initial = None
        if pair.initial_transform is not None:
            initial = read_itk_transform(pair.initial_transform, "initial_transform")
        transform, warped = _registered(images, initial, pair, job)
        figures = quality_figures(
            images["fixed"],
            images["moving"],
            transform,
            initial,
            job.metric,
            images.get("fixed_mask"),
        )
        report = _row(
            pair,
            "registered",
            **figures,
            seconds=time.perf_counter() - start,
            flags=flags(figures, job.metric, job.thresholds),
            worker=worker,
            job=job.fingerprint(pair),
        )
        writers = output_writers(transform, warped, report)
        write_all([(path, writers[kind], OUTPUTS[kind][1]) for kind, path in targets.items()])
    # an output not asked for now is of an earlier registration: it would not match these
    for kind in set(OUTPUT_KINDS) - set(job.outputs):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(os.path.dirname(targets["report"]), OUTPUTS[kind][0]))
    return report


def _registered(images, initial, pair, job):
    """``(transform, warped)``: the pair registered by the job's method or pipeline."""
    from .pipeline import read_pipeline, run_pipeline
    from .registration import DeepRegistrationMethod

    if job.parameter_files:
        warped, transform = run_pipeline(
            images["fixed"],
            images["moving"],
            read_pipeline(job.parameter_files),
            initial_transform=initial,
            fixed_mask=images.get("fixed_mask"),
            moving_mask=images.get("moving_mask"),
            show_progress=False,
        )
        return transform, warped
    inputs = {f"{column}_image" if column in ("fixed", "moving") else column: image
              for column, image in images.items()}  # fmt: skip
    registration = DeepRegistrationMethod.New(**inputs, method=job.method)
    if initial is not None:
        registration.SetInitialTransform(initial)
    registration.SetShowProgress(False)
    registration.SetMethodOptions({**job.options, **pair.modalities()})
    try:
        registration.Update()
    except (ValueError, TypeError) as error:
        raise ValueError(f"{job.method}: {one_line(error)}") from None
    return registration.GetTransform(), registration.GetOutput()


def _worker():
    """The address of the Dask worker this runs on (``None`` outside one)."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return None


def _worker_threads() -> int | None:
    """On a worker: its cores shared out among its Dask threads."""
    try:
        from distributed import get_worker

        nthreads = get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        return None
    return max(1, len(os.sched_getaffinity(0)) // max(1, nthreads))


def one_line(error) -> str:
    """An error as one line; its type where the message does not speak for itself."""
    message = " ".join(str(error).split())
    if isinstance(error, (ValueError, OSError, TypeError)) or type(error).__name__ in (
        "CommandError",
        "UsageError",
    ):
        return message or type(error).__name__
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def format_table(rows, metric: str) -> str:
    """The summary as an aligned table (the command prints it at the end)."""
    before, after = similarity_columns(metric)
    columns = [
        ("pair", lambda r: r["name"]),
        ("status", lambda r: r["status"]),
        (before, lambda r: _number(r.get(before), 4)),
        (after, lambda r: _number(r.get(after), 4)),
        ("folds %", lambda r: _number(r.get("folds_percent"), 3)),
        ("SDlogJ", lambda r: _number(r.get("sd_log_jacobian"), 3)),
        ("IC mm", lambda r: _number(r.get("inverse_consistency_mean_mm"), 3)),
        ("IC p99", lambda r: _number(r.get("inverse_consistency_p99_mm"), 3)),
        ("s", lambda r: _number(r.get("seconds"), 1)),
        ("flags / error", lambda r: r.get("error") or "; ".join(r.get("flags") or ())),
    ]
    cells = [[title for title, _ in columns]] + [[str(f(r)) for _, f in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1]
        for line in cells
    )


def _number(value, digits) -> str:
    return "" if value is None else f"{value:.{digits}f}"

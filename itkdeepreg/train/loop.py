"""The training loop: one for every model of the library and its objective.

Adam on the model's weights; checkpoints to resume from; a CSV log (and TensorBoard, if
installed); a progress bar; bf16 autocast on request; data parallel under torchrun.

Every random draw of a step comes from generators seeded by ``(seed, step)`` and the
process's rank. So a run is reproducible, a resumed run continues the same loss curve
(the checkpoint holds the weights and Adam's state; the data need no state), and each
process of a data-parallel run draws batches of its own.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import torch
from torch import nn

from ..files import temporary_name, write_atomically
from ..optimize.loop import progress_bar
from ..zoo.weights import read_torch_file, weight_problems
from . import distributed
from .objectives import Objective

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "weights.pt"
LOG = "log.csv"
COLUMNS = ("step", "loss", "similarity", "regularization", "seconds")
DATA, NOISE = 0, 1  # the random streams of a step


def train(
    model: nn.Module,
    data,
    objective=None,
    steps: int = 1000,
    batch_size: int = 4,
    learning_rate: float = 1e-4,
    output=None,
    checkpoint_every: int = 100,
    resume: bool = True,
    seed: int = 0,
    augment=None,
    device=None,
    mixed_precision: bool = False,
    tensorboard: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Train ``model`` in place for ``steps`` steps; the log rows of the steps run here.

    ``data`` has ``sample(batch_size, generator) -> (moving, fixed)`` (``[B, C, *shape]`` on the
    model's grid): :class:`~itkdeepreg.train.SyntheticPairs`, :class:`~itkdeepreg.train.ImagePairs`.
    ``objective``: an :class:`Objective` (default: LNCC + GradICON 1.5) or a :class:`Schedule`.
    ``batch_size`` is per process. ``augment(moving, fixed, generator)`` changes each batch
    (:func:`~itkdeepreg.train.augment`).

    ``output``, a folder, receives ``checkpoint.pt`` every ``checkpoint_every`` steps and at the
    end, ``weights.pt`` (the state dict, which :func:`~itkdeepreg.zoo.load_weights` and a
    :class:`~itkdeepreg.methods.NetworkMethod` take) and ``log.csv``; with ``resume`` a run
    whose folder holds a checkpoint continues from it. ``mixed_precision`` runs the model and
    the objective under bf16 autocast.
    """
    objective = objective or Objective()
    rank, _ = distributed.setup()
    device = distributed.local_device(device)
    # the checkpoint first: a bad one is refused before the folder is made or written
    checkpoint = read_checkpoint(output, model, steps) if output is not None and resume else None
    writer = _Output(output, tensorboard) if output is not None and rank == 0 else None
    model.to(device).train()
    # first, as it swaps the BatchNorm layers: Adam must hold the parameters that train
    step_model = distributed.data_parallel(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    start = _resume(checkpoint, model, optimizer, output) if checkpoint is not None else 0
    for group in optimizer.param_groups:  # the rate asked for, not the checkpoint's
        group["lr"] = learning_rate
    if writer is not None:
        writer.open(start)

    rows = []
    with progress_bar(steps - start, "training", progress and rank == 0) as bar:
        for step in range(start, steps):
            began = time.perf_counter()
            data_generator = torch.Generator().manual_seed(_seed(seed, step, rank, DATA))
            moving, fixed = data.sample(batch_size, data_generator)
            if augment is not None:
                moving, fixed = augment(moving, fixed, data_generator)
            noise = torch.Generator(device).manual_seed(_seed(seed, step, rank, NOISE))
            with torch.autocast(device.type, torch.bfloat16, enabled=mixed_precision):
                terms = objective.at(step)(step_model, moving.to(device), fixed.to(device), noise)
            optimizer.zero_grad()
            terms["loss"].backward()
            optimizer.step()
            row = distributed.mean_over_processes({k: v.item() for k, v in terms.items()}, device)
            row = {"step": step + 1, **row, "seconds": time.perf_counter() - began}
            rows.append(row)
            bar.update()
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            if writer is not None:
                writer.log(row)
                if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
                    writer.checkpoint(model, optimizer, step + 1)
    if writer is not None:
        writer.close(model)
    return rows


def _seed(seed, step, rank, stream):
    """One seed per (seed, step, rank, stream), distinct for up to 2^20 steps and 2^10
    processes: the data and the objective's noise draw from streams of their own."""
    return ((seed * 2**20 + step) * 2**10 + rank) * 2 + stream


def read_checkpoint(output, model: nn.Module, steps: int) -> dict | None:
    """The checkpoint in ``output`` (None where there is none), checked against ``model`` and
    ``steps`` and loaded into nothing: a payload, a corrupt file, or a checkpoint of another
    model or of a longer run is refused before anything is written."""
    path = Path(output) / CHECKPOINT
    if not path.exists():
        return None
    advice = "delete it or train into another folder"
    try:
        state = read_torch_file(path)
    except ValueError as error:  # its message starts with the path: said once
        why = str(error).removeprefix(f"{path} ")
        raise ValueError(f"cannot resume from {path}, which {why}; {advice}") from None
    kinds = {"model": dict, "optimizer": dict, "step": int}
    if not isinstance(state, dict) or any(
        not isinstance(state.get(key), kind) for key, kind in kinds.items()
    ):
        raise ValueError(
            f"cannot resume from {path}: it is not a training checkpoint (a dict of model, "
            f"optimizer and step); {advice}"
        )
    problems = weight_problems(model, state["model"])
    if problems:
        raise ValueError(f"cannot resume from {path} ({'; '.join(problems[:5])}); {advice}")
    if state["step"] > steps:
        raise ValueError(
            f"{path} was taken at step {state['step']}, beyond the {steps} steps asked for"
        )
    return state


def _resume(state, model, optimizer, output) -> int:
    """Load a checkpoint of :func:`read_checkpoint`; the step it was taken at."""
    try:  # the optimizer first: it checks its state before taking it, the model is then sure
        optimizer.load_state_dict(state["optimizer"])
        model.load_state_dict(state["model"])
    except (ValueError, RuntimeError, KeyError) as error:
        raise ValueError(
            f"cannot resume from {Path(output) / CHECKPOINT} ({error}); "
            "delete it or train into another folder"
        ) from None
    return state["step"]


class _Output:
    """The training folder, written by rank 0: checkpoints, final weights, the log."""

    def __init__(self, folder, tensorboard):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in (CHECKPOINT, WEIGHTS, LOG):  # fail now, not after hours of training
            temporary_name(self.folder / name)
        self.tensorboard = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ImportError(
                    "TensorBoard logging needs the tensorboard package: pip install tensorboard"
                ) from None
            self.tensorboard = SummaryWriter(self.folder / "tensorboard")

    def open(self, start):
        """Start the log, keeping the rows of the steps before ``start`` (a resumed run)."""
        path = self.folder / LOG
        kept = []
        if start and path.exists():
            with open(path, newline="") as file:
                kept = [row for row in csv.DictReader(file) if int(row["step"]) <= start]
        self.file = open(path, "w", newline="")
        self.log_writer = csv.DictWriter(self.file, COLUMNS, extrasaction="ignore")
        self.log_writer.writeheader()
        self.log_writer.writerows(kept)

    def log(self, row):
        self.log_writer.writerow(row)
        self.file.flush()
        if self.tensorboard is not None:
            for key in COLUMNS[1:-1]:
                self.tensorboard.add_scalar(key, row[key], row["step"])

    def checkpoint(self, model, optimizer, step):
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
        write_atomically(self.folder / CHECKPOINT, lambda path: torch.save(state, path))

    def close(self, model):
        self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        write_atomically(self.folder / WEIGHTS, lambda path: torch.save(model.state_dict(), path))

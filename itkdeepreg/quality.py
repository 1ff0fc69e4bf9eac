"""The quality of one registration in figures: what ``itkdeepreg batch`` reports for every pair
and ``itkdeepreg register --report`` for one (docs/batch.md).

- ``{metric}_before``, ``{metric}_after``: a similarity loss of
  :data:`~itkdeepreg.losses.SIMILARITIES` (lower is better; ``ncc`` is one minus the normalised
  cross-correlation) between the fixed image and the moving image on the fixed grid, through
  the initial transform (the identity of physical space without one), then through the result;
- ``folds_percent``: the share of fixed voxels where the Jacobian determinant is not positive;
- ``sd_log_jacobian``: the standard deviation of ``log(clip(J + 3, 1e-9, 1e9))`` over the fixed
  voxels two or more voxels from the border, the figure the Learn2Reg evaluation reports (its
  ``+ 3`` included: it keeps folds finite);
- ``inverse_consistency_mean_mm``, ``inverse_consistency_p99_mm``: how far the inverse brings a
  fixed voxel back from where the transform sends it (``backward(forward(x)) - x``, mm).

:func:`flags` names the figures past their :data:`THRESHOLDS` (and a similarity that got
worse): the pairs to look at first.
"""

from __future__ import annotations

import csv
import json
import math
import os

import itk
import numpy as np
import torch

from .interop import InverseConsistentTransform, image_to_tensor
from .interop.inverse_consistent import as_inverse_consistent
from .losses import SIMILARITIES
from .transforms import Affine, from_physical

FIGURES = (
    "folds_percent",
    "sd_log_jacobian",
    "inverse_consistency_mean_mm",
    "inverse_consistency_p99_mm",
)
# a figure above its threshold flags the pair (SDlogJ: Learn2Reg's entries are mostly below 0.2)
THRESHOLDS = {"folds_percent": 0.1, "sd_log_jacobian": 0.2, "inverse_consistency_p99_mm": 2.0}
_POINTS_PER_SLAB = 1 << 20  # inverse consistency is evaluated slab by slab: bounded memory


def similarity_columns(metric: str) -> tuple[str, str]:
    return f"{metric}_before", f"{metric}_after"


def quality_figures(
    fixed, moving, transform: InverseConsistentTransform, initial=None, metric="ncc", mask=None
) -> dict:
    """The figures of the module's docstring for ``transform`` (fixed -> moving points) between
    the ``itk.Image`` ``fixed`` and ``moving``. ``initial``: the transform the registration
    started from (an ITK transform or an ``InverseConsistentTransform``); ``mask``: a fixed
    mask (non-zero inside) where the similarity counts."""
    if metric not in SIMILARITIES:
        raise ValueError(f"unknown similarity {metric!r}; known: {', '.join(SIMILARITIES)}")
    fixed_tensor, fixed_geometry = image_to_tensor(fixed)
    moving_tensor, moving_geometry = image_to_tensor(moving)
    if initial is None:
        start = from_physical(
            Affine.identity(fixed_geometry.dimension, torch.float64),
            fixed_geometry,
            moving_geometry,
        )
    else:
        start = as_inverse_consistent(initial, fixed, moving).forward
    weights = None if mask is None else image_to_tensor(mask)[0]
    before, after = (
        _similarity(metric, value, moving_tensor, fixed_tensor, weights)
        for value in (start, transform.forward)
    )
    jacobian = itk.array_view_from_image(transform.GetJacobianDeterminant()).astype(np.float64)
    mean, p99 = _inverse_consistency(transform, fixed_geometry)
    return dict(
        zip(
            (*similarity_columns(metric), *FIGURES),
            (before, after, 100 * float(np.mean(jacobian <= 0)), _sd_log(jacobian), mean, p99),
        )
    )


def _similarity(metric, value, moving, fixed, mask) -> float:
    with torch.no_grad():
        warped = value.to(dtype=torch.float32).warp(moving, fixed.shape[2:])
        return float(SIMILARITIES[metric](warped, fixed, mask=mask))


def _sd_log(jacobian) -> float:
    """Learn2Reg's SDlogJ: its evaluation drops two voxels at each border (its finite
    differences pad with zeros there); axes too short for that are kept whole."""
    inside = tuple(slice(2, -2) if n > 4 else slice(None) for n in jacobian.shape)
    return float(np.log(np.clip(jacobian[inside] + 3, 1e-9, 1e9)).std())


def _inverse_consistency(transform, geometry) -> tuple[float, float]:
    """Mean and 99th percentile (mm) of ``|backward(forward(x)) - x|`` at the fixed voxels."""
    forward = transform.forward.to(device="cpu", dtype=torch.float64)
    backward = transform.backward.to(device="cpu", dtype=torch.float64)
    to_mm = torch.as_tensor(geometry.unit_to_physical[:-1, :-1], dtype=torch.float64)
    axes = [torch.linspace(0, 1, n, dtype=torch.float64) for n in geometry.shape]
    rows = max(1, _POINTS_PER_SLAB // max(1, math.prod(geometry.shape[1:])))
    errors = []
    with torch.no_grad():
        for start in range(0, geometry.shape[0], rows):
            slab = [axes[0][start : start + rows], *axes[1:]]
            grid = torch.stack(torch.meshgrid(*slab, indexing="ij"))[None]
            difference = backward(forward(grid)) - grid
            errors.append(torch.einsum("ij,bj...->bi...", to_mm, difference).norm(dim=1).flatten())
    errors = torch.cat(errors)
    return float(errors.mean()), float(torch.quantile(errors, 0.99, interpolation="linear"))


def flags(figures: dict, metric: str, thresholds: dict | None = None) -> list[str]:
    """The figures past their thresholds (:data:`THRESHOLDS`, updated by ``thresholds``), as
    ``"name > threshold"``, and ``"{metric} worse"`` where the similarity got worse."""
    limits = check_thresholds({**THRESHOLDS, **(thresholds or {})})
    found = [
        f"{name} > {limit:g}"
        for name, limit in limits.items()
        if figures.get(name) is not None and figures[name] > limit
    ]
    before, after = (figures.get(c) for c in similarity_columns(metric))
    if before is not None and after is not None and after > before:
        found.append(f"{metric} worse")
    return found


def check_thresholds(thresholds: dict) -> dict:
    """``thresholds`` if every name is one of :data:`THRESHOLDS` and every value a number."""
    for name, value in thresholds.items():
        if name not in THRESHOLDS:
            raise ValueError(
                f"no threshold {name!r}; there are thresholds for {', '.join(THRESHOLDS)}"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise ValueError(f"the threshold {name} must be a number, got {value!r}")
    return thresholds


def write_report(row: dict, path) -> None:
    """One registration's figures as JSON (``.json``) or as a CSV header and row (``.csv``)."""
    if os.fspath(path).lower().endswith(".csv"):
        write_rows(path, [row], list(row))
    else:
        with open(path, "w", encoding="utf-8") as file:
            json.dump(row, file, indent=1)
            file.write("\n")


def write_rows(path, rows, columns) -> None:
    """``rows`` (dicts) as a CSV file with ``columns``; numbers with 6 significant digits."""
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in columns})


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "; ".join(map(str, value))
    return value

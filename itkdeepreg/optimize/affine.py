"""Affine, rigid and translation registration by optimization, in physical space.

Rigidity is a physical notion (a rotation of millimetres, not of unit-cube coordinates, whose
axes have different lengths), so the map is built in physical space and carried to the unit
cubes through the two image geometries:

    x -> M (x - c) + c + t,   M = exp(A) M0,

``c`` the fixed image's centre (of mass, or of its grid), ``A`` skew-symmetric for a rigid map
and free for an affine one (the matrix exponential keeps the determinant positive: no
reflections), ``M0`` the initial linear part (the identity, or the principal axes for
``initialization="moments"``). ``A`` and ``t`` (in units of the fixed image's radius) start
at zero and are optimised with Adam over a multi-resolution pyramid.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from ..geometry import ImageGeometry
from ..losses import ncc
from ..transforms import Affine
from .loop import (
    OptimizationResult,
    PyramidLevel,
    check_images,
    check_mask,
    minimise,
    progress_bar,
)

TRANSFORMS = ("translation", "rigid", "affine")
INITIALIZATIONS = ("identity", "geometry", "center_of_mass", "moments")


def register_affine(
    moving: torch.Tensor,
    fixed: torch.Tensor,
    moving_geometry: ImageGeometry | None = None,
    fixed_geometry: ImageGeometry | None = None,
    transform: str = "affine",
    similarity=ncc,
    initialization: str = "center_of_mass",
    levels=(4, 2, 1),
    iterations=(100, 50, 25),
    learning_rate: float = 0.01,
    moving_mask=None,
    fixed_mask=None,
    tolerance: float | None = None,
    patience: int = 10,
    progress: bool = True,
) -> OptimizationResult:
    """The affine map of the fixed image's unit cube onto the moving image's, and its inverse.

    ``moving`` and ``fixed`` are ``[1, 1, *shape]`` tensors; their geometries default to
    grids of 1 mm voxels (rigid then means rigid in voxels). ``similarity(warped, fixed, mask)``
    is any loss of :mod:`itkdeepreg.losses` (NCC by default; ``mutual_information`` across
    modalities). ``levels`` are the pyramid's shrink factors, with ``iterations`` Adam steps at
    each. ``initialization``: ``"identity"``, ``"geometry"`` (grid centres aligned),
    ``"center_of_mass"`` (centres of mass aligned, ITK's "moments" mode) or ``"moments"``
    (centres of mass and principal axes, the axes' signs chosen by the similarity at the
    coarsest level).
    """
    check_images(moving, fixed)
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
    if initialization not in INITIALIZATIONS:
        raise ValueError(f"initialization must be one of {INITIALIZATIONS}, got {initialization!r}")
    if len(levels) != len(iterations):
        raise ValueError(f"{len(levels)} levels but {len(iterations)} iteration counts")
    dimension = fixed.dim() - 2
    moving_geometry = moving_geometry or _voxel_geometry(moving)
    fixed_geometry = fixed_geometry or _voxel_geometry(fixed)
    for geometry, image, name in (
        (moving_geometry, moving, "moving"),
        (fixed_geometry, fixed, "fixed"),
    ):
        if geometry.shape != tuple(image.shape[2:]):
            raise ValueError(f"the {name} geometry {geometry.shape} is not the {name} image's grid")
    moving_mask = check_mask(moving_mask, moving, "moving")
    fixed_mask = check_mask(fixed_mask, fixed, "fixed")

    options = dict(dtype=torch.float64, device=fixed.device)
    unit_to_fixed = torch.tensor(fixed_geometry.unit_to_physical, **options)
    moving_to_unit = torch.tensor(moving_geometry.physical_to_unit, **options)
    fixed_centre, fixed_axes = _moments(fixed, fixed_mask, fixed_geometry)
    moving_centre, moving_axes = _moments(moving, moving_mask, moving_geometry)
    if initialization in ("identity", "geometry"):
        fixed_centre = fixed_geometry.centre
        moving_centre = moving_geometry.centre
        if initialization == "identity":
            moving_centre = fixed_centre
    centre = torch.tensor(fixed_centre, **options)
    offset = torch.tensor(moving_centre - fixed_centre, **options)
    corners = fixed_geometry.to_physical(
        np.array(list(itertools.product((0, 1), repeat=dimension)))
    )
    radius = float(np.linalg.norm(corners - fixed_centre, axis=1).max())

    log_matrix = torch.zeros(
        dimension, dimension, **options, requires_grad=transform != "translation"
    )
    translation = torch.zeros(dimension, **options, requires_grad=True)

    def affine(initial):
        generator = log_matrix - log_matrix.T if transform == "rigid" else log_matrix
        linear = torch.linalg.matrix_exp(generator) @ initial
        physical = torch.eye(dimension + 1, **options)
        physical[:dimension, :dimension] = linear
        physical[:dimension, dimension] = centre - linear @ centre + offset + radius * translation
        return Affine((moving_to_unit @ physical @ unit_to_fixed).to(fixed.dtype))

    pyramid = [PyramidLevel(moving, fixed, moving_mask, fixed_mask, f) for f in levels]

    def loss(initial, level):
        return level.similarity(affine(initial)(level.grid), similarity)

    initial = torch.eye(dimension, **options)
    if initialization == "moments" and transform != "translation":
        candidates = _axis_alignments(fixed_axes, moving_axes)
        with torch.no_grad():
            scores = [loss(torch.tensor(c, **options), pyramid[0]).item() for c in candidates]
        initial = torch.tensor(candidates[int(np.argmin(scores))], **options)

    parameters = [translation] + ([log_matrix] if transform != "translation" else [])
    losses = []
    with progress_bar(sum(iterations), f"{transform} registration", progress) as bar:
        for factor, level, steps in zip(levels, pyramid, iterations):
            # finer levels resolve finer steps: the step size follows the voxel size
            losses += minimise(
                lambda: loss(initial, level),
                parameters,
                steps,
                learning_rate * factor / max(levels),
                tolerance,
                patience,
                bar,
            )
    with torch.no_grad():
        forward = affine(initial)
    return OptimizationResult(forward, forward.inverse(), losses)


def _voxel_geometry(image):
    return ImageGeometry(tuple(reversed(image.shape[2:])))


def _moments(image, mask, geometry):
    """Centre of mass (physical) and principal axes (columns) of the image's intensities above
    a tenth of their range."""
    from ..sampling import identity_grid

    weight = (image - image.min()).double()
    # a dim background fills the whole grid: it would give the grid's axes, not the object's
    weight = weight * (weight > 0.1 * weight.max())
    if mask is not None:
        weight = weight * mask
    unit = identity_grid(image.shape[2:], dtype=torch.float64, device=image.device)
    points = geometry.to_physical(unit.reshape(geometry.dimension, -1).T.cpu().numpy())
    w = weight.reshape(-1).cpu().numpy()
    w = w / w.sum()
    centre = w @ points
    centred = points - centre
    covariance = (centred * w[:, None]).T @ centred
    _, axes = np.linalg.eigh(covariance)  # ascending eigenvalues, orthonormal columns
    return centre, axes


def _axis_alignments(fixed_axes, moving_axes):
    """Rotations taking each fixed principal axis to the moving one, for every choice of
    signs that keeps the determinant positive."""
    candidates = []
    for signs in itertools.product((1.0, -1.0), repeat=fixed_axes.shape[0]):
        rotation = moving_axes @ np.diag(signs) @ fixed_axes.T
        if np.linalg.det(rotation) > 0:
            candidates.append(rotation)
    return candidates

"""Deformable registration by optimization: a field on the fixed grid, found with Adam.

The map is ``initial o field``: the field acts first, on the fixed image's unit cube, and the
``initial`` map (an affine result, a network's answer, or nothing) carries the points into
the moving image. The field is a displacement ``x -> x + u(x)`` or the exponential of a
stationary velocity field ``v`` (diffeomorphic, by scaling and squaring). With
``symmetric=True`` a second field does the same from the moving side, and the objective holds
both similarities and a GradICON penalty on the pair, so the result comes with its inverse.
Instance optimization of a network's answer (:func:`~itkdeepreg.optimize.optimize_fields`)
is this with the network's maps as ``initial``.

Each pyramid level registers Gaussian-smoothed, resampled images on its own grid; the field
lives on that grid made ``field_factor`` times coarser, starts from the previous level's
field, and is stored in voxels of its grid, so that ``learning_rate`` is a step in voxels at
every level; at each level it falls along a half cosine to ``decay_to`` times itself, so that
the last steps settle instead of jittering. ``smoothing`` blurs the stored field before use, a
Gaussian of that many field voxels: a preconditioner that keeps Adam's per-voxel steps from
roughening the field. The default similarity is squared LNCC (ANTs' CC is a squared
correlation too).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ..losses import bending_energy, diffusion, gaussian_blur, gradicon, icon, squared_lncc
from ..sampling import resample
from ..transforms import Affine, Displacement, Transform, Velocity, invert
from .loop import (
    OptimizationResult,
    PyramidLevel,
    check_images,
    check_mask,
    level_shape,
    minimise,
    progress_bar,
    seeded_generator,
)

PARAMETERIZATIONS = ("displacement", "velocity")
REGULARIZERS = ("diffusion", "bending_energy", "gradicon", "icon")


def register_deformable(
    moving: torch.Tensor,
    fixed: torch.Tensor,
    initial: Transform | None = None,
    initial_inverse: Transform | None = None,
    parameterization: str = "velocity",
    symmetric: bool = False,
    similarity=functools.partial(squared_lncc, sigma=1.5),
    regularization: dict | None = None,
    levels=(4, 2, 1),
    iterations=(50, 25, 40),
    learning_rate: float = 0.25,
    decay_to: float = 0.1,
    field_factor: float = 2,
    smoothing: float = 2.5,
    moving_mask=None,
    fixed_mask=None,
    tolerance: float | None = None,
    patience: int = 10,
    seed: int = 0,
    progress: bool = True,
    description: str | None = None,
    pair_terms=None,
) -> OptimizationResult:
    """The map of the fixed image's unit cube onto the moving image's, and its inverse.

    ``moving`` and ``fixed``: ``[1, 1, *shape]`` tensors, on any device (the work happens on
    the fixed image's). ``regularization``: weights by name, any of ``"diffusion"``,
    ``"bending_energy"`` (of the field, per level) and ``"gradicon"`` (of the forward and
    backward maps, ``symmetric=True`` only); by default ``{"diffusion": 0.1}``, or
    ``{"gradicon": 1.5}`` when symmetric. The backward map is exact for a velocity field
    (the flow of ``-v``), optimised when symmetric, and otherwise the displacement's
    fixed-point inverse. ``seed`` draws GradICON's point noise: the same inputs give the same
    result. ``pair_terms`` (``symmetric=True`` only): a function of the forward and backward
    maps that replaces both similarities (instance optimization's published terms).
    """
    check_images(moving, fixed)
    if pair_terms is not None and not symmetric:
        raise ValueError("pair_terms compares both directions: pass symmetric=True")
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(
            f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}"
        )
    if regularization is None:
        regularization = {"gradicon": 1.5} if symmetric else {"diffusion": 0.1}
    unknown = set(regularization) - set(REGULARIZERS)
    if unknown:
        raise ValueError(f"unknown regularizers {sorted(unknown)}; known: {REGULARIZERS}")
    if {"gradicon", "icon"} & set(regularization) and not symmetric:
        raise ValueError("inverse-consistency penalties need both directions: pass symmetric=True")
    if len(levels) != len(iterations):
        raise ValueError(f"{len(levels)} levels but {len(iterations)} iteration counts")
    moving = moving.to(fixed.device)
    dimension = fixed.dim() - 2
    moving_mask = check_mask(moving_mask, moving, "moving")
    fixed_mask = check_mask(fixed_mask, fixed, "fixed")
    initial = initial or Affine.identity(dimension, fixed.dtype, fixed.device)
    if initial_inverse is None:
        try:
            initial_inverse = initial.inverse()
        except NotImplementedError:
            raise ValueError(
                f"the initial {type(initial).__name__} has no exact inverse: pass initial_inverse"
            ) from None
    kind = Displacement if parameterization == "displacement" else Velocity
    sides = [(moving, fixed, moving_mask, fixed_mask, initial)]
    if symmetric:
        sides.append((fixed, moving, fixed_mask, moving_mask, initial_inverse))
    generator = seeded_generator(fixed, seed)

    fields = None  # unit-cube units, one per side, carried from level to level
    losses = []
    description = description or f"{'symmetric ' * symmetric}{parameterization} registration"
    with progress_bar(sum(iterations), description, progress) as bar:
        for factor, steps in zip(levels, iterations):
            levels_of_sides = [_Level(*side, factor, field_factor) for side in sides]
            cells = [level.cell for level in levels_of_sides]
            parameters = [
                (
                    torch.zeros(
                        1, dimension, *level.field_shape, dtype=fixed.dtype, device=fixed.device
                    )
                    if fields is None
                    else resample(f, level.field_shape) / cell
                ).requires_grad_()
                for level, f, cell in zip(levels_of_sides, fields or [None] * len(sides), cells)
            ]

            def objective():
                maps, total = [], 0.0
                for level, parameter, cell in zip(levels_of_sides, parameters, cells):
                    field = _smoothed(parameter, smoothing) * cell
                    dense = (
                        field
                        if kind is Displacement
                        else Velocity(field).exponential().displacement
                    )
                    # where the level's grid points land in the moving image; the field is
                    # on the grid, so adding it gives what sampling it would, for free
                    points = level.base(level.grid + level.upsampled(dense))
                    if pair_terms is None:
                        total = total + level.similarity(points, similarity)
                    if symmetric:  # the map as one field on the grid: GradICON then samples
                        # one field per map, not the field and the base map after it
                        maps.append(Displacement(points - level.grid))
                    for name, weight in regularization.items():
                        if name == "diffusion":
                            total = total + weight * diffusion(field)
                        elif name == "bending_energy":
                            total = total + weight * bending_energy(field)
                if pair_terms is not None:
                    total = total + pair_terms(*maps)
                shape = tuple(math.ceil(n / 2) for n in levels_of_sides[0].fixed.shape[2:])
                if "gradicon" in regularization:
                    total = total + regularization["gradicon"] * gradicon(
                        *maps, shape, noise=1.0, generator=generator
                    )
                if "icon" in regularization:
                    total = total + regularization["icon"] * icon(
                        *maps, shape, noise=1.0, generator=generator
                    )
                return total

            losses += minimise(
                objective, parameters, steps, learning_rate, tolerance, patience, bar, decay_to
            )
            with torch.no_grad():
                fields = [_smoothed(p, smoothing) * c for p, c in zip(parameters, cells)]

    forward_field = kind(fields[0])
    forward = initial @ forward_field
    if symmetric:
        backward = initial_inverse @ kind(fields[1])
    elif kind is Velocity:
        backward = forward_field.inverse() @ initial_inverse
    else:
        backward = invert(forward_field) @ initial_inverse
    return OptimizationResult(forward, backward, losses)


class _Level(PyramidLevel):
    """One side of the registration at one pyramid level, with its base map and field grid."""

    def __init__(self, moving, fixed, moving_mask, fixed_mask, initial, factor, field_factor):
        super().__init__(moving, fixed, moving_mask, fixed_mask, factor)
        shape = self.fixed.shape[2:]
        # a map that is not affine is sampled once on the grid: one interpolation a step
        self.base = initial if isinstance(initial, Affine) else initial.as_displacement(shape)
        self.base = self.base.map_tensors(lambda t: t.detach())
        self.field_shape = level_shape(shape, field_factor)
        self.cell = torch.tensor(
            [1.0 / (n - 1) for n in self.field_shape], dtype=fixed.dtype, device=fixed.device
        ).reshape(1, -1, *[1] * len(shape))

    def upsampled(self, field):
        """A field on the field grid, linearly interpolated onto the level's grid."""
        shape = self.fixed.shape[2:]
        if tuple(field.shape[2:]) == tuple(shape):
            return field
        mode = "bilinear" if len(shape) == 2 else "trilinear"
        return F.interpolate(field, size=shape, mode=mode, align_corners=True)


def _smoothed(parameter, sigma):
    """Gaussian blur by normalised convolution: the field's border keeps its values."""
    if sigma <= 0:
        return parameter
    weight = gaussian_blur(torch.ones_like(parameter[:, :1]), sigma)
    return gaussian_blur(parameter, sigma) / weight

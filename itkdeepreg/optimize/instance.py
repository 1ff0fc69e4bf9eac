"""Instance optimization: refine a network's answer for one pair, without changing the network.

Both kinds minimise the published objective, ``similarity(moving o forward, fixed) +
similarity(fixed o backward, moving) + weight * GradICON(forward, backward)``, with GradICON on
every second point of the grid (the strided variant), over different parameters:

- ``optimize_weights``: all network weights, with Adam, as published (learning rate 2e-5,
  50 steps), on a copy of the model;
- ``optimize_fields``: the network's maps stay fixed, and residual fields on the fixed grid
  (displacement or velocity) are optimised on top of them. No network runs in the loop, so
  this is the path that fits a CPU.

Both return an :class:`~itkdeepreg.optimize.OptimizationResult`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..losses import lncc, pair_objective, pair_similarity
from ..models import both_directions, register_pair
from ..transforms import Transform
from .deformable import register_deformable
from .loop import (
    OptimizationResult,
    check_images,
    check_mask,
    minimise,
    progress_bar,
    seeded_generator,
)

REGULARIZER_WEIGHT = 1.5  # uniGradICON's lambda


def optimize_weights(
    model: nn.Module,
    moving: torch.Tensor,
    fixed: torch.Tensor,
    iterations: int = 50,
    learning_rate: float = 2e-5,
    similarity=lncc,
    weight: float = REGULARIZER_WEIGHT,
    tolerance: float | None = None,
    patience: int = 5,
    progress: bool = True,
    **terms,
) -> OptimizationResult:
    """Adam on all the weights of a copy of ``model`` (in eval mode, as published).

    The given model is never changed, so a second call gives the same result. ``terms``:
    the published masks, intensity conservation and Dice term
    (:func:`~itkdeepreg.losses.pair_similarity`), on the images' grid.
    """
    check_images(moving, fixed)
    network = copy.deepcopy(model).eval()
    network.requires_grad_(True)
    parameter = next(network.parameters())
    moving, fixed = (x.to(parameter.device, parameter.dtype) for x in (moving, fixed))
    generator = seeded_generator(fixed)

    def objective():
        forward, backward = both_directions(network, moving, fixed)
        return pair_objective(
            forward, backward, moving, fixed, similarity, weight=weight, generator=generator,
            **terms,
        )["loss"]  # fmt: skip

    with progress_bar(iterations, "instance optimization (weights)", progress) as bar:
        losses = minimise(
            objective,
            list(network.parameters()),
            iterations,
            learning_rate,
            tolerance,
            patience,
            bar,
        )
    forward, backward = register_pair(network, moving, fixed, inverse=True)
    return OptimizationResult(forward, backward, losses)


def optimize_fields(
    forward: Transform,
    backward: Transform,
    moving: torch.Tensor,
    fixed: torch.Tensor,
    iterations: int = 50,
    learning_rate: float = 0.1,
    similarity=lncc,
    weight: float = REGULARIZER_WEIGHT,
    parameterization: str = "displacement",
    field_factor: float = 4,
    moving_mask=None,
    fixed_mask=None,
    tolerance: float | None = None,
    patience: int = 5,
    progress: bool = True,
    **terms,
) -> OptimizationResult:
    """Residual fields composed after the network's maps, optimised with Adam.

    ``forward`` and ``backward`` are the network's maps (``register_pair(..., inverse=True)``).
    The result is ``forward @ residual`` and ``backward @ residual_backward``: each residual
    acts first, on its fixed grid, as the last step of a multi-step network does. The
    residuals are ``Displacement`` or ``Velocity`` fields (``parameterization``) starting at
    zero, on the images' grids made ``field_factor`` times coarser; ``learning_rate`` is a step
    in voxels of that grid. A field with a free vector at every voxel turns noisy under Adam's
    steps and GradICON then fights it; on 2D test pairs the quarter grid reached a 25 times
    lower MSE. This is :func:`~itkdeepreg.optimize.register_deformable` at one level, symmetric,
    with the network's maps as the initial ones. Masks (on the images' grids) restrict the
    similarities as published: the fixed mask the forward one, the moving mask the backward
    one; ``terms`` add the other published terms (:func:`~itkdeepreg.losses.pair_similarity`).
    """
    pair_terms = None
    terms = {"fixed_mask": fixed_mask, "moving_mask": moving_mask, **terms}
    if any(_given(value) for value in terms.values()):
        masks = {
            name: check_mask(terms[name], image, name.removesuffix("_mask"))
            for name, image in (("fixed_mask", fixed), ("moving_mask", moving))
        }

        def pair_terms(forward_map, backward_map):
            return pair_similarity(
                forward_map, backward_map, moving, fixed, similarity, **{**terms, **masks}
            )

    return register_deformable(
        moving,
        fixed,
        initial=forward,
        initial_inverse=backward,
        parameterization=parameterization,
        symmetric=True,
        similarity=similarity,
        regularization={"gradicon": weight},
        levels=(1,),
        iterations=(iterations,),
        learning_rate=learning_rate,
        decay_to=1.0,
        field_factor=field_factor,
        smoothing=0,
        tolerance=tolerance,
        patience=patience,
        progress=progress,
        description="instance optimization (fields)",
        pair_terms=pair_terms,
    )


def _given(value) -> bool:
    """Whether a term is asked for: a tensor, or a weight or flag that is not 0 or False."""
    return value is not None and (isinstance(value, torch.Tensor) or bool(value))

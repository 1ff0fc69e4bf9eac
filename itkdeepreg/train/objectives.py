"""What a model is trained to minimise: a similarity of both warped images and a regularizer.

An :class:`Objective` runs the model on a batch of pairs in both directions at once (one
batch of 2B, as published) and scores the two maps with
:func:`~itkdeepreg.losses.pair_objective`. A :class:`Schedule` changes the objective at
given steps: CARL trains under diffusion first and GradICON after.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..losses import REGULARIZERS, named_similarity, pair_objective
from ..models import both_directions


@dataclass(frozen=True)
class Objective:
    """``similarity`` (a name of :data:`~itkdeepreg.losses.SIMILARITIES`) of both directions
    plus ``weight`` times ``regularizer`` (``"gradicon"``, ``"icon"``, ``"diffusion"``,
    ``"velocity_diffusion"``). The defaults are uniGradICON's: LNCC and GradICON 1.5."""

    similarity: str = "lncc"
    regularizer: str = "gradicon"
    weight: float = 1.5

    def __post_init__(self):
        named_similarity(self.similarity)  # an unknown name fails here, not at step one
        if self.regularizer not in REGULARIZERS:
            raise ValueError(
                f"unknown regularizer {self.regularizer!r}; known: {', '.join(REGULARIZERS)}"
            )

    def __call__(self, model: nn.Module, moving, fixed, generator=None) -> dict:
        """``{"loss", "similarity", "regularization"}`` of ``model`` on ``[B, C, *shape]``."""
        forward, backward = both_directions(model, moving, fixed)
        return pair_objective(
            forward,
            backward,
            moving,
            fixed,
            named_similarity(self.similarity),
            self.regularizer,
            self.weight,
            generator,
        )

    def at(self, step: int) -> Objective:
        return self


@dataclass(frozen=True)
class Schedule:
    """Objectives in phases: ``((steps, objective), ..., objective)``. Each phase runs for its
    number of steps; the last objective runs to the end."""

    phases: tuple

    def __post_init__(self):
        *timed, last = self.phases
        if not isinstance(last, Objective) or not all(
            isinstance(o, Objective) and int(n) > 0 for n, o in timed
        ):
            raise ValueError("a schedule is ((steps, Objective), ..., Objective), steps > 0")

    def at(self, step: int) -> Objective:
        for steps, objective in self.phases[:-1]:
            if step < steps:
                return objective
            step -= steps
        return self.phases[-1]

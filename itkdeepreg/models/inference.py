"""Running a registration model on a pair of preprocessed tensors."""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def register_pair(
    model: nn.Module, moving: torch.Tensor, fixed: torch.Tensor, inverse: bool = False
):
    """The model's transform from ``fixed``'s unit cube to ``moving``'s; with ``inverse``, the pair
    ``(forward, inverse)``.

    The images are ``[1, C, *shape]`` on the model's grid, already preprocessed. The model runs
    in eval mode (BatchNorm keeps its statistics; its own mode is restored afterwards) under
    ``torch.inference_mode``, on the device and in the dtype of its parameters. The two
    directions run one after the other: in eval mode a batch of two gives the same maps, and
    would hold twice the activations at once (for uniGradICON at 175^3, gigabytes). The
    transforms hold ordinary tensors, so they can enter autograd later (instance
    optimization, say).
    """
    if moving.shape != fixed.shape or moving.dim() not in (4, 5) or moving.shape[0] != 1:
        raise ValueError(
            "moving and fixed must be single images [1, C, *shape] of one shape on the model's "
            f"grid, got {tuple(moving.shape)} and {tuple(fixed.shape)}"
        )
    parameter = next(model.parameters())
    moving, fixed = (x.to(parameter.device, parameter.dtype) for x in (moving, fixed))
    with evaluating(model), torch.inference_mode():
        transform = model(moving, fixed)
        if inverse:
            transform = (transform, model(fixed, moving))
    # outside inference mode: ordinary tensors
    if inverse:
        return tuple(t.map_tensors(torch.clone) for t in transform)
    return transform.map_tensors(torch.clone)


@contextlib.contextmanager
def evaluating(model: nn.Module):
    """``model`` in eval mode (BatchNorm keeps its statistics); afterwards each submodule's
    own mode, as it was."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.training = training


def both_directions(model: nn.Module, moving: torch.Tensor, fixed: torch.Tensor):
    """``(forward, backward)``: the model's maps fixed -> moving and moving -> fixed of each
    pair ``[B, C, *shape]``, computed as one batch of 2B (as published, and one pass)."""
    batch = moving.shape[0]
    both = model(torch.cat([moving, fixed]), torch.cat([fixed, moving]))
    return both.select(slice(batch)), both.select(slice(batch, None))

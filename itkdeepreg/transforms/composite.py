"""Composition of transform values."""

from __future__ import annotations

import torch

from .affine import Affine
from .base import Transform


class Composite(Transform):
    """``transforms[0] o transforms[1] o ... o transforms[-1]``: the last one is applied first.

    Nested composites are flattened and neighbouring affine maps are multiplied into one, so
    the list is as short as the maps allow.
    """

    _fields = ("transforms",)

    def __init__(self, transforms):
        flat = []
        for transform in transforms:
            if not isinstance(transform, Transform):
                raise TypeError(f"cannot compose a {type(transform).__name__}")
            parts = transform.transforms if isinstance(transform, Composite) else [transform]
            for part in parts:
                if flat and part.dimension != flat[-1].dimension:
                    raise ValueError(
                        f"cannot compose a {flat[-1].dimension}D and a {part.dimension}D transform"
                    )
                if flat and isinstance(part, Affine) and isinstance(flat[-1], Affine):
                    flat[-1] = _multiply(flat[-1], part)
                else:
                    flat.append(part)
        if not flat:
            raise ValueError("a composite needs at least one transform")
        self.transforms = flat

    @property
    def dimension(self) -> int:
        return self.transforms[0].dimension

    def __call__(self, coords):
        for transform in reversed(self.transforms):
            coords = transform(coords)
        return coords

    def inverse(self) -> Transform:
        return compose(*[t.inverse() for t in reversed(self.transforms)])


def compose(*transforms: Transform) -> Transform:
    """``transforms[0] o ... o transforms[-1]``, as one transform when the maps allow."""
    composite = Composite(transforms)
    return composite.transforms[0] if len(composite.transforms) == 1 else composite


def _multiply(outer: Affine, inner: Affine) -> Affine:
    dtype = torch.promote_types(outer.matrix.dtype, inner.matrix.dtype)
    # geometry matrices live on the CPU; a product of matrices on two devices is made there
    # (an Affine moves to the coordinates' device when applied)
    same = outer.matrix.device == inner.matrix.device
    device = outer.matrix.device if same else torch.device("cpu")
    return Affine(outer.matrix.to(device, dtype) @ inner.matrix.to(device, dtype))

"""The transform value protocol: evaluate, compose, invert, move, warp, save and load."""

from __future__ import annotations

import os

import torch

from ..files import write_atomically
from ..sampling import identity_grid, sample

_TYPES: dict = {}
_FORMAT = "itkdeepreg.transform/1"


class Transform:
    """A map from one unit cube to another, as a value (idea 2 of docs/architecture.md).

    ``transform(coords)`` maps coordinates ``[B, D, *spatial]`` (see :mod:`itkdeepreg.sampling`)
    to coordinates of the same shape. ``a @ b`` is the composition ``a(b(x))``.
    Subclasses list in ``_fields`` the constructor arguments that make up their value.
    """

    _fields: tuple = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _TYPES[cls.__name__] = cls

    @property
    def dimension(self) -> int:
        raise NotImplementedError

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def inverse(self) -> Transform:
        raise NotImplementedError(
            f"{type(self).__name__} has no exact inverse; affine and velocity-field transforms "
            "(and compositions of them) do"
        )

    def __matmul__(self, other: Transform) -> Transform:
        from .composite import compose

        return compose(self, other)

    def warp(self, image: torch.Tensor, shape=None, mode="linear", padding="zeros"):
        """``image [B, C, *shape]`` (on the range cube) sampled at this map of a grid of ``shape``.

        ``shape`` defaults to the image's own. ``padding="zeros"`` gives 0 outside the image;
        within half a voxel of the edge it blends towards 0 where ITK repeats the edge, which
        ``padding="itk"`` does as ``itk.ResampleImageFilter`` does. Integer images (label
        maps, with ``mode="nearest"``) are sampled as floating point.
        """
        if image.dim() != self.dimension + 2:
            raise ValueError(
                f"a {self.dimension}D transform warps images [B, C, *shape] with {self.dimension} "
                f"spatial axes, got a tensor of shape {tuple(image.shape)}"
            )
        shape = image.shape[2:] if shape is None else tuple(shape)
        dtype = image.dtype if image.is_floating_point() else torch.float32
        grid = identity_grid(shape, dtype=dtype, device=image.device)
        return sample(image, self(grid), mode=mode, padding=padding)

    def as_displacement(self, shape) -> Transform:
        """This map sampled as a displacement field on a grid of ``shape``."""
        from .field import Displacement

        grid = identity_grid(shape, dtype=self._dtype(), device=self._device())
        return Displacement(self(grid) - grid)

    def to(self, device=None, dtype=None) -> Transform:
        """A copy on another device and/or with another floating-point dtype."""

        def move(tensor):
            floating = tensor.is_floating_point()
            return tensor.to(device=device, dtype=dtype if floating else None)

        return self.map_tensors(move)

    def select(self, index: int | slice) -> "Transform":
        """Batch item ``index`` (or the items of a slice) of this transform; tensors with a
        batch of one are shared."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return self.map_tensors(lambda t: t[index] if t.shape[0] > 1 else t)

    def map_tensors(self, function) -> "Transform":
        """The same kind of transform with ``function`` applied to each of its tensors."""
        return from_dict(_map_tensors(self.to_dict(), function))

    def to_dict(self) -> dict:
        """A tree of plain values and tensors that :func:`from_dict` turns back into this."""
        return {"type": type(self).__name__, **{k: _encode(getattr(self, k)) for k in self._fields}}

    def save(self, path) -> None:
        """Write the transform to ``path`` (torch's zip format, tensors only, no pickled code)."""
        payload = {"format": _FORMAT, "transform": self.to_dict()}
        payload = _map_tensors(payload, lambda t: t.detach().cpu())
        write_atomically(path, lambda temporary: torch.save(payload, temporary))

    def _tensors(self):
        found = []
        _map_tensors(self.to_dict(), lambda t: found.append(t) or t)
        return found

    def _dtype(self):
        return next((t.dtype for t in self._tensors() if t.is_floating_point()), torch.float32)

    def _device(self):
        return next((t.device for t in self._tensors()), None)


def from_dict(tree: dict) -> Transform:
    """The transform described by ``tree`` (the inverse of :meth:`Transform.to_dict`)."""
    if not isinstance(tree, dict) or tree.get("type") not in _TYPES:
        raise ValueError(f"not a transform description: {str(tree)[:200]}")
    fields = {k: _decode(v) for k, v in tree.items() if k != "type"}
    return _TYPES[tree["type"]](**fields)


def load_transform(path) -> Transform:
    """Read a transform written by :meth:`Transform.save`.

    Loading never executes pickled code (``torch.load(weights_only=True)``).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no transform file at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable itkdeepreg transform file: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ValueError(f"{path} is not an itkdeepreg transform file (format {_FORMAT})")
    try:
        return from_dict(payload["transform"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path} holds a malformed transform: {error}") from None


def _encode(value):
    if isinstance(value, Transform):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value):
    if isinstance(value, dict):
        return from_dict(value)
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _map_tensors(tree, function):
    if isinstance(tree, torch.Tensor):
        return function(tree)
    if isinstance(tree, dict):
        return {k: _map_tensors(v, function) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_map_tensors(v, function) for v in tree]
    return tree

"""Sampling tensors at unit-cube coordinates (idea 1 of docs/architecture.md).

Images are tensors ``[B, C, *shape]``; coordinates are tensors ``[B, D, *spatial]`` whose
channel ``i`` is a position along tensor axis ``i`` in ``[0, 1]`` (voxel ``k`` of ``N`` at
``k / (N - 1)``). ``spatial`` is any shape: a grid, or ``(P,)`` for a list of points.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_MODES = {"linear": "bilinear", "nearest": "nearest"}
_PADDINGS = ("border", "zeros", "itk")


def identity_grid(shape, dtype=torch.float32, device=None) -> torch.Tensor:
    """Unit-cube coordinates of every voxel of a grid, ``[1, D, *shape]``."""
    axes = [torch.linspace(0, 1, n, dtype=dtype, device=device) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]


def sample(volume: torch.Tensor, coords: torch.Tensor, mode="linear", padding="border"):
    """Values of ``volume [B, C, *shape]`` at ``coords [B, D, *spatial]``: ``[B, C, *spatial]``.

    ``mode`` is ``"linear"`` or ``"nearest"``; ``padding`` is ``"border"`` (repeat the edge),
    ``"zeros"``, or ``"itk"``: the edge repeated up to half a voxel beyond it and 0 further, as
    ``itk.ResampleImageFilter`` reads an image. A batch of one on either side is broadcast to
    the other's batch. The result is on the volume's device, in the wider of the two dtypes.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {sorted(_MODES)}, got {mode!r}")
    if padding not in _PADDINGS:
        raise ValueError(f"padding must be one of {_PADDINGS}, got {padding!r}")
    dimension = volume.dim() - 2
    if coords.shape[1] != dimension:
        raise ValueError(f"coordinates have {coords.shape[1]} channels for a {dimension}D volume")
    batch = max(volume.shape[0], coords.shape[0])
    dtype = torch.promote_types(volume.dtype, coords.dtype)
    dtype = dtype if dtype.is_floating_point else torch.float32
    volume = volume.to(dtype).expand(batch, *volume.shape[1:])
    coords = coords.to(device=volume.device, dtype=dtype).expand(batch, *coords.shape[1:])
    grid_padding = "border" if padding == "itk" else padding
    values = grid_sample(volume, to_grid(coords), mode=_MODES[mode], padding_mode=grid_padding)
    values = values.reshape(batch, volume.shape[1], *coords.shape[2:])
    if padding == "itk":
        values = values * within_half_voxel(coords, volume.shape[2:]).to(dtype)
    return values


def within_half_voxel(coords: torch.Tensor, shape) -> torch.Tensor:
    """Where ``coords [B, D, *spatial]`` lie within half a voxel of a grid of ``shape`` (or on
    it): ``[B, 1, *spatial]`` booleans. ITK reads images and displacement fields there, and
    nothing beyond."""
    half_voxel = torch.tensor(
        [0.5 / (n - 1) for n in shape], dtype=coords.dtype, device=coords.device
    ).reshape(1, -1, *[1] * (coords.dim() - 2))
    return ((coords >= -half_voxel) & (coords <= 1 + half_voxel)).all(1, keepdim=True)


def to_grid(coords: torch.Tensor) -> torch.Tensor:
    """Unit-cube coordinates ``[B, D, *spatial]`` in ``grid_sample``'s layout: ``[-1, 1]``,
    the last axis in (x, y, z) order; a list of points ``[B, D, P]`` becomes a P x 1 (x 1)
    grid."""
    dimension = coords.shape[1]
    if coords.dim() - 2 != dimension:
        coords = coords.reshape(coords.shape[0], dimension, -1, *[1] * (dimension - 1))
    return (coords.flip(1).movedim(1, -1) * 2).sub_(1)


def from_grid(grid: torch.Tensor, spatial) -> torch.Tensor:
    """``to_grid`` undone: unit-cube coordinates ``[B, D, *spatial]``."""
    coords = ((grid.flip(-1) + 1) / 2).movedim(-1, 1)
    return coords.reshape(grid.shape[0], grid.shape[-1], *spatial)


def to_grid_vectors(field: torch.Tensor) -> torch.Tensor:
    """A field of unit-cube vectors ``[B, D, *shape]`` in ``grid_sample``'s units, channels
    in (x, y, z) order: what moves a point of ``to_grid`` as the field moves the point."""
    return field.flip(1) * 2


_POINTS_PER_THREAD = 1 << 16  # below this, splitting costs more than it gains
_INTERPOLATION = {"bilinear": 0, "nearest": 1}  # aten's codes
_PADDING = {"zeros": 0, "border": 1, "reflection": 2}


def grid_sample(
    volume: torch.Tensor, grid: torch.Tensor, mode="bilinear", padding_mode="zeros"
) -> torch.Tensor:
    """``F.grid_sample(volume, grid, mode, padding_mode, align_corners=True)``, on all CPU threads.

    PyTorch's 3D CPU kernel shares out the batch, not the points, among threads, so a batch
    of one, a registration's, runs on one core. Here its points are cut into as many pieces
    as there are threads and sampled as a batch of pieces of the same volume: the same
    values, 1.3 to 1.7 times faster on two cores (``benchmarks/grid_sample.py``). The price:
    a volume that needs a gradient gets a gradient buffer of its size for each piece. The 2D
    kernel is vectorised: at the sizes of 2D images, splitting it costs more than it gains.
    """
    points = grid[0, ..., 0].numel()
    pieces = min(torch.get_num_threads(), points // _POINTS_PER_THREAD)
    split = volume.device.type == "cpu" and volume.dim() == 5 and grid.shape[0] == 1
    if not split or pieces < 2:
        return F.grid_sample(volume, grid, mode=mode, padding_mode=padding_mode, align_corners=True)
    codes = (_INTERPOLATION[mode], _PADDING[padding_mode])
    values = _SplitGridSample.apply(volume, grid, codes, pieces)
    return values.reshape(1, volume.shape[1], *grid.shape[1:-1])


class _SplitGridSample(torch.autograd.Function):
    """Sampling at ``pieces`` windows of the points; each point's value comes from one
    window, so the other windows' gradients there are zero and pasting them is exact."""

    @staticmethod
    def forward(ctx, volume, grid, codes, pieces):
        windows, step = _windows(grid, pieces)
        volumes = volume.expand(pieces, *volume.shape[1:])
        values = torch.ops.aten.grid_sampler_3d(volumes, windows, *codes, True)
        ctx.save_for_backward(volume, grid)
        ctx.codes, ctx.pieces = codes, pieces
        return _paste(values.flatten(2), step, 1)

    @staticmethod
    def backward(ctx, gradient):
        volume, grid = ctx.saved_tensors
        windows, step = _windows(grid, ctx.pieces)
        # each window's share of the incoming gradient, zero where another window answers
        gradient = gradient.reshape(volume.shape[1], -1)
        shares = gradient.unfold(1, windows.shape[3], step).transpose(0, 1).contiguous()
        shares[:-1, :, step:] = 0
        volume_gradient, window_gradient = torch.ops.aten.grid_sampler_3d_backward(
            shares.reshape(ctx.pieces, volume.shape[1], *windows.shape[1:-1]),
            volume.expand(ctx.pieces, *volume.shape[1:]),
            windows,
            *ctx.codes,
            True,
            list(ctx.needs_input_grad[:2]),
        )
        if ctx.needs_input_grad[0]:
            volume_gradient = volume_gradient.sum(0, keepdim=True)
        if ctx.needs_input_grad[1]:
            window_gradient = _paste(window_gradient.flatten(1, 3), step, 0).reshape(grid.shape)
        return volume_gradient, window_gradient, None, None


def _windows(grid, pieces):
    """The points of ``grid [1, *spatial, 3]`` in ``pieces`` windows ``[pieces, 1, 1, size,
    3]`` of ``step`` apart, a view: the last window ends at the last point, overlapping the one
    before by fewer than ``pieces`` points."""
    points = grid[0, ..., 0].numel()
    step = points // pieces
    size = points - (pieces - 1) * step
    windows = grid.reshape(points, 3).unfold(0, size, step).transpose(1, 2)
    return windows.reshape(pieces, 1, 1, size, 3), step


def _paste(windows, step, axis):
    """Windows ``[pieces, ...]`` back into one tensor along ``axis`` (of a window): the first
    ``step`` of each window but the last, then all of the last."""
    parts = [window.narrow(axis, 0, step) for window in windows[:-1]]
    return torch.cat([*parts, windows[-1]], axis)


def resample(image: torch.Tensor, shape, mode="linear") -> torch.Tensor:
    """``image [B, C, *shape]`` resampled onto a grid of another shape over the same unit cube.

    This is how an image goes onto a model grid (say 175^3) and back; the physical geometry
    of the new grid is ``ImageGeometry.resized(shape)``.
    """
    dtype = image.dtype if image.is_floating_point() else torch.float32
    grid = identity_grid(shape, dtype=dtype, device=image.device)
    return sample(image, grid, mode=mode, padding="border")

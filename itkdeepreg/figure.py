"""A registration figure: before, after, deformation and Jacobian of one pair, as a PNG.

Torch, numpy and Pillow only (no ITK). Every panel is computed on the fixed image's grid, in
the unit-cube convention of :mod:`itkdeepreg.sampling`, and shown with the fixed image's
voxel spacing so that slices have their physical aspect ratio.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .files import write_atomically
from .losses.metrics import jacobian_determinant
from .sampling import identity_grid, sample
from .transforms import Affine, Composite, Transform, Velocity, compose

__all__ = ["FOLD_COLOUR", "JACOBIAN_LIMIT", "checkerboard", "write_registration_figure"]

COLUMNS = ("before", "after", "deformation", "Jacobian")
FOLD_COLOUR = (0, 200, 0)  # Jacobian determinant <= 0: not a colour of the diverging map
JACOBIAN_LIMIT = 4.0  # the colour scale runs from 1/4 (dark blue) through 1 to 4 (dark red)
GRID_COLOUR = (255, 190, 0)
UNDEFINED_COLOUR = (128, 128, 128)  # a Jacobian determinant that is not finite

# ColorBrewer RdBu (11 classes), from contraction (blue) through 1 (near white) to expansion
_DIVERGING = np.array(
    [
        (5, 48, 97),
        (33, 102, 172),
        (67, 147, 195),
        (146, 197, 222),
        (209, 229, 240),
        (247, 247, 247),
        (253, 219, 199),
        (244, 165, 130),
        (214, 96, 77),
        (178, 24, 43),
        (103, 0, 31),
    ],
    dtype=np.float64,
)

# 3D views: (name, tensor axis sliced, flip rows). Tensor axes are (z, y, x) for arrays read
# from ITK, whose index axes run towards L, P and S for an image with identity direction (LPS).
# Axial (y, x) needs no flip: anterior at the top, the patient's left on the viewer's right
# (the radiological convention). Coronal (z, x) and sagittal (z, y) flip their rows so that
# superior is at the top; sagittal then shows anterior on the left.
_VIEWS_3D = (("axial", 0, False), ("coronal", 1, True), ("sagittal", 2, True))

_PAD = 8
_FRAME_COLOUR = (170, 170, 170)
_MIN_PANEL = 200  # pixels: the least height of a panel
_MAX_PANEL = 512  # pixels: the largest extent of a panel, unless the least height needs more
_GRID_CELLS = 12  # cells of the deformation grid along a slice's longer physical side


def checkerboard(a, b, squares=8) -> np.ndarray:
    """``a`` and ``b`` in alternating square tiles, ``a`` in the top-left one.

    ``a`` and ``b`` are arrays of the same shape whose first two axes are rows and columns
    (trailing axes, such as RGB channels, follow). ``squares`` tiles span the longer of the
    two axes; tiles are square in array elements, so the shorter axis holds fewer.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(
            f"a checkerboard takes two arrays of the same shape with at least two axes, "
            f"got {a.shape} and {b.shape}"
        )
    if int(squares) != squares or squares < 1:
        raise ValueError(f"squares must be a positive integer, got {squares!r}")
    rows, columns = a.shape[:2]
    side = max(rows, columns) / int(squares)
    row_tiles = np.floor(np.arange(rows) / side).astype(int)
    column_tiles = np.floor(np.arange(columns) / side).astype(int)
    first = (row_tiles[:, None] + column_tiles[None, :]) % 2 == 0
    first = first.reshape(first.shape + (1,) * (a.ndim - 2))
    return np.where(first, a, b)


def write_registration_figure(
    path, fixed, moving, forward, moving_on_fixed=None, title=None, spacing=None
) -> None:
    """Write a PNG that shows how well ``forward`` registers ``moving`` to ``fixed``.

    ``fixed`` and ``moving`` are tensors ``[1, 1, *shape]`` (2D or 3D, shapes may differ);
    ``forward`` maps the fixed image's unit cube to the moving image's (a registration's
    answer). ``moving_on_fixed`` is the moving image on the fixed grid before registration
    (default: ``resample(moving, fixed.shape[2:])``, the identity of the unit cubes).
    ``spacing`` is the fixed image's voxel spacing per tensor axis (default all 1), used for
    the aspect ratio of the panels. ``title`` is a line of text above the figure.

    One row per view (2D: the image; 3D: the middle axial, coronal and sagittal slices of the
    fixed image), four columns: "before" (checkerboard of fixed and ``moving_on_fixed``),
    "after" (checkerboard of fixed and ``forward.warp(moving, fixed.shape[2:])``),
    "deformation" (the in-plane components of the map at the slice's points, drawn as the
    lines of a regular grid of the moving cube pulled back onto the fixed image, faded),
    "Jacobian" (its determinant on a log colour scale centred at 1, folds in green).

    The file is written through :func:`itkdeepreg.files.write_atomically`: a path that cannot
    be written fails before any work, and a failure leaves nothing.
    """
    arguments = _check(fixed, moving, forward, moving_on_fixed, spacing)

    def write(temporary):
        image, _ = _render(*arguments, title=title)
        image.save(temporary, format="PNG")

    write_atomically(path, write, (".png",))


def _check(fixed, moving, forward, moving_on_fixed, spacing):
    for name, image in (("fixed", fixed), ("moving", moving)):
        if not isinstance(image, torch.Tensor) or image.dim() not in (4, 5):
            raise ValueError(f"{name} must be a tensor [1, 1, *shape] with 2 or 3 spatial axes")
        if image.shape[:2] != (1, 1):
            raise ValueError(
                f"{name} must be one single-channel image [1, 1, *shape], got {tuple(image.shape)}"
            )
    dimension = fixed.dim() - 2
    if moving.dim() != fixed.dim():
        raise ValueError(f"fixed is {dimension}D and moving {moving.dim() - 2}D")
    if min(fixed.shape[2:]) < 2:
        raise ValueError(f"every axis of fixed needs two voxels, got {tuple(fixed.shape)}")
    if not isinstance(forward, Transform):
        raise TypeError(f"forward must be an itkdeepreg transform, got {type(forward).__name__}")
    if forward.dimension != dimension:
        raise ValueError(f"a {forward.dimension}D transform for {dimension}D images")
    if moving_on_fixed is not None and (
        not isinstance(moving_on_fixed, torch.Tensor) or moving_on_fixed.shape != fixed.shape
    ):
        shape = getattr(moving_on_fixed, "shape", None)
        raise ValueError(
            f"moving_on_fixed must be a tensor of fixed's shape {tuple(fixed.shape)}, got {shape}"
        )
    spacing = (1.0,) * dimension if spacing is None else tuple(float(s) for s in spacing)
    if len(spacing) != dimension or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be {dimension} positive numbers, got {spacing}")
    return fixed, moving, forward, moving_on_fixed, spacing


def _window(image):
    """The 1st and 99th percentiles of an image's finite values."""
    values = image.detach().reshape(-1).cpu().double().numpy()
    values = values[:: max(1, values.size // 2_000_000)]  # enough for percentiles
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(values, [1, 99])
    return float(low), float(high)


def _grey(values, window):
    low, high = window
    if high > low:
        values = (values - low) / (high - low)
    else:
        values = np.full_like(values, 0.5)
    return np.clip(np.nan_to_num(values, nan=0.0), 0, 1)


def _jacobian_rgb(det):
    """Colours of Jacobian determinants: log scale centred at 1, folds in FOLD_COLOUR."""
    det = np.asarray(det, dtype=np.float64)
    positive = np.where(det > 0, det, 1.0)
    position = np.log(np.where(np.isfinite(positive), positive, 1.0)) / math.log(JACOBIAN_LIMIT)
    position = (np.clip(position, -1, 1) + 1) / 2 * (len(_DIVERGING) - 1)
    nodes = np.arange(len(_DIVERGING))
    rgb = np.stack([np.interp(position, nodes, _DIVERGING[:, k]) for k in range(3)], -1)
    rgb = np.rint(rgb).astype(np.uint8)
    rgb[det <= 0] = FOLD_COLOUR
    rgb[~np.isfinite(det)] = UNDEFINED_COLOUR
    return rgb


def _grid_alpha(coords, cells):
    """Coverage of the lines ``coords[i] = k / cells[i]``, about two pixels wide."""
    alpha = np.zeros(coords.shape[1:])
    for values, count in zip(coords, cells):
        values = np.nan_to_num(values * count, nan=0.5, posinf=0.5, neginf=0.5)
        rate = np.hypot(*np.gradient(values))  # per pixel
        distance = np.abs(values - np.round(values)) / np.maximum(rate, 1e-12)
        alpha = np.maximum(alpha, np.clip(1.25 - distance, 0, 1))
    return alpha


def _slice_coords(plane, axis, position, dimension, dtype, device):
    """Unit-cube coordinates ``[1, D, *plane]`` of a plane, ``position`` along ``axis``."""
    grid = identity_grid(plane, dtype=dtype, device=device)
    if dimension == 2:
        return grid
    constant = torch.full_like(grid[:, :1], position)
    return torch.cat([grid[:, :axis], constant, grid[:, axis:]], 1)


def _map(forward, coords):
    """``forward`` at coordinates ``[1, D, *plane]``, as a grid of ``D`` spatial axes."""
    dimension = coords.shape[1]
    extra = dimension - (coords.dim() - 2)
    mapped = forward(coords.reshape(*coords.shape, *[1] * extra))
    if mapped.shape[0] != 1:
        raise ValueError(f"a figure shows one map; forward is a batch of {mapped.shape[0]}")
    return mapped.reshape(1, dimension, *coords.shape[2:])


def _jacobian_slice(forward, shape, axis, index):
    """``jacobian_determinant(forward, shape)`` on one slice, from a slab of three slices."""
    if len(shape) == 2:
        det = jacobian_determinant(forward, shape)
    else:
        n = shape[axis]
        low, high = max(index - 1, 0), min(index + 1, n - 1)
        scale = (high - low) / (n - 1)
        matrix = torch.eye(4, dtype=torch.float64)  # slab cube -> fixed cube
        matrix[axis, axis] = scale
        matrix[axis, 3] = low / (n - 1)
        slab = list(shape)
        slab[axis] = high - low + 1
        # the same finite differences as on the whole grid, in slab units: det is scaled
        det = jacobian_determinant(forward @ Affine(matrix), slab) / scale
        det = det.select(axis + 1, index - low)
    if det.shape[0] != 1:
        raise ValueError(f"a figure shows one map; forward is a batch of {det.shape[0]}")
    return det[0]


def _views(shape):
    """(name, sliced axis or None, index, in-plane axes, flip) for each row."""
    if len(shape) == 2:
        return [(None, None, None, (0, 1), False)]
    rows = []
    for name, axis, flip in _VIEWS_3D:
        plane = tuple(a for a in range(3) if a != axis)
        rows.append((name, axis, shape[axis] // 2, plane, flip))
    return rows


def _panel_sizes(shape, spacing, views):
    """Pixels (rows, columns) of each row's panels, at one scale (mm per pixel) for all."""
    extents = [
        ((shape[p[0]] - 1) * spacing[p[0]], (shape[p[1]] - 1) * spacing[p[1]])
        for _, _, _, p, _ in views
    ]
    scale = min(spacing)  # a pixel per voxel of the finest spacing
    scale = max(scale, max(max(e) for e in extents) / (_MAX_PANEL - 1))
    scale = min(scale, min(e[0] for e in extents) / (_MIN_PANEL - 1))
    return [tuple(max(2, round(e / scale) + 1) for e in extent) for extent in extents]


def _font(size=12):
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):  # no FreeType: the bitmap font
        return ImageFont.load_default()


def _text_size(draw, text, font):
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


@torch.no_grad()
def _panels(fixed, moving, forward, moving_on_fixed, spacing):
    """The RGB panels of each row, ``[(label, [4 arrays], caption)]``."""
    shape = tuple(fixed.shape[2:])
    forward = _exponentiated(forward)
    windows = _window(fixed), _window(moving)
    views = _views(shape)
    sizes = _panel_sizes(shape, spacing, views)
    return [
        _row(fixed, moving, forward, moving_on_fixed, spacing, windows, view, size)
        for view, size in zip(views, sizes)
    ]


def _row(fixed, moving, forward, moving_on_fixed, spacing, windows, view, size):
    name, axis, index, plane_axes, flip = view
    shape = tuple(fixed.shape[2:])
    dimension, dtype, device = len(shape), torch.float64, fixed.device
    plane = tuple(shape[a] for a in plane_axes)
    position = None if axis is None else index / (shape[axis] - 1)
    voxels = _slice_coords(plane, axis, position, dimension, dtype, device)
    fixed_slice = _on_slice(fixed, axis, index)
    if moving_on_fixed is None:  # resample(moving, shape), on this slice
        before = sample(moving, voxels, padding="border")[0, 0]
    else:
        before = _on_slice(moving_on_fixed, axis, index)
    after = sample(moving, _map(forward, voxels), padding="zeros")[0, 0]  # forward.warp
    det = _jacobian_slice(forward, shape, axis, index)

    display = identity_grid(size, dtype=dtype, device=device)
    fixed_grey = _grey(_show(fixed_slice, display), windows[0])
    before_grey = _grey(_show(before, display), windows[1])
    after_grey = _grey(_show(after, display), windows[1])
    jacobian = _jacobian_rgb(_show(det, display, mode="nearest"))

    # the deformation: the map at every pixel, so that its grid lines are sharp
    mapped = _map(forward, _slice_coords(size, axis, position, dimension, dtype, device))
    in_plane = mapped[0, list(plane_axes)].detach().cpu().double().numpy()
    extents = [(shape[a] - 1) * spacing[a] for a in plane_axes]
    cells = [max(1, round(_GRID_CELLS * e / max(extents))) for e in extents]
    alpha = _grid_alpha(in_plane, cells)[..., None]
    faded = 0.4 * 255 * fixed_grey[..., None]
    deformation = (1 - alpha) * faded + alpha * np.array(GRID_COLOUR, dtype=np.float64)
    deformation = np.rint(deformation).astype(np.uint8)

    fixed_rgb, before_rgb, after_rgb = (_rgb(g) for g in (fixed_grey, before_grey, after_grey))
    if flip:  # before the checkerboard, so that its first square is the top-left one
        fixed_rgb, before_rgb, after_rgb, deformation, jacobian = (
            np.ascontiguousarray(p[::-1])
            for p in (fixed_rgb, before_rgb, after_rgb, deformation, jacobian)
        )
    panels = [
        checkerboard(fixed_rgb, before_rgb),
        checkerboard(fixed_rgb, after_rgb),
        deformation,
        jacobian,
    ]
    values = det.detach().double().cpu().numpy()
    finite = values[np.isfinite(values)]
    folded = 100.0 * np.mean(values <= 0)
    if finite.size:
        caption = f"{finite.min():.3g} to {finite.max():.3g}, {folded:.1f}% folded"
    else:
        caption = "not finite"
    label = None if name is None else f"{name}\n{'zyx'[axis]} = {index}"
    return label, panels, caption


def _exponentiated(forward):
    """The same map, each velocity field integrated by scaling and squaring once, not at
    every evaluation (``Velocity.__call__`` is ``exponential()(coords)``)."""
    if isinstance(forward, Velocity) and forward.method == "scaling_and_squaring":
        return forward.exponential()
    if isinstance(forward, Composite):
        return compose(*[_exponentiated(t) for t in forward.transforms])
    return forward


def _on_slice(image, axis, index):
    image = image[0, 0] if axis is None else image[0, 0].select(axis, index)
    return image.detach().to(torch.float64)


def _show(values, display, mode="linear"):
    """A slice on the display grid (the same unit square, more points)."""
    values = values.detach().to(device=display.device, dtype=display.dtype)
    return sample(values[None, None], display, mode=mode)[0, 0].cpu().numpy()


def _rgb(grey):
    return np.repeat(np.rint(255 * grey).astype(np.uint8)[..., None], 3, -1)


def _render(fixed, moving, forward, moving_on_fixed, spacing, title=None):
    """The figure as a PIL image, and each panel's box ``(left, top, right, bottom)`` by
    ``(row, column name)``."""
    rows = _panels(fixed, moving, forward, moving_on_fixed, spacing)
    font = _font()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = _text_size(measure, "Ag", font)[1] + 4
    labels = [label for label, _, _ in rows if label]
    margin = _PAD
    if labels:
        widths = [_text_size(measure, part, font)[0] for lab in labels for part in lab.split("\n")]
        margin += max(widths) + _PAD
    column_widths = [max(p[c].shape[1] for _, p, _ in rows) for c in range(4)]
    captions = [caption for _, _, caption in rows]
    column_widths[3] = max([column_widths[3]] + [_text_size(measure, c, font)[0] for c in captions])
    lefts = [margin + sum(column_widths[:c]) + _PAD * c for c in range(4)]
    width = lefts[3] + column_widths[3] + _PAD
    if title:
        width = max(width, _text_size(measure, title, font)[0] + 2 * _PAD)
    top = _PAD + (line + _PAD // 2 if title else 0)
    header_top = top
    top += line
    boxes, placements = {}, []
    for r, (label, panels, caption) in enumerate(rows):
        height = max(p.shape[0] for p in panels)
        for c, panel in enumerate(panels):
            left = lefts[c] + (column_widths[c] - panel.shape[1]) // 2
            boxes[(r, COLUMNS[c])] = (left, top, left + panel.shape[1], top + panel.shape[0])
            placements.append((panel, left, top))
        placements.append((label, _PAD, top))
        placements.append((caption, lefts[3], top + height + 2))
        top += height + line + _PAD
    bar_top = top
    bar_height = 12
    legend_height = bar_height + 2 * line + _PAD
    figure = Image.new("RGB", (width, bar_top + legend_height), (255, 255, 255))
    draw = ImageDraw.Draw(figure)
    if title:
        draw.text((_PAD, _PAD), title, fill=(0, 0, 0), font=font)
    for c, name in enumerate(COLUMNS):
        text_width = _text_size(measure, name, font)[0]
        draw.text(
            (lefts[c] + (column_widths[c] - text_width) // 2, header_top),
            name,
            fill=(0, 0, 0),
            font=font,
        )
    for item, left, y in placements:
        if isinstance(item, np.ndarray):
            figure.paste(Image.fromarray(item, "RGB"), (left, y))
            frame = [left - 1, y - 1, left + item.shape[1], y + item.shape[0]]
            draw.rectangle(frame, outline=_FRAME_COLOUR)  # just outside the panel
        elif item:
            draw.multiline_text((left, y), item, fill=(0, 0, 0), font=font, spacing=2)
    _draw_legend(figure, draw, font, lefts[3], bar_top, column_widths[3], bar_height, line)
    return figure, boxes


def _draw_legend(figure, draw, font, left, top, width, bar_height, line):
    """A colour bar of the Jacobian scale with its ticks, and the fold colour."""
    bar = _jacobian_rgb(JACOBIAN_LIMIT ** np.linspace(-1, 1, width))
    figure.paste(Image.fromarray(np.repeat(bar[None], bar_height, 0), "RGB"), (left, top))
    draw.rectangle([left, top, left + width - 1, top + bar_height - 1], outline=(0, 0, 0))
    ticks = [JACOBIAN_LIMIT**e for e in (-1, -0.5, 0, 0.5, 1)]
    for value in ticks:
        x = left + round((math.log(value) / math.log(JACOBIAN_LIMIT) + 1) / 2 * (width - 1))
        draw.line([(x, top + bar_height), (x, top + bar_height + 3)], fill=(0, 0, 0))
        text = f"{value:g}"
        text_width = _text_size(draw, text, font)[0]
        x = min(max(x - text_width // 2, left), left + width - text_width)
        draw.text((x, top + bar_height + 4), text, fill=(0, 0, 0), font=font)
    y = top + bar_height + 4 + line
    swatch = line - 6
    draw.rectangle([left, y + 2, left + swatch, y + 2 + swatch], fill=FOLD_COLOUR)
    draw.text((left + swatch + 6, y), "<= 0: folded", fill=(0, 0, 0), font=font)

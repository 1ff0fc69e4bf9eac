"""The registration figure: layout, before/after, deformation, Jacobian colours, atomic writing."""

import math
import os

import numpy as np
import pytest
import torch
from conftest import smooth_field, smooth_image
from PIL import Image

import itkdeepreg as idr
from itkdeepreg import figure
from itkdeepreg.figure import FOLD_COLOUR, checkerboard, write_registration_figure

SHAPES = {2: (40, 48), 3: (21, 26, 23)}
MOVING_SHAPES = {2: (36, 50), 3: (19, 28, 22)}
VIEWS = {2: 1, 3: 3}
ONE = tuple(int(v) for v in figure._jacobian_rgb(np.ones(1))[0])  # the colour of det = 1


def pair(dimension):
    fixed = smooth_image(SHAPES[dimension], dtype=torch.float32)
    moving = smooth_image(MOVING_SHAPES[dimension], dtype=torch.float32) ** 2 * 100 - 20
    return fixed, moving


def identity(dimension):
    return idr.Affine.identity(dimension)


def warping(dimension):
    grid = (9, 11) if dimension == 2 else (7, 9, 8)
    return idr.Affine(torch.eye(dimension + 1)) @ idr.Displacement(
        smooth_field(grid, 0.06, seed=4, dtype=torch.float32)
    )


def reflection(dimension):
    """x -> (1 - x) along the last axis: the unit cube onto itself, determinant -1."""
    matrix = torch.eye(dimension + 1, dtype=torch.float64)
    matrix[dimension - 1, dimension - 1] = -1
    matrix[dimension - 1, dimension] = 1
    return idr.Affine(matrix)


def written(tmp_path, fixed, moving, forward, **options):
    """The figure written to a PNG and read back, with its panel boxes."""
    path = tmp_path / "figure.png"
    write_registration_figure(path, fixed, moving, forward, **options)
    png = np.asarray(Image.open(path).convert("RGB"))
    spacing = options.get("spacing") or (1.0,) * (fixed.dim() - 2)
    rendered, boxes = figure._render(
        fixed, moving, forward, options.get("moving_on_fixed"), spacing, options.get("title")
    )
    np.testing.assert_array_equal(png, np.asarray(rendered))
    return png, boxes


def panel(png, boxes, row, column):
    left, top, right, bottom = boxes[(row, column)]
    return png[top:bottom, left:right].astype(int)


def test_checkerboard_alternates_square_tiles():
    a, b = np.zeros((4, 8)), np.ones((4, 8))
    board = checkerboard(a, b, squares=4)  # tiles of 2 x 2, two rows of them
    assert board[0, 0] == 0 and board[0, 2] == 1 and board[2, 0] == 1 and board[2, 2] == 0
    assert board[:2, :2].sum() == 0 and board[:2, 2:4].sum() == 4
    rgb = checkerboard(np.zeros((6, 6, 3)), np.ones((6, 6, 3)), squares=3)
    assert rgb.shape == (6, 6, 3) and rgb[0, 0].sum() == 0 and rgb[0, 2].sum() == 3
    with pytest.raises(ValueError, match="same shape"):
        checkerboard(a, np.ones((4, 7)))
    with pytest.raises(ValueError, match="positive integer"):
        checkerboard(a, b, squares=0)


@pytest.mark.parametrize("dimension", [2, 3], ids=["2D", "3D"])
def test_figure_has_a_grid_of_panels_and_after_shows_the_warp(tmp_path, dimension):
    fixed, moving = pair(dimension)
    png, boxes = written(tmp_path, fixed, moving, warping(dimension), title="a pair")
    rows = VIEWS[dimension]
    assert set(boxes) == {(r, c) for r in range(rows) for c in figure.COLUMNS}
    for r in range(rows):
        tops = {boxes[(r, c)][1] for c in figure.COLUMNS}
        assert len(tops) == 1  # one row
        lefts = [boxes[(r, c)][0] for c in figure.COLUMNS]
        assert lefts == sorted(lefts)  # four columns, in order
        _, top, _, bottom = boxes[(r, "before")]
        assert bottom - top >= 199
        before, after = panel(png, boxes, r, "before"), panel(png, boxes, r, "after")
        assert (np.abs(before - after) > 10).mean() > 0.05  # the moving squares are warped
    assert png.shape[0] > 200 * rows and png.shape[1] > 4 * 150


@pytest.mark.parametrize("dimension", [2, 3], ids=["2D", "3D"])
def test_identity_leaves_before_equal_to_after_and_a_uniform_jacobian(tmp_path, dimension):
    fixed, moving = pair(dimension)
    png, boxes = written(tmp_path, fixed, moving, identity(dimension))
    assert ONE == (247, 247, 247)
    for r in range(VIEWS[dimension]):
        before, after = panel(png, boxes, r, "before"), panel(png, boxes, r, "after")
        np.testing.assert_array_equal(before, after)
        jacobian = panel(png, boxes, r, "Jacobian")
        assert (jacobian == ONE).all()
        # the deformation of the identity: straight grid lines over the faded fixed image
        deformation = panel(png, boxes, r, "deformation")
        lines = (deformation == figure.GRID_COLOUR).all(-1)
        assert lines[0].all() and lines[:, 0].all() and lines[-1].all() and lines[:, -1].all()
        assert 0.05 < lines.mean() < 0.4


def test_the_moving_image_on_the_fixed_grid_is_the_before_view(tmp_path):
    fixed, moving = pair(2)
    # above the moving image's 99th percentile: its window (the moving image's) shows it white
    flat = torch.full_like(fixed, 1000.0)
    png, boxes = written(tmp_path, fixed, moving, identity(2), moving_on_fixed=flat)
    before = panel(png, boxes, 0, "before")
    board = checkerboard(np.zeros(before.shape[:2]), np.ones(before.shape[:2]))
    assert (before[board == 1] == 255).all()


@pytest.mark.parametrize("dimension", [2, 3], ids=["2D", "3D"])
def test_folds_show_in_the_fold_colour(tmp_path, dimension):
    fixed, moving = pair(dimension)
    png, boxes = written(tmp_path, fixed, moving, reflection(dimension))
    for r in range(VIEWS[dimension]):
        assert (panel(png, boxes, r, "Jacobian") == FOLD_COLOUR).all()
    # a displacement that folds a band across the middle of the last axis
    shape = SHAPES[dimension]
    grid = idr.identity_grid(shape)
    last = grid[:, -1:]
    field = torch.zeros_like(grid)
    field[:, -1:] = 1.5 * torch.sin(2 * math.pi * last) / (2 * math.pi)  # d/dx = 1 + 1.5 cos
    png, boxes = written(tmp_path, fixed, moving, idr.Displacement(field))
    folds = (panel(png, boxes, 0, "Jacobian") == FOLD_COLOUR).all(-1)
    assert 0.2 < folds.mean() < 0.6
    assert folds[:, folds.shape[1] // 2].all() and not folds[:, :5].any()


def test_slices_are_upright_and_keep_their_aspect_ratio(tmp_path):
    shape = (9, 21, 17)
    grid = idr.identity_grid(shape)
    # bright where z is high (superior), y is low (anterior) and x is high (patient's left)
    fixed = ((grid[:, 0:1] > 0.7) | (grid[:, 1:2] < 0.3) | (grid[:, 2:3] > 0.7)).float()
    png, boxes = written(tmp_path, fixed, fixed, identity(3), spacing=(2.5, 1.0, 1.0))
    names = ("axial", "coronal", "sagittal")
    panels = {name: panel(png, boxes, r, "before")[..., 0] for r, name in enumerate(names)}
    top, bottom = (lambda p: p[: len(p) // 6].mean()), (lambda p: p[-len(p) // 6 :].mean())
    assert top(panels["axial"]) > bottom(panels["axial"]) + 100  # anterior at the top
    assert panels["axial"][:, -5:].mean() > panels["axial"][:, :5].mean() + 100  # left on right
    assert top(panels["coronal"]) > bottom(panels["coronal"]) + 100  # superior at the top
    assert top(panels["sagittal"]) > bottom(panels["sagittal"]) + 100
    assert panels["sagittal"][:, :5].mean() > panels["sagittal"][:, -5:].mean() + 100
    # physical extents (N - 1) * spacing: axial 20 x 16, coronal 20 x 16, sagittal 20 x 20
    ratios = {}
    for r, name in enumerate(names):
        left, top_, right, bottom_ = boxes[(r, "before")]
        ratios[name] = (right - left - 1) / (bottom_ - top_ - 1)
    assert ratios == pytest.approx({"axial": 0.8, "coronal": 0.8, "sagittal": 1.0}, abs=0.01)


def test_a_velocity_composite_in_3d_with_anisotropic_spacing(tmp_path):
    fixed, moving = pair(3)
    velocity = idr.Velocity(smooth_field((7, 9, 8), 0.05, seed=5, dtype=torch.float32))
    forward = idr.Affine.identity(3) @ velocity
    png, boxes = written(tmp_path, fixed, moving, forward, spacing=(2.0, 1.0, 1.5))
    # the Jacobian panel shows the slice of jacobian_determinant on the whole grid
    det = idr.losses.jacobian_determinant(forward, fixed.shape[2:])[0]
    coronal = det[:, det.shape[1] // 2, :].flip(0).numpy()
    expected = figure._jacobian_rgb(coronal)
    shown = panel(png, boxes, 1, "Jacobian")
    corners = shown[[0, 0, -1, -1], [0, -1, 0, -1]]
    np.testing.assert_allclose(corners, expected[[0, 0, -1, -1], [0, -1, 0, -1]], atol=1)


def test_a_bad_path_fails_before_any_work_and_a_failure_leaves_nothing(tmp_path, monkeypatch):
    fixed, moving = pair(2)
    rendered = []
    original = figure._render
    monkeypatch.setattr(figure, "_render", lambda *a, **k: rendered.append(1) or original(*a, **k))
    missing = tmp_path / "no such folder" / "figure.png"
    with pytest.raises(OSError, match="not a writable directory"):
        write_registration_figure(missing, fixed, moving, identity(2))
    with pytest.raises(ValueError, match=".png"):
        write_registration_figure(tmp_path / "figure.jpg", fixed, moving, identity(2))
    assert not rendered and not missing.parent.exists() and os.listdir(tmp_path) == []

    def broken(self, temporary, *args, **kwargs):
        with open(temporary, "wb") as file:
            file.write(b"half a PNG")
        raise RuntimeError("broken")

    monkeypatch.setattr(Image.Image, "save", broken)
    with pytest.raises(RuntimeError, match="broken"):
        write_registration_figure(tmp_path / "figure.png", fixed, moving, identity(2))
    assert os.listdir(tmp_path) == []


def test_arguments_are_checked(tmp_path):
    fixed, moving = pair(2)
    path = tmp_path / "figure.png"
    with pytest.raises(ValueError, match=r"\[1, 1, \*shape\]"):
        write_registration_figure(path, fixed.expand(2, 1, -1, -1), moving, identity(2))
    with pytest.raises(ValueError, match="3D transform"):
        write_registration_figure(path, fixed, moving, identity(3))
    with pytest.raises(ValueError, match="spacing"):
        write_registration_figure(path, fixed, moving, identity(2), spacing=(1, 0))
    with pytest.raises(ValueError, match="moving_on_fixed"):
        write_registration_figure(path, fixed, moving, identity(2), moving_on_fixed=moving)

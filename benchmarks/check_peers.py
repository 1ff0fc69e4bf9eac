"""Check the benchmark's peers (``benchmarks/peers.py``) on a pair with a known answer.

    python benchmarks/check_peers.py [--dimensions 2 3] [--peers ants elastix fireants]
                                     [--other-grid] [--oblique] [--affine] [--intensity]
                                     [--multimodal] [--shrink 1]

The fixed image is the bundled MNI152 T1 template at 2 mm (3D) or its axial slice 50 (2D);
the moving image is the template moved by a known smooth map: a sum of Gaussian bumps (8 in
2D, 40 in 3D, 2-4 mm each, standard deviation 20 mm; mean displacement about 2-2.6 mm over
the foreground, up to 6-8 mm). ``--intensity`` adds mild intensity changes to the moving
image (a smooth bias field of +-10 %, a gamma of 0.9, noise of 1 % of the range).
``--affine`` composes the smooth map with a known affine one: the moving image is the
template sampled at ``g(M(q))``, ``M(q) = c + R S (q - c) + t`` about the centre ``c`` of the
fixed grid, with ``R`` a rotation by 10 degrees (in 3D about the oblique axis (1, 2, 3)),
``S`` the scaling diag(1.05, 0.96, 1.04) and ``t`` = (6, -5, 6) mm (2D: (7, -7) mm), so the
true map fixed -> moving is ``M^-1(g^-1(p))`` (mean displacement about 14 mm). ``--multimodal``
maps the moving intensities ``I`` (0..255) through ``255 sin(pi I / 255)`` (background stays
dark, white matter turns darker than grey matter: a non-monotonic change that calls for mutual
information) and passes ``multimodal=True`` to the peers; the NCC column then compares the
fixed image with the moving image before that mapping, resampled through the transform.
``--other-grid`` puts the moving image on another grid (spacing 1.15 times the fixed one: 2.3
mm, origin shifted by 3.1 mm along each axis), which tests that a peer uses both images'
geometry. ``--oblique`` turns the moving grid's direction cosines by 15 degrees (in 3D about
the axis (-2, 1, 1)), centred on the fixed grid's centre and large enough to hold the fixed
field of view (the spacing of ``--other-grid`` with it, else the fixed spacing). ``--shrink
k`` keeps every k-th voxel of the template (a quick run).

For each peer it prints the wall time of the call, the mean end-point error in mm of the
returned transform against the true map over the template's foreground (intensity > 60 of
255; before: the identity), the percentage of foreground voxels where the transform folds
(Jacobian determinant <= 0), and the normalised cross-correlation of the moving image
resampled through the transform with the fixed image, over the whole image (before: through
the identity). A peer whose convention is wrong makes the error grow instead of shrink.
Times on shared CPUs are indicative only.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

import itk
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from peers import PEERS, field_transform, physical_points

from itkdeepreg.data import mni152_t1_2mm

FOREGROUND = 60  # template intensity (0..255) above which end-point errors count
SLICE = 50  # the axial slice of the 2D pair
BUMPS = {2: 8, 3: 40}  # Gaussian bumps of the true map
WIDTH = 20.0  # their standard deviation in mm
AFFINE_ANGLE = 10.0  # degrees, about AFFINE_AXIS in 3D
AFFINE_AXIS = (1.0, 2.0, 3.0)
AFFINE_SCALES = (1.05, 0.96, 1.04)
AFFINE_SHIFT = {2: (7.0, -7.0), 3: (6.0, -5.0, 6.0)}  # mm
GRID_ANGLE = 15.0  # degrees, the oblique moving grid's turn, about GRID_AXIS in 3D
GRID_AXIS = (-2.0, 1.0, 1.0)


def template(dimension: int, shrink: int):
    """The MNI template as ``itk.Image[itk.F, dimension]``, every ``shrink``-th voxel."""
    image = itk.imread(mni152_t1_2mm(), itk.F)
    array = itk.array_from_image(image)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    direction = np.asarray(image.GetDirection(), dtype=np.float64)
    if dimension == 2:
        array = array[SLICE]
        origin = origin[:2] + direction[:2, 2] * spacing[2] * SLICE
        spacing, direction = spacing[:2], direction[:2, :2]
    array = np.ascontiguousarray(array[(slice(None, None, shrink),) * dimension])
    return _image(array, origin, spacing * shrink, direction)


def _image(array, origin, spacing, direction):
    image = itk.image_from_array(np.ascontiguousarray(array, dtype=np.float32))
    image.SetOrigin([float(v) for v in origin])
    image.SetSpacing([float(v) for v in spacing])
    image.SetDirection(itk.matrix_from_array(np.asarray(direction, dtype=np.float64)))
    return image


def rotation(dimension: int, degrees: float, axis) -> np.ndarray:
    """A rotation matrix: by ``degrees`` in 2D, about ``axis`` in 3D (Rodrigues)."""
    angle = np.deg2rad(degrees)
    if dimension == 2:
        return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    k = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def grid_centre(image) -> np.ndarray:
    """The physical centre of an image's grid."""
    size = np.asarray(itk.size(image), dtype=np.float64)
    direction = np.asarray(image.GetDirection(), dtype=np.float64)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    return np.asarray(image.GetOrigin(), dtype=np.float64) + direction @ (spacing * (size - 1) / 2)


class Affine:
    """M(q) = c + A (q - c) + t on physical points ``[..., D]``, and its inverse."""

    def __init__(self, matrix, centre, shift):
        self.matrix, self.centre, self.shift = matrix, centre, shift

    def __call__(self, points):
        return self.centre + (points - self.centre) @ self.matrix.T + self.shift

    def inverse(self, points):
        return self.centre + (points - self.centre - self.shift) @ np.linalg.inv(self.matrix).T


def known_affine(fixed) -> Affine:
    dimension = fixed.GetImageDimension()
    matrix = rotation(dimension, AFFINE_ANGLE, AFFINE_AXIS) @ np.diag(AFFINE_SCALES[:dimension])
    return Affine(matrix, grid_centre(fixed), np.asarray(AFFINE_SHIFT[dimension]))


class Bumps:
    """u(p) = sum_k a_k exp(-|p - c_k|^2 / (2 s^2)): a smooth displacement of physical points."""

    def __init__(self, centres, amplitudes, width):
        self.centres, self.amplitudes, self.width = centres, amplitudes, width

    def __call__(self, points):
        result = np.zeros_like(points)
        for centre, amplitude in zip(self.centres, self.amplitudes):
            weight = np.exp(-((points - centre) ** 2).sum(-1) / (2 * self.width**2))
            result += weight[..., None] * amplitude
        return result

    def inverse_displacement(self, points, iterations=50):
        """v(p), where p -> p + v(p) inverts q -> q + u(q): v = -u(p + v), by iteration."""
        v = np.zeros_like(points)
        for _ in range(iterations):
            v = -self(points + v)
        return v


def make_pair(
    dimension: int,
    shrink: int,
    other_grid: bool,
    intensity: bool,
    seed: int = 0,
    affine: bool = False,
    multimodal: bool = False,
    oblique: bool = False,
):
    """(fixed, moving, truth, foreground, plain); truth[..]: the true moving point of a fixed voxel.

    The moving image is the template sampled through ``g(q) = q + u(q)`` (``moving(q) =
    template(g(q))``), so the true map fixed -> moving is ``g``'s inverse, found by a
    fixed-point iteration (``u`` is a contraction: its largest gradient is about 0.15). With
    ``affine``, ``moving(q) = template(g(M(q)))`` and the true map is ``M^-1 o g^-1``.
    ``plain`` is the moving image before the multimodal intensity mapping (the moving image
    itself without ``multimodal``).
    """
    rng = np.random.default_rng(seed)
    fixed = template(dimension, shrink)
    fixed_array = itk.array_from_image(fixed)
    points = physical_points(fixed)
    foreground = fixed_array > FOREGROUND
    count = BUMPS[dimension]
    centres = points[foreground][rng.choice(int(foreground.sum()), count, replace=False)]
    directions = rng.normal(size=(count, dimension))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    amplitudes = directions * rng.uniform(2.0, 4.0, size=(count, 1))
    bumps = Bumps(centres, amplitudes, width=WIDTH)

    grid = moving_grid(fixed, other_grid, oblique)
    moving_points = physical_points(grid)
    known = known_affine(fixed) if affine else Affine(np.eye(dimension), 0.0, 0.0)
    template_points = known(moving_points)
    displacement = template_points + bumps(template_points) - moving_points
    moving_array = _sampled_through(fixed, grid, displacement)
    if intensity:
        moving_array = _intensity_changes(moving_array, moving_points, rng)
    plain = _image(moving_array, grid.GetOrigin(), grid.GetSpacing(), grid.GetDirection())
    if multimodal:
        moving_array = 255.0 * np.sin(np.pi * np.clip(moving_array, 0.0, 255.0) / 255.0)
    moving = _image(moving_array, grid.GetOrigin(), grid.GetSpacing(), grid.GetDirection())
    truth = points + bumps.inverse_displacement(points)
    assert np.abs(truth + bumps(truth) - points).max() < 1e-6, "the true map is not inverted"
    truth = known.inverse(truth)
    return fixed, moving, truth, foreground, plain


def moving_grid(fixed, other_grid: bool, oblique: bool):
    """The moving image's grid (an empty image): the fixed grid, or another one."""
    if not (other_grid or oblique):
        return fixed
    dimension = fixed.GetImageDimension()
    size = np.asarray(itk.size(fixed), dtype=np.float64)
    spacing = np.asarray(fixed.GetSpacing(), dtype=np.float64) * (1.15 if other_grid else 1.0)
    direction = np.asarray(fixed.GetDirection(), dtype=np.float64)
    if not oblique:
        origin = np.asarray(fixed.GetOrigin(), dtype=np.float64) + direction @ np.full(
            dimension, 3.1
        )
        extent = np.asarray(fixed.GetSpacing()) * (size - 1)
        count = (extent - 6.2) // spacing + 1
    else:
        direction = rotation(dimension, GRID_ANGLE, GRID_AXIS) @ direction
        centre = grid_centre(fixed)
        # the fixed grid's corners in the turned grid's axes, from the centre
        corners = np.stack(np.meshgrid(*[[0.0, s - 1] for s in size], indexing="ij"), -1)
        corners = corners.reshape(-1, dimension) * np.asarray(fixed.GetSpacing())
        corners = corners @ np.asarray(fixed.GetDirection(), dtype=np.float64).T
        corners += np.asarray(fixed.GetOrigin()) - centre
        half = np.abs(corners @ direction).max(0)
        count = np.ceil(2 * half / spacing) + 1
        origin = centre - direction @ (spacing * (count - 1) / 2)
    return _image(np.zeros(count.astype(int)[::-1]), origin, spacing, direction)


def _sampled_through(image, grid, displacement):
    """``image`` sampled at ``q + displacement(q)`` for the voxels ``q`` of ``grid`` (linear).

    The displacement is given at the voxels of ``grid``, where ITK's field transform is exact.
    """
    return warped(image, grid, field_transform(displacement, like=grid))


def _intensity_changes(array, points, rng):
    """A smooth multiplicative bias (+-10 %), a gamma curve (0.9) and noise (1 % of the range)."""
    centre = points.reshape(-1, points.shape[-1]).mean(0)
    slope = rng.normal(size=points.shape[-1])
    bias = 1.0 + 0.1 * np.tanh(((points - centre) @ slope) / 80.0)
    top = float(array.max())
    changed = top * (np.clip(array, 0, None) / top) ** 0.9 * bias
    return (changed + rng.normal(scale=0.01 * top, size=array.shape)).astype(np.float32)


def transform_points(transform, fixed) -> np.ndarray:
    """The transform's moving point of every fixed voxel, ``[*array shape, D]`` (physical)."""
    dimension = fixed.GetImageDimension()
    field_type = itk.Image[itk.Vector[itk.F, dimension], dimension]  # the wrapped type
    to_field = itk.TransformToDisplacementFieldFilter[field_type, itk.D].New()
    to_field.SetTransform(transform)
    to_field.SetReferenceImage(fixed)
    to_field.SetUseReferenceImage(True)
    to_field.Update()
    return physical_points(fixed) + itk.array_from_image(to_field.GetOutput())


def folding_percent(mapped, fixed, foreground) -> float:
    """Percentage of foreground voxels where the map's Jacobian determinant is not positive."""
    spacing = np.asarray(fixed.GetSpacing(), dtype=np.float64)[::-1]  # array axis order
    dimension = mapped.shape[-1]
    # d mapped / d (array axis), then the determinant up to the sign of the grid's orientation
    gradients = np.stack(np.gradient(mapped, *spacing, axis=tuple(range(dimension))), -1)
    grid = np.asarray(fixed.GetDirection(), dtype=np.float64)[:, ::-1]  # columns: array axes
    determinant = np.linalg.det(gradients) * np.sign(np.linalg.det(grid))
    return 100.0 * float((determinant[foreground] <= 0).mean())


def ncc(a, b) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def warped(moving, fixed, transform):
    resampled = itk.resample_image_filter(
        moving, transform=transform, use_reference_image=True, reference_image=fixed
    )
    return itk.array_from_image(resampled)


def check(
    dimension, names, shrink, other_grid, intensity, affine=False, multimodal=False, oblique=False
):
    fixed, moving, truth, foreground, plain = make_pair(
        dimension, shrink, other_grid, intensity, affine=affine, multimodal=multimodal,
        oblique=oblique,
    )  # fmt: skip
    fixed_array = itk.array_from_image(fixed)
    identity = itk.IdentityTransform[itk.D, dimension].New()
    start = physical_points(fixed)
    epe_before = np.linalg.norm(start - truth, axis=-1)[foreground].mean()
    ncc_before = ncc(warped(plain, fixed, identity), fixed_array)
    grid = "other grid" if other_grid else "same grid"
    grid += ", oblique" if oblique else ""
    grid += ", affine" if affine else ""
    grid += ", intensity changes" if intensity else ""
    grid += ", multimodal" if multimodal else ""
    print(
        f"{dimension}D pair, fixed {tuple(fixed_array.shape[::-1])}, moving "
        f"{tuple(itk.size(moving))} ({grid}), {int(foreground.sum())} foreground voxels, "
        f"true displacement mean {epe_before:.2f} mm, max "
        f"{np.linalg.norm(start - truth, axis=-1).max():.2f} mm",
        flush=True,
    )
    for name in names:
        with tempfile.TemporaryDirectory() as workdir:
            begin = time.perf_counter()
            transform = PEERS[name](fixed, moving, pathlib.Path(workdir), multimodal=multimodal)
            seconds = time.perf_counter() - begin
        mapped = transform_points(transform, fixed)
        epe = np.linalg.norm(mapped - truth, axis=-1)[foreground].mean()
        folds = folding_percent(mapped, fixed, foreground)
        ncc_after = ncc(warped(plain, fixed, transform), fixed_array)
        print(
            f"  {name:9s} {seconds:7.1f} s  EPE {epe_before:.3f} -> {epe:.3f} mm  "
            f"folds {folds:.3f} %  NCC {ncc_before:.4f} -> {ncc_after:.4f}  "
            f"({type(transform).__name__})",
            flush=True,
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dimensions", type=int, nargs="+", default=[2, 3], choices=[2, 3])
    parser.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--shrink", type=int, default=1)
    parser.add_argument("--other-grid", action="store_true")
    parser.add_argument("--oblique", action="store_true")
    parser.add_argument("--affine", action="store_true")
    parser.add_argument("--intensity", action="store_true")
    parser.add_argument("--multimodal", action="store_true")
    arguments = parser.parse_args(argv)
    for dimension in arguments.dimensions:
        check(
            dimension,
            arguments.peers,
            arguments.shrink,
            arguments.other_grid,
            arguments.intensity,
            affine=arguments.affine,
            multimodal=arguments.multimodal,
            oblique=arguments.oblique,
        )


if __name__ == "__main__":
    main()

"""Image geometry: the one place where physical space meets the unit-cube convention.

Inside itkdeepreg a map sends points of the fixed image's unit cube to points of the moving
image's unit cube. Unit-cube coordinates are in tensor-axis order (z, y, x for an array read
from ITK) and voxel ``k`` of an axis with ``N`` voxels sits at ``k / (N - 1)``. Physical points
are ITK's: LPS millimetres in (x, y, z) order. :class:`ImageGeometry` holds the affine maps
between the two; nothing else in the library multiplies by spacing or direction cosines.
"""

from __future__ import annotations

import numpy as np

# How a model grid (say 175^3) is put on an image: its cells over the image's extent, as the
# published networks' code does, or its corner voxels on the image's (ImageGeometry.placed)
PLACEMENTS = ("extent", "corners")


class ImageGeometry:
    """Size, origin, spacing and direction cosines of an image grid, as ITK defines them.

    ``size``, ``origin``, ``spacing`` and the columns of ``direction`` are in ITK's (x, y, z)
    order. A continuous index ``i`` lies at the physical point
    ``origin + direction @ (spacing * i)``.
    """

    def __init__(self, size, origin=None, spacing=None, direction=None):
        if any(int(n) != n for n in size):
            raise ValueError(f"size must be whole numbers of voxels, got {tuple(size)}")
        size = tuple(int(n) for n in size)
        dimension = len(size)
        if dimension not in (2, 3):
            raise ValueError(f"an image geometry is 2D or 3D, got {dimension} axes")
        if min(size) < 2:
            raise ValueError(
                f"every axis needs at least two voxels (size {size}): the unit-cube convention "
                "places voxel k of N at k/(N-1)"
            )
        origin = np.zeros(dimension) if origin is None else np.asarray(origin, dtype=np.float64)
        spacing = np.ones(dimension) if spacing is None else np.asarray(spacing, dtype=np.float64)
        direction = (
            np.eye(dimension) if direction is None else np.asarray(direction, dtype=np.float64)
        )
        if origin.shape != (dimension,) or spacing.shape != (dimension,):
            raise ValueError(
                f"origin {origin.shape} and spacing {spacing.shape} must have {dimension} entries"
            )
        if direction.shape != (dimension, dimension):
            raise ValueError(f"direction must be {dimension}x{dimension}, got {direction.shape}")
        if not (np.isfinite(origin).all() and np.isfinite(spacing).all()):
            raise ValueError("origin and spacing must be finite")
        if (spacing <= 0).any():
            raise ValueError(f"spacing must be positive, got {spacing}")
        if not np.isfinite(direction).all() or abs(np.linalg.det(direction)) < 1e-12:
            raise ValueError(f"direction must be an invertible matrix, got {direction.tolist()}")
        self.size = size
        self.origin = origin
        self.spacing = spacing
        self.direction = direction

    @classmethod
    def from_image(cls, image) -> ImageGeometry:
        """The geometry of an ``itk.Image`` (its largest possible region).

        A region that starts at a non-zero index is folded into the origin, so voxel (0, 0, 0)
        of the array view is index 0 here.
        """
        import itk  # only here: the torch core imports without ITK

        region = image.GetLargestPossibleRegion()
        direction = itk.array_from_matrix(image.GetDirection())
        spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
        start = np.asarray(region.GetIndex(), dtype=np.float64)
        origin = np.asarray(image.GetOrigin(), dtype=np.float64) + direction @ (spacing * start)
        return cls(tuple(region.GetSize()), origin, spacing, direction)

    @classmethod
    def centred(cls, size, spacing, direction, centre) -> ImageGeometry:
        """A grid of ``size``, ``spacing`` and ``direction`` whose centre (the middle of its
        first and last voxel centres) is the physical point ``centre``."""
        spacing = np.asarray(spacing, dtype=np.float64)
        direction = np.asarray(direction, dtype=np.float64)
        extent = spacing * (np.asarray(size, dtype=np.float64) - 1)
        return cls(size, np.asarray(centre) - direction @ (extent / 2), spacing, direction)

    @property
    def dimension(self) -> int:
        return len(self.size)

    @property
    def shape(self) -> tuple:
        """The tensor shape of an image on this grid: the size reversed, (z, y, x)."""
        return tuple(reversed(self.size))

    @property
    def index_to_physical(self) -> np.ndarray:
        """Homogeneous matrix from continuous ITK index (x, y, z) to physical point."""
        matrix = np.eye(self.dimension + 1)
        matrix[:-1, :-1] = self.direction * self.spacing  # scales the columns
        matrix[:-1, -1] = self.origin
        return matrix

    @property
    def unit_to_index(self) -> np.ndarray:
        """Homogeneous matrix from unit-cube coordinates (tensor order) to continuous index."""
        d = self.dimension
        matrix = np.zeros((d + 1, d + 1))
        for j, n in enumerate(self.size):
            matrix[j, d - 1 - j] = n - 1  # index axis j is tensor axis d-1-j
        matrix[d, d] = 1.0
        return matrix

    @property
    def unit_to_physical(self) -> np.ndarray:
        """Homogeneous matrix from unit-cube coordinates to physical LPS points."""
        return self.index_to_physical @ self.unit_to_index

    @property
    def physical_to_unit(self) -> np.ndarray:
        """Homogeneous matrix from physical LPS points to unit-cube coordinates."""
        return np.linalg.inv(self.unit_to_physical)

    def to_physical(self, unit_points):
        """Physical points (..., D) in (x, y, z) order of unit-cube points (..., D)."""
        return _apply(self.unit_to_physical, unit_points)

    def to_unit(self, physical_points):
        """Unit-cube points (..., D) of physical points (..., D)."""
        return _apply(self.physical_to_unit, physical_points)

    @property
    def centre(self) -> np.ndarray:
        """The physical centre of the grid: the middle of the unit cube."""
        return self.to_physical(np.full(self.dimension, 0.5))

    @property
    def voxels_per_unit(self) -> np.ndarray:
        """Voxel steps in one unit-cube unit along each tensor axis (``N - 1``): a shift of
        ``f`` voxels along tensor axis ``a`` is ``f / voxels_per_unit[a]`` in the cube."""
        return np.asarray(self.shape, dtype=np.float64) - 1

    def resized(self, shape) -> ImageGeometry:
        """A grid of tensor shape ``shape`` over the same unit cube (a model grid, say 175^3).

        The first and last voxel centres stay where they are; spacing changes per axis.
        """
        size = self._size_of(shape)
        old = np.asarray(self.size, dtype=np.float64)
        new = np.asarray(size, dtype=np.float64)
        return ImageGeometry(
            size, self.origin, self.spacing * (old - 1) / (new - 1), self.direction
        )

    def placed_to_unit(self, shape, placement="extent") -> np.ndarray:
        """Homogeneous matrix from the unit cube of a model grid of tensor shape ``shape``
        placed on this image (see :data:`PLACEMENTS`) to this image's unit cube.

        ``"corners"``: the identity, the model grid spans this image's unit cube (its first and
        last voxel centres are the image's). ``"extent"``: the model grid's cells spread over
        the image's extent, as the published code resizes (``F.interpolate(align_corners=
        False)``): model voxel ``k`` of ``n`` sits at image index ``(k + 0.5) N / n - 0.5``.
        """
        model_size = self._size_of(shape)
        d = self.dimension
        matrix = np.eye(d + 1)
        if placement == "corners":
            return matrix
        if placement != "extent":
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        for j, (image_voxels, model_voxels) in enumerate(zip(self.size, model_size)):
            axis = d - 1 - j  # index axis j is tensor axis d-1-j
            ratio = image_voxels / model_voxels
            # image unit = index / (N-1) with index = (k + 0.5) N/n - 0.5, k = model unit (n-1)
            matrix[axis, axis] = (model_voxels - 1) * ratio / (image_voxels - 1)
            matrix[axis, d] = (0.5 * ratio - 0.5) / (image_voxels - 1)
        return matrix

    def placed(self, shape, placement="extent") -> ImageGeometry:
        """The geometry of a model grid of tensor shape ``shape`` placed on this image:
        :meth:`resized` for ``"corners"``; for ``"extent"`` (the published placement) spacing
        ``N / n`` times the image's, first voxel at image index ``0.5 N / n - 0.5``."""
        if placement == "corners":
            return self.resized(shape)
        model_size = self._size_of(shape)
        unit_to_physical = self.unit_to_physical @ self.placed_to_unit(shape, placement)
        ratio = np.asarray(self.size, dtype=np.float64) / np.asarray(model_size)
        return ImageGeometry(
            model_size, unit_to_physical[:-1, -1], self.spacing * ratio, self.direction
        )

    def _size_of(self, shape) -> tuple:
        """ITK size (x, y, z) of a tensor shape, checked against this image's dimension."""
        size = tuple(reversed(tuple(int(n) for n in shape)))
        if len(size) != self.dimension:
            raise ValueError(f"shape {tuple(shape)} does not have {self.dimension} axes")
        return size

    def __eq__(self, other):
        return (
            isinstance(other, ImageGeometry)
            and self.size == other.size
            and np.array_equal(self.origin, other.origin)
            and np.array_equal(self.spacing, other.spacing)
            and np.array_equal(self.direction, other.direction)
        )

    def __repr__(self):
        return (
            f"ImageGeometry(size={self.size}, origin={self.origin.tolist()}, "
            f"spacing={self.spacing.tolist()}, direction={self.direction.tolist()})"
        )


def _apply(matrix: np.ndarray, points):
    """Apply a homogeneous matrix to an array of points (..., D)."""
    points_array = np.asarray(points, dtype=np.float64)
    return points_array @ matrix[:-1, :-1].T + matrix[:-1, -1]

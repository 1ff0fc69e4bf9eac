"""Training pairs from a user's image files: a list of files, a folder, or a CSV file.

:class:`ImagePairs` is a data source for :func:`~itkdeepreg.train.train`:
``sample(batch_size, generator) -> (moving, fixed)``, float32 tensors ``[B, 1, *shape]`` on
the model's grid with intensities in ``[0, 1]``. Every draw comes from the generator, so a run
is reproducible and a resumed run continues identically.

ITK is imported only when a file is read, so this module imports without ITK (and a run whose
images are all in the cache never needs it).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pickle
from pathlib import Path

import torch

from ..files import write_atomically
from ..sampling import resample
from ..zoo.preprocessing import preprocess

# Single-image formats ITK reads; a folder is searched for these (``.raw`` and ``.img`` are the
# data halves of ``.mhd`` / ``.nhdr`` / ``.hdr`` headers, not images of their own)
IMAGE_SUFFIXES = (
    ".nii",
    ".nii.gz",
    ".hdr",
    ".nrrd",
    ".nhdr",
    ".mha",
    ".mhd",
    ".gipl",
    ".gipl.gz",
    ".vtk",
    ".png",
    ".tif",
    ".tiff",
    ".jpg",
    ".jpeg",
    ".bmp",
)
MODALITIES = ("ct", "mri")  # those of the zoo's preprocessing recipes
PAIRINGS = ("inter", "intra", "any")
# part of every cache key: bump it when what is cached (the preprocessing) changes
CACHE_VERSION = "image-pairs-2"  # 2: CT scaled by its window, as published


class ImagePairs:
    """Pairs of a user's images, preprocessed and resampled onto a model grid, for training.

    ``images``: image files (any single-file format ITK reads). ``shape``: the model grid.
    ``subjects``: a subject name per image (default: each image is its own subject).
    ``modalities``: ``"ct"`` or ``"mri"`` per image (default: ``modality`` for all); the
    published preprocessing of that modality (``preprocessing``: uniGradICON's
    :func:`~itkdeepreg.zoo.preprocess` unless a network has its own) maps each image to
    ``[0, 1]``. The image's array is then resampled linearly onto ``shape``, as the
    published networks take their inputs: physical spacing, origin and direction are ignored,
    so an image with anisotropic voxels is stretched to the grid.

    ``pairing`` says how a pair is drawn: ``"inter"`` (two images of two different subjects,
    each subject equally likely), ``"intra"`` (two different images of one subject, among the
    subjects that have two) or ``"any"`` (two different images). ``pairs``, a list of
    ``(moving index, fixed index)`` into ``images``, lists the pairs instead: a pair is drawn
    from it, in its order, and ``pairing`` is ignored.

    Each image is read once per process and kept in memory (unless ``keep_in_memory`` is
    false). With ``cache_directory``, the preprocessed tensors are also stored there as
    ``.pt`` files, keyed by the file's absolute path, modification time and size, the modality,
    the recipe and the grid, so a later run skips ITK and a changed file is read again. Files
    are checked to exist here; their content is read on first use, and an unreadable, vector,
    constant or wrongly dimensioned image raises a ``ValueError`` naming the file then, or at
    once with :meth:`preload`.
    """

    def __init__(
        self,
        images,
        shape,
        *,
        subjects=None,
        modalities=None,
        pairs=None,
        modality: str = "mri",
        pairing: str = "inter",
        cache_directory=None,
        keep_in_memory: bool = True,
        preprocessing=preprocess,
    ):
        self.paths = [Path(os.path.abspath(os.path.expanduser(p))) for p in images]
        self.shape = tuple(int(n) for n in shape)
        if len(self.shape) not in (2, 3) or min(self.shape) < 2:
            raise ValueError(
                f"shape must be a 2D or 3D grid, 2 or more voxels an axis, got {shape}"
            )
        if not self.paths:
            raise ValueError("no images: training needs at least two")
        for path in self.paths:
            if not path.is_file():
                raise FileNotFoundError(f"no such image file: {path}")
        self.subjects = _per_image(subjects, [str(p) for p in self.paths], "subjects")
        self.subjects = [str(s) for s in self.subjects]
        if modalities is None:
            _check_modality(modality, "modality")
        self.modalities = _per_image(modalities, [modality] * len(self.paths), "modalities")
        for path, image_modality in zip(self.paths, self.modalities):
            _check_modality(image_modality, f"the modality of {path}")
        self.pairs = None if pairs is None else [(int(m), int(f)) for m, f in pairs]
        self.pairing = "explicit" if self.pairs is not None else pairing
        self._images_of_subject = {}  # subject -> image indices, in order of appearance
        for index, subject in enumerate(self.subjects):
            self._images_of_subject.setdefault(subject, []).append(index)
        self._check_pairing()
        self.cache_directory = None if cache_directory is None else Path(cache_directory)
        if self.cache_directory is not None:
            self.cache_directory.mkdir(parents=True, exist_ok=True)
        self.keep_in_memory = keep_in_memory
        self.preprocessing = preprocessing
        self._loaded = {}  # image index -> tensor [1, *shape]

    @classmethod
    def from_files(cls, paths, shape, **options) -> ImagePairs:
        """Pairs from a list of image files, each its own subject."""
        return cls(list(paths), shape, **options)

    @classmethod
    def from_folder(cls, folder, shape, **options) -> ImagePairs:
        """Pairs from the image files of a folder: each subfolder is one subject (its images,
        at any depth below it, are of that subject); each image directly in the folder is a
        subject of its own. Hidden files and folders, and files of other types, are skipped."""
        folder = Path(folder)
        if not folder.exists():
            raise FileNotFoundError(f"no such folder: {folder}")
        if not folder.is_dir():
            raise NotADirectoryError(f"not a folder: {folder}")
        images, subjects = [], []
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                found = [
                    path
                    for path in sorted(entry.rglob("*"))
                    if _is_image_file(path) and not _is_hidden(path.relative_to(entry))
                ]
                images += found
                subjects += [entry.name] * len(found)
            elif _is_image_file(entry):
                images.append(entry)
                subjects.append(entry.name)
        if not images:
            raise ValueError(f"no image files in {folder} (looked for {', '.join(IMAGE_SUFFIXES)})")
        return cls(images, shape, subjects=subjects, **options)

    @classmethod
    def from_csv(cls, csv_path, shape, **options) -> ImagePairs:
        """Pairs from a CSV file with a header: either an ``image`` column (and optional
        ``subject`` and ``modality`` columns) listing images, or ``moving`` and ``fixed``
        columns (and optional ``modality``, ``moving_modality``, ``fixed_modality``) listing
        the pairs themselves. Relative paths are relative to the CSV file's folder; other
        columns are ignored; an empty ``subject`` makes the image a subject of its own."""
        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise FileNotFoundError(f"no such CSV file: {csv_path}")
        with open(csv_path, newline="", encoding="utf-8-sig") as file:  # -sig: Excel's BOM
            reader = csv.reader(file)
            header = [name.strip().lower() for name in next(reader, [])]
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
        if "image" in header and ("moving" in header or "fixed" in header):
            raise ValueError(
                f"{csv_path}: line 1: the header has both 'image' and 'moving'/'fixed' columns; "
                "list either images or pairs"
            )
        if "image" in header:
            read_row = _image_row
        elif "moving" in header and "fixed" in header:
            read_row = _pair_row
        else:
            raise ValueError(
                f"{csv_path}: line 1: the header needs an 'image' column (with optional "
                "'subject' and 'modality') or 'moving' and 'fixed' columns; "
                f"found {', '.join(repr(name) for name in header) or 'nothing'}"
            )
        if not rows:
            raise ValueError(f"{csv_path}: lists no images")
        default_modality = options.pop("modality", "mri")
        _check_modality(default_modality, "modality")
        table = _CsvTable(csv_path, header, default_modality)
        for line, row in rows:
            read_row(table, line, row)
        if read_row is _pair_row:
            options.pop("pairing", None)  # the pairs are listed: there is nothing to choose
            return cls(
                table.paths, shape, modalities=table.modalities, pairs=table.pairs, **options
            )
        return cls(
            table.paths, shape, subjects=table.subjects, modalities=table.modalities, **options
        )

    def __len__(self) -> int:
        """The number of images."""
        return len(self.paths)

    def __repr__(self) -> str:
        drawn = (
            f"{len(self.pairs)} listed pairs"
            if self.pairs is not None
            else f"pairing={self.pairing!r}"
        )
        return (
            f"ImagePairs({len(self.paths)} images of {len(self._images_of_subject)} subjects, "
            f"{drawn}, shape={self.shape})"
        )

    def sample(self, batch_size: int, generator: torch.Generator):
        """``(moving, fixed)``: ``batch_size`` pairs drawn with ``generator``, each a float32
        tensor ``[batch_size, 1, *shape]`` in ``[0, 1]``."""
        drawn = self.draw(batch_size, generator)
        moving = torch.stack([self.image(m) for m, _ in drawn])
        fixed = torch.stack([self.image(f) for _, f in drawn])
        return moving, fixed

    def draw(self, batch_size: int, generator: torch.Generator) -> list[tuple[int, int]]:
        """The ``(moving, fixed)`` image indices of ``batch_size`` pairs, drawn with
        ``generator`` alone (independently, with replacement); what :meth:`sample` loads."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        return [self._draw_pair(generator) for _ in range(batch_size)]

    def image(self, index: int) -> torch.Tensor:
        """Image ``index`` preprocessed on the grid, ``[1, *shape]`` float32: from memory, from
        the cache directory, or read with ITK (then kept in both)."""
        tensor = self._loaded.get(index)
        if tensor is None:
            tensor = self._load(index)
            if self.keep_in_memory:
                self._loaded[index] = tensor
        return tensor

    def preload(self) -> ImagePairs:
        """Load every image now (filling the cache), so a bad file fails before training."""
        for index in range(len(self.paths)):
            self.image(index)
        return self

    def _check_pairing(self) -> None:
        count = len(self.paths)
        if self.pairs is not None:
            if not self.pairs:
                raise ValueError("pairs is empty: there is nothing to draw")
            for moving, fixed in self.pairs:
                if not (0 <= moving < count and 0 <= fixed < count):
                    raise IndexError(f"pair {(moving, fixed)} is not of {count} images")
            return
        if self.pairing not in PAIRINGS:
            raise ValueError(f"pairing must be one of {PAIRINGS}, got {self.pairing!r}")
        if self.pairing == "inter" and len(self._images_of_subject) < 2:
            raise ValueError(
                "pairing 'inter' needs images of at least two subjects, "
                f"got {len(self._images_of_subject)}"
            )
        if self.pairing == "intra" and not self._subjects_with_pairs():
            raise ValueError("pairing 'intra' needs a subject with two images; none has")
        if self.pairing == "any" and count < 2:
            raise ValueError(f"pairing 'any' needs at least two images, got {count}")

    def _subjects_with_pairs(self) -> list[list[int]]:
        return [images for images in self._images_of_subject.values() if len(images) >= 2]

    def _draw_pair(self, generator) -> tuple[int, int]:
        if self.pairs is not None:
            return self.pairs[_uniform(len(self.pairs), generator)]
        if self.pairing == "any":
            return _two_different(list(range(len(self.paths))), generator)
        if self.pairing == "intra":
            candidates = self._subjects_with_pairs()
            return _two_different(candidates[_uniform(len(candidates), generator)], generator)
        first, second = _two_different(list(self._images_of_subject.values()), generator)
        return (
            first[_uniform(len(first), generator)],
            second[_uniform(len(second), generator)],
        )

    def _load(self, index: int) -> torch.Tensor:
        path, modality = self.paths[index], self.modalities[index]
        cache_file = None
        if self.cache_directory is not None:
            recipe = f"{self.preprocessing.__module__}.{self.preprocessing.__qualname__}"
            cache_file = self.cache_directory / _cache_name(path, modality, recipe, self.shape)
            cached = self._read_cache(cache_file)
            if cached is not None:
                return cached
        tensor = read_tensor(path, len(self.shape))
        tensor = _prepare(tensor, path, self.preprocessing, modality, self.shape)
        if cache_file is not None:
            write_atomically(cache_file, lambda name: torch.save(tensor, name), (".pt",))
        return tensor

    def _read_cache(self, cache_file: Path):
        """The cached tensor, or None where there is none usable (then it is rewritten)."""
        if not cache_file.is_file():
            return None
        try:
            tensor = torch.load(cache_file, weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError):
            return None
        usable = (
            isinstance(tensor, torch.Tensor)
            and tensor.dtype == torch.float32
            and tuple(tensor.shape) == (1, *self.shape)
        )
        return tensor if usable else None


def read_tensor(path: Path, dimension: int) -> torch.Tensor:
    """The array of a scalar image file, ``[1, 1, *size]`` float32 (axes z, y, x); a
    ``ValueError`` that names the file if it cannot be read, or is not a scalar
    ``dimension``-D image."""
    from ..interop.images import check_scalar_image, image_to_tensor, read_image

    image = read_image(path)
    try:
        check_scalar_image(image, "the image")
        if image.GetImageDimension() != dimension:
            raise ValueError(
                f"it is a {image.GetImageDimension()}D image and the model grid is {dimension}D"
            )
        tensor, _ = image_to_tensor(image)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None
    return tensor


def _prepare(tensor: torch.Tensor, path: Path, preprocessing, modality: str, shape):
    """An image ``[1, 1, *size]`` preprocessed and resampled onto ``shape``: ``[1, *shape]``."""
    try:
        tensor = preprocessing(tensor, modality)
    except ValueError as error:  # a constant image
        raise ValueError(f"{path}: {error}") from None
    if tuple(tensor.shape[2:]) != shape:
        tensor = resample(tensor, shape)
    return tensor[0].to(torch.float32).contiguous()


def _cache_name(path: Path, modality: str, recipe: str, shape) -> str:
    """The cache file of an image: changes with the file (time, size), modality, recipe and
    grid."""
    status = path.stat()
    key = [
        CACHE_VERSION, str(path), status.st_mtime_ns, status.st_size, modality, recipe, list(shape)
    ]
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]
    return f"{path.name[:60]}-{digest}.pt"  # the name only to help a person clean up


class _CsvTable:
    """Images (each path and modality once) and pairs gathered from the rows of a CSV file."""

    def __init__(self, csv_path: Path, header: list[str], default_modality: str):
        self.csv_path, self.header, self.default_modality = csv_path, header, default_modality
        self.paths, self.subjects, self.modalities, self.pairs = [], [], [], []
        self._index = {}  # (path, modality) -> image index
        self._line = {}  # image index -> the line that listed it

    def cell(self, row: list[str], column: str, line: int, required=True) -> str:
        position = self.header.index(column) if column in self.header else None
        value = row[position].strip() if position is not None and position < len(row) else ""
        if required and not value:
            raise ValueError(f"{self.csv_path}: line {line}: the '{column}' column is empty")
        return value

    def modality(self, row, line: int, column: str) -> str:
        value = self.cell(row, column, line, required=False).lower()
        value = value or self.cell(row, "modality", line, required=False).lower()
        value = value or self.default_modality
        _check_modality(value, f"{self.csv_path}: line {line}: modality")
        return value

    def image(self, value: str, modality: str, line: int, unique: bool) -> int:
        path = Path(os.path.expanduser(value))
        path = Path(os.path.abspath(path if path.is_absolute() else self.csv_path.parent / path))
        if not path.is_file():
            raise FileNotFoundError(f"{self.csv_path}: line {line}: no such image file: {path}")
        key = (path, modality)
        if key in self._index:
            if unique:
                raise ValueError(
                    f"{self.csv_path}: line {line}: {path} is listed twice "
                    f"(first on line {self._line[self._index[key]]})"
                )
            return self._index[key]
        self._index[key] = len(self.paths)
        self._line[len(self.paths)] = line
        self.paths.append(path)
        self.modalities.append(modality)
        return self._index[key]


def _image_row(table: _CsvTable, line: int, row: list[str]) -> None:
    index = table.image(
        table.cell(row, "image", line), table.modality(row, line, "modality"), line, unique=True
    )
    table.subjects.append(
        table.cell(row, "subject", line, required=False) or str(table.paths[index])
    )


def _pair_row(table: _CsvTable, line: int, row: list[str]) -> None:
    moving, fixed = (
        table.image(
            table.cell(row, side, line), table.modality(row, line, f"{side}_modality"), line, False
        )
        for side in ("moving", "fixed")
    )
    table.pairs.append((moving, fixed))


def _per_image(values, default: list, name: str) -> list:
    if values is None:
        return default
    values = list(values)
    if len(values) != len(default):
        raise ValueError(f"{name} has {len(values)} entries for {len(default)} images")
    return values


def _check_modality(modality, where: str) -> None:
    if modality not in MODALITIES:
        raise ValueError(f"{where} must be one of {', '.join(MODALITIES)}, got {modality!r}")


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _uniform(count: int, generator: torch.Generator) -> int:
    """A whole number in ``[0, count)`` drawn with ``generator``."""
    return int(torch.randint(count, (), generator=generator))


def _two_different(items: list, generator: torch.Generator):
    """Two items at different positions of ``items``, in the order drawn."""
    first = _uniform(len(items), generator)
    second = _uniform(len(items) - 1, generator)
    second += second >= first  # skip the first one's position: uniform over the others
    return items[first], items[second]

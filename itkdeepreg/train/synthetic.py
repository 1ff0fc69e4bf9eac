"""Synthetic training pairs in the style of SynthMorph (Hoffmann et al., 2022).

SynthMorph trains registration networks on images of random shapes, so that a network learns
to align shapes, not the appearance of one modality or one anatomy. A batch is made here in
three stages, every random draw from one ``torch.Generator``:

1. A base label map per pair: ``labels`` noise channels drawn on coarse grids (``scales``) and
   summed, read through a random diffeomorphism; each voxel takes the channel largest there.
   Each label gets a small bump at a seed voxel of its own, so that every label is present.
   With probability ``background``, label 0 takes the outside of a random smooth blob: the
   dark background around an anatomy.
2. The pair: the base map read through two more independent random diffeomorphisms gives the
   moving and the fixed label maps, so the true correspondence between them is smooth.
3. The images: each label is painted with a Gaussian intensity (mean uniform in [0, 1], small
   standard deviation), then blurred, multiplied by a smooth bias field, min-max scaled and
   raised to a random gamma.

A random diffeomorphism is a :class:`~itkdeepreg.transforms.Velocity` of blurred noise. Its
exponential is computed on a coarse grid (the field is smooth, and this keeps a training step
fast) and read at every voxel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..losses.similarity import gaussian_blur
from ..sampling import identity_grid, resample, sample
from ..transforms import Velocity

CONTRASTS = ("same", "independent")

# seeds lie in the central part of the cube, where the pair's warps keep them in view
_SEED_MARGIN = 0.2
# the random velocity fields: noise on this grid, blurred by this many of its voxels
_VELOCITY_POINTS = 16
_VELOCITY_SMOOTHING = 2.0
# the bias fields: noise on this grid, blurred by this many of its voxels
_BIAS_POINTS = 8
_BIAS_SMOOTHING = 1.5


@dataclass
class SyntheticBatch:
    """Synthetic pairs and the label maps they were painted from (the ground truth for Dice).

    ``moving``, ``fixed``: ``[B, 1, *shape]`` float32 in [0, 1]; ``moving_labels``,
    ``fixed_labels``: ``[B, 1, *shape]`` int64 in ``0 .. labels - 1``.
    """

    moving: torch.Tensor
    fixed: torch.Tensor
    moving_labels: torch.Tensor
    fixed_labels: torch.Tensor


class SyntheticPairs:
    """A source of synthetic image pairs for training: ``sample(batch_size, generator)``.

    - ``shape``: the grid, 2D or 3D (the defaults suit 128^2 and 64^3).
    - ``labels``: the number of labels in every label map.
    - ``scales``: the sizes (points per axis over the whole grid) of the coarse grids the label
      noise is drawn on; coarser grids give larger regions, several give varied region sizes.
    - ``deformation``: the largest root mean square of each random velocity field, in
      unit-cube units (0.03 is about 4 voxels at 128); each field's is drawn uniformly below
      it, so pairs range from nearly identical to this far apart.
    - ``background``: the probability that a pair has a background: label 0 outside a random
      blob, painted 0 in both images (what real images have around the anatomy).
    - ``contrast``: ``"same"`` (both images of a pair share the per-label means, what a
      similarity such as LNCC needs) or ``"independent"`` (each image its own means, the
      contrast-agnostic SynthMorph way).
    - ``intensity_noise``: the largest per-label standard deviation of the intensities.
    - ``blur``: the largest standard deviation, in voxels, of the Gaussian blur of an image.
    - ``bias``: the largest standard deviation of the log of the bias field.
    - ``gamma``: the standard deviation of the log of the gamma exponent.
    """

    def __init__(
        self,
        shape,
        labels: int = 16,
        scales=(4, 8),
        deformation: float = 0.03,
        background: float = 0.5,
        contrast: str = "same",
        intensity_noise: float = 0.05,
        blur: float = 1.0,
        bias: float = 0.3,
        gamma: float = 0.25,
    ):
        shape = tuple(int(n) for n in shape)
        if len(shape) not in (2, 3) or min(shape) < 2:
            raise ValueError(f"shape must be 2D or 3D with at least 2 voxels per axis, got {shape}")
        if int(labels) != labels or labels < 2:
            raise ValueError(f"labels must be an integer of at least 2, got {labels!r}")
        if math.prod(shape) < labels:
            raise ValueError(f"a grid of {shape} has fewer voxels than {labels} labels")
        scales = tuple(int(s) for s in scales)
        if not scales or min(scales) < 2:
            raise ValueError(f"scales must be grid sizes of at least 2 points, got {scales}")
        if contrast not in CONTRASTS:
            raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
        if not 0 <= background <= 1:
            raise ValueError(f"background is a probability, got {background!r}")
        amounts = dict(
            deformation=deformation,
            intensity_noise=intensity_noise,
            blur=blur,
            bias=bias,
            gamma=gamma,
        )
        for name, value in amounts.items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        self.shape = shape
        self.labels = int(labels)
        self.scales = scales
        self.contrast = contrast
        self.deformation = float(deformation)
        self.background = float(background)
        self.intensity_noise = float(intensity_noise)
        self.blur = float(blur)
        self.bias = float(bias)
        self.gamma = float(gamma)
        self._seeds = _SeedLattice(shape, self.labels)

    @property
    def dimension(self) -> int:
        return len(self.shape)

    def sample(self, batch_size: int, generator: torch.Generator):
        """``(moving, fixed)``, ``[B, 1, *shape]`` each: the data source of the training loop."""
        batch = self.generate(batch_size, generator)
        return batch.moving, batch.fixed

    def generate(self, batch_size: int, generator: torch.Generator) -> SyntheticBatch:
        """A batch of pairs with their label maps; the same generator state gives the same batch."""
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        batch_size = int(batch_size)
        # the base maps' warps and the pairs' warps, as one batch: one exponential for all
        warps = self._random_warps(3 * batch_size, generator)
        base_warp, pair_warps = warps[:batch_size], warps[batch_size:]

        channels = sample(self._label_noise(batch_size, generator), base_warp)
        dark = torch.rand(batch_size, generator=generator) < self.background
        outside = self._outside_blob(batch_size, generator) & dark.view(-1, *[1] * self.dimension)
        channels[:, 0] += (2 * channels.abs().amax() + 1) * outside  # label 0 wins outside
        base = self._seeds.plant(channels, generator)

        # moving then fixed, one image per row: labels are read, never interpolated
        labels = sample(base.float().repeat(2, *[1] * (base.dim() - 1)), pair_warps, "nearest")
        labels = labels.long()
        _restore_missing_labels(labels, pair_warps, channels)
        images = self._paint(labels, dark.repeat(2), generator)
        return SyntheticBatch(
            moving=images[:batch_size],
            fixed=images[batch_size:],
            moving_labels=labels[:batch_size],
            fixed_labels=labels[batch_size:],
        )

    def _label_noise(self, batch_size, generator):
        """``[B, labels, *grid]``: noise at every scale, summed on the finest scale's grid."""
        finest = [max(self.scales)] * self.dimension
        total = None
        for scale in self.scales:
            noise = torch.randn(
                batch_size, self.labels, *[scale] * self.dimension, generator=generator
            )
            if scale != finest[0]:
                noise = resample(noise, finest)
            total = noise if total is None else total + noise
        return total

    def _random_warps(self, count, generator):
        """Unit-cube coordinates ``[count, D, *shape]`` of random smooth diffeomorphisms."""
        noise = torch.randn(
            count, self.dimension, *[_VELOCITY_POINTS] * self.dimension, generator=generator
        )
        velocity = _smooth(noise, _VELOCITY_SMOOTHING)
        rms = velocity.square().mean(tuple(range(1, velocity.dim())), keepdim=True).sqrt()
        size = self.deformation * torch.rand(count, generator=generator)
        velocity = velocity * (size.view(-1, *[1] * (velocity.dim() - 1)) / rms.clamp_min(1e-12))
        return Velocity(velocity).exponential()(identity_grid(self.shape))

    def _outside_blob(self, count, generator):
        """``[count, *shape]`` booleans: outside a blob of random centre, radii and ruggedness."""
        grid = identity_grid(self.shape)
        view = (count, self.dimension, *[1] * self.dimension)
        centre = 0.5 + 0.1 * (torch.rand(view, generator=generator) - 0.5)
        radii = 0.3 + 0.15 * torch.rand(view, generator=generator)
        radius = ((grid - centre) / radii).square().sum(1).sqrt()
        noise = torch.randn(count, 1, *[_BIAS_POINTS] * self.dimension, generator=generator)
        rugged = resample(_smooth(noise, _BIAS_SMOOTHING), self.shape)[:, 0]
        return radius + 0.15 * rugged / rugged.flatten(1).std(1).view(-1, *[1] * self.dimension) > 1

    def _paint(self, labels, dark, generator):
        """Images ``[N, 1, *shape]`` in [0, 1] from label maps: moving rows, then fixed rows;
        label 0 of the ``dark`` rows is painted 0."""
        count = labels.shape[0]
        pairs = count // 2
        if self.contrast == "same":
            means = self._label_means(dark[:pairs], generator).repeat(2, 1)
        else:
            means = self._label_means(dark, generator)
        spreads = self.intensity_noise * torch.rand(count, self.labels, generator=generator)
        flat = labels.reshape(count, -1)
        noise = torch.randn(flat.shape, generator=generator)
        images = (means.gather(1, flat) + spreads.gather(1, flat) * noise).reshape(labels.shape)

        widths = (self.blur * torch.rand(count, generator=generator)).tolist()
        images = torch.cat([_smooth(images[i : i + 1], w) for i, w in enumerate(widths)])

        grid = [_BIAS_POINTS] * self.dimension
        log_bias = _smooth(torch.randn(count, 1, *grid, generator=generator), _BIAS_SMOOTHING)
        log_bias = log_bias / log_bias.flatten(1).std(1).clamp_min(1e-12).view(
            -1, *[1] * (labels.dim() - 1)
        )
        strength = self.bias * torch.rand(count, generator=generator)
        log_bias = log_bias * strength.view(-1, *[1] * (labels.dim() - 1))
        images = images * resample(log_bias, self.shape).exp()

        gammas = torch.exp(self.gamma * torch.randn(count, generator=generator))
        images = _min_max(images) ** gammas.view(-1, *[1] * (labels.dim() - 1))
        return _min_max(images)

    def _label_means(self, dark, generator):
        """``[len(dark), labels]`` means, each uniform over [0, 1], no two closer than 0.4 / L.

        Each label takes its own stratum of [0, 1] (a random one) and a point in the middle
        60 % of it, so no two labels share a contrast: each label is visible. In a ``dark``
        row, label 0 (the background) takes the lowest stratum and the mean 0.
        """
        count = len(dark)
        strata = torch.rand(count, self.labels, generator=generator).argsort(1)
        within = 0.2 + 0.6 * torch.rand(count, self.labels, generator=generator)
        rows = dark.nonzero()[:, 0]
        lowest = strata[rows].argmin(1)  # the label that has the lowest stratum
        strata[rows, lowest] = strata[rows, 0]
        strata[rows, 0] = 0
        means = (strata + within) / self.labels
        means[rows, 0] = 0.0
        return means


class _SeedLattice:
    """Seeds for the labels a base map lacks: a bump that makes the label win around its seed.

    Seeds are drawn among the centres of a lattice whose cells are as wide as a bump, so bumps
    of distinct seeds never overlap and each label wins at its own seed voxel. Only labels
    with fewer voxels than a bump get one: the others need none, and a bump is a small blob
    that natural label maps do not have.
    """

    def __init__(self, shape, labels):
        strides = [math.prod(shape[axis + 1 :]) for axis in range(len(shape))]
        for margin in (_SEED_MARGIN, 0.0):  # the central part if it holds enough seeds
            for radius in (2, 1, 0):  # a bump of 5, 3 or 1 voxels across
                width = 2 * radius + 1
                starts = [math.ceil(margin * (n - 1)) for n in shape]
                stops = [math.floor((1 - margin) * (n - 1)) for n in shape]
                counts = [(stop - start + 1) // width for start, stop in zip(starts, stops)]
                if math.prod(counts) >= labels:
                    break
            else:
                continue
            break
        centres = [
            start + radius + width * torch.arange(count) for start, count in zip(starts, counts)
        ]
        centres = torch.stack(torch.meshgrid(*centres, indexing="ij")).reshape(len(shape), -1)
        self.centres = sum(c * s for c, s in zip(centres, strides))
        offsets = torch.stack(
            torch.meshgrid(*[torch.arange(-radius, radius + 1)] * len(shape), indexing="ij")
        ).reshape(len(shape), -1)
        self.offsets = sum(o * s for o, s in zip(offsets, strides))
        self.weights = torch.exp(-offsets.square().sum(0) / 2.0)
        self.labels = labels

    def plant(self, channels, generator):
        """The label maps ``[B, 1, *shape]`` of ``channels``, seeded where a label is scarce.

        The bumps are added to ``channels`` in place.
        """
        batch = channels.shape[0]
        # drawn whether needed or not, so the draws after these never depend on the data
        chosen = torch.rand(batch, len(self.centres), generator=generator).argsort(1)
        chosen = chosen[:, : self.labels]
        base = channels.max(1, keepdim=True).indices
        scarce = _label_counts(base, self.labels) < len(self.offsets)
        if not scarce.any():
            return base
        # higher than the channels' spread, so the label wins at least at its seed voxel
        height = 2 * channels.abs().amax() + 1
        index = self.centres[chosen][..., None] + self.offsets
        values = height * self.weights * scarce[..., None]
        channels.view(batch, self.labels, -1).scatter_add_(2, index, values.to(channels.dtype))
        return channels.max(1, keepdim=True).indices


def _label_counts(labels, count):
    """``[N, count]``: how many voxels of each image ``[N, 1, *shape]`` have each label."""
    images = labels.shape[0]
    rows = torch.arange(images)[:, None] * count
    flat = labels.reshape(images, -1) + rows
    return torch.bincount(flat.view(-1), minlength=images * count).view(images, count)


def _restore_missing_labels(labels, coords, channels):
    """Give a label that a warp lost the voxel the warp sends nearest to the label's core.

    ``labels [2B, 1, *shape]`` (moving rows, then fixed rows) were read at ``coords`` from the
    label maps of ``channels [B, L, *shape]``; a label's core is the voxel where it wins by
    the widest margin. Rare (a label is lost only when squeezed below a voxel or pushed out of
    view), but it makes the number of labels exact.
    """
    images, count = labels.shape[0], channels.shape[1]
    shape = channels.shape[2:]
    flat = labels.view(images, -1)
    for image, label in (_label_counts(labels, count) == 0).nonzero().tolist():
        scores = channels[image % channels.shape[0]].reshape(count, -1)
        best, runner_up = scores.topk(2, 0).values
        margin = torch.where(scores.max(0).indices == label, best - runner_up, -math.inf)
        core = torch.tensor(
            [i / (n - 1) for i, n in zip(_unravel(int(margin.argmax()), shape), shape)]
        )
        points = coords[image].reshape(coords.shape[1], -1)
        nearest = (points - core.to(points)[:, None]).square().sum(0).argmin()
        flat[image, nearest] = label


def _unravel(index, shape):
    position = []
    for n in reversed(shape):
        position.append(index % n)
        index //= n
    return position[::-1]


def _smooth(image, sigma):
    """Gaussian blur that repeats the edge instead of fading to zero at it."""
    radius = round(2 * sigma)
    if sigma <= 0 or radius == 0:
        return image
    padded = F.pad(image, [radius] * 2 * (image.dim() - 2), mode="replicate")
    blurred = gaussian_blur(padded, sigma)
    for axis in range(2, image.dim()):
        blurred = blurred.narrow(axis, radius, image.shape[axis])
    return blurred


def _min_max(images):
    """Each image scaled to [0, 1]."""
    flat = images.flatten(1)
    low = flat.amin(1).view(-1, *[1] * (images.dim() - 1))
    high = flat.amax(1).view(-1, *[1] * (images.dim() - 1))
    return ((images - low) / (high - low).clamp_min(1e-12)).clamp_(0, 1)

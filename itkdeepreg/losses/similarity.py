"""Image similarity losses: lower is more similar, images ``[B, C, *shape]``, 2D or 3D.

Every loss takes an optional ``mask`` (broadcastable to the images, 1 inside): it then
averages over the mask, not over all voxels. Local statistics (LNCC) use normalised
convolution, ``blur(x * mask) / blur(mask)``, so voxels outside the mask, or beyond the
image's edge, never enter a local window; LNCC over a box mask is LNCC of the cropped images.
The published LNCC blurs with zero padding and no renormalisation, and multiplies a mask in
before averaging over all voxels; away from edges and masks the two agree.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

_EPSILON = 1e-5  # keeps a flat window's variance from dividing by zero


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` over the voxels where ``mask`` is non-zero (weighted by it)."""
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype).expand_as(values)
    total = mask.sum()
    if total <= 0:
        raise ValueError("the mask is empty: there is nothing to average over")
    return (values * mask).sum() / total


def mse(image_a, image_b, mask=None):
    """Mean squared difference."""
    return masked_mean((image_a - image_b) ** 2, mask)


def ncc(image_a, image_b, mask=None):
    """One minus the normalised cross-correlation of the images over the mask (per batch item)."""
    weight = torch.ones_like(image_a) if mask is None else mask.to(image_a.dtype).expand_as(image_a)
    axes = tuple(range(1, image_a.dim()))
    count = weight.sum(axes, keepdim=True)
    if (count <= 0).any():
        raise ValueError("the mask is empty: there is nothing to correlate")
    a = image_a - (image_a * weight).sum(axes, keepdim=True) / count
    b = image_b - (image_b * weight).sum(axes, keepdim=True) / count
    covariance = (a * b * weight).sum(axes)
    # a floor far below any image's variance, not an epsilon added: the loss stays the same
    # for images scaled by 1e-3 or 1e3; a constant image correlates with nothing
    norm = torch.sqrt((a * a * weight).sum(axes) * (b * b * weight).sum(axes)).clamp_min(1e-20)
    return (1 - covariance / norm).mean()


def mutual_information(image_a, image_b, mask=None, bins: int = 32):
    """Minus the mutual information of the images' intensities, in nats (Parzen windows).

    Each image is scaled to ``[0, 1]`` by its range over the mask, and each voxel spreads
    over ``bins`` histogram bins by a Gaussian window of one bin's width, so the joint
    histogram, and the loss, are differentiable. For images of different modalities.
    """
    weight = torch.ones_like(image_a) if mask is None else mask.to(image_a.dtype).expand_as(image_a)
    weight = weight.reshape(-1)
    if weight.sum() <= 0:
        raise ValueError("the mask is empty: there is nothing to compare")
    centres = torch.linspace(0, 1, bins, dtype=image_a.dtype, device=image_a.device)

    def memberships(image):
        values = image.reshape(-1)
        inside = values[weight > 0]
        low, high = inside.min().detach(), inside.max().detach()
        scaled = (values - low) / (high - low).clamp_min(1e-12)
        window = torch.exp(-0.5 * ((scaled[:, None] - centres) * (bins - 1)) ** 2)
        return window / window.sum(1, keepdim=True) * weight[:, None]

    joint = memberships(image_a).T @ memberships(image_b)
    joint = joint / joint.sum()
    marginal_a, marginal_b = joint.sum(1, keepdim=True), joint.sum(0, keepdim=True)
    ratio = joint / (marginal_a * marginal_b).clamp_min(1e-12)
    return -(joint * torch.log(ratio.clamp_min(1e-12))).sum()


def ngf(image_a, image_b, mask=None, edge=0.3):
    """Normalised gradient fields (Haber and Modersitzki 2006): one minus the squared cosine of
    the angle between the images' gradients, so edges align whatever their sign: for images
    of different modalities, and local, for deformable registration.

    ``edge``: a gradient counts as an edge when it is large next to ``edge`` times the mean
    gradient magnitude of its image (over the mask); flat, noisy regions weigh less.
    """
    dimension = image_a.dim() - 2
    axes = list(range(2, 2 + dimension))

    def gradient(image):
        vectors = torch.stack(torch.gradient(image, dim=axes), 0)
        norms = (vectors**2).sum(0)
        floor = edge**2 * masked_mean(norms.detach().sqrt(), mask) ** 2 + 1e-20
        return vectors, norms + floor

    vectors_a, norms_a = gradient(image_a)
    vectors_b, norms_b = gradient(image_b)
    cosine = (vectors_a * vectors_b).sum(0) ** 2 / (norms_a * norms_b)
    return masked_mean(1 - cosine, mask)


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with a window of ``4 * sigma + 1`` voxels, zero padding.

    Each axis is a weighted sum of shifted views of the image, added in place over the
    range where the shifted view lies inside the image (zero padding without a padded copy),
    one slab at a time so that a slab stays in cache through all its shifts: memory-bound
    work, eight to thirty times faster on CPUs than ``conv1d`` or a depthwise ``conv3d``
    (``benchmarks/blur.py``). The blur is self-adjoint (a symmetric kernel with zero
    padding), so its gradient is the same blur of the incoming gradient.
    """
    return _GaussianBlur.apply(image, float(sigma))


_SLAB_BYTES = 1 << 22  # 1.6 times faster than whole images here (1 MB of L2, 32 MB of L3)


class _GaussianBlur(torch.autograd.Function):
    @staticmethod
    def forward(ctx, image, sigma):
        ctx.sigma = sigma
        radius = int(round(2 * sigma))
        offsets = torch.arange(0, radius + 1, dtype=torch.float64)
        kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
        kernel = (kernel / (2 * kernel.sum() - kernel[0])).tolist()  # kernel[shift], shift >= 0
        for axis in range(2, image.dim()):
            size = image.shape[axis]
            blurred = torch.empty_like(image)
            # slabs are cut across the outermost other spatial axis (a 1D image's channels)
            across = next(a for a in (2, 3, 1) if a != axis and a < image.dim())
            layer_bytes = image.numel() * image.element_size() // image.shape[across]
            slab = max(1, _SLAB_BYTES // layer_bytes)
            for start in range(0, image.shape[across], slab):
                width = min(slab, image.shape[across] - start)
                source = image.narrow(across, start, width)
                target = blurred.narrow(across, start, width)
                torch.mul(source, kernel[0], out=target)
                for shift in range(1, min(radius, size - 1) + 1):
                    inside = size - shift  # target[i] += w * (source[i - shift] + source[i + shift])
                    target.narrow(axis, shift, inside).add_(
                        source.narrow(axis, 0, inside), alpha=kernel[shift]
                    )
                    target.narrow(axis, 0, inside).add_(
                        source.narrow(axis, shift, inside), alpha=kernel[shift]
                    )
            image = blurred
        return image

    @staticmethod
    def backward(ctx, gradient):
        return gaussian_blur(gradient, ctx.sigma), None


# b's blurred statistics by image: an optimisation compares warped images with one fixed image
# step after step, and blurs its statistics once (weakly held: gone with the image)
_STATISTICS = torch.utils.weak.WeakIdKeyDictionary()


def _blurred_statistics(image_b, weight, sigma, cacheable):
    """``b``, ``b^2`` and the weight blurred; kept for an unmasked ``b`` that needs no gradient
    and is not changed in place (its version counter says so)."""
    cacheable = cacheable and not (
        image_b.requires_grad or image_b.is_inference() or torch.is_inference_mode_enabled()
    )
    key = (sigma, tuple(weight.shape), weight.dtype, image_b._version if cacheable else None)
    if cacheable and key in _STATISTICS.get(image_b, {}):
        return _STATISTICS[image_b][key]
    quantities = [image_b * weight, image_b * image_b * weight, weight]
    blurred = gaussian_blur(torch.cat(quantities, 1), sigma)
    if cacheable:
        _STATISTICS[image_b] = {key: blurred}  # the latest only
    return blurred


def local_statistics(image_a, image_b, sigma, mask=None):
    """Local variances and covariance in Gaussian windows, by normalised convolution."""
    weight = torch.ones_like(image_a[:, :1]) if mask is None else mask.to(image_a.dtype)
    weight = weight.expand(image_a.shape[0], 1, *image_a.shape[2:])
    channels = image_a.shape[1]
    # the blurred quantities in two passes, a's and b's: when only the warped image a needs a
    # gradient, as in registration, b's pass has no backward, and is kept for the next step
    quantities_a = torch.cat([image_a, image_a * image_a, image_a * image_b], 1)
    if mask is not None:  # a weight of ones needs no multiplying
        quantities_a = quantities_a * weight
    blurred_a = gaussian_blur(quantities_a, sigma)
    blurred_b = _blurred_statistics(image_b, weight, sigma, mask is None)
    norm = blurred_b[:, -1:].clamp_min(1e-12)
    mean_a, mean_aa, mean_ab = (blurred_a / norm).split(channels, 1)
    mean_b, mean_bb = (blurred_b[:, :-1] / norm).split(channels, 1)
    # rounding can make a flat window's variance slightly negative
    variance_a = (mean_aa - mean_a**2).clamp_min(0)
    variance_b = (mean_bb - mean_b**2).clamp_min(0)
    return variance_a, variance_b, mean_ab - mean_a * mean_b


def lncc(image_a, image_b, sigma=5.0, mask=None):
    """One minus the local normalised cross-correlation in Gaussian windows of ``4 sigma + 1``."""
    variance_a, variance_b, covariance = local_statistics(image_a, image_b, sigma, mask)
    correlation = covariance / torch.sqrt((variance_a + _EPSILON) * (variance_b + _EPSILON))
    return 1 - masked_mean(correlation, mask)


def squared_lncc(image_a, image_b, sigma=5.0, mask=None):
    """One minus the squared local correlation: indifferent to the sign of the contrast."""
    variance_a, variance_b, covariance = local_statistics(image_a, image_b, sigma, mask)
    correlation = covariance**2 / ((variance_a + _EPSILON) * (variance_b + _EPSILON))
    return 1 - masked_mean(correlation, mask)


def mind_ssc(image: torch.Tensor, radius: int = 2, dilation: int = 2) -> torch.Tensor:
    """MIND-SSC descriptors ``[B, P, *shape]`` of a single-channel image (Heinrich et al. 2013).

    The neighbours of a voxel are its ``2 D`` face neighbours at ``dilation`` voxels; each of
    the ``P`` pairs of neighbours at squared distance 2 (12 in 3D, 4 in 2D) gives the patch
    distance of the two neighbours (box window of ``2 radius + 1``), and the descriptor is
    ``exp(-(distance - min over pairs) / mean over pairs)``.
    """
    dimension = image.dim() - 2
    neighbours = [
        tuple(sign * (axis == k) for k in range(dimension))
        for axis in range(dimension)
        for sign in (-1, 1)
    ]
    pairs = [
        (p, q)
        for p, q in itertools.combinations(neighbours, 2)
        if sum((i - j) ** 2 for i, j in zip(p, q)) == 2
    ]
    padded = _replicate_pad(image, dilation)
    average = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[dimension - 1]
    distances = []
    for p, q in pairs:
        difference = _shifted(padded, p, dilation, image.shape) - _shifted(
            padded, q, dilation, image.shape
        )
        window = average(_replicate_pad(difference**2, radius), 2 * radius + 1, stride=1)
        distances.append(window)
    distance = torch.cat(distances, 1)
    distance = distance - distance.min(1, keepdim=True).values
    variance = distance.mean(1, keepdim=True)
    variance = variance.clamp(variance.mean() * 1e-3, variance.mean() * 1e3)
    return torch.exp(-distance / variance)


def mind_ssc_loss(image_a, image_b, mask=None, radius=2, dilation=2):
    """Mean squared difference of the images' MIND-SSC descriptors: works across modalities."""
    return masked_mean(
        (mind_ssc(image_a, radius, dilation) - mind_ssc(image_b, radius, dilation)) ** 2, mask
    )


def _replicate_pad(image, width):
    return F.pad(image, [width] * (2 * (image.dim() - 2)), mode="replicate")


def _shifted(padded, offset, dilation, shape):
    """The image (padded by ``dilation``) moved by ``offset * dilation`` voxels."""
    index = tuple(
        slice(dilation + o * dilation, dilation + o * dilation + n)
        for o, n in zip(offset, shape[2:])
    )
    return padded[(slice(None), slice(None)) + index]

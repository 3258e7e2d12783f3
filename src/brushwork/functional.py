"""The maths of style transfer as small pure functions on tensors, shared by every method."""

from __future__ import annotations

from typing import Sequence

import torch

#: Added to the variance before the square root, as in AdaIN and MicroAST.
EPS = 1e-5

# ITU-R BT.601 full-range RGB <-> YCbCr (as in JPEG), for colour-preserving transfer.
_RGB_TO_YCBCR = torch.tensor([
    [0.299, 0.587, 0.114],
    [-0.168736, -0.331264, 0.5],
    [0.5, -0.418688, -0.081312],
])
_YCBCR_TO_RGB = torch.linalg.inv(_RGB_TO_YCBCR)
_CHROMA_OFFSET = torch.tensor([0.0, 0.5, 0.5])


def mean_std(features: torch.Tensor, eps: float = EPS, ring: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation over the spatial positions of NxCxHxW features.

    Both are returned as NxCx1x1 (float32 for half-precision input). The variance is the unbiased one plus
    ``eps``, as in the reference implementations whose weights we load. ``ring``: the statistics of
    ``features[..., ring:-ring, ring:-ring]``, a map held with a border of that width around it.
    """
    if features.dim() != 4:
        raise ValueError(f"expected NxCxHxW features, got shape {tuple(features.shape)}")
    if features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous():
        # channels-last (the fast inference path): each position's channels are a row; a two-pass variance
        # over the rows is five times faster here than var()'s Welford pass
        return _mean_std_of_rows(features, eps, ring)
    if ring:
        features = features[..., ring:-ring, ring:-ring]
    flat = features.flatten(2)
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()  # half-precision variances lose too much (mixed-precision training)
    std = (flat.var(dim=2) + eps).sqrt()
    return flat.mean(dim=2)[..., None, None], std[..., None, None]


def _mean_std_of_rows(features: torch.Tensor, eps: float, ring: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`mean_std` of a channels-last map. A border ring is summed separately and taken off the whole map's
    sums (reductions over the strided inside of a map are three times slower than over a contiguous one)."""
    batch, channels, height, width = features.shape
    low = features.dtype in (torch.float16, torch.bfloat16)
    rows = features.permute(0, 2, 3, 1)
    rows = rows.float() if low else rows
    border = [rows[:, :ring], rows[:, height - ring:], rows[:, ring:height - ring, :ring],
              rows[:, ring:height - ring, width - ring:]] if ring else []
    count = (height - 2 * ring) * (width - 2 * ring)
    whole = rows.reshape(batch, -1, channels)
    mean = (whole.sum(dim=1) - sum(part.sum(dim=(1, 2)) for part in border)) / count
    centred = mean[:, None, None, :]
    squares = (whole - mean[:, None]).square_().sum(dim=1) - sum(
        (part - centred).square().sum(dim=(1, 2)) for part in border)
    variance = squares / max(count - 1, 1)
    return mean[..., None, None], (variance + eps).sqrt()[..., None, None]


def adaptive_instance_norm(features: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                           own: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """AdaIN: normalise each channel of ``features`` and give it the target ``mean`` and ``std`` (NxCx1x1).

    ``own`` are the statistics to normalise by, when ``features`` is a tile of a larger map whose statistics
    count (tiled inference); by default those of ``features``. The result has the dtype of ``features``.
    """
    own_mean, own_std = own if own is not None else mean_std(features)
    scale = std / own_std
    # one pass (a multiplication, then an addition, make two)
    return torch.addcmul((mean - own_mean * scale).to(features.dtype), features, scale.to(features.dtype))


def blend(values: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Weighted sum of tensors of the same shape."""
    if len(values) != len(weights) or not values:
        raise ValueError(f"need as many weights as values, got {len(weights)} weights for {len(values)} values")
    total = values[0] * weights[0]
    for value, weight in zip(values[1:], weights[1:]):
        total = total + value * weight
    return total


def normalize_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """Style weights scaled to sum to 1; equal weights when none are given."""
    if weights is None:
        return [1.0 / count] * count
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise ValueError(f"got {len(weights)} style weights for {count} style images")
    if any(w < 0 or w != w for w in weights) or sum(weights) <= 0:
        raise ValueError(f"style weights must be non-negative with a positive sum, not {weights}")
    total = sum(weights)
    return [w / total for w in weights]


def rgb_to_ycbcr(image: torch.Tensor) -> torch.Tensor:
    """Nx3xHxW RGB in [0, 1] to YCbCr (BT.601 full range), chroma centred on 0.5."""
    matrix = _RGB_TO_YCBCR.to(image)
    return torch.einsum("ij,njhw->nihw", matrix, image) + _CHROMA_OFFSET.to(image)[:, None, None]


def ycbcr_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr`."""
    matrix = _YCBCR_TO_RGB.to(image)
    return torch.einsum("ij,njhw->nihw", matrix, image - _CHROMA_OFFSET.to(image)[:, None, None])


def preserve_color(stylised: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Luminance-only transfer: the stylised image's luminance with the content image's chroma.

    Both are Nx3xHxW RGB in [0, 1] of the same size; the result is clamped to [0, 1].
    """
    if stylised.shape != content.shape:
        raise ValueError(f"stylised {tuple(stylised.shape)} and content {tuple(content.shape)} differ in shape")
    luma = rgb_to_ycbcr(stylised)[:, :1]
    chroma = rgb_to_ycbcr(content)[:, 1:]
    return ycbcr_to_rgb(torch.cat([luma, chroma], dim=1)).clamp(0, 1)


def match_color(source: torch.Tensor, reference: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Colour histogram matching to first and second order: an affine map of ``source``'s RGB values so that
    their mean and covariance become ``reference``'s (Gatys et al. 2017, "Controlling Perceptual Factors in
    Neural Style Transfer", used on the style before stylising to keep the content's colours).

    Both are 1x3xHxW RGB in [0, 1] (sizes may differ); the result has ``source``'s shape, clamped to [0, 1].
    The map is x -> C_r^1/2 C_s^-1/2 (x - mu_s) + mu_r with symmetric matrix square roots.
    """
    def stats(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = image.double().reshape(3, -1)
        mean = flat.mean(dim=1, keepdim=True)
        centred = flat - mean
        return mean, centred @ centred.T / centred.shape[1] + eps * torch.eye(3, dtype=flat.dtype, device=flat.device)

    def matrix_power(matrix: torch.Tensor, power: float) -> torch.Tensor:
        values, vectors = torch.linalg.eigh(matrix)
        return vectors @ torch.diag(values.clamp_min(eps) ** power) @ vectors.T

    if source.shape[:2] != (1, 3) or reference.shape[:2] != (1, 3):
        raise ValueError("match_color takes 1x3xHxW images")
    source_mean, source_cov = stats(source)
    reference_mean, reference_cov = stats(reference)
    transform = matrix_power(reference_cov, 0.5) @ matrix_power(source_cov, -0.5)
    flat = source.double().reshape(3, -1)
    matched = transform @ (flat - source_mean) + reference_mean
    return matched.reshape(source.shape).to(source.dtype).clamp(0, 1)

"""Losses and distances on VGG features, as small functions shared by training and evaluation.

Each takes feature dicts (layer name -> NxCxHxW tensor, as :class:`brushwork.vgg.VGGFeatures` returns them) and
averages over the batch.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from .functional import mean_std

Features = Mapping[str, torch.Tensor]

#: The layers of the MicroAST / AdaIN papers (they exist in VGG16 and VGG19 alike).
CONTENT_LAYER = "relu4_1"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
#: The layers LPIPS takes from VGG.
PERCEPTUAL_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


def content_loss(output: Features, target: Features, layer: str = CONTENT_LAYER) -> torch.Tensor:
    """Mean squared difference of the features at one layer."""
    return F.mse_loss(output[layer], target[layer])


def mean_std_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared difference of channel means plus that of channel standard deviations (AdaIN's style loss)."""
    output_mean, output_std = mean_std(output)
    target_mean, target_std = mean_std(target)
    return F.mse_loss(output_mean, target_mean) + F.mse_loss(output_std, target_std)


def style_loss(output: Features, target: Features, layers: Sequence[str] = STYLE_LAYERS) -> torch.Tensor:
    """:func:`mean_std_loss` summed over the style layers, as AdaIN and MicroAST train with it."""
    return torch.stack([mean_std_loss(output[layer], target[layer]) for layer in layers]).sum()


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """NxCxC channel correlations, divided by C*H*W so that image size does not change their scale."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def gram_loss(output: Features, target: Features, layers: Sequence[str] = STYLE_LAYERS) -> torch.Tensor:
    """Squared difference of Gram matrices, summed over the style layers (one target serves a batch)."""
    per_layer = []
    for layer in layers:
        output_gram, target_gram = gram_matrix(output[layer]), gram_matrix(target[layer])
        per_layer.append(F.mse_loss(output_gram, target_gram.expand_as(output_gram)))
    return torch.stack(per_layer).sum()


def relative_gram_loss(output: Features, target_grams: Mapping[str, torch.Tensor],
                       layers: Sequence[str] = STYLE_LAYERS) -> torch.Tensor:
    """Squared difference of Gram matrices relative to the target's (divided by the target Gram's mean square),
    summed over ``layers``; ``target_grams`` are 1xCxC or NxCxC per layer.

    Plain Gram losses are dominated by the first layer (its activations are the largest: with a Caffe-scale VGG
    relu1_2 outweighs relu4_3 by seven orders of magnitude); relative ones give every layer an equal say, and the
    same weights work for any VGG."""
    per_layer = []
    for layer in layers:
        gram, target = gram_matrix(output[layer]), target_grams[layer].to(output[layer].dtype)
        per_layer.append(F.mse_loss(gram, target.expand_as(gram)) / target.float().pow(2).mean().clamp_min(1e-12))
    return torch.stack(per_layer).sum()


def relative_content_loss(output: Features, target: Features, layer: str) -> torch.Tensor:
    """Mean squared difference of the features at one layer relative to the target's mean square."""
    return F.mse_loss(output[layer], target[layer]) / target[layer].float().pow(2).mean().clamp_min(1e-12)


#: SSIM windows of the structure term: torchmetrics' default (Gaussian, 11 px, sigma 1.5) and the evaluation's own
#: (scikit-image's default: 7x7 uniform, as :func:`brushwork.metrics.ssim` measures it).
STRUCTURE_WINDOWS = {"gaussian11": {"gaussian_kernel": True, "kernel_size": 11, "sigma": 1.5},
                     "uniform7": {"gaussian_kernel": False, "kernel_size": 7}}


def _luma(image: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], device=image.device).view(1, 3, 1, 1)
    return (image.float() * weights).sum(dim=1)


def structure_loss(output: torch.Tensor, content: torch.Tensor, window: str = "gaussian11") -> torch.Tensor:
    """1 - SSIM between the luminance of two NxRGBxHxW batches in [0, 1] over a ``window`` of
    :data:`STRUCTURE_WINDOWS`: 0 when the output keeps every edge and texture of the content."""
    from torchmetrics.functional.image import structural_similarity_index_measure  # a second to import: on use

    luma = [_luma(image).unsqueeze(1) for image in (output, content)]
    return 1 - structural_similarity_index_measure(luma[0], luma[1], data_range=1.0, **STRUCTURE_WINDOWS[window])


def border_differences(image: torch.Tensor, edge: int = 4, inner: int = 12) -> torch.Tensor:
    """N x 4 sides x 2: how much the luminance of an NxRGBxHxW batch's outermost ``edge`` rows or columns differs
    from the band inside them (to ``inner``), in mean and in standard deviation, per side (top, bottom, left,
    right), in the image's units."""
    luma = _luma(image)
    flipped = luma.transpose(-1, -2)
    sides = [luma, luma.flip(-2), flipped, flipped.flip(-2)]  # each side's rows first
    rows = []
    for side in sides:
        outer, band = side[:, :edge].flatten(1), side[:, edge:inner].flatten(1)
        rows.append(torch.stack([(outer.mean(1) - band.mean(1)).abs(),
                                 (outer.std(1, unbiased=False) - band.std(1, unbiased=False)).abs()], dim=-1))
    return torch.stack(rows, dim=1)


def frame_loss(output: torch.Tensor, content: torch.Tensor, edge: int = 4, inner: int = 12) -> torch.Tensor:
    """What the output's border differs from the band inside it beyond what the content's does, in mean and
    standard deviation of luminance, summed over the four sides and averaged over the batch (0 when the output
    draws no frame). The training form of :func:`brushwork.metrics.frame_artefact`, which takes the largest of
    the same excesses in grey levels."""
    excess = border_differences(output, edge, inner) - border_differences(content, edge, inner).detach()
    return F.relu(excess).sum(dim=(1, 2)).mean()


def unit_normalize(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Scale every spatial position's feature vector to unit length (as LPIPS does)."""
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def perceptual_distances(a: Features, b: Features, layers: Sequence[str] = PERCEPTUAL_LAYERS) -> torch.Tensor:
    """LPIPS-style distance without learned weights, one per image of the batch: squared difference of
    unit-normalised features, summed over channels, averaged over positions and then over layers. 0 for
    identical images, at most 4."""
    return torch.stack([(unit_normalize(a[layer]) - unit_normalize(b[layer])).pow(2).sum(dim=1).flatten(1).mean(1)
                        for layer in layers]).mean(0)


def perceptual_distance(a: Features, b: Features, layers: Sequence[str] = PERCEPTUAL_LAYERS) -> torch.Tensor:
    """:func:`perceptual_distances` averaged over the batch."""
    return perceptual_distances(a, b, layers).mean()


def diversity_hinge(a: Features, b: Features, margin: float, layers: Sequence[str] = PERCEPTUAL_LAYERS) -> torch.Tensor:
    """max(0, margin - d(a_i, b_i)) averaged over the batch, d the per-image :func:`perceptual_distances`: for two
    stylisations of the same pair from different codes, it pushes them at least ``margin`` apart (not the VST
    paper's loss; a hinged form of the mode-seeking loss of Mao et al., 2019)."""
    return F.relu(margin - perceptual_distances(a, b, layers)).mean()


def l1_content_loss(output: Features, target: Features, layer: str = CONTENT_LAYER) -> torch.Tensor:
    """Mean absolute difference of the features at one layer (less swayed by outliers than MSE)."""
    return F.l1_loss(output[layer], target[layer])


def cosine_distance(a: torch.Tensor, b: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Mean of 1 - cos(a, b) along ``dim``; 0 for parallel vectors, at most 2.

    Computed in float32 with the norms' product floored at ``eps``, so zero vectors and half precision give a
    finite value and finite gradients (half-precision norms under- and overflow, which gave the seed project NaNs).
    """
    a, b = a.float(), b.float()
    dot = (a * b).sum(dim)
    norms = (a.pow(2).sum(dim) * b.pow(2).sum(dim)).clamp_min(eps * eps).sqrt()
    return (1 - dot / norms).mean()


def cosine_content_loss(output: Features, target: Features, layer: str = CONTENT_LAYER) -> torch.Tensor:
    """Cosine distance between the feature vectors at every position of one layer."""
    return cosine_distance(output[layer], target[layer])


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels, down and across (a smoothness prior)."""
    down = (image[..., 1:, :] - image[..., :-1, :]).abs().mean()
    across = (image[..., :, 1:] - image[..., :, :-1]).abs().mean()
    return down + across


def signal_distances(output: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    """NxN matrix: entry (i, j) is the distance between output i's and target j's style signals.

    Each argument lists the signal components (for MicroAST: means, standard deviations, filter weights and
    biases of both levels), each of shape NxC; a component's distance is its mean squared difference, and the
    components add up, as in the reference implementation.
    """
    total = 0
    for out, tgt in zip(output, target, strict=True):
        out, tgt = out.flatten(1), tgt.flatten(1)
        total = total + (out[:, None, :] - tgt[None, :, :]).pow(2).mean(dim=2)
    return total


def style_signal_contrastive_loss(output: Sequence[torch.Tensor], target: Sequence[torch.Tensor],
                                  negatives: int | None = None) -> torch.Tensor:
    """MicroAST's SSC loss: sum over i of d(o_i, s_i) / sum over negatives j of d(o_i, s_j).

    Pulls each output's style signals towards those of its own style image and away from the other styles in the
    batch. ``negatives`` (default: all N - 1 others) takes, for sample i, the styles i+1, ..., i+negatives
    (cyclically). Computed for the whole batch at once.
    """
    distances = signal_distances(output, target)
    n = distances.shape[0]
    if n < 2:
        raise ValueError("the style-signal contrastive loss needs a batch of at least 2")
    negatives = n - 1 if negatives is None else negatives
    if not 1 <= negatives <= n - 1:
        raise ValueError(f"negatives must be between 1 and {n - 1} for a batch of {n}, not {negatives}")
    rows = torch.arange(n, device=distances.device)
    offsets = torch.arange(1, negatives + 1, device=distances.device)
    negative = distances[rows[:, None], (rows[:, None] + offsets[None, :]) % n].sum(dim=1)
    return (distances.diagonal() / negative).sum()


def gram_distances(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
                   scale: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per sample (N): squared difference of Gram matrices ``a`` and ``b`` (NxCxC per layer), each layer divided
    by the mean square of ``scale``'s Gram matrices (per sample), summed over the layers."""
    total = 0
    for layer in a:
        norm = scale[layer].float().pow(2).mean(dim=(1, 2)).clamp_min(1e-12)
        total = total + (a[layer] - b[layer]).float().pow(2).mean(dim=(1, 2)) / norm
    return total


def disentanglement_hinge(output: Features, style_grams: Mapping[str, torch.Tensor],
                          layers: Sequence[str] = STYLE_LAYERS, margin: float = 0.0) -> torch.Tensor:
    """Variational style transfer's disentanglement loss, for a batch in pairs (2k, 2k+1) that share a style
    code: max(0, margin + d(y1, y2) - d(y1, s)) with d the (relative) Gram distance, taken with each of the
    pair as y1; ``style_grams`` are the Gram matrices of each sample's style image (NxCxC per layer).

    Two stylisations with the same code must be closer in style space than a stylisation and the style image:
    the content must not leak into the style of the result."""
    if output[layers[0]].shape[0] % 2:
        raise ValueError("the disentanglement loss needs a batch of pairs (an even size)")
    grams = {layer: gram_matrix(output[layer]) for layer in layers}
    first = {layer: grams[layer][0::2] for layer in layers}
    second = {layer: grams[layer][1::2] for layer in layers}
    target = {layer: style_grams[layer][0::2] for layer in layers}
    between = gram_distances(first, second, target)
    return torch.cat([F.relu(margin + between - gram_distances(first, target, target)),
                      F.relu(margin + between - gram_distances(second, target, target))]).mean()


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over the latent dimensions, averaged over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


#: Content losses by name, for configuration files.
CONTENT_LOSSES = {"mse": content_loss, "l1": l1_content_loss, "cosine": cosine_content_loss}
#: Style losses by name.
STYLE_LOSSES = {"mean_std": style_loss, "gram": gram_loss}

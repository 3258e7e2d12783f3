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
    """:func:`mean_std_loss` averaged over the style layers."""
    return torch.stack([mean_std_loss(output[layer], target[layer]) for layer in layers]).mean()


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """NxCxC channel correlations, divided by C*H*W so that image size does not change their scale."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def gram_loss(output: Features, target: Features, layers: Sequence[str] = STYLE_LAYERS) -> torch.Tensor:
    """Squared difference of Gram matrices, averaged over the style layers (one target serves a batch)."""
    per_layer = []
    for layer in layers:
        output_gram, target_gram = gram_matrix(output[layer]), gram_matrix(target[layer])
        per_layer.append(F.mse_loss(output_gram, target_gram.expand_as(output_gram)))
    return torch.stack(per_layer).mean()


def unit_normalize(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Scale every spatial position's feature vector to unit length (as LPIPS does)."""
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def perceptual_distance(a: Features, b: Features, layers: Sequence[str] = PERCEPTUAL_LAYERS) -> torch.Tensor:
    """LPIPS-style distance without learned weights: squared difference of unit-normalised features, summed
    over channels, averaged over positions and then over layers. 0 for identical images, at most 4."""
    per_layer = [(unit_normalize(a[layer]) - unit_normalize(b[layer])).pow(2).sum(dim=1).mean() for layer in layers]
    return torch.stack(per_layer).mean()

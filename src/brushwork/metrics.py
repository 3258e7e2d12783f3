"""Quality metrics of a stylisation: how much content it keeps and how close it comes to the style.

SSIM and the colour distance need no network. The feature metrics use a loss network from :mod:`brushwork.vgg`,
and every result names it (``loss_net``): numbers from different loss networks are not comparable.
"""

from __future__ import annotations

import math

from typing import Mapping

import numpy as np
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from . import losses
from .api import choose_device
from .images import to_image
from .vgg import load_loss_network

#: 64 fixed unit directions in RGB space for the sliced Wasserstein colour distance.
COLOR_DIRECTIONS = torch.nn.functional.normalize(
    torch.randn(64, 3, generator=torch.Generator().manual_seed(0)), dim=1)

#: Every layer the feature metrics read.
METRIC_LAYERS = tuple(dict.fromkeys([losses.CONTENT_LAYER, *losses.STYLE_LAYERS, *losses.PERCEPTUAL_LAYERS]))


def _gray(image: Image.Image | torch.Tensor) -> np.ndarray:
    image = to_image(image) if isinstance(image, torch.Tensor) else image
    return np.asarray(image.convert("L"))


def ssim(a: Image.Image | torch.Tensor, b: Image.Image | torch.Tensor) -> float:
    """SSIM of the two images in 8-bit grayscale, as the MicroAST paper measures it (scikit-image's
    ``structural_similarity`` with its defaults: 7x7 uniform window)."""
    gray_a, gray_b = _gray(a), _gray(b)
    if gray_a.shape != gray_b.shape:
        raise ValueError(f"SSIM needs images of one size, got {gray_a.shape} and {gray_b.shape}")
    return float(structural_similarity(gray_a, gray_b, data_range=255))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two images in [0, 1] (clamped first, as when saved); inf if equal."""
    mse = torch.mean((a.detach().float().clamp(0, 1) - b.detach().float().clamp(0, 1)) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def color_distance(a: torch.Tensor, b: torch.Tensor, quantiles: int = 256, max_pixels: int = 1 << 16) -> float:
    """Sliced Wasserstein-1 distance between the colour distributions of two Nx3xHxW images in [0, 1].

    The pixels of each image are projected on :data:`COLOR_DIRECTIONS`; the distance is the mean absolute
    difference of the projections' quantiles. Image sizes may differ; pixel positions do not matter. Images with
    more than ``max_pixels`` pixels are read at an even stride over their pixels, which keeps the quantiles and
    the cost small.
    """
    levels = torch.linspace(0, 1, quantiles)

    def projected_quantiles(image: torch.Tensor) -> torch.Tensor:
        pixels = image.detach().float().cpu().permute(1, 0, 2, 3).reshape(3, -1)
        pixels = pixels[:, :: max(1, -(-pixels.shape[1] // max_pixels))]
        return torch.quantile(COLOR_DIRECTIONS @ pixels, levels, dim=1)

    return float((projected_quantiles(a) - projected_quantiles(b)).abs().mean())


class Metrics:
    """Every metric of a (content, style, output) triple with one loss network."""

    def __init__(self, loss_net: str = "vgg16-hed", *, device: str | torch.device = "auto", weights_dir=None):
        self.loss_net = loss_net
        self.device = choose_device(device)
        self.network = load_loss_network(loss_net, METRIC_LAYERS, device=self.device, weights_dir=weights_dir)

    @torch.inference_mode()
    def features(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss-network features of a 1x3xHxW image in [0, 1]; worth keeping for an image used many times."""
        return self.network(image.to(self.device))

    def style_features(self, style: torch.Tensor) -> dict[str, torch.Tensor]:
        """Only the features the style metrics read: less to keep for a style image used many times."""
        return {layer: value for layer, value in self.features(style).items() if layer in losses.STYLE_LAYERS}

    @torch.inference_mode()
    def measure(self, content: torch.Tensor, style: torch.Tensor, output: torch.Tensor, *,
                content_features: Mapping[str, torch.Tensor] | None = None,
                style_features: Mapping[str, torch.Tensor] | None = None) -> dict[str, float | str]:
        """All metrics of one stylisation (1x3xHxW tensors in [0, 1]; output and content of one size).

        ``ssim``, ``content_loss`` and ``perceptual_distance`` compare output and content (content kept);
        ``style_loss``, ``gram_loss`` and ``color_distance`` compare output and style (style reached).
        """
        content_features = content_features or self.features(content)
        style_features = style_features or self.style_features(style)
        output_features = self.features(output)
        return {
            "ssim": ssim(content, output),
            "content_loss": float(losses.content_loss(output_features, content_features)),
            "perceptual_distance": float(losses.perceptual_distance(output_features, content_features)),
            "style_loss": float(losses.style_loss(output_features, style_features)),
            "gram_loss": float(losses.gram_loss(output_features, style_features)),
            "color_distance": color_distance(output, style),
            "loss_net": self.loss_net,
        }

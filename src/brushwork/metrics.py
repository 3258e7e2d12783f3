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
from .devices import choose_device
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


def grid_artefact(output: Image.Image | torch.Tensor, content: Image.Image | torch.Tensor, period: int = 4,
                  ring: int = 6) -> float:
    """How much more the output's spectrum peaks at the frequencies of a ``period``-pixel grid than the content's,
    in dB (0: no more than the photo; a decoder that upsamples 4x with a regular pattern gives several dB).

    A decoder that upsamples by 2 twice can leave a fine regular crosshatch: energy at multiples of 1/4 cycle per
    pixel in x and y. For each such frequency (but 0, 0) the spectrum's power there (Hann-windowed grayscale) is
    compared with the median power of the frequencies around it (a ``ring`` of bins): natural images and
    paintings have smooth spectra, a regular pattern a sharp peak. The peaks' mean prominence of the content is
    subtracted, so that a photo's own periodic structure does not count.
    """
    def prominence(image) -> float:
        gray = _gray(image).astype(np.float64)
        height, width = gray.shape
        if min(height, width) < 8 * period:
            raise ValueError(f"the grid artefact needs images of at least {8 * period} px a side")
        window = np.outer(np.hanning(height), np.hanning(width))
        power = np.abs(np.fft.fft2((gray - gray.mean()) * window)) ** 2
        scores = []
        for ky in range(period):
            for kx in range(period):
                if ky == kx == 0:
                    continue
                cy, cx = round(ky * height / period), round(kx * width / period)
                rows = np.arange(cy - ring, cy + ring + 1) % height
                cols = np.arange(cx - ring, cx + ring + 1) % width
                patch = power[np.ix_(rows, cols)]
                peak = patch[ring - 1:ring + 2, ring - 1:ring + 2].max()  # the peak may fall between bins
                around = np.concatenate([patch[:ring - 1].ravel(), patch[ring + 2:].ravel()])
                scores.append(10 * np.log10((peak + 1e-12) / (np.median(around) + 1e-12)))
        return float(np.mean(scores))

    return prominence(output) - prominence(content)


def frame_artefact(output: Image.Image | torch.Tensor, content: Image.Image | torch.Tensor, edge: int = 4,
                   inner: int = 12) -> float:
    """How much more the output's outermost rows and columns differ from the band just inside them than the
    content's do, in grey levels (0-255): the larger excess, over the four sides, of the difference of mean and
    of standard deviation (a frame that a decoder draws along the border shows in one or both)."""
    def differences(image) -> np.ndarray:
        gray = _gray(image).astype(np.float64)
        sides = [gray, gray[::-1], gray.T, gray.T[::-1]]  # top, bottom, left, right as leading rows
        return np.array([[abs(side[:edge].mean() - side[edge:inner].mean()),
                          abs(side[:edge].std() - side[edge:inner].std())] for side in sides])

    return float((differences(output) - differences(content)).max())


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
        style_loss = float(losses.style_loss(output_features, style_features))
        return {
            "ssim": ssim(content, output),
            "content_loss": float(losses.content_loss(output_features, content_features)),
            "perceptual_distance": float(losses.perceptual_distance(output_features, content_features)),
            "style_loss": style_loss,
            # How far the method moved the photo towards the painting: the photo's own style loss / the output's.
            "style_ratio": float(losses.style_loss(content_features, style_features)) / max(style_loss, 1e-12),
            "gram_loss": float(losses.gram_loss(output_features, style_features)),
            "color_distance": color_distance(output, style),
            "grid_artefact": grid_artefact(output, content) if min(output.shape[-2:]) >= 32 else math.nan,
            "frame_artefact": frame_artefact(output, content) if min(output.shape[-2:]) >= 24 else math.nan,
            "loss_net": self.loss_net,
        }

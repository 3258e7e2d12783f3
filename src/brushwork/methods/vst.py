"""Variational style transfer (Schopohl & Fuchsgruber, TU Munich 2019): a style is a Gaussian in a latent space.

- **Content encoder**: a frozen VGG to relu4_1 (as AdaIN's), which is also the training loss network.
- **Style encoder**: the channel means and standard deviations of the style's VGG features at relu1_1..relu4_1
  (log-scaled) give the mean ``mu`` and log-variance ``logvar`` of a diagonal Gaussian over style codes ``z``.
  The latent space is framed by the principal axes of the statistics of the training paintings (whitened, so
  N(0, I) is a typical painting); small MLPs learn a correction of ``mu`` and the log-variance.
- **Decoder**: a mapping turns ``z`` into the relu4_1 statistics the content features are renormalised to
  (adaptive instance normalisation; the code's point in the style space plus a learned correction) and into a
  scale and shift per channel after each upsampling of the decoder (the same modulation, deeper). The decoder
  mirrors the encoder like AdaIN's, so it can start from a trained AdaIN decoder.

Framing the latent space by principal axes lets training start from a working model (AdaIN with the style's
statistics compressed to 64 numbers) instead of a decoder that ignores the code: with a freshly initialised
encoder and mapping, 300 CPU steps left every style's code at the prior and every output the same brown
texture.

Training samples ``z = mu + sigma * eps`` (the reparameterisation trick). At inference the mean code gives the
deterministic result, ``noise`` gives samples (several stylisations of one pair), and several styles are
interpolated by mixing their Gaussians (means and standard deviations) with weights.

Samples are drawn at a *temperature* T, ``eps ~ N(0, T^2 I)``: reduced-temperature sampling as in Glow (Kingma &
Dhariwal 2018), not part of the VST paper, which samples at T = 1. The tails of the Gaussian hold the codes whose
paintings stray furthest from the style; a lower T trades some variety between samples for keeping every sample
near the style. A model folder's ``training.json`` may set ``sample_temperature`` (the shipped ``vst`` does, see its
model card); otherwise T = 1.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from ..errors import BrushworkError, WeightsError
from ..functional import adaptive_instance_norm, mean_std, normalize_weights
from ..tiling import map_tiles
from ..vgg import BLOCKS, VGGFeatures, load_loss_network
from ..weights import read_state_dict
from .adain import DECODER_HALO, SIZE_MULTIPLE, AdaIN, AdaINDecoder, EncodedFeatures
from .microast import pad_to

#: The content code, and the layers whose statistics the style encoder reads.
ENCODER_LAYER = "relu4_1"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
LATENT_DIM = 64
#: The largest code a weights folder may declare (training frames the space with at most 256 paintings).
MAX_LATENT_DIM = 1024
#: The highest sampling temperature (far beyond it the codes leave every painting the model knows).
MAX_TEMPERATURE = 10.0
HIDDEN = 256
WEIGHTS_FILE = "vst.pth"


def style_statistics(features: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """NxD: log(1 + mean) and log(1 + std) of every channel at :data:`STYLE_LAYERS` (log-scaled, because VGG
    activations span orders of magnitude)."""
    parts = []
    for layer in STYLE_LAYERS:
        mean, std = mean_std(features[layer].float())
        parts += [mean.flatten(1), std.flatten(1)]
    return torch.log1p(torch.cat(parts, dim=1).clamp_min(0))


def _widths(architecture: str) -> list[int]:
    """Channels of the style layers of a VGG (relu1_1 .. relu4_1)."""
    return [block[0] for block in BLOCKS[architecture][:4]]


class StyleSpace(nn.Module):
    """The linear frame of the latent space: the principal axes of the style statistics of a set of paintings.

    ``center`` is their mean, ``basis`` (D x latent_dim, orthonormal columns) the leading principal directions
    and ``scale`` the standard deviation along each, so that a code of N(0, I) is a typical painting's
    statistics. Set once from training styles (:meth:`fit`) and saved with the model."""

    def __init__(self, dim: int, latent_dim: int):
        super().__init__()
        self.register_buffer("center", torch.zeros(dim))
        self.register_buffer("basis", torch.eye(dim, latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    @torch.no_grad()
    def fit(self, statistics: torch.Tensor) -> None:
        """Principal axes of Nx D statistics (N > latent_dim)."""
        latent_dim = self.basis.shape[1]
        if statistics.shape[0] <= latent_dim:
            raise ValueError(f"the style space needs more than {latent_dim} style images, not {statistics.shape[0]}")
        center = statistics.mean(dim=0)
        _, singular, vectors = torch.linalg.svd(statistics - center, full_matrices=False)
        self.center.copy_(center)
        self.basis.copy_(vectors[:latent_dim].T)
        self.scale.copy_((singular[:latent_dim] / (statistics.shape[0] - 1) ** 0.5).clamp_min(1e-4))

    def project(self, statistics: torch.Tensor) -> torch.Tensor:
        return (statistics - self.center) @ self.basis / self.scale

    def reconstruct(self, code: torch.Tensor) -> torch.Tensor:
        return self.center + (code * self.scale) @ self.basis.T


def _mlp(inputs: int, outputs: int, hidden: int) -> nn.Sequential:
    """A two-layer MLP whose output starts at zero (a learned correction on top of the linear frame)."""
    mlp = nn.Sequential(nn.Linear(inputs, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, outputs))
    nn.init.zeros_(mlp[-1].weight)
    nn.init.zeros_(mlp[-1].bias)
    return mlp


#: The standard deviation of style codes at initialisation, in units of the paintings' spread along each axis.
INITIAL_SIGMA = 0.5


class StyleEncoder(nn.Module):
    """VGG statistics of a style image -> (mu, logvar) of its style code: the statistics' coordinates in the style
    space plus a learned correction, and a learned log-variance."""

    def __init__(self, space: StyleSpace, latent_dim: int = LATENT_DIM, hidden: int = HIDDEN):
        super().__init__()
        dim = space.center.shape[0]
        self.correction = _mlp(dim, latent_dim, hidden)
        self.logvar = _mlp(dim, latent_dim, hidden)
        nn.init.constant_(self.logvar[-1].bias, 2.0 * math.log(INITIAL_SIGMA))
        self.latent_dim = latent_dim
        self.__dict__["space"] = space  # shared with the mapping; registered once, in VSTNetwork

    def forward(self, features: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        statistics = style_statistics(features)
        mu = self.space.project(statistics) + self.correction(statistics)
        return mu, self.logvar(statistics).clamp(-12.0, 6.0)


class Mapping(nn.Module):
    """Style code -> relu4_1 mean and std targets (the code's statistics in the style space, plus a learned
    correction), and a (scale, shift) per channel per decoder stage (starting at the identity)."""

    def __init__(self, space: StyleSpace, latent_dim: int, channels: int, stages: Sequence[int], hidden: int = HIDDEN):
        super().__init__()
        self.channels, self.stages = channels, tuple(stages)
        self.correction = _mlp(latent_dim, 2 * channels, hidden)
        self.modulation = _mlp(latent_dim, 2 * sum(stages), hidden)
        self.__dict__["space"] = space

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        statistics = self.space.reconstruct(z)[:, -2 * self.channels:] + self.correction(z)  # relu4_1's come last
        log_mean, log_std = statistics.chunk(2, dim=1)
        mean = torch.expm1(log_mean.clamp(0, 10)).clamp_min(0)[..., None, None]
        std = torch.expm1(log_std.clamp(0, 10)).clamp_min(1e-5)[..., None, None]
        stages = []
        for chunk in self.modulation(z).split([2 * c for c in self.stages], dim=1):
            scale, shift = chunk.chunk(2, dim=1)
            stages.append((1.0 + scale[..., None, None], shift[..., None, None]))
        return mean, std, stages


class ModulatedDecoder(nn.Module):
    """AdaIN's decoder with a per-channel scale and shift after each upsampling."""

    def __init__(self, architecture: str = "vgg16"):
        super().__init__()
        self.layers = AdaINDecoder(architecture)
        self.stages = []
        channels = None
        for layer in self.layers:
            if isinstance(layer, nn.Conv2d):
                channels = layer.out_channels
            elif isinstance(layer, nn.Upsample):
                self.stages.append(channels)

    def forward(self, x: torch.Tensor, modulation: Sequence[tuple[torch.Tensor, torch.Tensor]],
                strength: float = 1.0) -> torch.Tensor:
        stage = 0
        for layer in self.layers:
            x = layer(x)
            if isinstance(layer, nn.Upsample):
                scale, shift = modulation[stage]
                if strength != 1.0:
                    scale, shift = 1.0 + strength * (scale - 1.0), strength * shift
                x = x * scale.to(x.dtype) + shift.to(x.dtype)
                stage += 1
        return x


class VSTNetwork(nn.Module):
    """The trained parts: style space, style encoder, mapping and decoder (the VGG encoder is kept apart)."""

    def __init__(self, architecture: str = "vgg16", latent_dim: int = LATENT_DIM):
        super().__init__()
        self.space = StyleSpace(2 * sum(_widths(architecture)), latent_dim)
        self.style_encoder = StyleEncoder(self.space, latent_dim)
        self.decoder = ModulatedDecoder(architecture)
        self.mapping = Mapping(self.space, latent_dim, BLOCKS[architecture][3][0], self.decoder.stages)
        self.latent_dim = latent_dim

    def paint(self, content_features: torch.Tensor, z: torch.Tensor, alpha: float = 1.0,
              own: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Decode relu4_1 content features with style code ``z`` (``own``: the content's statistics, when
        ``content_features`` is a tile of a larger image)."""
        mean, std, modulation = self.mapping(z)
        target = adaptive_instance_norm(content_features, mean.to(content_features.dtype),
                                        std.to(content_features.dtype), own)
        if alpha < 1.0:
            target = alpha * target + (1.0 - alpha) * content_features
        return self.decoder(target, modulation, alpha)


@dataclass
class StyleCode:
    """What the model keeps of a style: the Gaussian over its codes (N x latent_dim each)."""

    mu: torch.Tensor
    logvar: torch.Tensor

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    @staticmethod
    def blend(items: Sequence["StyleCode"], weights: Sequence[float]) -> "StyleCode":
        """The weighted mix of several Gaussians: means and standard deviations mixed linearly."""
        mu = sum(w * s.mu for s, w in zip(items, weights))
        std = sum(w * s.std for s, w in zip(items, weights))
        return StyleCode(mu, 2.0 * torch.log(std))


class VariationalStyleTransfer(nn.Module):
    """VGG content encoder + style encoder + mapping + modulated decoder, with the methods' interface."""

    method = "vst"
    #: ``stylize`` takes ``noise``: one draw per sample from N(0, I) (see :meth:`noise`).
    supports_samples = True

    def __init__(self, encoder: VGGFeatures, network: VSTNetwork | None = None, encoder_name: str = "",
                 temperature: float = 1.0):
        super().__init__()
        missing = [layer for layer in STYLE_LAYERS if layer not in encoder.layers]
        if missing:
            raise ValueError(f"the encoder must give {', '.join(missing)}")
        self.encoder = encoder
        self.network = network if network is not None else VSTNetwork(encoder.architecture)
        self.encoder_name = encoder_name
        #: The sampling temperature :meth:`noise` draws at unless told otherwise (see the module's docstring).
        self.temperature = check_temperature(temperature)

    @property
    def latent_dim(self) -> int:
        return self.network.latent_dim

    # The same VGG encoder as AdaIN's, with the same content code (relu4_1).
    encode = AdaIN.encode

    def encode_style(self, style: torch.Tensor, tile: int | None = None) -> StyleCode:
        """The Gaussian of Nx3xHxW style images' codes (``tile`` is accepted for the interface; styles are
        encoded whole, as their statistics are over the whole image)."""
        return StyleCode(*self.network.style_encoder(self.encoder(style)))

    def noise(self, count: int, seed: int, device=None, temperature: float | None = None) -> torch.Tensor:
        """``count`` draws from N(0, T^2 I) in the latent space, the same for the same seed on every machine; T is
        ``temperature``, or the model's (:attr:`temperature`). Draw k is T times the same unit draw whatever T."""
        scale = self.temperature if temperature is None else check_temperature(temperature)
        generator = torch.Generator().manual_seed(seed)
        return scale * torch.randn(count, self.latent_dim, generator=generator).to(device or self.encoder_device)

    @property
    def encoder_device(self) -> torch.device:
        return next(self.network.parameters()).device

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """The mean-code stylisation, for sizes that are multiples of 8."""
        code = self.encode_style(style)
        return self.network.paint(self.encode(content), code.mu)

    def code(self, styles: Sequence[StyleCode], style_weights: Sequence[float] | None = None,
             noise: torch.Tensor | None = None) -> torch.Tensor:
        """The style code: the mix of ``styles``' Gaussians, at its mean, or at ``mean + std * noise``."""
        mixed = StyleCode.blend(list(styles), normalize_weights(style_weights, len(styles)))
        if noise is None:
            return mixed.mu
        return mixed.mu + mixed.std * noise.to(mixed.mu)

    def stylize(self, content: torch.Tensor, styles: Sequence[StyleCode], style_weights: Sequence[float] | None = None,
                alpha: float = 1.0, noise: torch.Tensor | None = None, tile: int | None = None,
                progress=None) -> torch.Tensor:
        """Paint Nx3xHxW ``content`` (any size) with the mix of ``styles``; ``noise`` (1 x latent_dim, from
        :meth:`noise`) samples a code instead of taking the mean. ``tile``: work in tiles with the statistics
        of the whole image."""
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
        height, width = content.shape[-2:]
        z = self.code(styles, style_weights, noise)
        features = self._encode_tiled(pad_to(content, SIZE_MULTIPLE), tile, progress)
        own = mean_std(features)

        def paint(piece: torch.Tensor) -> torch.Tensor:
            return self.network.paint(piece, z, alpha, own)

        output = map_tiles(paint, features, scale=SIZE_MULTIPLE,
                           tile=None if tile is None else max(1, tile // SIZE_MULTIPLE), halo=DECODER_HALO,
                           progress=progress)
        return output[..., :height, :width]

    # A content encoded once for many paintings (live previews): the same features as AdaIN's.
    encode_content = AdaIN.encode_content

    def stylize_encoded(self, content: EncodedFeatures, styles: Sequence[StyleCode],
                        style_weights: Sequence[float] | None = None, alpha: float = 1.0,
                        noise: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`stylize` (untiled) of a content encoded by :meth:`encode_content`: the same output."""
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
        z = self.code(styles, style_weights, noise)
        return self.network.paint(content.features, z, alpha, content.own)[..., :content.height, :content.width]

    # Tiles, their count and their size within a memory budget: the same encoder and decoder as AdaIN's.
    _encode_tiled = AdaIN._encode_tiled
    decode_steps = AdaIN.decode_steps
    tile_for = staticmethod(AdaIN.tile_for)


def check_temperature(value: float) -> float:
    """A sampling temperature: a real number above 0 and at most :data:`MAX_TEMPERATURE`."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
            or not 0 < value <= MAX_TEMPERATURE):
        raise BrushworkError(f"the sampling temperature must be a positive number up to {MAX_TEMPERATURE:g}, "
                             f"not {value!r}")
    return float(value)


def settings(folder: Path) -> dict:
    """What a weights folder's ``training.json`` says about the network beyond its weights: ``latent_dim`` and
    ``sample_temperature`` (defaults where it is missing or says nothing of them)."""
    path = folder / "training.json"
    try:
        record = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as error:
        raise BrushworkError(f"{path}: unreadable ({error})") from None
    if not isinstance(record, dict):
        raise BrushworkError(f"{path}: not a JSON object")
    latent_dim = record.get("latent_dim", LATENT_DIM)
    if not isinstance(latent_dim, int) or isinstance(latent_dim, bool) or not 1 <= latent_dim <= MAX_LATENT_DIM:
        raise BrushworkError(f"{path}: latent_dim must be a whole number from 1 to {MAX_LATENT_DIM}, not {latent_dim!r}")
    try:
        temperature = check_temperature(record.get("sample_temperature", 1.0))
    except BrushworkError as error:
        raise BrushworkError(f"{path}: {error}") from None
    return {"latent_dim": latent_dim, "temperature": temperature}


def load(paths: Mapping[str, Path], encoder: str, weights_dir=None,
         temperature: float | None = None) -> VariationalStyleTransfer:
    """A model from its ``vst`` file (a :class:`VSTNetwork` state dict), the ``training.json`` beside it (see
    :func:`settings`; ``temperature``, where given, overrides the one it sets) and the registry name of its
    encoder."""
    setting = settings(paths["vst"].parent)
    if temperature is not None:
        setting["temperature"] = check_temperature(temperature)
    network_vgg = load_loss_network(encoder, STYLE_LAYERS, weights_dir=weights_dir)
    model = VariationalStyleTransfer(network_vgg, VSTNetwork(network_vgg.architecture, setting["latent_dim"]),
                                     encoder, setting["temperature"])
    state = read_state_dict(paths["vst"])
    try:
        model.network.load_state_dict({key: value.float() for key, value in state.items()})
    except RuntimeError as error:
        reason = str(error).splitlines()[0]
        raise WeightsError(f"{paths['vst']}: does not fit the variational style transfer network over {encoder} "
                           f"({reason})") from None
    return model.eval().requires_grad_(False)


def find_weights(folder: Path) -> Path:
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise BrushworkError(f"{folder}: no {WEIGHTS_FILE}, so not a folder of variational style transfer weights")
    return path

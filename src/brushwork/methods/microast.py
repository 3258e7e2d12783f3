"""MicroAST (Wang et al., AAAI 2023): micro encoders, a modulator and a dual-modulated micro decoder.

The content encoder extracts the structure of the content image; the style encoder and the modulator turn the
style image into *style signals*: the channel means and standard deviations of its features (FeatMod, an AdaIN
step in the decoder) and per-channel filter weights and biases (FilterMod, which modulates the decoder's
residual blocks). Module and attribute names follow the published state dicts so that those load as they are.

The content-style trade-off ``alpha`` interpolates between the style signals of the content image itself and
those of the style image, so ``alpha=0`` reconstructs the content. (The reference code instead mixes raw content
features into the modulated decoder, which gives a flat, saturated image for ``alpha < 1``.) Several styles
are mixed the same way, by a weighted sum of their signals.

This is the network as published and as it trains, in plain PyTorch; ``--exact`` runs it. The fast engine that
``load_model`` gives by default is built from it: :class:`brushwork.engine.FastMicroAST`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeightsError
from ..functional import adaptive_instance_norm, blend, mean_std, normalize_weights
from ..tiling import count_tiles, tile_for_budget
from ..weights import read_state_dict
from .microast_tiles import (ENCODER_HALO, IMAGE_BYTES_PER_PIXEL, SECOND_HALF_HALO, SIZE_MULTIPLE,
                             TILE_BYTES_PER_PIXEL, WORKSPACE_BYTES, encode_levels, paint_in_tiles)

#: Smallest side the 9x9 reflection-padded input convolution accepts.
MIN_SIDE = 8
CHANNELS = 64
PARTS = ("content_encoder", "style_encoder", "modulator", "decoder")


class ReflectConv(nn.Module):
    """Reflection padding of half the kernel, then a convolution: same size at stride 1, half at stride 2."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.padding = kernel_size // 2
        self.conv_layer = nn.Conv2d(in_channels, out_channels, kernel_size, stride, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding:
            x = F.pad(x, [self.padding] * 4, mode="reflect")
        return self.conv_layer(x)


class ResidualBlock(nn.Module):
    """x + conv(relu(conv(x))) with 3x3 reflection-padded convolutions."""

    def __init__(self, channels: int = CHANNELS):
        super().__init__()
        self.conv1 = ReflectConv(channels, channels, 3)
        self.conv2 = ReflectConv(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class ModulatedResidualBlock(ResidualBlock):
    """FilterMod: a residual block whose convolutions are modulated by style-predicted weights and biases.

    Each convolution ``conv(h)`` becomes ``weight * conv(h) + bias * h``, the paper's
    ``w_s * (F * h) + b_s * h`` with per-channel ``weight`` and ``bias`` of shape NxCx1x1.
    """

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        hidden = F.relu(weight * self.conv1(x) + bias * x)
        return x + weight * self.conv2(hidden) + bias * hidden


class MicroEncoder(nn.Module):
    """9x9 convolution, two stride-2 depthwise-separable convolutions and two residual blocks.

    Returns the features after the first residual block and after the second, both at a quarter of the size.
    """

    def __init__(self):
        super().__init__()
        self.enc1 = nn.Sequential(
            ReflectConv(3, 16, 9), nn.ReLU(),
            ReflectConv(16, 32, 3, stride=2, groups=16), nn.ReLU(),
            ReflectConv(32, 32, 1), nn.ReLU(),
            ReflectConv(32, 64, 3, stride=2, groups=32), nn.ReLU(),
            ReflectConv(64, 64, 1), nn.ReLU(),
            ResidualBlock(),
        )
        self.enc2 = nn.Sequential(ResidualBlock())

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shallow = self.enc1(image)
        return shallow, self.enc2(shallow)


class Modulator(nn.Module):
    """Predicts FilterMod weights and biases from the style features of each level (depthwise 3x3, then mean)."""

    def __init__(self):
        super().__init__()
        self.weight1 = self._predictor()
        self.bias1 = self._predictor()
        self.weight2 = self._predictor()
        self.bias2 = self._predictor()

    @staticmethod
    def _predictor() -> nn.Sequential:
        return nn.Sequential(ReflectConv(CHANNELS, CHANNELS, 3, groups=CHANNELS), nn.AdaptiveAvgPool2d(1))

    def forward(self, features: tuple[torch.Tensor, torch.Tensor]):
        shallow, deep = features
        return (self.weight1(shallow), self.weight2(deep)), (self.bias1(shallow), self.bias2(deep))


@dataclass(frozen=True)
class StyleSignals:
    """What MicroAST takes from a style image, for each of the two encoder levels (shallow, deep).

    Every tensor is NxCx1x1. Signals of several images mix linearly (:meth:`blend`).
    """

    means: tuple[torch.Tensor, torch.Tensor]
    stds: tuple[torch.Tensor, torch.Tensor]
    filter_weights: tuple[torch.Tensor, torch.Tensor]
    filter_biases: tuple[torch.Tensor, torch.Tensor]

    def components(self) -> list[torch.Tensor]:
        """The eight NxCx1x1 tensors, for losses that treat the signals as vectors."""
        return [tensor for field in fields(StyleSignals) for tensor in getattr(self, field.name)]

    @staticmethod
    def blend(signals: Sequence["StyleSignals"], weights: Sequence[float]) -> "StyleSignals":
        """The weighted sum of several images' signals (weights summing to 1 keep them in range)."""
        if len(signals) == 1 and weights[0] == 1:
            return signals[0]
        mixed = {
            field.name: tuple(blend([getattr(s, field.name)[level] for s in signals], weights) for level in (0, 1))
            for field in fields(StyleSignals)
        }
        return StyleSignals(**mixed)


def mixed_signals(styles: Sequence[StyleSignals], style_weights: Sequence[float] | None, alpha: float,
                  content_signals: Callable[[], StyleSignals]) -> StyleSignals:
    """The signals ``stylize`` paints with: the weighted mix of ``styles``, moved by ``alpha`` in [0, 1] from the
    content's own signals (0, ``content_signals()``, asked for only then) to the styles' (1)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
    signals = StyleSignals.blend(list(styles), normalize_weights(style_weights, len(styles)))
    if alpha < 1.0:
        signals = StyleSignals.blend([content_signals(), signals], [1.0 - alpha, alpha])
    return signals


@dataclass(frozen=True)
class EncodedContent:
    """A content image as ``encode_content`` keeps it: the content encoder's features (both levels; the engine
    keeps its ringed deep map), its own style signals, and its size before padding."""

    features: torch.Tensor | tuple[torch.Tensor, torch.Tensor]
    signals: StyleSignals
    height: int
    width: int


# Decoder heads: everything after the two modulated residual blocks. The variant is told by the state dict.

def _upsampling_stages(mode: str) -> list[nn.Module]:
    """Twice: interpolate x2, then a depthwise-separable convolution (64 -> 32 -> 16 channels)."""
    return [
        nn.Upsample(scale_factor=2, mode=mode),
        ReflectConv(64, 32, 3, groups=32), nn.ReLU(),
        ReflectConv(32, 32, 1), nn.ReLU(),
        nn.Upsample(scale_factor=2, mode=mode),
        ReflectConv(32, 16, 3, groups=16), nn.ReLU(),
        ReflectConv(16, 16, 1), nn.ReLU(),
    ]


def bilinear_head() -> nn.Sequential:
    """The official head: bilinear upsampling stages, then a 9x9 convolution to RGB."""
    return nn.Sequential(*_upsampling_stages("bilinear"), ReflectConv(16, 3, 9))


def tuned_head() -> nn.Sequential:
    """MicroAST-CV's head: bicubic upsampling stages, a 7x7 depthwise-separable conv, a large 15x15 final conv."""
    return nn.Sequential(
        *_upsampling_stages("bicubic"),
        ReflectConv(16, 16, 7, groups=16), nn.ReLU(),
        ReflectConv(16, 3, 1), nn.ReLU(),
        ReflectConv(3, 3, 15),
    )


def transposed_head() -> nn.Sequential:
    """Learned upsampling with grouped 4x4 stride-2 transposed convolutions (exactly x2 each)."""
    return nn.Sequential(
        nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1, groups=32), nn.ReLU(),
        ReflectConv(32, 32, 1), nn.ReLU(),
        nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1, groups=16), nn.ReLU(),
        ReflectConv(16, 16, 1), nn.ReLU(),
        ReflectConv(16, 3, 9),
    )


DECODER_HEADS: dict[str, Callable[[], nn.Sequential]] = {
    "bilinear": bilinear_head,
    "tuned": tuned_head,
    "transposed": transposed_head,
}


def decoder_head_of(decoder_state: Mapping[str, torch.Tensor]) -> str:
    """Which decoder head a decoder state dict was trained with."""
    if "dec3.0.weight" in decoder_state:
        return "transposed"
    if "dec3.14.conv_layer.weight" in decoder_state:
        return "tuned"
    return "bilinear"


class MicroDecoder(nn.Module):
    """DualMod decoder: FeatMod (AdaIN with the style's statistics) and FilterMod at both levels, then a head."""

    def __init__(self, head: str = "bilinear"):
        super().__init__()
        if head not in DECODER_HEADS:
            raise ValueError(f"unknown decoder head {head!r}; choose from {', '.join(DECODER_HEADS)}")
        self.head = head
        self.dec1 = ModulatedResidualBlock()
        self.dec2 = ModulatedResidualBlock()
        self.dec3 = DECODER_HEADS[head]()

    def forward(self, content: tuple[torch.Tensor, torch.Tensor], signals: StyleSignals) -> torch.Tensor:
        return self.second_half(self.first_half(content[1], signals), signals)

    def first_half(self, deep: torch.Tensor, signals: StyleSignals, own=None) -> torch.Tensor:
        """The deep level: FeatMod with the style's deep statistics, then the first FilterMod block. ``own``:
        the statistics of the whole ``deep`` map when ``deep`` is a tile of it."""
        x = adaptive_instance_norm(deep, signals.means[1], signals.stds[1], own)
        return self.dec1(x, signals.filter_weights[1], signals.filter_biases[1])

    def second_half(self, x: torch.Tensor, signals: StyleSignals, own=None) -> torch.Tensor:
        """The shallow level (FeatMod, FilterMod) and the head to RGB; ``own`` as in :meth:`first_half`."""
        x = adaptive_instance_norm(x, signals.means[0], signals.stds[0], own)
        return self.dec3(self.dec2(x, signals.filter_weights[0], signals.filter_biases[0]))


class MicroAST(nn.Module):
    """The whole network. ``forward(content, style)`` is the reference computation; :meth:`stylize` adds
    the controls (several styles with weights, ``alpha``), and both encoding and decoding run in tiles for
    large images (``tile``), with the instance-normalisation statistics of the whole image."""

    def __init__(self, decoder_head: str = "bilinear"):
        super().__init__()
        self.content_encoder = MicroEncoder()
        self.style_encoder = MicroEncoder()
        self.modulator = Modulator()
        self.decoder = MicroDecoder(decoder_head)

    def encode_style(self, style: torch.Tensor, tile: int | None = None) -> StyleSignals:
        """Style signals of Nx3xHxW images in [0, 1]; ``tile``: encode in tiles of that many pixels."""
        features = encode_levels(self.style_encoder, pad_to(style, 1), tile)
        means, stds = zip(*(mean_std(level) for level in features))
        filter_weights, filter_biases = self.modulator(features)
        return StyleSignals(tuple(means), tuple(stds), filter_weights, filter_biases)

    def decode(self, content: torch.Tensor, signals: StyleSignals, tile: int | None = None,
               progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """Paint Nx3xHxW content images with the given signals; the output has exactly the input's size.

        ``tile``: work in tiles of about that many pixels a side (bounded memory, same output); ``progress`` is
        called with the number of tiles done (:meth:`decode_steps` gives the total).
        """
        height, width = content.shape[-2:]
        padded = pad_to(content, SIZE_MULTIPLE)
        if tile is None:
            return self.decoder(self.content_encoder(padded), signals)[..., :height, :width]
        output = paint_in_tiles(
            padded, tile, progress=progress, second_halo=SECOND_HALF_HALO[self.decoder.head],
            encode=lambda piece: self.content_encoder(piece)[1],
            first_half=lambda piece, own: self.decoder.first_half(piece, signals, own),
            second_half=lambda piece, own: self.decoder.second_half(piece, signals, own))
        return output[..., :height, :width]

    @staticmethod
    def decode_steps(content: torch.Tensor, tile: int | None) -> int:
        """How many times :meth:`decode` calls ``progress``."""
        height, width = pad_to(content, SIZE_MULTIPLE).shape[-2:]
        quarter = None if tile is None else max(1, tile // SIZE_MULTIPLE)
        return (count_tiles(height, width, tile, ENCODER_HALO, SIZE_MULTIPLE)
                + 2 * count_tiles(height // SIZE_MULTIPLE, width // SIZE_MULTIPLE, quarter, 0))

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.decode(content, self.encode_style(style))

    def stylize(self, content: torch.Tensor, styles: Sequence[StyleSignals],
                style_weights: Sequence[float] | None = None, alpha: float = 1.0, tile: int | None = None,
                progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """Paint ``content`` with a weighted mix of encoded ``styles`` (see :meth:`encode_style`).

        ``alpha`` in [0, 1] moves from the content's own signals (0) to the styles' (1); ``tile`` and
        ``progress`` as in :meth:`decode`.
        """
        signals = mixed_signals(styles, style_weights, alpha, lambda: self.encode_style(content, tile))
        return self.decode(content, signals, tile, progress)

    def encode_content(self, content: torch.Tensor) -> EncodedContent:
        """What painting one 1x3xHxW content image takes whatever the style: its features, and its own signals
        (for ``alpha < 1``). Computed once, they let :meth:`stylize_encoded` paint it again and again with other
        styles and alphas (a live preview) at the cost of the decoder alone. Untiled."""
        features = self.content_encoder(pad_to(content, SIZE_MULTIPLE))
        return EncodedContent(features, self.encode_style(content), *content.shape[-2:])

    def stylize_encoded(self, content: EncodedContent, styles: Sequence[StyleSignals],
                        style_weights: Sequence[float] | None = None, alpha: float = 1.0) -> torch.Tensor:
        """:meth:`stylize` of a content image encoded by :meth:`encode_content`: the same output."""
        signals = mixed_signals(styles, style_weights, alpha, lambda: content.signals)
        return self.decoder(content.features, signals)[..., :content.height, :content.width]

    @staticmethod
    def tile_for(height: int, width: int, budget: int | None) -> int | None:
        """The tile side that keeps decoding an image of this size within ``budget`` bytes (None: no tiling)."""
        return tile_for_budget(height, width, budget, bytes_per_pixel=TILE_BYTES_PER_PIXEL,
                               fixed_bytes=IMAGE_BYTES_PER_PIXEL * height * width + WORKSPACE_BYTES,
                               multiple=SIZE_MULTIPLE)


def pad_to(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom and right to a multiple of ``multiple`` and at least :data:`MIN_SIDE`, by reflection
    (or by repeating the edge where the image is too small to reflect)."""
    height, width = image.shape[-2:]
    target_height = max(MIN_SIDE, math.ceil(height / multiple) * multiple)
    target_width = max(MIN_SIDE, math.ceil(width / multiple) * multiple)
    pad_bottom, pad_right = target_height - height, target_width - width
    if not pad_bottom and not pad_right:
        return image
    mode = "reflect" if pad_bottom < height and pad_right < width else "replicate"
    return F.pad(image, [0, pad_right, 0, pad_bottom], mode=mode)


def find_parts(folder: Path) -> dict[str, Path]:
    """The four weight files in a folder, named ``<part>*.pth`` or ``<part>*.pth.tar`` (as training exports
    them, and as the reference implementation names them)."""
    paths = {}
    for part in PARTS:
        matches = sorted(folder.glob(f"{part}*.pth")) + sorted(folder.glob(f"{part}*.pth.tar"))
        if not matches:
            raise WeightsError(f"{folder}: no {part}*.pth file, so not a folder of MicroAST weights")
        paths[part] = matches[0]
    return paths


def load(paths: Mapping[str, Path]) -> MicroAST:
    """A MicroAST from its four state-dict files (keys: content_encoder, style_encoder, modulator, decoder)."""
    states = {part: read_state_dict(paths[part]) for part in PARTS}
    model = MicroAST(decoder_head_of(states["decoder"]))
    for part in PARTS:
        try:
            getattr(model, part).load_state_dict(states[part])
        except RuntimeError as error:
            reason = str(error).splitlines()[0]
            raise WeightsError(f"{paths[part]}: does not fit the MicroAST {part} ({reason})") from None
    return model.eval().requires_grad_(False)

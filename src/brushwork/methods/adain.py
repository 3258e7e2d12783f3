"""AdaIN (Huang & Belongie, ICCV 2017): a fixed VGG encoder up to relu4_1, adaptive instance normalisation, and a
trained decoder that mirrors the encoder (nearest-neighbour upsampling, reflection padding).

``stylize`` follows the paper's controls: ``alpha`` blends the content's own features with the AdaIN output,
several styles are mixed by weights (a weighted sum of AdaIN outputs, the same as mixing their means and
standard deviations), and ``masks`` give each style its own region (where no mask covers a pixel, the content's
features are kept). The decoder's ``nn.Sequential`` indices are those of pytorch-AdaIN, so its ``decoder.pth``
loads as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BrushworkError, WeightsError
from ..functional import adaptive_instance_norm, mean_std, normalize_weights
from ..tiling import count_tiles, map_tiles, tile_for_budget
from ..vgg import BLOCKS, VGGFeatures, load_loss_network
from ..weights import read_state_dict
from .microast import pad_to

#: The encoder's layer, and the layers the training loss compares.
ENCODER_LAYER = "relu4_1"
#: Three poolings before relu4_1: the decoder works on sizes that are multiples of 8.
SIZE_MULTIPLE = 8
#: Receptive radius of the encoder to relu4_1 (full-resolution pixels: nine 3x3 convolutions and three poolings
#: for VGG19) and of the decoder (relu4_1 pixels), rounded up: the margins tiles need to come out exact.
ENCODER_HALO = 40
DECODER_HALO = 5
#: Working memory of a tile, bytes per full-resolution pixel (64-channel float maps at full resolution in the
#: encoder and the decoder), what the whole image keeps between the stages (512 channels at 1/8 resolution) and
#: what oneDNN and the allocator hold whatever the size (measured on the CPU at 2048 and 3072 px with tiles of
#: 512 and 1024 px: about 410 B/px of a tile with its margins, 41 B/px and 270 MB).
TILE_BYTES_PER_PIXEL = 600
IMAGE_BYTES_PER_PIXEL = 41
WORKSPACE_BYTES = 300 * 2**20


def decoder_layers(architecture: str) -> list[nn.Module]:
    """The decoder mirroring ``architecture`` (vgg16 or vgg19) from relu4_1 back to RGB: each 3x3 convolution of
    the encoder becomes one going the other way, each pooling a 2x nearest upsampling."""
    widths = [3] + [w for block in BLOCKS[architecture][:3] for w in block] + [BLOCKS[architecture][3][0]]
    pools_after = {sum(len(block) for block in BLOCKS[architecture][:k]) for k in (1, 2, 3)}  # conv counts
    layers: list[nn.Module] = []
    for index in range(len(widths) - 1, 0, -1):  # encoder conv index: widths[index-1] -> widths[index]
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(widths[index], widths[index - 1], 3)]
        if index > 1:
            layers.append(nn.ReLU())
        if index - 1 in pools_after:
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
    return layers


class AdaINDecoder(nn.Sequential):
    """relu4_1 features (Nx512xhxw) -> RGB image (Nx3x8hx8w)."""

    def __init__(self, architecture: str = "vgg19"):
        super().__init__(*decoder_layers(architecture))
        self.architecture = architecture


@dataclass
class StyleStatistics:
    """What AdaIN keeps of a style: channel means and standard deviations of its relu4_1 features (Nx512x1x1)."""

    mean: torch.Tensor
    std: torch.Tensor

    @staticmethod
    def blend(items: Sequence["StyleStatistics"], weights: Sequence[float]) -> "StyleStatistics":
        return StyleStatistics(sum(w * s.mean for s, w in zip(items, weights)),
                               sum(w * s.std for s, w in zip(items, weights)))


@dataclass(frozen=True)
class EncodedFeatures:
    """A content image as ``encode_content`` keeps it: its relu4_1 features (of the image padded to a multiple of
    8), their channel means and standard deviations, and the image's size before padding."""

    features: torch.Tensor
    own: tuple[torch.Tensor, torch.Tensor]
    height: int
    width: int


class AdaIN(nn.Module):
    """Encoder (frozen VGG to relu4_1) + AdaIN + decoder. The encoder is also the training loss network."""

    supports_masks = True

    def __init__(self, encoder: VGGFeatures, decoder: AdaINDecoder | None = None, encoder_name: str = ""):
        super().__init__()
        if ENCODER_LAYER not in encoder.layers:
            raise ValueError(f"the AdaIN encoder must give {ENCODER_LAYER}")
        self.encoder = encoder
        self.decoder = decoder if decoder is not None else AdaINDecoder(encoder.architecture)
        self.encoder_name = encoder_name

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder(image)[ENCODER_LAYER]

    def encode_style(self, style: torch.Tensor, tile: int | None = None) -> StyleStatistics:
        """relu4_1 means and standard deviations of Nx3xHxW style images (``tile``: encode in tiles)."""
        return StyleStatistics(*mean_std(self._encode_tiled(style, tile)))

    def _encode_tiled(self, image: torch.Tensor, tile: int | None, progress=None) -> torch.Tensor:
        return map_tiles(self.encode, image, scale=Fraction(1, SIZE_MULTIPLE), tile=tile, halo=ENCODER_HALO,
                         multiple=SIZE_MULTIPLE, progress=progress)

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        return self.decoder(features)

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """The reference computation: decode(AdaIN(f(content), f(style))), for sizes that are multiples of 8."""
        return self.decode(adaptive_instance_norm(self.encode(content), *mean_std(self.encode(style))))

    def stylize(self, content: torch.Tensor, styles: Sequence[StyleStatistics],
                style_weights: Sequence[float] | None = None, alpha: float = 1.0,
                masks: Sequence[torch.Tensor] | None = None, tile: int | None = None,
                progress=None) -> torch.Tensor:
        """Paint Nx3xHxW ``content`` (any size) with encoded ``styles``; the output has the content's size.

        ``masks``: one HxW (or 1x1xHxW) map in [0, 1] per style, the share of that style at each pixel; where the
        shares add up to less than 1 the rest is the content's own features. With masks, ``style_weights``
        scale each style's share. ``tile``: work in tiles of about that many pixels a side, with the
        statistics of the whole image (bounded memory, same output); ``progress`` is called per tile done.
        """
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
        height, width = content.shape[-2:]
        features = self._encode_tiled(pad_to(content, SIZE_MULTIPLE), tile, progress)
        own = mean_std(features)
        weights = normalize_weights(style_weights, len(styles))
        if masks is None:
            mixed = StyleStatistics.blend(list(styles), weights)
            styles, shares = [mixed], None
        else:
            if len(masks) != len(styles):
                raise ValueError(f"give one mask per style: {len(styles)} style(s), {len(masks)} mask(s)")
            shares = torch.cat([self._mask_at(m, (height, width), features) for m in masks], dim=1)
            shares = shares * torch.tensor(weights, device=shares.device, dtype=shares.dtype).view(1, -1, 1, 1)
            shares = shares * len(masks)  # equal weights leave the masks as they are
            shares = shares / shares.sum(dim=1, keepdim=True).clamp(min=1.0)  # overlaps share; gaps keep content

        def paint(piece: torch.Tensor, piece_shares: torch.Tensor | None = None) -> torch.Tensor:
            if piece_shares is None:
                target = adaptive_instance_norm(piece, styles[0].mean, styles[0].std, own)
            else:
                target = piece * (1.0 - piece_shares.sum(dim=1, keepdim=True))
                for k, statistics in enumerate(styles):
                    target = target + piece_shares[:, k:k + 1] * adaptive_instance_norm(
                        piece, statistics.mean, statistics.std, own)
            if alpha < 1.0:
                target = alpha * target + (1.0 - alpha) * piece
            return self.decode(target)

        output = map_tiles(paint, [features] if shares is None else [features, shares], scale=SIZE_MULTIPLE,
                           tile=None if tile is None else max(1, tile // SIZE_MULTIPLE), halo=DECODER_HALO,
                           progress=progress)
        return output[..., :height, :width]

    def encode_content(self, content: torch.Tensor) -> EncodedFeatures:
        """What painting a content image takes whatever the style: its features, computed once for
        :meth:`stylize_encoded` to paint it again and again with other styles and alphas (a live preview) at the
        cost of the decoder alone. Untiled."""
        features = self.encode(pad_to(content, SIZE_MULTIPLE))
        return EncodedFeatures(features, mean_std(features), *content.shape[-2:])

    def stylize_encoded(self, content: EncodedFeatures, styles: Sequence[StyleStatistics],
                        style_weights: Sequence[float] | None = None, alpha: float = 1.0) -> torch.Tensor:
        """:meth:`stylize` (without masks or tiles) of a content encoded by :meth:`encode_content`: the same
        output."""
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
        mixed = StyleStatistics.blend(list(styles), normalize_weights(style_weights, len(styles)))
        target = adaptive_instance_norm(content.features, mixed.mean, mixed.std, content.own)
        if alpha < 1.0:
            target = alpha * target + (1.0 - alpha) * content.features
        return self.decode(target)[..., :content.height, :content.width]

    def decode_steps(self, content: torch.Tensor, tile: int | None) -> int:
        """How many times :meth:`stylize` calls ``progress``."""
        height, width = pad_to(content, SIZE_MULTIPLE).shape[-2:]
        eighth = None if tile is None else max(1, tile // SIZE_MULTIPLE)
        return (count_tiles(height, width, tile, 0, SIZE_MULTIPLE)
                + count_tiles(height // SIZE_MULTIPLE, width // SIZE_MULTIPLE, eighth, 0))

    @staticmethod
    def tile_for(height: int, width: int, budget: int | None) -> int | None:
        """The tile side that keeps painting an image of this size within ``budget`` bytes (None: no tiling)."""
        return tile_for_budget(height, width, budget, bytes_per_pixel=TILE_BYTES_PER_PIXEL,
                               fixed_bytes=IMAGE_BYTES_PER_PIXEL * height * width + WORKSPACE_BYTES,
                               multiple=SIZE_MULTIPLE)

    @staticmethod
    def _mask_at(mask: torch.Tensor, size: tuple[int, int], features: torch.Tensor) -> torch.Tensor:
        """A mask for the content's (height, width), as a share map at the features' resolution."""
        mask = mask.to(features.device, torch.float32)
        while mask.dim() < 4:
            mask = mask.unsqueeze(0)
        if mask.shape[-2:] != size:
            raise ValueError(f"a mask must have the content's size {size[1]}x{size[0]}, not "
                             f"{mask.shape[-1]}x{mask.shape[-2]}")
        padded = pad_to(mask[:, :1].clamp(0, 1), SIZE_MULTIPLE)
        return F.interpolate(padded, size=features.shape[-2:], mode="area").to(features.dtype)


def load(paths: Mapping[str, Path], encoder: str, weights_dir=None) -> AdaIN:
    """An AdaIN from its decoder file and the registry name of its encoder (loss network)."""
    network = load_loss_network(encoder, [ENCODER_LAYER], weights_dir=weights_dir)
    model = AdaIN(network, encoder_name=encoder)
    state = read_state_dict(paths["decoder"])
    try:
        model.decoder.load_state_dict({key: value.float() for key, value in state.items()})
    except RuntimeError as error:
        reason = str(error).splitlines()[0]
        raise WeightsError(f"{paths['decoder']}: does not fit the AdaIN decoder over {encoder} ({reason})") from None
    return model.eval().requires_grad_(False)


def find_decoder(folder: Path) -> Path:
    path = folder / "decoder.pth"
    if not path.is_file():
        raise BrushworkError(f"{folder}: no decoder.pth, so not a folder of AdaIN weights")
    return path

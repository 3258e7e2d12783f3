"""MicroAST's fast engine: built from a loaded :class:`~brushwork.methods.microast.MicroAST`, it computes the same
pictures in faster shapes (:mod:`brushwork.engine.fastconv`), whole or in tiles, from weights of its own.

- Channels-last maps and weights; convolutions without padding copies (the quarter-resolution maps carry a
  one-pixel ring that holds their reflection; elsewhere exact borders from strips); ReLUs and residual additions
  fused into the convolutions (oneDNN on the CPU); FilterMod folded into the convolution weights; the modulator's
  means without its convolutions; the bilinear and tuned heads on the low-resolution grids (:class:`PhaseHead`).
- Then a lower precision where the hardware computes it natively (bfloat16 on CPUs with AVX-512 BF16 or AMX,
  float16 on CUDA GPUs) and the output stays well within 45 dB PSNR of fp32: the residual blocks of both
  encoders, both FilterMod blocks (the shallow one's residual stream too) and the head after them. Blocks with a
  float32 residual stream compute on centred maps (:mod:`brushwork.engine.residual`). The first layers, to the end
  of the stride-2 convolutions, stay float32.

Measured against fp32 on ten evaluation pairs at 514x386, worst pair: 49.7 dB for the official weights (47.5 dB
in tiles, whose maps are stored in float16), 48.2 dB for the weakest (portraits). Uncentred, the content encoder's
last convolution in bfloat16 costs 6 dB and the deep FilterMod block 12 dB. The first layers in bfloat16, centred
and with float32 biases: 1.6 dB for the 9x9 convolution (which saves little: the next layer needs a float32 copy
of its large output), 3.2 dB with the first stride-2 convolution. The style encoder's residual blocks round in
bfloat16 too: their rounding averages out in the style signals (global means); the worst pair stays at 51 dB.
"""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import torch
from torch import nn

from ..devices import native_low_precision
from ..functional import EPS, adaptive_instance_norm, mean_std
from ..methods.microast import (EncodedContent, MicroAST, MicroDecoder, MicroEncoder, Modulator, StyleSignals,
                                mixed_signals, pad_to)
from ..methods.microast_tiles import SECOND_HALF_HALO, SIZE_MULTIPLE, encode_levels, paint_in_tiles
from .fastconv import RING, inside, mean_from_window_sums, reflect_conv, refresh_ring, ring_conv, window_sums
from .layers import FastConv, FastSequence, copy_of
from .phase_head import PhaseHead
from .residual import FastModulatedBlock, FastResidualBlock


def _layout(features: torch.Tensor) -> torch.Tensor:
    """Feature maps (or tiles of them) in the layout the engine's convolutions take. Images go to the encoders as
    they are: the first convolution makes its own reflection-padded copy, and oneDNN reads a 3-channel image in
    either layout (a channels-last copy of the image first cost more than the convolution saved)."""
    return features.contiguous(memory_format=torch.channels_last)


class FastEncoder(nn.Module):
    """A :class:`~brushwork.methods.microast.MicroEncoder` whose quarter-resolution maps carry a ring
    (:func:`~brushwork.engine.fastconv.with_ring`): each stride-2 convolution reads a ring that the layer before it
    made (:meth:`FastConv.ringed_output`), so no convolution needs its borders recomputed. The residual blocks
    compute in ``dtype``."""

    def __init__(self, encoder: MicroEncoder, dtype: torch.dtype | None = None):
        super().__init__()
        stem, _, down1, _, pointwise1, _, down2, _, pointwise2, _, block = encoder.enc1
        self.stem, self.down1, self.pointwise1, self.down2, self.pointwise2 = (
            FastConv(layer, relu=True) for layer in (stem, down1, pointwise1, down2, pointwise2))
        self.shallow_block = FastResidualBlock(block, dtype)
        self.deep_block = FastResidualBlock(encoder.enc2[0], dtype)

    def rings(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both levels as ringed maps."""
        x = self.down1.from_ring(refresh_ring(self.stem.ringed_output(image)))
        x = self.down2.from_ring(refresh_ring(self.pointwise1.ringed_output(x)))
        shallow = self.shallow_block(refresh_ring(self.pointwise2.ringed_output(x)))
        return shallow, self.deep_block(shallow)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(inside(level) for level in self.rings(image))


class FastModulator(nn.Module):
    """A :class:`~brushwork.methods.microast.Modulator`: the means of its convolutions without the convolutions
    (the same values, see :func:`~brushwork.engine.fastconv.window_sums`), from the window sums of each level."""

    PREDICTORS = ("weight1", "bias1", "weight2", "bias2")

    def __init__(self, modulator: Modulator):
        super().__init__()
        conv_layer = modulator.weight1[0].conv_layer
        self.size, self.groups = conv_layer.kernel_size[0], conv_layer.groups
        for name in self.PREDICTORS:
            conv_layer = getattr(modulator, name)[0].conv_layer
            self.register_buffer(f"{name}_weight", copy_of(conv_layer.weight), persistent=False)
            self.register_buffer(f"{name}_bias", copy_of(conv_layer.bias), persistent=False)

    def forward(self, features: tuple[torch.Tensor, torch.Tensor], ringed: bool = False):
        """``ringed``: the features are ringed maps (:meth:`FastEncoder.rings`)."""
        sums = [window_sums(level, self.size, ringed=ringed) for level in features]

        def predict(name: str, level: int) -> torch.Tensor:
            weight, bias = getattr(self, f"{name}_weight"), getattr(self, f"{name}_bias")
            return mean_from_window_sums(*sums[level], weight, bias, self.groups)
        return (predict("weight1", 0), predict("weight2", 1)), (predict("bias1", 0), predict("bias2", 1))


class FastDecoder(nn.Module):
    """A :class:`~brushwork.methods.microast.MicroDecoder`. With ``dtype``, the shallow FilterMod block and the
    phase head compute in it, and for one style's signals the deep FilterMod block too, on centred maps."""

    def __init__(self, decoder: MicroDecoder, dtype: torch.dtype | None = None):
        super().__init__()
        self.dec1 = FastModulatedBlock(decoder.dec1)
        self.dec2 = FastModulatedBlock(decoder.dec2, dtype)
        self.centred_dtype = dtype
        if PhaseHead.fits(decoder.dec3):
            self.head = PhaseHead(decoder.dec3, dtype)
            #: The shallow block's residual stream in the precision its convolutions and the head compute in (the
            #: residual addition fused into the second convolution, no conversions back and forth).
            self.shallow_dtype = dtype
        else:
            self.head, self.shallow_dtype = FastSequence(decoder.dec3, dtype), None

    def forward(self, content: tuple[torch.Tensor, torch.Tensor], signals: StyleSignals) -> torch.Tensor:
        return self.second_half(self.first_half(content[1], signals), signals)

    def first_half(self, deep: torch.Tensor, signals: StyleSignals, own=None) -> torch.Tensor:
        """As :meth:`MicroDecoder.first_half <brushwork.methods.microast.MicroDecoder.first_half>`."""
        x = adaptive_instance_norm(deep, signals.means[1], signals.stds[1], own)
        if self.centred_dtype is None or signals.filter_weights[1].shape[0] != 1:
            return self.dec1(x, signals.filter_weights[1], signals.filter_biases[1])
        return self._centred_first_block(x, signals, reflect_conv)

    def second_half(self, x: torch.Tensor, signals: StyleSignals, own=None) -> torch.Tensor:
        """As :meth:`MicroDecoder.second_half <brushwork.methods.microast.MicroDecoder.second_half>`."""
        x = self._shallow_stream(adaptive_instance_norm(x, signals.means[0], signals.stds[0], own))
        return self.head(self.dec2(x, signals.filter_weights[0], signals.filter_biases[0]))

    def ring_forward(self, deep: torch.Tensor, signals: StyleSignals) -> torch.Tensor:
        """:meth:`forward` from the ringed deep map of :meth:`FastEncoder.rings`, for the signals of one style: both
        FilterMod blocks on ringed maps (AdaIN too: it is pointwise), the head on the inside."""
        x = self._ring_deep_level(deep, signals)
        x = self.dec2.ring_forward(self._shallow_stream(x), signals.filter_weights[0], signals.filter_biases[0])
        return self.head(x, ring=RING) if isinstance(self.head, PhaseHead) else self.head(inside(x))

    def _centred_first_block(self, x: torch.Tensor, signals: StyleSignals,
                             convolve: Callable[..., torch.Tensor]) -> torch.Tensor:
        """The first FilterMod block in :attr:`centred_dtype` on ``x``, the deep map after AdaIN, whose channel
        means are the style's."""
        mean = signals.means[1]
        return self.dec1.centred_forward(x, (x - mean).to(self.centred_dtype), mean, signals.filter_weights[1],
                                         signals.filter_biases[1], convolve)

    def _ring_deep_level(self, deep: torch.Tensor, signals: StyleSignals) -> torch.Tensor:
        """:meth:`ring_forward` to the shallow level's input: AdaIN, the first FilterMod block and the shallow
        level's AdaIN, from ringed map to ringed map."""
        mean, std = mean_std(deep, ring=RING)
        style_mean, weight, bias = signals.means[1], signals.filter_weights[1], signals.filter_biases[1]
        normalise = lambda x, own: adaptive_instance_norm(x, signals.means[0], signals.stds[0], own)  # noqa: E731
        if self.centred_dtype is None:
            x = self.dec1.ring_forward(adaptive_instance_norm(deep, style_mean, signals.stds[1], (mean, std)),
                                       weight, bias)
            return normalise(x, mean_std(x, ring=RING))
        scale = signals.stds[1] / std
        if deep.shape[0] > 1:  # a scale per image: the block on the normalised map
            x = self._centred_first_block(torch.addcmul(style_mean - mean * scale, deep, scale), signals, ring_conv)
            return normalise(x, mean_std(x, ring=RING))
        # one image: the block adds its residual, divided by the normalisation's scale, to the unnormalised map,
        # which gives z: the block's output is scale * z plus constants (one pass fewer than making the
        # normalised map), so the output's statistics follow from z's (the standard deviation with the same eps)
        centred = torch.addcmul(-mean * scale, deep, scale).to(self.centred_dtype)  # the AdaIN output less its mean
        z = self.dec1.centred_forward(deep, centred, style_mean, weight, bias, ring_conv, output_scale=1 / scale)
        z_mean, z_spread = mean_std(z, eps=0.0, ring=RING)
        output_std = ((scale * z_spread).square() + EPS).sqrt()
        return normalise(z, (z_mean, output_std / scale))

    def _shallow_stream(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.shallow_dtype is None else x.to(self.shallow_dtype)


class FastMicroAST(nn.Module):
    """MicroAST's fast engine, with the network's interface (``encode_style``, ``decode``, ``stylize``, tiles).
    Build it with :meth:`from_network`; it keeps prepared copies of the weights and never changes the network."""

    method = "microast"

    def __init__(self, network: MicroAST, low_precision: torch.dtype | None):
        super().__init__()
        #: The decoder head of the network it was built from.
        self.head = network.decoder.head
        self.low_precision = low_precision
        self.content_encoder = FastEncoder(network.content_encoder, low_precision)
        self.style_encoder = FastEncoder(network.style_encoder, low_precision)
        self.modulator = FastModulator(network.modulator)
        self.decoder = FastDecoder(network.decoder, low_precision)

    @classmethod
    @torch.no_grad()
    def from_network(cls, network: MicroAST,
                     low_precision: torch.dtype | None | Literal["native"] = "native") -> "FastMicroAST":
        """The engine of ``network`` (which it reads and leaves as it is), on the network's device.

        ``low_precision``: the type of the layers named in :mod:`this module's <brushwork.engine.microast>` notes,
        by default the one the device computes natively (:func:`brushwork.devices.native_low_precision`; None:
        float32 throughout, which is the network to float32 rounding).
        """
        if not isinstance(network, MicroAST):
            raise TypeError(f"the MicroAST engine is built from a MicroAST, not from {type(network).__name__}")
        device = next(network.parameters()).device
        dtype = native_low_precision(device) if low_precision == "native" else low_precision
        return cls(network, dtype).eval()

    @property
    def device(self) -> torch.device:
        return self.decoder.dec1.weight1.device

    def encode_style(self, style: torch.Tensor, tile: int | None = None) -> StyleSignals:
        """As :meth:`MicroAST.encode_style <brushwork.methods.microast.MicroAST.encode_style>`; whole images have
        their statistics and modulator means taken from the ringed maps."""
        style = pad_to(style, 1)
        if tile is None or (tile >= style.shape[-2] and tile >= style.shape[-1]):
            rings = self.style_encoder.rings(style)
            means, stds = zip(*(mean_std(level, ring=RING) for level in rings))
            return StyleSignals(tuple(means), tuple(stds), *self.modulator(rings, ringed=True))
        features = tuple(_layout(level) for level in encode_levels(self.style_encoder, style, tile))
        means, stds = zip(*(mean_std(level) for level in features))
        return StyleSignals(tuple(means), tuple(stds), *self.modulator(features))

    def decode(self, content: torch.Tensor, signals: StyleSignals, tile: int | None = None,
               progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """As :meth:`MicroAST.decode <brushwork.methods.microast.MicroAST.decode>`."""
        height, width = content.shape[-2:]
        padded = pad_to(content, SIZE_MULTIPLE)
        if tile is not None:
            output = paint_in_tiles(
                padded, tile, progress=progress, second_halo=SECOND_HALF_HALO[self.head],
                encode=lambda piece: self.content_encoder(piece)[1],
                first_half=lambda piece, own: self.decoder.first_half(_layout(piece), signals, own),
                second_half=lambda piece, own: self.decoder.second_half(_layout(piece), signals, own))
        elif signals.filter_weights[0].shape[0] == 1:
            output = self.decoder.ring_forward(self.content_encoder.rings(padded)[1], signals)
        else:
            output = self.decoder(tuple(_layout(level) for level in self.content_encoder(padded)), signals)
        return output[..., :height, :width]

    def encode_content(self, content: torch.Tensor) -> EncodedContent:
        """As :meth:`MicroAST.encode_content <brushwork.methods.microast.MicroAST.encode_content>`, keeping the
        ringed deep map."""
        features = self.content_encoder.rings(pad_to(content, SIZE_MULTIPLE))[1]
        return EncodedContent(features, self.encode_style(content), *content.shape[-2:])

    def stylize_encoded(self, content: EncodedContent, styles: Sequence[StyleSignals],
                        style_weights: Sequence[float] | None = None, alpha: float = 1.0) -> torch.Tensor:
        """As :meth:`MicroAST.stylize_encoded <brushwork.methods.microast.MicroAST.stylize_encoded>`."""
        signals = mixed_signals(styles, style_weights, alpha, lambda: content.signals)
        return self.decoder.ring_forward(content.features, signals)[..., :content.height, :content.width]

    decode_steps = staticmethod(MicroAST.decode_steps)
    tile_for = staticmethod(MicroAST.tile_for)

    # the network's, on the engine's encode_style and decode
    forward = MicroAST.forward
    stylize = MicroAST.stylize


"""MicroAST (Wang et al., AAAI 2023): micro encoders, a modulator and a dual-modulated micro decoder.

The content encoder extracts the structure of the content image; the style encoder and the modulator turn the
style image into *style signals*: the channel means and standard deviations of its features (FeatMod, an AdaIN
step in the decoder) and per-channel filter weights and biases (FilterMod, which modulates the decoder's
residual blocks). Module and attribute names follow the published state dicts so that those load as they are.

The content-style trade-off ``alpha`` interpolates between the style signals of the content image itself and
those of the style image, so ``alpha=0`` reconstructs the content. (The reference code instead mixes raw content
features into the modulated decoder, which gives a flat, saturated image for ``alpha < 1``.) Several styles
are mixed the same way, by a weighted sum of their signals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from fractions import Fraction
from pathlib import Path
from typing import Callable, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BrushworkError, WeightsError
from ..weights import read_state_dict
from ..fastconv import (RING, STRIP_CHANNELS_PER_GROUP, conv, exact_borders, fast_groups, grouped, inside, layout_of,
                        mean_from_window_sums, phase_kernel, reflect_conv, refresh_ring, regrouped, ring_conv,
                        whole_map, window_sums)
from ..functional import EPS, adaptive_instance_norm, blend, mean_std, normalize_weights
from ..tiling import count_tiles, map_statistics, map_tiles, tile_for_budget

#: The encoders halve the size twice, so the decoder works on sizes that are multiples of 4.
SIZE_MULTIPLE = 4
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
        #: When set (see :meth:`compute_in`), the convolution runs in this dtype and returns the input's.
        self.compute_dtype: torch.dtype | None = None
        #: The ReLU that follows is done here (fast path, :meth:`MicroAST.fast`: fused into oneDNN's convolution
        #: on the CPU).
        self.fused_relu = False
        #: Zero padding inside the convolution and exact borders from strips instead of a padded copy, with the
        #: groups :func:`~brushwork.fastconv.regrouped` (fast path, :meth:`go_pad_free`).
        self.pad_free = False
        self.fast_groups = groups

    def compute_in(self, dtype: torch.dtype) -> None:
        """Run this convolution in a lower precision (its weights are converted; input and output keep theirs)."""
        self.compute_dtype = dtype
        self.conv_layer.to(dtype)

    def go_pad_free(self) -> None:
        """The fast path's convolution: no padded copy (see :func:`~brushwork.fastconv.reflect_conv`), and small
        groups merged into larger ones where oneDNN runs those faster. Call after :meth:`compute_in`."""
        weight, self.fast_groups = regrouped(self.conv_layer.weight, self.conv_layer.groups)
        self.register_buffer("fast_weight", weight.contiguous(memory_format=torch.channels_last), persistent=False)
        self.pad_free = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        given = x.dtype
        if self.pad_free:
            conv = self.conv_layer
            return reflect_conv(x, self.fast_weight, conv.bias, stride=conv.stride[0], groups=self.fast_groups,
                                relu=self.fused_relu).to(given)
        if self.compute_dtype is not None:
            x = x.to(self.compute_dtype)
        if self.padding:
            x = F.pad(x, [self.padding] * 4, mode="reflect")
        out = self.conv_layer(x)
        return (F.relu(out) if self.fused_relu else out).to(given)


    def ringed_output(self, x: torch.Tensor) -> torch.Tensor:
        """Fast path, stride 1: the output with a ring of :data:`~brushwork.fastconv.RING` pixels around it from
        an input without one; the ring holds wrong values until :func:`~brushwork.fastconv.refresh_ring`. A 1x1
        convolution takes zero padding for it, a larger one a reflection-padded copy (cheap for an image's
        three channels)."""
        conv_layer, pad = self.conv_layer, RING
        if conv_layer.stride[0] != 1:
            raise ValueError("a ringed output needs a stride-1 convolution")
        if self.padding:
            x, pad = F.pad(x.to(self.fast_weight.dtype), [self.padding + RING] * 4, mode="reflect"), 0
        return conv(x, self.fast_weight, conv_layer.bias, padding=pad, groups=self.fast_groups,
                    relu=self.fused_relu).to(x.dtype)

    def from_ring(self, ringed: torch.Tensor) -> torch.Tensor:
        """Fast path: the convolution of a map held with a ring (the reflection it pads with; kernels up to
        3x3), exact everywhere, without a ring."""
        conv_layer = self.conv_layer
        return conv(ringed, self.fast_weight, conv_layer.bias, padding=self.padding - RING,
                    stride=conv_layer.stride[0], groups=self.fast_groups, relu=self.fused_relu).to(ringed.dtype)


class ResidualBlock(nn.Module):
    """x + conv(relu(conv(x))) with 3x3 reflection-padded convolutions."""

    def __init__(self, channels: int = CHANNELS):
        super().__init__()
        self.conv1 = ReflectConv(channels, channels, 3)
        self.conv2 = ReflectConv(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv1.pad_free:
            return _fast_residual(x, *self._weights())
        hidden = self.conv1(x)
        return x + self.conv2(hidden if self.conv1.fused_relu else F.relu(hidden))

    def ring_forward(self, ringed: torch.Tensor) -> torch.Tensor:
        """The fast path's block from a ringed map to a ringed map (:func:`~brushwork.fastconv.with_ring`)."""
        return _ring_residual(ringed, *self._weights())

    def _weights(self) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        first, second = self.conv1.conv_layer, self.conv2.conv_layer
        return (first.weight, first.bias), (second.weight, second.bias)


class ModulatedResidualBlock(ResidualBlock):
    """FilterMod: a residual block whose convolutions are modulated by style-predicted weights and biases.

    Each convolution ``conv(h)`` becomes ``weight * conv(h) + bias * h``, the paper's
    ``w_s * (F * h) + b_s * h`` with per-channel ``weight`` and ``bias`` of shape NxCx1x1.
    """

    def __init__(self, channels: int = CHANNELS):
        super().__init__(channels)
        #: When set (fast path), both convolutions run in this dtype; the residual stream keeps its own.
        self.compute_dtype: torch.dtype | None = None

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.conv1.pad_free and weight.shape[0] == 1:  # fast path: the modulation folded into the weights
            return _fast_residual(x, *self._modulated_weights(weight, bias, x))
        hidden = F.relu(weight * self.conv1(x) + bias * x)
        return x + weight * self.conv2(hidden) + bias * hidden

    def ring_forward(self, ringed: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """The fast path's block from a ringed map to a ringed map, for signals of one image."""
        return _ring_residual(ringed, *self._modulated_weights(weight, bias, ringed))

    def centred_forward(self, stream: torch.Tensor, centred: torch.Tensor, mean: torch.Tensor, weight: torch.Tensor,
                        bias: torch.Tensor, convolve: Callable[..., torch.Tensor],
                        output_scale: torch.Tensor | None = None) -> torch.Tensor:
        """The fast path's block with both convolutions in ``centred``'s lower precision, for the signals of one
        image (:func:`_centred_residual`, which takes the same ``stream``, ``centred``, ``mean``, ``convolve`` and
        ``output_scale``). Uncentred, bfloat16 costs this block 12 dB PSNR on ten evaluation pairs; centred,
        0.5 dB."""
        first, second = (self._folded(layer.conv_layer, weight, bias, stream) for layer in (self.conv1, self.conv2))
        return _centred_residual(stream, centred, mean, first, second, convolve, output_scale)

    def _modulated_weights(self, weight: torch.Tensor, bias: torch.Tensor, like: torch.Tensor):
        dtype = self.compute_dtype or like.dtype
        return [tuple(value.to(dtype) for value in self._folded(layer.conv_layer, weight, bias, like))
                for layer in (self.conv1, self.conv2)]

    @staticmethod
    def _folded(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor, like: torch.Tensor):
        """One convolution computing ``weight * conv(h) + bias * h``: the output channels' weights scaled by
        ``weight``, ``bias`` added to the centre tap of each channel's own input (1xCx1x1 signals)."""
        scale, shift = weight.reshape(-1, 1, 1, 1), bias.reshape(-1)
        folded = conv.weight * scale
        centre = conv.weight.shape[-1] // 2
        channels = torch.arange(folded.shape[0], device=folded.device)
        folded[channels, channels, centre, centre] += shift
        return folded.contiguous(memory_format=layout_of(like)), conv.bias * scale.reshape(-1)


def _fast_residual(x: torch.Tensor, first: tuple[torch.Tensor, torch.Tensor],
                   second: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``x + conv2(relu(conv1(x)))`` of two reflection-padded 3x3 convolutions given as (weight, bias), without
    padding copies: the hidden map in the weights' dtype, the residual stream in ``x``'s (added by oneDNN when
    the two agree, else on centred maps: :func:`_centred_residual`)."""
    return _any_residual(x, first, second, reflect_conv)


def _ring_residual(ringed: torch.Tensor, first: tuple[torch.Tensor, torch.Tensor],
                   second: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """:func:`_fast_residual` from a ringed map to a ringed map (:func:`~brushwork.fastconv.ring_conv`)."""
    return _any_residual(ringed, first, second, ring_conv)


def _any_residual(x: torch.Tensor, first: tuple[torch.Tensor, torch.Tensor],
                  second: tuple[torch.Tensor, torch.Tensor], convolve: Callable[..., torch.Tensor]) -> torch.Tensor:
    """:func:`_fast_residual` with ``convolve``: both convolutions in the stream's dtype (the ReLU and the residual
    fused into them), or both in a lower one, on centred maps (:func:`_centred_residual`)."""
    if first[0].dtype == second[0].dtype != x.dtype:
        mean = _sampled_means(x)
        centred = (x - mean.view(1, -1, 1, 1)).to(first[0].dtype)
        return _centred_residual(x, centred, mean, first, second, convolve)
    return convolve(convolve(x, *first, relu=True), *second, residual=x)


def _centred_residual(stream: torch.Tensor, centred: torch.Tensor, mean: torch.Tensor,
                      first: tuple[torch.Tensor, torch.Tensor], second: tuple[torch.Tensor, torch.Tensor],
                      convolve: Callable[..., torch.Tensor], output_scale: torch.Tensor | None = None) -> torch.Tensor:
    """``x + conv2(relu(conv1(x)))`` with both convolutions, given as (weight, bias), in ``centred``'s lower
    precision, on maps centred where they are rounded to it (rounding is relative to the values).

    Its input ``x`` is given twice: ``centred`` is ``x - mean`` in the lower precision (``mean``: one value a
    channel, about ``x``'s channel means), ``stream`` is the float32 map the residual is added to: ``x`` itself,
    or, with ``output_scale`` (1xCx1x1), any map ``u`` with ``x = u / output_scale`` plus a per-channel constant,
    for which this returns ``stream + output_scale * residual`` without that constant (for an instance
    normalisation next, which takes it out: :meth:`MicroDecoder.ring_forward`). ``convolve``:
    :func:`~brushwork.fastconv.reflect_conv`, or :func:`~brushwork.fastconv.ring_conv` for ringed maps.

    The hidden map is ``relu(h) - c``, with ``c`` the mean of ``h`` where positive (``max(h - c, -c)`` from the
    convolution's output ``h - c``); the second convolution gives its output less its estimated mean
    (:func:`_add_low_precision`). The constants go to the biases, as the kernels sum them.
    """
    low = centred.dtype
    (w1, b1), (w2, b2) = ((weight.float(), bias.float()) for weight, bias in (first, second))
    first_means = _kernel_sums(w1) @ mean.reshape(-1) + b1
    hidden_mean = first_means.clamp(min=0).to(low)
    hidden = convolve(centred, w1.to(low).contiguous(memory_format=layout_of(centred)),
                      (first_means - hidden_mean.float()).to(low))
    hidden = torch.maximum(hidden, -hidden_mean.view(1, -1, 1, 1))
    b2 = b2 + _kernel_sums(w2) @ hidden_mean.float()
    if output_scale is not None:
        w2, b2 = w2 * output_scale.reshape(-1, 1, 1, 1), b2 * output_scale.reshape(-1)
    return _add_low_precision(stream, hidden, w2.to(low), b2, convolve, exact_level=output_scale is None)


#: The channel means that centre low-precision maps (:func:`_output_means`) are estimated from every this many
#: rows and columns of the map they come from.
CENTRE_SAMPLE = 8


def _add_low_precision(stream: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                       convolve: Callable[..., torch.Tensor], exact_level: bool = True) -> torch.Tensor:
    """``stream + convolve(hidden, weight, bias)`` for a convolution that computes in a lower precision than the
    residual stream (bfloat16 into float32) and gives its output in that precision. Rounded as it is, a channel
    with a large mean would lose the stream's precision (measured: 6 dB for MicroAST's content encoder), so the
    convolution gives its output less its estimated channel means (a smaller bias), and the float32 difference
    between the bias and the one it used is added back after the sum; ``exact_level=False`` leaves that
    per-channel constant out (for a map an instance normalisation takes next)."""
    weight = weight.contiguous(memory_format=layout_of(hidden))
    low_bias = (bias.float() - _output_means(hidden, weight, bias)).to(weight.dtype)
    # converted first: an addition of mixed dtypes is two and a half times slower than both steps
    out = convolve(hidden, weight, low_bias).float().add_(stream)
    return out.add_((bias.float() - low_bias.float()).view(1, -1, 1, 1)) if exact_level else out


def _output_means(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """An estimate of the channel means (float32, one a channel) of a stride-1 convolution of ``x``, from
    :func:`_sampled_means` of ``x`` (borders and rings counted as any other row): for centring its output, which
    needs no exact mean."""
    return _kernel_sums(weight) @ _sampled_means(x) + (0.0 if bias is None else bias.float())


def _sampled_means(x: torch.Tensor) -> torch.Tensor:
    """The channel means (float32, one a channel) of every :data:`CENTRE_SAMPLE`-th row and column of ``x``."""
    return x[..., ::CENTRE_SAMPLE, ::CENTRE_SAMPLE].float().mean(dim=(0, 2, 3))


def _kernel_sums(weight: torch.Tensor) -> torch.Tensor:
    """The sum over its taps of each (output, input) pair of a dense kernel (float32, out x in): what the
    convolution adds to each output channel for a constant input."""
    return weight.float().sum(dim=(2, 3))


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
        if self.ringed:
            return tuple(inside(level) for level in self.rings(image))
        shallow = self.enc1(image)
        return shallow, self.enc2(shallow)

    @property
    def ringed(self) -> bool:
        """Whether the fast path is on, which keeps the quarter-resolution maps ringed (:meth:`rings`)."""
        return self.enc2[0].conv1.pad_free

    def rings(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fast path: both levels as ringed maps (:func:`~brushwork.fastconv.with_ring`). Each stride-2
        convolution reads a ring that the layer before it made (:meth:`ReflectConv.ringed_output`), so no
        convolution needs its borders recomputed."""
        stem, relu1, down1, relu2, pointwise1, relu3, down2, relu4, pointwise2, relu5, block = self.enc1
        x = relu2(down1.from_ring(refresh_ring(relu1(stem.ringed_output(image)))))
        x = relu4(down2.from_ring(refresh_ring(relu3(pointwise1.ringed_output(x)))))
        shallow = block.ring_forward(refresh_ring(relu5(pointwise2.ringed_output(x))))
        return shallow, self.enc2[0].ring_forward(shallow)


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

    def forward(self, features: tuple[torch.Tensor, torch.Tensor], ringed: bool = False):
        """``ringed``: the features are ringed maps (fast path, :meth:`MicroEncoder.rings`)."""
        shallow, deep = features
        if not self.weight1[0].pad_free:
            return (self.weight1(shallow), self.weight2(deep)), (self.bias1(shallow), self.bias2(deep))
        # fast path: the means of the convolutions without the convolutions (the same values, see
        # fastconv.window_sums), from the window sums of each level
        size = self.weight1[0].conv_layer.kernel_size[0]
        sums = [window_sums(level, size, ringed=ringed) for level in features]

        def predict(predictor: nn.Sequential, level: int) -> torch.Tensor:
            conv_layer = predictor[0].conv_layer
            return mean_from_window_sums(*sums[level], conv_layer.weight, conv_layer.bias, conv_layer.groups)
        return (predict(self.weight1, 0), predict(self.weight2, 1)), (predict(self.bias1, 0), predict(self.bias2, 1))


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


@dataclass(frozen=True)
class EncodedContent:
    """A content image as :meth:`MicroAST.encode_content` keeps it: the content encoder's features (the ringed
    deep map on the fast path, else both levels), its own style signals, and its size before padding."""

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


class PhaseHead(nn.Module):
    """A decoder head computed on the low-resolution grids (fast path; same output as the head it is built
    from, see :mod:`brushwork.fastconv`).

    Each "upsample x2, grouped 3x3 convolution" pair becomes one convolution producing the four phases of its
    output, so neither upsampled map is made; the full-resolution maps stay on the half-resolution grid as
    phases, where every later convolution is one with a kernel half as wide (a 1x1 one is block-diagonal; the
    bilinear head's 9x9 becomes a 5x5, the tuned head's 15x15 a 9x9). Borders are recomputed exactly with the
    plain layers (:func:`~brushwork.fastconv.exact_borders`). For the bilinear and tuned heads (:meth:`fits`).
    """

    def __init__(self, head: nn.Sequential, low_precision: torch.dtype | None = None):
        super().__init__()
        up1, conv1, _, pointwise1, _, up2, conv2, _, *rest = head
        layers = [(layer, index + 1 < len(rest) and isinstance(rest[index + 1], nn.ReLU))
                  for index, layer in enumerate(rest) if isinstance(layer, ReflectConv)]
        #: The plain layers, for the borders (not registered: no new state).
        self.plain = {"up1": up1, "conv1": conv1, "up2": up2, "conv2": conv2, "layers": layers}
        probe = torch.zeros((), dtype=torch.float32, device=next(head.parameters()).device)
        #: The dtype of everything after the FilterMod blocks.
        self.late = low_precision or torch.float32

        #: The groups of each phase convolution (merged where that is faster, see fastconv.regrouped).
        self.groups: dict[str, int] = {}

        def weights(name, op, in_channels, groups=1):
            kernel = phase_kernel(op, in_channels, None, like=probe)
            self.groups[name] = fast_groups(kernel.shape[0], in_channels, groups)
            kernel = grouped(kernel, self.groups[name]) if self.groups[name] > 1 else kernel
            return kernel.to(self.late).contiguous(memory_format=torch.channels_last)

        def bias(layer, phases=4):
            return layer.conv_layer.bias.repeat_interleave(phases).to(self.late)

        upsampled = lambda up, layer: (lambda x: _plain(layer, bias=False)(up(x)))  # noqa: E731
        on_phases = lambda layer: (  # noqa: E731
            lambda x: F.pixel_unshuffle(_plain(layer, bias=False)(F.pixel_shuffle(x, 2)), 2))
        buffers = {
            "kernel1": weights("kernel1", upsampled(up1, conv1), conv1.conv_layer.in_channels,
                               conv1.conv_layer.groups),
            "bias1": bias(conv1),
            "pointwise1": pointwise1.conv_layer.weight.to(self.late).contiguous(memory_format=torch.channels_last),
            "pointwise1_bias": bias(pointwise1, 1),
            "kernel2": weights("kernel2", upsampled(up2, conv2), conv2.conv_layer.in_channels,
                               conv2.conv_layer.groups),
            "bias2": bias(conv2),
        }
        # the two upsampling convolutions as the border strips run them (plain, with larger groups)
        for name, layer in (("conv1", conv1), ("conv2", conv2)):
            weight, self.groups[f"strip_{name}"] = regrouped(layer.conv_layer.weight.detach(), layer.conv_layer.groups,
                                                             minimum=STRIP_CHANNELS_PER_GROUP)
            buffers[f"strip_{name}"] = weight.contiguous(memory_format=torch.channels_last)
        for index, (layer, _) in enumerate(layers):
            groups = layer.conv_layer.groups
            buffers[f"layer{index}"] = weights(f"layer{index}", on_phases(layer), 4 * layer.conv_layer.in_channels,
                                               groups)
            buffers[f"layer{index}_bias"] = bias(layer)
        for name, value in buffers.items():
            self.register_buffer(name, value, persistent=False)

    @staticmethod
    def fits(head: nn.Sequential) -> bool:
        """Whether ``head`` is upsample, conv, ReLU, 1x1 conv, ReLU, upsample, conv, ReLU, then stride-1
        convolutions and ReLUs (the bilinear and tuned heads; not the transposed one)."""
        layers = list(head)
        upsamplings = [layers[index] for index in (0, 5)] if len(layers) > 8 else []
        return (len(upsamplings) == 2
                and all(isinstance(up, nn.Upsample) and up.scale_factor == 2 for up in upsamplings)
                and all(isinstance(layer, (ReflectConv, nn.ReLU)) for index, layer in enumerate(layers)
                        if index not in (0, 5))
                and all(layer.conv_layer.stride == (1, 1) for layer in layers if isinstance(layer, ReflectConv)))

    def forward(self, x: torch.Tensor, ring: int = 0) -> torch.Tensor:
        """``ring``: ``x`` holds a border ring of that many pixels (:func:`~brushwork.fastconv.with_ring`; the
        first convolution reads it, its border bands come from the inside as always)."""
        ringed, x = x, (x[..., ring:-ring, ring:-ring] if ring else x)
        # a strip cut across the map is exact this many rows from the cut: the upsampling clamps at the cut one
        # row in for bilinear interpolation, two for bicubic, then the convolution reads one more
        reach = 1 if self.plain["up1"].mode == "bilinear" else 2
        # quarter -> half resolution (as phases on the quarter grid, then shuffled), 1x1 convolution
        half = self._phase_conv(x, self.kernel1, self.bias1, self.groups["kernel1"], True, self._upsampling("1"),
                                reach=reach, ringed=ringed, ring=ring)
        half = F.pixel_shuffle(half, 2).contiguous(memory_format=torch.channels_last)
        half = conv(half, self.pointwise1, self.pointwise1_bias, relu=True)
        # half -> full resolution, kept as phases on the half grid
        full = self._phase_conv(half, self.kernel2, self.bias2, self.groups["kernel2"], True, self._upsampling("2"),
                                reach=reach)
        return _shuffled_image(self._full_resolution_layers(full))

    def _upsampling(self, stage: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """The plain layers of upsampling stage "1" or "2" (upsampling, convolution with the strips' groups, ReLU)
        as phases: the exact computation for the border strips of its phase convolution."""
        layer, up = self.plain[f"conv{stage}"], self.plain[f"up{stage}"]
        weights = (getattr(self, f"strip_conv{stage}"), self.groups[f"strip_conv{stage}"])
        return self._as_phases(lambda piece: _plain_relu(layer, weights)(up(piece.float())))

    def _as_phases(self, op: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        """``op`` (to a full-resolution map) with its output as 2x2 phases in the head's late dtype."""
        return lambda piece: F.pixel_unshuffle(op(piece), 2).to(self.late)

    def _full_resolution_layers(self, full: torch.Tensor) -> torch.Tensor:
        """The layers after the upsamplings, on the phases: with a ring of phases around the map that holds its
        full-resolution reflection (:func:`_refresh_phase_ring`), as the layers pad, so every inside output is
        exact. Tiles (whose cut sides need no exact border: their margin is thrown away) and maps too small for
        the ring take each layer's border bands at the image's sides from strips padded by reflection."""
        layers = self.plain["layers"]
        kernels = [(getattr(self, f"layer{index}"), getattr(self, f"layer{index}_bias"), self.groups[f"layer{index}"],
                    then_relu) for index, (_, then_relu) in enumerate(layers)]
        ring = max(kernel.shape[-1] // 2 for kernel, *_ in kernels)
        if ring == 0 or min(full.shape[-2:]) <= 2 * ring + 1 or not whole_map():
            return self._layers_with_strips(full)
        if kernels[0][0].shape[-1] == 1:  # a pointwise first layer makes the ring: zero padding, then refreshed
            kernel, bias, groups, then_relu = kernels.pop(0)
            full = _refresh_phase_ring(conv(full, kernel, bias, padding=ring, groups=groups, relu=then_relu), ring)
        else:
            full = _padded_phases(full, ring)
        for index, (kernel, bias, groups, then_relu) in enumerate(kernels):
            radius = kernel.shape[-1] // 2
            if index < len(kernels) - 1:
                full = _refresh_phase_ring(conv(full, kernel, bias, padding=radius, groups=groups, relu=then_relu), ring)
            else:  # the last one gives the inside only
                full = conv(full, kernel, bias, padding=radius, groups=groups, relu=then_relu)
                full = full[..., ring:-ring, ring:-ring]
        return full

    def _layers_with_strips(self, full: torch.Tensor) -> torch.Tensor:
        """:meth:`_full_resolution_layers` with each layer's borders from the same convolution on strips padded
        by reflection at full resolution (as the layer pads; taps beyond its own reach are zeros in the kernel)."""
        for index, (layer, then_relu) in enumerate(self.plain["layers"]):
            kernel, bias, groups = (getattr(self, f"layer{index}"), getattr(self, f"layer{index}_bias"),
                                    self.groups[f"layer{index}"])
            radius = kernel.shape[-1] // 2

            def exact(piece, layer=layer, then_relu=then_relu, kernel=kernel, bias=bias, groups=groups, radius=radius):
                if radius >= min(piece.shape[-2:]):  # too small to pad by reflection: the layer itself
                    plain = _plain_relu(layer) if then_relu else _plain(layer)
                    return self._as_phases(plain)(F.pixel_shuffle(piece.float(), 2))
                return conv(_padded_phases(piece, radius), kernel, bias, groups=groups, relu=then_relu)
            full = self._phase_conv(full, kernel, bias, groups, then_relu, exact, reach=radius)
        return full

    @staticmethod
    def _phase_conv(x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor, groups: int, relu: bool,
                    exact: Callable[[torch.Tensor], torch.Tensor], reach: int | None = None,
                    ringed: torch.Tensor | None = None, ring: int = 0) -> torch.Tensor:
        """A convolution on phases (zero padding), its border bands then taken from ``exact``, which is correct
        on a crop except within ``reach`` rows of its cut edges (by default one more than the kernel's radius).
        ``ringed``: ``x`` with a ring of ``ring`` pixels around it, to convolve instead (no copy of the inside)."""
        radius = kernel.shape[-1] // 2
        if ringed is not None and 0 < ring <= radius:
            out = conv(ringed, kernel, bias, padding=radius - ring, groups=groups, relu=relu)
        else:
            out = conv(x, kernel, bias, padding=radius, groups=groups, relu=relu)
        if radius == 0:
            return out
        return exact_borders(out, x, exact, wrong=radius, reach=radius + 1 if reach is None else reach)


def _padded_phases(phases: torch.Tensor, pad: int) -> torch.Tensor:
    """A map held as 2x2 phases, padded by reflection at full resolution (``2 pad`` pixels, ``pad`` rows of
    phases on each side)."""
    full = F.pad(F.pixel_shuffle(phases, 2), [2 * pad] * 4, mode="reflect")
    return F.pixel_unshuffle(full, 2).contiguous(memory_format=layout_of(phases))


def _refresh_phase_ring(phases: torch.Tensor, ring: int) -> torch.Tensor:
    """Fill the ring of ``ring`` rows of phases around a map held as 2x2 phases (channel ``4c + 2 py + px`` is
    pixel (2y + py, 2x + px) of channel c) with its reflection at full resolution, as :func:`_padded_phases`
    makes it; in place, returns ``phases``."""
    batch, channels, height, width = phases.shape
    grid = phases.view(batch, channels // 4, 2, 2, height, width)  # c, py, px, y, x
    inner_h, inner_w = height - 2 * ring, width - 2 * ring

    def sources(inner: int) -> list[tuple[int, int, int, int]]:
        """(ring position, phase, source position, source phase) of one axis: full-resolution position -k shows
        +k, and the last position + k shows the last - k."""
        pairs = []
        for step in range(1, ring + 1):
            for phase in (0, 1):
                # before the map: full-resolution position 2 (-step) + phase
                position = -2 * step + phase
                pairs.append((ring - step, phase, ring + (-position) // 2, (-position) % 2))
                # after the map: full-resolution position 2 (inner - 1 + step) + phase
                position = 2 * (inner - 1 + step) + phase
                mirrored = 2 * (2 * inner - 1) - position
                pairs.append((ring + inner - 1 + step, phase, ring + mirrored // 2, mirrored % 2))
        return pairs

    for row, phase, source, source_phase in sources(inner_h):  # the rows of the ring, inside columns
        grid[:, :, phase, :, row, ring:ring + inner_w] = grid[:, :, source_phase, :, source, ring:ring + inner_w]
    for column, phase, source, source_phase in sources(inner_w):  # then the columns, every row
        grid[:, :, :, phase, :, column] = grid[:, :, :, source_phase, :, source]
    return phases


def _shuffled_image(phases: torch.Tensor) -> torch.Tensor:
    """``pixel_shuffle`` of a channels-last map of 2x2 phases to a float32 image in the standard layout, in one
    copy (PyTorch's own is several times slower on channels-last maps with few channels)."""
    batch, channels, height, width = phases.shape
    grouped_phases = phases.permute(0, 2, 3, 1).reshape(batch, height, width, channels // 4, 2, 2)
    return grouped_phases.permute(0, 3, 1, 4, 2, 5).float().reshape(batch, channels // 4, 2 * height, 2 * width)


def _plain_relu(layer: "ReflectConv", weights: tuple[torch.Tensor, int] | None = None,
                ) -> Callable[[torch.Tensor], torch.Tensor]:
    """:func:`_plain`, then a ReLU."""
    return lambda x: F.relu(_plain(layer, weights=weights)(x))


def _plain(layer: "ReflectConv", bias: bool = True,
           weights: tuple[torch.Tensor, int] | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ReflectConv's reference computation in the input's dtype (reflection-padded copy, no fused ReLU);
    ``bias=False`` leaves out the bias (the linear part alone). ``weights``: the same convolution's weights with
    other groups, as (weights, groups)."""
    conv_layer = layer.conv_layer

    def run(x: torch.Tensor) -> torch.Tensor:
        weight, groups = weights or (conv_layer.weight, conv_layer.groups)
        bias_ = conv_layer.bias.to(x.dtype) if bias else None
        if layer.padding:
            x = F.pad(x, [layer.padding] * 4, mode="reflect")
        return F.conv2d(x, weight.to(x.dtype), bias_, conv_layer.stride, groups=groups)
    return run


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
        #: The bilinear head on the low-resolution grids (fast path, :meth:`MicroAST.fast`); None: ``dec3``.
        self.phase_head: PhaseHead | None = None
        #: When set (fast path), the deep FilterMod block computes in this dtype on centred maps
        #: (:meth:`ModulatedResidualBlock.centred_forward`), for the signals of one style.
        self.centred_dtype: torch.dtype | None = None

    def forward(self, content: tuple[torch.Tensor, torch.Tensor], signals: StyleSignals) -> torch.Tensor:
        return self.second_half(self.first_half(content[1], signals), signals)

    def first_half(self, deep: torch.Tensor, signals: StyleSignals, own=None) -> torch.Tensor:
        """The deep level: FeatMod with the style's deep statistics, then the first FilterMod block. ``own``:
        the statistics of the whole ``deep`` map when ``deep`` is a tile of it."""
        x = adaptive_instance_norm(deep, signals.means[1], signals.stds[1], own)
        if self.centred_dtype is None or signals.filter_weights[1].shape[0] != 1:
            return self.dec1(x, signals.filter_weights[1], signals.filter_biases[1])
        return self._centred_first_block(x, signals, reflect_conv)

    def _centred_first_block(self, x: torch.Tensor, signals: StyleSignals,
                             convolve: Callable[..., torch.Tensor]) -> torch.Tensor:
        """The first FilterMod block in :attr:`centred_dtype` on ``x``, the deep map after AdaIN, whose channel
        means are the style's."""
        mean = signals.means[1]
        return self.dec1.centred_forward(x, (x - mean).to(self.centred_dtype), mean, signals.filter_weights[1],
                                         signals.filter_biases[1], convolve)

    def second_half(self, x: torch.Tensor, signals: StyleSignals, own=None) -> torch.Tensor:
        """The shallow level (FeatMod, FilterMod) and the head to RGB; ``own`` as in :meth:`first_half`."""
        x = self._shallow_stream(adaptive_instance_norm(x, signals.means[0], signals.stds[0], own))
        x = self.dec2(x, signals.filter_weights[0], signals.filter_biases[0])
        return self.dec3(x) if self.phase_head is None else self.phase_head(x)

    def ring_forward(self, deep: torch.Tensor, signals: StyleSignals) -> torch.Tensor:
        """The fast path's :meth:`forward` from the ringed deep map of :meth:`MicroEncoder.rings`, for the signals
        of one style: both FilterMod blocks on ringed maps (AdaIN too: it is pointwise), the head on the inside."""
        x = self._ring_deep_level(deep, signals)
        x = self.dec2.ring_forward(self._shallow_stream(x), signals.filter_weights[0], signals.filter_biases[0])
        return self.dec3(inside(x)) if self.phase_head is None else self.phase_head(x, ring=RING)

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
        """Fast path: the shallow block's residual stream in the precision its convolutions and the head compute
        in (the residual addition fused into the second convolution, no conversions back and forth)."""
        low = self.dec2.compute_dtype
        if low is not None and self.phase_head is not None and self.phase_head.late == low:
            return x.to(low)
        return x


#: Receptive radius of each part, in pixels of its input, rounded up: the margin a tile needs to come out exact.
#: Encoders (full resolution in, a quarter out): 9x9 conv, two stride-2 3x3 convs, four 3x3 convs at a quarter.
ENCODER_HALO = 24
#: The first FilterMod block: two 3x3 convolutions at a quarter of the resolution.
FIRST_HALF_HALO = 2
#: The second block and the head (in quarter-resolution pixels), by head: upsamplings, convolutions and the
#: final 9x9 (15x15 for the tuned head).
SECOND_HALF_HALO = {"bilinear": 6, "tuned": 10, "transposed": 6}
#: Working memory of a tile, bytes per full-resolution pixel (the peak of the decoder's full-resolution stages),
#: bytes per pixel the whole image needs whatever the tiling (the two quarter-resolution 64-channel maps kept
#: between stages, the output, statistics), and what oneDNN and the allocator hold whatever the size. Measured
#: on the CPU (peak resident memory, `brushwork bench`, tiles of 512 to 1440 px at 2048 px to 3840x2160).
TILE_BYTES_PER_PIXEL = 300
IMAGE_BYTES_PER_PIXEL = 56
#: The dtype of the maps kept between the stages of tiled decoding.
STORE_DTYPE = torch.float16
WORKSPACE_BYTES = 300 * 2**20


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
        #: Layout of the feature maps given to the convolutions (channels-last after :meth:`fast`).
        self.memory_format = torch.contiguous_format

    def fast(self, low_precision: torch.dtype | None | Literal["native"] = "native") -> "MicroAST":
        """Turn on the fast inference path for this model's device, in place; returns the model.

        The same arithmetic in faster shapes (:mod:`brushwork.fastconv`): channels-last layout, convolutions
        without padding copies (the quarter-resolution maps carry a one-pixel ring that holds their reflection;
        elsewhere exact borders from strips), ReLUs and residual additions fused into the
        convolutions (oneDNN on the CPU), FilterMod folded into the convolution weights, the modulator's means
        without its convolutions, and the bilinear head on the low-resolution grids (:class:`PhaseHead`). Then a
        lower precision where the hardware computes it natively (bfloat16 on CPUs with AVX-512 BF16 or AMX,
        float16 on CUDA GPUs) and the output stays well within 45 dB PSNR of fp32: the residual blocks of both
        encoders, both FilterMod blocks (the shallow one's residual stream too) and the head after them. The
        blocks with a float32 residual stream compute on centred maps (channel means taken out before rounding and
        added back in float32 through the biases: :func:`_centred_residual`), since rounding is relative to the
        values. The first layers, to the end of the stride-2 convolutions, stay float32.

        ``low_precision``: that type in those layers instead of the device's own (None: float32 throughout), to
        measure another choice.
        """
        device = next(self.parameters()).device
        self.to(memory_format=torch.channels_last)
        self.memory_format = torch.channels_last
        dtype = _native_low_precision(device) if low_precision == "native" else low_precision
        if PhaseHead.fits(self.decoder.dec3):
            self.decoder.phase_head = PhaseHead(self.decoder.dec3, dtype)
        self._fuse_relus()
        if dtype is not None:
            # Measured against fp32 on ten evaluation pairs at 514x386, worst pair: 49.7 dB for the official
            # weights (47.5 dB in tiles, whose maps are stored in float16), 48.2 dB for the weakest (portraits).
            # Uncentred, the content encoder's last convolution in bfloat16 costs 6 dB and the deep FilterMod
            # block 12 dB. The first layers in bfloat16, centred and with float32 biases: 1.6 dB for the 9x9
            # convolution (which saves little: the next layer needs a float32 copy of its large output), 3.2 dB
            # with the first stride-2 convolution.
            first, last = self.content_encoder.enc1[-1], self.content_encoder.enc2[0]
            for layer in (first.conv1, first.conv2, last.conv1, last.conv2):
                layer.compute_in(dtype)
            self.decoder.dec2.compute_dtype = dtype
            self.decoder.centred_dtype = dtype
            # The style encoder's residual blocks: their rounding averages out in the style signals (global
            # means); the worst pair stays at 51 dB.
            for block in (self.style_encoder.enc1[-1], self.style_encoder.enc2[0]):
                block.conv1.compute_in(dtype)
                block.conv2.compute_in(dtype)
            last = self.decoder.dec3[-1]
            if isinstance(last, ReflectConv) and self.decoder.phase_head is None:
                last.compute_in(dtype)
        for module in self.modules():
            if isinstance(module, ReflectConv):
                module.go_pad_free()
        return self

    def _fuse_relus(self) -> None:
        """Every convolution followed by a ReLU does the ReLU itself (one pass over the output fewer)."""
        for module in self.modules():
            if isinstance(module, nn.Sequential):
                for index in range(len(module) - 1):
                    if isinstance(module[index], ReflectConv) and isinstance(module[index + 1], nn.ReLU):
                        module[index].fused_relu = True
                        module[index + 1] = nn.Identity()
            elif type(module) is ResidualBlock:  # not the modulated one: its ReLU comes after the modulation
                module.conv1.fused_relu = True

    def _layout(self, features: torch.Tensor) -> torch.Tensor:
        """Feature maps (or tiles of them) in the layout the convolutions take. Images go to the encoders as they
        are: the first convolution makes its own reflection-padded copy, and oneDNN reads a 3-channel image in
        either layout (a channels-last copy of the image first cost more than the convolution saved)."""
        return features.contiguous(memory_format=self.memory_format)

    def encode_style(self, style: torch.Tensor, tile: int | None = None) -> StyleSignals:
        """Style signals of Nx3xHxW images in [0, 1]; ``tile``: encode in tiles of that many pixels."""
        style = pad_to(style, 1)
        untiled = tile is None or (tile >= style.shape[-2] and tile >= style.shape[-1])
        if untiled and self.style_encoder.ringed:  # fast path: statistics and modulator from the ringed maps
            rings = self.style_encoder.rings(style)
            means, stds = zip(*(mean_std(level, ring=RING) for level in rings))
            return StyleSignals(tuple(means), tuple(stds), *self.modulator(rings, ringed=True))
        if untiled:
            features = self.style_encoder(style)
        else:  # both levels as one map, so that the tiles assemble them together
            both = map_tiles(lambda piece: torch.cat(self.style_encoder(piece), dim=1), style,
                             scale=Fraction(1, SIZE_MULTIPLE), tile=tile, halo=ENCODER_HALO, multiple=SIZE_MULTIPLE)
            features = tuple(self._layout(level) for level in (both[:, :CHANNELS], both[:, CHANNELS:]))
        means, stds = zip(*(mean_std(level) for level in features))
        filter_weights, filter_biases = self.modulator(features)
        return StyleSignals(tuple(means), tuple(stds), filter_weights, filter_biases)

    def decode(self, content: torch.Tensor, signals: StyleSignals, tile: int | None = None,
               progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """Paint Nx3xHxW content images with the given signals; the output has exactly the input's size.

        ``tile``: work in tiles of about that many pixels a side (bounded memory, same output); ``progress`` is
        called with the number of tiles done (:func:`decode_steps` gives the total).
        """
        height, width = content.shape[-2:]
        padded = pad_to(content, SIZE_MULTIPLE)
        if tile is None:
            if self.content_encoder.ringed and signals.filter_weights[0].shape[0] == 1:
                deep = self.content_encoder.rings(padded)[1]
                return self.decoder.ring_forward(deep, signals)[..., :height, :width]
            encoded = tuple(self._layout(level) for level in self.content_encoder(padded))
            return self.decoder(encoded, signals)[..., :height, :width]
        output = paint_in_tiles(
            padded, tile, progress=progress, second_halo=SECOND_HALF_HALO[self.decoder.head],
            encode=lambda piece: self.content_encoder(piece)[1],
            first_half=lambda piece, own: self.decoder.first_half(self._layout(piece), signals, own),
            second_half=lambda piece, own: self.decoder.second_half(self._layout(piece), signals, own))
        return output[..., :height, :width]

    def decode_steps(self, content: torch.Tensor, tile: int | None) -> int:
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
        signals = self._mixed_signals(styles, style_weights, alpha, lambda: self.encode_style(content, tile))
        return self.decode(content, signals, tile, progress)

    def encode_content(self, content: torch.Tensor) -> EncodedContent:
        """What painting one 1x3xHxW content image takes whatever the style: its features, and its own signals
        (for ``alpha < 1``). Computed once, they let :meth:`stylize_encoded` paint it again and again with other
        styles and alphas (a live preview) at the cost of the decoder alone. Untiled."""
        padded = pad_to(content, SIZE_MULTIPLE)
        if self.content_encoder.ringed:
            features = self.content_encoder.rings(padded)[1]
        else:
            features = tuple(self._layout(level) for level in self.content_encoder(padded))
        return EncodedContent(features, self.encode_style(content), *content.shape[-2:])

    def stylize_encoded(self, content: EncodedContent, styles: Sequence[StyleSignals],
                        style_weights: Sequence[float] | None = None, alpha: float = 1.0) -> torch.Tensor:
        """:meth:`stylize` of a content image encoded by :meth:`encode_content`: the same output."""
        signals = self._mixed_signals(styles, style_weights, alpha, lambda: content.signals)
        if self.content_encoder.ringed:
            output = self.decoder.ring_forward(content.features, signals)
        else:
            output = self.decoder(content.features, signals)
        return output[..., :content.height, :content.width]

    @staticmethod
    def _mixed_signals(styles: Sequence[StyleSignals], style_weights: Sequence[float] | None, alpha: float,
                       own: Callable[[], StyleSignals]) -> StyleSignals:
        """The styles' signals mixed by their weights, then moved towards the content's ``own`` by ``1 - alpha``."""
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
        signals = StyleSignals.blend(list(styles), normalize_weights(style_weights, len(styles)))
        if alpha < 1.0:
            signals = StyleSignals.blend([own(), signals], [1.0 - alpha, alpha])
        return signals

    @staticmethod
    def tile_for(height: int, width: int, budget: int | None) -> int | None:
        """The tile side that keeps decoding an image of this size within ``budget`` bytes (None: no tiling)."""
        return tile_for_budget(height, width, budget, bytes_per_pixel=TILE_BYTES_PER_PIXEL,
                               fixed_bytes=IMAGE_BYTES_PER_PIXEL * height * width + WORKSPACE_BYTES,
                               multiple=SIZE_MULTIPLE)


def paint_in_tiles(padded: torch.Tensor, tile: int, *, encode: Callable, first_half: Callable, second_half: Callable,
                   second_halo: int, progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """MicroAST's decoding of a padded content image in tiles, whatever runs the stages (PyTorch or ONNX Runtime):
    ``encode(tile)`` -> deep features, ``first_half(tile, own)`` and ``second_half(tile, own)`` with ``own`` the
    statistics of the whole map they read. The two quarter-resolution maps kept between stages are stored in
    float16 (measured: 58-63 dB PSNR to float32, values far inside its range), which halves what the image needs.
    """
    quarter = max(1, tile // SIZE_MULTIPLE)
    deep = map_tiles(encode, padded, scale=Fraction(1, SIZE_MULTIPLE), tile=tile, halo=ENCODER_HALO,
                     multiple=SIZE_MULTIPLE, progress=progress, store=STORE_DTYPE)
    own = map_statistics(deep)
    hidden = map_tiles(lambda piece: first_half(piece.float(), own), deep, scale=1, tile=quarter,
                       halo=FIRST_HALF_HALO, progress=progress, store=STORE_DTYPE)
    del deep
    own = map_statistics(hidden)
    if not torch.isfinite(own[1]).all():  # out of float16's range: not seen on real images, but possible
        raise BrushworkError("the features of this image overflow the tiled path's float16 maps; paint it "
                             "with --max-memory none")
    return map_tiles(lambda piece: second_half(piece.float(), own), hidden, scale=SIZE_MULTIPLE, tile=quarter,
                     halo=second_halo, progress=progress)


def _native_low_precision(device: torch.device) -> torch.dtype | None:
    """The half-precision type this device computes convolutions in natively, if any."""
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


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

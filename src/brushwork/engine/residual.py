"""The residual blocks as the engine runs them: ReLU and residual addition fused into the convolutions, FilterMod
folded into the convolution weights, and convolutions in a lower precision than the residual stream on maps centred
where they are rounded (rounding is relative to the values)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..methods.microast import ModulatedResidualBlock, ResidualBlock
from .fastconv import layout_of, reflect_conv, ring_conv
from .layers import copy_of

Pair = tuple[torch.Tensor, torch.Tensor]


class FastResidualBlock(nn.Module):
    """A :class:`~brushwork.methods.microast.ResidualBlock` (an encoder's) from a ringed map to a ringed map
    (:func:`~brushwork.engine.fastconv.with_ring`), both convolutions in ``dtype`` (the residual stream keeps the
    input's)."""

    def __init__(self, block: ResidualBlock, dtype: torch.dtype | None = None):
        super().__init__()
        for index, layer in enumerate((block.conv1, block.conv2), 1):
            self.register_buffer(f"weight{index}", copy_of(layer.conv_layer.weight, dtype), persistent=False)
            self.register_buffer(f"bias{index}", copy_of(layer.conv_layer.bias, dtype), persistent=False)

    def forward(self, ringed: torch.Tensor) -> torch.Tensor:
        return ring_residual(ringed, (self.weight1, self.bias1), (self.weight2, self.bias2))


class FastModulatedBlock(nn.Module):
    """A :class:`~brushwork.methods.microast.ModulatedResidualBlock`: for the signals of one image, FilterMod
    folded into the two convolutions (:func:`fold_filter_mod`), which compute in ``dtype`` (by default the
    input's; the residual stream keeps the input's); for signals of several, the network's arithmetic."""

    def __init__(self, block: ModulatedResidualBlock, dtype: torch.dtype | None = None):
        super().__init__()
        self.compute_dtype = dtype
        for index, layer in enumerate((block.conv1, block.conv2), 1):
            self.register_buffer(f"weight{index}", copy_of(layer.conv_layer.weight), persistent=False)
            self.register_buffer(f"bias{index}", copy_of(layer.conv_layer.bias), persistent=False)

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if weight.shape[0] == 1:
            return fast_residual(x, *self._modulated_weights(weight, bias, x))
        hidden = (weight * reflect_conv(x, self.weight1, self.bias1).to(x.dtype) + bias * x).relu()
        return x + weight * reflect_conv(hidden, self.weight2, self.bias2).to(hidden.dtype) + bias * hidden

    def ring_forward(self, ringed: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """From a ringed map to a ringed map, for the signals of one image."""
        return ring_residual(ringed, *self._modulated_weights(weight, bias, ringed))

    def centred_forward(self, stream: torch.Tensor, centred: torch.Tensor, mean: torch.Tensor, weight: torch.Tensor,
                        bias: torch.Tensor, convolve: Callable[..., torch.Tensor],
                        output_scale: torch.Tensor | None = None) -> torch.Tensor:
        """Both convolutions in ``centred``'s lower precision, for the signals of one image
        (:func:`centred_residual`, which takes the same ``stream``, ``centred``, ``mean``, ``convolve`` and
        ``output_scale``). Uncentred, bfloat16 costs this block 12 dB PSNR on ten evaluation pairs; centred,
        0.5 dB."""
        first, second = self._folded(weight, bias, stream)
        return centred_residual(stream, centred, mean, first, second, convolve, output_scale)

    def _folded(self, weight: torch.Tensor, bias: torch.Tensor, like: torch.Tensor) -> list[Pair]:
        return [fold_filter_mod(*conv, weight, bias, like) for conv in self._convolutions()]

    def _modulated_weights(self, weight: torch.Tensor, bias: torch.Tensor, like: torch.Tensor) -> list[Pair]:
        dtype = self.compute_dtype or like.dtype
        return [tuple(value.to(dtype) for value in fold_filter_mod(*conv, weight, bias, like))
                for conv in self._convolutions()]

    def _convolutions(self) -> list[Pair]:
        return [(self.weight1, self.bias1), (self.weight2, self.bias2)]


def fold_filter_mod(conv_weight: torch.Tensor, conv_bias: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                    like: torch.Tensor) -> Pair:
    """One convolution computing ``weight * conv(h) + bias * h``: the output channels' weights scaled by
    ``weight``, ``bias`` added to the centre tap of each channel's own input (1xCx1x1 signals); in ``like``'s
    layout."""
    scale, shift = weight.reshape(-1, 1, 1, 1), bias.reshape(-1)
    folded = conv_weight * scale
    centre = conv_weight.shape[-1] // 2
    channels = torch.arange(folded.shape[0], device=folded.device)
    folded[channels, channels, centre, centre] += shift
    return folded.contiguous(memory_format=layout_of(like)), conv_bias * scale.reshape(-1)


def fast_residual(x: torch.Tensor, first: Pair,
                   second: Pair) -> torch.Tensor:
    """``x + conv2(relu(conv1(x)))`` of two reflection-padded 3x3 convolutions given as (weight, bias), without
    padding copies: the hidden map in the weights' dtype, the residual stream in ``x``'s (added by oneDNN when
    the two agree, else on centred maps: :func:`centred_residual`)."""
    return _any_residual(x, first, second, reflect_conv)


def ring_residual(ringed: torch.Tensor, first: Pair,
                   second: Pair) -> torch.Tensor:
    """:func:`fast_residual` from a ringed map to a ringed map (:func:`~brushwork.engine.fastconv.ring_conv`)."""
    return _any_residual(ringed, first, second, ring_conv)


def _any_residual(x: torch.Tensor, first: Pair,
                  second: Pair, convolve: Callable[..., torch.Tensor]) -> torch.Tensor:
    """:func:`fast_residual` with ``convolve``: both convolutions in the stream's dtype (the ReLU and the residual
    fused into them), or both in a lower one, on centred maps (:func:`centred_residual`)."""
    if first[0].dtype == second[0].dtype != x.dtype:
        mean = sampled_means(x)
        centred = (x - mean.view(1, -1, 1, 1)).to(first[0].dtype)
        return centred_residual(x, centred, mean, first, second, convolve)
    return convolve(convolve(x, *first, relu=True), *second, residual=x)


def centred_residual(stream: torch.Tensor, centred: torch.Tensor, mean: torch.Tensor,
                      first: Pair, second: Pair,
                      convolve: Callable[..., torch.Tensor], output_scale: torch.Tensor | None = None) -> torch.Tensor:
    """``x + conv2(relu(conv1(x)))`` with both convolutions, given as (weight, bias), in ``centred``'s lower
    precision, on maps centred where they are rounded to it (rounding is relative to the values).

    Its input ``x`` is given twice: ``centred`` is ``x - mean`` in the lower precision (``mean``: one value a
    channel, about ``x``'s channel means), ``stream`` is the float32 map the residual is added to: ``x`` itself,
    or, with ``output_scale`` (1xCx1x1), any map ``u`` with ``x = u / output_scale`` plus a per-channel constant,
    for which this returns ``stream + output_scale * residual`` without that constant (for an instance
    normalisation next, which takes it out: :meth:`~brushwork.engine.microast.FastDecoder.ring_forward`). ``convolve``:
    :func:`~brushwork.engine.fastconv.reflect_conv`, or :func:`~brushwork.engine.fastconv.ring_conv` for ringed maps.

    The hidden map is ``relu(h) - c``, with ``c`` the mean of ``h`` where positive (``max(h - c, -c)`` from the
    convolution's output ``h - c``); the second convolution gives its output less its estimated mean
    (:func:`add_low_precision`). The constants go to the biases, as the kernels sum them.
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
    return add_low_precision(stream, hidden, w2.to(low), b2, convolve, exact_level=output_scale is None)


#: The channel means that centre low-precision maps (:func:`_output_means`) are estimated from every this many
#: rows and columns of the map they come from.
CENTRE_SAMPLE = 8


def add_low_precision(stream: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
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
    :func:`sampled_means` of ``x`` (borders and rings counted as any other row): for centring its output, which
    needs no exact mean."""
    return _kernel_sums(weight) @ sampled_means(x) + (0.0 if bias is None else bias.float())


def sampled_means(x: torch.Tensor) -> torch.Tensor:
    """The channel means (float32, one a channel) of every :data:`CENTRE_SAMPLE`-th row and column of ``x``."""
    return x[..., ::CENTRE_SAMPLE, ::CENTRE_SAMPLE].float().mean(dim=(0, 2, 3))


def _kernel_sums(weight: torch.Tensor) -> torch.Tensor:
    """The sum over its taps of each (output, input) pair of a dense kernel (float32, out x in): what the
    convolution adds to each output channel for a constant input."""
    return weight.float().sum(dim=(2, 3))

"""The network's convolutions as the engine holds them: copies of their weights, prepared once, never the
network's own tensors (so the engine cannot change the network, and training the network does not change an
engine already built from it)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..methods.microast import ReflectConv
from .fastconv import RING, conv, reflect_conv, regrouped

CL = torch.channels_last


def copy_of(tensor: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A detached copy in ``dtype`` (by default the tensor's), channels-last for 4-d weights: the engine's own."""
    layout = CL if tensor.dim() == 4 else torch.preserve_format
    return tensor.detach().to(dtype or tensor.dtype, memory_format=layout, copy=True)


class PlainConv(nn.Module):
    """A copy of a :class:`~brushwork.methods.microast.ReflectConv` (float32, its own groups) computed as the
    network computes it, in the input's dtype: a reflection-padded copy, then the convolution. For border strips
    and for the kernels the engine derives from the layers."""

    def __init__(self, layer: ReflectConv):
        super().__init__()
        conv_layer = layer.conv_layer
        self.padding, self.stride, self.groups = layer.padding, conv_layer.stride[0], conv_layer.groups
        self.in_channels = conv_layer.in_channels
        self.register_buffer("weight", copy_of(conv_layer.weight), persistent=False)
        self.register_buffer("bias", copy_of(conv_layer.bias), persistent=False)

    def forward(self, x: torch.Tensor, bias: bool = True,
                weights: tuple[torch.Tensor, int] | None = None) -> torch.Tensor:
        """``bias=False`` leaves out the bias (the linear part alone). ``weights``: the same convolution's weights
        with other groups, as (weights, groups)."""
        weight, groups = weights or (self.weight, self.groups)
        bias_ = self.bias.to(x.dtype) if bias else None
        if self.padding:
            x = F.pad(x, [self.padding] * 4, mode="reflect")
        return F.conv2d(x, weight.to(x.dtype), bias_, self.stride, groups=groups)


class FastConv(nn.Module):
    """A :class:`~brushwork.methods.microast.ReflectConv`, and with ``relu`` the ReLU after it, as the engine runs
    it: channels-last weights with small groups merged (:func:`~brushwork.engine.fastconv.regrouped`), no padded
    copy (:func:`~brushwork.engine.fastconv.reflect_conv`), the ReLU fused into the convolution. ``dtype``:
    computes in that precision; input and output keep theirs."""

    def __init__(self, layer: ReflectConv, *, relu: bool = False, dtype: torch.dtype | None = None):
        super().__init__()
        conv_layer = layer.conv_layer
        self.padding, self.stride, self.relu = layer.padding, conv_layer.stride[0], relu
        weight, self.groups = regrouped(copy_of(conv_layer.weight, dtype), conv_layer.groups)
        self.register_buffer("weight", weight.contiguous(memory_format=CL), persistent=False)
        self.register_buffer("bias", copy_of(conv_layer.bias, dtype), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reflect_conv(x, self.weight, self.bias, stride=self.stride, groups=self.groups,
                            relu=self.relu).to(x.dtype)

    def ringed_output(self, x: torch.Tensor) -> torch.Tensor:
        """Stride 1: the output with a ring of :data:`~brushwork.engine.fastconv.RING` pixels around it from an
        input without one; the ring holds wrong values until :func:`~brushwork.engine.fastconv.refresh_ring`. A 1x1
        convolution takes zero padding for it, a larger one a reflection-padded copy (cheap for an image's
        three channels)."""
        if self.stride != 1:
            raise ValueError("a ringed output needs a stride-1 convolution")
        pad = RING
        if self.padding:
            x, pad = F.pad(x.to(self.weight.dtype), [self.padding + RING] * 4, mode="reflect"), 0
        return conv(x, self.weight, self.bias, padding=pad, groups=self.groups, relu=self.relu).to(x.dtype)

    def from_ring(self, ringed: torch.Tensor) -> torch.Tensor:
        """The convolution of a map held with a ring (the reflection it pads with; kernels up to 3x3), exact
        everywhere, without a ring."""
        return conv(ringed, self.weight, self.bias, padding=self.padding - RING, stride=self.stride,
                    groups=self.groups, relu=self.relu).to(ringed.dtype)


class FastSequence(nn.Module):
    """A head of layers (the transposed head, which :class:`~brushwork.engine.phase_head.PhaseHead` does not take)
    as the engine runs it: each convolution a :class:`FastConv` with the ReLU after it fused in, the last one in
    ``dtype``; other layers as copies."""

    def __init__(self, layers: nn.Sequential, dtype: torch.dtype | None = None):
        super().__init__()
        steps, index = [], 0
        while index < len(layers):
            layer = layers[index]
            then_relu = index + 1 < len(layers) and isinstance(layers[index + 1], nn.ReLU)
            if isinstance(layer, ReflectConv):
                steps.append(FastConv(layer, relu=then_relu, dtype=dtype if index == len(layers) - 1 else None))
                index += 2 if then_relu else 1
            else:
                steps.append(_copied(layer))
                index += 1
        self.steps = nn.Sequential(*steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.steps(x)


def _copied(layer: nn.Module) -> nn.Module:
    """A copy of a layer with its own (channels-last) weights."""
    return copy.deepcopy(layer).requires_grad_(False).to(memory_format=CL)

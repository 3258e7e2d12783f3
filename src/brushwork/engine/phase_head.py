"""The bilinear and tuned decoder heads on the low-resolution grids: the engine's largest saving (see
:mod:`brushwork.engine.fastconv`, "Polyphase layers")."""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..methods.microast import ReflectConv
from ..tiling import whole_map
from .fastconv import (STRIP_CHANNELS_PER_GROUP, conv, exact_borders, fast_groups, grouped, layout_of, phase_kernel,
                       regrouped)
from .layers import PlainConv


class PhaseHead(nn.Module):
    """A decoder head computed on the low-resolution grids, built from the network's head (same output, see
    :mod:`brushwork.engine.fastconv`).

    Each "upsample x2, grouped 3x3 convolution" pair becomes one convolution producing the four phases of its
    output, so neither upsampled map is made; the full-resolution maps stay on the half-resolution grid as
    phases, where every later convolution is one with a kernel half as wide (a 1x1 one is block-diagonal; the
    bilinear head's 9x9 becomes a 5x5, the tuned head's 15x15 a 9x9). Borders are recomputed exactly with copies
    of the plain layers (:func:`~brushwork.engine.fastconv.exact_borders`). For the bilinear and tuned heads
    (:meth:`fits`).
    """

    def __init__(self, head: nn.Sequential, low_precision: torch.dtype | None = None):
        super().__init__()
        up1, conv1, _, pointwise1, _, up2, conv2, _, *rest = head
        # copies of the plain layers: the kernels are derived from them and the border strips computed with them
        self.up1, self.up2 = copy.deepcopy(up1), copy.deepcopy(up2)
        self.conv1, self.conv2 = PlainConv(conv1), PlainConv(conv2)
        #: The layers after the upsamplings, and whether a ReLU follows each.
        self.layers = nn.ModuleList(PlainConv(layer) for layer in rest if isinstance(layer, ReflectConv))
        self.then_relu = [index + 1 < len(rest) and isinstance(rest[index + 1], nn.ReLU)
                          for index, layer in enumerate(rest) if isinstance(layer, ReflectConv)]
        probe = torch.zeros((), dtype=torch.float32, device=self.conv1.weight.device)
        #: The dtype of everything after the FilterMod blocks.
        self.late = low_precision or torch.float32

        #: The groups of each phase convolution (merged where that is faster, see fastconv.regrouped).
        self.groups: dict[str, int] = {}

        def weights(name, op, in_channels, groups=1):
            kernel = phase_kernel(op, in_channels, None, like=probe)
            self.groups[name] = fast_groups(kernel.shape[0], in_channels, groups)
            kernel = grouped(kernel, self.groups[name]) if self.groups[name] > 1 else kernel
            return kernel.to(self.late).contiguous(memory_format=torch.channels_last)

        def bias(layer: PlainConv, phases: int = 4) -> torch.Tensor:
            return layer.bias.repeat_interleave(phases).to(self.late)

        upsampled = lambda up, layer: (lambda x: layer(up(x), bias=False))  # noqa: E731
        on_phases = lambda layer: (  # noqa: E731
            lambda x: F.pixel_unshuffle(layer(F.pixel_shuffle(x, 2), bias=False), 2))
        pointwise = PlainConv(pointwise1)
        buffers = {
            "kernel1": weights("kernel1", upsampled(self.up1, self.conv1), self.conv1.in_channels, self.conv1.groups),
            "bias1": bias(self.conv1),
            "pointwise1": pointwise.weight.to(self.late),
            "pointwise1_bias": bias(pointwise, 1),
            "kernel2": weights("kernel2", upsampled(self.up2, self.conv2), self.conv2.in_channels, self.conv2.groups),
            "bias2": bias(self.conv2),
        }
        # the two upsampling convolutions as the border strips run them (plain, with larger groups)
        for name, layer in (("conv1", self.conv1), ("conv2", self.conv2)):
            weight, self.groups[f"strip_{name}"] = regrouped(layer.weight, layer.groups,
                                                             minimum=STRIP_CHANNELS_PER_GROUP)
            buffers[f"strip_{name}"] = weight.contiguous(memory_format=torch.channels_last)
        for index, layer in enumerate(self.layers):
            buffers[f"layer{index}"] = weights(f"layer{index}", on_phases(layer), 4 * layer.in_channels, layer.groups)
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
        """``ring``: ``x`` holds a border ring of that many pixels (:func:`~brushwork.engine.fastconv.with_ring`; the
        first convolution reads it, its border bands come from the inside as always)."""
        ringed, x = x, (x[..., ring:-ring, ring:-ring] if ring else x)
        # a strip cut across the map is exact this many rows from the cut: the upsampling clamps at the cut one
        # row in for bilinear interpolation, two for bicubic, then the convolution reads one more
        reach = 1 if self.up1.mode == "bilinear" else 2
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
        layer, up = getattr(self, f"conv{stage}"), getattr(self, f"up{stage}")
        weights = (getattr(self, f"strip_conv{stage}"), self.groups[f"strip_conv{stage}"])
        return self._as_phases(lambda piece: F.relu(layer(up(piece.float()), weights=weights)))

    def _as_phases(self, op: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        """``op`` (to a full-resolution map) with its output as 2x2 phases in the head's late dtype."""
        return lambda piece: F.pixel_unshuffle(op(piece), 2).to(self.late)

    def _full_resolution_layers(self, full: torch.Tensor) -> torch.Tensor:
        """The layers after the upsamplings, on the phases: with a ring of phases around the map that holds its
        full-resolution reflection (:func:`_refresh_phase_ring`), as the layers pad, so every inside output is
        exact. Tiles (whose cut sides need no exact border: their margin is thrown away) and maps too small for
        the ring take each layer's border bands at the image's sides from strips padded by reflection."""
        kernels = [(getattr(self, f"layer{index}"), getattr(self, f"layer{index}_bias"), self.groups[f"layer{index}"],
                    then_relu) for index, then_relu in enumerate(self.then_relu)]
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
        for index, (layer, then_relu) in enumerate(zip(self.layers, self.then_relu)):
            kernel, bias, groups = (getattr(self, f"layer{index}"), getattr(self, f"layer{index}_bias"),
                                    self.groups[f"layer{index}"])
            radius = kernel.shape[-1] // 2

            def exact(piece, layer=layer, then_relu=then_relu, kernel=kernel, bias=bias, groups=groups, radius=radius):
                if radius >= min(piece.shape[-2:]):  # too small to pad by reflection: the layer itself
                    plain = (lambda x: F.relu(layer(x))) if then_relu else layer
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

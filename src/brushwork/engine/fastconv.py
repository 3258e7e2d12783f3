"""Inference-only convolution building blocks that compute exactly what the plain layers compute, faster.

Five ideas, all measured on the CPU (docs/BENCHMARKS.md):

- **No padding copies.** A reflection-padded convolution is run with zero padding inside the convolution kernel
  (no padded copy of the input), and only the few output rows and columns next to the borders, the ones the
  zero padding got wrong, are recomputed exactly from thin strips of the input (:func:`exact_borders`).
- **Polyphase layers.** An upsampling x2 followed by a convolution is one linear, shift-invariant map from the
  low-resolution grid to the four *phases* (even/odd row x even/odd column) of the high-resolution output, so it
  is one convolution on the low-resolution grid with four times the output channels
  (:func:`phase_kernel` derives its weights from the layers themselves). The upsampled map, the largest tensor
  of a decoder, is never made. Layers after it can stay on the low-resolution grid the same way, with the
  high-resolution map held as ``pixel_unshuffle`` phases.
- **Groups oneDNN runs fast.** Grouped convolutions with one or two input channels a group (other than plain
  depthwise ones) are slow in oneDNN; merged into groups of four inputs, with zeros between the old groups, they
  compute the same faster (:func:`regrouped`).
- **Maps with a ring.** A chain of 3x3 convolutions can keep its maps with a border ring one pixel wide that
  holds the reflection (:func:`with_ring`): each convolution then runs with zero padding on the ringed map,
  which makes every inside output exact and the ring's own outputs wrong, and four one-pixel copies put the
  reflection back (:func:`refresh_ring`), instead of recomputing border strips.
- **Means without maps.** Where only the spatial mean of a convolution is wanted (MicroAST's modulator), it
  follows from sums of the input over a few shifted windows (:func:`mean_of_reflect_conv`).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Callable

import torch
import torch.nn.functional as F

from ..tiling import current_image_edges

Op = Callable[[torch.Tensor], torch.Tensor]

def _fused_relu_available(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16) and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))


def conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, padding: int = 0, stride: int = 1,
         groups: int = 1, relu: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``conv2d`` with zero ``padding`` done inside the kernel, then ``+ residual`` (same shape and dtype as the
    output) or a ReLU, fused into it by oneDNN on the CPU (``F.conv2d`` and the operations after it elsewhere).
    Computes in ``weight``'s dtype and returns it."""
    x = x.to(weight.dtype)
    if relu and residual is not None:
        raise ValueError("a convolution takes either a residual or a ReLU after it, not both")
    if _fused_relu_available(x):
        pointwise = torch.ops.mkldnn._convolution_pointwise
        settings = ([padding, padding], [stride, stride], [1, 1], groups)
        if residual is not None and residual.dtype == weight.dtype and residual.stride() == _strides_like(
                residual.shape, x):
            return pointwise.binary(x, residual, weight, bias, *settings, "add", None, None, [], None)
        if relu:
            return pointwise(x, weight, bias, *settings, "relu", [], "")
    out = F.conv2d(x, weight, bias, stride=stride, padding=padding, groups=groups)
    if residual is not None:
        return out.add_(residual)
    return out.relu_() if relu else out


def _strides_like(shape: torch.Size, x: torch.Tensor) -> tuple[int, ...]:
    """The strides a tensor of ``shape`` has in ``x``'s memory format (oneDNN's fused add wants them equal)."""
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    empty = torch.empty(shape, device="meta")
    return empty.contiguous(memory_format=torch.channels_last).stride() if channels_last else empty.stride()


def exact_borders(out: torch.Tensor, x: torch.Tensor, exact: Op, *, wrong: int, reach: int,
                  scale: Fraction | int = 1, multiple: int = 1, plus: torch.Tensor | None = None) -> torch.Tensor:
    """Overwrite, in place, the border bands of ``out`` = fast(``x``) with what ``exact`` gives there.

    ``exact`` is the reference computation (reflection padding and all) from an input map to an output map at
    ``scale`` times its size. The fast output is wrong only within ``wrong`` input rows/columns of each border;
    ``exact`` is correct on a crop of the input except within ``reach`` input rows of the crop's cut edges. Crops
    start on multiples of ``multiple`` (strided layers sample the same positions). ``plus``: a map of ``out``'s
    shape that ``out`` includes and ``exact`` does not (a residual). Returns ``out``.
    """
    scale = Fraction(scale)
    height, width = x.shape[-2:]
    rows = math.ceil((wrong + reach) / multiple) * multiple
    band = math.ceil(wrong * scale)
    add = (lambda value, where: value + plus[where]) if plus is not None else (lambda value, where: value)
    if 2 * rows >= height or 2 * rows >= width:  # a small map: the bands would cover it
        out.copy_(add(exact(x), (...,)))
        return out
    top_cut = (height - rows) // multiple * multiple
    left_cut = (width - rows) // multiple * multiple
    top, bottom = (..., slice(None, band), slice(None)), (..., slice(-band, None), slice(None))
    left, right = (..., slice(None), slice(None, band)), (..., slice(None), slice(-band, None))
    fix_top, fix_bottom, fix_left, fix_right = current_image_edges()
    # opposite sides as one batch of two strips of the same size (half the calls), where both are fixed
    for fix_first, fix_second, first, second, cut, size in (
            (fix_top, fix_bottom, top, bottom, top_cut, height), (fix_left, fix_right, left, right, left_cut, width)):
        strip = (lambda start, stop: (..., slice(start, stop), slice(None))) if first is top else \
            (lambda start, stop: (..., slice(None), slice(start, stop)))
        if fix_first and fix_second:
            both = exact(torch.cat([x[strip(0, size - cut)], x[strip(cut, None)]]))
            count = x.shape[0]
            out[first] = add(both[:count][first], first)
            out[second] = add(both[count:][second], second)
        elif fix_first:
            out[first] = add(exact(x[strip(0, rows)])[first], first)
        elif fix_second:
            out[second] = add(exact(x[strip(cut, None)])[second], second)
    return out


def reflect_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, stride: int = 1,
                 groups: int = 1, relu: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
    """A convolution on the reflection-padded input (half the kernel on each side), as
    ``conv2d(pad(x, reflect))``, without making the padded copy (see :func:`exact_borders`); then a ReLU or
    ``+ residual`` as in :func:`conv`."""
    padding = weight.shape[-1] // 2
    if padding == 0:
        return conv(x, weight, bias, stride=stride, groups=groups, relu=relu, residual=residual)

    def exact(piece: torch.Tensor) -> torch.Tensor:
        padded = F.pad(piece.to(weight.dtype), [padding] * 4, mode="reflect")
        return conv(padded, weight, bias, stride=stride, groups=groups, relu=relu)

    if weight.shape[1] * groups <= 4 or min(x.shape[-2:]) <= 4 * padding + 2 * stride:
        # an image's few channels: the padded copy is cheap and oneDNN is faster without padding
        out = exact(x)
        return out if residual is None else out + residual
    out = conv(x, weight, bias, padding=padding, stride=stride, groups=groups, relu=relu, residual=residual)
    return exact_borders(out, x, exact, wrong=padding * stride, reach=padding, scale=Fraction(1, stride),
                         multiple=stride, plus=residual)


#: Width of the border ring of :func:`with_ring` maps: what a 3x3 convolution reads beyond a map.
RING = 1


def with_ring(x: torch.Tensor) -> torch.Tensor:
    """``x`` with a border ring of :data:`RING` pixels holding its reflection (a new map, ``x``'s layout)."""
    return F.pad(x, [RING] * 4, mode="reflect").contiguous(memory_format=layout_of(x))


def refresh_ring(ringed: torch.Tensor) -> torch.Tensor:
    """Put the reflection of the inside back into the ring of a map made by a convolution with zero padding on a
    ringed map (whose ring outputs are wrong); in place, returns ``ringed``."""
    height, width = ringed.shape[-2:]
    rows = slice(RING, height - RING)
    for step in range(1, RING + 1):  # the columns beside the inside rows, then whole rows (corners included)
        ringed[..., rows, RING - step] = ringed[..., rows, RING + step]
        ringed[..., rows, width - 1 - RING + step] = ringed[..., rows, width - 1 - RING - step]
    for step in range(1, RING + 1):
        ringed[..., RING - step, :] = ringed[..., RING + step, :]
        ringed[..., height - 1 - RING + step, :] = ringed[..., height - 1 - RING - step, :]
    return ringed


def inside(ringed: torch.Tensor) -> torch.Tensor:
    """The map without its ring (a view)."""
    return ringed[..., RING:-RING, RING:-RING]


def ring_conv(ringed: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, relu: bool = False,
              residual: torch.Tensor | None = None) -> torch.Tensor:
    """A reflection-padded stride-1 convolution of at most 3x3 (as :func:`reflect_conv`) from a ringed map to a
    ringed map, then a ReLU or ``+ residual`` (ringed too) as in :func:`conv`."""
    if weight.shape[-1] > 2 * RING + 1:
        raise ValueError(f"a ring of {RING} pixels holds kernels up to {2 * RING + 1}x{2 * RING + 1}")
    # zero padding of half the kernel keeps the ringed size: the inside reads the ring, the ring's outputs are
    # wrong until refreshed
    return refresh_ring(conv(ringed, weight, bias, padding=weight.shape[-1] // 2, relu=relu, residual=residual))


def layout_of(x: torch.Tensor) -> torch.memory_format:
    """Channels-last for a 4-d map stored so (and not also contiguous), else the standard layout."""
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format


def phase_kernel(op: Op, in_channels: int, radius: int | None, *, like: torch.Tensor) -> torch.Tensor:
    """The weights of the convolution on ``op``'s input grid that computes ``op``'s output as 2x2 phases.

    ``op`` is linear (no bias), maps ``in_channels`` channels on a grid to a map at twice its size (or, for a map
    already held as phases, ``pixel_unshuffle``-d output at the same size), and each output phase depends on
    input pixels within ``radius`` (None: the smallest that holds it, up to 7). It is probed with one impulse per input channel, far
    from the borders; the result has shape (4 x out_channels) x in_channels x (2 radius + 1)^2, output channels
    in ``pixel_shuffle``'s order. ``like``: dtype and device to probe in (the probes' zeros stay exact zeros
    in any precision, so the kernel's shape is exact; its values are sums of a few products, to the dtype's rounding).
    """
    if radius is None:  # the smallest that holds the whole kernel: trim what a generous probe finds
        for generous in (2, 4, 8):
            kernel = phase_kernel(op, in_channels, generous, like=like)
            magnitude = kernel.abs().amax(dim=(0, 1))
            used = (magnitude > torch.finfo(kernel.dtype).eps * magnitude.max()).nonzero()
            radius = int((used - generous).abs().max()) if len(used) else 0
            if radius < generous:
                return kernel[..., generous - radius:generous + radius + 1,
                              generous - radius:generous + radius + 1].contiguous()
        raise ValueError("the layers reach further than 7 pixels of the low-resolution grid")
    size = 2 * radius + 9
    centre = size // 2
    responses = []
    for start in range(0, in_channels, 16):  # a few impulses at a time: bounded memory
        channels = torch.arange(start, min(start + 16, in_channels))
        probe = torch.zeros(len(channels), in_channels, size, size, dtype=like.dtype, device=like.device)
        probe[torch.arange(len(channels)), channels, centre, centre] = 1
        responses.append(op(probe))
    response = torch.cat(responses)
    if response.shape[-1] == 2 * size:
        response = F.pixel_unshuffle(response, 2)
    # y[Y] = sum_k K[k] x[Y + k - radius] and x is an impulse at the centre, so K[k] = y[centre + radius - k].
    window = response[..., centre - radius:centre + radius + 1, centre - radius:centre + radius + 1]
    return window.flip(-1, -2).transpose(0, 1).contiguous()


def grouped(dense: torch.Tensor, groups: int) -> torch.Tensor:
    """The weights of a grouped convolution from dense ones that are zero between the groups (checked): oneDNN
    runs the grouped one faster when each group has a few channels in and several out (see :func:`regrouped`)."""
    out_channels, in_channels = dense.shape[:2]
    out_per_group, in_per_group = out_channels // groups, in_channels // groups
    blocks = dense.reshape(groups, out_per_group, groups, in_per_group, *dense.shape[2:])
    diagonal = torch.arange(groups, device=dense.device)
    own = blocks[diagonal, :, diagonal]
    between = blocks.clone()
    between[diagonal, :, diagonal] = 0
    if between.abs().max() > 1e-6 * own.abs().max():
        raise ValueError("these weights mix channels of different groups")
    return own.reshape(out_channels, in_per_group, *dense.shape[2:])


def dense_of(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """The dense weights (zero between the groups) of a grouped convolution's."""
    out_channels, in_per_group = weight.shape[:2]
    out_per_group = out_channels // groups
    dense = weight.new_zeros(out_channels, in_per_group * groups, *weight.shape[2:])
    for group in range(groups):
        dense[group * out_per_group:(group + 1) * out_per_group,
              group * in_per_group:(group + 1) * in_per_group] = weight[group * out_per_group:(group + 1) * out_per_group]
    return dense


#: Input channels per group below which oneDNN's grouped convolutions are slow on the CPU: a depthwise 3x3 with
#: two outputs per channel (16 -> 32, stride 2) ran 1.3x faster as 4 groups of 4 -> 8 with zeros, the head's
#: phase convolutions (2 -> 4 channels a group) 1.3-1.6x faster with 4 inputs a group (docs/BENCHMARKS.md).
#: Eight or sixteen inputs a group were slower again on whole maps.
MIN_CHANNELS_PER_GROUP = 4
#: The same for the thin border strips of :func:`exact_borders`, which oneDNN runs on one thread: a 3x3 with two
#: inputs and one output a group on 2x64x514x8 strips took 1.8 ms, with 8 inputs a group 1.0 ms.
STRIP_CHANNELS_PER_GROUP = 8


def fast_groups(out_channels: int, in_channels: int, groups: int, minimum: int = MIN_CHANNELS_PER_GROUP) -> int:
    """The groups to run a convolution with: fewer, larger ones (zeros between the old ones) where its groups have
    fewer than ``minimum`` input channels. Depthwise convolutions (one input and one output a group), which oneDNN
    has its own fast kernels for, keep theirs."""
    in_per_group = in_channels // groups
    if groups == 1 or in_per_group >= minimum or in_channels == out_channels == groups:
        return groups
    merge = minimum // in_per_group
    while groups % merge:
        merge -= 1
    return groups // merge


def regrouped(weight: torch.Tensor, groups: int, minimum: int = MIN_CHANNELS_PER_GROUP) -> tuple[torch.Tensor, int]:
    """A grouped convolution's weights for :func:`fast_groups`: (weights, groups)."""
    new_groups = fast_groups(weight.shape[0], weight.shape[1] * groups, groups, minimum)
    if new_groups == groups:
        return weight, groups
    return grouped(dense_of(weight, groups), new_groups), new_groups


def mean_of_reflect_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int = 1, *,
                         ringed: bool = False) -> torch.Tensor:
    """The per-channel spatial mean (Nx(out channels)x1x1) of a stride-1 convolution of ``x`` padded by reflection
    (half the kernel on each side), without computing the convolution; ``ringed``: ``x`` already holds that
    padding as its ring (:func:`with_ring`)."""
    sums, count = window_sums(x, weight.shape[-1], ringed=ringed)
    return mean_from_window_sums(sums, count, weight, bias, groups).to(x.dtype)


def window_sums(x: torch.Tensor, size: int, *, ringed: bool = False) -> tuple[torch.Tensor, int]:
    """The sums (Nx(channels)x size x size, at least float32) of ``x`` over the windows that the taps of a
    reflection-padded stride-1 ``size`` x ``size`` convolution read, and the number of output positions.

    Each tap sees the whole map once, except for the few rows and columns near the borders that the padding
    repeats or leaves out: the sum for tap (ky, kx) is ``m_ky^T X n_kx``, with ``m`` and ``n`` counting how often
    each row and column is read. ``ringed``: ``x`` holds the padding already (a ring of ``size // 2`` pixels).
    """
    pad = size // 2
    height, width = x.shape[-2:]
    if ringed and pad != RING:
        raise ValueError(f"a ring of {RING} pixels is the padding of a {2 * RING + 1}x{2 * RING + 1} kernel, not {size}")
    inner = (height - 2 * pad, width - 2 * pad) if ringed else (height, width)
    if not ringed and pad >= min(height, width):
        raise ValueError(f"needs a kernel smaller than the map, got {size}x{size} on {height}x{width}")
    work = torch.promote_types(x.dtype, torch.float32)  # half-precision maps summed in float32

    def seen(length: int, outputs: int) -> torch.Tensor:
        """(size x length): how often each of ``length`` positions is read by each tap."""
        index = torch.arange(outputs, device=x.device)[None, :] + torch.arange(size, device=x.device)[:, None]
        if not ringed:  # positions of the padded map, reflected back into the map
            index = (index - pad).abs()
            index = torch.where(index >= length, 2 * (length - 1) - index, index)
        counts = torch.zeros(size, length, dtype=work, device=x.device)
        return counts.scatter_add_(1, index, torch.ones_like(index, dtype=work))

    rows, columns = seen(height, inner[0]), seen(width, inner[1])
    # channels-last maps are (N, H, W, C) in memory: contract the rows, then the columns
    sums = torch.einsum("yr,nrsc->nysc", rows, x.to(work).permute(0, 2, 3, 1))
    return torch.einsum("nysc,xs->ncyx", sums, columns), inner[0] * inner[1]


def mean_from_window_sums(sums: torch.Tensor, count: int, weight: torch.Tensor, bias: torch.Tensor | None,
                          groups: int = 1) -> torch.Tensor:
    """The mean over ``count`` outputs of a convolution with these weights, from :func:`window_sums` (Nx(out)x1x1
    in the sums' dtype)."""
    batch, out_channels, size = sums.shape[0], weight.shape[0], weight.shape[-1]
    by_group = weight.to(sums.dtype).reshape(groups, out_channels // groups, *weight.shape[1:])
    mean = torch.einsum("goiyx,ngiyx->ngo", by_group, sums.reshape(batch, groups, -1, size, size))
    mean = mean.reshape(batch, out_channels) / count
    if bias is not None:
        mean = mean + bias.to(sums.dtype)
    return mean[..., None, None]

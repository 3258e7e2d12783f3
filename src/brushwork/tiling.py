"""Tiled inference: a network applied to overlapping tiles of a large image, in bounded memory, without seams.

A convolutional stage changes a pixel only through its neighbours within the stage's receptive radius. Each tile
is therefore cut out with a margin (``halo``) at least that wide, run through the stage, and only its interior is
kept: the interior is then exactly what the whole image would give, and the tiles meet without seams. What is
*not* local, the instance-normalisation statistics, is computed between stages over the whole intermediate map
(see :func:`brushwork.functional.adaptive_instance_norm`'s ``own``), never per tile.

Tiles start at multiples of ``multiple`` (the product of the strides before the stage's output), so strided
convolutions and poolings sample the same positions as on the whole image; at the image's borders the tile has no
margin and the network's own padding applies, as on the whole image.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterator, Sequence

import torch

from .errors import BrushworkError
from .process import own_mapping

#: A stage: a tile of its input (Nx C x h x w) to its output at ``scale`` times the resolution.
Stage = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Tile:
    """One tile in input pixels: the interior ``[top, bottom) x [left, right)`` and the margin-extended cut."""

    top: int
    bottom: int
    left: int
    right: int
    cut_top: int
    cut_bottom: int
    cut_left: int
    cut_right: int


def tiles(height: int, width: int, size: int, halo: int, multiple: int = 1) -> list[Tile]:
    """Tiles of about ``size`` x ``size`` interior pixels covering a ``height`` x ``width`` map, with ``halo``
    pixels of margin where the map goes on; interior edges and margins fall on multiples of ``multiple``."""
    size = max(multiple, size - size % multiple)
    halo = math.ceil(halo / multiple) * multiple
    result = []
    for top, bottom in _spans(height, size):
        for left, right in _spans(width, size):
            result.append(Tile(top, bottom, left, right, max(0, top - halo), min(height, bottom + halo),
                               max(0, left - halo), min(width, right + halo)))
    return result


#: Which sides (top, bottom, left, right) of the maps being computed are the image's own borders.
_IMAGE_EDGES: contextvars.ContextVar[tuple[bool, bool, bool, bool]] = contextvars.ContextVar(
    "image_edges", default=(True, True, True, True))


@contextlib.contextmanager
def image_edges(top: bool, bottom: bool, left: bool, right: bool) -> Iterator[None]:
    """Within this block (one tile of :func:`map_tiles`) only the given sides of the maps are the image's
    borders: the others lie inside the image, in the margin that is thrown away, so code that makes borders exact
    (:func:`brushwork.engine.fastconv.exact_borders`) may leave them."""
    token = _IMAGE_EDGES.set((top, bottom, left, right))
    try:
        yield
    finally:
        _IMAGE_EDGES.reset(token)


def current_image_edges() -> tuple[bool, bool, bool, bool]:
    """Which sides (top, bottom, left, right) of the maps being computed are the image's borders
    (:func:`image_edges`; all of them outside tiles)."""
    return _IMAGE_EDGES.get()


def whole_map() -> bool:
    """Whether every side of the maps being computed is the image's border (no tile cut them)."""
    return all(_IMAGE_EDGES.get())


def _spans(length: int, size: int) -> Iterator[tuple[int, int]]:
    """Split ``length`` into pieces of ``size`` (the last one takes the rest; a sliver is merged into it)."""
    starts = list(range(0, length, size))
    if len(starts) > 1 and length - starts[-1] < size // 4:
        starts.pop()
    for index, start in enumerate(starts):
        yield start, starts[index + 1] if index + 1 < len(starts) else length


def map_tiles(stage: Stage, source: torch.Tensor | Sequence[torch.Tensor], *, scale: Fraction | int,
              tile: int | None, halo: int, multiple: int = 1, progress: Callable[[int], None] | None = None,
              store: torch.dtype | None = None) -> torch.Tensor:
    """Apply ``stage`` to ``source`` (NxCxHxW, or several maps of the same height and width, given to ``stage``
    as that many arguments) tile by tile and assemble the output (at ``scale`` times the resolution).
    ``tile=None`` runs the whole map at once. ``progress`` is called with the number of tiles done. ``store``:
    the dtype the tiled output is kept in (by default the stage's)."""
    scale = Fraction(scale)
    sources = [source] if isinstance(source, torch.Tensor) else list(source)
    height, width = sources[0].shape[-2:]
    if tile is None or (tile >= height and tile >= width):
        output = stage(*sources)
        if progress:
            progress(1)
        return output
    output = None
    out_height, out_width = _scaled(height, scale), _scaled(width, scale)
    reached_height = reached_width = 0
    for piece in tiles(height, width, tile, halo, multiple):
        with image_edges(piece.cut_top == 0, piece.cut_bottom == height, piece.cut_left == 0, piece.cut_right == width):
            result = stage(*(part[..., piece.cut_top:piece.cut_bottom, piece.cut_left:piece.cut_right]
                             for part in sources))
        if output is None:
            # in the stage's memory layout (channels-last on the fast path): no transposing copy per tile
            channels_last = result.dim() == 4 and not result.is_contiguous() and result.is_contiguous(
                memory_format=torch.channels_last)
            dtype = store or result.dtype
            nbytes = result.shape[:-2].numel() * out_height * out_width * dtype.itemsize
            with own_mapping(nbytes):
                output = torch.empty((*result.shape[:-2], out_height, out_width), dtype=dtype,
                                     device=result.device,
                                     memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        # Interior edges are multiples of ``multiple`` and scale exactly; at the image's far edges the stage's
        # own rounding (ceil for padded strided convolutions, floor for poolings without ceil mode) decides.
        out_top, out_left = _scaled(piece.top, scale), _scaled(piece.left, scale)
        top, left = out_top - _scaled(piece.cut_top, scale), out_left - _scaled(piece.cut_left, scale)
        rows = min(_scaled(piece.bottom, scale) - out_top, result.shape[-2] - top)
        columns = min(_scaled(piece.right, scale) - out_left, result.shape[-1] - left)
        output[..., out_top:out_top + rows, out_left:out_left + columns] = \
            result[..., top:top + rows, left:left + columns]
        reached_height, reached_width = max(reached_height, out_top + rows), max(reached_width, out_left + columns)
        if progress:
            progress(1)
    return output[..., :reached_height, :reached_width]


def map_statistics(features: torch.Tensor, rows: int = 16, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`brushwork.functional.mean_std` of a large map (any float dtype, any layout) without a full-size
    float32 copy: each band of ``rows`` rows gets its mean and sum of squared deviations in float32 (two passes
    over a band small enough to stay in cache), and the bands are combined in float64 (Chan et al.'s pairwise
    update), which keeps the variance exact to float32 rounding however large the map."""
    batch, channels, height, width = features.shape
    count = torch.zeros((), dtype=torch.float64, device=features.device)
    mean = torch.zeros(batch, channels, dtype=torch.float64, device=features.device)
    squares = torch.zeros_like(mean)
    for top in range(0, height, rows):
        band = features[..., top:top + rows, :].float()
        values = band.permute(0, 2, 3, 1).reshape(batch, -1, channels)
        band_count = values.shape[1]
        band_mean = values.mean(dim=1)
        band_squares = (values - band_mean[:, None]).square_().sum(dim=1)
        delta = band_mean.double() - mean
        total = count + band_count
        mean = mean + delta * (band_count / total)
        squares = squares + band_squares.double() + delta.square() * (count * band_count / total)
        count = total
    variance = squares / max(height * width - 1, 1)
    std = (variance.clamp(min=0) + eps).sqrt()
    return mean.float()[..., None, None], std.float()[..., None, None]


def _scaled(pixels: int, scale: Fraction) -> int:
    return math.ceil(pixels * scale)


def count_tiles(height: int, width: int, tile: int | None, halo: int, multiple: int = 1) -> int:
    if tile is None or (tile >= height and tile >= width):
        return 1
    return len(tiles(height, width, tile, halo, multiple))


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "m": 2**20, "mb": 2**20, "g": 2**30, "gb": 2**30}
#: The memory setting that follows the device (:func:`memory_budget`).
AUTO = "auto"
#: The automatic budget on the CPU (a 4K photo paints within it at 1.1-1.4 GB peak resident memory in all).
CPU_AUTO_BUDGET = 2**30
#: The share of a GPU's free memory the automatic budget takes (room for cuDNN's workspaces and for others).
GPU_AUTO_SHARE = 0.5


def memory_setting(setting: str | int | None) -> int | str | None:
    """A ``--max-memory`` setting checked: :data:`AUTO` (decided for each image by :func:`memory_budget`), or
    bytes as :func:`parse_memory` gives them."""
    return AUTO if isinstance(setting, str) and setting.strip().lower() == AUTO else parse_memory(setting)


def memory_budget(setting: str | int | None, device: torch.device) -> int | None:
    """The working memory (bytes; None: no limit) an image may take on ``device``: ``setting`` parsed
    (:func:`memory_setting`), for 'auto' 1 GiB on the CPU and half the free memory of a CUDA device (what
    PyTorch holds cached and unused counts as free), taken when the image is painted."""
    setting = memory_setting(setting)
    if setting != AUTO:
        return setting
    if device.type != "cuda":
        return CPU_AUTO_BUDGET
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int((free + cached) * GPU_AUTO_SHARE)


def parse_memory(text: str | int | None) -> int | None:
    """'1.5G', '800M', '2gb' or a number of bytes -> bytes; None or 'none' -> None (no limit). See
    :func:`memory_budget` for 'auto'."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "none")):
        return None
    if isinstance(text, (int, float)):
        value = int(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
        if not match or match.group(2).lower() not in _UNITS:
            raise BrushworkError(f"a memory size is like 800M or 1.5G, not {text!r}")
        number = float(match.group(1)) * _UNITS[match.group(2).lower()]
        if not math.isfinite(number):  # float() reads a 400-digit number as inf, which int() cannot take
            raise BrushworkError(f"a memory size must be a finite number, not {text!r}")
        value = int(number)
    if value < 64 * 2**20:
        raise BrushworkError(f"a memory budget below 64 MB is too small to work in, not {text!r}")
    return value


def tile_for_budget(height: int, width: int, budget: int | None, *, bytes_per_pixel: float, fixed_bytes: float,
                    multiple: int, smallest: int = 256) -> int | None:
    """The tile side (input pixels) whose working memory fits ``budget``, or None when the whole image fits.

    ``fixed_bytes``: what the image needs whatever the tiling (its maps kept between stages, the libraries'
    workspace); ``bytes_per_pixel``: the working memory of a stage per input pixel of a tile (measured for each
    model). When the fixed part alone nearly fills the budget (very large images), tiles still get a quarter of
    it: the budget is then exceeded rather than the work slowed to a crawl by tiny tiles.
    """
    if budget is None or fixed_bytes + bytes_per_pixel * height * width <= budget:
        return None
    room = max(budget - fixed_bytes, budget / 4)
    side = int(math.sqrt(room / bytes_per_pixel))
    return max(smallest, side - side % multiple)

"""MicroAST in tiles: the receptive radius of each part, the memory a tile takes, and decoding a large image
tile by tile with the instance-normalisation statistics of the whole image. The plain network
(:mod:`brushwork.methods.microast`), its fast engine and its ONNX export all paint large images through
:func:`paint_in_tiles`, each with its own stages."""

from __future__ import annotations

from fractions import Fraction
from typing import Callable

import torch

from ..errors import BrushworkError
from ..tiling import map_statistics, map_tiles

#: The encoders halve the size twice, so the decoder works on sizes that are multiples of 4.
SIZE_MULTIPLE = 4
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


def encode_levels(encoder: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], image: torch.Tensor,
                  tile: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Both levels of an encoder's features of ``image``, whole or (``tile``) assembled from tiles."""
    if tile is None or (tile >= image.shape[-2] and tile >= image.shape[-1]):
        return encoder(image)
    # both levels as one map, so that the tiles assemble them together
    both = map_tiles(lambda piece: torch.cat(encoder(piece), dim=1), image, scale=Fraction(1, SIZE_MULTIPLE),
                     tile=tile, halo=ENCODER_HALO, multiple=SIZE_MULTIPLE)
    return both.tensor_split(2, dim=1)


def paint_in_tiles(padded: torch.Tensor, tile: int, *, encode: Callable, first_half: Callable, second_half: Callable,
                   second_halo: int, progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """MicroAST's decoding of a padded content image in tiles, whatever runs the stages (this network, the fast
    engine, ONNX Runtime): ``encode(tile)`` -> deep features, ``first_half(tile, own)`` and ``second_half(tile,
    own)`` with ``own`` the statistics of the whole map they read. The two quarter-resolution maps kept between
    stages are stored in float16 (measured: 58-63 dB PSNR to float32, values far inside its range), which halves
    what the image needs.
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

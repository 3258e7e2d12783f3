"""Training data: folders of images, streamed as random (content crop, style crop) pairs without end.

Any folder of JPEG/PNG/WebP files works, searched recursively (MS-COCO, WikiArt, FFHQ, LAION are just folders).
Every image is resized so that its shorter side is ``resize`` pixels and a random ``crop`` x ``crop`` square is
cut from it. A file that cannot be read is skipped with a warning and never ends a run.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .errors import BrushworkError, ImageError
from .images import IMAGE_EXTENSIONS, load_image, resize

log = logging.getLogger(__name__)


def find_images(folder: str | Path) -> list[Path]:
    """Every image file under ``folder``, recursively, sorted (hidden files and folders skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BrushworkError(f"{folder}: not a folder of images")
    found = sorted(
        path for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
    if not found:
        raise BrushworkError(f"{folder}: no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return found


def random_crop(image: Image.Image, resize_to: int, crop: int, rng: random.Random) -> torch.Tensor:
    """Resize the shorter side to ``max(resize_to, crop)``, then cut a random ``crop`` square: 3 x crop x crop."""
    return crop_pixels(resized_pixels(image, resize_to, crop), crop, rng)


def resized_pixels(image: Image.Image, resize_to: int, crop: int) -> torch.Tensor:
    """The image with its shorter side at ``max(resize_to, crop)``, as a 3xHxW uint8 tensor (what a stream keeps)."""
    array = np.asarray(resize(image, max(resize_to, crop)), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def crop_pixels(pixels: torch.Tensor, crop: int, rng: random.Random) -> torch.Tensor:
    """A random ``crop`` square of a 3xHxW uint8 tensor, as float32 in [0, 1]."""
    top = rng.randint(0, pixels.shape[1] - crop)
    left = rng.randint(0, pixels.shape[2] - crop)
    return pixels[:, top:top + crop, left:left + crop].float().div_(255.0)


class ImageStream:
    """Endless random crops from a list of files: each pass visits every file once, in a fresh order.

    Decoded and resized images are kept (as uint8, up to ``cache_bytes``), so that from the second pass on a
    crop costs no decoding or resampling: on two CPU cores those took about a tenth of a 128 px training step.
    """

    def __init__(self, paths: list[Path], resize_to: int, crop: int, rng: random.Random,
                 cache_bytes: int = 0):
        self.paths, self.resize_to, self.crop, self.rng = list(paths), resize_to, crop, rng
        self.broken: set[Path] = set()
        self.cache: dict[Path, torch.Tensor] = {}
        self.cache_bytes, self.cached_bytes = cache_bytes, 0

    def pixels(self, path: Path) -> torch.Tensor:
        pixels = self.cache.get(path)
        if pixels is None:
            pixels = resized_pixels(load_image(path), self.resize_to, self.crop)
            if self.cached_bytes + pixels.numel() <= self.cache_bytes:
                self.cache[path] = pixels
                self.cached_bytes += pixels.numel()
        return pixels

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            order = [p for p in self.paths if p not in self.broken]
            if not order:
                raise BrushworkError("every image file failed to load; see the warnings above")
            self.rng.shuffle(order)
            for path in order:
                try:
                    yield crop_pixels(self.pixels(path), self.crop, self.rng)
                except ImageError as error:
                    self.broken.add(path)
                    log.warning("skipping an unreadable training image: %s", error)


class _Endless(IterableDataset):
    """An endless stream of random crops of the images of ``content_dir``; ``length`` is what a run will draw."""

    def __init__(self, content_dir: str | Path, *, resize_to: int, crop: int, seed: int, length: int | None,
                 cache_bytes: int = 0):
        super().__init__()
        self.contents = find_images(content_dir)
        self.resize_to, self.crop, self.seed = resize_to, crop, seed
        self.length, self.cache_bytes = length, cache_bytes

    def __len__(self) -> int:
        """Examples a run will draw (the stream itself never ends); lets progress bars show a total."""
        if self.length is None:
            raise TypeError("an endless stream has no length")
        return self.length

    def _rng(self) -> random.Random:
        """Every data-loader worker draws its own order."""
        info = get_worker_info()
        return random.Random(f"{self.seed}-{info.id if info is not None else 0}")


class ContentStylePairs(_Endless):
    """Endless (content, style) crop pairs; every data-loader worker draws its own shuffled order."""

    def __init__(self, content_dir: str | Path, style_dir: str | Path, *, resize_to: int = 512, crop: int = 256,
                 seed: int = 0, length: int | None = None, cache_bytes: int = 0, style_resize_to: int | None = None):
        super().__init__(content_dir, resize_to=resize_to, crop=crop, seed=seed, length=length,
                         cache_bytes=cache_bytes)
        self.styles = find_images(style_dir)
        self.style_resize_to = style_resize_to or resize_to

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rng = self._rng()
        contents = ImageStream(self.contents, self.resize_to, self.crop, rng, self.cache_bytes // 2)
        styles = ImageStream(self.styles, self.style_resize_to, self.crop, rng, self.cache_bytes // 2)
        return zip(contents, styles)


class ContentCrops(_Endless):
    """Endless content crops (per-style methods such as Johnson's, whose style is one fixed image)."""

    def __init__(self, content_dir: str | Path, *, resize_to: int = 512, crop: int = 256, seed: int = 0,
                 length: int | None = None, cache_bytes: int = 0):
        super().__init__(content_dir, resize_to=resize_to, crop=crop, seed=seed, length=length,
                         cache_bytes=cache_bytes)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(ImageStream(self.contents, self.resize_to, self.crop, self._rng(), self.cache_bytes))


def pair_loader(dataset: ContentStylePairs | ContentCrops, batch_size: int, workers: int) -> DataLoader:
    """Batches of (content, style) pairs from ``workers`` processes (0: in the training process)."""
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0,
                      pin_memory=torch.cuda.is_available())

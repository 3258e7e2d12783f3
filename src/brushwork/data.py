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

import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .errors import BrushworkError, ImageError
from .images import IMAGE_EXTENSIONS, load_image, resize, to_tensor

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
    image = resize(image, max(resize_to, crop))
    left = rng.randint(0, image.width - crop)
    top = rng.randint(0, image.height - crop)
    return to_tensor(image.crop((left, top, left + crop, top + crop)))[0]


class ImageStream:
    """Endless random crops from a list of files: each pass visits every file once, in a fresh order."""

    def __init__(self, paths: list[Path], resize_to: int, crop: int, rng: random.Random):
        self.paths, self.resize_to, self.crop, self.rng = list(paths), resize_to, crop, rng
        self.broken: set[Path] = set()

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            order = [p for p in self.paths if p not in self.broken]
            if not order:
                raise BrushworkError("every image file failed to load; see the warnings above")
            self.rng.shuffle(order)
            for path in order:
                try:
                    yield random_crop(load_image(path), self.resize_to, self.crop, self.rng)
                except ImageError as error:
                    self.broken.add(path)
                    log.warning("skipping an unreadable training image: %s", error)


class _Endless(IterableDataset):
    """An endless stream of random crops of the images of ``content_dir``; ``length`` is what a run will draw."""

    def __init__(self, content_dir: str | Path, *, resize_to: int, crop: int, seed: int, length: int | None):
        super().__init__()
        self.contents = find_images(content_dir)
        self.resize_to, self.crop, self.seed = resize_to, crop, seed
        self.length = length

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
                 seed: int = 0, length: int | None = None):
        super().__init__(content_dir, resize_to=resize_to, crop=crop, seed=seed, length=length)
        self.styles = find_images(style_dir)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rng = self._rng()
        contents = ImageStream(self.contents, self.resize_to, self.crop, rng)
        styles = ImageStream(self.styles, self.resize_to, self.crop, rng)
        return zip(contents, styles)


class ContentCrops(_Endless):
    """Endless content crops (per-style methods such as Johnson's, whose style is one fixed image)."""

    def __init__(self, content_dir: str | Path, *, resize_to: int = 512, crop: int = 256, seed: int = 0,
                 length: int | None = None):
        super().__init__(content_dir, resize_to=resize_to, crop=crop, seed=seed, length=length)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(ImageStream(self.contents, self.resize_to, self.crop, self._rng()))


def pair_loader(dataset: ContentStylePairs | ContentCrops, batch_size: int, workers: int) -> DataLoader:
    """Batches of (content, style) pairs from ``workers`` processes (0: in the training process)."""
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0,
                      pin_memory=torch.cuda.is_available())

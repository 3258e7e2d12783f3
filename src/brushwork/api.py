"""The Python API: ``load_model`` and ``stylize``. The CLI and the web server are thin layers over it."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence, Union

import torch
from PIL import Image
from torch import nn

from . import weights as registry
from .errors import BrushworkError
from .functional import normalize_weights, preserve_color
from .images import ImageLike, as_image, resize, to_image, to_tensor
from .methods import microast

#: How each architecture in the weights registry becomes a ready model.
LOADERS: dict[str, Callable[[Mapping[str, object]], nn.Module]] = {
    "microast": microast.load,
}

StyleInput = Union[ImageLike, Sequence[ImageLike]]


def choose_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when it is there, else the CPU; ``cuda`` (or ``cuda:N``) must be there."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise BrushworkError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise BrushworkError("device cuda asked for, but PyTorch sees no CUDA GPU here; use --device cpu or auto")
    if chosen.type not in ("cpu", "cuda"):
        raise BrushworkError(f"unsupported device {device!r}; use auto, cpu or cuda")
    return chosen


def load_model(name: str | os.PathLike | None = None, *, device: str | torch.device = "auto",
               weights_dir=None) -> nn.Module:
    """A ready (eval-mode, frozen) model: a registry name (the default model when ``name`` is None) or a folder
    of MicroAST weights, such as the ``weights`` folder a training run writes.

    Models are loaded once per name, device and weights folders, and then shared.
    """
    if name is not None and Path(name).is_dir():
        parts = microast.find_parts(Path(name).resolve())
        # Keyed by the files' modification times too: a folder written again (a new training run) is reloaded.
        return _load_folder(tuple((part, path, path.stat().st_mtime_ns) for part, path in parts.items()),
                            choose_device(device))
    entry = registry.get(name)
    if entry.kind != "model" or entry.architecture not in LOADERS:
        models = ", ".join(n for n, w in registry.REGISTRY.items() if w.kind == "model")
        raise BrushworkError(f"{entry.name!r} is not a style-transfer model; models: {models}")
    return _load(entry.name, choose_device(device), tuple(registry.search_dirs(weights_dir)))


@functools.lru_cache(maxsize=8)
def _load(name: str, device: torch.device, dirs: tuple) -> nn.Module:
    entry = registry.get(name)
    return LOADERS[entry.architecture](registry.resolve(entry, list(dirs))).to(device)


@functools.lru_cache(maxsize=8)
def _load_folder(files: tuple, device: torch.device) -> nn.Module:
    return microast.load({part: path for part, path, _ in files}).to(device)


class Stylizer:
    """A model with fixed settings, for painting many images; each style image is encoded once."""

    def __init__(self, model: str | nn.Module | None = None, *, alpha: float = 1.0,
                 style_weights: Sequence[float] | None = None, content_size: int | None = None,
                 style_size: int | None = None, resize_by: str = "shorter", preserve_color: bool = False,
                 device: str | torch.device = "auto", weights_dir=None):
        if not 0.0 <= alpha <= 1.0:
            raise BrushworkError(f"alpha must be between 0 and 1, not {alpha}")
        for label, size in (("content size", content_size), ("style size", style_size)):
            if size is not None and size < 0:
                raise BrushworkError(f"{label} must be positive, not {size}")
        if resize_by not in ("shorter", "longer"):
            raise BrushworkError(f"resize by 'shorter' or 'longer' side, not {resize_by!r}")
        self.model = model if isinstance(model, nn.Module) else load_model(
            model, device=device, weights_dir=weights_dir)
        self.device = next(self.model.parameters()).device
        self.alpha = alpha
        self.style_weights = style_weights
        self.content_size = content_size
        self.style_size = style_size
        self.resize_by = resize_by
        self.preserve_color = preserve_color
        self._encoded_styles: dict[str, object] = {}

    def __call__(self, content: ImageLike, style: StyleInput) -> Image.Image:
        """Paint ``content`` with one style image or a weighted mix of several."""
        styles = _as_list(style)
        weights = style_weights_for(self.style_weights, len(styles))
        content_tensor = self._tensor(content, self.content_size)
        with torch.inference_mode():
            encoded = [self._encode_style(s) for s in styles]
            output = self.model.stylize(content_tensor, encoded, weights, self.alpha)
            if self.preserve_color:
                output = preserve_color(output, content_tensor)
        return to_image(output)

    def _encode_style(self, style: ImageLike):
        # Only styles named by a path or sample reference are remembered: other objects may change.
        key = str(style) if isinstance(style, str) or hasattr(style, "__fspath__") else None
        if key is not None and key in self._encoded_styles:
            return self._encoded_styles[key]
        encoded = self.model.encode_style(self._tensor(style, self.style_size))
        if key is not None:
            self._encoded_styles[key] = encoded
        return encoded

    def _tensor(self, value: ImageLike, size: int | None) -> torch.Tensor:
        image = resize(as_image(value), size, side=self.resize_by)
        return to_tensor(image).to(self.device)


def stylize(content: ImageLike, style: StyleInput, *, model: str | nn.Module | None = None,
            alpha: float = 1.0, style_weights: Sequence[float] | None = None,
            content_size: int | None = None, style_size: int | None = None, resize_by: str = "shorter",
            preserve_color: bool = False, device: str | torch.device = "auto", weights_dir=None) -> Image.Image:
    """Paint a content image in the style of one style image, or of a weighted mix of several.

    ``content`` and each style may be a path, ``sample:NAME``, a PIL image, an array or a tensor in [0, 1].
    ``alpha`` (0..1) trades content for style; ``style_weights`` (normalised to sum to 1) mix several styles;
    ``content_size`` / ``style_size`` resize the inputs first so that their ``resize_by`` ('shorter' or
    'longer') side has that many pixels; ``preserve_color`` keeps the content's colours. The output has the
    (resized) content's size. Returns an RGB PIL image.
    """
    stylizer = Stylizer(model, alpha=alpha, style_weights=style_weights, content_size=content_size,
                        style_size=style_size, resize_by=resize_by, preserve_color=preserve_color,
                        device=device, weights_dir=weights_dir)
    return stylizer(content, style)


def style_weights_for(weights: Sequence[float] | None, count: int) -> list[float]:
    """Weights for mixing ``count`` styles, normalised to sum to 1; equal when none are given."""
    try:
        return normalize_weights(weights, count)
    except ValueError as error:
        raise BrushworkError(str(error)) from None


def _as_list(style: StyleInput) -> list[ImageLike]:
    if isinstance(style, (list, tuple)):
        if not style:
            raise BrushworkError("give at least one style image")
        return list(style)
    return [style]

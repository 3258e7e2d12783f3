"""The Python API: ``load_model`` and ``stylize``. The CLI and the web server are thin layers over it."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import numbers
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from . import engine
from . import weights as registry
from .devices import choose_device
from .errors import BrushworkError
from .functional import match_color, normalize_weights, preserve_color
from .functional import preserve_color as luminance_transfer  # where a parameter is called preserve_color
from .images import ImageLike, as_image, resize, to_image, to_tensor
from .methods import adain, gatys, johnson, microast, vst
from .tiling import AUTO, memory_budget, memory_setting

#: How each architecture in the weights registry becomes a ready model, from its entry and the local folders.
LOADERS: dict[str, Callable[[registry.Weights, list], nn.Module]] = {
    "microast": lambda entry, dirs: microast.load(registry.resolve(entry, dirs)),
    "adain": lambda entry, dirs: adain.load(registry.resolve(entry, dirs), entry.encoder, dirs),
    "johnson": lambda entry, dirs: johnson.load(registry.resolve(entry, dirs), entry.style or ""),
    "vst": lambda entry, dirs: vst.load(registry.resolve(entry, dirs), entry.encoder, weights_dir=dirs,
                                        temperature=entry.sample_temperature),
}

#: The methods, each with the model ``--method`` alone gives. Gatys needs no trained weights: its "model" is
#: the optimisation over a loss network.
METHODS: dict[str, str] = {"microast": registry.DEFAULT_MODEL, "adain": "adain", "gatys": "gatys",
                           "johnson": registry.DEFAULT_JOHNSON, "vst": "vst"}
#: Colour preservation: luminance-only transfer (after), or matching the style's colours to the content's
#: (before; Gatys et al. 2017).
COLOR_MODES = ("luminance", "histogram")
#: Working memory a stylisation may use before large images are painted in tiles (the model's own estimate):
#: 1 GiB on the CPU, half the free memory of a CUDA device (:func:`brushwork.tiling.memory_budget`).
DEFAULT_MAX_MEMORY = AUTO

StyleInput = Union[ImageLike, Sequence[ImageLike]]


def load_model(name: str | os.PathLike | None = None, *, method: str | None = None,
               device: str | torch.device = "auto", weights_dir=None, fast: bool = True, **options) -> nn.Module:
    """A ready (eval-mode, frozen) model: a registry name, a folder of trained weights (as ``brushwork train``
    writes them), an exported ``.onnx`` file (run by ONNX Runtime), or ``"gatys"``; without a name, the default
    model of ``method`` (MicroAST's without either).

    ``fast`` (the default) gives the model's fast engine, built from the loaded network
    (:func:`brushwork.engine.build`: channels-last layout, and lower precision in the layers where it keeps the
    output within 45 dB PSNR of fp32, on hardware that computes it natively); ``fast=False`` gives the plain eager
    fp32 network. ``options`` are settings of the Gatys optimisation (see
    :class:`brushwork.methods.gatys.GatysSettings`, plus ``loss_net``). Models are loaded once per name,
    device, weights folders and path, and then shared.
    """
    if method is not None and method not in METHODS:
        raise BrushworkError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    name = METHODS[method] if name is None and method is not None else name
    device = choose_device(device)
    dirs = tuple(registry.search_dirs(weights_dir))
    if name == "gatys":
        _check_method(method, "gatys", name)
        frozen = tuple(sorted((key, tuple(v) if isinstance(v, list) else v) for key, v in options.items()))
        return _load_gatys(frozen, device, dirs)
    if options:
        raise BrushworkError(f"{', '.join(sorted(options))}: settings of the gatys method, not of {name or 'this model'}")
    if name is not None and Path(name).is_dir():
        folder = Path(name).resolve()
        kind, files, encoder, stamp = _folder_files(folder)
        _check_method(method, kind, str(name))
        # Keyed by the files' modification times too, and by training.json's text (it holds settings such as vst's
        # sampling temperature): a folder written again (a new training run, an edited setting) is reloaded.
        return _load_folder(kind, encoder, tuple((key, path, path.stat().st_mtime_ns) for key, path in files.items()),
                            device, dirs, fast, stamp)
    if name is not None and str(name).endswith(".onnx"):
        from .onnx_export import load_onnx

        _check_method(method, "microast", str(name))
        path = Path(name)
        if not path.is_file():
            raise BrushworkError(f"{name}: no such ONNX file")
        return load_onnx(path.resolve(), path.stat().st_mtime_ns, device)
    entry = registry.get(name)
    if entry.kind != "model" or entry.architecture not in LOADERS:
        models = ", ".join(n for n, w in registry.REGISTRY.items() if w.kind == "model")
        raise BrushworkError(f"{entry.name!r} is not a style-transfer model; models: {models}, gatys")
    _check_method(method, entry.architecture, entry.name)
    return _load(entry.name, device, dirs, fast)


def method_of(model: nn.Module) -> str:
    """The method a loaded model implements: microast, adain, gatys, johnson or vst."""
    if hasattr(model, "method"):  # a model run by another backend says which method it exports
        return model.method
    for method, kind in (("gatys", gatys.Gatys), ("adain", adain.AdaIN), ("microast", microast.MicroAST)):
        if isinstance(model, kind):
            return method
    return type(model).__name__.lower()


def _check_method(method: str | None, actual: str, name: str) -> None:
    if method is not None and method != actual:
        raise BrushworkError(f"{name}: a {actual} model, not {method}")


def _folder_files(folder: Path) -> tuple[str, dict[str, Path], str | None, str | None]:
    """Which method a folder of trained weights is for (its training.json says; MicroAST's four files
    otherwise), its files, (AdaIN, VST) the registry name of its encoder (Johnson: its style's name), and a digest
    of its training.json (None without one)."""
    record, stamp, path = {}, None, folder / "training.json"
    if path.is_file():
        try:
            text = path.read_bytes()
            record = json.loads(text)
        except (OSError, ValueError) as error:
            raise BrushworkError(f"{path}: unreadable ({error})") from None
        if not isinstance(record, dict):
            raise BrushworkError(f"{path}: not a JSON object")
        stamp = hashlib.sha256(text).hexdigest()
    if record.get("method") == "adain":
        return "adain", {"decoder": adain.find_decoder(folder)}, record.get("encoder", "vgg19-normalised"), stamp
    if record.get("method") == "johnson":
        return "johnson", {"transform": johnson.find_weights(folder)}, record.get("style", ""), stamp
    if record.get("method") == "vst":
        return "vst", {"vst": vst.find_weights(folder)}, record.get("encoder", "vgg16-hed"), stamp
    return "microast", microast.find_parts(folder), None, stamp


@functools.lru_cache(maxsize=8)
def _load(name: str, device: torch.device, dirs: tuple, fast: bool) -> nn.Module:
    entry = registry.get(name)
    return _ready(LOADERS[entry.architecture](entry, list(dirs)), device, fast)


@functools.lru_cache(maxsize=8)
def _load_folder(kind: str, encoder: str | None, files: tuple, device: torch.device, dirs: tuple,
                 fast: bool, record_stamp: str | None = None) -> nn.Module:
    paths = {key: path for key, path, _ in files}
    if kind == "adain":
        model = adain.load(paths, encoder, list(dirs))
    elif kind == "johnson":
        model = johnson.load(paths, encoder or "")
    elif kind == "vst":
        model = vst.load(paths, encoder, list(dirs))
    else:
        model = microast.load(paths)
    return _ready(model, device, fast)


def _ready(model: nn.Module, device: torch.device, fast: bool) -> nn.Module:
    model = model.to(device)
    return engine.build(model) if fast else model


@functools.lru_cache(maxsize=4)
def _load_gatys(options: tuple, device: torch.device, dirs: tuple) -> nn.Module:
    return gatys.build(weights_dir=list(dirs), **dict(options)).to(device)


def _is_whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class Stylizer:
    """A model with fixed settings, for painting many images; each style image is encoded once."""

    def __init__(self, model: str | nn.Module | None = None, *, method: str | None = None, alpha: float = 1.0,
                 style_weights: Sequence[float] | None = None, content_size: int | None = None,
                 style_size: int | None = None, resize_by: str = "shorter", preserve_color: bool | str = False,
                 device: str | torch.device = "auto", weights_dir=None,
                 max_memory: int | str | None = DEFAULT_MAX_MEMORY,
                 progress: bool = False, fast: bool = True, **options):
        if not 0.0 <= alpha <= 1.0:
            raise BrushworkError(f"alpha must be between 0 and 1, not {alpha}")
        for label, size in (("content size", content_size), ("style size", style_size)):
            if size is not None and size < 0:
                raise BrushworkError(f"{label} must be positive, not {size}")
        if resize_by not in ("shorter", "longer"):
            raise BrushworkError(f"resize by 'shorter' or 'longer' side, not {resize_by!r}")
        self.color_mode = _color_mode(preserve_color)
        self.max_memory = memory_setting(max_memory)
        self.progress = progress
        self.model = model if isinstance(model, nn.Module) else load_model(
            model, method=method, device=device, weights_dir=weights_dir, fast=fast, **options)
        self.method = method_of(self.model)
        self.device = getattr(self.model, "device", None) or next(self.model.parameters()).device
        self.alpha = alpha
        self.style_weights = style_weights
        self.content_size = content_size
        self.style_size = style_size
        self.resize_by = resize_by
        self._encoded_styles: dict[str, object] = {}

    def __call__(self, content: ImageLike, style: StyleInput | None = None,
                 masks: Sequence[ImageLike] | None = None, noise: torch.Tensor | None = None) -> Image.Image:
        """Paint ``content`` with one style image or a weighted mix of several; ``masks`` (one grayscale image
        per style, white where that style goes; methods that have ``supports_masks``) place styles in regions.

        A per-style model (johnson) takes no style. ``noise`` (methods with ``supports_samples``: vst) is one
        draw from the model's latent Gaussian, as :meth:`samples` makes them; without it the mean code is used.
        """
        needs_style = getattr(self.model, "needs_style", True)
        if not needs_style:
            if style is not None and (not isinstance(style, (list, tuple)) or len(style)):
                raise BrushworkError(f"a {self.method} model paints the style it was trained on"
                                     f"{' (' + self.model.style_name + ')' if getattr(self.model, 'style_name', '') else ''}:"
                                     " give no style image")
            if masks is not None:
                raise BrushworkError(f"masks are supported by the adain method, not by {self.method}")
            if self.color_mode == "histogram" or self.style_weights is not None or noise is not None:
                raise BrushworkError(f"colour matching, style weights and samples need style images, which a "
                                     f"{self.method} model does not take")
            content_tensor = self._tensor(content, self.content_size)
            with torch.inference_mode():
                output = self.model.stylize(content_tensor, [], None, self.alpha)
                if self.color_mode == "luminance":
                    output = preserve_color(output, content_tensor)
            return to_image(output)
        if style is None:
            raise BrushworkError(f"give a style image: {self.method} paints any style")
        if noise is not None and not getattr(self.model, "supports_samples", False):
            raise BrushworkError(f"sampling several stylisations is a feature of the vst method, not of {self.method}")
        styles = _as_list(style)
        weights = style_weights_for(self.style_weights, len(styles))
        content_tensor = self._tensor(content, self.content_size)
        extra = {}
        if masks is not None:
            if not getattr(self.model, "supports_masks", False):
                raise BrushworkError(f"masks are supported by the adain method, not by {self.method}")
            if len(masks) != len(styles):
                raise BrushworkError(f"give one mask per style: {len(styles)} style(s), {len(masks)} mask(s)")
            extra["masks"] = [self._mask(mask, content_tensor) for mask in masks]
        if noise is not None:
            extra["noise"] = noise
        tile = self._tile(content_tensor)
        if tile is not None:
            extra["tile"] = tile
        with torch.inference_mode(), self._progress_bar(content_tensor, tile, extra):
            encoded = [self._encode_style(s, content_tensor) for s in styles]
            output = self.model.stylize(content_tensor, encoded, weights, self.alpha, **extra)
            if self.color_mode == "luminance":
                output = preserve_color(output, content_tensor)
        return to_image(output)

    def samples(self, content: ImageLike, style: StyleInput, count: int, seed: int = 0,
                temperature: float | None = None) -> list[Image.Image]:
        """``count`` different stylisations of one pair, from codes drawn from the style's Gaussian (vst) at
        ``temperature`` (None: the model's, see :mod:`brushwork.methods.vst`). The same seed gives the same
        samples, and sample k does not depend on ``count``."""
        if not getattr(self.model, "supports_samples", False):
            raise BrushworkError(f"sampling several stylisations is a feature of the vst method, not of {self.method}")
        if not _is_whole(count) or count < 1:
            raise BrushworkError(f"the number of samples must be a whole number, at least 1, not {count!r}")
        if not _is_whole(seed) or not 0 <= seed < 2 ** 63:
            raise BrushworkError(f"the seed must be a whole number from 0 to 2^63 - 1, not {seed!r}")
        draws = self.model.noise(int(count), int(seed), temperature=temperature)
        return [self(content, style, noise=noise[None]) for noise in draws]

    def _tile(self, image: torch.Tensor) -> int | None:
        """The tile side that keeps this image within the memory budget, for models that work in tiles."""
        tile_for = getattr(self.model, "tile_for", None)
        return tile_for(*image.shape[-2:], memory_budget(self.max_memory, self.device)) if tile_for else None

    def _progress_bar(self, content: torch.Tensor, tile: int | None, extra: dict):
        """A bar over the tiles of a tiled image (when ``progress`` is on); otherwise nothing."""
        if not self.progress or tile is None:
            return contextlib.nullcontext()
        bar = tqdm(total=self.model.decode_steps(content, tile), unit="tile", desc="painting", leave=False)
        extra["progress"] = bar.update
        return bar

    def _encode(self, image: torch.Tensor):
        tile = self._tile(image)
        return self.model.encode_style(image) if tile is None else self.model.encode_style(image, tile)

    def _encode_style(self, style: ImageLike, content: torch.Tensor):
        if self.color_mode == "histogram":  # depends on the content: not remembered
            return self._encode(match_color(self._tensor(style, self.style_size), content))
        key = _style_key(style)
        if key not in self._encoded_styles:
            self._encoded_styles[key] = self._encode(self._tensor(style, self.style_size))
        return self._encoded_styles[key]

    def _tensor(self, value: ImageLike, size: int | None) -> torch.Tensor:
        image = resize(as_image(value), size, side=self.resize_by)
        return to_tensor(image).to(self.device)

    def _mask(self, value: ImageLike, content: torch.Tensor) -> torch.Tensor:
        """A mask as a 1x1xHxW share map in [0, 1], resized to the content (white: the style goes here)."""
        height, width = content.shape[-2:]
        image = as_image(value).convert("L").resize((width, height), Image.Resampling.BILINEAR)
        return to_tensor(image.convert("RGB"))[:, :1].to(self.device)


@dataclass(frozen=True)
class Kept:
    """An image whose encodings a :class:`Preview` keeps under ``key``; ``load`` gives the image when they are not
    kept (so an image already encoded is never read again). The key names the image at its size."""

    key: Hashable
    load: Callable[[], ImageLike]


class Preview:
    """Paints an image again and again as its settings change (the web page's live preview, a webcam).

    The encodings of the content and of each style are kept, at most ``keep`` of them and ``max_bytes`` of
    tensors (the least recently used go first; the newest always stays), so that a change of alpha, style mix or
    colour mode costs the decoder alone: a MicroAST model keeps the content's features and own signals
    (:meth:`~brushwork.methods.microast.MicroAST.encode_content`), AdaIN and VST its VGG features
    (:meth:`~brushwork.methods.adain.AdaIN.encode_content`), every model its styles' encodings. Images are painted at the size they are given (no tiling: for previews).
    One caller at a time.
    """

    def __init__(self, keep: int = 6, max_bytes: int | None = None):
        self.keep = keep
        self.max_bytes = max_bytes
        self._kept: OrderedDict[tuple, tuple[object, int]] = OrderedDict()
        #: Bytes of the tensors kept.
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._kept)

    def paint(self, model: nn.Module, content: Kept | ImageLike, styles: Sequence[Kept] = (), *, alpha: float = 1.0,
              style_weights: Sequence[float] | None = None, preserve_color: bool | str = False) -> Image.Image:
        """``content`` (a :class:`Kept`, or an image painted once, such as a video frame) in the weighted mix of
        ``styles``, with the settings of :class:`Stylizer`."""
        if not 0.0 <= alpha <= 1.0:
            raise BrushworkError(f"alpha must be between 0 and 1, not {alpha}")
        color_mode = _color_mode(preserve_color)
        device = getattr(model, "device", None) or next(model.parameters()).device
        with torch.inference_mode():
            def encode_content() -> tuple[torch.Tensor, object]:
                tensor = to_tensor(as_image(content.load())).to(device)
                return tensor, model.encode_content(tensor) if hasattr(model, "encode_content") else None

            if isinstance(content, Kept):
                tensor, encoded = self._get(("content", model, content.key), encode_content)
            else:  # painted once: encoding it for later (its own signals even at alpha 1) would be wasted
                tensor, encoded = to_tensor(as_image(content)).to(device), None
            if not getattr(model, "needs_style", True):
                if styles or color_mode == "histogram" or style_weights is not None:
                    raise BrushworkError(f"a {method_of(model)} model paints the style it was trained on: give no "
                                         "style image, style weights or colour matching")
                output = model.stylize(tensor, [], None, alpha)
            else:
                if not styles:
                    raise BrushworkError(f"give a style image: {method_of(model)} paints any style")
                weights = style_weights_for(style_weights, len(styles))
                signals = [self._style_signals(model, style, tensor, content, color_mode) for style in styles]
                output = (model.stylize(tensor, signals, weights, alpha) if encoded is None
                          else model.stylize_encoded(encoded, signals, weights, alpha))
            if color_mode == "luminance":
                output = luminance_transfer(output, tensor)
            return to_image(output)

    def _style_signals(self, model: nn.Module, style: Kept, content: torch.Tensor, named_content: Kept | ImageLike,
                       color_mode: str | None):
        def encode() -> object:
            tensor = to_tensor(as_image(style.load())).to(content.device)
            return model.encode_style(match_color(tensor, content) if color_mode == "histogram" else tensor)

        if color_mode == "histogram":  # depends on the content: kept only for a content that is kept
            if not isinstance(named_content, Kept):
                return encode()
            return self._get(("style", model, style.key, named_content.key), encode)
        return self._get(("style", model, style.key, None), encode)

    def _get(self, key: tuple, make: Callable[[], object]) -> object:
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key][0]
        value = make()
        size = _tensor_bytes(value)
        self._kept[key] = (value, size)
        self.bytes += size
        while len(self._kept) > 1 and (len(self._kept) > self.keep
                                       or (self.max_bytes is not None and self.bytes > self.max_bytes)):
            self.bytes -= self._kept.popitem(last=False)[1][1]
        return value


def _tensor_bytes(value: object) -> int:
    """Bytes of the tensors in ``value``: a tensor, or tuples, lists and dataclasses of them."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(map(_tensor_bytes, value))
    if hasattr(value, "__dataclass_fields__"):
        return sum(_tensor_bytes(getattr(value, name)) for name in value.__dataclass_fields__)
    return 0


def stylize(content: ImageLike, style: StyleInput | None = None, *, model: str | nn.Module | None = None,
            method: str | None = None, alpha: float = 1.0, style_weights: Sequence[float] | None = None,
            masks: Sequence[ImageLike] | None = None, content_size: int | None = None,
            style_size: int | None = None, resize_by: str = "shorter", preserve_color: bool | str = False,
            device: str | torch.device = "auto", weights_dir=None,
            max_memory: int | str | None = DEFAULT_MAX_MEMORY, noise: torch.Tensor | None = None,
            **options) -> Image.Image:
    """Paint a content image in the style of one style image, or of a weighted mix of several.

    ``content`` and each style may be a path, ``sample:NAME``, a PIL image, an array or a tensor in [0, 1].
    ``model`` is a registry name, a folder of trained weights or ``"gatys"``; ``method`` (microast, adain,
    gatys) picks that method's default model. ``alpha`` (0..1) trades content for style; ``style_weights``
    (normalised to sum to 1) mix several styles; ``masks`` (AdaIN) give each style a region; ``content_size`` /
    ``style_size`` resize the inputs first so that their ``resize_by`` ('shorter' or 'longer') side has that many
    pixels; ``preserve_color`` keeps the content's colours (True or "luminance": luminance-only transfer;
    "histogram": the style's colours are matched to the content's first). ``max_memory`` (bytes, or like
    "800M"; None: no limit; "auto", the default: 1 GiB on the CPU, half the GPU's free memory on CUDA) bounds the
    working memory: larger images are painted in tiles, with the same result. ``options`` set the Gatys
    optimisation (``steps``, ``style_weight``, ...). The output has the (resized) content's size. A per-style
    model (``method="johnson"``) takes no ``style``; ``noise`` (vst) is a draw from the latent Gaussian (see
    :meth:`Stylizer.samples`). Returns an RGB PIL image.
    """
    stylizer = Stylizer(model, method=method, alpha=alpha, style_weights=style_weights, content_size=content_size,
                        style_size=style_size, resize_by=resize_by, preserve_color=preserve_color,
                        device=device, weights_dir=weights_dir, max_memory=max_memory, **options)
    return stylizer(content, style, masks=masks, noise=noise)


def _color_mode(value: bool | str | None) -> str | None:
    if value in (None, False, "", "none"):
        return None
    if value is True:
        return "luminance"
    if value not in COLOR_MODES:
        raise BrushworkError(f"preserve colour by {' or '.join(COLOR_MODES)}, not {value!r}")
    return value


def _style_key(style: ImageLike) -> tuple:
    """What identifies a style image for the encoding cache: its path or sample name, or a digest of its pixels
    (an image object may be changed between calls; hashing costs far less than encoding)."""
    if isinstance(style, str) or hasattr(style, "__fspath__"):
        return ("path", str(style))
    if isinstance(style, Image.Image):
        return ("image", style.mode, style.size, hashlib.sha1(style.tobytes()).hexdigest())
    array = style.detach().cpu().numpy() if isinstance(style, torch.Tensor) else np.asarray(style)
    return ("array", array.shape, str(array.dtype), hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest())


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

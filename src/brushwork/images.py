"""Images in and out: the one place that turns files into RGB images and tensors, and back.

Data flows one way: file -> PIL image (EXIF-corrected RGB) -> tensor (1x3xHxW float32 in [0, 1]) -> method
-> tensor -> PIL image -> file.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import torch
from PIL import ExifTags, Image, ImageCms, ImageOps, UnidentifiedImageError

from .errors import ImageError
from .samples import is_sample, load_sample

#: File extensions read as images when a folder is given (.mpo: multi-picture JPEGs of 3D cameras; the first
#: picture is read).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".mpo", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})

#: Output formats, chosen by the file extension.
SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}

#: Largest image accepted, in pixels (about 16K x 9K). Bigger files are treated as decompression bombs.
MAX_PIXELS = 150_000_000

#: Widest aspect ratio an image may have to be resized: sizing a 200:1 strip by its shorter side makes it 200
#: times the pixels of a square.
MAX_ASPECT = 4.0

#: Smallest shorter side of a style image: fewer pixels hold no texture, and a 1x1 "style" is one colour that
#: paints the photo over.
MIN_STYLE_SIDE = 16

#: Background that transparent pixels are composited onto.
BACKGROUND = (255, 255, 255)

ImageSource = Union[str, os.PathLike, bytes, io.IOBase]
ImageLike = Union[ImageSource, Image.Image, torch.Tensor, np.ndarray]


def load_image(source: ImageSource, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Read an image file (path, bytes or binary file object) as an RGB image, EXIF orientation applied.

    Raises :class:`ImageError` with a one-line message for anything that is not a readable image.
    """
    with _opened(source, max_pixels) as image:
        image.load()
        return to_rgb(ImageOps.exif_transpose(image))


def image_size(source: str | os.PathLike) -> tuple[int, int]:
    """The width and height :func:`as_image` gives a file or ``sample:NAME``, EXIF orientation applied, read
    from the file's header: checking a size costs no decoding."""
    if is_sample(source):
        return load_sample(source).size
    with _opened(source, MAX_PIXELS) as image:
        quarter_turn = image.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8)
        return (image.height, image.width) if quarter_turn else image.size


@contextlib.contextmanager
def _opened(source: ImageSource, max_pixels: int) -> Iterator[Image.Image]:
    """The image file opened (header read, pixels not decoded yet); any failure, also while the caller decodes
    it, as an :class:`ImageError` with a one-line message."""
    label = _label(source)
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below replaces Pillow's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageError(_too_large(label, width, height, max_pixels))
                yield image
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{label}: is a folder, not an image file") from None
    except PermissionError:
        raise ImageError(f"{label}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not an image, or a format Pillow cannot read") from None
    except Image.DecompressionBombError:
        raise ImageError(_too_large(label, 0, 0, max_pixels)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        # Truncated or corrupt data surfaces as one of these, with Pillow's reason.
        raise ImageError(f"{label}: cannot decode image ({error})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB: alpha composited on white, CMYK through its ICC profile, 16-bit scaled."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "CMYK":
        return _cmyk_to_rgb(image)
    if image.mode.startswith("I") or image.mode == "F":
        return _high_depth_to_rgb(image)
    return image.convert("RGB")


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    profile = image.info.get("icc_profile")
    if profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError):
            pass  # a broken profile: fall back to Pillow's plain conversion
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit grayscale (modes I;16*, I, F) scaled to 8 bits instead of clipped."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        top = 1.0 if values.max(initial=0.0) <= 1.0 else 255.0
    else:
        top = 255.0 if values.max(initial=0.0) <= 255 else 65535.0
    gray = np.clip(np.rint(values / top * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, "L").convert("RGB")


def as_image(value: ImageLike, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """An RGB image from a path, ``sample:NAME``, bytes, file object, PIL image, HxWx3 uint8 array or a
    3xHxW / 1x3xHxW tensor in [0, 1]."""
    if isinstance(value, Image.Image):
        return to_rgb(value)
    if isinstance(value, torch.Tensor):
        return to_image(value)
    if isinstance(value, np.ndarray):
        return _array_to_image(value)
    if is_sample(value):
        return load_sample(value)
    if isinstance(value, (str, os.PathLike, bytes, io.IOBase)):
        return load_image(value, max_pixels=max_pixels)
    raise ImageError(f"cannot use {type(value).__name__} as an image: give a path, PIL image, array or tensor")


def _array_to_image(array: np.ndarray) -> Image.Image:
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ImageError(f"an image array must be HxW, HxWx3 or HxWx4, not {tuple(array.shape)}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise ImageError(f"an image array must be uint8 or float in [0, 1], not {array.dtype}")
        array = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    return to_rgb(Image.fromarray(np.ascontiguousarray(array)))


def to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB image as a 1x3xHxW float32 tensor in [0, 1]."""
    array = np.asarray(to_rgb(image), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def to_image(tensor: torch.Tensor) -> Image.Image:
    """A 3xHxW or 1x3xHxW tensor in [0, 1] as an RGB image: clamped, times 255, rounded."""
    if tensor.dim() == 4:
        if tensor.shape[0] != 1:
            raise ImageError(f"expected one image, got a batch of {tensor.shape[0]}")
        tensor = tensor[0]
    if tensor.dim() != 3 or tensor.shape[0] not in (1, 3):
        raise ImageError(f"an image tensor must be 3xHxW or 1x3xHxW, not {tuple(tensor.shape)}")
    if tensor.shape[0] == 1:
        tensor = tensor.expand(3, -1, -1)
    # One float copy, then in place: a large image must not need several full-size temporaries.
    array = tensor.detach().float().clamp(0, 1).mul_(255).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def resize(image: Image.Image, size: int | None, *, side: str = "shorter") -> Image.Image:
    """Scale so that the shorter (or longer) side is ``size`` pixels, keeping the aspect ratio.

    ``None`` or 0 keeps the image as it is.
    """
    if not size:
        return image
    if size < 0:
        raise ImageError(f"a size must be positive, not {size}")
    if side not in ("shorter", "longer"):
        raise ImageError(f"resize by 'shorter' or 'longer' side, not {side!r}")
    new_size = resized_size(*image.size, size, side=side)
    if new_size == image.size:
        return image
    return image.resize(new_size, Image.Resampling.LANCZOS)


def resized_size(width: int, height: int, size: int | None, *, side: str = "shorter") -> tuple[int, int]:
    """The width and height :func:`resize` gives an image of ``width`` x ``height``."""
    if not size:
        return width, height
    scale = size / (min(width, height) if side == "shorter" else max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def save_image(image: Image.Image, path: str | os.PathLike, *, quality: int = 95) -> Path:
    """Write an image, format from the extension (png, jpg, webp); ``quality`` 1-100 for jpg and webp.

    The file appears complete or not at all: it is written next to its destination and then renamed.
    """
    path = Path(path)
    image_format = SAVE_FORMATS.get(path.suffix.lower())
    if image_format is None:
        known = ", ".join(sorted(SAVE_FORMATS))
        raise ImageError(f"{path}: cannot tell the format from {path.suffix or 'no extension'!r}; use one of {known}")
    if not 1 <= quality <= 100:
        raise ImageError(f"quality must be between 1 and 100, not {quality}")
    options = {"PNG": {}, "JPEG": {"quality": quality, "optimize": True}, "WEBP": {"quality": quality}}[image_format]
    try:
        handle, temporary = _temporary_file(path)
        try:
            with os.fdopen(handle, "wb") as file:
                to_rgb(image).save(file, format=image_format, **options)
            os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; an image is an ordinary file
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except (OSError, ValueError) as error:  # full disk, no permission, an encoder's limit
        raise _cannot_write(path, error) from None
    return path


def check_writable(path: str | os.PathLike) -> None:
    """Refuse, before the work that makes it, an output :func:`save_image` could not write: a parent that is a
    file, a folder that cannot be made or written in, a name too long for the file system.

    It tries what saving does first (makes the folder and the temporary file), then removes the file: what is
    at ``path`` already stays as it is.
    """
    path = Path(path)
    try:
        handle, temporary = _temporary_file(path)
    except OSError as error:
        raise _cannot_write(path, error) from None
    os.close(handle)
    os.unlink(temporary)


def _temporary_file(path: Path) -> tuple[int, str]:
    """A new file beside ``path`` (its folder made if need be) to write into and then rename to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)


def _cannot_write(path: Path, error: Exception) -> ImageError:
    if isinstance(error, (FileExistsError, NotADirectoryError)):  # from mkdir: a file where a folder should be
        blocking = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), path.parent)
        return ImageError(f"{path}: cannot write ({blocking} is not a folder)")
    return ImageError(f"{path}: cannot write ({getattr(error, 'strerror', None) or error})")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside a folder, sorted by name (hidden files skipped)."""
    folder = Path(folder)
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def _label(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return getattr(source, "name", None) or "image data"


def _too_large(label: str, width: int, height: int, max_pixels: int) -> str:
    size = f"{width}x{height} ({width * height / 1e6:.0f} megapixels)" if width else "its pixel count"
    return f"{label}: {size} is more than the limit of {max_pixels / 1e6:.0f} megapixels (a decompression bomb?)"

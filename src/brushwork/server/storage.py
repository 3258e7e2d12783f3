"""Image files on disk, named by the sha256 of their bytes, and the checks every upload passes first."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException
from PIL import Image, UnidentifiedImageError

from ..errors import ImageError
from ..images import load_image

#: Upload formats (as Pillow names them). Browsers show these, so they are kept byte for byte; the others are
#: stored as PNG. MPO is a JPEG with more pictures after the first (phones write it): browsers and stylisations
#: use its first picture.
KEPT_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "MPO": "jpg"}
CONVERTED_FORMATS = {"TIFF", "BMP", "GIF"}
MEDIA_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


class ImageStore:
    """Content-addressed files: the same image is stored once, and a name never changes what it points to.

    A file appears whole or not at all: it is written to a temporary file beside its place, then renamed.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str, extension: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.{extension}"

    def put(self, data: bytes, extension: str) -> str:
        """Store ``data`` (if not already there) and return its sha256."""
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.path(sha256, extension)
        if path.is_file():
            return sha256
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".", suffix=".part", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return sha256

    def remove(self, sha256: str, extension: str) -> None:
        self.path(sha256, extension).unlink(missing_ok=True)


@dataclass
class Upload:
    """A checked upload: the bytes to store and what the database says about them."""

    data: bytes
    extension: str
    name: str
    width: int
    height: int


def check_upload(data: bytes, name: str, max_pixels: int) -> tuple[Upload, Image.Image]:
    """The upload and its decoded RGB image; refuses what is not an image of a known type (415), has too many
    pixels (413) or is damaged (422).

    The pixel count is read from the header, before anything is decoded: a decompression bomb costs nothing.
    """
    label = name or "upload"
    if not data:
        raise HTTPException(422, f"{label}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit comes next
            with Image.open(io.BytesIO(data)) as header:
                image_format, (width, height) = header.format, header.size
                if image_format not in KEPT_FORMATS and image_format not in CONVERTED_FORMATS:
                    raise HTTPException(415, f"{label}: {image_format} images are not accepted; "
                                             f"send JPEG, PNG, WebP, TIFF, BMP or GIF")
                if width * height > max_pixels:
                    raise HTTPException(413, f"{label}: {width}x{height} is {width * height / 1e6:.1f} megapixels, "
                                             f"more than the limit of {max_pixels / 1e6:g}")
                header.verify()
    except UnidentifiedImageError:
        raise HTTPException(415, f"{label}: not an image (send JPEG, PNG, WebP, TIFF, BMP or GIF)") from None
    except Image.DecompressionBombError:
        raise HTTPException(413, f"{label}: too many pixels") from None
    except HTTPException:
        raise
    except Exception as error:  # Pillow reports damaged files with many exception types
        raise HTTPException(422, f"{label}: damaged image ({error})") from None
    try:
        image = load_image(data, max_pixels=max_pixels)
    except ImageError as error:
        raise HTTPException(422, f"{label}: {str(error).removeprefix('image data: ')}") from None
    if image_format in KEPT_FORMATS:
        return Upload(data, KEPT_FORMATS[image_format], name, image.width, image.height), image
    return Upload(encode(image, "png"), "png", name, image.width, image.height), image


def encode(image: Image.Image, extension: str) -> bytes:
    """PNG (lossless) or JPEG (quality 92) bytes of an RGB image."""
    buffer = io.BytesIO()
    if extension == "png":
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()

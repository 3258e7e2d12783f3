"""Image files on disk, named by the sha256 of their bytes, and the checks every upload passes first."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import sqlite3
import struct
import tempfile
import threading
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError
from ..images import load_image

#: Upload formats (as Pillow names them) and the file type each is stored as. Nothing of an upload but its picture
#: is ever served back (a file that is also an HTML page or a ZIP archive is not): a JPEG is cut after its image
#: (losslessly: its pixels, EXIF orientation and colour profile stay, and a clean JPEG keeps its bytes and so its
#: name), anything else is stored as a PNG of its decoded pixels. MPO is a JPEG with more pictures after the
#: first (phones write it): browsers and stylisations use its first picture, the only one kept.
FORMATS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "png", "TIFF": "png", "BMP": "png", "GIF": "png"}
#: Longest side of a gallery thumbnail, in pixels (sharp on a high-density screen at the gallery's card size).
THUMBNAIL_SIDE = 480
#: Stored images of earlier versions may still be WebP.
MEDIA_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
#: How a write that finds no room fails: a full disk, a user's disk quota, a limit on the size of a file.
NO_ROOM_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class StorageFull(Exception):
    """No room to store what a request made: the disk, or this server's storage quota, is full. Nothing of the
    request was kept."""


def no_room(error: BaseException) -> bool:
    """Whether ``error``, or the error it came from, is a write that found no room: a file write failing with
    ENOSPC, EDQUOT or EFBIG, or SQLite's "database or disk is full"."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in NO_ROOM_ERRNOS:
            return True
        if isinstance(error, sqlite3.Error) and getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        error = getattr(error, "orig", None) or error.__cause__  # SQLAlchemy keeps the driver's error in .orig
    return False


DISK_FULL = ("the server has no room left on its disk: nothing of this request was saved; try again once its "
             "operator has made room")


def megabytes(count: int) -> str:
    return f"{count / 1e6:,.1f} MB"


class ImageStore:
    """Content-addressed files: the same image is stored once, and a name never changes what it points to.

    A file appears whole or not at all: it is written to a temporary file beside its place, flushed to disk, then
    renamed (``put``, the one way files are written). A write that finds no room (a full disk, or more than
    ``quota`` bytes in all) raises ``StorageFull`` and leaves nothing behind.

    A file is removed only when no row refers to it and no request in progress uses it: the rows that refer to
    files change, and unused files are removed, with ``lock`` held (so a file never goes between a check that it
    is there and the commit of a row pointing to it), and a request pins the stored images it paints from.
    """

    def __init__(self, root: Path, quota: int | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        #: Most bytes of files kept in all (None: as many as the disk holds).
        self.quota = quota
        self.lock = threading.RLock()
        self._pins: Counter[str] = Counter()
        #: Pinned images that lost their last row meanwhile: for the caller of ``unpin`` to remove if still unused.
        self._unused_when_unpinned: set[str] = set()
        #: Bytes of the files stored: counted once here, then kept up to date by ``put`` and ``remove``.
        self.used = sum(path.stat().st_size for path in self.files())

    def path(self, sha256: str, extension: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.{extension}"

    def files(self) -> list[Path]:
        """Every file in the store, temporary ones included."""
        return [path for path in self.root.glob("*/*") if path.is_file()]

    def check_room(self, size: int) -> None:
        """Refuse with StorageFull, before any work, a request that needs ``size`` bytes more than the quota or
        the disk has left."""
        self._check_quota(size)
        if shutil.disk_usage(self.root).free < size:
            raise StorageFull(DISK_FULL)

    def _check_quota(self, size: int) -> None:
        if self.quota is not None and self.used + size > self.quota:
            raise StorageFull(f"this server's storage quota of {megabytes(self.quota)} is used up "
                              f"({megabytes(self.used)} stored): nothing of this request was saved; delete results "
                              f"from the gallery to make room")

    def put(self, data: bytes, extension: str) -> str:
        """Store ``data`` (if not already there) and return its sha256; StorageFull, with nothing left behind,
        when there is no room for it."""
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.path(sha256, extension)
        with self.lock:
            if path.is_file():
                return sha256
            self._check_quota(len(data))
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                handle, temporary = tempfile.mkstemp(prefix=".", suffix=".part", dir=path.parent)
            except OSError as error:
                if no_room(error):
                    raise StorageFull(DISK_FULL) from error
                raise
            try:
                with os.fdopen(handle, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temporary, path)
            except BaseException as error:
                Path(temporary).unlink(missing_ok=True)
                if no_room(error):
                    raise StorageFull(DISK_FULL) from error
                raise
            self.used += len(data)
            _sync_folder(path.parent)  # the rename, too, is on disk before the row that names the file is
        return sha256

    def remove(self, sha256: str, extension: str) -> None:
        self.remove_file(self.path(sha256, extension))
        self.thumbnail_path(sha256).unlink(missing_ok=True)

    def thumbnail_path(self, sha256: str) -> Path:
        """Where the thumbnail of a stored image is kept (outside the quota: a few kB each, one per image)."""
        return self.root / "thumbnails" / sha256[:2] / f"{sha256}.jpg"

    def thumbnail(self, sha256: str, extension: str) -> Path:
        """The thumbnail of a stored image (a JPEG within THUMBNAIL_SIDE px), made the first time it is asked
        for and kept; FileNotFoundError when the image is not in the store."""
        path = self.thumbnail_path(sha256)
        if path.is_file():
            return path
        with Image.open(self.path(sha256, extension)) as image:
            image.draft("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))  # a JPEG decodes at a fraction of its size
            image = ImageOps.exif_transpose(image).convert("RGB")
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
            data = encode(image, "jpg")
        with self.lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=".", suffix=".part", dir=path.parent)
            try:
                with os.fdopen(handle, "wb") as file:
                    file.write(data)
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        return path

    def remove_file(self, path: Path) -> None:
        with self.lock:
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                return
            self.used -= size

    def pin(self, sha256s: list[str]) -> None:
        """Keep these images (row and file) until ``unpin``, whatever is deleted meanwhile."""
        with self.lock:
            self._pins.update(sha256s)

    def pinned(self, sha256: str) -> bool:
        return self._pins[sha256] > 0

    def remove_when_unpinned(self, sha256: str) -> None:
        self._unused_when_unpinned.add(sha256)

    def unpin(self, sha256s: list[str]) -> set[str]:
        """Release pins of ``pin``; the images that lost their last row while pinned and are pinned no more."""
        with self.lock:
            self._pins.subtract(sha256s)
            released = {sha256 for sha256 in sha256s if self._pins[sha256] <= 0}
            for sha256 in released:
                del self._pins[sha256]
            unused = released & self._unused_when_unpinned
            self._unused_when_unpinned -= unused
            return unused


def _sync_folder(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


@dataclass
class Upload:
    """A checked upload: the bytes to store and what the database says about them."""

    data: bytes
    extension: str
    name: str
    width: int
    height: int


def check_header(data: bytes, name: str, max_pixels: int) -> str:
    """The format of an upload, read from its header without decoding its pixels; refuses what is not an image
    of a known type (415), has too many pixels (413) or is damaged (422): a decompression bomb costs nothing."""
    label = name or "upload"
    if not data:
        raise HTTPException(422, f"{label}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit comes next
            with Image.open(io.BytesIO(data)) as header:
                image_format, (width, height) = header.format, header.size
                if image_format not in FORMATS:
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
    return image_format


def decode_upload(data: bytes, name: str, image_format: str, max_pixels: int) -> tuple[Upload, Image.Image]:
    """The upload of ``check_header`` and its decoded RGB image; 422 when its pixels are damaged or missing."""
    label = name or "upload"
    try:
        image = load_image(data, max_pixels=max_pixels)
    except ImageError as error:
        raise HTTPException(422, f"{label}: {str(error).removeprefix('image data: ')}") from None
    if image_format == "PNG" and not png_rows_complete(data):
        raise HTTPException(422, f"{label}: damaged image (its image data stops before its last row)")
    end = jpeg_end(data) if FORMATS[image_format] == "jpg" else None
    stored = (data[:end], "jpg") if end else (encode(image, "png"), "png")
    return Upload(*stored, name, image.width, image.height), image


def jpeg_end(data: bytes) -> int | None:
    """Where a JPEG's picture ends: after the EOI marker that follows its last scan (the EOI of an EXIF thumbnail
    lies inside a segment and is skipped). None when the segments cannot be walked to an EOI."""
    if data[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 1 < len(data):
        marker = data[at + 1]
        if data[at] != 0xFF:
            return None
        if marker == 0xD9:  # EOI
            return at + 2
        if marker == 0xFF:  # a fill byte
            at += 1
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            at += 2
        else:
            at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
            if marker == 0xDA:  # a scan: its entropy-coded data runs to the next marker
                while (at := data.find(b"\xff", at)) >= 0 and at + 1 < len(data) and (
                        data[at + 1] == 0 or 0xD0 <= data[at + 1] <= 0xD7):
                    at += 2
                if at < 0:
                    return None
    return None


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
#: The seven passes of an interlaced PNG: first column and row, column and row steps.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_rows_complete(data: bytes) -> bool:
    """Whether a PNG's image data holds every row its header promises: Pillow leaves the missing rows black,
    silently, when the compressed data ends early."""
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    bits = depth * _PNG_CHANNELS.get(color, 0)
    expected = 0
    for column, row, column_step, row_step in _ADAM7 if interlace else ((0, 0, 1, 1),):
        columns, rows = -(-(width - column) // column_step), -(-(height - row) // row_step)
        if columns > 0 and rows > 0:
            expected += rows * (1 + -(-columns * bits // 8))  # each row: a filter byte and its pixels
    inflate, found, at = zlib.decompressobj(), 0, 8
    try:
        while at + 8 <= len(data) and found < expected:
            length, kind = struct.unpack(">I4s", data[at:at + 8])
            if kind == b"IDAT":
                compressed = data[at + 8:at + 8 + length]
                while compressed and found < expected:  # counted, a megabyte at a time
                    found += len(inflate.decompress(compressed, 2**20))
                    compressed = inflate.unconsumed_tail
            at += 12 + length
    except zlib.error:
        return False
    return found >= expected


def encode(image: Image.Image, extension: str) -> bytes:
    """PNG (lossless) or JPEG (quality 92) bytes of an RGB image."""
    buffer = io.BytesIO()
    if extension == "png":
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from brushwork import images
from brushwork.errors import ImageError


def write_png(path, array: np.ndarray, bit_depth: int = 16):
    """A PNG written byte by byte, for depths and modes Pillow cannot write (16-bit RGB, huge headers)."""
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    colour_type = {1: 0, 3: 2, 4: 6}[channels]
    dtype = ">u2" if bit_depth == 16 else "u1"
    raw = b"".join(b"\x00" + array[y].astype(dtype).tobytes() for y in range(height))
    return write_png_chunks(path, width, height, bit_depth, colour_type, zlib.compress(raw))


def write_png_chunks(path, width, height, bit_depth, colour_type, data):
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def pixel(image, x, y):
    return tuple(int(v) for v in image.getpixel((x, y)))


# ------------------------------------------------------------------------------------------ reading

def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display turns it 90 degrees clockwise
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)

    loaded = images.load_image(tmp_path / "rotated.jpg")
    assert loaded.size == (20, 40)
    assert loaded.mode == "RGB"
    red, _, blue = pixel(loaded, 10, 5)  # the left half is now on top
    assert red > 200 and blue < 60
    red, _, blue = pixel(loaded, 10, 35)
    assert blue > 200 and red < 60


def test_transparency_is_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 0, 0, 128))
    rgba.save(tmp_path / "a.png")
    loaded = images.load_image(tmp_path / "a.png")
    assert pixel(loaded, 0, 0) == (255, 0, 0)
    assert pixel(loaded, 2, 2) == (255, 255, 255)
    assert all(abs(v - 127) <= 1 for v in pixel(loaded, 1, 0))

    la = Image.new("LA", (2, 2), (0, 0))
    la.save(tmp_path / "la.png")
    assert pixel(images.load_image(tmp_path / "la.png"), 0, 0) == (255, 255, 255)


def test_palette_images(tmp_path):
    palette = Image.new("P", (3, 1))
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    palette.putpixel((2, 0), 1)
    palette.save(tmp_path / "p.png")
    loaded = images.load_image(tmp_path / "p.png")
    assert [pixel(loaded, x, 0) for x in range(3)] == [(10, 20, 30), (200, 100, 50), (200, 100, 50)]

    palette.save(tmp_path / "p_transparent.png", transparency=0)
    loaded = images.load_image(tmp_path / "p_transparent.png")
    assert pixel(loaded, 0, 0) == (255, 255, 255)
    assert pixel(loaded, 1, 0) == (200, 100, 50)


def test_cmyk_and_grayscale(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    red = pixel(images.load_image(tmp_path / "cmyk.jpg"), 4, 4)
    assert red[0] > 230 and red[1] < 30 and red[2] < 30

    Image.new("L", (5, 5), 77).save(tmp_path / "gray.png")
    assert pixel(images.load_image(tmp_path / "gray.png"), 2, 2) == (77, 77, 77)
    Image.new("1", (5, 5), 1).save(tmp_path / "bits.png")
    assert pixel(images.load_image(tmp_path / "bits.png"), 2, 2) == (255, 255, 255)


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    gray = np.array([[0, 32768, 65535]], dtype=np.uint16)
    loaded = images.load_image(write_png(tmp_path / "gray16.png", gray))
    assert [pixel(loaded, x, 0) for x in range(3)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]

    rgb = np.zeros((2, 2, 3), dtype=np.uint16)
    rgb[0, 0] = (65535, 32768, 0)
    loaded = images.load_image(write_png(tmp_path / "rgb16.png", rgb))
    assert loaded.mode == "RGB"
    assert pixel(loaded, 0, 0) == (255, 128, 0)


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.jpg", "no such file"),
    (lambda p: p, "is a folder"),
    (lambda p: (p / "notes.txt").write_text("hello") and p / "notes.txt", "not an image"),
])
def test_unreadable_files_give_one_line(tmp_path, make, message):
    with pytest.raises(ImageError) as error:
        images.load_image(make(tmp_path))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_truncated_file(tmp_path):
    buffer = io.BytesIO()
    Image.effect_noise((256, 256), 60).convert("RGB").save(buffer, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match="cut.jpg: cannot decode image"):
        images.load_image(tmp_path / "cut.jpg")


def test_decompression_bombs_are_refused(tmp_path):
    # A 40000x40000 header with almost no data behind it: refused before any pixel is decoded.
    bomb = write_png_chunks(tmp_path / "bomb.png", 40000, 40000, 1, 0, zlib.compress(b"\x00" * 64))
    with pytest.raises(ImageError, match="decompression bomb"):
        images.load_image(bomb)
    # Our own, lower limit applies too.
    Image.new("RGB", (100, 100)).save(tmp_path / "small.png")
    with pytest.raises(ImageError, match="100x100"):
        images.load_image(tmp_path / "small.png", max_pixels=5000)


def test_bytes_and_file_objects(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), (1, 2, 3)).save(buffer, "PNG")
    assert images.load_image(buffer.getvalue()).size == (3, 2)
    buffer.seek(0)
    assert pixel(images.load_image(buffer), 0, 0) == (1, 2, 3)


# ------------------------------------------------------------------------------------------ tensors

def test_tensor_round_trip_is_exact():
    array = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    tensor = images.to_tensor(Image.fromarray(array))
    assert tensor.shape == (1, 3, 7, 5) and tensor.dtype == torch.float32
    assert 0 <= tensor.min() and tensor.max() <= 1
    assert np.array_equal(np.asarray(images.to_image(tensor)), array)
    assert np.array_equal(np.asarray(images.to_image(tensor[0])), array)


def test_to_image_clamps_and_rounds():
    tensor = torch.tensor([-0.5, 0.5, 1.7, 0.0019, 0.002]).reshape(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert np.asarray(images.to_image(tensor))[0, :, 0].tolist() == [0, 128, 255, 0, 1]
    with pytest.raises(ImageError, match="batch"):
        images.to_image(torch.zeros(2, 3, 4, 4))


def test_as_image_accepts_every_kind(tmp_path):
    array = np.random.default_rng(1).integers(0, 256, (6, 4, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "x.png")
    from_tensor = images.as_image(torch.from_numpy(array).permute(2, 0, 1).float() / 255)
    for value in (tmp_path / "x.png", str(tmp_path / "x.png"), Image.fromarray(array), array,
                  array.astype(np.float32) / 255, from_tensor):
        assert np.array_equal(np.asarray(images.as_image(value)), array)
    assert images.as_image("sample:chelsea").size == (451, 300)
    with pytest.raises(ImageError, match="unknown sample"):
        images.as_image("sample:nothing")
    with pytest.raises(ImageError, match="cannot use int"):
        images.as_image(3)


# ------------------------------------------------------------------------------------------ resizing and saving

def test_resize_by_shorter_or_longer_side():
    image = Image.new("RGB", (400, 300))
    assert images.resize(image, 150).size == (200, 150)
    assert images.resize(image, 200, side="longer").size == (200, 150)
    assert images.resize(image, None) is image
    assert images.resize(image, 300) is image
    with pytest.raises(ImageError):
        images.resize(image, 100, side="diagonal")


@pytest.mark.parametrize("suffix, format_name", [(".png", "PNG"), (".jpg", "JPEG"), (".JPEG", "JPEG"),
                                                 (".webp", "WEBP")])
def test_save_format_from_extension(tmp_path, suffix, format_name):
    path = images.save_image(Image.new("RGB", (8, 8), (10, 200, 30)), tmp_path / "sub" / f"out{suffix}")
    with Image.open(path) as saved:
        assert saved.format == format_name and saved.size == (8, 8)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    assert path.stat().st_mode & 0o644 == 0o644  # readable by others, like any file the user writes


def test_save_quality_and_errors(tmp_path):
    noise = Image.effect_noise((128, 128), 50).convert("RGB")
    low = images.save_image(noise, tmp_path / "low.jpg", quality=10).stat().st_size
    high = images.save_image(noise, tmp_path / "high.jpg", quality=95).stat().st_size
    assert low < high / 2
    with pytest.raises(ImageError, match="cannot tell the format"):
        images.save_image(noise, tmp_path / "out.xyz")
    with pytest.raises(ImageError, match="quality"):
        images.save_image(noise, tmp_path / "out.jpg", quality=0)


def test_failed_save_keeps_the_existing_file(tmp_path):
    target = tmp_path / "keep.webp"
    images.save_image(Image.new("RGB", (4, 4), (1, 2, 3)), target)
    before = target.read_bytes()
    too_wide = Image.new("RGB", (16384, 1))  # over WebP's limit: the encoder fails half-way
    with pytest.raises(ImageError, match="keep.webp: cannot write"):
        images.save_image(too_wide, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.webp"]


def test_list_images(tmp_path):
    for name in ("b.png", "a.JPG", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    assert [p.name for p in images.list_images(tmp_path)] == ["a.JPG", "b.png"]

"""The web server against a red team: repeated form fields, cut-short and polyglot images, errors and stalled
clients on a keep-alive connection, and a few hundred malformed requests. Real requests to a real uvicorn."""

import io
import itertools
import socket
import struct
import time
import zipfile
import zlib

import httpx
import numpy as np
from PIL import Image

from test_server import assert_error, client, settings  # noqa: F401  (client, settings: fixtures)
from test_server_hardening import png_claiming, serving

HTML_TAIL = b"<html><script>alert(document.domain)</script></html>"


def picture(image_format: str, size=(24, 24), **options) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format, **options)
    return buffer.getvalue()


def zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.html", HTML_TAIL)
    return buffer.getvalue()


def png_with_rows(width: int, height: int, rows: int) -> bytes:
    """A sound RGB PNG (checksums and all) whose image data holds only ``rows`` of its ``height`` rows."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    data = b"".join(b"\x00" + bytes(range(3 * width)) for _ in range(rows))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b""))


def test_a_field_given_twice_is_refused_naming_it(client):
    one_style = {"content_ref": "sample:chelsea", "style_ref": "sample:ihc", "size": "32"}
    for name, values in (("alpha", ["0.5", "1"]), ("model", ["microast", "adain"]), ("size", ["32", "32"]),
                         ("content_ref", ["sample:chelsea", "sample:astronaut"])):
        assert_error(client.post("/api/stylize", data={**one_style, name: values}), 422, name, "2 times")
    upload = ("a.png", picture("PNG"), "image/png")
    assert_error(client.post("/api/stylize", data={"style_ref": "sample:ihc", "size": "32"},
                             files=[("content", upload), ("content", upload)]), 422, "content", "2 times")
    assert_error(client.post("/api/images", files=[("file", upload), ("file", upload)]), 422, "file")
    assert_error(client.post("/api/images", data={"artwork": ["true", "false"]}, files={"file": upload}), 422,
                 "artwork")
    assert client.get("/api/results").json()["total"] == 0
    # Lists still take several values.
    both = client.post("/api/stylize", data={**one_style, "style_ref": ["sample:ihc", "sample:hubble"]})
    assert both.status_code == 201, both.text


def test_png_image_data_cut_short_is_refused(client):
    assert client.post("/api/images", files={"file": ("whole.png", png_with_rows(16, 16, 16), "image/png")}
                       ).status_code == 201
    for rows in (1, 15):
        assert_error(client.post("/api/images", files={"file": ("short.png", png_with_rows(16, 16, rows),
                                                                "image/png")}), 422, "short.png", "last row")
    assert_error(client.post("/api/images", files={"file": ("none.png", png_with_rows(16, 16, 0), "image/png")}),
                 422, "none.png")
    odd = picture("PNG", size=(13, 7))  # rows that are not a whole number of 8-pixel blocks still pass
    assert client.post("/api/images", files={"file": ("odd.png", odd, "image/png")}).status_code == 201


def test_polyglot_uploads_are_served_back_as_pictures_only(client):
    png, jpeg = picture("PNG"), picture("JPEG", quality=90)
    for name, data, tail in (("page.png", png + HTML_TAIL, HTML_TAIL), ("archive.jpg", jpeg + zip_archive(), b"PK"),
                             ("page.jpg", jpeg + HTML_TAIL, HTML_TAIL)):
        added = client.post("/api/images", files={"file": (name, data, "image/jpeg")})
        assert added.status_code == 201, added.text
        served = client.get(added.json()["url"]).content
        assert b"<script" not in served and b"PK\x03\x04" not in served and not served.endswith(tail)
        assert Image.open(io.BytesIO(served)).size == (24, 24)
    # The pixels are kept exactly: a PNG re-encoded losslessly, a JPEG cut after its image (a clean one as is).
    png_back = client.get(client.post("/api/images", files={"file": ("p.png", png + HTML_TAIL, "image/png")}
                                      ).json()["url"]).content
    assert Image.open(io.BytesIO(png_back)).tobytes() == Image.open(io.BytesIO(png)).tobytes()
    jpeg_back = client.get(client.post("/api/images", files={"file": ("j.jpg", jpeg + zip_archive(), "image/jpeg")}
                                       ).json()["url"]).content
    assert jpeg_back == jpeg


def http_exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send one request and read its whole answer (a Content-Length one) off a kept-alive socket."""
    sock.sendall(request)
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(65536) or b"!EOF"
        assert not answer.endswith(b"!EOF"), answer
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return head


def raw(request: httpx.Request) -> bytes:
    head = f"{request.method} {request.url.raw_path.decode()} HTTP/1.1\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in request.headers.items())
    return head.encode() + b"\r\n" + request.read()


def test_an_unexpected_error_is_a_json_500_and_the_connection_stays_usable(settings):
    upload = ("a.png", picture("PNG"), "image/png")
    with serving(settings) as server, httpx.Client(base_url=server, timeout=10) as http:
        images = settings.data_dir / "images"
        images.rmdir()
        images.write_bytes(b"not a folder")  # the data folder broken behind the server's back: storing fails
        try:
            detail = assert_error(http.post("/api/images", files={"file": upload}), 500, "internal server error")
            assert "images" not in detail
            assert http.get("/api/health").status_code == 200  # the same keep-alive client goes on
            address = ("127.0.0.1", int(server.rsplit(":", 1)[1]))
            with socket.create_connection(address, timeout=10) as sock:
                for _ in range(2):  # the very same connection answers after a 500
                    head = http_exchange(sock, raw(http.build_request("POST", "/api/images", files={"file": upload})))
                    assert head.startswith(b"HTTP/1.1 500") and b"connection: close" not in head.lower()
                head = http_exchange(sock, raw(http.build_request("GET", "/api/health")))
                assert head.startswith(b"HTTP/1.1 200")
        finally:
            images.unlink()
            images.mkdir()
        assert http.post("/api/images", files={"file": upload}).status_code == 201


def test_a_stalled_body_gets_408_within_the_timeout(settings):
    settings.body_timeout = 1
    with serving(settings) as server:
        address = ("127.0.0.1", int(server.rsplit(":", 1)[1]))
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(b"POST /api/images HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n"
                         b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n")
            start = time.monotonic()
            answer = b""
            while chunk := sock.recv(65536):  # the server answers and then closes the connection
                answer += chunk
            assert time.monotonic() - start < 5
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"connection: close" in answer.lower() and b"did not arrive within 1 s" in answer
        # A body that arrives in time is unaffected.
        assert httpx.post(server + "/api/images", files={"file": ("a.png", picture("PNG"), "image/png")},
                          timeout=10).status_code == 201


def bad_images() -> list[tuple[str, bytes, str]]:
    images = []
    for image_format, extension in (("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"), ("GIF", "gif"),
                                    ("BMP", "bmp"), ("TIFF", "tif")):
        data = picture(image_format)
        for label, bad in (("empty", b""), ("header", data[:16]), ("half", data[:len(data) // 2]),
                           ("garbage", data[:8] + bytes(range(256)) * 4)):
            for content_type in (f"image/{extension}", "text/html", "application/octet-stream"):
                images.append((f"{label}.{extension}", bad, content_type))
    images += [("bomb.png", png_claiming(60000, 60000), "image/png"), ("wide.png", png_claiming(2**31 - 1, 1),
               "image/png"), ("garbage.png", png_claiming(100, 100), "image/png"),
               ("short.png", png_with_rows(20, 20, 3), "image/png"), ("notes.txt", b"hello", "text/plain"),
               ("page.html", HTML_TAIL, "image/png"), ("x" * 5000 + ".png", b"\x89PNG", "image/png"),
               ("\u202eevil\u0000.png", b"\xff\xd8\xff", "image/jpeg")]
    return images


def bad_forms() -> list[dict]:
    good = {"content_ref": "sample:chelsea", "style_ref": "sample:ihc", "size": "32"}
    # An empty field means "not given" (as a browser's form sends it), so it is not among the bad values.
    numbers = ["-1", "-0.5", "1e999", "-1e999", "nan", "NaN", "inf", "-inf", "abc", "0x10", "1,5",
               "99999999999999999999999", "\u0661", "\U0001d7d9", " ", "1e-999999", "--1"]
    forms = [{**good, "alpha": value} for value in numbers if value != "1e-999999"]  # that one is 0: fine
    forms += [{**good, "size": value} for value in numbers + ["0", "15", "100000", "2.5"]]
    forms += [{**good, "style_ref": ["sample:ihc", "sample:hubble"], "style_weights": value}
              for value in [f"{number},1" for number in ("-1", "1e999", "-inf", "nan", "abc", "0x10", " ", "--1")]
              + ["1", "1,2,3", "0,0", ",", "1;2"]]
    forms += [{**good, "model": value} for value in ("picasso-9000", "MICROAST", "../gatys", "\u00e9" * 300,
                                                     "x" * 100_000, "gatys\u0000", "adain ")]
    forms += [{**good, "preserve_color": value} for value in ("all", "\u2603", "NONE")]
    forms += [{**good, "format": value} for value in ("gif", "PNG", "png\n")]
    forms += [{**good, "title": value} for value in ("t" * 201, "\u00e9" * 300)]
    forms += [{**good, "content_ref": value} for value in ("sample:", "image:", "image:" + "g" * 64,
                                                           "image:" + "0" * 64, "file:///etc/passwd", "\u0000",
                                                           "sample:" + "x" * 10000)]
    forms += [{**good, "style_ref": value} for value in ("sample:nobody", "image:" + "1" * 63)]
    forms += [{**good, "style_ref": ["sample:ihc"] * 5}, {"style_ref": "sample:ihc"}, {"content_ref": "sample:chelsea"},
              {}, {**good, "model": "gatys", "size": "999"}]
    return forms


def test_hundreds_of_bad_requests_get_a_json_4xx_and_the_server_stays_up(settings):
    images, forms = bad_images(), bad_forms()
    style = {"style_ref": "sample:ihc", "size": "32"}
    requests = ([("/api/images", {}, {"file": image}) for image in images]
                + [("/api/stylize", style, {"content": image}) for image in images]
                + [("/api/stylize", {"content_ref": "sample:chelsea", "size": "32"}, {"style": image})
                   for image in images]
                + [("/api/stylize", form, None) for form in forms]
                + [("/api/stylize", {**form, "content_ref": None}, {"content": image})
                   for form, image in zip(forms, itertools.cycle(images))])
    assert len(requests) >= 300
    with serving(settings) as server, httpx.Client(base_url=server, timeout=httpx.Timeout(10)) as http:
        for start in range(0, len(requests), 50):
            for path, form, files in requests[start:start + 50]:
                form = {name: value for name, value in form.items() if value is not None}
                answer = http.post(path, data=form, files=files)
                assert 400 <= answer.status_code < 500, (path, form, files and str(files)[:200], answer.text)
                assert answer.headers["content-type"] == "application/json"
                detail = answer.json()["detail"]
                assert isinstance(detail, str) and detail and "Traceback" not in detail
            assert http.get("/api/health").status_code == 200
        assert http.get("/api/results").json()["total"] == 0

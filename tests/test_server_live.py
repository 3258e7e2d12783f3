"""The live studio's endpoints: previews (bounded caches, bad input as JSON 4xx, stale previews dropped), the
webcam's WebSocket (bad, oversized and too frequent frames refused with a reason) and gallery thumbnails. Real
requests, the real packaged model, a real uvicorn server where requests must truly overlap."""

import io
import json
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.websockets import WebSocketDisconnect

from brushwork.server.app import create_app
from test_server import assert_error, settings, stylize  # noqa: F401  (settings: a fixture)
from test_server_hardening import serving
from test_server_resilience import start_server

PREVIEW = {"client": "test-client-1", "content": "sample:chelsea", "styles": ["sample:ihc"], "alpha": 0.5,
           "size": 64}


def jpeg_frame(width=64, height=48, colour="orange") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def live_settings(settings):
    settings.preview_clients = 2
    settings.preview_cache_mb = 0.25
    settings.live_connections = 1
    settings.live_max_fps = 3
    settings.live_max_frame_bytes = 20_000
    settings.live_max_side = 200
    return settings


@pytest.fixture
def live_client(live_settings):
    with TestClient(create_app(live_settings), raise_server_exceptions=False) as client:
        yield client


def test_preview_is_a_jpeg_of_the_asked_size_and_keeps_bounded_encodings(live_client):
    services = live_client.app.state.services
    response = live_client.post("/api/preview", json=PREVIEW)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg" and response.headers["cache-control"] == "no-store"
    image = Image.open(io.BytesIO(response.content))
    assert min(image.size) == 64 and image.size == (96, 64)  # chelsea is 451x300
    assert float(response.headers["x-paint-seconds"]) > 0
    kept = services.previews.clients["test-client-1"].preview
    assert len(kept) == 2  # the content and the style
    # Another alpha, another colour mode: the same encodings, nothing new kept.
    for change in ({"alpha": 0.9}, {"preserve_color": "luminance"}):
        assert live_client.post("/api/preview", json={**PREVIEW, **change}).status_code == 200
    assert len(kept) == 2
    # Other contents and styles: the oldest go, within the byte budget (the newest always stays).
    for content, style in (("sample:astronaut", "sample:hubble"), ("sample:coffee", "sample:rocket"),
                           ("sample:rocket", "sample:coffee")):
        body = {**PREVIEW, "content": content, "styles": [style], "size": 128}
        assert live_client.post("/api/preview", json=body).status_code == 200
        assert kept.bytes <= 0.25 * 2**20 or len(kept) == 1
    # At most preview_clients clients are remembered.
    for number in range(4):
        assert live_client.post("/api/preview", json={**PREVIEW, "client": f"other-client-{number}"}).status_code == 200
    assert len(services.previews.clients) == 2


def test_preview_refuses_bad_input_with_json_4xx(live_client):
    for change, status, words in [
        ({"alpha": 2}, 422, ["alpha"]), ({"alpha": "nan"}, 422, ["alpha"]),
        ({"client": "short"}, 422, ["client"]), ({"client": "../../etc/passwd"}, 422, ["client"]),
        ({"model": "picasso-9000"}, 422, ["unknown model"]), ({"model": "gatys"}, 422, ["gatys"]),
        ({"size": 5000}, 422, ["size 5000"]), ({"size": 4}, 422, ["size"]),
        ({"styles": []}, 422, ["style"]), ({"styles": ["sample:ihc"] * 5}, 422, ["styles"]),
        ({"style_weights": [1, 2]}, 422, ["style_weights"]), ({"style_weights": [0]}, 422, ["style_weights"]),
        ({"style_weights": [-1]}, 422, ["style_weights"]), ({"content": "file:/etc/passwd"}, 422, ["reference"]),
        ({"content": "image:" + "0" * 64}, 404, ["no image"]), ({"participant": "x"}, 422, ["participant"]),
    ]:
        assert_error(live_client.post("/api/preview", json={**PREVIEW, **change}), status, *words)
    assert_error(live_client.post("/api/preview", content=b"{not json", headers={"content-type": "application/json"}),
                 422)
    assert_error(live_client.post("/api/preview", json=PREVIEW, headers={"origin": "http://evil.example"}), 403,
                 "another site")


def test_a_preview_superseded_while_it_waits_is_dropped(live_settings):
    """Two previews of one client while the worker is busy: the older is dropped unpainted (409), the newer
    painted."""
    app = create_app(live_settings)
    busy = threading.Event()
    with serving(live_settings, app) as base:
        try:
            app.state.services.queue._executor.submit(busy.wait, 30)  # the one worker is held
            answers = {}

            def ask(name: str, alpha: float) -> None:
                answers[name] = httpx.post(f"{base}/api/preview", json={**PREVIEW, "alpha": alpha}, timeout=60)

            older = threading.Thread(target=ask, args=("older", 0.2))
            older.start()
            while app.state.services.queue.pending < 1:
                time.sleep(0.01)
            newer = threading.Thread(target=ask, args=("newer", 0.8))
            newer.start()
            while app.state.services.queue.pending < 2:
                time.sleep(0.01)
            busy.set()
            older.join(60)
            newer.join(60)
            assert_error(answers["older"], 409, "superseded")
            assert answers["newer"].status_code == 200 and answers["newer"].headers["content-type"] == "image/jpeg"
        finally:
            busy.set()


def closed(socket) -> dict:
    """The close message that ends the connection (painted frames or errors before it are skipped)."""
    while True:
        message = socket.receive()
        if message["type"] == "websocket.close":
            return message


def test_webcam_paints_frames_and_rejects_bad_ones_with_a_reason(live_client):
    with live_client.websocket_connect("/api/live") as socket:
        socket.send_bytes(jpeg_frame())
        assert "settings" in json.loads(socket.receive_text())["error"]
        socket.send_text(json.dumps({"styles": ["sample:ihc"], "alpha": 2}))
        assert "alpha" in json.loads(socket.receive_text())["error"]
        socket.send_text(json.dumps({"styles": ["sample:ihc"], "model": "gatys"}))
        assert "gatys" in json.loads(socket.receive_text())["error"]
        socket.send_text("not json")
        assert "error" in json.loads(socket.receive_text())
        socket.send_text(json.dumps({"styles": ["sample:ihc"], "alpha": 0.7, "smooth": 0.5}))
        assert json.loads(socket.receive_text())["settings"] == "ok"
        socket.send_bytes(jpeg_frame())
        painted = Image.open(io.BytesIO(socket.receive_bytes()))
        assert painted.format == "JPEG" and painted.size == (64, 48)
        time.sleep(1.1)  # a new second for the frame-rate limit
        socket.send_bytes(b"GIF89a not really")
        assert "frame" in json.loads(socket.receive_text())["error"]
        socket.send_bytes(jpeg_frame(300, 100))  # longer side over live_max_side
        assert "200" in json.loads(socket.receive_text())["error"]
        socket.send_bytes(jpeg_frame(12, 8))
        socket.receive()  # painted, or refused as too small: either way the connection goes on
    with live_client.websocket_connect("/api/live") as socket:
        socket.send_bytes(b"\xff" * 30_000)
        message = closed(socket)
        assert message["code"] == 1009 and "20,000" in message["reason"]
    with live_client.websocket_connect("/api/live") as socket:
        socket.send_text(json.dumps({"styles": ["sample:ihc"]}))
        socket.receive_text()
        for _ in range(5):
            socket.send_bytes(jpeg_frame())
        message = closed(socket)
        assert message["code"] == 1008 and "3 frames a second" in message["reason"]


def test_webcam_connections_are_limited_and_checked_like_writes(live_client):
    with live_client.websocket_connect("/api/live") as first:
        with live_client.websocket_connect("/api/live") as second:
            message = closed(second)
        assert message["code"] == 1013 and "try again" in message["reason"]
        first.send_text(json.dumps({"styles": ["sample:ihc"]}))
        assert json.loads(first.receive_text())["settings"] == "ok"
    for headers in ({"origin": "http://evil.example"}, {"origin": "null"}, {"host": "attacker.example"}):
        with pytest.raises(WebSocketDisconnect) as refused:
            with live_client.websocket_connect("/api/live", headers=headers) as socket:
                socket.receive()
        assert refused.value.code == 1008
    assert live_client.app.state.services.live_connections == 0


def test_gallery_thumbnails_are_made_once_and_go_with_their_image(live_client):
    result = stylize(live_client, size="300")
    services = live_client.app.state.services
    sha256 = result["url"].rsplit("/", 1)[1]
    assert result["thumbnail_url"] == f"/api/images/{sha256}/thumbnail"
    response = live_client.get(result["thumbnail_url"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    thumbnail = Image.open(io.BytesIO(response.content))
    assert max(thumbnail.size) <= 480 and min(thumbnail.size) < 300 + 1
    stored = services.store.thumbnail_path(sha256)
    made = stored.stat().st_mtime_ns
    assert live_client.get(result["thumbnail_url"]).content == response.content
    assert stored.stat().st_mtime_ns == made  # kept, not made again
    assert_error(live_client.get(f"/api/images/{'0' * 64}/thumbnail"), 404, "no image")
    assert live_client.delete(f"/api/results/{result['id']}").status_code == 204
    assert not stored.exists()


def test_serve_sets_the_live_limits(tmp_path):
    """`brushwork serve --preview-max-size ... --live-connections ...` reach the running server."""
    process, url = start_server(tmp_path / "data", "--preview-max-size", "48", "--live-connections", "0")
    try:
        answer = httpx.post(f"{url}/api/preview", json=PREVIEW, timeout=30)  # size 64
        assert_error(answer, 422, "48 px")
        assert httpx.post(f"{url}/api/preview", json={**PREVIEW, "size": 48}, timeout=60).status_code == 200
    finally:
        process.kill()
        process.wait(10)

"""The web server against hostile or unusual input: numbers out of range, concurrent answers, multi-picture
JPEGs, browser security headers, missing weights. Real requests, real images, a real SQLite database."""

import contextlib
import csv
import io
import threading
import time

import httpx
import pytest
import skimage.data
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

from brushwork.images import list_images, load_image
from brushwork.server.app import create_app
from brushwork.server.settings import Settings
from test_server import assert_error, client, settings, stylize  # noqa: F401  (client, settings: fixtures)
from test_web_e2e import browser, free_port  # noqa: F401  (browser: a fixture)


@contextlib.contextmanager
def serving(settings: Settings):
    """The app on a real uvicorn server on 127.0.0.1: requests run truly at the same time, as in production."""
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=free_port(),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_non_finite_and_overflowing_numbers_are_refused(client):
    two_styles = {"content_ref": "sample:chelsea", "style_ref": ["sample:ihc", "sample:hubble"], "size": "32"}
    for weights in ("inf,1", "1,-inf", "nan,1", "1e308,1e308", "1e999,1", "infinity,0"):
        assert_error(client.post("/api/stylize", data={**two_styles, "style_weights": weights}), 422,
                     "style_weights")
    one_style = {"content_ref": "sample:chelsea", "style_ref": "sample:ihc", "size": "32"}
    for alpha in ("nan", "inf", "-inf", "1e999"):
        assert_error(client.post("/api/stylize", data={**one_style, "alpha": alpha}), 422, "alpha")
    for size in ("1e308", "inf", "nan", "99999999999999999999999", "-99999999999999999999999"):
        assert_error(client.post("/api/stylize", data={**one_style, "size": size}), 422, "size")
    # JSON bodies: Python's JSON reader takes NaN and Infinity, and 1e999 reads as infinity.
    json = {"content-type": "application/json"}
    for body in ('{"study": "deception", "count": NaN}', '{"study": "deception", "count": 1e999}',
                 '{"study": "deception", "count": 99999999999999999999999}'):
        assert_error(client.post("/api/study/trials", content=body, headers=json), 422, "count")
    assert client.get("/api/results").json()["total"] == 0
    # Small finite weights still work.
    assert stylize(client, **two_styles, style_weights="1e-300,3e-300")["style_weights"] == [1e-300, 3e-300]


def test_huge_ids_are_404_and_huge_offsets_422(client):
    made = stylize(client)
    for result_id in ("99999999999999999999", "-99999999999999999999", str(2**63), str(2**63 - 1)):
        assert_error(client.get(f"/api/results/{result_id}"), 404, "no result")
        assert_error(client.patch(f"/api/results/{result_id}", json={"title": "x"}), 404, "no result")
        assert_error(client.delete(f"/api/results/{result_id}"), 404, "no result")
    for query in ({"offset": "99999999999999999999"}, {"offset": str(2**63)}, {"offset": "-1"},
                  {"limit": "99999999999999999999"}, {"limit": "0"}, {"offset": "1e999"}):
        assert_error(client.get("/api/results", params=query), 422, next(iter(query)))
    page = client.get("/api/results", params={"offset": 2**31 - 1})
    assert page.status_code == 200 and page.json()["items"] == [] and page.json()["total"] == 1
    assert client.get(f"/api/results/{made['id']}").json() == made


@pytest.fixture
def painting_upload():
    buffer = io.BytesIO()
    Image.fromarray(skimage.data.coffee()).resize((48, 48)).save(buffer, format="JPEG", quality=90)
    return "painting.jpg", buffer.getvalue(), "image/jpeg"


def test_of_concurrent_answers_to_a_trial_exactly_one_is_recorded(settings, painting_upload):
    with serving(settings) as server, httpx.Client(base_url=server, timeout=60) as http:
        made = http.post("/api/stylize", data={"content_ref": "sample:chelsea", "size": "32"},
                         files={"style": painting_upload})
        assert made.status_code == 201, made.text
        for _ in range(3):  # a race lost once may be won by chance: run it a few times
            trial = http.post("/api/study/trials", json={"study": "deception"}).json()
            positions = [item["position"] for item in trial["items"]]
            start = threading.Barrier(8)
            answers = [None] * 8

            def answer(index: int) -> None:
                with httpx.Client(base_url=server, timeout=60) as own:
                    start.wait()
                    answers[index] = own.post(f"/api/study/trials/{trial['id']}/answer",
                                              json={"picked": positions[:index % 2], "participant": f"p{index}"})

            threads = [threading.Thread(target=answer, args=(index,)) for index in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            codes = sorted(response.status_code for response in answers)
            assert codes == [200] + [409] * 7, [response.text for response in answers]
            for response in answers:
                if response.status_code == 409:
                    assert_error(response, 409, "answered already")
            winner = next(response for response in answers if response.status_code == 200)
            assert winner.json()["answered"]
            # The recorded answer is the winner's, whole: its participant and its picks.
            rows = [row for row in csv.DictReader(io.StringIO(http.get("/api/study/answers.csv").text))
                    if row["trial"] == trial["id"]]
            index = answers.index(winner)
            assert {row["participant"] for row in rows} == {f"p{index}"}
            assert {int(row["position"]): row["picked"] == "1" for row in rows} == {
                position: position in positions[:index % 2] for position in positions}
        assert http.get("/api/study/results").json()["deception"]["trials"] == 3


def multi_picture_jpeg() -> tuple[bytes, Image.Image, Image.Image]:
    """An MPO file as phones write them (a photo, then a second picture), and its two pictures."""
    first = Image.fromarray(skimage.data.astronaut()).resize((64, 48))
    second = Image.fromarray(skimage.data.coffee()).resize((64, 48))
    buffer = io.BytesIO()
    first.save(buffer, format="MPO", save_all=True, append_images=[second], quality=95)
    return buffer.getvalue(), first, second


def shows_first(image: Image.Image, first: Image.Image, second: Image.Image) -> bool:
    """``image`` is ``first`` up to JPEG's losses, and not ``second``."""
    def difference(a: Image.Image, b: Image.Image) -> float:
        return sum(abs(x - y) for x, y in zip(a.convert("RGB").tobytes(), b.tobytes())) / len(b.tobytes())

    return image.size == first.size and difference(image, first) < 8 and difference(image, second) > 30


def test_a_multi_picture_jpeg_is_read_as_its_first_picture(client, tmp_path):
    data, first, second = multi_picture_jpeg()
    assert Image.open(io.BytesIO(data)).format == "MPO"

    path = tmp_path / "3d-camera.mpo"
    path.write_bytes(data)
    assert list_images(tmp_path) == [path]
    assert shows_first(load_image(path), first, second)

    added = client.post("/api/images", files={"file": ("phone.jpg", data, "image/jpeg")})
    assert added.status_code == 201, added.text
    image = added.json()
    assert (image["width"], image["height"]) == (64, 48)
    stored = client.get(image["url"])
    assert stored.headers["content-type"] == "image/jpeg"
    assert shows_first(Image.open(io.BytesIO(stored.content)), first, second)
    result = stylize(client, files={"content": ("phone.jpg", data, "image/jpeg")}, style_ref="sample:ihc", size="32")
    assert min(result["width"], result["height"]) == 32 and result["content"]["ref"] == image["ref"]


def test_security_headers(client):
    made = stylize(client)
    for url in (made["url"], "/api/samples/chelsea", "/api/results", "/static/app.js", "/api/results/12345"):
        assert client.get(url).headers["x-content-type-options"] == "nosniff", url
    for page in ("/", "/docs"):
        response = client.get(page)
        policy = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy
        assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
    assert "content-security-policy" not in client.get("/api/results").headers


def test_the_pages_work_under_their_policy_and_refuse_to_be_framed(settings, browser):
    from playwright.sync_api import expect

    with serving(settings) as server:
        page = browser.new_page()
        refused = []
        page.on("console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text
                else None)
        page.goto(server + "/")
        expect(page.locator("#model option")).not_to_have_count(0)  # its script ran and fetched the models
        expect(page.locator("header h1")).to_have_css("color", "rgb(156, 61, 28)")  # its stylesheet applies
        page.goto(server + "/docs")
        expect(page.locator("#swagger-ui .swagger-ui")).to_be_visible()  # its inline script ran
        # ... and its Swagger UI reads FastAPI's OpenAPI 3.1: the operations are listed, not "Unable to render".
        expect(page.locator(".opblock-summary-path", has_text="/api/stylize").first).to_be_visible()
        assert not refused, refused

        with page.expect_console_message(lambda message: "frame-ancestors" in message.text):
            page.set_content(f'<iframe src="{server}/"></iframe>')


def test_missing_weights_are_a_503_naming_the_model_and_never_fetched(tmp_path, monkeypatch):
    # Were anything fetched, it would fail at once rather than download: no proxy listens on port 9.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("BRUSHWORK_CACHE", str(cache))
    settings = Settings(data_dir=tmp_path / "data", device="cpu")  # no weights folder: packaged weights only
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        models = {model["name"]: model for model in client.get("/api/models").json()}
        assert not models["adain"]["available"] and models["microast"]["available"]
        for model in ("adain", "gatys"):
            response = client.post("/api/stylize", data={"content_ref": "sample:chelsea", "style_ref": "sample:ihc",
                                                         "model": model, "size": "32"})
            detail = assert_error(response, 503, model, "not installed", "brushwork weights fetch")
            assert "/" not in detail and str(tmp_path) not in detail
        assert stylize(client, model="microast")["model"] == "microast"  # packaged weights need nothing
    assert not (cache / "weights").exists()  # nothing was fetched, nor even tried

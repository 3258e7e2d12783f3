"""The web server against hostile or unusual input: numbers out of range, concurrent answers, multi-picture
JPEGs, browser security headers, missing weights, writes from other sites and unknown host names. Real requests,
real images, a real SQLite database."""

import contextlib
import csv
import io
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import zlib

import httpx
import pytest
import skimage.data
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

from brushwork.errors import BrushworkError
from brushwork.images import list_images, load_image
from brushwork.server.app import HostAndOriginCheck, create_app, parse_allowed_hosts
from brushwork.server.inference import InferenceQueue
from brushwork.server.settings import Settings, default_allowed_hosts
from test_server import assert_error, client, join_study, settings, stylize  # noqa: F401  (client, settings: fixtures)
from test_web_e2e import browser, free_port  # noqa: F401  (browser: a fixture)


@contextlib.contextmanager
def serving(settings: Settings, app=None):
    """The app (made from ``settings`` unless given) on a real uvicorn server on 127.0.0.1: requests run truly at
    the same time, as in production."""
    server = uvicorn.Server(uvicorn.Config(app or create_app(settings), host="127.0.0.1", port=free_port(),
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
    json = {"content-type": "application/json", **join_study(client)}
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
    settings.study_requests_per_participant = 100  # its 8 answers at once to each trial are the point
    with serving(settings) as server, httpx.Client(base_url=server, timeout=60) as http:
        made = http.post("/api/stylize", data={"content_ref": "sample:chelsea", "size": "32"},
                         files={"style": painting_upload})
        assert made.status_code == 201, made.text
        joined = http.post("/api/study/participants").json()
        me = {"Authorization": f"Bearer {joined['token']}"}
        for _ in range(3):  # a race lost once may be won by chance: run it a few times
            trial = http.post("/api/study/trials", json={"study": "deception"}, headers=me).json()
            positions = [item["position"] for item in trial["items"]]
            start = threading.Barrier(8)
            answers = [None] * 8

            def answer(index: int) -> None:
                with httpx.Client(base_url=server, timeout=60) as own:
                    start.wait()
                    answers[index] = own.post(f"/api/study/trials/{trial['id']}/answer",
                                              json={"picked": positions[:index % 2]}, headers=me)

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
            # The recorded answer is the winner's, whole: its picks, and the participant of the trial.
            rows = [row for row in csv.DictReader(io.StringIO(http.get("/api/study/answers.csv").text))
                    if row["trial"] == trial["id"]]
            index = answers.index(winner)
            assert {row["participant"] for row in rows} == {joined["id"]}
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
    # No weights folder: packaged weights only.
    settings = Settings(data_dir=tmp_path / "data", device="cpu", allowed_hosts=["testserver"])
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


def test_writes_from_another_sites_page_are_refused(client, settings):
    made = stylize(client)
    form = {"content_ref": "sample:chelsea", "style_ref": "sample:ihc", "size": "32"}
    for headers in ({"Origin": "http://attacker.example"}, {"Origin": "null"},
                    {"Origin": "http://testserver:8080"},  # another port of the same name is another origin
                    {"Origin": "https://testserver.attacker.example"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                    {"Origin": "http://testserver", "Sec-Fetch-Site": "cross-site"}):
        assert_error(client.post("/api/stylize", data=form, headers=headers), 403, "another site")
        assert_error(client.post("/api/study/participants", headers=headers), 403, "another site")
        assert_error(client.patch(f"/api/results/{made['id']}", json={"title": "x"}, headers=headers), 403)
        assert_error(client.delete(f"/api/results/{made['id']}", headers=headers), 403)
    assert client.get("/api/results").json()["items"] == [made]  # nothing changed
    # Reads are not changes; the server's own page, and clients that are not browsers, may write.
    assert client.get("/api/results", headers={"Origin": "http://attacker.example"}).status_code == 200
    for headers in ({"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}, {"Origin": "http://TestServer"},
                    {}):
        assert client.post("/api/study/participants", headers=headers).status_code == 201


def test_unknown_host_names_are_refused_and_never_redirected_to(client):
    for host in ("attacker.example", "attacker.example:8000", "testserver.attacker.example", "", "[::1", "a@b"):
        response = client.get("/api/results", headers={"Host": host})
        assert_error(response, 400, "does not answer to the host name", "--allowed-host")
        assert response.headers["x-content-type-options"] == "nosniff"
        assert_error(client.post("/api/study/participants", headers={"Host": host}), 400)
    # A path the app would redirect (a trailing slash) is refused too, not redirected to the unknown name.
    refused = client.get("/api/results/", headers={"Host": "attacker.example"}, follow_redirects=False)
    assert_error(refused, 400)
    assert "location" not in refused.headers
    redirected = client.get("/api/results/", follow_redirects=False)
    assert redirected.status_code == 307 and redirected.headers["location"].startswith("http://testserver/")
    for host in ("testserver", "TESTSERVER", "testserver.", "127.0.0.1:8123"):  # "127.0.0.1": any port
        assert client.get("/api/health", headers={"Host": host}).status_code == 200, host


def test_allowed_hosts_with_and_without_a_port():
    check = HostAndOriginCheck(None, parse_allowed_hosts(["example.org:8000", "[::1]:8000", "lab.example"]))
    assert check.allowed_host("example.org:8000", 80) and check.allowed_host("[::1]:8000", 80)
    assert not check.allowed_host("example.org:9000", 80) and not check.allowed_host("example.org", 80)
    assert check.allowed_host("lab.example", 80) and check.allowed_host("lab.example:9000", 443)
    assert not check.allowed_host("[::2]:8000", 80) and not check.allowed_host("evil.lab.example", 80)
    assert default_allowed_hosts("0.0.0.0", 8080) == ["0.0.0.0:8080", "localhost:8080", "127.0.0.1:8080"]
    assert default_allowed_hosts("::1", 8000) == ["[::1]:8000", "localhost:8000", "127.0.0.1:8000"]
    assert default_allowed_hosts("127.0.0.1", 8000) == ["127.0.0.1:8000", "localhost:8000"]
    with pytest.raises(BrushworkError, match="allowed host 'http://example.org'"):
        parse_allowed_hosts(["http://example.org"])


@contextlib.contextmanager
def brushwork_serve(tmp_path, *options):
    """'brushwork serve' as a user starts it, in its own process, on a free loopback port."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "brushwork", "serve", "--port", str(port),
                                "--data", str(tmp_path / f"data-{port}"), *options],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
            with contextlib.suppress(httpx.TransportError):
                httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
                break
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_answers_to_its_own_address_unless_given_allowed_hosts(tmp_path):
    def status(port, host):
        return httpx.get(f"http://127.0.0.1:{port}/api/health", headers={"Host": host}).status_code

    with brushwork_serve(tmp_path) as port:
        assert status(port, f"127.0.0.1:{port}") == 200 and status(port, f"localhost:{port}") == 200
        assert status(port, "rebound.example") == 400 and status(port, f"localhost:{port + 1}") == 400
    with brushwork_serve(tmp_path, "--allowed-host", "study.example.org") as port:
        assert status(port, "study.example.org") == 200 and status(port, f"localhost:{port}") == 400
    run = subprocess.run([sys.executable, "-m", "brushwork", "serve", "--data", str(tmp_path / "c"),
                          "--allowed-host", "http://example.org/"], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "allowed host" in run.stderr and "Traceback" not in run.stderr


def test_a_real_browser_on_another_site_cannot_post_and_a_rebound_name_gets_nothing(settings, browser):
    form = """<form method="post" action="{server}/api/stylize" enctype="multipart/form-data">
      <input name="content_ref" value="sample:chelsea"><input name="style_ref" value="sample:ihc">
      <input name="size" value="32"><button>go</button></form>"""
    with serving(settings) as server:
        page = browser.new_page()
        page.route("http://attacker.test/", lambda route: route.fulfill(
            body=form.format(server=server), content_type="text/html"))
        page.goto("http://attacker.test/")
        with page.expect_navigation():
            page.click("button")
        assert "another site" in page.content()
        assert httpx.get(server + "/api/results").json()["total"] == 0
        # DNS rebinding: the attacker's name, now pointing at this machine, reaches nothing.
        port = server.rsplit(":", 1)[1]
        rebound = httpx.get(server + "/api/results", headers={"Host": f"attacker.test:{port}"})
        assert_error(rebound, 400, "does not answer to the host name")


def consistency_problems(settings) -> list[str]:
    """Rows that point to a missing file, and files in the data folder that no row knows (read-only)."""
    database = sqlite3.connect(f"file:{settings.data_dir / 'brushwork.sqlite3'}?mode=ro", uri=True)
    with contextlib.closing(database):
        images = dict(database.execute("SELECT sha256, extension FROM images"))
        referenced = {sha256 for (sha256,) in database.execute(
            "SELECT image_sha256 FROM results UNION SELECT image_sha256 FROM result_inputs "
            "UNION SELECT image_sha256 FROM trial_items") if sha256}
    root = settings.data_dir / "images"
    files = {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}
    rows = {f"{sha256[:2]}/{sha256}.{extension}" for sha256, extension in images.items()}
    return ([f"no row for the referenced image {sha256}" for sha256 in referenced - images.keys()]
            + [f"no file for the row {row}" for row in rows - files]
            + [f"no row for the file {file}" for file in files - rows])


def test_deletes_racing_stylisations_leave_no_row_without_its_file_and_no_file_without_its_row(settings):
    """A stylisation painting from an uploaded image, or from a result, while the last result using it is
    deleted: each request ends in a clear answer, and rows and files still match."""
    photo = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).resize((40, 32)).save(photo, format="JPEG", quality=90)
    style = {"style_ref": "sample:ihc", "size": "16"}
    answers = []
    with serving(settings) as server, httpx.Client(base_url=server, timeout=60) as http:
        for _ in range(20):
            content = http.post("/api/images", files={"file": ("photo.jpg", photo.getvalue(), "image/jpeg")})
            assert content.status_code == 201, content.text
            made = http.post("/api/stylize", data={"content_ref": content.json()["ref"], **style})
            assert made.status_code == 201, made.text
            start = threading.Barrier(3)

            def send(method: str, url: str, **request) -> None:
                with httpx.Client(base_url=server, timeout=60) as own:
                    start.wait()
                    answers.append((method, own.request(method, url, **request)))

            threads = [threading.Thread(target=send, args=("POST", "/api/stylize"), kwargs={"data": {
                           "content_ref": ref, **style}}) for ref in (content.json()["ref"], made.json()["ref"])]
            threads.append(threading.Thread(target=send, args=("DELETE", f"/api/results/{made.json()['id']}")))
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
        assert len(answers) == 60
        for method, response in answers:
            # A reference gone before the painting started is a 404; once it started, the result is kept whole.
            assert response.status_code in ({204} if method == "DELETE" else {201, 404}), response.text
        assert not consistency_problems(settings)
        for result in http.get("/api/results", params={"limit": 100}).json()["items"]:
            for url in (result["url"], result["content"]["url"]):
                assert http.get(url).status_code == 200, url
            assert http.delete(f"/api/results/{result['id']}").status_code == 204
        assert not consistency_problems(settings)
        # With every result gone, no file is left (no style was uploaded: none stays as an artwork).
        assert not any((settings.data_dir / "images").rglob("*.*"))


def png_claiming(width: int, height: int) -> bytes:
    """A 1-bit grey PNG whose header says ``width`` x ``height`` and whose pixel data is garbage: any decoding
    of it fails, while its header (checksums included) is sound."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", b"no deflate stream at all") + chunk(b"IEND", b""))


def test_a_full_queue_refuses_uploads_before_decoding_them_and_too_many_pixels_show_in_the_header(settings,
                                                                                                 monkeypatch):
    settings.queue_size = 0  # one running, none waiting
    garbage = ("garbage.png", png_claiming(1000, 1000), "image/png")  # 1 MP: under the limit of 2
    bomb = ("bomb.png", png_claiming(8000, 8000), "image/png")  # 64 MP
    form = {"style_ref": "sample:ihc", "size": "16"}
    release = threading.Event()
    original = InferenceQueue._stylize

    def held(self, job):  # the one worker stays busy until released
        release.wait(30)
        return original(self, job)

    monkeypatch.setattr(InferenceQueue, "_stylize", held)
    with serving(settings) as server, httpx.Client(base_url=server, timeout=60) as http:
        # Decoded, the garbage is refused for its data; the bomb is refused from its header, before decoding.
        assert_error(http.post("/api/stylize", data=form, files={"content": garbage}), 422, "garbage.png")
        assert_error(http.post("/api/images", files={"file": garbage}), 422, "garbage.png")
        for post in (lambda: http.post("/api/stylize", data=form, files={"content": bomb}),
                     lambda: http.post("/api/images", files={"file": bomb})):
            assert_error(post(), 413, "bomb.png", "8000x8000", "megapixels")

        running = []
        busy = threading.Thread(target=lambda: running.append(httpx.post(
            server + "/api/stylize", data={"content_ref": "sample:chelsea", **form}, timeout=60)))
        busy.start()
        try:
            deadline = time.monotonic() + 20
            while http.get("/api/health").json()["pending"] < 1:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            for upload in (garbage, bomb):  # a 422 or 413 would mean it was read before the queue was checked
                refused = http.post("/api/stylize", data=form, files={"content": upload, "style": garbage})
                assert_error(refused, 503, "busy")
                assert refused.headers["retry-after"]
        finally:
            release.set()
            busy.join(60)
        assert running[0].status_code == 201, running[0].text
        assert http.get("/api/health").json()["pending"] == 0
    assert Settings().max_pixels == 25_000_000  # the web's default: lower than the command line tools' limit

"""The web server's REST API through FastAPI's test client: real models, real images, a real SQLite database."""

import asyncio
import csv
import hashlib
import io
import threading

import httpx
import numpy as np
import pytest
import skimage.data
from fastapi.testclient import TestClient
from PIL import Image
from scipy.stats import binomtest

from brushwork.server import study
from brushwork.server.app import create_app
from brushwork.server.inference import InferenceQueue
from brushwork.server.settings import Settings


def jpeg(array: np.ndarray, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).convert("RGB").resize(size).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo() -> bytes:
    return jpeg(skimage.data.astronaut(), (160, 120))


@pytest.fixture(scope="module")
def painting() -> bytes:
    return jpeg(skimage.data.coffee(), (120, 120))


@pytest.fixture
def settings(tmp_path, weights_dir) -> Settings:
    # The test client's host name, and the address of the tests' real servers.
    return Settings(data_dir=tmp_path / "data", weights_dirs=[weights_dir], device="cpu", max_upload_mb=1,
                    max_pixels=2_000_000, allowed_hosts=["testserver", "127.0.0.1"])


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def stylize(client, files=None, **form):
    form = {"content_ref": "sample:chelsea", "style_ref": "sample:ihc", "size": "48", **form} if not files else form
    response = client.post("/api/stylize", data=form, files=files)
    assert response.status_code == 201, response.text
    return response.json()


def join_study(client) -> dict[str, str]:
    """The headers of a new participant's study requests."""
    response = client.post("/api/study/participants")
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def image_of(client, url) -> Image.Image:
    response = client.get(url)
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.content))


def stored_files(settings) -> set[str]:
    return {path.stem for path in (settings.data_dir / "images").rglob("*.*") if not path.name.startswith(".")}


def assert_error(response, status, *words):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "Traceback" not in detail
    for word in words:
        assert word in detail
    return detail


def test_stylize_uploads_gives_the_asked_size_and_a_painted_image(client, photo, painting):
    result = stylize(client, files={"content": ("photo.jpg", photo, "image/jpeg"),
                                    "style": ("painting.jpg", painting, "image/jpeg")},
                     size="96", alpha="0.8", title="astronaut in coffee")
    assert (result["width"], result["height"]) == (128, 96)  # shorter side 96, aspect kept
    assert result["model"] == "microast-cv-coco-wikiart" and result["method"] == "microast"  # the default model
    assert result["alpha"] == 0.8
    assert result["title"] == "astronaut in coffee" and 0 < result["seconds"] < 30
    output = image_of(client, result["url"])
    assert output.format == "PNG" and output.size == (128, 96)
    content = Image.open(io.BytesIO(photo)).convert("RGB").resize(output.size)
    difference = np.abs(np.asarray(output, dtype=float) - np.asarray(content, dtype=float)).mean()
    assert difference > 10  # painted, not a copy of the content
    # Uploads are stored byte for byte under the sha256 of their bytes.
    assert result["content"]["ref"] == "image:" + hashlib.sha256(photo).hexdigest()
    assert client.get(result["content"]["url"]).content == photo
    assert result["styles"][0]["ref"] == "image:" + hashlib.sha256(painting).hexdigest()
    assert hashlib.sha256(client.get(result["url"]).content).hexdigest() == result["url"].rsplit("/", 1)[1]


def test_stylize_sample_references_with_every_option(client):
    result = stylize(client, content_ref="sample:chelsea", style_ref=["sample:ihc", "sample:hubble"],
                     style_weights="0.3,0.7", preserve_color="luminance", alpha="0.5", size="40", format="jpg",
                     model="microast-cv-coco-wikiart")
    assert result["style_weights"] == [0.3, 0.7] and result["preserve_color"] == "luminance"
    assert [s["ref"] for s in result["styles"]] == ["sample:ihc", "sample:hubble"]
    assert result["download_name"].endswith(".jpg") and min(result["width"], result["height"]) == 40
    assert image_of(client, result["url"]).format == "JPEG"
    assert client.get(result["styles"][1]["url"]).headers["content-type"] == "image/jpeg"
    # A result is an input of the next stylisation.
    again = stylize(client, content_ref=result["ref"], style_ref="sample:ihc", size="32")
    assert again["content"]["ref"] == result["ref"]


def test_a_per_style_network_takes_no_style(client):
    result = client.post("/api/stylize", data={"content_ref": "sample:chelsea", "model": "johnson-la-muse",
                                                "size": "48"})
    assert result.status_code == 201, result.text
    result = result.json()
    assert result["method"] == "johnson" and result["styles"] == [] and min(result["width"], result["height"]) == 48
    assert_error(client.post("/api/stylize", data={"content_ref": "sample:chelsea", "style_ref": "sample:ihc",
                                                   "model": "johnson-la-muse", "size": "48"}),
                 422, "give no style image")


def test_gallery_pages_titles_and_deletes(client, settings, photo, painting):
    made = [stylize(client, alpha=str(alpha)) for alpha in (0.2, 0.4, 0.6)]
    first = client.get("/api/results", params={"limit": 2}).json()
    assert first["total"] == 3 and [r["id"] for r in first["items"]] == [made[2]["id"], made[1]["id"]]
    rest = client.get("/api/results", params={"limit": 2, "offset": 2}).json()
    assert [r["id"] for r in rest["items"]] == [made[0]["id"]]
    assert client.get(f"/api/results/{made[0]['id']}").json()["alpha"] == 0.2
    assert client.patch(f"/api/results/{made[0]['id']}", json={"title": "soft"}).json()["title"] == "soft"

    uploaded = stylize(client, files={"content": ("photo.jpg", photo, "image/jpeg"),
                                      "style": ("painting.jpg", painting, "image/jpeg")}, size="32")
    output, content, style = (uploaded["url"].rsplit("/", 1)[1], uploaded["content"]["ref"][6:],
                              uploaded["styles"][0]["ref"][6:])
    assert {output, content, style} <= stored_files(settings)
    assert client.delete(f"/api/results/{uploaded['id']}").status_code == 204
    assert_error(client.get(f"/api/results/{uploaded['id']}"), 404)
    assert_error(client.delete(f"/api/results/{uploaded['id']}"), 404)
    files = stored_files(settings)
    assert output not in files and content not in files  # nothing else refers to them
    assert style in files  # an uploaded style stays in the study's pool of real artworks
    assert_error(client.get(uploaded["url"]), 404)
    assert client.get("/api/results").json()["total"] == 3


def test_a_restarted_server_still_has_everything(settings, photo, painting):
    with TestClient(create_app(settings)) as client:
        result = stylize(client, files={"content": ("photo.jpg", photo, "image/jpeg"),
                                        "style": ("painting.jpg", painting, "image/jpeg")}, size="32")
        me = join_study(client)
        answered = client.post("/api/study/trials", json={"study": "deception"}, headers=me).json()
        client.post(f"/api/study/trials/{answered['id']}/answer", json={"picked": []}, headers=me)
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/results").json()["items"] == [result]
        assert image_of(client, result["url"]).size == (result["width"], result["height"])
        assert client.get("/api/study/results").json()["deception"]["trials"] == 1
        assert client.get(f"/api/study/trials/{answered['id']}", headers=me).json()["answered"]  # the token too


def test_bad_uploads_get_a_clear_4xx(client, settings, photo):
    style = {"style_ref": "sample:ihc"}

    def post(files=None, **form):
        return client.post("/api/stylize", data={**style, **form}, files=files)

    detail = assert_error(post({"content": ("notes.txt", b"just some text", "text/plain")}), 415, "not an image")
    assert detail.startswith("notes.txt")
    huge = io.BytesIO()
    Image.new("RGB", (1500, 1500), (90, 20, 40)).save(huge, format="PNG")  # 2.25 MP, a few kB
    assert_error(post({"content": ("huge.png", huge.getvalue(), "image/png")}), 413, "megapixels")
    assert_error(post({"content": ("big.jpg", b"\xff" * (settings.max_upload_bytes + 1), "image/jpeg")}), 413,
                 "limit of 1 MB")
    assert_error(post({"content": ("cut.jpg", photo[:len(photo) // 3], "image/jpeg")}), 422, "cut.jpg")
    gif = io.BytesIO()
    Image.new("RGB", (20, 20)).save(gif, format="ICO")
    assert_error(post({"content": ("icon.ico", gif.getvalue(), "image/x-icon")}), 415, "ICO")
    assert_error(post(content_ref="sample:chelsea", model="picasso-9000"), 422, "unknown model", "microast")
    assert_error(post(content_ref="sample:chelsea", alpha="1.5"), 422, "alpha")
    assert_error(post(content_ref="sample:chelsea", size="100000"), 422, "size")
    assert_error(post(content_ref="sample:chelsea", model="gatys", size="1024"), 422, "gatys")
    assert_error(post(content_ref="sample:chelsea", style_weights="0.3,0.7"), 422, "weight")
    assert_error(post(content_ref="sample:chelsea", style_weights="a,b"), 422, "style_weights")
    assert_error(post(content_ref="sample:nobody"), 422, "unknown sample")
    assert_error(post(content_ref="image:" + "0" * 64), 404, "no image")
    assert_error(post(content_ref="/etc/passwd"), 422, "sample:NAME or image:SHA256")
    assert_error(post(), 422, "give one content")
    strip = io.BytesIO()
    Image.new("RGB", (400, 20)).save(strip, format="PNG")
    assert_error(post({"content": ("strip.png", strip.getvalue(), "image/png")}), 422, "crop it first")
    # A body without Content-Length is cut off once it passes the limit.
    chunks = (b"x" * 65536 for _ in range(40))
    multipart = {"content-type": "multipart/form-data; boundary=b"}
    assert_error(client.post("/api/images", content=chunks, headers=multipart), 413, "limit")
    assert_error(client.get("/api/results/12345"), 404, "no result")
    assert_error(client.get("/api/images/" + "0" * 64), 404)
    assert client.get("/api/results").json()["total"] == 0  # nothing half stored


def test_an_unexpected_error_is_a_500_without_details(client, monkeypatch):
    def broken(self, job):
        raise RuntimeError("secret internals at /srv/model.py line 12")

    monkeypatch.setattr(InferenceQueue, "_stylize", broken)
    form = {"content_ref": "sample:chelsea", "style_ref": "sample:ihc"}
    detail = assert_error(client.post("/api/stylize", data=form), 500, "internal server error")
    assert "secret" not in detail


def test_a_full_queue_answers_503_at_once(settings, monkeypatch):
    settings.queue_size = 0  # one running, none waiting
    release = threading.Event()
    original = InferenceQueue._stylize

    def slow(self, job):
        release.wait(30)
        return original(self, job)

    monkeypatch.setattr(InferenceQueue, "_stylize", slow)
    app = create_app(settings)
    form = {"content_ref": "sample:chelsea", "style_ref": "sample:ihc", "size": "32"}

    async def two_requests():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://testserver") as client:
            first = asyncio.create_task(client.post("/api/stylize", data=form))
            while app.state.services.queue.pending == 0:
                await asyncio.sleep(0.01)
            second = await client.post("/api/stylize", data=form)  # answered while the first still runs
            health = (await client.get("/api/health")).json()
            release.set()
            return await first, second, health

    first, second, health = asyncio.run(two_requests())
    assert first.status_code == 201
    assert_error(second, 503, "busy")
    assert second.headers["retry-after"]
    assert health == {"status": "ok", "workers": 1, "pending": 1, "capacity": 1, "dropped": 0, "stored_bytes": 0,
                      "storage_quota": 10**10}


def test_wilson_interval_matches_known_values():
    assert study.wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert study.wilson_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    assert study.wilson_interval(0, 0) == (0.0, 1.0)
    for successes, trials in [(1, 1), (3, 7), (81, 263), (999, 1000)]:
        reference = binomtest(successes, trials).proportion_ci(confidence_level=0.95, method="wilson")
        assert study.wilson_interval(successes, trials) == pytest.approx((reference.low, reference.high), abs=1e-9)


def test_study_preference_and_deception(client, painting):
    me, other = join_study(client), join_study(client)
    assert_error(client.post("/api/study/trials", json={"study": "preference"}, headers=me), 409, "at least two")
    assert_error(client.post("/api/study/trials", json={"study": "deception"}, headers=me), 409, "real artwork")
    files = {"style": ("painting.jpg", painting, "image/jpeg")}
    made = [stylize(client, files=files, content_ref="sample:chelsea", alpha=alpha, size="32")
            for alpha in ("1", "0.5")]
    stylize(client, content_ref="sample:coffee", style_ref="sample:ihc")  # one condition only: never compared

    trial = client.post("/api/study/trials", json={"study": "preference"}, headers=me).json()
    assert trial["study"] == "preference" and not trial["answered"]
    assert [item["url"] for item in trial["items"]] == [f"/api/study/trials/{trial['id']}/images/{position}"
                                                        for position in range(len(made))]
    assert set(trial["items"][0]) == {"position", "url"}  # blind: which model made which is not told
    answer_url = f"/api/study/trials/{trial['id']}/answer"
    assert_error(client.post(answer_url, json={"picked": [0, 1]}, headers=me), 422, "exactly one")
    assert_error(client.post(answer_url, json={"picked": [7]}, headers=me), 422, "position")
    assert client.post(answer_url, json={"picked": [0]}, headers=me).json()["answered"]
    assert_error(client.post(answer_url, json={"picked": [0]}, headers=me), 409, "answered already")
    assert_error(client.post("/api/study/trials/nope/answer", json={"picked": [0]}, headers=me), 404)

    deception = client.post("/api/study/trials", json={"study": "deception", "count": 4}, headers=other).json()
    assert 2 <= len(deception["items"]) <= 4
    everything = [item["position"] for item in deception["items"]]
    client.post(f"/api/study/trials/{deception['id']}/answer", json={"picked": everything}, headers=other)
    client.post("/api/study/trials", json={"study": "deception"}, headers=other)  # never answered: does not count

    rows = list(csv.DictReader(io.StringIO(client.get("/api/study/answers.csv").text)))
    assert tuple(rows[0]) == study.CSV_COLUMNS
    assert len(rows) == 2 + len(deception["items"])
    preference_rows = [row for row in rows if row["study"] == "preference"]
    chosen = next(row for row in preference_rows if row["position"] == "0")
    assert chosen["picked"] == "1" and chosen["real"] == "0"
    assert {row["condition"] for row in preference_rows} == {"microast-cv-coco-wikiart, alpha 1",
                                                             "microast-cv-coco-wikiart, alpha 0.5"}
    deception_rows = [row for row in rows if row["study"] == "deception"]
    fakes = sum(row["real"] == "0" for row in deception_rows)
    reals = len(deception_rows) - fakes
    assert fakes >= 1 and reals >= 1 and all(row["picked"] == "1" for row in deception_rows)

    results = client.get("/api/study/results").json()
    by_condition = {c["condition"]: c for c in results["preference"]["conditions"]}
    assert results["preference"]["trials"] == 1
    assert by_condition[chosen["condition"]] | {"condition": None} == {
        "condition": None, "shown": 1, "picked": 1, "rate": 1.0,
        "ci_low": pytest.approx(study.wilson_interval(1, 1)[0]), "ci_high": 1.0}
    other = next(c for name, c in by_condition.items() if name != chosen["condition"])
    assert (other["picked"], other["rate"], other["ci_high"]) == (0, 0.0, pytest.approx(study.wilson_interval(0, 1)[1]))
    assert results["deception"]["trials"] == 1
    by_participant = {row["participant"]: row for row in results["participants"]}
    assert by_participant[chosen["participant"]] | {"last_answer": None} == {
        "participant": chosen["participant"], "trials": 1, "preference_trials": 1, "favourite": chosen["condition"],
        "favourite_share": 1.0, "deception_trials": 0, "stylisations_marked_real": None, "last_answer": None}
    fooled = by_participant[deception_rows[0]["participant"]]
    assert (fooled["deception_trials"], fooled["stylisations_marked_real"], fooled["favourite"]) == (1, 1.0, None)
    assert results["deception"]["stylisations"]["shown"] == fakes and results["deception"]["stylisations"]["rate"] == 1
    low, high = study.wilson_interval(reals, reals)
    assert results["deception"]["artworks"] | {} == {"shown": reals, "picked": reals, "rate": 1.0,
                                                     "ci_low": pytest.approx(low), "ci_high": high}


def test_artworks_for_the_deception_study(client, settings, painting):
    added = client.post("/api/images", files={"file": ("monet.jpg", painting, "image/jpeg")}, data={"artwork": "true"})
    assert added.status_code == 201
    artwork = added.json()
    assert artwork["artwork"] and artwork["name"] == "monet.jpg" and (artwork["width"], artwork["height"]) == (120, 120)
    assert [a["sha256"] for a in client.get("/api/study/artworks").json()] == [artwork["sha256"]]
    assert client.delete(f"/api/study/artworks/{artwork['sha256']}").status_code == 204
    assert client.get("/api/study/artworks").json() == []
    assert artwork["sha256"] not in stored_files(settings)  # no longer used by anything
    assert_error(client.delete(f"/api/study/artworks/{artwork['sha256']}"), 404)


def test_models_samples_page_and_openapi(client):
    models = {m["name"]: m for m in client.get("/api/models").json()}
    assert models["microast-cv-coco-wikiart"]["default"] and not models["microast"]["default"]
    assert all(models[name]["available"] for name in ("microast", "microast-cv-coco-wikiart", "microast-cv-faces"))
    assert models["microast"]["licence"] == "MIT" and "AAAI 2023" in models["microast"]["citation"]
    assert models["gatys"]["kind"] == "model" and models["vgg16-hed"]["kind"] == "loss-network"
    samples = client.get("/api/samples").json()
    assert "sample:chelsea" in [s["ref"] for s in samples]
    assert image_of(client, "/api/samples/chelsea").format == "JPEG"
    assert_error(client.get("/api/samples/nobody"), 404, "no sample")
    page = client.get("/")
    assert page.status_code == 200 and "<title>brushwork</title>" in page.text
    assert client.get("/static/app.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/stylize", "/api/results", "/api/results/{result_id}", "/api/models", "/api/images",
                 "/api/study/trials", "/api/study/trials/{trial_id}/answer", "/api/study/results",
                 "/api/study/answers.csv"):
        assert path in paths
    assert paths["/api/stylize"]["post"]["responses"]["415"]


def test_the_api_page_works_offline(client):
    """/docs loads Swagger UI from the server itself (a package ships its files), never from a CDN."""
    page = client.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert "cdn." not in page.text and "https://" not in page.text.split("</head>")[0]
    for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
        response = client.get(asset)
        assert response.status_code == 200 and len(response.content) > 10_000, asset
    assert client.get("/openapi.json").json()["info"]["title"] == "brushwork"

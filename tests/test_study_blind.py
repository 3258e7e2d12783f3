"""The study stays blind and hard to flood: what a script could do to learn which model made which image of a
trial, or to answer as many people, is tried here against the real app (test client, real images, SQLite)."""

import hashlib
import io
import json
import re

import numpy as np
import pytest
import skimage.data
from fastapi.testclient import TestClient
from PIL import Image

from brushwork.images import resize
from brushwork.server.storage import encode
from test_server import assert_error, client, join_study, settings, stylize  # noqa: F401  (client, settings: fixtures)

HEX64 = re.compile(r"[0-9a-f]{64}")


def painting_with_metadata(array: np.ndarray, size: tuple[int, int]) -> bytes:
    """A JPEG painting whose EXIF says where it comes from, as files from a museum's site often do."""
    exif = Image.Exif()
    exif[0x010E] = "Real artwork, museum scan"  # ImageDescription
    buffer = io.BytesIO()
    Image.fromarray(array).resize(size).save(buffer, format="JPEG", quality=90, exif=exif)
    return buffer.getvalue()


@pytest.fixture
def study_gallery(client):
    """Two conditions of one content and style (a preference trial), and real artworks beside them."""
    style = {"style": ("painting.jpg", painting_with_metadata(skimage.data.coffee(), (48, 48)), "image/jpeg")}
    made = [stylize(client, files=style, content_ref="sample:chelsea", alpha=alpha, size="32")
            for alpha in ("1", "0.5")]
    artwork = painting_with_metadata(skimage.data.rocket(), (64, 40))
    added = client.post("/api/images", files={"file": ("rocket.jpg", artwork, "image/jpeg")}, data={"artwork": "true"})
    assert added.status_code == 201, added.text
    return made


def everything_public(client) -> tuple[set[str], list[bytes]]:
    """What anyone can read without a trial: every sha256 named in a listing, and every image file listed."""
    texts, urls = [], set()
    page = client.get("/api/results", params={"limit": 100}).json()
    for result in page["items"]:
        texts.append(client.get(f"/api/results/{result['id']}").text)
        urls |= {result["url"], result["content"]["url"], *(style["url"] for style in result["styles"])}
    artworks, samples = client.get("/api/study/artworks").json(), client.get("/api/samples").json()
    urls |= {item["url"] for item in artworks + samples}
    texts += [json.dumps(page), json.dumps(artworks), json.dumps(samples), client.get("/api/study/results").text,
              client.get("/api/study/answers.csv").text]
    files = []
    for url in sorted(urls):
        response = client.get(url)
        assert response.status_code == 200, url
        files.append(response.content)
    return set(HEX64.findall(" ".join(texts))), files


def test_trial_images_cannot_be_looked_up_anywhere_public(client, study_gallery):
    me = join_study(client)
    trials = [client.post("/api/study/trials", json={"study": study, "count": 4}, headers=me).json()
              for study in ("preference", "deception")]
    names, files = everything_public(client)
    public = [Image.open(io.BytesIO(data)).convert("RGB") for data in files]
    assert len(public) >= 6  # the outputs, their content and style, the other artwork, the samples

    for trial in trials:
        text = json.dumps(trial)
        assert not HEX64.search(text) and "/api/images/" not in text
        assert all(set(item) == {"position", "url"} for item in trial["items"])  # no result id, model, settings
        shown = []
        for item in trial["items"]:
            assert item["url"] == f"/api/study/trials/{trial['id']}/images/{item['position']}"
            response = client.get(item["url"])
            assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
            assert "no-store" in response.headers["cache-control"]
            data = response.content
            assert client.get(item["url"]).content != data  # fresh noise: no two copies are the same file
            image = Image.open(io.BytesIO(data))
            assert image.format == "JPEG" and not image.getexif() and b"museum" not in data
            shown.append(image.convert("RGB"))

            # What a script would compare: the sha256 of the bytes against every name and every file; the
            # pixels against every file's; and the bytes against every file resized and re-encoded as the
            # server does.
            digest = hashlib.sha256(data).hexdigest()
            assert digest not in names
            pixels = np.asarray(image.convert("RGB"))
            side = min(image.size)
            for original, file in zip(public, files):
                assert hashlib.sha256(file).hexdigest() != digest
                scaled = resize(original, side)
                assert hashlib.sha256(encode(scaled, "jpg")).hexdigest() != digest
                if scaled.size == image.size:
                    assert not np.array_equal(np.asarray(scaled), pixels)
                    reencoded = np.asarray(Image.open(io.BytesIO(encode(scaled, "jpg"))).convert("RGB"))
                    assert not np.array_equal(reencoded, pixels)
        # One size for every image of a trial: a real artwork's size does not give it away.
        assert len({min(image.size) for image in shown}) == 1


def test_a_trial_belongs_to_the_participant_it_was_given_to(client, settings, study_gallery):
    me, other = join_study(client), join_study(client)
    for bad in ({}, {"Authorization": "Bearer p-1"}, {"Authorization": "Basic cDE6cDE="}):
        response = client.post("/api/study/trials", json={"study": "preference"}, headers=bad)
        assert_error(response, 401, "participant")
        assert response.headers["www-authenticate"] == "Bearer"
    trial = client.post("/api/study/trials", json={"study": "preference"}, headers=me).json()
    answer_url = f"/api/study/trials/{trial['id']}/answer"
    # A participant id of the client's own choosing is refused, not taken.
    assert_error(client.post(answer_url, json={"picked": [0], "participant": "p-1"}, headers=me), 422, "participant")
    assert_error(client.post(answer_url, json={"picked": [0]}), 401, "participant token")
    assert_error(client.post(answer_url, json={"picked": [0]}, headers=other), 403, "another participant")
    assert_error(client.get(f"/api/study/trials/{trial['id']}", headers=other), 403, "another participant")
    assert client.post(answer_url, json={"picked": [0]}, headers=me).status_code == 200
    assert_error(client.post(answer_url, json={"picked": [1]}, headers=me), 409, "answered already")
    assert_error(client.post(answer_url, json={"picked": [1]}, headers=other), 403)

    people = client.get("/api/study/results").json()["participants"]
    assert [(person["trials"], person["favourite_share"]) for person in people] == [(1, 1.0)]
    # The database keeps the token's sha256 only: reading it does not let anyone answer as a participant.
    token = me["Authorization"].removeprefix("Bearer ")
    stored = b"".join(path.read_bytes() for path in settings.data_dir.glob("brushwork.sqlite3*"))
    assert hashlib.sha256(token.encode()).hexdigest().encode() in stored and token.encode() not in stored


def test_answers_per_participant_show_who_answers_most(client, study_gallery):
    busy, calm = join_study(client), join_study(client)
    for who, count in ((busy, 3), (calm, 1)):
        for _ in range(count):
            trial = client.post("/api/study/trials", json={"study": "preference"}, headers=who).json()
            assert client.post(f"/api/study/trials/{trial['id']}/answer", json={"picked": [0]},
                               headers=who).status_code == 200
    people = client.get("/api/study/results").json()["participants"]
    assert [person["preference_trials"] for person in people] == [3, 1]  # most answers first
    assert people[0]["favourite_share"] >= 1 / 2 and people[0]["favourite"].startswith("microast")
    assert len({person["participant"] for person in people}) == 2


def test_study_requests_are_rate_limited_per_participant_and_per_address(client, settings):
    settings.study_requests_per_participant, settings.study_requests_per_address = 3, 6
    now = [1000.0]
    client.app.state.services.limits.clock = lambda: now[0]
    me = join_study(client)  # 1 from this address
    for _ in range(3):  # 4 from this address; an empty gallery answers 409, and a refused request counts too
        assert_error(client.post("/api/study/trials", json={"study": "deception"}, headers=me), 409)
    refused = client.post("/api/study/trials", json={"study": "deception"}, headers=me)  # 5
    assert_error(refused, 429, "this participant", "try again")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    other = join_study(client)  # 6: another participant is not held back by the first one's rate
    assert_error(client.post("/api/study/participants"), 429, "this address")  # 7: but the address is
    assert_error(client.post("/api/study/trials", json={"study": "deception"}, headers=other), 429, "this address")
    elsewhere = TestClient(client.app, client=("192.0.2.7", 50000))  # another address is served
    assert elsewhere.post("/api/study/participants").status_code == 201
    now[0] += 61  # a minute later, all of them may go on
    assert_error(client.post("/api/study/trials", json={"study": "deception"}, headers=me), 409)
    assert join_study(client)

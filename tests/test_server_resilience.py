"""The web server when storage runs out, clients give up and the process is killed: a full disk (a real small
tmpfs, and a real file-size limit), the storage quota, the clean-up of unused uploads and stray files, queued
stylisations whose client has gone, and kill -9 under 8 concurrent clients. Real uvicorn servers on loopback."""

import contextlib
import io
import os
import random
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest
import skimage.data
from click.testing import CliRunner
from PIL import Image

from brushwork.cli import cli
from brushwork.server.inference import InferenceQueue
from brushwork.server.settings import Settings
from test_server import assert_error, settings  # noqa: F401  (settings: a fixture)
from test_server_fuzz import raw
from test_server_hardening import consistency_problems, serving
from test_web_e2e import free_port


def photo(seed: int, size=(64, 48)) -> tuple[str, bytes, str]:
    """A JPEG crop of the astronaut, different for every seed (so that it is stored as a file of its own)."""
    rng = random.Random(seed)
    array = skimage.data.astronaut()
    top, left = rng.randrange(0, 300), rng.randrange(0, 300)
    buffer = io.BytesIO()
    Image.fromarray(array[top:top + 200, left:left + 200]).resize(size).save(buffer, format="JPEG", quality=90)
    return f"photo-{seed}.jpg", buffer.getvalue(), "image/jpeg"


def database_sound(data_dir) -> bool:
    with contextlib.closing(sqlite3.connect(f"file:{data_dir / 'brushwork.sqlite3'}?mode=ro", uri=True)) as db:
        return db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def leftovers(data_dir) -> list[str]:
    """Temporary files of interrupted writes."""
    return [path.name for path in (data_dir / "images").rglob("*.part")]


@pytest.fixture
def painted(monkeypatch) -> list[int]:
    """The size of every stylisation a worker paints, in order (the real painting runs)."""
    sizes = []
    original = InferenceQueue._stylize

    def counted(self, job):
        sizes.append(job.size)
        return original(self, job)

    monkeypatch.setattr(InferenceQueue, "_stylize", counted)
    return sizes


# ---------------------------------------------------------------------------------------------- no room

@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs: a disk that really fills up. Mounting one needs root."""
    folder = tmp_path / "disk"
    folder.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "brushwork-test", str(folder)],
                                 capture_output=True, timeout=30).returncode == 0
    except OSError:
        mounted = False
    if not mounted:
        pytest.skip("mounting a small tmpfs needs root (the file-size-limit test covers a full disk without it)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], timeout=30)


def fill(folder, leave: int) -> None:
    """Grow a file in ``folder`` until the disk has ``leave`` bytes free."""
    stat = os.statvfs(folder)
    with open(folder / "filler", "ab", buffering=0) as filler:
        filler.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave))
    stat = os.statvfs(folder)
    assert stat.f_bavail * stat.f_frsize == leave


def test_a_full_disk_is_a_507_and_leaves_nothing_half_written(settings, small_disk, painted):
    settings.data_dir = small_disk / "data"
    with serving(settings) as server, httpx.Client(base_url=server, timeout=60) as http:
        kept = http.post("/api/stylize", data={"style_ref": "sample:ihc", "size": "32"}, files={"content": photo(1)})
        assert kept.status_code == 201, kept.text
        stored = sorted((settings.data_dir / "images").rglob("*.*"))

        # Room for the uploads but not for the 256 px PNG: the work is done, then storing it fails.
        fill(small_disk, leave=64 * 1024)
        form = {"style_ref": "sample:ihc", "size": "256"}
        after_work = http.post("/api/stylize", data=form, files={"content": photo(2, (320, 256))})
        assert_error(after_work, 507, "no room", "nothing of this request was saved")
        assert painted == [32, 256]
        # No room at all: refused before the work.
        fill(small_disk, leave=0)
        assert_error(http.post("/api/stylize", data=form, files={"content": photo(3)}), 507, "no room")
        assert_error(http.post("/api/images", files={"file": photo(4)}), 507, "no room")
        assert painted == [32, 256]
        # The database's own writes (a new study participant: its log must grow) find no room either.
        assert_error(http.post("/api/study/participants"), 507, "no room")

        # Nothing of the refused requests was kept, nothing saved before was lost, and the server goes on.
        assert sorted((settings.data_dir / "images").rglob("*.*")) == stored and not consistency_problems(settings)
        assert not leftovers(settings.data_dir) and database_sound(settings.data_dir)
        assert http.get("/api/results").json()["items"] == [kept.json()]
        assert http.get(kept.json()["url"]).status_code == 200
        (small_disk / "filler").unlink()
        assert http.post("/api/stylize", data=form, files={"content": photo(2, (320, 256))}).status_code == 201
        assert http.post("/api/study/participants").status_code == 201
        assert not consistency_problems(settings)


@contextlib.contextmanager
def file_size_limit(size: int):
    """No file of this process may grow past ``size`` bytes (RLIMIT_FSIZE: such a write fails with EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_write_past_a_file_size_limit_is_a_507_after_the_work_and_leaves_nothing(settings, painted):
    form = {"style_ref": "sample:ihc", "format": "png"}
    with serving(settings) as server, httpx.Client(base_url=server, timeout=60) as http:
        small = http.post("/api/stylize", data={**form, "size": "32"}, files={"content": photo(1)})
        assert small.status_code == 201, small.text
        files_before = sorted((settings.data_dir / "images").rglob("*.*"))
        database = settings.data_dir / "brushwork.sqlite3"
        limit = 512 * 1024  # more than the database and its log hold, less than a 512 px PNG
        assert max(database.stat().st_size, database.with_name(database.name + "-wal").stat().st_size) < limit * 0.6
        with file_size_limit(limit):
            refused = http.post("/api/stylize", data={**form, "size": "512"}, files={"content": photo(2, (640, 512))})
            assert_error(refused, 507, "no room", "nothing of this request was saved")
            assert painted == [32, 512]  # after the work
            assert sorted((settings.data_dir / "images").rglob("*.*")) == files_before
            assert not leftovers(settings.data_dir) and not consistency_problems(settings)
            # Within the limit the server goes on.
            assert http.post("/api/stylize", data={**form, "size": "40"}, files={"content": photo(3)}
                             ).status_code == 201
        assert http.get("/api/results").json()["total"] == 2
        assert http.post("/api/stylize", data={**form, "size": "512"}, files={"content": photo(2, (640, 512))}
                         ).status_code == 201
        assert database_sound(settings.data_dir) and not consistency_problems(settings)


def test_the_storage_quota_refuses_before_the_work_and_is_never_passed(settings, painted):
    first, second = photo(1, (320, 240)), photo(2, (640, 480))
    settings.storage_quota = len(first[1]) + 20_000  # room for a small result, not for the second photo
    assert len(second[1]) > 20_000
    with serving(settings) as server, httpx.Client(base_url=server, timeout=60) as http:
        stored_first = http.post("/api/images", files={"file": first})
        assert stored_first.status_code == 201, stored_first.text
        health = http.get("/api/health").json()
        assert (health["stored_bytes"], health["storage_quota"]) == (len(first[1]), settings.storage_quota)
        # Uploads that do not fit: refused before they are decoded or painted.
        form = {"style_ref": "sample:ihc", "size": "32"}
        for refused in (http.post("/api/stylize", data=form, files={"content": second}),
                        http.post("/api/images", files={"file": second})):
            assert_error(refused, 507, "storage quota", "used up", "delete results")
        assert painted == []
        # Uploads that fit, an output that does not (a 480 px PNG): the quota holds after the work too.
        reference = {"content_ref": stored_first.json()["ref"]}
        assert_error(http.post("/api/stylize", data={**form, **reference, "size": "480"}), 507, "storage quota")
        assert painted == [480]
        made = http.post("/api/stylize", data={**form, **reference})
        assert made.status_code == 201, made.text
        stored = http.get("/api/health").json()["stored_bytes"]
        assert stored <= settings.storage_quota
        assert stored == sum(path.stat().st_size for path in (settings.data_dir / "images").rglob("*.*"))
        assert http.delete(f"/api/results/{made.json()['id']}").status_code == 204  # deleting makes room
        assert http.get("/api/health").json()["stored_bytes"] < stored
        assert not consistency_problems(settings) and not leftovers(settings.data_dir)

    for value in ("lots", "0", "-5GB", "1.5XB"):
        run = CliRunner().invoke(cli, ["serve", "--storage-quota", value])
        assert run.exit_code == 2 and "is not a size like 500MB" in run.output, run.output


# ---------------------------------------------------------------------------------------------- clean-up

def test_unused_uploads_go_after_their_grace_and_stray_files_at_start(settings):
    settings.unused_upload_grace = 2.0
    # What a killed server leaves: a file written but never committed, and a write cut short.
    stray = settings.data_dir / "images" / "ab" / ("ab" + "0" * 62 + ".png")
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"\x89PNG never committed")
    cut = stray.with_name(".cut-short.part")
    cut.write_bytes(b"half a file")
    with serving(settings) as server, httpx.Client(base_url=server, timeout=60) as http:
        assert not stray.exists() and not cut.exists()  # gone before the first request was served
        unused, artwork, used = (http.post("/api/images", files={"file": photo(seed)}, data=data).json()
                                 for seed, data in ((1, {}), (2, {"artwork": "true"}), (3, {})))
        assert http.get(unused["url"]).status_code == 200  # within its grace
        made = http.post("/api/stylize", data={"content_ref": used["ref"], "style_ref": "sample:ihc", "size": "32"})
        assert made.status_code == 201, made.text
        deadline = time.monotonic() + 15
        while http.get(unused["url"]).status_code != 404:
            assert time.monotonic() < deadline, "the unused upload was not deleted"
            time.sleep(0.2)
        # What a result or the study uses stays.
        for url in (artwork["url"], used["url"], made.json()["url"]):
            assert http.get(url).status_code == 200, url
        assert not consistency_problems(settings)
        assert http.get("/api/health").json()["stored_bytes"] == sum(
            path.stat().st_size for path in (settings.data_dir / "images").rglob("*.*"))


# ---------------------------------------------------------------------------------------------- clients gone

def test_queued_stylisations_whose_client_has_gone_are_dropped_unpainted(settings, monkeypatch):
    settings.queue_size = 8
    painted, release = [], threading.Event()
    original = InferenceQueue._stylize

    def held(self, job):  # the one worker stays on the first job until released
        painted.append(job.size)
        release.wait(30)
        return original(self, job)

    monkeypatch.setattr(InferenceQueue, "_stylize", held)
    form = {"style_ref": "sample:ihc"}
    answers = {}

    def stay(name: str, size: int, seed: int) -> None:
        answers[name] = httpx.post(server + "/api/stylize", data={**form, "size": str(size)},
                                   files={"content": photo(seed)}, timeout=60)

    with serving(settings) as server, httpx.Client(base_url=server, timeout=60) as http:
        def pending() -> int:
            return http.get("/api/health").json()["pending"]

        def wait_for(count: int) -> None:
            deadline = time.monotonic() + 20
            while pending() != count:
                assert time.monotonic() < deadline, pending()
                time.sleep(0.02)

        busy = threading.Thread(target=stay, args=("busy", 32, 1))
        busy.start()
        wait_for(1)
        address = ("127.0.0.1", int(server.rsplit(":", 1)[1]))
        gone = []
        for seed in range(10, 14):  # four clients send a whole request, then hang up without an answer
            sock = socket.create_connection(address, timeout=10)
            sock.sendall(raw(http.build_request("POST", "/api/stylize", data={**form, "size": "40"},
                                                files={"content": photo(seed)})))
            gone.append(sock)
        waiting = threading.Thread(target=stay, args=("waiting", 48, 2))
        waiting.start()
        wait_for(6)
        for sock in gone:
            sock.close()
        time.sleep(1)  # the server notices a closed loopback connection at once; give it ample time
        release.set()
        busy.join(60)
        waiting.join(60)
        wait_for(0)
        assert answers["busy"].status_code == 201 and answers["waiting"].status_code == 201
        assert sorted(painted) == [32, 48]  # the four abandoned ones never started
        assert http.get("/api/health").json()["dropped"] == 4
        gallery = http.get("/api/results").json()
        assert gallery["total"] == 2 and {item["size"] for item in gallery["items"]} == {32, 48}
        assert not consistency_problems(settings)  # and none of their uploads was stored


# ---------------------------------------------------------------------------------------------- kill -9

def start_server(data_dir, *options) -> tuple[subprocess.Popen, str]:
    """'brushwork serve' in its own process on a free loopback port, once it answers."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "brushwork", "serve", "--port", str(port), "--data",
                                str(data_dir), *options], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the server did not start"
        with contextlib.suppress(httpx.TransportError):
            httpx.get(url + "/api/health", timeout=2)
            return process, url
        time.sleep(0.1)


def unreferenced_file(data_dir) -> bool:
    """A file of the store whose row is not committed (yet): the moment between writing a file and the commit."""
    names = {path.name.split(".")[0] for path in (data_dir / "images").rglob("*") if path.is_file()}
    if not names:
        return False
    with contextlib.closing(sqlite3.connect(f"file:{data_dir / 'brushwork.sqlite3'}?mode=ro", uri=True,
                                            timeout=1)) as db:
        with contextlib.suppress(sqlite3.Error):
            return bool(names - {sha256 for (sha256,) in db.execute("SELECT sha256 FROM images")})
    return False


def test_kill_9_during_8_clients_loses_nothing_acknowledged_and_leaves_nothing_broken(tmp_path):
    data_dir = tmp_path / "data"
    options = ["--queue-size", "16", "--storage-quota", "1GB", "--unused-upload-hours", "1"]
    server, url = start_server(data_dir, *options)
    acknowledged, errors, seeds = [], [], iter(range(10**6))
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                seed = next(seeds)
                form = {"style_ref": "sample:ihc", "size": "32", "alpha": f"{random.Random(seed).random():.3f}"}
                try:
                    answer = http.post("/api/stylize", data=form, files={"content": photo(seed)})
                except httpx.TransportError:  # the server was killed
                    return
                if answer.status_code == 201:
                    acknowledged.append(answer.json())
                else:
                    errors.append(answer.text)

    try:
        assert httpx.get(url + "/api/health").json()["storage_quota"] == 10**9
        clients = [threading.Thread(target=client) for _ in range(8)]
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 8:
            assert time.monotonic() < deadline and not errors, errors
            time.sleep(0.05)
        # Kill it mid-batch, at a moment a file is written and its row not committed if one is seen within 5 s.
        deadline = time.monotonic() + 5
        while not unreferenced_file(data_dir) and time.monotonic() < deadline:
            pass
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        stop.set()
        for thread in clients:
            thread.join(30)
        assert not errors, errors

        assert database_sound(data_dir)
        server, url = start_server(data_dir, *options)
        with httpx.Client(base_url=url, timeout=30) as http:
            for result in acknowledged:  # every result a client was told of is there, whole
                assert http.get(f"/api/results/{result['id']}").json() == result
                for image in (result["url"], result["content"]["url"]):
                    assert http.get(image).status_code == 200, image
            assert http.get("/api/results").json()["total"] >= len(acknowledged)
            problems = consistency_problems(Settings(data_dir=data_dir))
            assert not problems and not leftovers(data_dir), problems
            assert database_sound(data_dir)
            assert http.post("/api/stylize", data={"content_ref": "sample:chelsea", "style_ref": "sample:ihc",
                                                   "size": "32"}).status_code == 201
    finally:
        stop.set()
        server.kill()
        server.wait(10)

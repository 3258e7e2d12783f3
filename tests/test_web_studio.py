"""The live studio in a real headless Chromium against the real server: a slider change repaints the preview, the
before/after divider moves (pointer and keyboard), the zoom shows 100 %, the gallery shows thumbnails and opens a
result at full size, and the Live tab paints Chromium's fake camera with its frame rate shown.

``BRUSHWORK_WEB_SCREENSHOT`` (see test_web_e2e.py) also writes the screenshots of these views beside it;
``BRUSHWORK_WEB_MEASURE=FILE`` writes the preview latency of 20 slider changes and the webcam frame rate to FILE
(JSON), with a full stylisation at the same size as the baseline: explicit requests, never a test run's side
effect."""

import json
import os
import statistics
import time
from pathlib import Path

import httpx
import pytest
import torch

from brushwork.server.settings import Settings
from test_server_hardening import serving
from test_web_e2e import SCREENSHOT_FOR_DOCS, launch_chromium, save_small_screenshot, server  # noqa: F401

MEASURE = os.environ.get("BRUSHWORK_WEB_MEASURE")
#: Collects the previews the page shows (the page announces each with its latency).
LISTEN = """window.previews = [];
document.addEventListener('preview-shown', (event) => window.previews.push(event.detail));"""


@pytest.fixture
def chromium():
    """Chromium with a fake camera (a moving test pattern) that the page may use without asking."""
    yield from launch_chromium("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")


def open_studio(chromium, server):
    from playwright.sync_api import expect

    page = chromium.new_page(viewport={"width": 1280, "height": 860})
    errors = []
    page.on("pageerror", lambda error: errors.append(error))
    page.add_init_script(LISTEN)
    page.goto(server + "/#stylise")
    expect(page.locator("#preview-status")).to_contain_text("Preview", timeout=30_000)
    return page, errors


def set_slider(page, selector: str, value: float) -> None:
    """Drag-and-release as a person does it: the value changes, then ``change`` fires."""
    page.eval_on_selector(selector, """(input, value) => {
        input.value = value;
        input.dispatchEvent(new Event('input', { bubbles: true }));
        input.dispatchEvent(new Event('change', { bubbles: true }));
    }""", value)


def wait_for_preview(page, count: int, alpha: float, timeout_s: float = 30) -> dict:
    """The first preview shown after ``count`` earlier ones whose alpha is ``alpha``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        shown = page.evaluate("window.previews")[count:]
        match = [preview for preview in shown if preview["alpha"] == alpha]
        if match:
            return match[0]
        page.wait_for_timeout(20)
    raise AssertionError(f"no preview with alpha {alpha} within {timeout_s} s")


def painted_checksum(page) -> int:
    return page.evaluate("""() => {
        const image = document.querySelector('#studio-stage .after');
        const canvas = Object.assign(document.createElement('canvas'), { width: 64, height: 64 });
        const context = canvas.getContext('2d');
        context.drawImage(image, 0, 0, 64, 64);
        return context.getImageData(0, 0, 64, 64).data.reduce((sum, value) => sum + value, 0);
    }""")


def test_slider_repaints_the_preview_and_the_divider_and_zoom_work(server, chromium, tmp_path):
    from playwright.sync_api import expect

    page, errors = open_studio(chromium, server)
    after = page.locator("#studio-stage .after")
    assert page.evaluate("document.querySelector('#studio-stage .after').naturalHeight") == 512
    before = painted_checksum(page)
    shown = len(page.evaluate("window.previews"))
    set_slider(page, "#alpha", 0.3)
    wait_for_preview(page, shown, 0.3)
    assert painted_checksum(page) != before  # new pixels, not just a new URL
    expect(page.locator("#preview-status")).to_contain_text("painted in")

    # The painting fills the width it is given: far larger than the old 213 px result.
    assert page.locator("#studio-stage .frame").bounding_box()["width"] > 600

    # Compare: the divider follows the pointer and the arrow keys, and clips the painting where it stands.
    divider = page.locator("#studio-stage .divider")
    expect(divider).to_be_hidden()
    page.check("#studio-stage .compare")
    expect(divider).to_be_visible()
    assert divider.get_attribute("aria-valuenow") == "50"
    frame = page.locator("#studio-stage .frame").bounding_box()
    handle = divider.bounding_box()
    page.mouse.move(handle["x"] + handle["width"] / 2, frame["y"] + frame["height"] / 2)
    page.mouse.down()
    page.mouse.move(frame["x"] + frame["width"] * 0.2, frame["y"] + frame["height"] / 2, steps=5)
    page.mouse.up()
    assert 15 <= int(divider.get_attribute("aria-valuenow")) <= 25
    divider.focus()
    value = int(divider.get_attribute("aria-valuenow"))
    page.keyboard.press("ArrowRight")
    assert int(divider.get_attribute("aria-valuenow")) == value + 2
    assert f"{value + 2}%" in after.evaluate("image => getComputedStyle(image).clipPath")
    if SCREENSHOT_FOR_DOCS:  # full style shows the difference best
        shown = len(page.evaluate("window.previews"))
        set_slider(page, "#alpha", 1)
        wait_for_preview(page, shown, 1)
        divider.focus()
        page.keyboard.press("End")
        for _ in range(25):
            page.keyboard.press("ArrowLeft")
        save_small_screenshot(page.screenshot(), Path(SCREENSHOT_FOR_DOCS).with_name("web_compare.png"))
    page.uncheck("#studio-stage .compare")
    if SCREENSHOT_FOR_DOCS:
        save_small_screenshot(page.screenshot(), Path(SCREENSHOT_FOR_DOCS).with_name("web_studio.png"))

    # Zoom to 100 %: one pixel of the painting per CSS pixel, scrollable.
    page.click("#studio-stage .zoom")
    box = page.locator("#studio-stage .frame").bounding_box()
    assert round(box["width"]) == after.evaluate("image => image.naturalWidth")
    page.click("#studio-stage .zoom")

    # Save paints the full size into the gallery; the gallery shows its thumbnail and opens it at full size.
    page.fill("input[name=size]", "600")
    page.click("#stylise-button")
    expect(page.locator("#stylise-status")).to_contain_text("Saved to the gallery", timeout=60_000)
    result_id = page.locator("#stylise-result figure").get_attribute("data-id")
    page.click("nav a[href='#gallery']")
    card = page.locator(f"#gallery-items .card[data-id='{result_id}']")
    thumbnail = card.locator("a.open img")
    expect(thumbnail).to_have_attribute("src", f"/api/images/{httpx.get(f'{server}/api/results/{result_id}').json()['url'].rsplit('/', 1)[1]}/thumbnail")
    page.wait_for_function("image => image.complete && image.naturalWidth > 0", arg=thumbnail.element_handle())
    assert max(thumbnail.evaluate("image => [image.naturalWidth, image.naturalHeight]")) <= 480
    card.locator("a.open").click()
    viewer = page.locator("#viewer")
    expect(viewer).to_be_visible()
    page.wait_for_function("() => document.querySelector('#viewer .after').naturalWidth > 0")
    assert page.evaluate("document.querySelector('#viewer .after').naturalHeight") == 600
    viewer.locator(".zoom").click()
    assert round(viewer.locator(".frame").bounding_box()["height"]) == 600
    viewer.locator(".close").click()
    expect(viewer).to_be_hidden()
    assert not errors, errors


def test_live_tab_paints_the_camera_and_shows_the_frame_rate(server, chromium):
    from playwright.sync_api import expect

    page = chromium.new_page(viewport={"width": 1280, "height": 860})
    errors = []
    page.on("pageerror", lambda error: errors.append(error))
    page.goto(server + "/#live")
    expect(page.locator("#live-model option")).not_to_have_count(0)
    page.select_option("#live-size", "120")
    page.click("#live-start")
    expect(page.locator("#live-rate")).to_contain_text("frames/s", timeout=30_000)
    painted = page.locator("#live-output")
    # Frames keep replacing the image (its size is 0 while the next one loads): read the size in one call.
    shown = page.wait_for_function("image => image.naturalWidth > 0 && Math.min(image.naturalWidth, image.naturalHeight)",
                                   arg=painted.element_handle())
    assert shown.json_value() == 120
    first = painted.get_attribute("src")
    expect(painted).not_to_have_attribute("src", first, timeout=15_000)  # more frames keep coming
    set_slider(page, "#live-alpha", 0.5)
    set_slider(page, "#live-smooth", 0.5)
    rate = float(page.locator("#live-rate").text_content().split()[0])
    assert rate > 0
    if SCREENSHOT_FOR_DOCS:
        page.wait_for_timeout(1500)
        save_small_screenshot(page.screenshot(), Path(SCREENSHOT_FOR_DOCS).with_name("web_live.png"))
    total = httpx.get(server + "/api/results").json()["total"]
    page.click("#live-snapshot")
    expect(page.locator("#live-status")).to_contain_text("Snapshot saved", timeout=30_000)
    assert httpx.get(server + "/api/results").json()["total"] == total + 1
    page.click("#live-stop")
    expect(page.locator("#live-start")).to_be_enabled()
    assert not errors, errors


def test_the_live_tab_paces_its_frames_within_the_servers_limit(tmp_path, weights_dir, chromium):
    """A server that takes 4 frames a second at most: the page, told the limit, keeps under it and stays
    connected, however fast the frames are painted."""
    from playwright.sync_api import expect

    settings = Settings(data_dir=tmp_path / "data", weights_dirs=[weights_dir], device="cpu", live_max_fps=4)
    with serving(settings) as url:
        page = chromium.new_page(viewport={"width": 1280, "height": 860})
        page.goto(url + "/#live")
        expect(page.locator("#live-model option")).not_to_have_count(0)
        page.select_option("#live-size", "120")
        page.click("#live-start")
        expect(page.locator("#live-rate")).to_contain_text("frames/s", timeout=30_000)
        page.wait_for_timeout(4000)
        assert "Stopped" not in page.locator("#live-status").text_content()
        expect(page.locator("#live-stop")).to_be_enabled()
        rate = float(page.locator("#live-rate").text_content().split()[0])
        assert 0 < rate <= 4
        page.click("#live-stop")


@pytest.mark.skipif(not MEASURE, reason="measures only when asked: BRUSHWORK_WEB_MEASURE=FILE")
def test_measure_preview_latency_and_frame_rate(server, chromium):
    """20 slider releases at 512 px, timed in the browser from the release to the new pixels on screen, next to
    full stylisations (POST /api/stylize, the same content, style and size) in the same run; then the webcam's
    frame rate over 20 s at each frame size."""
    report = {"cpu_threads": os.cpu_count()}
    default_threads = torch.get_num_threads()
    try:
        for threads in (default_threads, 1):  # the server's PyTorch threads (it runs in this process)
            torch.set_num_threads(threads)
            report[f"torch_threads_{threads}"] = measure_studio(chromium, server)
    finally:
        torch.set_num_threads(default_threads)
    Path(MEASURE).write_text(json.dumps(report, indent=2))


def measure_studio(chromium, server) -> dict:
    """The preview latencies, full requests and webcam frame rates of one measuring run."""
    page, _ = open_studio(chromium, server)
    latencies = []
    for step in range(20):
        alpha = round(0.05 * step, 2)  # on the slider's steps
        shown = len(page.evaluate("window.previews"))
        started = page.evaluate("performance.now()")
        set_slider(page, "#alpha", alpha)
        preview = wait_for_preview(page, shown, alpha)
        latencies.append(preview["at"] - started)
    baseline = []
    for _ in range(5):
        start = time.perf_counter()
        response = httpx.post(server + "/api/stylize", data={"content_ref": "sample:chelsea", "style_ref": "sample:ihc",
                                                             "alpha": "0.5", "size": "512"}, timeout=120)
        assert response.status_code == 201
        baseline.append((time.perf_counter() - start) * 1000)
    rates = {}
    page.goto(server + "/#live")
    for size in ("120", "180", "240"):
        page.select_option("#live-size", size)
        page.click("#live-start")
        page.wait_for_function("() => document.querySelector('#live-rate').textContent.includes('frames/s')",
                               timeout=30_000)
        painted = page.evaluate("() => new Promise((resolve) => { const start = performance.now(), image = "
                                "document.querySelector('#live-output'); let frames = 0; const count = () => "
                                "frames++; image.addEventListener('load', count); setTimeout(() => { "
                                "image.removeEventListener('load', count); resolve([frames, performance.now() - "
                                "start, image.naturalWidth, image.naturalHeight]); }, 20000); })")
        rates[size] = {"frames_per_second": round(painted[0] / (painted[1] / 1000), 2),
                       "frame": f"{painted[2]}x{painted[3]}"}
        page.click("#live-stop")
    quantile = lambda values, q: sorted(values)[min(len(values) - 1, round(q * (len(values) - 1)))]  # noqa: E731
    page.close()
    return {"preview_ms": {"median": round(statistics.median(latencies)), "p95": round(quantile(latencies, 0.95)),
                           "all": [round(v) for v in latencies]},
            "full_stylise_request_ms": {"median": round(statistics.median(baseline)),
                                        "all": [round(v) for v in baseline]},
            "webcam": rates}

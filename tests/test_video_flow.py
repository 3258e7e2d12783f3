"""Flow-guided video: the warping error on clips of exactly known motion, the flow and its masks, the flow filter
with real models (it halves the flicker and keeps the style), scene cuts, tiles, the command and the video
evaluation."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import brushwork
from brushwork.clips import synthetic_clip, write_clip
from brushwork.images import as_image, resize, to_image, to_tensor
from brushwork.metrics import Metrics
from brushwork.temporal import (Motion, TemporalFilter, WarpingMeter, estimate_motion, flow_frame, keep_contrast,
                                warp, warping_error)
from brushwork.video import FramePainter

from conftest import run_cli
from test_cli import assert_one_line_error

WIDTH, HEIGHT, FRAMES = 192, 128, 12


def texture(height=400, width=600, seed=0):
    """A smooth random texture in 60-190 levels (no clipping when noise is added), as a photo."""
    rng = np.random.default_rng(seed)
    noise = torch.from_numpy(rng.random((1, 3, height // 8, width // 8), dtype=np.float32))
    smooth = torch.nn.functional.interpolate(noise, size=(height, width), mode="bicubic", align_corners=False)
    detail = torch.from_numpy(rng.random((1, 3, height, width), dtype=np.float32))
    return to_image((60 + 130 * (0.7 * smooth.clamp(0, 1) + 0.3 * detail)) / 255)


def tensors(clip):
    return [to_tensor(frame) for frame in clip.frames()]


def measure(clip, outputs, contents=None, *, gap=5, known=True):
    """Warping errors of ``outputs`` painted from ``contents`` (flow frames; default: the outputs themselves), with
    the clip's exact motion or with the flow."""
    meter = WarpingMeter(gap, clip.motion if known else None)
    for index, output in enumerate(outputs):
        meter.add(contents[index] if contents else flow_frame(output), output)
    return meter.result()


# ------------------------------------------------------------------------------------------------ the metric


def test_a_known_warp_gives_the_known_error():
    clip = synthetic_clip("pan", texture(), width=WIDTH, height=HEIGHT, frames=FRAMES, noise=0.0)
    frames = tensors(clip)
    exact = measure(clip, frames, gap=4)
    assert exact.short_term == exact.input_short_term == 0.0  # a whole-pixel pan of a photo: exact crops
    assert exact.long_term == 0.0 and exact.short_pairs == FRAMES - 1 and exact.long_pairs == 2

    # Every other frame 10 levels brighter: 10 between neighbours, 0 between frames an even gap apart.
    stepped = [frame + (10 / 255 if index % 2 else 0.0) for index, frame in enumerate(frames)]
    errors = measure(clip, stepped, gap=4)
    assert errors.short_term == pytest.approx(10.0, abs=1e-3)
    assert errors.long_term == pytest.approx(0.0, abs=1e-3)
    assert all(error == pytest.approx(10.0, abs=1e-3) for error, _ in errors.per_frame[1:])
    assert math.isnan(errors.per_frame[0][0])

    # Sensor noise of sigma 3 in every frame: the difference of two such frames is 2 sigma / sqrt(pi) on average
    # (3.39 levels; 3.40 with the rounding to 8 bits), the floor of any painting.
    noisy = synthetic_clip("pan", texture(), width=WIDTH, height=HEIGHT, frames=FRAMES, noise=3.0)
    floor = measure(noisy, tensors(noisy), gap=4)
    assert floor.short_term == pytest.approx(3.40, abs=0.08) and floor.long_term == pytest.approx(3.40, abs=0.12)


@pytest.mark.parametrize("motion", ["pan", "zoom", "handheld"])
def test_the_flow_measures_what_the_known_motion_measures(motion):
    clip = synthetic_clip(motion, "sample:astronaut", width=WIDTH, height=HEIGHT, frames=FRAMES, noise=3.0)
    frames = tensors(clip)
    known, flow = measure(clip, frames), measure(clip, frames, known=False)
    assert flow.short_term == pytest.approx(known.short_term, rel=0.1)
    assert flow.long_term == pytest.approx(known.long_term, rel=0.1)
    assert flow.cuts == 0 and flow.short_pairs == FRAMES - 1
    # The flow itself, where both trust it, is within a tenth of a pixel of the truth.
    later, earlier = flow_frame(frames[5]), flow_frame(frames[4])
    estimated, truth = estimate_motion(earlier, later), clip.motion(4, 5)
    both = (estimated.reliable[0, 0] > 0.5) & (truth.reliable[0, 0] > 0)
    assert np.abs(estimated.map - truth.map)[both.numpy()].mean() < 0.1
    assert estimated.share > 0.85


def test_the_mask_leaves_out_what_comes_into_view():
    background = np.asarray(texture(HEIGHT, WIDTH, seed=1), np.float32) / 255
    square = np.asarray(texture(40, 40, seed=2), np.float32)[..., ::-1] / 255  # a different texture

    def frame(left):
        image = background.copy()
        image[40:80, left:left + 40] = square
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]

    earlier, later = flow_frame(frame(60)), flow_frame(frame(66))  # the square moves 6 px right
    motion = estimate_motion(earlier, later)
    reliable = motion.reliable[0, 0]
    assert reliable[40:80, 61:65].mean() < 0.3  # the background just uncovered behind the square
    assert reliable[:30].mean() > 0.9 and reliable[90:].mean() > 0.9  # the still background
    assert reliable[45:75, 72:100].mean() > 0.9  # the square's inside, followed

    # A pan brings in a strip at the frame's side that the earlier frame did not show.
    clip = synthetic_clip("pan", "sample:astronaut", width=WIDTH, height=HEIGHT, frames=2, noise=0.0)
    panned = [flow_frame(frame) for frame in tensors(clip)]
    entering = estimate_motion(*panned).reliable[0, 0]
    assert entering[:, -2:].max() < 0.5 and entering[:, :-6].mean() > 0.95


def test_a_scene_cut_is_not_followed():
    astronaut = flow_frame(to_tensor(as_image("sample:astronaut").resize((WIDTH, HEIGHT))))
    coffee = flow_frame(to_tensor(as_image("sample:coffee").resize((WIDTH, HEIGHT))))
    assert estimate_motion(astronaut, coffee).cut
    assert not estimate_motion(astronaut, astronaut).cut


def test_warp_moves_by_the_motion_and_keep_contrast_restores_flattened_strokes():
    image = to_tensor(texture(HEIGHT, WIDTH))
    position = np.stack(np.meshgrid(np.arange(WIDTH, dtype=np.float32) + 3, np.arange(HEIGHT, dtype=np.float32)),
                        axis=2)
    motion = Motion(position, torch.ones(1, 1, HEIGHT, WIDTH))
    for cubic in (False, True):
        moved = warp(image, motion, cubic=cubic)
        assert torch.allclose(moved[..., :-3], image[..., 3:], atol=1e-5)  # bicubic weights at whole pixels: 1
    assert warping_error(image, image[..., :, list(range(3, WIDTH)) + [WIDTH - 1] * 3], motion) < 1e-3

    # Two unrelated textures averaged: the local contrast drops by about 1/sqrt(2); kept, it is the reference's.
    other = to_tensor(texture(HEIGHT, WIDTH, seed=5))
    average = (image + other) / 2

    def contrast(x):
        return float((x - torch.nn.functional.avg_pool2d(x, 9, 1, 4, count_include_pad=False)).std())

    assert contrast(average) < 0.8 * contrast(image)
    assert contrast(keep_contrast(average, image)) == pytest.approx(contrast(image), rel=0.1)
    assert torch.allclose(keep_contrast(image, image), image, atol=1e-5)  # nothing to restore: unchanged


def test_memory_does_not_grow_with_the_clip():
    """The filter and the meter keep two earlier frames at most: what is held after 40 frames is what is held
    after 10 (the flow's arrays are numpy's, which tracemalloc sees)."""
    import tracemalloc

    clip = synthetic_clip("handheld", "sample:astronaut", width=128, height=96, frames=40, noise=3.0)
    meter, flow = WarpingMeter(gap=3), TemporalFilter("flow", 0.8)
    previous, held = None, {}
    tracemalloc.start()
    try:
        for index, frame in enumerate(tensors(clip)):
            current = flow_frame(frame)
            motion = estimate_motion(previous, current) if previous is not None else None
            meter.add(current, flow(frame, frame, motion), motion)
            previous = current
            if index in (9, 39):
                held[index] = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert meter.result().short_pairs == 39
    assert held[39] < held[9] + 100_000  # keeping each frame's motion (128x96) would add 150 kB a frame


# ------------------------------------------------------------------------------------------------ the filter


@pytest.fixture(scope="module")
def style(reference_pair):
    return reference_pair[2]  # brushstrokes


@pytest.fixture(scope="module")
def stylizer(weights_dir):
    return brushwork.Stylizer("microast", style_size=128, device="cpu", weights_dir=weights_dir)


def paint(stylizer, style, frames, settings, **options):
    """One painting of ``frames`` through every setting: the outputs (tensors, as written) and the motions."""
    painter = FramePainter(stylizer, style, [TemporalFilter(mode, strength) for mode, strength in settings],
                           flow=True, **options)
    outputs, contents = [[] for _ in settings], []
    for frame in frames:
        painted = painter(frame)
        contents.append(painted.content)
        for number, written in enumerate(painted.written):
            outputs[number].append(written)
    return outputs, contents


def test_the_flow_filter_halves_the_flicker_of_a_pan_and_keeps_the_style(stylizer, style, weights_dir):
    clip = synthetic_clip("pan", "sample:astronaut", width=WIDTH, height=HEIGHT, frames=FRAMES, noise=3.0)
    settings = [("none", 0.0), ("blend", 0.8), ("flow", 0.8)]
    outputs, contents = paint(stylizer, style, list(clip.frames()), settings)
    errors = {mode: measure(clip, frames, contents) for (mode, _), frames in zip(settings, outputs)}
    # Measured (the clip's exact motion): per frame 9.7 short-term, 11.3 long-term; blend 9.6 / 11.2 (the whole
    # picture moves, so it stands aside); flow 2.8 / 6.5.
    assert errors["none"].short_term > 2 * errors["none"].input_short_term  # painting adds flicker to the noise
    assert errors["blend"].short_term > 0.9 * errors["none"].short_term
    assert errors["flow"].short_term < 0.5 * errors["none"].short_term
    assert errors["flow"].long_term < 0.75 * errors["none"].long_term

    # The style at the middle frame: the style loss within 1.3 times that of the frame painted alone
    # (measured: 1.08).
    metrics = Metrics("vgg16-hed", device="cpu", weights_dir=weights_dir)
    painting = to_tensor(resize(as_image(style), 128))
    middle = FRAMES // 2
    losses = {mode: metrics.measure(contents[middle].image, painting, frames[middle])["style_loss"]
              for (mode, _), frames in zip(settings, outputs)}
    assert losses["flow"] < 1.3 * losses["none"]
    assert torch.equal(outputs[0][0], outputs[2][0])  # the first frame has no past


def test_a_scene_cut_starts_the_flow_filter_afresh(stylizer, style):
    first = synthetic_clip("pan", "sample:astronaut", width=WIDTH, height=HEIGHT, frames=4, noise=3.0)
    second = synthetic_clip("pan", "sample:coffee", width=WIDTH, height=HEIGHT, frames=4, noise=3.0)
    painter = FramePainter(stylizer, style, [TemporalFilter("none", 0.0), TemporalFilter("flow", 0.8)], flow=True)
    meter = WarpingMeter(2, outputs=2)
    alone, flow = [], []
    for frame in list(first.frames()) + list(second.frames()):
        painted = painter(frame)
        meter.add(painted.content, painted.written, painted.motion)
        alone.append(painted.written[0])
        flow.append(painted.written[1])
    assert torch.equal(flow[4], alone[4])  # after the cut: nothing of the astronaut
    assert not torch.equal(flow[5], alone[5]) and not torch.equal(flow[3], alone[3])
    assert meter.result(1).cuts == 1 and painter.filters[1].cuts == 1
    assert meter.result(1).short_pairs == 6 and math.isnan(meter.result(1).per_frame[4][0])


def test_tiled_frames_get_the_same_flow_filter(style, weights_dir):
    clip = synthetic_clip("handheld", "sample:astronaut", width=320, height=208, frames=3, noise=3.0)
    frames = list(clip.frames())
    results = {}
    for memory in (None, "64M"):
        stylizer = brushwork.Stylizer("microast", style_size=128, device="cpu", weights_dir=weights_dir,
                                      max_memory=memory)
        results[memory] = paint(stylizer, style, frames, [("flow", 0.8)])[0][0]
    assert stylizer._tile(to_tensor(frames[0])) is not None  # painted in tiles
    for tiled, whole in zip(results["64M"], results[None]):
        assert brushwork.metrics.psnr(tiled, whole) > 40


@pytest.mark.parametrize("model", ["microast", "adain-vgg16-hed", "johnson-la-muse", "vst"])
def test_every_feed_forward_method_flickers_less_with_flow(model, style, weights_dir, tmp_path):
    clip = synthetic_clip("pan", "sample:astronaut", width=128, height=96, frames=6, noise=3.0)
    stylizer = brushwork.Stylizer(model, style_size=128, device="cpu", weights_dir=weights_dir)
    styles = None if stylizer.method == "johnson" else style
    outputs, _ = paint(stylizer, styles, list(clip.frames()), [("none", 0.0), ("flow", 0.8)])
    alone, flow = (measure(clip, frames, gap=2) for frames in outputs)  # the outputs' own errors only
    assert flow.short_term < 0.6 * alone.short_term, (flow.short_term, alone.short_term)
    if styles is None:  # the command's path without a style (the others: see the command's tests)
        report = brushwork.stylize_video(write_clip(clip, tmp_path / "clip.mp4"), styles, tmp_path / "out.mp4",
                                         stylizer=stylizer, progress=False)
        assert report.frames == 6 and report.temporal == "flow" and report.warping.short_pairs == 5


# ------------------------------------------------------------------------------------------------ the command


@pytest.fixture(scope="module")
def pan_file(tmp_path_factory):
    clip = synthetic_clip("pan", "sample:astronaut", width=WIDTH, height=HEIGHT, frames=8, noise=3.0)
    return write_clip(clip, tmp_path_factory.mktemp("clips") / "pan.mp4")


def test_the_command_reports_the_warping_error(pan_file, style, weights_dir, tmp_path, monkeypatch, capsys):
    results = {}
    for mode in ("none", "flow"):
        code, stdout, stderr = run_cli(monkeypatch, capsys, "video", pan_file, style, "-o", tmp_path / f"{mode}.mp4",
                                       "--temporal", mode, "--style-size", 128, "--long-term-gap", 4,
                                       "--device", "cpu", "--weights-dir", weights_dir)
        assert code == 0, stderr
        assert "stylising" in stderr and "8/8" in stderr  # the progress bar
        line = next(line for line in stdout.splitlines() if line.startswith("warping error"))
        assert "over 7 pairs" in line and "over 1 pairs 4 frames apart" in line and "0 scene cuts" in line
        results[mode] = [float(word) for word in line.replace("(", " ").replace(")", " ").split()
                         if word.replace(".", "").isdigit() and "." in word]
    # short-term, its input floor, long-term, its floor: the input's are the same whatever the painting.
    assert results["flow"][1] == results["none"][1] and results["flow"][3] == results["none"][3]
    assert results["flow"][0] < 0.5 * results["none"][0]
    assert "temporal flow 0.8" in stdout  # the default strength

    code, stdout, _ = run_cli(monkeypatch, capsys, "video", pan_file, style, "-o", tmp_path / "quiet.mp4",
                              "--no-measure", "--style-size", 128, "--device", "cpu", "--weights-dir", weights_dir)
    assert code == 0 and "warping error" not in stdout and "temporal flow 0.8" in stdout


@pytest.mark.parametrize("args, text", [
    (["--temporal", "bogus"], "'bogus' is not one of 'none', 'blend', 'flow'"),
    (["--smooth", "1"], "1.0 is not in the range"),
    (["--method", "gatys"], "'gatys' is not one of"),
    (["--method", "johnson"], "give no style image"),
])
def test_bad_temporal_settings_are_one_line(pan_file, style, weights_dir, tmp_path, monkeypatch, capsys, args,
                                            text):
    code, _, stderr = run_cli(monkeypatch, capsys, "video", pan_file, style, "-o", tmp_path / "out.mp4", *args,
                              "--device", "cpu", "--weights-dir", weights_dir)
    assert_one_line_error(SimpleNamespace(returncode=code, stderr=stderr), 2, text)
    assert not (tmp_path / "out.mp4").exists()


def test_a_style_is_needed_except_by_a_per_style_model(pan_file, weights_dir, tmp_path, monkeypatch, capsys):
    code, _, stderr = run_cli(monkeypatch, capsys, "video", pan_file, "-o", tmp_path / "out.mp4", "--device", "cpu",
                              "--weights-dir", weights_dir)
    assert code == 2 and "give a style image" in stderr
    code, stdout, stderr = run_cli(monkeypatch, capsys, "video", pan_file, "-o", tmp_path / "out.mp4", "--method",
                                   "johnson", "--max-frames", 3, "--device", "cpu", "--weights-dir", weights_dir)
    assert code == 0, stderr
    assert "3 frames" in stdout


def test_the_video_evaluation_compares_settings(tmp_path, style, weights_dir, monkeypatch, capsys):
    styles = tmp_path / "styles"
    styles.mkdir()
    Image.open(style).save(styles / "brushstrokes.png")
    out = tmp_path / "report"
    code, stdout, stderr = run_cli(monkeypatch, capsys, "eval", "--video", "synthetic:pan,zoom", styles, "-o", out,
                                   "--synthetic-size", "96x64", "--max-frames", 6, "--temporal", "none,flow",
                                   "--smooth", "0.6,0.8", "--long-term-gap", 3, "--style-size", 128,
                                   "--device", "cpu", "--weights-dir", weights_dir)
    assert code == 0, stderr
    summary = {(entry["clip"], entry["setting"]): entry for entry in
               json.loads((out / "summary.json").read_text())["summary"]}
    assert set(summary) == {(clip, setting) for clip in ("synthetic-pan", "synthetic-zoom")
                            for setting in ("none", "flow 0.6", "flow 0.8")}
    for clip in ("synthetic-pan", "synthetic-zoom"):
        alone, flow = summary[(clip, "none")], summary[(clip, "flow 0.8")]
        assert flow["known_short_term"] < 0.6 * alone["known_short_term"]
        assert flow["short_term"] < summary[(clip, "flow 0.6")]["short_term"] < alone["short_term"]
        assert alone["style_loss_ratio"] == 1.0 and flow["style_loss_ratio"] < 1.3
        assert flow["input_short_term"] == alone["input_short_term"]
    assert "| synthetic-pan | flow 0.8 |" in stdout
    assert (out / "warping_error.png").stat().st_size > 10_000
    per_frame = json.loads((out / "per_frame.json").read_text())
    assert len(per_frame) == 6 and all(len(entry["short_term"]) == 6 for entry in per_frame)

    code, _, stderr = run_cli(monkeypatch, capsys, "eval", "--video", "synthetic:spin", styles, "-o", out,
                              "--device", "cpu", "--weights-dir", weights_dir)
    assert code == 2 and "unknown motion 'spin'" in stderr

"""brushwork video: tiny real clips (a moving crop of a photo, a sine tone), the real MicroAST weights."""

import signal
import subprocess
import sys
import time

import av
import numpy as np
import pytest
import torch
from skimage import data

import brushwork
from brushwork.temporal import temporal_blend
from brushwork.video import stylize_video

from conftest import interruptible_process, run_cli

RATE = 12
STYLE_SIZE = 128


def make_clip(path, *, frames=12, motion=3, noise=0.0, audio="aac"):
    """A 96x64 clip at 12 fps: a crop of the astronaut photo moving ``motion`` pixels a frame (plus sensor-like
    noise), nearly lossless H.264 (or MPEG-4 in AVI), and one second of a 440 Hz tone per 12 frames."""
    photo = data.astronaut().astype(np.float32)
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as clip:
        video = clip.add_stream("libx264" if path.suffix != ".avi" else "mpeg4", rate=RATE)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        video.codec_context.options = {"crf": "12"} if path.suffix != ".avi" else {"qscale": "2"}
        sound = clip.add_stream(audio, rate=16000, layout="mono") if audio else None
        for index in range(frames):
            top, left = 100 + index * motion, 150 + index * motion
            crop = photo[top:top + 128:2, left:left + 192:2] + rng.normal(0, noise, (64, 96, 3))
            frame = av.VideoFrame.from_ndarray(np.clip(crop, 0, 255).astype(np.uint8), format="rgb24")
            frame.pts = index
            clip.mux(video.encode(frame))
        clip.mux(video.encode(None))
        if sound:
            samples = 16000 * frames // RATE
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 16000)).astype(np.float32)[None]
            for start in range(0, samples, 1024):
                frame = av.AudioFrame.from_ndarray(tone[:, start:start + 1024], format="flt", layout="mono")
                frame.sample_rate, frame.pts = 16000, start
                clip.mux(sound.encode(frame))
            clip.mux(sound.encode(None))
    return path


def decode(path):
    """The frames as float arrays, and facts about the streams (the sound's length from its samples)."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        info = {"rate": video.average_rate, "codec": video.codec_context.name, "format": video.format.name,
                "audio": None, "audio_seconds": None}
        frames = [frame.to_ndarray(format="rgb24").astype(np.float64) for frame in container.decode(video=0)]
    with av.open(str(path)) as container:
        if container.streams.audio:
            audio = container.streams.audio[0]
            info["audio"] = audio.codec_context.name
            info["audio_seconds"] = sum(frame.samples for frame in container.decode(audio=0)) / audio.rate
    return frames, info


def psnr(a, b):
    return 10 * np.log10(255.0 ** 2 / np.mean((a - b) ** 2))


def mean_frame_change(frames):
    return float(np.mean([np.abs(a - b).mean() for a, b in zip(frames, frames[1:])]))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return {"moving": make_clip(folder / "moving.mp4"),
            "still": make_clip(folder / "still.mp4", motion=0, noise=3.0)}


@pytest.fixture(scope="module")
def style(reference_pair):
    return reference_pair[2]  # brushstrokes


@pytest.fixture(scope="module")
def stylizer(weights_dir):
    return brushwork.Stylizer("microast", style_size=STYLE_SIZE, device="cpu", weights_dir=weights_dir)


def test_command_paints_every_frame_and_keeps_the_sound(tmp_path, clips, style, weights_dir, monkeypatch, capsys):
    out = tmp_path / "painted.mp4"
    code, stdout, stderr = run_cli(monkeypatch, capsys, "video", clips["moving"], style, "-o", out,
                                   "--style-size", STYLE_SIZE, "--temporal", "none", "--device", "cpu",
                                   "--weights-dir", weights_dir)
    assert code == 0, stderr
    assert "12 frames" in stdout and "frames/s" in stdout and "audio copied" in stdout
    assert "temporal none" in stdout and "warping error" in stdout
    assert "stylising" in stderr and "12/12" in stderr  # the progress bar

    inputs, source = decode(clips["moving"])
    outputs, written = decode(out)
    assert len(outputs) == len(inputs) == 12
    assert written["rate"] == source["rate"] == RATE
    assert written["codec"] == "h264" and written["format"] == "yuv420p"
    assert outputs[0].shape == (64, 96, 3)
    assert written["audio"] == "aac" and written["audio_seconds"] == pytest.approx(source["audio_seconds"], abs=0.05)

    # Each frame is the still image painted alone, up to H.264's loss (measured: 30.9 dB at worst, crf 18).
    with av.open(str(clips["moving"])) as container:
        stills = [np.asarray(brushwork.stylize(frame.to_image(), style, style_size=STYLE_SIZE,  # the default model
                                               device="cpu", weights_dir=weights_dir), dtype=np.float64)
                  for frame in container.decode(video=0)]
    for painted, still, content in zip(outputs, stills, inputs):
        assert psnr(painted, still) > 28.0
        assert np.abs(painted - content).mean() > 20  # painted, not copied


def test_python_api_resizes_to_even_sizes_and_stops_at_max_frames(tmp_path, clips, style, weights_dir):
    stylizer = brushwork.Stylizer("microast", content_size=45, style_size=STYLE_SIZE, device="cpu",
                                  weights_dir=weights_dir)
    report = brushwork.stylize_video(clips["moving"], style, tmp_path / "preview.mkv", stylizer=stylizer,
                                     max_frames=5, progress=False)
    # 96x64 to a shorter side of 45 is 68x45; yuv420p needs even sizes, so the last row goes.
    assert (report.frames, report.width, report.height, report.audio) == (5, 68, 44, "copied")
    assert report.fps > 0 and report.seconds > 0
    outputs, written = decode(tmp_path / "preview.mkv")
    assert len(outputs) == 5 and outputs[0].shape == (44, 68, 3)
    assert written["rate"] == RATE
    # The sound ends with the preview, to within AAC's 64 ms packets (and the encoder's 64 ms of priming).
    assert 5 / RATE <= written["audio_seconds"] <= 5 / RATE + 0.13


def test_audio_the_container_cannot_hold_is_reencoded_to_aac(tmp_path, style, stylizer):
    source = make_clip(tmp_path / "mulaw.avi", frames=6, audio="pcm_mulaw")  # MP4 cannot hold mu-law
    report = stylize_video(source, style, tmp_path / "out.mp4", stylizer=stylizer, progress=False)
    assert report.audio == "re-encoded"
    outputs, written = decode(tmp_path / "out.mp4")
    assert len(outputs) == 6 and written["audio"] == "aac"
    assert written["audio_seconds"] == pytest.approx(0.5, abs=0.1)


def test_blending_removes_flicker_of_still_content_without_trails(tmp_path, clips, style, stylizer):
    changes, reports = {}, {}
    for smooth in (0.0, 0.8):
        out = tmp_path / f"still-{smooth}.mp4"
        reports[smooth] = stylize_video(clips["still"], style, out, stylizer=stylizer, temporal="blend",
                                        smooth=smooth, progress=False)
        changes[smooth] = mean_frame_change(decode(out)[0])
    # The content barely moves (noise only), yet each frame painted alone differs from the last (measured: 2.28
    # levels after encoding, 3.02 before); smoothing removes most of that (measured: 0.89 and 1.28).
    assert changes[0.0] > 1.0
    assert changes[0.8] < 0.6 * changes[0.0]
    assert reports[0.8].frame_change < 0.6 * reports[0.0].frame_change

    # Where the content moves, smoothing stands aside: smoothed frames stay close to unsmoothed ones (measured:
    # 32.3 dB at worst; a moving average of 0.8 without the content gate gives 18.5 dB, visible trails).
    stylize_video(clips["moving"], style, tmp_path / "moving.mp4", stylizer=stylizer, temporal="blend", smooth=0.8,
                  progress=False)
    plain = tmp_path / "moving-plain.mp4"
    stylize_video(clips["moving"], style, plain, stylizer=stylizer, temporal="none", progress=False)
    smoothed, unsmoothed = decode(tmp_path / "moving.mp4")[0], decode(plain)[0]
    assert min(psnr(a, b) for a, b in zip(smoothed, unsmoothed)) > 26.0


def test_temporal_blend_blends_only_where_the_content_is_still():
    content = torch.zeros(1, 3, 32, 32)
    moved = content.clone()
    moved[..., :8] = 1.0  # the left quarter changed completely
    painted, previous = torch.zeros(1, 3, 32, 32), torch.ones(1, 3, 32, 32)
    blended = temporal_blend(painted, previous, moved, content, 0.75)
    assert torch.allclose(blended[..., 24:], torch.full_like(blended[..., 24:], 0.75))  # far from the change
    assert torch.all(blended[..., :8] == 0)  # the change itself takes the new frame
    assert torch.equal(temporal_blend(painted, previous, content, content, 0.0), painted)


@pytest.mark.parametrize("case", ["not a video", "missing", "an image", "folder in the way"])
def test_bad_input_is_one_line_and_leaves_the_output_alone(tmp_path, clips, style, weights_dir, monkeypatch,
                                                           capsys, case):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n")
    source, out, expected = {
        "not a video": (text, tmp_path / "out.mp4", "not a video"),
        "missing": (tmp_path / "missing.mp4", tmp_path / "out.mp4", "no such file"),
        "an image": (style, tmp_path / "out.mp4", "an image, not a video"),
        "folder in the way": (clips["moving"], text / "out.mp4", "is not a folder"),
    }[case]
    if case != "folder in the way":
        out.write_bytes(b"an earlier result")
    code, _, stderr = run_cli(monkeypatch, capsys, "video", source, style, "-o", out, "--device", "cpu",
                              "--weights-dir", weights_dir)
    assert code == 2
    assert stderr.startswith("brushwork: error: ") and expected in stderr
    assert len(stderr.strip().splitlines()) == 1
    if case != "folder in the way":
        assert out.read_bytes() == b"an earlier result"
    assert not list(tmp_path.glob(".*.part*"))


def test_failure_mid_run_keeps_the_earlier_output(tmp_path, clips, style, stylizer):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier result")
    with pytest.raises(brushwork.BrushworkError, match="no such file"):
        stylize_video(clips["moving"], tmp_path / "missing-style.jpg", out, stylizer=stylizer, progress=False)
    assert out.read_bytes() == b"an earlier result"
    assert not list(tmp_path.glob(".*.part*"))
    with pytest.raises(brushwork.BrushworkError, match="cannot hold H.264"):
        stylize_video(clips["moving"], style, tmp_path / "out.webm", stylizer=stylizer, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_ctrl_c_stops_cleanly(tmp_path, style, weights_dir):
    source = make_clip(tmp_path / "long.mp4", frames=600, motion=0, audio=None)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier result")
    with interruptible_process([sys.executable, "-m", "brushwork", "video", source, style, "-o", out, "--device",
                                "cpu", "--weights-dir", weights_dir], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) as run:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".*.part*")) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # into the frames
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted after" in stderr and "not written" in stderr, stderr
    assert out.read_bytes() == b"an earlier result"
    assert not list(tmp_path.glob(".*.part*"))


def test_settings_are_checked_before_any_work(tmp_path, clips, style, stylizer):
    for settings, message in (({"smooth": 1.0}, "smoothing"), ({"max_frames": 0}, "max frames"),
                              ({"crf": 60}, "crf")):
        with pytest.raises(brushwork.BrushworkError, match=message):
            stylize_video(clips["moving"], style, tmp_path / "x.mp4", stylizer=stylizer, **settings)
    assert not list(tmp_path.iterdir())

"""The command line, run as a user runs it: a separate process, its exit status and what it prints."""

import os
import subprocess
import sys

import pytest
from PIL import Image

from conftest import HAVE_SHARED, interruptible_process


def brushwork(*args, env=None):
    return subprocess.run([sys.executable, "-m", "brushwork", *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=env)


def assert_one_line_error(run, code, text):
    assert run.returncode == code, run.stderr
    assert "Traceback" not in run.stderr
    assert text in run.stderr
    assert len([line for line in run.stderr.splitlines() if line.strip()]) <= 3  # click adds a usage hint


@pytest.fixture(scope="module")
def pair(reference_pair):
    return reference_pair


def test_stylize_one_image(tmp_path, pair, weights_dir):
    content, style, _ = pair
    run = brushwork("stylize", content, style, "-o", tmp_path / "out.jpg", "--content-size", 128,
                    "--alpha", 0.7, "--preserve-color", "--weights-dir", weights_dir, "--device", "cpu")
    assert run.returncode == 0, run.stderr
    assert "wrote" in run.stdout
    with Image.open(tmp_path / "out.jpg") as image:
        assert image.format == "JPEG" and image.size == (128, 128)


def test_mixing_two_styles_with_weights(tmp_path, pair, weights_dir):
    content, style_a, style_b = pair
    outputs = {}
    for weights in ("1,0", "0.5,0.5"):
        out = tmp_path / f"mix{weights}.png"
        run = brushwork("stylize", content, style_a, style_b, "--style-weights", weights, "-o", out,
                        "--content-size", 96, "--weights-dir", weights_dir)
        assert run.returncode == 0, run.stderr
        outputs[weights] = Image.open(out).tobytes()
    run = brushwork("stylize", content, style_a, "-o", tmp_path / "a.png", "--content-size", 96,
                    "--weights-dir", weights_dir)
    assert run.returncode == 0
    assert Image.open(tmp_path / "a.png").tobytes() == outputs["1,0"] != outputs["0.5,0.5"]


def test_folders_with_progress_and_a_bad_file(tmp_path, pair, weights_dir):
    content, style_a, style_b = pair
    contents, styles, out = tmp_path / "contents", tmp_path / "styles", tmp_path / "out"
    contents.mkdir(), styles.mkdir()
    Image.open(content).resize((64, 64)).save(contents / "one.png")
    Image.open(content).resize((48, 80)).save(contents / "two.jpg")
    (contents / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    Image.open(style_a).save(styles / "a.png")
    Image.open(style_b).save(styles / "b.png")

    run = brushwork("stylize", contents, styles, "-o", out, "--format", "jpg", "--weights-dir", weights_dir)
    assert run.returncode == 2
    assert "broken.jpg" in run.stderr and "Traceback" not in run.stderr
    assert "stylising" in run.stderr and "6/6" in run.stderr  # the progress bar
    assert sorted(p.name for p in out.iterdir()) == ["one__a.jpg", "one__b.jpg", "two__a.jpg", "two__b.jpg"]
    assert Image.open(out / "two__b.jpg").size == (48, 80)

    (contents / "broken.jpg").unlink()
    before = (out / "one__a.jpg").stat().st_mtime_ns
    run = brushwork("stylize", contents, styles, "-o", out, "--format", "jpg", "--skip-existing",
                    "--weights-dir", weights_dir)
    assert run.returncode == 0 and "nothing to do" in run.stdout
    assert (out / "one__a.jpg").stat().st_mtime_ns == before


def test_sample_images_need_no_files(tmp_path, weights_dir):
    run = brushwork("stylize", "sample:chelsea", "sample:ihc", "-o", tmp_path / "cat.webp",
                    "--content-size", 64, "--weights-dir", weights_dir)
    assert run.returncode == 0, run.stderr
    assert Image.open(tmp_path / "cat.webp").size == (96, 64)


@pytest.mark.parametrize("make_args, code, text", [
    (lambda p, c, s: ["stylize", p / "nope.jpg", s, "-o", p / "o.png"], 2, "nope.jpg: no such file"),
    (lambda p, c, s: ["stylize", c, p / "t.txt", "-o", p / "o.png"], 2, "t.txt: not an image"),
    (lambda p, c, s: ["stylize", c, s, "-o", p / "o.gif2"], 2, "known extension"),
    (lambda p, c, s: ["stylize", c, s, "-o", p / "o.png", "--alpha", "1.5"], 2, "1.5"),
    (lambda p, c, s: ["stylize", c, s, s, "-o", p / "o.png", "--style-weights", "1,x"], 2, "must be numbers"),
    (lambda p, c, s: ["stylize", c, s, "-o", p / "o.png", "--style-weights", "1,2,3"], 2, "3 style weights"),
    (lambda p, c, s: ["stylize", c, s, "-o", p / "o.png", "--model", "nope"], 2, "nope"),
    (lambda p, c, s: ["stylize", p / "empty", s, "-o", p / "out"], 2, "no content images"),
])
def test_bad_input_gives_a_clear_error(tmp_path, pair, weights_dir, make_args, code, text):
    content, style, _ = pair
    (tmp_path / "t.txt").write_text("text")
    (tmp_path / "empty").mkdir()
    run = brushwork(*make_args(tmp_path, content, style), "--weights-dir", weights_dir)
    assert_one_line_error(run, code, text)
    assert not (tmp_path / "o.png").exists()


def test_missing_weights_say_how_to_provide_them(tmp_path, pair):
    content, style, _ = pair
    empty = tmp_path / "weights"
    empty.mkdir()
    # A proxy that refuses connections makes the download fail the same way with or without a network.
    unreachable = {**os.environ, "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    run = brushwork("stylize", content, style, "-o", tmp_path / "o.png", "--method", "adain",
                    "--weights-dir", empty, env=unreachable)
    # One message names every file the model needs (the decoder and its encoder), where each comes from and goes.
    assert_one_line_error(run, 1, "decoder.pth, vgg_normalised.pth (its encoder 'vgg19-normalised')")
    assert "github.com/naoto0804/pytorch-AdaIN" in run.stderr and "--weights-dir" in run.stderr
    assert f"in DIR/adain/" in run.stderr and "weights fetch adain vgg19-normalised" in run.stderr
    assert not (tmp_path / "o.png").exists()


def test_the_default_model_ships_in_the_package(tmp_path, pair):
    """No local folder, an empty cache, no network: the default model paints, from the package."""
    content, style, _ = pair
    unreachable = {**os.environ, "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
                   "BRUSHWORK_CACHE": str(tmp_path / "cache")}
    run = brushwork("stylize", content, style, "-o", tmp_path / "o.png", "--content-size", 64, env=unreachable)
    assert run.returncode == 0, run.stderr
    assert Image.open(tmp_path / "o.png").size == (64, 64)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.pth*"))


def test_weights_commands(weights_dir, tmp_path):
    run = brushwork("weights", "list", "--weights-dir", weights_dir)
    assert run.returncode == 0
    lines = {line.split()[0]: line for line in run.stdout.splitlines()[1:]}
    # A local folder holding a packaged model's files is preferred to the package; without one, the package.
    source = "local" if HAVE_SHARED else "package"
    assert source in lines["microast"] and source in lines["microast-cv-portraits"]
    assert "(default)" in lines["microast-cv-coco-wikiart"]
    assert "missing" in lines["vgg19"]

    run = brushwork("weights", "verify", "microast", "vgg16-hed", "--weights-dir", weights_dir)
    assert run.returncode == 0 and run.stdout.count(": ok ") == 5

    bad = tmp_path / "microast-official"
    bad.mkdir()
    (bad / "decoder_iter_160000.pth.tar").write_bytes(b"wrong")
    run = brushwork("weights", "verify", "microast", "--weights-dir", tmp_path)
    assert_one_line_error(run, 1, "1 weight file(s) missing or damaged")
    assert "DAMAGED" in run.stdout and "decoder_iter_160000.pth.tar is damaged" in run.stderr

    # Named, a model must be complete; unnamed, what was never fetched is listed, not an error.
    empty = {**os.environ, "BRUSHWORK_CACHE": str(tmp_path / "cache")}
    run = brushwork("weights", "verify", "adain", env=empty)
    assert_one_line_error(run, 1, "adain/decoder.pth is missing")
    run = brushwork("weights", "verify", env=empty)
    assert run.returncode == 0, run.stderr
    assert "adain: not fetched yet" in run.stdout and "microast/decoder_iter_160000.pth.tar: ok" in run.stdout

    run = brushwork("weights", "fetch", "microast-cv-portraits", "--weights-dir", weights_dir)
    assert run.returncode == 0 and "microast-cv-portraits: ok" in run.stdout


def test_help_and_version():
    run = brushwork("--help")
    assert run.returncode == 0 and "stylize" in run.stdout and "weights" in run.stdout
    run = brushwork("stylize", "--help")
    assert run.returncode == 0 and "sample:astronaut" in run.stdout
    assert brushwork("--version").stdout.strip().startswith("brushwork, version")


def test_style_weights_are_checked_before_a_folder_run(tmp_path, pair, weights_dir):
    content, style, _ = pair
    styles = tmp_path / "styles"
    styles.mkdir()
    Image.open(style).save(styles / "s.png")
    run = brushwork("stylize", content, styles, "-o", tmp_path / "out", "--style-weights", "1,1",
                    "--weights-dir", weights_dir)
    assert_one_line_error(run, 2, "2 style weights for 1 style")
    assert not (tmp_path / "out").exists()


def test_gatys_from_the_command_line(tmp_path, pair, weights_dir):
    content, style, _ = pair
    out = tmp_path / "gatys.png"
    run = brushwork("stylize", content, style, "-o", out, "--method", "gatys", "--steps", 4, "--content-size", 48,
                    "--loss-net", "vgg16-hed", "--match-color", "--weights-dir", weights_dir)
    assert run.returncode == 0, run.stderr
    assert "gatys 48x48" in run.stderr  # the progress bar, with the losses
    with Image.open(out) as image:
        assert image.size == (48, 48)
    misplaced = brushwork("stylize", content, style, "-o", out, "--steps", 4, "--weights-dir", weights_dir)
    assert_one_line_error(misplaced, 2, "--steps: settings of --method gatys")
    both = brushwork("stylize", "--preserve-color", "--match-color", content, style, "-o", out)
    assert_one_line_error(both, 2, "choose one of --preserve-color and --match-color")


def test_ctrl_c_writes_the_best_gatys_image_so_far(tmp_path, pair, weights_dir):
    import signal
    import threading
    import time

    content, style, _ = pair
    out = tmp_path / "best.png"
    with interruptible_process(
            [sys.executable, "-m", "brushwork", "stylize", content, style, "-o", out, "--method", "gatys", "--steps",
             "100000", "--content-size", "48", "--loss-net", "vgg16-hed", "--weights-dir", weights_dir],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        seen = []
        reader = threading.Thread(target=lambda: seen.extend(iter(lambda: process.stderr.read(1), "")), daemon=True)
        reader.start()
        deadline = time.time() + 120
        while "gatys 48x48" not in "".join(seen) and time.time() < deadline and process.poll() is None:
            time.sleep(0.5)  # until the optimisation shows its progress bar
        time.sleep(3)
        assert process.poll() is None, "".join(seen)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
        reader.join(timeout=10)
    stderr = "".join(seen)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "best image so far" in stderr
    with Image.open(out) as image:
        assert image.size == (48, 48)


def test_adain_with_masks_from_the_command_line(tmp_path, pair, weights_dir):
    content, style, other = pair
    left = tmp_path / "left.png"
    with Image.open(content) as image:
        size = image.size
    mask = Image.new("L", size, 0)
    mask.paste(255, (0, 0, size[0] // 2, size[1]))
    mask.save(left)
    right = tmp_path / "right.png"
    Image.eval(mask, lambda v: 255 - v).save(right)
    out = tmp_path / "masked.jpg"
    run = brushwork("stylize", content, style, other, "-o", out, "--method", "adain", "--model", "adain-vgg16-hed",
                    "--mask", left, "--mask", right, "--weights-dir", weights_dir)
    assert run.returncode == 0, run.stderr
    with Image.open(out) as image:
        assert image.size == size
    one_mask = brushwork("stylize", content, style, other, "-o", out, "--model", "adain-vgg16-hed", "--mask", left,
                         "--weights-dir", weights_dir)
    assert_one_line_error(one_mask, 2, "one mask per style")
    not_adain = brushwork("stylize", content, style, "-o", out, "--mask", left, "--weights-dir", weights_dir)
    assert_one_line_error(not_adain, 2, "masks are supported by the adain method")

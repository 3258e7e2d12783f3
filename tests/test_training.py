"""Training: losses, configuration, data, and tiny real runs on the CPU."""

import csv
import dataclasses
import json
import logging
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import brushwork
from brushwork import data, losses
from brushwork.errors import BrushworkError
from brushwork.train_config import TrainConfig, load_config

# ------------------------------------------------------------------------------------------ losses


def ssc_by_loops(output, target, negatives):
    """The paper's formula written out pair by pair (as the reference implementation loops)."""
    def distance(i, j):
        return sum(((o[i].flatten() - t[j].flatten()) ** 2).mean() for o, t in zip(output, target))
    n = output[0].shape[0]
    return sum(distance(i, i) / sum(distance(i, (i + k) % n) for k in range(1, negatives + 1)) for i in range(n))


@pytest.mark.parametrize("negatives", [1, 2, 3])
def test_contrastive_loss_matches_the_loops(negatives):
    generator = torch.Generator().manual_seed(negatives)
    output = [torch.randn(4, 8, 1, 1, generator=generator) for _ in range(8)]
    target = [torch.randn(4, 8, 1, 1, generator=generator) for _ in range(8)]
    expected = ssc_by_loops(output, target, negatives)
    assert losses.style_signal_contrastive_loss(output, target, negatives) == pytest.approx(float(expected), rel=1e-5)
    if negatives == 3:
        assert losses.style_signal_contrastive_loss(output, target) == pytest.approx(float(expected), rel=1e-5)


def test_contrastive_loss_rewards_matching_signals():
    generator = torch.Generator().manual_seed(0)
    target = [torch.randn(4, 16, generator=generator) for _ in range(3)]
    noisy = [t + 0.1 * torch.randn(4, 16, generator=generator) for t in target]
    shuffled = [t[[1, 2, 3, 0]] for t in target]
    assert losses.style_signal_contrastive_loss(noisy, target) < 0.1
    assert losses.style_signal_contrastive_loss(shuffled, target) > 1
    with pytest.raises(ValueError):
        losses.style_signal_contrastive_loss([t[:1] for t in target], [t[:1] for t in target])
    with pytest.raises(ValueError):
        losses.style_signal_contrastive_loss(target, target, negatives=4)


def test_cosine_distance_never_gives_nan():
    a = torch.randn(2, 5, 3, 3)
    assert losses.cosine_distance(a, a) == pytest.approx(0, abs=1e-6)
    assert losses.cosine_distance(a, -a) == pytest.approx(2, abs=1e-6)
    zeros = torch.zeros(2, 5, 3, 3, requires_grad=True)
    value = losses.cosine_distance(zeros, a)
    value.backward()
    assert math.isfinite(value.item()) and torch.isfinite(zeros.grad).all()
    tiny = torch.full((1, 64, 2, 2), 1e-4, dtype=torch.float16, requires_grad=True)  # squares underflow in fp16
    huge = torch.full((1, 64, 2, 2), 6e4, dtype=torch.float16)  # squares overflow in fp16
    value = losses.cosine_distance(tiny, huge)
    value.backward()
    assert value.item() == pytest.approx(0, abs=1e-3) and torch.isfinite(tiny.grad).all()


def test_total_variation_and_l1_known_values():
    assert losses.total_variation(torch.ones(1, 3, 4, 4)) == 0
    stripes = torch.zeros(1, 1, 2, 4)
    stripes[..., 1::2] = 1  # vertical stripes: every horizontal neighbour differs by 1, vertical ones not at all
    assert losses.total_variation(stripes) == 1
    a, b = {"relu4_1": torch.zeros(1, 2, 2, 2)}, {"relu4_1": torch.full((1, 2, 2, 2), -3.0)}
    assert losses.l1_content_loss(a, b) == 3


# ------------------------------------------------------------------------------------------ configuration


def test_config_file_overrides_and_sweeps(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text('content_dir = "c"\nstyle_dir = "s"\noutput_dir = "runs/x"\nstyle_weight = 6.0\n'
                    '[sweep]\nssc_weight = [3.0, 6.0]\ntv_weight = [0.0, 1e-5]\n')
    runs = load_config(path, {"lr": 2e-4, "batch_size": None})
    assert len(runs) == 4
    name, config = runs[-1]
    assert name == "ssc_weight=6.0,tv_weight=1e-05"
    assert (config.style_weight, config.ssc_weight, config.tv_weight, config.lr, config.batch_size) == (
        6.0, 6.0, 1e-5, 2e-4, 8)
    assert config.output_dir == os.path.join("runs", "x", name)
    (single,) = load_config(None, {"content_dir": "c", "style_dir": "s"})
    assert single[1] == TrainConfig(content_dir="c", style_dir="s")


@pytest.mark.parametrize("settings, message", [
    ({"colour": 1}, "unknown training setting"),
    ({"decoder": "pixelshuffle"}, "decoder must be one of"),
    ({"content_loss": "huber"}, "content_loss must be one of"),
    ({"batch_size": 1}, "needs batch_size >= 2"),
    ({"ssc_negatives": 8}, "ssc_negatives"),
    ({"style_weight": -1.0}, "must not be negative"),
    ({"content_dir": ""}, "give content_dir and style_dir"),
    ({"anchor_weight": 1.0}, "anchor_weight needs init_from"),
    ({"structure_weight": -1.0}, "must not be negative"),
    ({"style_resize": 8}, "style_resize must be at least 16"),
    ({"structure_window": "box5"}, "structure_window must be one of"),
])
def test_config_errors(settings, message):
    with pytest.raises(BrushworkError, match=message):
        load_config(None, {"content_dir": "c", "style_dir": "s", **settings})


# ------------------------------------------------------------------------------------------ data




def test_find_images_is_recursive(folders, tmp_path):
    names = [p.name for p in data.find_images(folders / "content")]
    assert names == ["0.jpg", "1.jpg", "2.jpg", "3.jpg", "broken.jpg"]  # nested found, hidden folder skipped
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(BrushworkError, match="no images"):
        data.find_images(tmp_path)


def test_stream_skips_broken_files_and_never_ends(folders, caplog):
    dataset = data.ContentStylePairs(folders / "content", folders / "style", resize_to=40, crop=32, seed=1)
    with caplog.at_level(logging.WARNING):
        pairs = [pair for pair, _ in zip(dataset, range(30))]
    assert len(pairs) == 30
    assert all(c.shape == s.shape == (3, 32, 32) for c, s in pairs)
    assert sum("broken.jpg" in record.getMessage() for record in caplog.records) == 1  # warned once
    again = [pair for pair, _ in zip(data.ContentStylePairs(folders / "content", folders / "style", resize_to=40,
                                                            crop=32, seed=1), range(3))]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(pairs, again))  # a fixed seed repeats


def test_styles_can_be_resized_apart_from_the_photos(folders):
    """``style_resize``: style crops come from the paintings at their own scale (here the whole width of each)."""
    resized = [data.resized_pixels(data.load_image(path), 32, 32).float().div(255.0)
               for path in data.find_images(folders / "style")]
    assert all(pixels.shape == (3, 38, 32) for pixels in resized)  # 60x72 paintings at 32 px
    windows = [pixels[:, top:top + 32] for pixels in resized for top in range(pixels.shape[1] - 31)]
    dataset = data.ContentStylePairs(folders / "content", folders / "style", resize_to=64, crop=32, seed=2,
                                     style_resize_to=32)
    for content, style in (pair for pair, _ in zip(dataset, range(12))):
        assert any(torch.equal(style, window) for window in windows)
        assert content.shape == (3, 32, 32)
    plain = data.ContentStylePairs(folders / "content", folders / "style", resize_to=64, crop=32, seed=2)
    assert not all(any(torch.equal(style, window) for window in windows)
                   for _, style in (pair for pair, _ in zip(plain, range(12))))


def test_stream_of_only_broken_files_stops_with_an_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"nope")
    stream = data.ImageStream(data.find_images(tmp_path), 32, 32, random.Random(0))
    with pytest.raises(BrushworkError, match="every image file failed"):
        next(iter(stream))


# ------------------------------------------------------------------------------------------ training


def test_losses_fall_on_a_fixed_batch(weights_dir):
    """The losses and their gradients are wired up: a few Adam steps on one batch lower the total."""
    from brushwork.training import MicroASTTraining
    from brushwork.vgg import load_loss_network

    torch.manual_seed(0)
    config = TrainConfig(content_dir="c", style_dir="s", batch_size=2, tv_weight=1e-3, perceptual_weight=1.0)
    network = load_loss_network("vgg16-hed", MicroASTTraining.loss_layers(config), weights_dir=weights_dir)
    module = MicroASTTraining(dataclasses.asdict(config), network)
    optimizer = torch.optim.Adam(module.model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    content, style = torch.rand(2, 3, 32, 32, generator=generator), torch.rand(2, 3, 32, 32, generator=generator)
    totals = []
    for _ in range(10):
        _, terms = module.compute_losses(content, style)
        assert set(terms) == {"content", "style", "ssc", "tv", "perceptual"}
        total = sum(module.loss_weights()[name] * term for name, term in terms.items())
        assert torch.isfinite(total)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    assert sum(totals[-3:]) / 3 < 0.9 * totals[0], totals
    assert sum(b < a for a, b in zip(totals, totals[1:])) >= 7, totals


def tiny_config(folders, tmp_path, weights_dir, **settings):
    values = dict(content_dir=str(folders / "content"), style_dir=str(folders / "style"),
                  output_dir=str(tmp_path / "run"), batch_size=2, resize=40, crop=32, max_steps=6, workers=0,
                  log_every=2, sample_every=3, checkpoint_every=3, loss_net="vgg16-hed", lr=1e-3, grad_clip=5.0,
                  weights_dir=[str(weights_dir)])
    values.update(settings)
    return TrainConfig(**values)


def test_train_checkpoint_resume_and_use(folders, tmp_path, weights_dir):
    from brushwork.training import MicroASTTraining, average_checkpoints, train

    config = tiny_config(folders, tmp_path, weights_dir)
    weights = train(config)
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "last.ckpt", "step_0000003.ckpt", "step_0000006.ckpt"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "step_0000000.png", "step_0000003.png", "step_0000006.png"]
    with Image.open(run / "samples" / "step_0000006.png") as grid:
        assert grid.size == (3 * 32, 4 * 32)  # content | style | output, one row per sample pair
    with open(run / "csv" / "version_0" / "metrics.csv") as file:
        rows = [row for row in csv.DictReader(file) if row.get("loss/total")]
    assert len(rows) >= 2 and all(math.isfinite(float(row["loss/total"])) for row in rows)
    assert {"loss/content", "loss/style", "loss/ssc", "lr"} <= set(rows[0])
    assert list((run / "tensorboard" / "version_0").glob("events.out.tfevents.*"))

    model = brushwork.load_model(weights, device="cpu")
    image = brushwork.stylize(Image.new("RGB", (50, 40), (200, 30, 30)), Image.new("RGB", (40, 40), "blue"),
                              model=model)
    assert image.size == (50, 40)

    resumed = dataclasses.replace(config, max_steps=9)
    train(resumed, resume="last")
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 9
    assert (run / "checkpoints" / "step_0000009.ckpt").is_file()
    assert (run / "csv" / "version_0" / "metrics.csv").is_file() and (run / "csv" / "version_1").is_dir()
    with pytest.raises(BrushworkError, match="no checkpoint to resume"):
        train(resumed, resume=str(tmp_path / "missing.ckpt"))

    # Checkpoint averaging: the exported weights are the mean of the checkpoints' trained weights.
    paths = [run / "checkpoints" / f"step_000000{step}.ckpt" for step in (3, 6, 9)]
    averaged = average_checkpoints(paths, tmp_path / "averaged")
    states = [{k[len("model."):]: v for k, v in torch.load(p, map_location="cpu", weights_only=False)[
        "state_dict"].items() if k.startswith("model.")} for p in paths]
    reread = MicroASTTraining(dataclasses.asdict(config))
    reread.load_initial(str(averaged), [str(weights_dir)])
    exported = reread.model.state_dict()
    assert exported.keys() == states[0].keys()
    moved = 0
    for key, value in exported.items():
        mean = sum(state[key].float() for state in states) / 3
        torch.testing.assert_close(value, mean, rtol=1e-3, atol=1e-4)  # float16 files
        moved += int(not torch.equal(value.half(), states[-1][key].half()))
    assert moved > 0  # the average is not the last checkpoint
    assert json.loads((averaged / "training.json").read_text())["averaged_steps"] == [3, 6, 9]
    assert brushwork.stylize(Image.new("RGB", (50, 40), "red"), Image.new("RGB", (40, 40), "blue"),
                             model=brushwork.load_model(averaged, device="cpu")).size == (50, 40)
    script = subprocess.run([sys.executable, "scripts/average_checkpoints.py", str(paths[0]),
                             str(run / "csv" / "version_0" / "metrics.csv"), "-o", str(tmp_path / "bad")],
                            capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert script.returncode == 1 and not (tmp_path / "bad").exists()
    assert script.stderr.count("\n") == 1 and "metrics.csv: not a brushwork training checkpoint" in script.stderr


def test_fine_tuning_starts_from_a_registry_model(folders, tmp_path, weights_dir, caplog):
    from brushwork.training import MicroASTTraining

    official = brushwork.load_model("microast", weights_dir=weights_dir, device="cpu", fast=False)
    config = tiny_config(folders, tmp_path, weights_dir, decoder="tuned")
    module = MicroASTTraining(dataclasses.asdict(config))
    with caplog.at_level(logging.WARNING):
        module.load_initial("microast", [weights_dir])
    assert "head starts from scratch" in caplog.text
    assert torch.equal(module.model.content_encoder.enc1[0].conv_layer.weight,
                       official.content_encoder.enc1[0].conv_layer.weight)
    assert torch.equal(module.model.decoder.dec1.conv1.conv_layer.weight, official.decoder.dec1.conv1.conv_layer.weight)

    same = MicroASTTraining(dataclasses.asdict(tiny_config(folders, tmp_path, weights_dir)))
    same.load_initial("microast", [weights_dir])
    content = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        assert torch.equal(same.model(content, content), official(content, content))


def test_structure_loss_is_one_minus_the_luminance_ssim():
    from skimage.metrics import structural_similarity

    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 48, 48, generator=generator)
    assert losses.structure_loss(image, image).item() == pytest.approx(0, abs=1e-6)
    blurred = torch.nn.functional.avg_pool2d(image, 3, stride=1, padding=1)
    luma = [(t[0] * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0).numpy() for t in (image, blurred)]
    expected = structural_similarity(luma[0], luma[1], data_range=1.0, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False)
    assert losses.structure_loss(blurred, image).item() == pytest.approx(1 - expected, abs=0.02)
    assert losses.structure_loss(torch.rand(1, 3, 48, 48, generator=generator), image) > 0.8


def test_the_uniform_structure_window_is_the_evaluations_ssim():
    from brushwork import metrics

    photo = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    blurred = torch.nn.functional.avg_pool2d(photo, 3, stride=1, padding=1)
    # both 8-bit, as the evaluation reads images
    photo, blurred = (torch.round(t * 255) / 255 for t in (photo, blurred))
    measured = metrics.ssim(photo[0], blurred[0])
    assert 1 - losses.structure_loss(blurred, photo, "uniform7").item() == pytest.approx(measured, abs=0.01)
    assert abs(1 - losses.structure_loss(blurred, photo).item() - measured) > 0.02  # the Gaussian window is not


def test_the_anchor_holds_a_fine_tune_to_where_it_started(folders, tmp_path, weights_dir):
    """The anchor is the init_from network, frozen: its term is 0 before the first step and the structure term
    moves the network away from it; a resumed run loads the same anchor again."""
    from brushwork.training import MicroASTTraining
    from brushwork.vgg import load_loss_network

    config = tiny_config(folders, tmp_path, weights_dir, init_from="microast", content_weight=0, style_weight=0,
                         ssc_weight=0, anchor_weight=1, structure_weight=1)
    network = load_loss_network("vgg16-hed", MicroASTTraining.loss_layers(config), weights_dir=weights_dir)
    module = MicroASTTraining(dataclasses.asdict(config), network)
    module.load_initial("microast", [weights_dir])
    generator = torch.Generator().manual_seed(0)
    content, style = torch.rand(2, 3, 32, 32, generator=generator), torch.rand(2, 3, 32, 32, generator=generator)
    _, terms = module.compute_losses(content, style)
    assert set(terms) == {"anchor", "structure"}
    assert terms["anchor"].item() == pytest.approx(0, abs=1e-6)
    optimizer = torch.optim.Adam(module.model.parameters(), lr=1e-3)
    for _ in range(3):
        _, terms = module.compute_losses(content, style)
        optimizer.zero_grad()
        (terms["anchor"] + terms["structure"]).backward()
        optimizer.step()
    assert module.compute_losses(content, style)[1]["anchor"].item() > 1e-4
    assert not any(p.requires_grad for p in module.anchor().parameters())
    again = MicroASTTraining(dataclasses.asdict(config), network)  # a resumed run: no load_initial
    assert torch.equal(again.anchor().decoder.dec1.conv1.conv_layer.weight,
                       module.anchor().decoder.dec1.conv1.conv_layer.weight)
    tuned = MicroASTTraining(dataclasses.asdict(dataclasses.replace(config, decoder="tuned")), network)
    with pytest.raises(BrushworkError, match="cannot be the anchor"):
        tuned.anchor()


def test_wandb_offline_and_the_command_line(folders, tmp_path, weights_dir):
    env = dict(os.environ, WANDB_SILENT="true", WANDB_DIR=str(tmp_path), BRUSHWORK_CACHE=str(tmp_path / "cache"))
    command = [sys.executable, "-m", "brushwork", "train", "microast", "--content-dir", folders / "content",
               "--style-dir", folders / "style", "--output-dir", tmp_path / "run", "--batch-size", "2",
               "--resize", "40", "--crop", "32", "--max-steps", "2", "--workers", "1", "--loss-net", "vgg16-hed",
               "--wandb", "--wandb-offline", "--weights-dir", weights_dir]
    run = subprocess.run([str(part) for part in command], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "wrote" in run.stdout and (tmp_path / "run" / "weights" / "decoder.pth").is_file()
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))

    bad = subprocess.run([sys.executable, "-m", "brushwork", "train", "microast", "--content-dir", "nowhere",
                          "--style-dir", "nowhere", "--output-dir", str(tmp_path / "bad"), "--weights-dir",
                          str(weights_dir), "--loss-net", "vgg16-hed"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "nowhere: not a folder of images" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("name, runs", [("microast-paper.toml", 1), ("seed000-decoder-sweep.toml", 36),
                                        ("faces-finetune.toml", 1)])
def test_example_configs_load(name, runs):
    path = Path(__file__).parents[1] / "configs" / name
    loaded = load_config(path, {"content_dir": "c", "style_dir": "s"})
    assert len(loaded) == runs
    assert len({config.output_dir for _, config in loaded}) == runs


def test_mixed_precision_losses_are_finite(weights_dir):
    from brushwork.training import MicroASTTraining
    from brushwork.vgg import load_loss_network

    config = TrainConfig(content_dir="c", style_dir="s", batch_size=2, content_loss="cosine")
    network = load_loss_network("vgg16-hed", MicroASTTraining.loss_layers(config), weights_dir=weights_dir)
    module = MicroASTTraining(dataclasses.asdict(config), network)
    content, style = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, terms = module.compute_losses(content, style)
    total = sum(module.loss_weights()[name] * term.float() for name, term in terms.items())
    total.backward()
    assert torch.isfinite(total)
    assert all(torch.isfinite(p.grad).all() for p in module.model.parameters() if p.grad is not None)

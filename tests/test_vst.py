"""Variational style transfer: its losses, the latent Gaussian, the shipped model's samples and interpolation,
training, API and command line."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import brushwork
from brushwork import losses
from brushwork.errors import BrushworkError
from brushwork.images import as_image, load_image, resize, to_tensor
from brushwork.methods import vst
from brushwork.metrics import Metrics
from brushwork.train_config import load_config

# ------------------------------------------------------------------------------------------ losses


def test_kl_matches_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(3, 5, generator=generator), torch.randn(3, 5, generator=generator)
    posterior = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    prior = torch.distributions.Normal(torch.zeros(3, 5), torch.ones(3, 5))
    expected = torch.distributions.kl_divergence(posterior, prior).sum(dim=1).mean()
    assert float(losses.gaussian_kl(mu, logvar)) == pytest.approx(float(expected), rel=1e-5)
    assert float(losses.gaussian_kl(torch.zeros(2, 4), torch.zeros(2, 4))) == 0.0


def _features(seed: int, n: int = 4):
    generator = torch.Generator().manual_seed(seed)
    return {layer: torch.rand(n, 8, 6, 6, generator=generator) for layer in vst.STYLE_LAYERS}


def test_hinge_is_zero_for_identical_pairs_and_positive_for_pairs_apart():
    style = _features(1)
    style_grams = {layer: losses.gram_matrix(value) for layer, value in style.items()}
    same = {layer: value[0::2].repeat_interleave(2, dim=0) for layer, value in _features(2).items()}
    assert float(losses.disentanglement_hinge(same, style_grams, vst.STYLE_LAYERS)) == 0.0
    # the second of each pair equals the style image: the pair is as far apart as the first is from the style
    apart = {layer: torch.stack([_features(2)[layer][0], style[layer][0], _features(2)[layer][2], style[layer][2]])
             for layer in vst.STYLE_LAYERS}
    assert float(losses.disentanglement_hinge(apart, style_grams, vst.STYLE_LAYERS, margin=0.1)) > 0.0
    with pytest.raises(ValueError, match="pairs"):
        losses.disentanglement_hinge({k: v[:3] for k, v in same.items()}, style_grams, vst.STYLE_LAYERS)


def test_diversity_hinge_asks_each_pair_of_samples_to_be_a_margin_apart():
    """Per image: margin - distance when closer than the margin, nothing when farther; averaged over the batch."""
    a = {layer: torch.rand(2, 4, 5, 5, generator=torch.Generator().manual_seed(0)) for layer in losses.PERCEPTUAL_LAYERS}
    b = {layer: value.clone() for layer, value in a.items()}
    for layer in b:  # the second image of b far from a's; the first identical
        b[layer][1] = torch.rand(4, 5, 5, generator=torch.Generator().manual_seed(1))
    distances = losses.perceptual_distances(a, b)
    assert float(distances[0]) == 0.0 and float(distances[1]) > 0.05
    assert float(losses.perceptual_distance(a, b)) == pytest.approx(float(distances.mean()))
    margin = float(distances[1]) / 2  # the first pair is inside the margin, the second beyond it
    assert float(losses.diversity_hinge(a, b, margin)) == pytest.approx(margin / 2)
    assert float(losses.diversity_hinge(a, b, 2 * float(distances[1]))) == pytest.approx(
        (2 * float(distances[1]) * 2 - float(distances[1])) / 2)


def test_blending_gaussians_mixes_means_and_deviations():
    a = vst.StyleCode(torch.zeros(1, 3), torch.zeros(1, 3))
    b = vst.StyleCode(torch.ones(1, 3), torch.log(torch.full((1, 3), 9.0)))
    mixed = vst.StyleCode.blend([a, b], [0.5, 0.5])
    assert torch.allclose(mixed.mu, torch.full((1, 3), 0.5))
    assert torch.allclose(mixed.std, torch.full((1, 3), 2.0))


# ------------------------------------------------------------------------------------------ the shipped model


@pytest.fixture(scope="module")
def stylizer(weights_dir):
    return brushwork.Stylizer("vst", device="cpu", content_size=256, style_size=256, weights_dir=[weights_dir])


@pytest.fixture(scope="module")
def metrics(weights_dir):
    return Metrics("vgg16-hed", weights_dir=weights_dir)


@pytest.fixture(scope="module")
def style_images(reference_pair):
    return reference_pair[1], reference_pair[2]  # Mondrian, brushstrokes


def _tensor(image) -> torch.Tensor:
    return to_tensor(image)


def style_distance(metrics, image: torch.Tensor, style: torch.Tensor) -> float:
    """The method's style loss: relative Gram loss over relu1_1..relu4_1."""
    targets = {layer: losses.gram_matrix(value) for layer, value in metrics.features(style).items()
               if layer in vst.STYLE_LAYERS}
    return float(losses.relative_gram_loss(metrics.features(image), targets, vst.STYLE_LAYERS))


def test_mean_code_is_deterministic_and_seeds_repeat(stylizer, style_images):
    style = style_images[0]
    assert torch.equal(_tensor(stylizer("sample:astronaut", style)), _tensor(stylizer("sample:astronaut", style)))
    first = [_tensor(i) for i in stylizer.samples("sample:astronaut", style, 2, seed=5)]
    again = [_tensor(i) for i in stylizer.samples("sample:astronaut", style, 3, seed=5)]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])  # sample k does not depend on N
    assert not torch.equal(first[0], first[1])


def test_samples_differ_yet_stay_close_to_the_style(stylizer, style_images, metrics):
    """What the method is for: several clearly different stylisations of one pair, each as close to the style
    (its style loss) as the deterministic one, give or take, and far closer than the content is."""
    style_path = style_images[0]
    content = to_tensor(resize(as_image("sample:astronaut"), 256))
    style = to_tensor(resize(load_image(style_path), 256))
    mean_output = _tensor(stylizer("sample:astronaut", style_path))
    outputs = [_tensor(i) for i in stylizer.samples("sample:astronaut", style_path, 4, seed=0)]
    distances = [float(losses.perceptual_distance(metrics.features(a), metrics.features(b)))
                 for i, a in enumerate(outputs) for b in outputs[i + 1:]]
    assert min(distances) > 0.01  # identical images: 0; the content against the mean-code painting: about 0.8
    reference = style_distance(metrics, mean_output, style)
    untouched = style_distance(metrics, content, style)
    for output in outputs:
        distance = style_distance(metrics, output, style)
        assert distance < 1.5 * reference and distance < 0.7 * untouched


def test_samples_are_drawn_at_the_models_temperature(stylizer, style_images, metrics):
    """The shipped model samples at the temperature its registry entry and its training.json give (below 1); a
    draw at temperature T is T times the unit draw, and a lower T keeps every sample nearer the mean code."""
    from brushwork import weights as registry

    record = json.loads((Path(vst.__file__).parent.parent / "models" / "vst" / "training.json").read_text())
    temperature = stylizer.model.temperature
    assert temperature == registry.get("vst").sample_temperature == record["sample_temperature"] < 1.0
    unit = stylizer.model.noise(3, 5, temperature=1.0)
    assert torch.allclose(stylizer.model.noise(3, 5), temperature * unit)
    assert torch.allclose(stylizer.model.noise(3, 5, temperature=0.5), 0.5 * unit)
    style = style_images[0]
    mean = metrics.features(_tensor(stylizer("sample:astronaut", style)))

    def distances(t: float) -> list[float]:
        return [float(losses.perceptual_distance(metrics.features(_tensor(image)), mean))
                for image in stylizer.samples("sample:astronaut", style, 2, seed=3, temperature=t)]

    near, far = distances(0.3), distances(1.0)
    assert all(0 < a < 0.6 * b for a, b in zip(near, far)), (near, far)
    for bad in (0, -1.0, float("nan"), float("inf"), 10.5, "0.5", True):
        with pytest.raises(BrushworkError, match="temperature must be a positive number up to 10"):
            stylizer.samples("sample:astronaut", style, 1, temperature=bad)
    assert stylizer.model.noise(1, 5, temperature=np.float32(0.5)).equal(stylizer.model.noise(1, 5, temperature=0.5))
    for count, seed, text in ((2.5, 0, "number of samples"), (True, 0, "number of samples"), (2, 1.5, "seed"),
                              (2, "1", "seed"), (2, -1, "seed"), (2, 2 ** 70, "seed")):
        with pytest.raises(BrushworkError, match=text):
            stylizer.samples("sample:astronaut", style, count, seed=seed)


def test_a_weights_folder_sets_its_sampling_temperature(tmp_path, weights_dir):
    """A folder's training.json may set ``sample_temperature``; without it samples are drawn at 1 (the paper's);
    a bad value is a clear error naming the file."""
    packaged = Path(vst.__file__).parent.parent / "models" / "vst"
    record = json.loads((packaged / "training.json").read_text())
    folder = tmp_path / "vst"
    folder.mkdir()
    (folder / "vst.pth").symlink_to(packaged / "vst.pth")
    for value, expected in ((0.5, 0.5), (None, 1.0)):
        changed = {**record, "sample_temperature": value} if value is not None else {
            key: item for key, item in record.items() if key != "sample_temperature"}
        (folder / "training.json").write_text(json.dumps(changed))
        assert vst.load({"vst": folder / "vst.pth"}, "vgg16-hed-reflect", [weights_dir]).temperature == expected
    (folder / "training.json").write_text(json.dumps({**record, "sample_temperature": 0.4}))
    assert brushwork.load_model(str(folder), device="cpu", weights_dir=[weights_dir]).temperature == 0.4
    for bad in ("warm", 1e300):  # loaded again: the cache knows training.json changed
        (folder / "training.json").write_text(json.dumps({**record, "sample_temperature": bad}))
        with pytest.raises(BrushworkError, match="training.json: the sampling temperature must be a positive number"):
            brushwork.load_model(str(folder), device="cpu", weights_dir=[weights_dir])
    for bad in (0, 1.5, True, 10 ** 9):
        (folder / "training.json").write_text(json.dumps({**record, "latent_dim": bad}))
        with pytest.raises(BrushworkError, match="latent_dim must be a whole number from 1 to"):
            brushwork.load_model(str(folder), device="cpu", weights_dir=[weights_dir])
    (folder / "training.json").write_text("[1, 2]")
    with pytest.raises(BrushworkError, match="training.json: not a JSON object"):
        brushwork.load_model(str(folder), device="cpu", weights_dir=[weights_dir])
    with pytest.raises(BrushworkError, match="training.json: not a JSON object"):
        vst.settings(folder)


def test_interpolation_moves_monotonically(stylizer, style_images, metrics):
    """As the weight moves from style A to style B, the style loss to A rises and that to B falls, step by step."""
    a_path, b_path = style_images
    a, b = (to_tensor(resize(load_image(p), 256)) for p in (a_path, b_path))
    to_a, to_b = [], []
    for weight in (0.0, 0.25, 0.5, 0.75, 1.0):
        mixer = brushwork.Stylizer(stylizer.model, style_weights=[1 - weight, weight], content_size=256,
                                   style_size=256)
        output = _tensor(mixer("sample:astronaut", [a_path, b_path]))
        to_a.append(style_distance(metrics, output, a))
        to_b.append(style_distance(metrics, output, b))
    assert all(x < y for x, y in zip(to_a, to_a[1:])), to_a
    assert all(x > y for x, y in zip(to_b, to_b[1:])), to_b


def test_sampling_is_refused_where_it_does_not_apply(stylizer, weights_dir):
    with pytest.raises(BrushworkError, match="vst method"):
        brushwork.Stylizer(method="microast", device="cpu", weights_dir=weights_dir).samples(
            "sample:astronaut", "sample:chelsea", 2)
    with pytest.raises(BrushworkError, match="at least 1"):
        stylizer.samples("sample:astronaut", "sample:chelsea", 0)


# ------------------------------------------------------------------------------------------ training


def test_losses_fall_on_a_fixed_batch(weights_dir):
    """Every term is wired to the trained parts: Adam steps on one batch (the same draws of the code's noise
    each time) lower the total, and the KL term moves the codes towards N(0, I)."""
    from brushwork.training import VSTTraining
    from brushwork.train_config import TrainConfig
    from brushwork.vgg import load_loss_network
    import dataclasses

    config = TrainConfig(method="vst", content_dir="c", style_dir="s", batch_size=4, hinge_weight=1.0,
                         kl_weight=0.01, style_weight=3.0, tv_weight=0.1)
    network = load_loss_network("vgg16-hed", VSTTraining.loss_layers(config), weights_dir=weights_dir)
    module = VSTTraining(dataclasses.asdict(config), network)
    module.load_decoder("adain-vgg16-hed", [weights_dir])
    optimizer = torch.optim.Adam(module.model.parameters(), lr=3e-4)
    generator = torch.Generator().manual_seed(0)
    content, style = torch.rand(4, 3, 32, 32, generator=generator), torch.rand(4, 3, 32, 32, generator=generator)
    totals = []
    for _ in range(12):
        torch.manual_seed(0)
        _, terms = module.compute_losses(content, style)
        assert set(terms) == {"content", "style", "hinge", "kl", "tv"}
        total = sum(module.loss_weights()[name] * term for name, term in terms.items())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    assert sum(totals[-3:]) / 3 < 0.8 * totals[0], totals


@pytest.mark.parametrize("style_loss", ["gram", "mean_std"])
def test_the_style_term_is_the_chosen_style_loss(style_loss, weights_dir):
    """``style_loss`` picks the style term: the paper's relative Gram loss (default) or AdaIN's channel mean/std
    loss (the one ``brushwork eval`` reports), each computed on the output against its own painting."""
    from brushwork.methods import vst
    from brushwork.training import VSTTraining
    from brushwork.train_config import TrainConfig
    from brushwork.vgg import load_loss_network
    import dataclasses

    config = TrainConfig(method="vst", content_dir="c", style_dir="s", batch_size=4, style_loss=style_loss,
                         hinge_weight=1.0, kl_weight=0.01, style_weight=3.0)
    network = load_loss_network("vgg16-hed", VSTTraining.loss_layers(config), weights_dir=weights_dir)
    module = VSTTraining(dataclasses.asdict(config), network)
    generator = torch.Generator().manual_seed(0)
    content, style = torch.rand(4, 3, 32, 32, generator=generator), torch.rand(4, 3, 32, 32, generator=generator)
    with torch.no_grad():
        output, terms = module.compute_losses(content, style)
        output_features, style_features = network(output), network(style[0::2].repeat_interleave(2, dim=0))
    grams = {layer: losses.gram_matrix(style_features[layer]) for layer in vst.STYLE_LAYERS}
    expected = {"gram": losses.relative_gram_loss(output_features, grams, vst.STYLE_LAYERS),
                "mean_std": losses.style_loss(output_features, style_features, vst.STYLE_LAYERS)}
    assert float(terms["style"]) == pytest.approx(float(expected[style_loss]), rel=1e-4)
    other = "gram" if style_loss == "mean_std" else "mean_std"
    assert float(terms["style"]) != pytest.approx(float(expected[other]), rel=0.1)


def test_the_diversity_term_is_the_hinge_between_two_samples_of_each_pair(weights_dir):
    """``diversity_weight``: each pair's first item is painted once more from a second draw of its code, and the
    term is the diversity hinge between the two paintings (recomputed by hand from the same draws); it is only
    a setting of vst."""
    from brushwork.training import VSTTraining
    from brushwork.train_config import TrainConfig
    from brushwork.vgg import load_loss_network
    import dataclasses

    config = TrainConfig(method="vst", content_dir="c", style_dir="s", batch_size=4, kl_weight=0.01,
                         style_weight=3.0, diversity_weight=1.0, diversity_margin=0.5)
    network = load_loss_network("vgg16-hed", VSTTraining.loss_layers(config), weights_dir=weights_dir)
    module = VSTTraining(dataclasses.asdict(config), network)
    module.load_initial("vst", [weights_dir])  # the shipped network: its paintings depend on the code
    generator = torch.Generator().manual_seed(0)
    content, style = torch.rand(4, 3, 32, 32, generator=generator), torch.rand(4, 3, 32, 32, generator=generator)
    with torch.no_grad():
        torch.manual_seed(3)
        output, terms = module.compute_losses(content, style)
        torch.manual_seed(3)
        mu, logvar = module.model.style_encoder(network(style[0::2].repeat_interleave(2, dim=0)))
        std = torch.exp(0.5 * logvar)
        eps = torch.randn(2, mu.shape[1]).repeat_interleave(2, dim=0)
        other_eps = torch.randn(2, mu.shape[1])
        features = network(content)[vst.ENCODER_LAYER]
        first = module.model.paint(features[0::2], mu[0::2] + std[0::2] * eps[0::2])
        other = module.model.paint(features[0::2], mu[0::2] + std[0::2] * other_eps)
    assert torch.allclose(first, output[0::2], atol=1e-5)
    expected = losses.diversity_hinge(network(first), network(other), 0.5)
    assert float(terms["diversity"]) == pytest.approx(float(expected), rel=1e-4)
    assert 0.0 < float(terms["diversity"]) < 0.5  # the two samples differ, but less than the margin
    with pytest.raises(BrushworkError, match="diversity_weight are settings of vst"):
        TrainConfig(method="adain", content_dir="c", style_dir="s", diversity_weight=1.0).validate()
    with pytest.raises(BrushworkError, match="diversity_margin must be positive"):
        TrainConfig(method="vst", content_dir="c", style_dir="s", diversity_margin=0.0).validate()


def test_training_runs_exports_and_loads(folders, tmp_path, weights_dir):
    """A tiny CPU run from the AdaIN decoder: every loss term is logged, the export loads and samples."""
    (_, config), = load_config(None, dict(content_dir=str(folders / "content"), style_dir=str(folders / "style"),
                                          crop=32, resize=40, batch_size=4, max_steps=8, workers=0,
                                          sample_every=0, checkpoint_every=8, log_every=4,
                                          init_decoder="adain-vgg16-hed", latent_dim=2,  # 4 styles frame 2 axes
                                          loss_net="vgg16-hed-reflect", structure_weight=1.0,
                                          output_dir=str(tmp_path / "run"),
                                          weights_dir=[str(weights_dir)]), "vst")
    from brushwork.training import train

    folder = train(config)
    record = json.loads((folder / "training.json").read_text())
    assert record["method"] == "vst" and record["encoder"] == "vgg16-hed-reflect" and record["latent_dim"] == 2
    rows = [r for r in csv.DictReader(open(next((tmp_path / "run" / "csv").rglob("metrics.csv")))) if r.get("loss/total")]
    assert {"loss/content", "loss/style", "loss/hinge", "loss/kl", "loss/structure"} <= set(rows[0])
    assert all(float(r["loss/total"]) > 0 for r in rows)
    model = brushwork.load_model(str(folder), device="cpu")
    assert brushwork.api.method_of(model) == "vst" and model.encoder.features[0].padding_mode == "reflect"
    images = brushwork.Stylizer(model, content_size=40).samples("sample:astronaut", "sample:chelsea", 2, seed=1)
    assert images[0].size == (40, 40)


def test_config_errors(tmp_path):
    with pytest.raises(BrushworkError, match="even"):
        load_config(None, {"content_dir": str(tmp_path), "style_dir": str(tmp_path), "batch_size": 5}, "vst")
    with pytest.raises(BrushworkError, match="settings of vst"):
        load_config(None, {"content_dir": str(tmp_path), "style_dir": str(tmp_path), "kl_weight": 1.0}, "adain")


# ------------------------------------------------------------------------------------------ command line


def test_command_line_samples_and_interpolation(tmp_path, style_images, weights_dir):
    out = tmp_path / "painted.png"
    command = [sys.executable, "-m", "brushwork", "stylize", "sample:coffee", str(style_images[0]), "--method", "vst",
               "--content-size", "64", "-o", str(out)]
    run = subprocess.run(command + ["--samples", "3", "--seed", "7"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    images = [to_tensor(load_image(tmp_path / f"painted_{k}.png")) for k in (1, 2, 3)]
    assert not torch.equal(images[0], images[1]) and not torch.equal(images[1], images[2])
    run = subprocess.run(command[:5] + [str(style_images[1]), "--style-weights", "0.3,0.7"] + command[5:],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr and out.exists()
    run = subprocess.run([sys.executable, "-m", "brushwork", "stylize", "sample:coffee", "sample:chelsea",
                          "--samples", "2", "--weights-dir", str(weights_dir), "-o", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "--samples" in run.stderr and "Traceback" not in run.stderr
    cool = tmp_path / "cool.png"
    run = subprocess.run(command[:-1] + [str(cool), "--samples", "1", "--seed", "7", "--temperature", "0.01"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    out.unlink()
    run = subprocess.run(command, capture_output=True, text=True)  # the mean code
    mean, near, sampled = (to_tensor(load_image(p)) for p in (out, tmp_path / "cool_1.png", tmp_path / "painted_1.png"))
    assert (near - mean).abs().mean() < 0.2 * (sampled - mean).abs().mean()  # T -> 0: the mean code
    for extra, text in ((["--temperature", "0"], "0<x<=10"), (["--temperature", "0.5"], "--temperature: a setting"),
                        (["--samples", "2", "--temperature", "nan"], "not a finite number")):
        run = subprocess.run(command + extra, capture_output=True, text=True)
        assert run.returncode != 0 and text in run.stderr and "Traceback" not in run.stderr, run.stderr
    # another method: refused before its model is looked for (an empty weights folder: no missing-weights error)
    run = subprocess.run(command[:6] + ["--method", "adain", "--weights-dir", str(tmp_path), "--temperature", "0.5",
                                        "--samples", "2", "-o", str(tmp_path / "a.png")], capture_output=True, text=True)
    assert run.returncode == 2 and "--samples: a setting of --method vst" in run.stderr, run.stderr

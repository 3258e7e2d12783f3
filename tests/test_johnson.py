"""Johnson et al.'s per-style networks: architecture, the shipped networks, training, API and command line."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

import brushwork
from brushwork import losses, weights as registry
from brushwork.errors import BrushworkError
from brushwork.images import as_image, load_image, resize, to_tensor
from brushwork.methods import johnson
from brushwork.vgg import load_loss_network
from brushwork.train_config import load_config

SHIPPED = ("johnson-la-muse", "johnson-contrast-of-forms", "johnson-brushstrokes")


def test_the_network_is_the_papers():
    network = johnson.TransformNet()
    down = [m for m in network.down.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in down] == [
        (3, 32, 9, 1), (32, 64, 3, 2), (64, 128, 3, 2)]
    assert len(network.residual) == 5 and all(isinstance(b, johnson.ResidualBlock) for b in network.residual)
    up = [m for m in network.up.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in up] == [
        (128, 64, 3, 1), (64, 32, 3, 1), (32, 3, 9, 1)]
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in network.modules())  # resize-convolutions
    norms = [m for m in network.modules() if isinstance(m, (nn.InstanceNorm2d, nn.BatchNorm2d))]
    assert len(norms) == 3 + 10 + 2 and all(isinstance(m, nn.InstanceNorm2d) and m.affine for m in norms)
    assert sum(p.numel() for p in network.parameters()) == pytest.approx(1.68e6, rel=0.01)


def test_any_size_comes_back_the_same_size():
    model = johnson.Johnson().eval().requires_grad_(False)
    for height, width in ((37, 50), (8, 9), (64, 64)):
        output = model.stylize(torch.rand(1, 3, height, width), [])
        assert output.shape == (1, 3, height, width)
        assert 0.0 <= float(output.min()) and float(output.max()) <= 1.0


@pytest.fixture(scope="module")
def loss_network(weights_dir):
    return load_loss_network("vgg16-hed", johnson.STYLE_LAYERS, weights_dir=weights_dir)


def style_distance(network, image: torch.Tensor, style: torch.Tensor) -> float:
    """The networks' own style loss: relative Gram loss over relu1_2, relu2_2, relu3_3, relu4_3."""
    with torch.no_grad():
        targets = {layer: losses.gram_matrix(value) for layer, value in network(style).items()}
        return float(losses.relative_gram_loss(network(image), targets, johnson.STYLE_LAYERS))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_networks_paint_their_style(name, shared, loss_network):
    """Each network moves a photo it never saw towards its style (its style loss falls well below the photo's
    own, and below that of the photo painted by another network) and keeps the photo's structure (SSIM)."""
    from brushwork.metrics import ssim

    entry = registry.get(name)
    style = to_tensor(resize(load_image(shared / "data" / "eval" / "style" / entry.style), 256))
    content = to_tensor(resize(as_image("sample:astronaut"), 256))
    output = to_tensor(brushwork.stylize("sample:astronaut", model=name, content_size=256, device="cpu"))
    other = next(n for n in SHIPPED if n != name)
    elsewhere = to_tensor(brushwork.stylize("sample:astronaut", model=other, content_size=256, device="cpu"))
    assert output.shape == content.shape
    painted = style_distance(loss_network, output, style)
    assert painted < 0.8 * style_distance(loss_network, content, style)
    assert painted < style_distance(loss_network, elsewhere, style)
    assert float(ssim(output, content)) > 0.2
    record = json.loads((entry.files[0].source.path.parent / "training.json").read_text())
    assert record["method"] == "johnson" and record["style"] == entry.style


def test_alpha_zero_keeps_the_content_and_styles_are_refused(weights_dir):
    stylizer = brushwork.Stylizer(method="johnson", alpha=0.0, device="cpu", content_size=64)
    content = to_tensor(resize(as_image("sample:astronaut"), 64))
    assert torch.allclose(to_tensor(stylizer("sample:astronaut")), content, atol=1 / 255)
    with pytest.raises(BrushworkError, match="give no style image"):
        stylizer("sample:astronaut", "sample:chelsea")
    with pytest.raises(BrushworkError, match="need style images"):
        brushwork.Stylizer(method="johnson", preserve_color="histogram", device="cpu")("sample:astronaut")
    with pytest.raises(BrushworkError, match="give a style image"):
        brushwork.Stylizer(method="microast", device="cpu", weights_dir=weights_dir)("sample:astronaut")


def test_training_losses_fall_and_the_network_is_used(folders, tmp_path, weights_dir, reference_pair):
    """A tiny CPU run: the weighted loss falls, the folder it writes loads and paints without a style."""
    content_dir = folders / "content"
    style_image = reference_pair[2]
    (_, config), = load_config(None, dict(content_dir=str(content_dir), style_image=str(style_image), crop=32,
                                          resize=40, batch_size=2, max_steps=30, workers=0, sample_every=0,
                                          checkpoint_every=30, log_every=5, output_dir=str(tmp_path / "run"),
                                          frame_weight=0.5, weights_dir=[str(weights_dir)]), "johnson")
    from brushwork.training import train

    folder = train(config)
    record = json.loads((folder / "training.json").read_text())
    assert record["method"] == "johnson" and record["style"] == style_image.name and record["steps"] == 30
    rows = list(__import__("csv").DictReader(open(next((tmp_path / "run" / "csv").rglob("metrics.csv")))))
    totals = [float(r["loss/total"]) for r in rows if r.get("loss/total")]
    assert totals[-1] < 0.5 * totals[0]
    assert all(float(r["loss/frame"]) >= 0 for r in rows if r.get("loss/frame"))  # the frame term is in the loss
    image = brushwork.stylize("sample:astronaut", model=str(folder), content_size=48, device="cpu")
    assert image.size == (48, 48)
    with pytest.raises(BrushworkError, match="johnson model"):
        brushwork.load_model(str(folder), method="microast")


def test_the_anchor_and_the_frame_term_mend_a_frame_and_keep_the_painting(weights_dir):
    """With ``anchor_weight`` the frozen ``init_from`` network's paintings are the targets (0 before the first
    step); descending the frame term beside it lowers the frame and leaves the anchor small."""
    import dataclasses
    from brushwork.training import JohnsonTraining
    from brushwork.train_config import TrainConfig

    config = TrainConfig(method="johnson", content_dir="c", init_from="johnson-la-muse", content_weight=0.0,
                         style_weight=0.0, tv_weight=0.0, anchor_weight=20.0, frame_weight=10.0,
                         weights_dir=[str(weights_dir)])
    network = load_loss_network("vgg16-hed", JohnsonTraining.loss_layers(config), weights_dir=weights_dir)
    module = JohnsonTraining(dataclasses.asdict(config), network)
    module.load_initial("johnson-la-muse", [weights_dir])
    from conftest import sample_photo

    content = to_tensor(resize(sample_photo("astronaut"), 64))
    _, terms = module.compute_losses(content)
    assert set(terms) == {"anchor", "frame"}
    assert terms["anchor"].item() == pytest.approx(0, abs=1e-6)
    start = terms["frame"].item()
    optimizer = torch.optim.Adam(module.model.parameters(), lr=5e-5)
    for _ in range(8):
        _, terms = module.compute_losses(content)
        optimizer.zero_grad()
        (20 * terms["anchor"] + 10 * terms["frame"]).backward()
        optimizer.step()
    _, terms = module.compute_losses(content)
    assert terms["frame"].item() < start and 0 < terms["anchor"].item() < 0.1
    assert not any(p.requires_grad for p in module.anchor().parameters())
    with pytest.raises(BrushworkError, match="anchor_weight is a setting of microast and johnson"):
        TrainConfig(method="adain", content_dir="c", style_dir="s", init_from="x", ssc_weight=0.0,
                    anchor_weight=1.0).validate()


@pytest.mark.parametrize("settings, message", [
    ({"style_dir": "x"}, "style_image"),
    ({"style_image": "no-such.jpg"}, "no such style image"),
])
def test_config_errors(settings, message, tmp_path):
    with pytest.raises(BrushworkError, match=message):
        load_config(None, {"content_dir": str(tmp_path), **settings}, "johnson")


def test_vgg19_is_refused(tmp_path, reference_pair):
    with pytest.raises(BrushworkError, match="loss_net vgg16"):
        load_config(None, {"content_dir": str(tmp_path), "loss_net": "vgg19",
                           "style_image": str(reference_pair[2])}, "johnson")


def test_command_line(tmp_path):
    out = tmp_path / "painted.png"
    run = subprocess.run([sys.executable, "-m", "brushwork", "stylize", "sample:coffee", "--method", "johnson",
                          "--model", "johnson-brushstrokes", "--content-size", "64", "-o", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert load_image(out).size[1] == 64
    run = subprocess.run([sys.executable, "-m", "brushwork", "stylize", "sample:coffee", "sample:chelsea",
                          "--method", "johnson", "-o", str(out)], capture_output=True, text=True)
    assert run.returncode == 2 and "give no style image" in run.stderr and "Traceback" not in run.stderr

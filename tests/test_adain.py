"""AdaIN: the architecture against pytorch-AdaIN's layout, the controls (alpha, interpolation, masks), the shipped
decoder, and training with the shared trainer."""

import dataclasses
import json

import pytest
import torch
from torch import nn

import brushwork
from brushwork import weights
from brushwork.errors import BrushworkError
from brushwork.functional import adaptive_instance_norm, mean_std
from brushwork.images import load_image, resize, to_tensor
from brushwork.methods import adain
from brushwork.vgg import InputConv, VGGFeatures, load_loss_network, read_adain_vgg


def reference_adain_vgg() -> nn.Sequential:
    """pytorch-AdaIN's ``net.vgg`` written out to relu4_1 (a 1x1 conv, then reflection pad + conv + ReLU, and
    ceil-mode pooling), with random weights: the layout ``vgg_normalised.pth`` has."""
    layers, channels = [nn.Conv2d(3, 3, 1)], 3
    for width in (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512):
        if width == "M":
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        else:
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, width, 3), nn.ReLU()]
            channels = width
    return nn.Sequential(*layers)


def test_the_adain_vgg_converts_to_the_shared_extractor():
    torch.manual_seed(0)
    original = reference_adain_vgg().eval()
    state = read_adain_vgg(original.state_dict())
    network = VGGFeatures("vgg19", ["relu4_1"], InputConv(), ceil_mode=True, padding_mode="reflect")
    from brushwork.vgg import load_features

    load_features(network, state, "test")
    image = torch.rand(1, 3, 45, 38)
    with torch.no_grad():
        assert torch.allclose(network(image)["relu4_1"], original(image), atol=1e-5)


def test_the_decoder_has_pytorch_adains_layout():
    decoder = adain.AdaINDecoder("vgg19")
    convs = {index: tuple(m.weight.shape[:2]) for index, m in enumerate(decoder) if isinstance(m, nn.Conv2d)}
    assert convs == {1: (256, 512), 5: (256, 256), 8: (256, 256), 11: (256, 256), 14: (128, 256),
                     18: (128, 128), 21: (64, 128), 25: (64, 64), 28: (3, 64)}
    assert [i for i, m in enumerate(decoder) if isinstance(m, nn.Upsample)] == [3, 16, 23]
    assert len(decoder) == 29 and not isinstance(decoder[-1], nn.ReLU)
    # Mirroring VGG16 gives one 256-channel convolution fewer.
    assert sum(isinstance(m, nn.Conv2d) for m in adain.AdaINDecoder("vgg16")) == 8


@pytest.fixture(scope="module")
def model(weights_dir):
    torch.set_num_threads(2)
    return brushwork.load_model("adain-vgg16-hed", weights_dir=weights_dir, device="cpu")


@pytest.fixture(scope="module")
def images(eval_images):
    folder = eval_images
    content = to_tensor(resize(load_image(sorted((folder / "content").iterdir())[0]), 128))
    styles = [to_tensor(resize(load_image(path), 128)) for path in sorted((folder / "style").iterdir())[:2]]
    return content, styles


def test_the_shipped_decoder_is_registered_and_checked(weights_dir):
    entry = weights.get("adain-vgg16-hed")
    assert entry.encoder == "vgg16-hed-reflect" and entry.file("decoder").sha256 == weights.ADAIN_HED_SHA256
    assert len(weights.ADAIN_HED_SHA256) == 64
    [item] = weights.status(entry, check=True)
    assert item.found.place == "package" and item.ok


def test_output_size_and_alpha(model, images):
    content, (style, _) = images
    content = content[..., :101, :77]  # not multiples of 8
    encoded = model.encode_style(style)
    with torch.inference_mode():
        outputs = {alpha: model.stylize(content, [encoded], alpha=alpha) for alpha in (0.0, 0.5, 1.0)}
    assert all(o.shape == content.shape for o in outputs.values())
    network = model.encoder
    target = network(style)
    distances = [float(style_loss_at(network(outputs[a]), target)) for a in (0.0, 0.5, 1.0)]
    assert distances[0] > distances[1] > distances[2]  # closer to the style as alpha grows


def style_loss_at(features, target):
    mean, std = mean_std(features["relu4_1"])
    target_mean, target_std = mean_std(target["relu4_1"])
    return (mean - target_mean).pow(2).mean() + (std - target_std).pow(2).mean()


def test_interpolation_is_a_mix_of_statistics(model, images):
    content, styles = images
    a, b = (model.encode_style(s) for s in styles)
    with torch.inference_mode():
        only_a = model.stylize(content, [a])
        assert torch.equal(model.stylize(content, [a, b], [1.0, 0.0]), only_a)
        mixed = model.stylize(content, [a, b], [0.5, 0.5])
        features = model.encode(adain.pad_to(content, 8))
        by_hand = model.decode(adaptive_instance_norm(features, (a.mean + b.mean) / 2, (a.std + b.std) / 2))
    assert torch.allclose(mixed, by_hand[..., :content.shape[-2], :content.shape[-1]], atol=1e-5)


def test_masks_put_styles_in_regions(model, images):
    content, (style, other) = images
    a, b = model.encode_style(style), model.encode_style(other)
    height, width = content.shape[-2:]
    left = torch.zeros(height, width)
    left[:, : width // 2] = 1
    with torch.inference_mode():
        only_a, only_b = model.stylize(content, [a]), model.stylize(content, [b])
        kept = model.stylize(content, [a], alpha=0.0)
        assert torch.allclose(model.stylize(content, [a], masks=[torch.ones(height, width)]), only_a, atol=1e-5)
        assert torch.allclose(model.stylize(content, [a], masks=[torch.zeros(height, width)]), kept, atol=1e-5)
        split = model.stylize(content, [a, b], masks=[left, 1 - left])
    margin = 24  # away from the boundary, where the decoder's receptive field mixes both
    assert torch.allclose(split[..., : width // 2 - margin], only_a[..., : width // 2 - margin], atol=0.02)
    assert torch.allclose(split[..., width // 2 + margin:], only_b[..., width // 2 + margin:], atol=0.02)
    with pytest.raises(ValueError, match="one mask per style"):
        model.stylize(content, [a, b], masks=[left])


def test_masks_through_the_api(model, images, weights_dir):
    content, (style, other) = images
    from PIL import Image

    mask = Image.new("L", (content.shape[-1] * 2, content.shape[-2] * 2), 255)  # resized to the content
    out = brushwork.stylize(content, [style], model=model, masks=[mask])
    assert out.size == (content.shape[-1], content.shape[-2])
    with pytest.raises(BrushworkError, match="one mask per style"):
        brushwork.stylize(content, [style, other], model=model, masks=[mask])
    with pytest.raises(BrushworkError, match="not by microast"):
        brushwork.stylize(content, style, model="microast", masks=[mask], weights_dir=weights_dir, device="cpu")


def test_method_and_model_must_agree(weights_dir):
    with pytest.raises(BrushworkError, match="a microast model, not adain"):
        brushwork.load_model("microast", method="adain", weights_dir=weights_dir)
    with pytest.raises(BrushworkError, match="unknown method"):
        brushwork.load_model(method="cyclegan")


def test_the_reference_weights_fail_with_a_clear_message(weights_dir):
    # The pytorch-AdaIN release is not available offline: the message says where to get it and how to give it.
    with pytest.raises(BrushworkError) as error:
        brushwork.load_model(method="adain", weights_dir=weights_dir)
    message = str(error.value)
    assert "naoto0804/pytorch-AdaIN" in message and "--weights-dir" in message


def test_a_trained_decoder_beats_a_fresh_one(model, images, weights_dir):
    """The shipped decoder inverts the encoder far better than an untrained one: reconstruction at alpha 0."""
    content, _ = images
    fresh = adain.AdaIN(model.encoder, adain.AdaINDecoder("vgg16")).eval()
    with torch.inference_mode():
        errors = [float((m.stylize(content, [m.encode_style(content)], alpha=0.0) - content).abs().mean())
                  for m in (model, fresh)]
    assert errors[0] < 0.5 * errors[1]


def test_adain_training_losses_fall_and_the_result_loads(folders, tmp_path, weights_dir):
    from brushwork.train_config import load_config
    from brushwork.training import AdaINTraining, train

    [(_, config)] = load_config(None, dict(
        content_dir=str(folders / "content"), style_dir=str(folders / "style"), output_dir=str(tmp_path / "run"),
        batch_size=2, resize=40, crop=32, max_steps=4, workers=0, log_every=2, sample_every=0,
        checkpoint_every=2, loss_net="vgg16-hed-reflect", lr=1e-3, weights_dir=[str(weights_dir)]), "adain")
    assert config.style_weight == 10.0 and config.ssc_weight == 0.0  # AdaIN's own defaults

    # Losses fall: a few steps on one fixed batch (with the style weight the shipped decoder was trained with:
    # over vgg16-hed the style term is far larger than over AdaIN's normalised VGG19).
    network = load_loss_network("vgg16-hed", AdaINTraining.loss_layers(config), weights_dir=weights_dir)
    torch.manual_seed(3)  # the decoder's initialisation: the same run whatever ran before
    module = AdaINTraining(dict(dataclasses.asdict(config), style_weight=0.25, structure_weight=1.0), network)
    optimizer = module.configure_optimizers()["optimizer"]
    def batch(folder):
        return torch.cat([to_tensor(load_image(p).resize((32, 32))) for p in sorted(folder.glob("*.*"))[:2]])

    content, style = batch(folders / "content" / "nested"), batch(folders / "style")
    for group in optimizer.param_groups:
        group["lr"] = 3e-3
    totals = []
    for _ in range(40):
        _, terms = module.compute_losses(content, style)
        total = sum(module.loss_weights()[name] * term for name, term in terms.items())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(float(total.detach()))
    assert set(terms) == {"content", "style", "structure"} and max(totals[-5:]) < 0.9 * totals[0]
    assert not any(key.startswith("loss_network") for key in module.state_dict())

    folder = train(config)
    record = json.loads((folder / "training.json").read_text())
    # Over the reflection-padded HED (the shipped decoder's encoder): the same files, another network.
    assert record["method"] == "adain" and record["encoder"] == "vgg16-hed-reflect" and record["steps"] == 4
    trained = brushwork.load_model(folder, weights_dir=weights_dir, device="cpu")
    assert isinstance(trained, adain.AdaIN) and trained.encoder_name == "vgg16-hed-reflect"
    assert trained.encoder.features[0].padding_mode == "reflect"
    out = brushwork.stylize(torch.rand(1, 3, 30, 20), torch.rand(1, 3, 24, 24), model=trained)
    assert out.size == (20, 30)
    with pytest.raises(BrushworkError, match="a adain model, not microast"):
        brushwork.load_model(folder, method="microast", weights_dir=weights_dir)


def test_adain_config_refuses_the_contrastive_loss(tmp_path):
    from brushwork.train_config import load_config

    with pytest.raises(BrushworkError, match="contrastive"):
        load_config(None, dict(content_dir="c", style_dir="s", ssc_weight=3.0), "adain")
    with pytest.raises(BrushworkError, match="anchor_weight is a setting of microast"):
        load_config(None, dict(content_dir="c", style_dir="s", anchor_weight=1.0, init_from="adain-vgg16-hed"), "adain")
    with pytest.raises(BrushworkError, match="structure_weight is a setting of microast, adain and vst"):
        load_config(None, dict(content_dir="c", style_image=__file__, structure_weight=1.0), "johnson")


def test_a_teacher_model_paints_the_targets_of_the_teacher_term(folders, weights_dir):
    """``teacher`` (any arbitrary-style model) paints the same pairs, frozen; the teacher term is the feature
    distance to its paintings and falls as the decoder learns them; the teacher stays out of the state dict."""
    from brushwork.train_config import load_config
    from brushwork.training import AdaINTraining

    [(_, config)] = load_config(None, dict(content_dir="c", style_dir="s", loss_net="vgg16-hed-reflect",
                                           content_weight=0, style_weight=0, teacher="microast", teacher_weight=1,
                                           weights_dir=[str(weights_dir)]), "adain")
    network = load_loss_network("vgg16-hed-reflect", AdaINTraining.loss_layers(config), weights_dir=weights_dir)
    module = AdaINTraining(dataclasses.asdict(config), network)
    module.load_initial("adain-vgg16-hed", [weights_dir])
    generator = torch.Generator().manual_seed(0)
    content = torch.rand(2, 3, 32, 32, generator=generator)
    style = torch.rand(2, 3, 32, 32, generator=generator)
    teacher = module.teacher()
    assert isinstance(teacher, brushwork.methods.microast.MicroAST)
    assert not any(p.requires_grad for p in teacher.parameters())
    expected = sum(brushwork.losses.relative_content_loss(network(module(content, style)),
                                                          network(teacher(content, style)), layer)
                   for layer in brushwork.losses.STYLE_LAYERS)
    optimizer = torch.optim.Adam(module.model.parameters(), lr=1e-3)
    values = []
    for _ in range(6):
        _, terms = module.compute_losses(content, style)
        assert set(terms) == {"teacher"}
        optimizer.zero_grad()
        terms["teacher"].backward()
        optimizer.step()
        values.append(terms["teacher"].item())
    assert values[0] == pytest.approx(expected.item(), rel=1e-4)
    assert values[-1] < 0.8 * values[0], values
    assert not any("teacher" in key for key in module.state_dict())

    painter = AdaINTraining(dict(dataclasses.asdict(config), teacher="johnson-la-muse"), network)
    with pytest.raises(BrushworkError, match="a teacher must paint any style"):
        painter.teacher()
    for settings, message in ((dict(teacher="microast"), "teacher and teacher_weight go together"),
                              (dict(teacher_weight=1.0), "teacher and teacher_weight go together")):
        with pytest.raises(BrushworkError, match=message):
            load_config(None, dict(content_dir="c", style_dir="s", **settings), "adain")
    with pytest.raises(BrushworkError, match="teacher_weight is a setting of microast and adain"):
        load_config(None, dict(content_dir="c", style_dir="s", teacher="microast", teacher_weight=1.0), "vst")

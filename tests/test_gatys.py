"""Gatys optimisation over the offline vgg16-hed: losses fall, controls behave, Ctrl-C keeps the best image."""

import os
import signal
import threading

import pytest
import torch

import brushwork
from brushwork.errors import BrushworkError
from brushwork.functional import match_color
from brushwork.images import load_image, resize, to_tensor
from brushwork.losses import gram_matrix
from brushwork.methods import gatys
from brushwork.metrics import ssim

from conftest import ctrl_c_raises


@pytest.fixture(scope="module")
def pair(reference_pair):
    content, other, style = reference_pair  # sailboat; Mondrian, brushstrokes
    return tuple(to_tensor(resize(load_image(path), 64)) for path in (content, style, other))


def make(weights_dir, **settings):
    settings.setdefault("progress", False)
    return gatys.build("vgg16-hed", weights_dir=weights_dir, **settings)


def relative_gram_error(model, image, style):
    s = model.settings
    features, target = model.loss_network(image), model.loss_network(style)
    return sum(float((gram_matrix(features[l]) - gram_matrix(target[l])).pow(2).mean()
                     / gram_matrix(target[l]).pow(2).mean()) for l in s.style_layers)


def test_optimisation_stylises_and_keeps_the_content(reference_pair, weights_dir):
    """The default weights give a real stylisation: the style loss falls over 10x from the content image's,
    and the structure stays (SSIM to the content above 0.3)."""
    content = to_tensor(resize(load_image(reference_pair[0]), 128))
    style = to_tensor(resize(load_image(reference_pair[2]), 128))
    model = make(weights_dir, steps=80)
    output = model.stylize(content, [model.encode_style(style)])
    assert output.shape == content.shape and 0 <= output.min() and output.max() <= 1
    run = model.last_run
    assert run.evaluations == 80 and not run.interrupted and run.sizes == [tuple(content.shape[-2:])]
    losses = [loss for *_, loss in run.history]
    assert losses[-1] < 0.3 * losses[0]
    with torch.no_grad():
        before, after = relative_gram_error(model, content, style), relative_gram_error(model, output, style)
    assert after < before / 10  # the style loss falls by more than 10x from the content's
    assert ssim(output, content) > 0.3


def test_alpha_zero_keeps_the_content_and_weights_mix_styles(pair, weights_dir):
    content, style, other = pair
    model = make(weights_dir, steps=15)
    a, b = model.encode_style(style), model.encode_style(other)
    kept = model.stylize(content, [a], alpha=0.0)
    assert float((kept - content).abs().mean()) < 0.02
    only_a = model.stylize(content, [a])
    assert torch.equal(model.stylize(content, [a, b], [1.0, 0.0]), only_a)  # deterministic, and weights apply
    assert not torch.equal(model.stylize(content, [a, b], [0.5, 0.5]), only_a)


def test_adam_and_noise_start_with_a_seed(pair, weights_dir):
    content, style, _ = pair
    first = make(weights_dir, steps=12, optimizer="adam", init="noise", seed=3)
    out = first.stylize(content, [first.encode_style(style)])
    losses = [loss for *_, loss in first.last_run.history]
    assert losses[-1] < losses[0]
    again = make(weights_dir, steps=12, optimizer="adam", init="noise", seed=3)
    assert torch.equal(again.stylize(content, [again.encode_style(style)]), out)
    other = make(weights_dir, steps=12, optimizer="adam", init="noise", seed=4)
    assert not torch.equal(other.stylize(content, [other.encode_style(style)]), out)


def test_coarse_to_fine_scales(weights_dir):
    model = make(weights_dir, steps=90)
    assert model.scales(1024, 1536, multiscale=True) == [(256, 384), (512, 768), (1024, 1536)]
    assert model.scales(1024, 1536, multiscale=False) == [(1024, 1536)]
    assert model.scales(300, 300, multiscale=True) == [(300, 300)]
    assert [model.steps_at(i) for i in range(3)] == [90, 30, 30]


def test_multiscale_runs_every_scale(pair, weights_dir):
    content, style, _ = pair
    model = make(weights_dir, steps=8, fine_steps=4, min_side=32)
    big = torch.nn.functional.interpolate(content, size=(70, 66), mode="bilinear")
    output = model.stylize(big, [model.encode_style(style)])
    assert output.shape == big.shape
    assert model.last_run.sizes == [(35, 33), (70, 66)] and model.last_run.evaluations == 12


def test_ctrl_c_returns_the_best_image_so_far(pair, weights_dir):
    content, style, _ = pair
    model = make(weights_dir, steps=100_000)
    encoded = model.encode_style(style)
    timer = threading.Timer(4.0, os.kill, (os.getpid(), signal.SIGINT))
    with ctrl_c_raises():
        timer.start()
        try:
            output = model.stylize(content, [encoded])
        finally:
            timer.cancel()
    run = model.last_run
    assert run.interrupted and 0 < run.evaluations < 100_000
    assert output.shape == content.shape
    assert run.losses["total"] == min(loss for *_, loss in run.history)


def test_bad_settings_are_refused(weights_dir):
    for settings, message in [(dict(optimizer="sgd"), "optimizer"), (dict(steps=0), "steps"),
                              (dict(init="zeros"), "init"), (dict(style_weight=-1), "negative"),
                              (dict(colour=1), "unknown setting")]:
        with pytest.raises(BrushworkError, match=message):
            make(weights_dir, **settings)
    with pytest.raises(BrushworkError, match="settings of the gatys method"):
        brushwork.load_model("microast", steps=10, weights_dir=weights_dir)


def test_through_the_api_with_colour_matching(pair, weights_dir):
    content, style, _ = pair
    out = brushwork.stylize(content, style, method="gatys", preserve_color="histogram", steps=10,
                            progress=False, loss_net="vgg16-hed", weights_dir=weights_dir, device="cpu")
    assert out.size == (content.shape[-1], content.shape[-2])
    with pytest.raises(BrushworkError, match="preserve colour"):
        brushwork.stylize(content, style, method="gatys", preserve_color="hue", weights_dir=weights_dir)


def test_match_color_gives_the_reference_mean_and_covariance():
    generator = torch.Generator().manual_seed(0)
    source = torch.rand(1, 3, 40, 30, generator=generator) * torch.tensor([0.3, 0.6, 0.2]).view(1, 3, 1, 1)
    reference = 0.25 + 0.5 * torch.rand(1, 3, 20, 50, generator=generator)
    matched = match_color(source, reference)
    assert matched.shape == source.shape

    def stats(image):
        flat = image.reshape(3, -1).double()
        return flat.mean(1), torch.cov(flat, correction=0)

    (mean, cov), (ref_mean, ref_cov) = stats(matched), stats(reference)
    assert torch.allclose(mean, ref_mean, atol=1e-4) and torch.allclose(cov, ref_cov, atol=1e-4)

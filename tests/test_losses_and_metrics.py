import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from brushwork import images, losses, metrics

from conftest import sample_photo


def feats(**layers):
    return {name: torch.as_tensor(value, dtype=torch.float32) for name, value in layers.items()}


def test_content_loss_known_value():
    assert losses.content_loss(feats(relu4_1=torch.zeros(1, 2, 3, 3)), feats(relu4_1=torch.ones(1, 2, 3, 3))) == 1
    assert losses.content_loss(feats(x=torch.full((1, 1, 2, 2), 3.0)), feats(x=torch.ones(1, 1, 2, 2)), "x") == 4


def test_mean_std_style_loss_known_value():
    flat_a = torch.full((1, 2, 4, 4), 3.0)
    flat_b = torch.full((1, 2, 4, 4), 1.0)
    # equal standard deviations, means 3 and 1: (3 - 1)^2 per layer
    assert losses.mean_std_loss(flat_a, flat_b) == pytest.approx(4.0)
    layers = {name: flat_a for name in losses.STYLE_LAYERS}
    targets = {name: flat_b for name in losses.STYLE_LAYERS}
    assert losses.style_loss(layers, targets) == pytest.approx(16.0)  # summed over the four layers
    assert losses.style_loss(layers, layers) == 0


def test_gram_matrix_and_loss():
    ones = torch.ones(1, 1, 2, 2)
    assert torch.equal(losses.gram_matrix(ones), torch.ones(1, 1, 1))
    two_channels = torch.stack([torch.ones(2, 2), -torch.ones(2, 2)])[None]
    assert torch.equal(losses.gram_matrix(two_channels), torch.tensor([[[0.5, -0.5], [-0.5, 0.5]]]))
    batch = {name: torch.rand(3, 2, 4, 4) for name in losses.STYLE_LAYERS}
    single = {name: value[:1] for name, value in batch.items()}
    assert losses.gram_loss(single, single) == 0
    assert losses.gram_loss(batch, single) > 0  # one target for a batch of three


def test_perceptual_distance_known_values():
    base = torch.rand(1, 8, 5, 5) + 0.1
    layers = list(losses.PERCEPTUAL_LAYERS)
    same = {name: base for name in layers}
    assert losses.perceptual_distance(same, same) == pytest.approx(0, abs=1e-6)
    assert losses.perceptual_distance(same, {name: 7 * base for name in layers}) == pytest.approx(0, abs=1e-6)
    assert losses.perceptual_distance(same, {name: -base for name in layers}) == pytest.approx(4, abs=1e-5)
    x, y = torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3)
    x[:, 0], y[:, 1] = 1, 1  # orthogonal feature vectors everywhere
    assert losses.perceptual_distance(feats(a=x), feats(a=y), ["a"]) == pytest.approx(2)


def test_ssim_is_scikit_image_on_8_bit_gray():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    gray = lambda rgb: ((rgb @ np.array([299, 587, 114])) + 500) // 1000  # noqa: E731  ITU-R 601 luma
    expected = structural_similarity(gray(a).astype(np.uint8), gray(b).astype(np.uint8), data_range=255)
    assert metrics.ssim(Image.fromarray(a), Image.fromarray(b)) == pytest.approx(expected, abs=1e-3)
    tensor = images.to_tensor(Image.fromarray(a))
    assert metrics.ssim(tensor, tensor) == 1.0
    with pytest.raises(ValueError):
        metrics.ssim(tensor, tensor[..., :10])


def test_color_distance_known_values():
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert metrics.color_distance(image, image) == 0
    shuffled = image.flatten(2)[..., torch.randperm(256)].reshape(1, 3, 16, 16)
    assert metrics.color_distance(image, shuffled) == pytest.approx(0, abs=1e-9)  # positions do not matter
    black, white = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 8, 8)  # sizes may differ
    expected = metrics.COLOR_DIRECTIONS.sum(dim=1).abs().mean().item()
    assert metrics.color_distance(black, white) == pytest.approx(expected)
    assert metrics.color_distance(black, white) <= 3 ** 0.5


@pytest.fixture(scope="module")
def hed_metrics(weights_dir):
    return metrics.Metrics("vgg16-hed", device="cpu", weights_dir=weights_dir)


def test_identical_images_score_perfectly(hed_metrics):
    image = torch.rand(1, 3, 48, 40, generator=torch.Generator().manual_seed(1))
    result = hed_metrics.measure(image, image, image)
    assert result["loss_net"] == "vgg16-hed"
    assert result["ssim"] == 1.0
    for name in ("content_loss", "perceptual_distance", "style_loss", "gram_loss", "color_distance"):
        assert result[name] == pytest.approx(0, abs=1e-6), name


def test_stylisation_moves_towards_the_style(hed_metrics, reference):
    folder, cases = reference
    load = lambda name: images.to_tensor(images.load_image(folder / name))  # noqa: E731
    content, style, output = load(cases[0]["content"]), load(cases[0]["style"]), load(cases[0]["output"])
    stylised = hed_metrics.measure(content, style, output)
    unchanged = hed_metrics.measure(content, style, content)
    assert stylised["style_loss"] < unchanged["style_loss"] / 2
    assert unchanged["style_ratio"] == pytest.approx(1.0)
    assert stylised["style_ratio"] == pytest.approx(unchanged["style_loss"] / stylised["style_loss"])
    assert stylised["color_distance"] < unchanged["color_distance"]
    # The official decoder's fine grid shows; the reference output draws no frame along the border.
    assert stylised["grid_artefact"] > 1.0 and unchanged["grid_artefact"] == 0.0
    assert abs(stylised["frame_artefact"]) < 10
    assert 0.1 < stylised["ssim"] < 0.8
    assert stylised["content_loss"] > 0 and 0 < stylised["perceptual_distance"] < 4


def test_grid_artefact_sees_a_four_pixel_crosshatch_and_nothing_else():
    photo = sample_photo("astronaut")
    pixels = np.asarray(photo).astype(float)
    y, x = np.mgrid[0:512, 0:512]
    crosshatch = 4 * np.cos(np.pi * x / 2) * np.cos(np.pi * y / 2)  # 4-pixel period, +-4 grey levels
    hatched = Image.fromarray(np.clip(pixels + crosshatch[..., None], 0, 255).astype(np.uint8))
    noisy = Image.fromarray(np.clip(pixels + np.random.default_rng(0).normal(0, 4, pixels.shape), 0, 255)
                            .astype(np.uint8))
    assert metrics.grid_artefact(photo, photo) == 0.0
    assert metrics.grid_artefact(hatched, photo) > 5.0  # dB above the photo's own spectrum
    assert abs(metrics.grid_artefact(noisy, photo)) < 1.5  # white noise has no peaks
    with pytest.raises(ValueError, match="at least 32"):
        metrics.grid_artefact(photo.resize((20, 20)), photo.resize((20, 20)))


def test_frame_artefact_sees_a_dark_border_and_not_the_photo():
    photo = sample_photo("coffee")
    framed = np.asarray(photo).copy()
    framed[:3] = framed[:3] // 2  # the top three rows darkened: a frame on one side
    assert metrics.frame_artefact(photo, photo) == 0.0
    assert metrics.frame_artefact(Image.fromarray(framed), photo) > 20
    shifted = Image.fromarray(np.clip(np.asarray(photo).astype(int) + 30, 0, 255).astype(np.uint8))
    assert abs(metrics.frame_artefact(shifted, photo)) < 3  # a uniform change draws no frame


def test_frame_loss_is_the_frame_measure_in_training_form():
    """The training term sees what the evaluation's frame measure sees, is 0 without a frame, acts on the border
    only, and descending it removes a frame."""
    photo = sample_photo("coffee").resize((96, 64))
    framed = np.asarray(photo).copy()
    framed[:4] = framed[:4] // 2
    content, output = images.to_tensor(photo), images.to_tensor(Image.fromarray(framed))
    excess = losses.border_differences(output) - losses.border_differences(content)
    assert 255 * excess.max().item() == pytest.approx(metrics.frame_artefact(Image.fromarray(framed), photo), abs=0.6)
    assert losses.frame_loss(content, content).item() == 0.0
    assert losses.frame_loss((content + 0.1).clamp(0, 1), content).item() < 0.01
    image = output.clone().requires_grad_(True)
    losses.frame_loss(image, content).backward()
    assert image.grad[..., :4, :].abs().sum() > 0
    assert image.grad[..., 12:-12, 12:-12].abs().sum() == 0  # the interior is left alone
    optimizer = torch.optim.Adam([image], lr=0.01)
    for _ in range(60):
        optimizer.zero_grad()
        losses.frame_loss(image, content).backward()
        optimizer.step()
    repaired = images.to_image(image.detach()[0].clamp(0, 1))
    assert metrics.frame_artefact(repaired, photo) < 0.25 * metrics.frame_artefact(Image.fromarray(framed), photo)

import numpy as np
import pytest
import torch
from PIL import Image

import brushwork
from brushwork import api, images, weights
from brushwork.errors import BrushworkError
from brushwork.functional import rgb_to_ycbcr

from conftest import sample_photo


@pytest.fixture(scope="module")
def pair(reference_pair):
    return reference_pair[:2]


def test_stylize_accepts_paths_images_arrays_and_tensors(pair, weights_dir):
    content, style = pair
    by_path = brushwork.stylize(content, style, weights_dir=weights_dir, device="cpu")
    assert isinstance(by_path, Image.Image) and by_path.mode == "RGB"
    assert by_path.size == Image.open(content).size
    content_image, style_image = images.load_image(content), images.load_image(style)
    for content_value, style_value in [
        (str(content), [style_image]),
        (content_image, style_image),
        (np.asarray(content_image), np.asarray(style_image)),
        (images.to_tensor(content_image), images.to_tensor(style_image)[0]),
    ]:
        result = brushwork.stylize(content_value, style_value, weights_dir=weights_dir, device="cpu")
        assert np.array_equal(np.asarray(result), np.asarray(by_path))


def test_load_model_is_ready_and_shared(weights_dir):
    model = brushwork.load_model(weights_dir=weights_dir, device="cpu")
    assert model is brushwork.load_model(weights.DEFAULT_MODEL, weights_dir=weights_dir, device="cpu")
    assert not model.training
    assert all(not p.requires_grad and p.device.type == "cpu" for p in model.parameters())
    assert brushwork.load_model("microast-cv-faces", weights_dir=weights_dir).head == "tuned"
    assert brushwork.load_model("microast-cv-faces", weights_dir=weights_dir, fast=False).decoder.head == "tuned"


def test_load_model_refuses_what_is_not_a_model(weights_dir):
    with pytest.raises(BrushworkError, match="'vgg16-hed' is not a style-transfer model"):
        brushwork.load_model("vgg16-hed", weights_dir=weights_dir)
    with pytest.raises(BrushworkError, match="unknown weights"):
        brushwork.load_model("picasso-9000")


def test_sizes_and_resizing(pair, weights_dir):
    content, style = pair  # 384x384
    result = brushwork.stylize(content, style, content_size=200, style_size=128, weights_dir=weights_dir)
    assert result.size == (200, 200)
    wide = Image.new("RGB", (300, 120), (40, 90, 200))
    result = brushwork.stylize(wide, style, content_size=150, resize_by="longer", weights_dir=weights_dir)
    assert result.size == (150, 60)


def test_preserve_color_keeps_the_content_chroma(pair, weights_dir):
    content, style = pair
    content_tensor = images.to_tensor(images.load_image(content))

    def chroma_stats(image):
        chroma = rgb_to_ycbcr(images.to_tensor(image))[0, 1:].flatten(1)
        return torch.cat([chroma.mean(1), chroma.std(1)])

    target = torch.cat([rgb_to_ycbcr(content_tensor)[0, 1:].flatten(1).mean(1),
                        rgb_to_ycbcr(content_tensor)[0, 1:].flatten(1).std(1)])
    plain = brushwork.stylize(content, style, weights_dir=weights_dir)
    kept = brushwork.stylize(content, style, preserve_color=True, weights_dir=weights_dir)
    assert (chroma_stats(kept) - target).abs().max() < 0.01
    assert (chroma_stats(plain) - target).abs().max() > 0.03
    # the luminance still comes from the stylisation
    luma = lambda image: rgb_to_ycbcr(images.to_tensor(image))[:, :1]  # noqa: E731
    assert (luma(kept) - luma(plain)).abs().mean() < 0.02


def test_stylizer_reuses_encoded_styles(pair, weights_dir):
    content, style = pair
    stylizer = api.Stylizer(weights_dir=weights_dir, content_size=64)
    first = stylizer(content, style)
    assert list(stylizer._encoded_styles) == [("path", str(style))]
    assert np.array_equal(np.asarray(stylizer(content, style)), np.asarray(first))
    # An image object is remembered by its pixels: the same pixels once, changed pixels again.
    painting = Image.open(style).convert("RGB")
    stylizer(content, painting)
    stylizer(content, painting.copy())
    assert len(stylizer._encoded_styles) == 2
    painting.putpixel((0, 0), (255, 0, 255))
    stylizer(content, painting)
    assert len(stylizer._encoded_styles) == 3


def test_preview_paints_as_the_stylizer_does_from_kept_encodings(pair, weights_dir):
    content, style = (images.resize(images.load_image(path), 64) for path in pair)
    second = images.resize(Image.fromarray(np.uint8(np.random.default_rng(0).integers(0, 255, (80, 80, 3)))), 64)
    model = api.load_model(weights_dir=weights_dir)
    preview = api.Preview(keep=3)
    loads = []

    def kept(name, image):
        return api.Kept(name, lambda: loads.append(name) or image)

    for settings in ({"alpha": 1.0}, {"alpha": 0.3}, {"alpha": 0.6, "preserve_color": "luminance"},
                     {"alpha": 0.8, "preserve_color": "histogram"}, {"alpha": 0.5, "style_weights": [0.3, 0.7]}):
        styles = [style, second] if "style_weights" in settings else [style]
        expected = api.Stylizer(model, **settings)(content, styles)
        painted = preview.paint(model, kept("content", content), [kept(f"style{i}", s) for i, s in enumerate(styles)],
                                **settings)
        assert np.array_equal(np.asarray(painted), np.asarray(expected)), settings
    # Each image was read once; the histogram mode's style (matched to this content) was encoded apart.
    assert sorted(loads) == ["content", "style0", "style0", "style1"]
    assert len(preview) == 3 and preview.bytes > 0  # at most ``keep``, the least recently used gone
    # An image painted once (a video frame) is not kept.
    assert np.array_equal(np.asarray(preview.paint(model, content, [kept("style0", style)], alpha=0.3)),
                          np.asarray(api.Stylizer(model, alpha=0.3)(content, style)))
    assert len(preview) == 3
    small = api.Preview(keep=10, max_bytes=1)
    small.paint(model, kept("content", content), [kept("style0", style)])
    assert len(small) == 1  # over the byte budget: only the newest stays
    with pytest.raises(BrushworkError, match="give a style image"):
        preview.paint(model, content, [])


@pytest.mark.parametrize("name", ["adain-vgg16-hed", "vst"])
def test_adain_and_vst_previews_keep_the_content_features(name):
    """AdaIN and VST keep a content's VGG features too: painting from them is the stylisation, bit for bit, and
    the content is encoded once for every change of alpha or style mix."""
    content, style, second = (images.resize(sample_photo(n), 72) for n in ("chelsea", "coffee", "astronaut"))
    model = api.load_model(name, device="cpu")
    generator = torch.Generator().manual_seed(0)
    odd = torch.rand(1, 3, 37, 53, generator=generator)
    with torch.inference_mode():
        encoded = model.encode_content(odd)
        signals = [model.encode_style(images.to_tensor(s)) for s in (style, second)]
        for alpha, mix in ((1.0, None), (0.4, None), (0.7, [0.2, 0.8])):
            chosen = signals if mix else signals[:1]
            painted = model.stylize_encoded(encoded, chosen, mix, alpha)
            assert painted.shape == odd.shape
            assert torch.equal(painted, model.stylize(odd, chosen, mix, alpha))
    preview = api.Preview(keep=4)
    loads = []
    kept_content = api.Kept("content", lambda: loads.append("content") or content)
    for alpha in (1.0, 0.5, 0.2):
        painted = preview.paint(model, kept_content, [api.Kept("style", lambda: style)], alpha=alpha)
        assert np.array_equal(np.asarray(painted), np.asarray(api.Stylizer(model, alpha=alpha)(content, style)))
    assert loads == ["content"]


@pytest.mark.parametrize("options, message", [
    ({"alpha": 1.2}, "alpha must be between 0 and 1"),
    ({"style_weights": [1, 2, 3]}, "3 style weights for 1 style"),
    ({"style_weights": [-1]}, "non-negative"),
    ({"content_size": -5}, "content size must be positive"),
    ({"resize_by": "width"}, "resize by"),
    ({"device": "tpu"}, "device"),
])
def test_bad_settings_are_refused(pair, weights_dir, options, message):
    content, style = pair
    with pytest.raises(BrushworkError, match=message):
        brushwork.stylize(content, style, weights_dir=weights_dir, **options)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given when there is no GPU")
def test_cuda_without_a_gpu_is_a_clear_error(pair, weights_dir):
    with pytest.raises(BrushworkError, match="no CUDA GPU"):
        brushwork.stylize(*pair, device="cuda", weights_dir=weights_dir)


def test_no_styles_is_refused(pair, weights_dir):
    with pytest.raises(BrushworkError, match="at least one style"):
        brushwork.stylize(pair[0], [], weights_dir=weights_dir)

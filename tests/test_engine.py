"""The fast engine computes what the plain network computes: built from a loaded (or just trained) MicroAST, which it
leaves as it was, on real pairs, whole and in tiles, for every shipped MicroAST."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from brushwork import images, load_model, weights
from brushwork.engine import FastMicroAST, build, fastconv
from brushwork.engine.fastconv import reflect_conv
from brushwork.engine.phase_head import PhaseHead
from brushwork.engine.residual import FastModulatedBlock, add_low_precision, fast_residual
from brushwork.functional import adaptive_instance_norm, mean_std
from brushwork.images import to_tensor
from brushwork.methods import microast
from brushwork.metrics import psnr

from conftest import FIXTURES, HAVE_SHARED, NO_SHARED, SHARED

CL = torch.channels_last
SHIPPED = ["microast", "microast-cv-coco-wikiart", "microast-cv-portraits", "microast-cv-faces", "microast-faces"]


def plain_reflect_conv(x, weight, bias, stride=1, groups=1):
    padding = weight.shape[-1] // 2
    return F.conv2d(F.pad(x, [padding] * 4, mode="reflect"), weight, bias, stride=stride, groups=groups)


def native_bfloat16() -> bool:
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


@pytest.fixture(scope="module")
def tuned_model(weights_dir):
    return microast.load(weights.resolve("microast-cv-coco-wikiart", weights_dir))


# ------------------------------------------------------------------------------------------ the engine's parts


@pytest.mark.parametrize("size", [(5, 7), (13, 21), (40, 33)])
@pytest.mark.parametrize("which", ["bilinear", "tuned"])
def test_phase_head_equals_the_head_it_is_built_from(official_model, tuned_model, which, size):
    """In float32 the phase head is the plain head, borders and all (tiny maps take the plain layers)."""
    torch.manual_seed(3)
    model = official_model if which == "bilinear" else tuned_model
    assert model.decoder.head == which and PhaseHead.fits(model.decoder.dec3)
    phase = PhaseHead(model.decoder.dec3, low_precision=None)
    x = torch.randn(1, 64, *size).abs().contiguous(memory_format=CL)
    with torch.inference_mode():
        expected = model.decoder.dec3(x)
        got = phase(x)
    assert got.shape == expected.shape == (1, 3, 4 * size[0], 4 * size[1])
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-4)
    # kernels as small as the layers allow: the 9x9 (15x15) convolution to RGB becomes a 5x5 (9x9) one
    assert phase.layer1.shape[-1] == 5 if which == "bilinear" else phase.layer3.shape[-1] == 9


def test_the_transposed_head_runs_its_own_layers_and_equals_the_network():
    assert not PhaseHead.fits(microast.transposed_head())
    torch.manual_seed(0)
    network = microast.MicroAST("transposed").eval()
    fast = FastMicroAST.from_network(network, low_precision=None)
    content, style = torch.rand(1, 3, 70, 90), torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        expected = network.stylize(content, [network.encode_style(style)])
        torch.testing.assert_close(fast.stylize(content, [fast.encode_style(style)]), expected, atol=2e-4, rtol=1e-4)


def test_filter_modulation_folded_into_the_weights_is_the_modulated_block(official_model):
    torch.manual_seed(4)
    block = official_model.decoder.dec1
    fast = FastModulatedBlock(block)
    x = torch.randn(1, 64, 23, 31)
    weight, bias = torch.rand(1, 64, 1, 1) + 0.5, torch.randn(1, 64, 1, 1) * 0.1
    with torch.inference_mode():
        torch.testing.assert_close(fast(x.contiguous(memory_format=CL), weight, bias), block(x, weight, bias),
                                   atol=1e-4, rtol=1e-4)
        batched = torch.rand(2, 64, 1, 1) + 0.5, torch.randn(2, 64, 1, 1) * 0.1  # signals of two images
        torch.testing.assert_close(fast(torch.cat([x, x]), *batched), block(torch.cat([x, x]), *batched),
                                   atol=1e-4, rtol=1e-4)


def test_a_low_precision_convolution_added_to_a_float32_stream_keeps_the_streams_precision():
    """bfloat16 output rounding is relative to the values: centring the output keeps channels with large means
    precise (residual.add_low_precision), and the bias it took off comes back exactly."""
    torch.manual_seed(6)
    stream = torch.randn(1, 16, 20, 24).contiguous(memory_format=CL)
    hidden = (torch.rand(1, 16, 20, 24) + torch.linspace(0, 40, 16).view(1, -1, 1, 1)).bfloat16()
    weight = (torch.randn(16, 16, 3, 3) / 30).bfloat16().contiguous(memory_format=CL)
    bias = torch.randn(16).bfloat16() * 10
    hidden = hidden.contiguous(memory_format=CL)
    expected = stream.double() + plain_reflect_conv(hidden.double(), weight.double(), bias.double())
    with torch.inference_mode():
        centred = add_low_precision(stream, hidden, weight, bias, reflect_conv)
        rounded = stream + reflect_conv(hidden, weight, bias).float()
    assert centred.dtype == torch.float32
    error, rounded_error = ((out.double() - expected).abs().max().item() for out in (centred, rounded))
    assert error < 0.02 and error < rounded_error / 4


def test_the_deep_block_on_centred_bfloat16_maps_is_the_block_up_to_its_scale_and_constants(official_model):
    """The engine's whole-map path: the deep FilterMod block on the instance normalisation of a ringed map, without
    making it, in bfloat16 on centred maps, gives z whose normalisation is the block output's."""
    torch.manual_seed(7)
    model = official_model
    block = FastModulatedBlock(model.decoder.dec1)
    with torch.inference_mode():
        signals = model.encode_style(torch.rand(1, 3, 96, 96))
        deep = model.content_encoder(torch.rand(1, 3, 120, 152))[1].contiguous(memory_format=CL)
        x = adaptive_instance_norm(deep, signals.means[1], signals.stds[1])
        output = model.decoder.dec1(x, signals.filter_weights[1], signals.filter_biases[1])
        mean, std = mean_std(deep)
        scale = signals.stds[1] / std
        ringed = fastconv.with_ring(deep)
        centred = (scale * ringed + signals.means[1] - mean * scale - signals.means[1]).bfloat16()
        z = block.centred_forward(ringed, centred, signals.means[1], signals.filter_weights[1],
                                  signals.filter_biases[1], fastconv.ring_conv, output_scale=1 / scale)
        assert z.dtype == torch.float32 and z.shape[-2:] == (32, 40)
        difference = scale * fastconv.inside(z) - output  # constant in each channel
        spread = (difference - difference.mean(dim=(2, 3), keepdim=True)).abs().max()
        assert spread < 1e-3 * output.abs().max()
        normalised = [adaptive_instance_norm(level, signals.means[0], signals.stds[0])
                      for level in (output, fastconv.inside(z))]
        error = (normalised[1] - normalised[0]).square().mean() / normalised[0].var()
        assert error < 2e-6  # 5e-7 measured; 1.3e-4 in bfloat16 without the centring


def test_an_encoder_block_in_bfloat16_on_centred_maps_keeps_the_float32_streams_precision(official_model):
    """The encoders' residual blocks with bfloat16 convolutions and a float32 stream: input less its channel
    means, hidden map relu(h) - c, output centred; three times closer to the exact block than the same block
    rounded uncentred (mean squared error)."""
    torch.manual_seed(9)
    block = official_model.content_encoder.enc2[0]
    with torch.inference_mode():
        x = official_model.content_encoder(torch.rand(1, 3, 120, 152))[0].contiguous(memory_format=CL)
        expected = copy.deepcopy(block).double()(x.double())
        low = [(layer.conv_layer.weight.bfloat16().contiguous(memory_format=CL), layer.conv_layer.bias.bfloat16())
               for layer in (block.conv1, block.conv2)]
        centred = fast_residual(x, *low)
        hidden = reflect_conv(x, *low[0], relu=True)
        rounded = x + reflect_conv(hidden, *low[1]).float()
    assert centred.dtype == torch.float32 and centred.shape == x.shape
    error, rounded_error = ((out.double() - expected).square().mean().item() for out in (centred, rounded))
    assert error < rounded_error / 2  # measured: 9e-9 against 2.8e-8


# ------------------------------------------------------------------------------------------ the whole engine


@pytest.mark.parametrize("fused", [False, True])
def test_the_engine_in_float32_is_the_plain_network(official_model, monkeypatch, fused):
    """Where oneDNN's fused convolutions are missing (CUDA, other CPUs) the same code runs on plain conv2d;
    without a lower precision it is the plain network to float32 rounding (ringed maps, window sums and all),
    whole and in tiles."""
    if not fused:
        monkeypatch.setattr(fastconv, "_fused_relu_available", lambda x: False)
    fast = FastMicroAST.from_network(official_model, low_precision=None)
    assert isinstance(fast.decoder.head, PhaseHead) and fast.decoder.dec2.compute_dtype is None
    torch.manual_seed(5)
    content, style = torch.rand(1, 3, 150, 206), torch.rand(1, 3, 95, 83)  # odd sizes: stride 2 on a ring
    with torch.inference_mode():
        expected = official_model.stylize(content, [official_model.encode_style(style)])
        signals = fast.encode_style(style)
        torch.testing.assert_close(fast.stylize(content, [signals]), expected, atol=2e-4, rtol=1e-4)
        assert psnr(fast.stylize(content, [signals], tile=64), expected) >= 55  # float16 maps between stages
        for a, b in zip(fast.encode_style(style, tile=48).components(), signals.components()):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_the_engine_paints_a_batch_of_photos_with_one_style_as_each_alone(official_model):
    """The whole-map path with one style's signals: per-image statistics, the deep block with a scale per image."""
    fast = FastMicroAST.from_network(official_model)
    torch.manual_seed(8)
    content, style = torch.rand(2, 3, 96, 120), torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        signals = fast.encode_style(style)
        together = fast.stylize(content, [signals])
        alone = torch.cat([fast.stylize(image[None], [signals]) for image in content])
        assert together.shape == content.shape and psnr(together, alone) > 45
        expected = official_model.stylize(content, [official_model.encode_style(style)])
        assert psnr(together, expected) > 45


def test_the_engine_uses_bfloat16_only_where_the_cpu_has_it(official_model):
    fast = FastMicroAST.from_network(official_model)
    encoders = (fast.content_encoder, fast.style_encoder)
    blocks = [block for encoder in encoders for block in (encoder.shallow_block, encoder.deep_block)]
    first_layers = [layer for encoder in encoders for layer in
                    (encoder.stem, encoder.down1, encoder.pointwise1, encoder.down2, encoder.pointwise2)]
    assert all(layer.weight.dtype == torch.float32 for layer in first_layers)
    low = torch.bfloat16 if native_bfloat16() else torch.float32
    assert all(block.weight1.dtype == block.weight2.dtype == low for block in blocks)
    # the deep FilterMod block amplifies rounding: the lower precision on centred maps, on whole maps only
    assert fast.decoder.dec1.compute_dtype is None
    assert fast.decoder.centred_dtype == fast.decoder.dec2.compute_dtype == (low if native_bfloat16() else None)
    assert fast.decoder.head.layer1.dtype == low
    # grouped: four phases per channel, two channels per group merged into groups of four (fastconv.regrouped)
    assert fast.decoder.head.kernel1.shape == (128, 4, 3, 3)
    assert fast.decoder.head.groups["kernel1"] == 16
    assert not fast.state_dict()  # prepared weights only: nothing to save or load


def state_of(network: torch.nn.Module) -> dict:
    """Everything about a network that the engine could change: its tensors (values, dtypes, layouts, devices,
    grad flags), every module's attributes and the modules themselves."""
    tensors = {name: (value.detach().clone(), value.dtype, value.stride(), value.device, value.requires_grad)
               for name, value in [*network.named_parameters(), *network.named_buffers()]}
    attributes = {name: {key: value for key, value in vars(module).items()
                         if key not in ("_parameters", "_buffers", "_modules")}
                  for name, module in network.named_modules()}
    modules = {name: type(module) for name, module in network.named_modules()}
    return {"tensors": tensors, "attributes": attributes, "modules": modules}


def assert_same_state(before: dict, after: dict) -> None:
    assert before["modules"] == after["modules"]
    assert before["attributes"].keys() == after["attributes"].keys()
    for name in before["attributes"]:
        assert before["attributes"][name].keys() == after["attributes"][name].keys(), name
    assert before["tensors"].keys() == after["tensors"].keys()
    for name, (value, *details) in before["tensors"].items():
        assert torch.equal(value, after["tensors"][name][0]) and details == list(after["tensors"][name][1:]), name


@pytest.mark.parametrize("low_precision", [None, "native", torch.float16])
def test_building_the_engine_leaves_the_network_as_it_was(official_model, low_precision):
    before = state_of(official_model)
    fast = FastMicroAST.from_network(official_model, low_precision)
    assert_same_state(before, state_of(official_model))
    # its weights are its own: no tensor of the engine shares memory with the network's
    network_memory = {tensor.untyped_storage().data_ptr() for tensor in official_model.state_dict().values()}
    assert not any(buffer.untyped_storage().data_ptr() in network_memory for buffer in fast.buffers())
    with torch.inference_mode():
        content = torch.rand(1, 3, 40, 48)
        fast.stylize(content, [fast.encode_style(content)], tile=32)
    assert_same_state(before, state_of(official_model))


def test_build_gives_each_model_its_engine_and_changes_none(official_model, weights_dir):
    assert isinstance(build(official_model), FastMicroAST)
    adain = load_model("adain-vgg16-hed", weights_dir=weights_dir, device="cpu", fast=False)
    before = state_of(adain)
    fast = build(adain)
    assert type(fast) is type(adain) and fast is not adain
    assert all(p.is_contiguous(memory_format=CL) for p in fast.parameters() if p.dim() == 4)
    assert_same_state(before, state_of(adain))
    johnson = load_model("johnson-la-muse", weights_dir=weights_dir, device="cpu", fast=False)
    assert build(johnson) is johnson  # channels-last makes it slower: its engine is the network
    with pytest.raises(TypeError, match="from a MicroAST"):
        FastMicroAST.from_network(adain)


def test_the_engine_follows_the_network_after_a_training_step(weights_dir):
    """The network as training leaves it (a step of Adam on the real losses, parameters still requiring grad, in
    training's channels-last layout) gives an engine that paints what it paints: training and the engine cannot
    drift apart."""
    from brushwork.train_config import TrainConfig
    from brushwork.training import MicroASTTraining
    from brushwork.vgg import load_loss_network

    torch.manual_seed(0)
    config = TrainConfig(content_dir="c", style_dir="s", batch_size=2)
    network = load_loss_network("vgg16-hed", MicroASTTraining.loss_layers(config), weights_dir=weights_dir)
    module = MicroASTTraining(dataclasses.asdict(config), network)
    module.load_initial("microast", [weights_dir])
    model = module.model.to(memory_format=CL)
    trained = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    content, style = torch.rand(2, 3, 48, 48, generator=generator), torch.rand(2, 3, 48, 48, generator=generator)
    _, terms = module.compute_losses(content.contiguous(memory_format=CL), style.contiguous(memory_format=CL))
    sum(module.loss_weights()[name] * term for name, term in terms.items()).backward()
    optimizer.step()
    assert any(not torch.equal(value, trained[key]) for key, value in model.state_dict().items())

    before = state_of(model)
    exact, fast = FastMicroAST.from_network(model, None), FastMicroAST.from_network(model)
    assert_same_state(before, state_of(model))
    photo, painting = torch.rand(1, 3, 90, 130, generator=generator), torch.rand(1, 3, 64, 64, generator=generator)
    with torch.inference_mode():
        expected = model.eval().stylize(photo, [model.encode_style(painting)])
        torch.testing.assert_close(exact.stylize(photo, [exact.encode_style(painting)]), expected,
                                   atol=2e-4, rtol=1e-4)
        assert psnr(fast.stylize(photo, [fast.encode_style(painting)]), expected) >= 45
        assert psnr(fast.stylize(photo, [fast.encode_style(painting)], tile=64), expected) >= 45


# ------------------------------------------------------------------------------------------ real pairs


def test_the_engine_reproduces_every_official_reference_case(reference, official_model):
    """The official outputs, painted by the engine (the exact path's 50 dB: tests/test_microast.py)."""
    folder, cases = reference
    fast = FastMicroAST.from_network(official_model)
    worst = {}
    for case in cases:
        content, style = (images.to_tensor(images.load_image(folder / case[key])) for key in ("content", "style"))
        expected = np.asarray(images.load_image(folder / case["output"]))
        with torch.inference_mode():
            output = np.asarray(images.to_image(fast.stylize(content, [fast.encode_style(style)])))
        worst[case["output"]] = peak_signal_noise_ratio(expected, output, data_range=255)
    assert len(worst) == (9 if HAVE_SHARED else 2)
    assert min(worst.values()) >= 45, worst


def eval_pair(content_index: int | str, style_name: str) -> tuple[Path, Path]:
    """An evaluation awkward_pair: the shared images by index and name, or (``"sailboat"``) the repository's."""
    if content_index == "sailboat":
        folder = FIXTURES / "reference" / "microast"
        return folder / "content_sailboat.webp", folder / style_name
    if not HAVE_SHARED:
        pytest.skip(NO_SHARED)
    folder = SHARED / "data" / "eval"
    return sorted((folder / "content").iterdir())[content_index], folder / "style" / style_name


def fast_against_plain(plain, fast, content_index: int | str, style_name: str) -> tuple[float, float]:
    """PSNR of ``fast`` to ``plain`` on an evaluation awkward_pair at 514x386 (not a multiple of 4): whole, in tiles."""
    content_path, style_path = eval_pair(content_index, style_name)
    content = to_tensor(Image.open(content_path).convert("RGB").resize((514, 386)))
    style = to_tensor(Image.open(style_path).convert("RGB").resize((256, 256)))
    with torch.inference_mode():
        reference = plain.stylize(content, [plain.encode_style(style)])
        signals = fast.encode_style(style)
        return (psnr(fast.stylize(content, [signals]), reference),
                psnr(fast.stylize(content, [signals], tile=192), reference))


@pytest.mark.parametrize("content_index, style_name", [(3, "asheville.jpg"), (0, "brushstrokes.jpg"),
                                                        (11, "la_muse.jpg"), ("sailboat", "style_brushstrokes.webp")])
def test_official_engine_stays_within_45_db_on_real_pairs(weights_dir, content_index, style_name):
    """Pairs where rounding shows most (the first one was at 44 dB when every encoder convolution ran in
    bfloat16): whole and in tiles."""
    plain = load_model("microast", weights_dir=weights_dir, device="cpu", fast=False)
    fast = load_model("microast", weights_dir=weights_dir, device="cpu")
    assert isinstance(fast, FastMicroAST)
    whole, tiled = fast_against_plain(plain, fast, content_index, style_name)
    assert whole >= 46 and tiled >= 46


@pytest.mark.parametrize("content_index, style_name", [(3, "asheville.jpg"), (11, "la_muse.jpg"),
                                                        ("sailboat", "style_mondrian.webp")])
def test_the_cuda_paths_float16_stays_far_within_45_db_on_real_pairs(weights_dir, monkeypatch, content_index,
                                                                     style_name):
    """The precision the engine takes on CUDA GPUs (float16 in the same layers, plain conv2d without oneDNN's
    fusions), computed on the CPU: a GPU rounds the same values, its kernels summing in another order."""
    monkeypatch.setattr(fastconv, "_fused_relu_available", lambda x: False)
    plain = load_model("microast", weights_dir=weights_dir, device="cpu", fast=False)
    fast = FastMicroAST.from_network(plain, low_precision=torch.float16)
    assert fast.decoder.dec2.compute_dtype == torch.float16 and fast.decoder.centred_dtype == torch.float16
    whole, tiled = fast_against_plain(plain, fast, content_index, style_name)
    # Measured on twelve pairs: 65.6-72.3 dB whole, 55.0-62.8 dB in tiles (their maps stored in float16).
    assert whole >= 60 and tiled >= 52


@pytest.mark.parametrize("name", [*SHIPPED, "adain-vgg16-hed"])
def test_every_shipped_models_engine_stays_within_45_db_of_plain_fp32(weights_dir, awkward_pair, name):
    plain = load_model(name, weights_dir=weights_dir, device="cpu", fast=False)
    fast = load_model(name, weights_dir=weights_dir, device="cpu")
    assert fast is not plain
    content, style = awkward_pair
    with torch.inference_mode():
        reference = plain.stylize(content, [plain.encode_style(style)])
        assert psnr(fast.stylize(content, [fast.encode_style(style)]), reference) >= 45
        assert psnr(fast.stylize(content, [fast.encode_style(style)], tile=128), reference) >= 45


def test_an_encoded_content_paints_as_stylize_does(official_model):
    """encode_content once, then any styles and alphas: the output of stylize, on the plain and the fast path."""
    generator = torch.Generator().manual_seed(0)
    content, style_a, style_b = (torch.rand(1, 3, 38, 53, generator=generator) for _ in range(3))
    fast = FastMicroAST.from_network(official_model, low_precision=None)
    with torch.inference_mode():
        for model in (official_model, fast):
            encoded = model.encode_content(content)
            styles = [model.encode_style(style_a), model.encode_style(style_b)]
            for alpha, mix in ((1.0, None), (0.3, None), (0.6, [0.2, 0.8])):
                chosen = styles if mix else styles[:1]
                expected = model.stylize(content, chosen, mix, alpha)
                painted = model.stylize_encoded(encoded, chosen, mix, alpha)
                assert painted.shape == content.shape
                assert torch.allclose(painted, expected, atol=1e-6)

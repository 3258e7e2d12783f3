"""ONNX export: dynamic sizes, checked against PyTorch, and ONNX Runtime as a backend of the API and CLI."""

from __future__ import annotations

import subprocess
import sys

import onnx
import pytest
import torch
from PIL import Image

from brushwork import Stylizer, load_model
from brushwork.errors import BrushworkError
from brushwork.metrics import psnr
from brushwork.images import to_tensor
from brushwork.onnx_export import SIGNAL_NAMES, STAGES, export_onnx, stage_path, style_path



@pytest.fixture(scope="module")
def images(reference_pair):
    content, style, _ = reference_pair
    return Image.open(content).convert("RGB"), Image.open(style).convert("RGB")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, weights_dir, images):
    folder = tmp_path_factory.mktemp("onnx")
    model = load_model("microast", weights_dir=weights_dir, device="cpu", fast=False)
    content, style = images
    report = export_onnx(model, folder / "microast.onnx", check_content=to_tensor(content.resize((160, 120))),
                         check_style=to_tensor(style.resize((128, 128))))
    return folder / "microast.onnx", report


def test_export_writes_checked_graphs_with_dynamic_sizes(exported):
    path, report = exported
    assert report.paths == [path, style_path(path), *(stage_path(path, stage) for stage in STAGES)]
    assert report.psnr_db >= 45
    graph = onnx.load(str(path)).graph
    assert [node.name for node in graph.input] == ["content", *SIGNAL_NAMES]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [dims[2].dim_param, dims[3].dim_param] == ["height", "width"]
    onnx.checker.check_model(str(style_path(path)))


@pytest.mark.parametrize("size", [(203, 149), (640, 360)])
def test_onnx_runtime_matches_pytorch_at_other_sizes(exported, weights_dir, images, size):
    path, _ = exported
    content, style = (to_tensor(image) for image in (images[0].resize(size), images[1].resize((256, 256))))
    plain = load_model("microast", weights_dir=weights_dir, device="cpu", fast=False)
    runtime = load_model(str(path), device="cpu")
    with torch.inference_mode():
        reference = plain.stylize(content, [plain.encode_style(style)], alpha=0.7)
        result = runtime.stylize(content, [runtime.encode_style(style)], alpha=0.7)
    assert result.shape == content.shape
    assert psnr(result, reference) >= 45


def test_onnx_runtime_matches_the_fast_engine_too(exported, weights_dir, images):
    """The export of the plain network agrees with both of PyTorch's executors: the network and its engine."""
    path, _ = exported
    content, style = (to_tensor(image) for image in (images[0].resize((320, 236)), images[1].resize((256, 256))))
    engine = load_model("microast", weights_dir=weights_dir, device="cpu")
    runtime = load_model(str(path), device="cpu")
    with torch.inference_mode():
        assert psnr(runtime.stylize(content, [runtime.encode_style(style)]),
                    engine.stylize(content, [engine.encode_style(style)])) >= 45


def test_the_tuned_heads_export_matches_the_network_and_the_engine(tmp_path, weights_dir, images):
    """The other shipped head (MicroAST-CV's bicubic, 15x15) exports too, and paints whole and in tiles what the
    network and its engine paint."""
    content, style = (to_tensor(image) for image in (images[0].resize((250, 180)), images[1].resize((128, 128))))
    plain = load_model("microast-cv-coco-wikiart", weights_dir=weights_dir, device="cpu", fast=False)
    engine = load_model("microast-cv-coco-wikiart", weights_dir=weights_dir, device="cpu")
    report = export_onnx(plain, tmp_path / "tuned.onnx", check_content=content[..., :96, :128], check_style=style)
    assert report.psnr_db >= 45
    runtime = load_model(str(tmp_path / "tuned.onnx"), device="cpu")
    with torch.inference_mode():
        encoded = runtime.encode_style(style)
        for painted in (runtime.stylize(content, [encoded]), runtime.stylize(content, [encoded], tile=128)):
            for model in (plain, engine):
                assert psnr(painted, model.stylize(content, [model.encode_style(style)])) >= 45


def test_onnx_runtime_paints_large_images_in_tiles(exported, weights_dir, images):
    path, _ = exported
    content = to_tensor(images[0].resize((700, 460)))
    style = to_tensor(images[1].resize((256, 256)))
    plain = load_model("microast", weights_dir=weights_dir, device="cpu", fast=False)
    runtime = load_model(str(path), device="cpu")
    assert runtime.tile_for(460, 700, 64 * 2**20) is not None and runtime.tile_for(460, 700, None) is None
    done = []
    with torch.inference_mode():
        reference = plain.stylize(content, [plain.encode_style(style)])
        tiled = runtime.stylize(content, [runtime.encode_style(style)], tile=256, progress=done.append)
    assert tiled.shape == content.shape and len(done) == runtime.decode_steps(content, 256) > 3
    assert psnr(tiled, reference) >= 45


def test_onnx_model_is_a_backend_of_the_api_and_cli(exported, images, tmp_path):
    path, _ = exported
    content, style = images
    content.resize((240, 180)).save(tmp_path / "photo.jpg")
    style.resize((200, 200)).save(tmp_path / "painting.jpg")
    mixed = Stylizer(str(path), style_weights=[0.3, 0.7], device="cpu")(tmp_path / "photo.jpg",
                                                                         [tmp_path / "painting.jpg", "sample:ihc"])
    assert mixed.size == (240, 180)
    run = subprocess.run([sys.executable, "-m", "brushwork", "stylize", tmp_path / "photo.jpg",
                          tmp_path / "painting.jpg", "--model", path, "-o", tmp_path / "out.png"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert Image.open(tmp_path / "out.png").size == (240, 180)


def test_cli_export_with_a_baked_style(weights_dir, images, tmp_path):
    content, style = images
    style.resize((256, 256)).save(tmp_path / "painting.png")
    run = subprocess.run([sys.executable, "-m", "brushwork", "export", "--weights-dir", weights_dir, "-o",
                          tmp_path / "baked.onnx", "--style", tmp_path / "painting.png", "--style-size", "256",
                          "--check-size", "128"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "dB PSNR" in run.stdout and not style_path(tmp_path / "baked.onnx").exists()
    assert [node.name for node in onnx.load(str(tmp_path / "baked.onnx")).graph.input] == ["content"]
    plain = load_model(weights_dir=weights_dir, device="cpu", fast=False)  # the default model, as exported
    baked = load_model(str(tmp_path / "baked.onnx"), device="cpu")
    photo = to_tensor(content.resize((300, 200)))
    painting = to_tensor(Image.open(tmp_path / "painting.png"))
    with torch.inference_mode():
        assert psnr(baked.stylize(photo, [baked.encode_style(painting)]),
                    plain.stylize(photo, [plain.encode_style(painting)])) >= 45
        with pytest.raises(BrushworkError, match="baked"):
            baked.stylize(photo, [None], alpha=0.5)


def test_export_refuses_what_it_cannot_export(weights_dir, tmp_path):
    run = subprocess.run([sys.executable, "-m", "brushwork", "export", "--model", "adain-vgg16-hed",
                          "--weights-dir", weights_dir, "-o", tmp_path / "adain.onnx"], capture_output=True, text=True)
    assert run.returncode != 0 and "MicroAST" in run.stderr and "Traceback" not in run.stderr
    with pytest.raises(BrushworkError, match="plain MicroAST network"):  # the engine's fused kernels do not export
        export_onnx(load_model("microast", weights_dir=weights_dir, device="cpu"), tmp_path / "engine.onnx",
                    check_content=torch.rand(1, 3, 32, 32), check_style=torch.rand(1, 3, 32, 32))
    model = load_model("microast", weights_dir=weights_dir, device="cpu", fast=False)
    with pytest.raises(BrushworkError, match=".onnx"):
        export_onnx(model, tmp_path / "model.bin", check_content=torch.rand(1, 3, 32, 32),
                    check_style=torch.rand(1, 3, 32, 32))
    (tmp_path / "broken.onnx").write_bytes(b"not a graph")
    with pytest.raises(BrushworkError, match="ONNX Runtime"):
        load_model(str(tmp_path / "broken.onnx"), device="cpu")
    with pytest.raises(BrushworkError, match="no such ONNX file"):
        load_model(str(tmp_path / "missing.onnx"), device="cpu")

"""MicroAST as ONNX: export with dynamic height and width, check against PyTorch, and run with ONNX Runtime.

An export is two graphs, so that styles stay free: ``NAME.onnx`` paints a content image with style signals given
as inputs (``content`` 1x3xHxW in [0, 1], H and W multiples of 4, and the eight 1x64x1x1 signals), and
``NAME.style.onnx`` turns a style image into those signals. With a style given at export time, the signals are
baked into one graph instead, whose only input is ``content``. :class:`OnnxMicroAST` runs either as a brushwork
model (``load_model("NAME.onnx")``), padding and cropping any size as :class:`~brushwork.methods.microast.MicroAST`
does.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .errors import BrushworkError
from .metrics import psnr
from .methods.microast import MicroAST, StyleSignals, mixed_signals, pad_to
from .methods.microast_tiles import SECOND_HALF_HALO, SIZE_MULTIPLE, paint_in_tiles

SIGNAL_NAMES = tuple(f"{field.name}_{level}" for field in fields(StyleSignals) for level in ("shallow", "deep"))
#: PSNR (dB) an export must reach against PyTorch on the check image, or it is refused.
MIN_PSNR = 45.0
OPSET = 18


class _PaintGraph(nn.Module):
    """content (H, W multiples of 4) and the eight signals -> painted image."""

    def __init__(self, model: MicroAST):
        super().__init__()
        self.model = model

    def forward(self, content: torch.Tensor, *signals: torch.Tensor) -> torch.Tensor:
        return self.model.decoder(self.model.content_encoder(content), _signals_from(list(signals)))


class _BakedGraph(nn.Module):
    """content -> painted image, with one style's signals as constants."""

    def __init__(self, model: MicroAST, signals: StyleSignals):
        super().__init__()
        self.model = model
        for name, tensor in zip(SIGNAL_NAMES, signals.components()):
            self.register_buffer(name, tensor.clone())

    def forward(self, content: torch.Tensor) -> torch.Tensor:
        signals = _signals_from([getattr(self, name) for name in SIGNAL_NAMES])
        return self.model.decoder(self.model.content_encoder(content), signals)


class _EncoderStage(nn.Module):
    """Tiled painting, stage 1: content tile -> deep content features (a quarter of the size)."""

    def __init__(self, model: MicroAST):
        super().__init__()
        self.model = model

    def forward(self, content: torch.Tensor) -> torch.Tensor:
        return self.model.content_encoder(content)[1]


class _HalfStage(nn.Module):
    """Tiled painting, stage 2 or 3: a tile of the previous stage's map, the whole map's statistics and the style
    signals of one level -> the first half's hidden map, or the second half's image."""

    def __init__(self, model: MicroAST, level: int):
        super().__init__()
        self.model, self.level = model, level

    def forward(self, features, own_mean, own_std, mean, std, filter_weight, filter_bias) -> torch.Tensor:
        # Only this level's signals are read; the other level's slots take the same tensors.
        signals = StyleSignals((mean, mean), (std, std), (filter_weight, filter_weight), (filter_bias, filter_bias))
        half = self.model.decoder.first_half if self.level == 1 else self.model.decoder.second_half
        return half(features, signals, (own_mean, own_std))


#: The tiled-painting stages: file suffix, input names after the map.
STAGES = ("encoder", "first", "second")
_HALF_INPUTS = ["own_mean", "own_std", "mean", "std", "filter_weight", "filter_bias"]


class _StyleGraph(nn.Module):
    """style image -> the eight signals."""

    def __init__(self, model: MicroAST):
        super().__init__()
        self.model = model

    def forward(self, style: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.encode_style(style).components())


def _signals_from(tensors: list[torch.Tensor]) -> StyleSignals:
    """The inverse of :meth:`StyleSignals.components` (two levels per field, in field order)."""
    values = iter(tensors)
    return StyleSignals(**{field.name: (next(values), next(values)) for field in fields(StyleSignals)})


@dataclass
class ExportReport:
    paths: list[Path]
    psnr_db: float
    check_size: tuple[int, int]


def export_onnx(model: MicroAST, output: Path, *, style: torch.Tensor | None = None,
                check_content: torch.Tensor, check_style: torch.Tensor, opset: int = OPSET) -> ExportReport:
    """Export ``model`` (plain fp32) to ``output`` (and ``output``'s ``.style.onnx`` unless ``style`` is baked in),
    then paint ``check_content`` with both ONNX Runtime and PyTorch; refuse (and delete) an export below 45 dB."""
    if not isinstance(model, MicroAST):
        raise BrushworkError("ONNX export is for the plain MicroAST network (the registry's microast* or a trained "
                             "folder, loaded with fast=False)")
    output = Path(output)
    if output.suffix != ".onnx":
        raise BrushworkError(f"{output}: an ONNX file name ends in .onnx")
    output.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    example = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        if style is not None:
            graphs = [(_BakedGraph(model, model.encode_style(style)), (example,), ["content"], ["image"], output)]
        else:
            signals = tuple(model.encode_style(example).components())
            probe = model.encode_style(example)
            deep = model.content_encoder(example)[1]
            own = [deep.mean((2, 3), keepdim=True), deep.std((2, 3), keepdim=True)]
            level_inputs = {level: own + [probe.means[level], probe.stds[level], probe.filter_weights[level],
                                          probe.filter_biases[level]] for level in (0, 1)}
            graphs = [(_PaintGraph(model), (example, *signals), ["content", *SIGNAL_NAMES], ["image"], output),
                      (_StyleGraph(model), (example,), ["style"], list(SIGNAL_NAMES), style_path(output)),
                      (_EncoderStage(model), (example,), ["content"], ["features"], stage_path(output, "encoder")),
                      (_HalfStage(model, 1), (deep, *level_inputs[1]), ["features", *_HALF_INPUTS], ["hidden"],
                       stage_path(output, "first")),
                      (_HalfStage(model, 0), (deep, *level_inputs[0]), ["features", *_HALF_INPUTS], ["image"],
                       stage_path(output, "second"))]
        written = []
        try:
            for module, inputs, input_names, output_names, path in graphs:
                axes = {input_names[0]: {2: "height", 3: "width"}}
                if output_names in (["image"], ["features"], ["hidden"]):
                    axes[output_names[0]] = {2: "out_height", 3: "out_width"}
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
                    torch.onnx.export(module, inputs, str(path), input_names=input_names, output_names=output_names,
                                      dynamic_axes=axes, opset_version=opset, dynamo=False)
                written.append(path)
            onnx_model = load_onnx(output.resolve(), output.stat().st_mtime_ns, torch.device("cpu"))
            reference = model.decode(check_content, model.encode_style(check_style if style is None else style))
            encoded = onnx_model.encode_style(check_style)
            exported = [onnx_model.stylize(check_content, [encoded])]
            if onnx_model.stages:  # and in tiles, smaller than the check image
                exported.append(onnx_model.stylize(check_content, [encoded], tile=max(64, min(check_content.shape[-2:]) // 2)))
        except BrushworkError:
            raise
        except Exception as error:  # the exporter's and ONNX Runtime's errors are many and unrelated
            for path in written:
                path.unlink(missing_ok=True)
            raise BrushworkError(f"ONNX export failed: {str(error).splitlines()[0]}") from None
    psnr_db = min(psnr(result, reference) for result in exported)
    if psnr_db < MIN_PSNR:
        for path in written:
            path.unlink(missing_ok=True)
        raise BrushworkError(f"the ONNX model differs from PyTorch ({psnr_db:.1f} dB PSNR < {MIN_PSNR:.0f} dB); "
                             "nothing written")
    return ExportReport(written, psnr_db, tuple(check_content.shape[-2:]))


def style_path(output: Path) -> Path:
    """Where the style-encoder graph of an export to ``output`` goes: ``NAME.style.onnx``."""
    return output.with_name(output.stem + ".style.onnx")


def stage_path(output: Path, stage: str) -> Path:
    """Where a tiled-painting stage of an export to ``output`` goes: ``NAME.<stage>.onnx``."""
    return output.with_name(f"{output.stem}.{stage}.onnx")


class OnnxMicroAST(nn.Module):
    """A MicroAST exported to ONNX, run by ONNX Runtime, with the interface of the PyTorch model (``encode_style``,
    ``stylize`` with weights and ``alpha``) so that the API, CLI and benchmarks take it as a backend."""

    method = "microast"

    def __init__(self, path: Path, device: torch.device):
        super().__init__()
        import onnxruntime

        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise BrushworkError("this ONNX Runtime has no CUDA provider; install onnxruntime-gpu or use "
                                     "--device cpu")
            providers.insert(0, "CUDAExecutionProvider")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.log_severity_level = 3  # no warnings about the graph on every load
        # No memory arena: with tiles of changing sizes it keeps the largest of every buffer, which breaks the
        # memory budget (3840x2160 in tiles, measured: 2.3 GB and 6.9 s with it, 1.4 GB and 8.5 s without).
        options.enable_cpu_mem_arena = False
        try:
            self.paint_session = onnxruntime.InferenceSession(str(path), options, providers=providers)
            style_file = style_path(path)
            self.style_session = (onnxruntime.InferenceSession(str(style_file), options, providers=providers)
                                  if style_file.is_file() else None)
            stage_files = [stage_path(path, stage) for stage in STAGES]
            #: The tiled-painting stages (exports without a baked style): large images go through them in tiles.
            self.stages = ([onnxruntime.InferenceSession(str(f), options, providers=providers) for f in stage_files]
                           if all(f.is_file() for f in stage_files) else [])
        except Exception as error:
            raise BrushworkError(f"{path}: not a model ONNX Runtime can run ({str(error).splitlines()[0]})") from None
        inputs = [node.name for node in self.paint_session.get_inputs()]
        self.baked = inputs == ["content"]
        if not self.baked and (inputs != ["content", *SIGNAL_NAMES] or self.style_session is None):
            raise BrushworkError(f"{path}: not a brushwork MicroAST export (inputs {inputs}, or its "
                                 f"{style_path(path).name} is missing)")
        self.path = path
        self.device = device

    def encode_style(self, style: torch.Tensor) -> StyleSignals | None:
        """The style's signals (None for an export with its style baked in: that style is used)."""
        if self.baked:
            return None
        outputs = self.style_session.run(None, {"style": _numpy(pad_to(style, 1))})
        return _signals_from([torch.from_numpy(value) for value in outputs])

    def stylize(self, content: torch.Tensor, styles: Sequence[StyleSignals | None],
                style_weights: Sequence[float] | None = None, alpha: float = 1.0, tile: int | None = None,
                progress=None) -> torch.Tensor:
        """As :meth:`MicroAST.stylize`; ``tile`` paints in tiles through the stage graphs (when the export has
        them), with the statistics of the whole image between stages."""
        height, width = content.shape[-2:]
        padded = pad_to(content, SIZE_MULTIPLE)
        if self.baked:
            if alpha != 1.0 or len(styles) > 1:
                raise BrushworkError(f"{self.path.name} has its style baked in: no alpha or style mixing; export "
                                     "without --style for those")
            painted = torch.from_numpy(self.paint_session.run(None, {"content": _numpy(padded)})[0])
        else:
            signals = mixed_signals(styles, style_weights, alpha, lambda: self.encode_style(content))
            if tile is not None and self.stages:
                painted = self._paint_in_tiles(padded, signals, tile, progress)
            else:
                feeds = {"content": _numpy(padded)} | {name: _numpy(value) for name, value in
                                                       zip(SIGNAL_NAMES, signals.components())}
                painted = torch.from_numpy(self.paint_session.run(None, feeds)[0])
        return painted[..., :height, :width].to(content.device)

    def _paint_in_tiles(self, padded: torch.Tensor, signals: StyleSignals, tile: int, progress) -> torch.Tensor:
        """The three stages of :meth:`MicroAST.decode` in tiles, run by ONNX Runtime."""
        encoder, first, second = self.stages

        def run(session, features: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
            feeds = {"features" if extra else "content": _numpy(features)}
            feeds |= {name: _numpy(value) for name, value in zip(_HALF_INPUTS, extra)}
            return torch.from_numpy(session.run(None, feeds)[0])

        def level(own, index: int) -> tuple[torch.Tensor, ...]:
            return (*own, signals.means[index], signals.stds[index], signals.filter_weights[index],
                    signals.filter_biases[index])

        # The export does not record its decoder head: the widest head's margin is exact for all of them.
        return paint_in_tiles(padded, tile, progress=progress, second_halo=max(SECOND_HALF_HALO.values()),
                              encode=lambda piece: run(encoder, piece),
                              first_half=lambda piece, own: run(first, piece, *level(own, 1)),
                              second_half=lambda piece, own: run(second, piece, *level(own, 0)))

    def tile_for(self, height: int, width: int, budget: int | None) -> int | None:
        """As :meth:`MicroAST.tile_for`, for exports that have the stage graphs (others never tile)."""
        return MicroAST.tile_for(height, width, budget) if self.stages and not self.baked else None

    decode_steps = staticmethod(MicroAST.decode_steps)

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.stylize(content, [self.encode_style(style)])


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().float().cpu().numpy())


@functools.lru_cache(maxsize=4)
def load_onnx(path: Path, modified: int, device: torch.device) -> OnnxMicroAST:
    """An export as a model, loaded once per file version (``modified``) and device."""
    return OnnxMicroAST(path, device)


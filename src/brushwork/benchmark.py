"""Speed and memory of the models, each figure next to a baseline measured in the same run.

Every case (model, size, device, variant) runs in a fresh process, so that its peak resident memory is its own.
Variants: ``brushwork`` is the path users get (the fast path of ``load_model``, ``encode_style`` then ``stylize``
under inference mode, tiled within the default memory budget as :class:`~brushwork.api.Stylizer` does);
``baseline`` is the plain eager fp32 pattern of the reference implementation: the plain network's
``forward(content, style)`` on the whole image under ``no_grad``, no tiling, no fusion; ``onnx`` (MicroAST, on
request) is the model exported to ONNX and run by ONNX Runtime, in tiles within the same budget. The baseline's
process starts without the settings ``import brushwork`` makes (huge pages for large tensors), as the reference
implementation's would.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from . import process, reports
from . import weights as registry
from .api import DEFAULT_MAX_MEMORY, load_model
from .devices import choose_device
from .errors import BrushworkError
from .tiling import memory_budget, memory_setting

DEFAULT_SIZES = ("512", "1024", "2048", "3840x2160")
VARIANTS = ("brushwork", "baseline")
ONNX_VARIANT = "onnx"
STYLE_SIZE = (512, 512)
#: The process settings ``import brushwork`` makes (:mod:`brushwork.process`), off in the baseline's process.
PROCESS_VARIABLES = (process.HUGE_PAGES_VARIABLE, process.KEEP_FREED_MEMORY_VARIABLE)


@dataclass(frozen=True)
class Case:
    model: str
    variant: str
    device: str
    width: int
    height: int
    runs: int
    warmup: int
    #: Settings of the model (gatys: its optimisation settings), as (name, value) pairs.
    options: tuple = ()
    #: The brushwork variant's memory budget in bytes (None: never tile; 'auto': as for its device).
    max_memory: int | str | None = None


@dataclass(frozen=True)
class ConvergenceCase:
    """One Gatys optimisation of a real image pair, multi-scale or single-scale, with its loss history."""

    variant: str
    device: str
    width: int
    height: int
    steps: int
    content: str
    style: str
    loss_net: str
    min_side: int = 256


@dataclass(frozen=True)
class TrainingCase:
    variant: str
    device: str
    batch_size: int
    crop: int
    loss_net: str
    runs: int
    warmup: int
    method: str = "microast"


#: Training-step variants: brushwork's step as ``brushwork train`` runs it (bfloat16 autocast where the device
#: has it, channels-last), the same step in plain float32 (the step before those), and for MicroAST the
#: reference implementation's step.
TRAINING_VARIANTS = ("brushwork", "fp32", "baseline")


def parse_size(text: str) -> tuple[int, int]:
    """'1024' -> (1024, 1024); '3840x2160' -> (3840, 2160), width first."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 8:
        raise BrushworkError(f"a size is N or WIDTHxHEIGHT with sides of at least 8 pixels, not {text!r}")
    return parts[0], parts[1]


def run_benchmark(models: list[str], sizes: list[str], devices: list[str] | None = None, *, runs: int = 5,
                  warmup: int = 1, rounds: int = 2, baseline: bool = True, weights_dir=None,
                  progress: bool = True, gatys_steps: int | None = None,
                  max_memory: int | str | None = DEFAULT_MAX_MEMORY,
                  onnx: bool = False) -> list[dict]:
    """Measure every model x size x device, with the baseline next to each; one result dict per case.

    Each case runs ``rounds`` times in fresh processes, the variants in alternating order (A B, then B A), so
    that a machine getting slower or faster over the run does not favour one of them. Timings of all rounds
    are pooled; the peak memory is the largest of the rounds.
    """
    if runs < 1 or warmup < 0 or rounds < 1:
        raise BrushworkError("runs and rounds must be at least 1 and warm-up at least 0")
    shapes = [parse_size(size) for size in sizes]
    devices = devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    for device in devices:
        choose_device(device)  # refuse an absent GPU before starting
    options = {model: _options_of(model, gatys_steps) for model in models}
    for model in models:
        load_model(model, device="cpu", weights_dir=weights_dir, **dict(options[model]))  # fail early
    variants = VARIANTS if baseline else VARIANTS[:1]
    budget = memory_setting(max_memory)  # 'auto' is decided for each case's device
    with tempfile.TemporaryDirectory(prefix="brushwork-bench-") as folder:
        exports = _export_for_benchmark(models, Path(folder), weights_dir) if onnx else {}
        groups = [[Case(model, variant, device, width, height, runs, warmup, options[model], budget)
                   for variant in variants] +
                  [Case(exports[model], ONNX_VARIANT, device, width, height, runs, warmup, (), budget) for _ in
                   ([None] if model in exports else [])]
                  for model in models for device in devices for width, height in shapes]
        results = _run_rounds(groups, _measure, weights_dir, rounds, "benchmark", progress)
    for result in results:  # name ONNX cases by the model they export, not the temporary file
        result["model"] = next((name for name, path in exports.items() if path == result["model"]), result["model"])
    return results


def _export_for_benchmark(models: list[str], folder: Path, weights_dir) -> dict[str, str]:
    """Each MicroAST model exported to ONNX in ``folder`` (other methods have no ONNX export)."""
    from .images import as_image, resize, to_tensor
    from .methods.microast import MicroAST
    from .onnx_export import export_onnx

    exports = {}
    for name in models:
        model = load_model(name, device="cpu", weights_dir=weights_dir, fast=False)
        if isinstance(model, MicroAST):
            path = folder / f"{name}.onnx"
            export_onnx(model, path, check_content=to_tensor(resize(as_image("sample:astronaut"), 256)),
                        check_style=to_tensor(resize(as_image("sample:hubble"), 256)))
            exports[name] = str(path)
    return exports


def _run_rounds(groups: list[list], measure, weights_dir, rounds: int, label: str, progress: bool) -> list[dict]:
    """Run every case of every group ``rounds`` times, each in a fresh process, the cases of a group in
    alternating order; pool each case's rounds into one result."""
    dirs = [str(d) for d in registry.search_dirs(weights_dir)]
    context = multiprocessing.get_context("spawn")
    results = []
    with tqdm(total=sum(map(len, groups)) * rounds, desc=label, unit="process", disable=not progress,
              file=sys.stderr) as bar:
        for group in groups:
            measured: dict = {case: [] for case in group}
            for round_index in range(rounds):
                for case in group if round_index % 2 == 0 else group[::-1]:
                    with _process_settings(case.variant), \
                            concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
                        measured[case].append(pool.submit(measure, case, dirs).result())
                    bar.update()
            results += [_pool_rounds(case, rounds_of_case) for case, rounds_of_case in measured.items()]
    return results


@contextlib.contextmanager
def _process_settings(variant: str):
    """The environment a case's process starts with. The baseline runs as the reference implementation does,
    without the process settings ``import brushwork`` makes (huge pages, freed memory kept for reuse)."""
    if variant != "baseline":
        yield
        return
    saved = {name: os.environ.get(name) for name in PROCESS_VARIABLES}
    os.environ.update({name: "0" for name in PROCESS_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def _options_of(model: str, gatys_steps: int | None) -> tuple:
    if model != "gatys":
        return ()
    return (("progress", False),) + ((("steps", gatys_steps),) if gatys_steps else ())


def _pool_rounds(case, measured: list[dict]) -> dict:
    times = [t for result in measured for t in result["times_s"]]
    gpu = [r["peak_gpu_mb"] for r in measured if r["peak_gpu_mb"] is not None]
    return {
        **asdict(case),
        "rounds": len(measured),
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "times_s": times,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in measured),
        "idle_rss_mb": min((r["idle_rss_mb"] for r in measured if r["idle_rss_mb"] is not None), default=None),
        "peak_gpu_mb": max(gpu) if gpu else None,
        "threads": measured[0]["threads"],
        "torch": measured[0]["torch"],
        **({"load_averages": [r["load_average"] for r in measured]} if "load_average" in measured[0] else {}),
        **{key: measured[-1][key] for key in ("history", "scales", "sizes", "tile", "huge_pages", "keeps_freed_memory",
                                              "precision")
           if key in measured[-1]},
    }


def _measure(case: Case, weights_dir: list[str]) -> dict:
    """One case, in its own process: timings of ``runs`` calls after ``warmup`` calls, and peak memory."""
    device = choose_device(case.device)
    model = load_model(case.model, device=device, weights_dir=weights_dir, fast=case.variant != "baseline",
                       **dict(case.options))
    generator = torch.Generator().manual_seed(0)
    content = torch.rand(1, 3, case.height, case.width, generator=generator).to(device)
    style = torch.rand(1, 3, *STYLE_SIZE, generator=generator).to(device)
    tile_for = getattr(model, "tile_for", None) if case.variant != "baseline" else None
    budget = memory_budget(case.max_memory, device)
    tiling = {"tile": tile} if tile_for and (tile := tile_for(case.height, case.width, budget)) else {}

    if case.variant == "baseline":
        def call():
            with torch.no_grad():
                return model(content, style)
    else:
        def call():
            with torch.inference_mode():
                styles = [model.encode_style(style)] if getattr(model, "needs_style", True) else []
                return model.stylize(content, styles, **tiling)

    def timed() -> float:
        start = time.perf_counter()
        output = call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        assert output.shape == content.shape
        return time.perf_counter() - start

    idle_rss = _current_rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(case.warmup):
        timed()
    times = [timed() for _ in range(case.runs)]
    return {
        "times_s": times,
        "peak_rss_mb": _peak_rss_mb(),
        "idle_rss_mb": idle_rss,
        "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "tile": tiling.get("tile"),
        "huge_pages": os.environ.get(process.HUGE_PAGES_VARIABLE) == "1",
        "keeps_freed_memory": process.keeps_freed_memory,
    }


@dataclass(frozen=True)
class VideoCase:
    """One run of ``stylize_video`` over a synthetic clip file, as ``brushwork video`` does it."""

    variant: str  # a temporal mode, with "+measure" when the warping error is measured
    clip: str
    style: str
    model: str
    width: int
    height: int
    frames: int
    runs: int
    warmup: int
    strength: float
    device: str = "cpu"


#: Video variants: each temporal mode without the warping error's measurement, and the command's default (flow,
#: measured). Every figure is also a ratio against ``none`` in the same run.
VIDEO_VARIANTS = ("none", "blend", "flow", "flow+measure")


def run_video_benchmark(sizes: list[str], *, variants: Sequence[str] = VIDEO_VARIANTS, frames: int = 24,
                        runs: int = 1, warmup: int = 0, rounds: int = 2, model: str | None = None,
                        content: str = "sample:astronaut", style: str = "sample:hubble",
                        strength: float | None = None, device: str = "cpu", weights_dir=None,
                        progress: bool = True) -> list[dict]:
    """Frames per second of whole ``stylize_video`` runs (decoding, painting, the temporal filter, the measurement
    where asked, encoding) on a synthetic pan (3 px a frame, noise sigma 3) of ``frames`` frames over ``content``,
    per size and variant, each in fresh processes, the variants in alternating order over ``rounds``. Each
    process first paints ``warmup`` runs of two frames, untimed, then ``runs`` timed runs of the whole clip."""
    from .clips import synthetic_clip, write_clip
    from .temporal import DEFAULT_STRENGTH, TEMPORAL_MODES

    for variant in variants:
        if variant.split("+")[0] not in TEMPORAL_MODES or variant.split("+")[1:] not in ([], ["measure"]):
            raise BrushworkError(f"unknown video variant {variant!r}; use a temporal mode "
                                 f"({', '.join(TEMPORAL_MODES)}), with +measure to measure the warping error")
    if frames < 2 or runs < 1 or warmup < 0 or rounds < 1:
        raise BrushworkError("a video benchmark needs at least 2 frames, 1 run and 1 round")
    choose_device(device)
    shapes = [parse_size(size) for size in sizes]
    strength = DEFAULT_STRENGTH if strength is None else strength
    with tempfile.TemporaryDirectory(prefix="brushwork-video-bench-") as folder:
        groups = []
        for width, height in shapes:
            clip = write_clip(synthetic_clip("pan", content, width=width, height=height, frames=frames),
                              Path(folder) / f"pan-{width}x{height}.mp4")
            groups.append([VideoCase(variant, str(clip), style, model or registry.DEFAULT_MODEL, width, height, frames,
                                     runs, warmup, strength, device) for variant in variants])
        results = _run_rounds(groups, _measure_video, weights_dir, rounds, "video benchmark", progress)
    for result in results:
        result["fps"] = result["frames"] / result["median_s"]
    return results


def _measure_video(case: VideoCase, weights_dir: list[str]) -> dict:
    """Whole ``stylize_video`` runs of one case, in its own process."""
    from .api import Stylizer
    from .video import stylize_video

    stylizer = Stylizer(case.model, device=case.device, weights_dir=weights_dir)
    mode, *measure = case.variant.split("+")
    times = []
    with tempfile.TemporaryDirectory(prefix="brushwork-video-") as folder:
        for index in range(case.warmup + case.runs):
            # A warm-up run paints two frames: the first calls are slow (kernels chosen, memory first touched).
            report = stylize_video(case.clip, case.style, Path(folder) / "out.mp4", stylizer=stylizer, temporal=mode,
                                   smooth=case.strength, measure=bool(measure), progress=False,
                                   max_frames=2 if index < case.warmup else None)
            if index >= case.warmup:
                times.append(report.seconds)
    return {"times_s": times, "peak_rss_mb": _peak_rss_mb(), "idle_rss_mb": None, "peak_gpu_mb": None,
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def video_table(results: list[dict]) -> str:
    """One row per size and variant: frames/s (median of the runs' whole-clip times), the ratio to painting each
    frame alone (``none``) in the same run, and the host's load during the runs."""
    header = ("size", "variant", "frames", "frames/s", "s per clip median (min-max)", "vs none", "peak RSS",
              "load average")
    alone = {(r["width"], r["height"]): r for r in results if r["variant"] == "none"}
    rows = []
    for result in results:
        base = alone.get((result["width"], result["height"]))
        ratio = f"{result['fps'] / base['fps']:.2f}x" if base else "-"
        rows.append([f"{result['width']}x{result['height']}", result["variant"], str(result["frames"]),
                     f"{result['fps']:.2f}", _timing(result), ratio, _memory(result),
                     " ".join(f"{load:.1f}" for load in result.get("load_averages", []))])
    return reports.markdown_table(header, rows)


def run_gatys_convergence(size: str, *, steps: int = 300, content: str = "sample:astronaut",
                          style: str = "sample:chelsea", device: str = "cpu", loss_net: str = "auto",
                          min_side: int = 256, weights_dir=None, progress: bool = True) -> dict:
    """Time for Gatys to reach a given loss, coarse-to-fine against single-scale, each in a fresh process.

    Both optimise the same pair at the full size with the default settings (``steps`` evaluations at the
    coarsest scale, for single-scale at the full size). The given loss is the lowest that *both* reach at the full
    size; the result gives each one's seconds to first reach it, and their ratio.
    """
    from .vgg import choose_loss_net

    width, height = parse_size(size)
    choose_device(device)
    loss_net = choose_loss_net(loss_net, weights_dir)
    group = [ConvergenceCase(variant, device, width, height, steps, content, style, loss_net, min_side)
             for variant in ("multiscale", "single-scale")]
    results = {r["variant"]: r for r in _run_rounds([group], _measure_convergence, weights_dir, 1,
                                                     "gatys convergence", progress)}
    final = {variant: [loss for _, _, scale, loss in r["history"] if scale == r["scales"] - 1]
             for variant, r in results.items()}
    target = max(min(losses) for losses in final.values())
    summary = {"size": f"{width}x{height}", "steps": steps, "loss_net": loss_net, "content": content,
               "style": style, "target_loss": target}
    for variant, r in results.items():
        reached = next(seconds for seconds, _, scale, loss in r["history"]
                       if scale == r["scales"] - 1 and loss <= target)
        summary[variant] = {"seconds_to_target": reached, "total_seconds": r["median_s"],
                            "final_loss": min(final[variant]), "evaluations": len(r["history"]),
                            "sizes": r["sizes"], "peak_rss_mb": r["peak_rss_mb"]}
    summary["speedup"] = summary["single-scale"]["seconds_to_target"] / summary["multiscale"]["seconds_to_target"]
    return summary


def _measure_convergence(case: ConvergenceCase, weights_dir: list[str]) -> dict:
    from .images import as_image, resize, to_tensor

    device = choose_device(case.device)
    model = load_model("gatys", device=device, weights_dir=weights_dir, loss_net=case.loss_net, steps=case.steps,
                       multiscale=case.variant == "multiscale", min_side=case.min_side, progress=True)
    content = to_tensor(as_image(case.content).resize((case.width, case.height))).to(device)
    style = to_tensor(resize(as_image(case.style), 512)).to(device)
    idle_rss = _current_rss_mb()
    start = time.perf_counter()
    model.stylize(content, [model.encode_style(style)])
    seconds = time.perf_counter() - start
    run = model.last_run
    return {"times_s": [seconds], "peak_rss_mb": _peak_rss_mb(), "idle_rss_mb": idle_rss, "peak_gpu_mb": None,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "history": run.history,
            "scales": len(run.sizes), "sizes": run.sizes}


def run_training_benchmark(*, method: str = "microast", batch_size: int = 8, crop: int = 256, device: str = "cpu",
                           loss_net: str = "vgg16-hed", runs: int = 3, warmup: int = 1, rounds: int = 2,
                           weights_dir=None, progress: bool = True) -> list[dict]:
    """Seconds per training step (forward, losses, backward, Adam) of ``method`` on a synthetic batch: brushwork's
    step against the same step in plain float32 (and, for MicroAST, the reference implementation's), each in
    fresh processes, alternating over ``rounds``."""
    from .train_config import METHOD_DEFAULTS

    choose_device(device)
    if method not in METHOD_DEFAULTS:
        raise BrushworkError(f"unknown training method {method!r}; trainable: {', '.join(METHOD_DEFAULTS)}")
    if batch_size < 2 or crop < 16:
        raise BrushworkError("a training benchmark needs batch size >= 2 and crop >= 16")
    variants = TRAINING_VARIANTS if method == "microast" else TRAINING_VARIANTS[:2]
    group = [TrainingCase(variant, device, batch_size, crop, loss_net, runs, warmup, method) for variant in variants]
    return _run_rounds([group], _measure_training, weights_dir, rounds, "training benchmark", progress)


def _measure_training(case: TrainingCase, weights_dir: list[str]) -> dict:
    import dataclasses

    from . import losses
    from .methods import johnson
    from .train_config import METHOD_DEFAULTS, TrainConfig
    from .training import TRAINERS, choose_precision
    from .vgg import load_loss_network

    device = choose_device(case.device)
    torch.manual_seed(0)
    defaults = {k: v for k, v in METHOD_DEFAULTS[case.method].items() if k != "output_dir"}
    config = TrainConfig(**{**defaults, "method": case.method, "content_dir": "-", "style_dir": "-",
                            "batch_size": case.batch_size, "crop": case.crop, "loss_net": case.loss_net})
    trainer_class = TRAINERS[case.method]
    network = load_loss_network(case.loss_net, trainer_class.loss_layers(config), device=device,
                                weights_dir=weights_dir)
    module = trainer_class({**dataclasses.asdict(config), "encoder": case.loss_net}, network).to(device)
    generator = torch.Generator().manual_seed(0)
    content = torch.rand(case.batch_size, 3, case.crop, case.crop, generator=generator).to(device)
    style = torch.rand(case.batch_size, 3, case.crop, case.crop, generator=generator).to(device)
    if case.method == "johnson":  # the one style's Gram matrices, computed once as in training
        with torch.no_grad():
            module.__dict__["_style_targets"] = {layer: losses.gram_matrix(value) for layer, value in
                                                 network(style[:1]).items() if layer in johnson.STYLE_LAYERS}
    low_precision = case.variant == "brushwork" and choose_precision("auto", device.type).startswith("bf16")
    if case.variant == "brushwork":
        network.to(memory_format=torch.channels_last)
        module.model.to(memory_format=torch.channels_last)
        content, style = (x.contiguous(memory_format=torch.channels_last) for x in (content, style))
    optimizer = torch.optim.Adam(module.model.parameters(), lr=config.lr)

    def step() -> float:
        start = time.perf_counter()
        if case.variant == "baseline":
            total = _reference_training_loss(module.model, network, content, style)
        else:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=low_precision):
                _, terms = module.compute_losses(content, style)
                total = sum(module.loss_weights()[name] * term.float() for name, term in terms.items())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    idle_rss = _current_rss_mb()
    for _ in range(case.warmup):
        step()
    times = [step() for _ in range(case.runs)]
    return {"times_s": times, "peak_rss_mb": _peak_rss_mb(), "idle_rss_mb": idle_rss, "peak_gpu_mb": None,
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "precision": "reference" if case.variant == "baseline" else "bf16-mixed" if low_precision else "32-true"}


def _reference_training_loss(model, network, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """The loss of one step as the reference implementation computes it: content 1, style 3, and the contrastive
    loss 3, with that loss assembled pair by pair in Python loops (including its quirk of comparing the shallow
    statistics of negatives with other *outputs* rather than other styles)."""
    from .losses import CONTENT_LAYER, STYLE_LAYERS, mean_std_loss

    mse = torch.nn.functional.mse_loss
    signals = model.encode_style(style)
    output = model.decode(content, signals)
    output_features, style_features = network(output), network(style)
    content_loss = mse(output_features[CONTENT_LAYER], network(content)[CONTENT_LAYER])
    style_loss = sum(mean_std_loss(output_features[layer], style_features[layer]) for layer in STYLE_LAYERS)
    output_shallow, output_deep = model.style_encoder(output)
    style_shallow, style_deep = model.style_encoder(style)
    (ow1, ow2), (ob1, ob2) = model.modulator((output_shallow, output_deep))
    (sw1, sw2), (sb1, sb2) = model.modulator((style_shallow, style_deep))
    contrastive = 0.0
    for i in range(style.shape[0]):
        positive, negative = 0.0, 0.0
        for j in range(style.shape[0]):
            shallow_target = style_shallow[j] if j == i else output_shallow[j]
            feature_term = (mean_std_loss(output_shallow[i][None], shallow_target[None])
                            + mean_std_loss(output_deep[i][None], style_deep[j][None]))
            filter_term = mse(ow1[i], sw1[j]) + mse(ow2[i], sw2[j]) + mse(ob1[i], sb1[j]) + mse(ob2[i], sb2[j])
            if j == i:
                positive = feature_term + filter_term
            else:
                negative = negative + feature_term + filter_term
        contrastive = contrastive + positive / negative
    return content_loss + 3.0 * style_loss + 3.0 * contrastive


def training_table(results: list[dict]) -> str:
    header = ("method", "variant", "precision", "device", "batch x crop", "steps/s", "s/step median (min-max)",
              "speed-up", "peak RSS")
    plain = next((r for r in results if r["variant"] == "fp32"), None)
    return reports.markdown_table(header, ([
        result.get("method", "microast"), result["variant"], result.get("precision", "-"), result["device"],
        f"{result['batch_size']} x {result['crop']} px", f"{1 / result['median_s']:.3f}", _timing(result),
        _speed_up(plain, result) if plain and result is not plain else "-", _memory(result)] for result in results))


def describe_machine() -> str:
    """CPU model, cores, memory, GPU and PyTorch build, for the record next to the numbers."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as file:
            cpu = next(line.split(":", 1)[1].strip() for line in file if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else 0
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GB memory, {gpu}; PyTorch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def markdown_table(results: list[dict]) -> str:
    """One row per model, device and size: brushwork and baseline medians (min-max), speed-up, the tile brushwork
    worked in, peak memory; and the ONNX Runtime variant's median and speed-up where it was measured."""
    rows = {}
    for result in results:
        key = (result["model"], result["device"], result["width"], result["height"])
        rows.setdefault(key, {})[result["variant"]] = result
    with_onnx = any(ONNX_VARIANT in by_variant for by_variant in rows.values())
    header = ("model", "device", "size", "brushwork median (min-max)", "baseline median (min-max)", "speed-up",
              "tile", "peak RSS brushwork", "peak RSS baseline", "peak GPU brushwork") + (
              ("onnx median (min-max)", "onnx speed-up", "peak RSS onnx") if with_onnx else ())
    cells_of_rows = []
    for (model, device, width, height), by_variant in rows.items():
        ours, base, onnx = (by_variant.get(v) for v in ("brushwork", "baseline", ONNX_VARIANT))
        gpu = f"{ours['peak_gpu_mb']:.0f} MB" if ours and ours["peak_gpu_mb"] is not None else "-"
        tile = "-" if ours is None else f"{ours['tile']} px" if ours.get("tile") else "whole"
        cells = [model, device, f"{width}x{height}", _timing(ours), _timing(base), _speed_up(base, ours), tile,
                 _memory(ours), _memory(base), gpu]
        if with_onnx:
            cells += [_timing(onnx), _speed_up(base, onnx), _memory(onnx)]
        cells_of_rows.append(cells)
    return reports.markdown_table(header, cells_of_rows)


def _speed_up(base: dict | None, other: dict | None) -> str:
    return f"{base['median_s'] / other['median_s']:.2f}x" if base and other else "-"


def convergence_table(summary: dict) -> str:
    """The Gatys convergence comparison as a markdown table."""
    header = ("optimisation", "sizes", "evaluations", "seconds to loss "
              f"{summary['target_loss']:.4g}", "total seconds", "final loss", "peak RSS")
    rows = []
    for variant in ("multiscale", "single-scale"):
        r = summary[variant]
        rows.append([variant, " > ".join(f"{w}x{h}" for h, w in r["sizes"]), str(r["evaluations"]),
                     f"{r['seconds_to_target']:.1f}", f"{r['total_seconds']:.1f}", f"{r['final_loss']:.4g}",
                     f"{r['peak_rss_mb']:.0f} MB"])
    return "\n".join([f"Gatys {summary['size']}, {summary['steps']} steps, loss network {summary['loss_net']}, "
                      f"{summary['content']} x {summary['style']}", "", reports.markdown_table(header, rows), "",
                      f"Coarse-to-fine reaches the loss {summary['speedup']:.2f}x faster."])


def _timing(result: dict | None) -> str:
    if result is None:
        return "-"
    return f"{result['median_s']:.3f} s ({result['min_s']:.3f}-{result['max_s']:.3f})"


def _memory(result: dict | None) -> str:
    return "-" if result is None else f"{result['peak_rss_mb']:.0f} MB"


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB elsewhere


def _current_rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as file:
            return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return None

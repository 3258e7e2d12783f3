"""Speed and memory of the models, each figure next to a baseline measured in the same run.

Every case (model, size, device, variant) runs in a fresh process, so that its peak resident memory is its own.
Variants: ``brushwork`` is the path users get (``encode_style`` then ``stylize``, inference mode); ``baseline`` is
the plain eager fp32 pattern of the reference implementation: the model's ``forward(content, style)`` on the whole
image under ``no_grad``, no tiling, no fusion.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from . import weights as registry
from .api import choose_device, load_model
from .errors import BrushworkError

DEFAULT_SIZES = ("512", "1024", "2048", "3840x2160")
VARIANTS = ("brushwork", "baseline")
STYLE_SIZE = (512, 512)


@dataclass(frozen=True)
class Case:
    model: str
    variant: str
    device: str
    width: int
    height: int
    runs: int
    warmup: int


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
                  progress: bool = True) -> list[dict]:
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
    for model in models:
        load_model(model, device="cpu", weights_dir=weights_dir)  # fail early on missing weights
    variants = VARIANTS if baseline else VARIANTS[:1]
    groups = [[Case(model, variant, device, width, height, runs, warmup) for variant in variants]
              for model in models for device in devices for width, height in shapes]
    dirs = [str(d) for d in registry.search_dirs(weights_dir)]
    context = multiprocessing.get_context("spawn")
    results = []
    with tqdm(total=len(groups) * len(variants) * rounds, desc="benchmark", unit="process",
              disable=not progress, file=sys.stderr) as bar:
        for group in groups:
            measured: dict[Case, list[dict]] = {case: [] for case in group}
            for round_index in range(rounds):
                for case in group if round_index % 2 == 0 else group[::-1]:
                    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
                        measured[case].append(pool.submit(_measure, case, dirs).result())
                    bar.update()
            results += [_pool_rounds(case, rounds_of_case) for case, rounds_of_case in measured.items()]
    return results


def _pool_rounds(case: Case, measured: list[dict]) -> dict:
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
        "idle_rss_mb": min(r["idle_rss_mb"] for r in measured if r["idle_rss_mb"] is not None),
        "peak_gpu_mb": max(gpu) if gpu else None,
        "threads": measured[0]["threads"],
        "torch": measured[0]["torch"],
    }


def _measure(case: Case, weights_dir: list[str]) -> dict:
    """One case, in its own process: timings of ``runs`` calls after ``warmup`` calls, and peak memory."""
    device = choose_device(case.device)
    model = load_model(case.model, device=device, weights_dir=weights_dir)
    generator = torch.Generator().manual_seed(0)
    content = torch.rand(1, 3, case.height, case.width, generator=generator).to(device)
    style = torch.rand(1, 3, *STYLE_SIZE, generator=generator).to(device)

    if case.variant == "baseline":
        def call():
            with torch.no_grad():
                return model(content, style)
    else:
        def call():
            with torch.inference_mode():
                return model.stylize(content, [model.encode_style(style)])

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
    }


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
    """One row per model, device and size: brushwork and baseline medians (min-max), speed-up, peak memory."""
    rows = {}
    for result in results:
        key = (result["model"], result["device"], result["width"], result["height"])
        rows.setdefault(key, {})[result["variant"]] = result
    header = ("model", "device", "size", "brushwork median (min-max)", "baseline median (min-max)", "speed-up",
              "peak RSS brushwork", "peak RSS baseline", "peak GPU brushwork")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (model, device, width, height), by_variant in rows.items():
        ours, base = by_variant.get("brushwork"), by_variant.get("baseline")
        speed_up = f"{base['median_s'] / ours['median_s']:.2f}x" if ours and base else "-"
        gpu = f"{ours['peak_gpu_mb']:.0f} MB" if ours and ours["peak_gpu_mb"] is not None else "-"
        lines.append("| " + " | ".join([
            model, device, f"{width}x{height}", _timing(ours), _timing(base), speed_up,
            _memory(ours), _memory(base), gpu]) + " |")
    return "\n".join(lines)


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

"""The MicroAST GPU path in one run: its precision against plain float32, its speed and memory against the plain
network at 1024 px, 4K and 8K, and options measured beside it (bfloat16 for float16, CUDA graphs, cuDNN autotuning).

    python scripts/gpu_check.py --weights-dir WEIGHTS --out results/gpu
    python scripts/gpu_check.py --device cpu --sizes 256 --precision-size 192 --runs 2 --out dry-run  # a dry run

Writes ``gpu_check.json`` (every number, rewritten as each one arrives, so that an interrupted run keeps what it
measured) and ``gpu_check.md`` (the tables for docs/BENCHMARKS.md) to ``--out``.

- Precision: the fast path (float16 on CUDA) against the plain network in float32 on the same device with TF32
  off, on real pairs (``--pair CONTENT STYLE``; default: scikit-image's sample photos), whole at
  ``--precision-size`` and, on a 2048 px version, whole and in tiles. The plain network on the device against
  the same on the CPU shows what the device's own float32 kernels change.
- Speed: medians of ``--runs`` calls after ``--warmup``, each encoding the style and painting (as ``brushwork
  bench``), synchronised; the baseline is the plain network with PyTorch's defaults. Peak GPU memory per case.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Iterator

import torch

from brushwork import load_model
from brushwork.devices import choose_device
from brushwork.engine import FastMicroAST
from brushwork.benchmark import describe_machine, parse_size
from brushwork.images import as_image, resize, to_tensor
from brushwork.metrics import psnr
from brushwork.tiling import AUTO, CPU_AUTO_BUDGET, memory_budget

DEFAULT_PAIRS = (("sample:astronaut", "sample:hubble"), ("sample:coffee", "sample:ihc"))
STYLE_SIDE = 512


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="microast", help="a MicroAST model (registry name or folder)")
    parser.add_argument("--weights-dir", action="append", default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pair", nargs=2, action="append", metavar=("CONTENT", "STYLE"),
                        help="a content and a style image (path or sample:NAME); repeatable")
    parser.add_argument("--precision-size", type=int, default=512, help="longer side for the precision check")
    parser.add_argument("--tiled-size", type=int, default=2048, help="longer side for the tiled precision check")
    parser.add_argument("--tile", type=int, default=512, help="tile side for the tiled precision check")
    parser.add_argument("--sizes", default="1024,3840x2160,7680x4320")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    device = choose_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    report = Report(args.out, {"machine": describe_machine(), **environment(device)})
    plain = load_model(args.model, device=device, weights_dir=args.weights_dir, fast=False)
    variants = {"fast": FastMicroAST.from_network(plain)}
    if device.type == "cuda":
        variants["fast-bfloat16"] = FastMicroAST.from_network(plain, low_precision=torch.bfloat16)
    print(f"{report.data['machine']}; fast path computes in {variants['fast'].low_precision}", flush=True)

    pairs = [(as_image(content), as_image(style)) for content, style in (args.pair or DEFAULT_PAIRS)]
    for index, (content, style) in enumerate(pairs):
        report.add("precision", precision(plain, variants, content, style, device, args), index=index)

    sizes = [parse_size(size) for size in args.sizes.split(",")]
    # CUDA graphs after everything else: a capture that fails may leave the device unusable for what follows.
    for graphs in (False, True) if device.type == "cuda" else (False,):
        for width, height in sizes:
            for name, call in timed_calls(plain, variants, width, height, device, graphs):
                report.add("speed", measure(call, device, args.runs, args.warmup), size=f"{width}x{height}",
                           variant=name)
    report.write_markdown()


def environment(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(gpu=properties.name, capability=f"{properties.major}.{properties.minor}",
                    gpu_memory_gb=round(properties.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info


def precision(plain, variants: dict, content, style, device: torch.device, args) -> dict:
    """PSNR of each fast variant to the plain float32 network (TF32 off), whole and in tiles."""
    style = to_tensor(resize(style, STYLE_SIDE)).to(device)
    result = {}
    for label, side, tile in (("whole", args.precision_size, None), ("large whole", args.tiled_size, None),
                              (f"large in {args.tile} px tiles", args.tiled_size, args.tile)):
        image = to_tensor(resize(content, side, side="longer")).to(device)
        with torch.inference_mode(), exact_float32():
            reference = plain.stylize(image, [plain.encode_style(style)])
        for name, model in variants.items():
            with torch.inference_mode():
                output = model.stylize(image, [model.encode_style(style)], tile=tile)
            result[f"{name}, {label} ({image.shape[-1]}x{image.shape[-2]})"] = round(psnr(output, reference), 2)
        if device.type == "cuda" and tile is None and side == args.precision_size:
            on_cpu = load_model(args.model, device="cpu", weights_dir=args.weights_dir, fast=False)
            with torch.inference_mode():
                cpu_output = on_cpu.stylize(image.cpu(), [on_cpu.encode_style(style.cpu())])
            result[f"plain {device.type} against plain cpu, {label}"] = round(psnr(reference.cpu(), cpu_output), 2)
    print(f"precision (dB): {result}", flush=True)
    return result


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """TF32 off for convolutions and matrix products (the reference computes in true float32)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def timed_calls(plain, variants: dict, width: int, height: int, device: torch.device, graphs: bool):
    """(name, call) for the baseline, the fast path whole and in the default budget's tiles, and on CUDA in 1G
    tiles (the CPU's budget), in bfloat16 and with cuDNN's autotuning; with ``graphs``, only the fast path as a
    CUDA graph. Each call paints one random image of this size (as ``brushwork bench``)."""
    generator = torch.Generator().manual_seed(0)
    content = torch.rand(1, 3, height, width, generator=generator).to(device)
    style = torch.rand(1, 3, STYLE_SIDE, STYLE_SIDE, generator=generator).to(device)

    def baseline():
        with torch.no_grad():
            return plain(content, style)

    def painter(model, tile=None):
        def call():
            with torch.inference_mode():
                return model.stylize(content, [model.encode_style(style)], tile=tile)
        return call

    if graphs:
        yield "fast, whole, CUDA graph", graphed(painter(variants["fast"]), device)
        return
    yield "baseline (plain fp32)", baseline
    yield "fast, whole", painter(variants["fast"])
    budgets = {"the default budget": memory_budget(AUTO, device)}
    if device.type == "cuda":  # what the CPU's budget would do there
        budgets["1G"] = CPU_AUTO_BUDGET
    for label, budget in budgets.items():
        tile = variants["fast"].tile_for(height, width, budget)
        if tile is not None:
            yield f"fast, {tile} px tiles ({label})", painter(variants["fast"], tile)
    if device.type == "cuda":
        yield "fast bfloat16, whole", painter(variants["fast-bfloat16"])
        torch.backends.cudnn.benchmark = True  # cuDNN times its algorithms for each new shape
        yield "fast, whole, cudnn.benchmark", painter(variants["fast"])
        torch.backends.cudnn.benchmark = False


def graphed(call, device: torch.device):
    """``call`` captured once as a CUDA graph and replayed (its inputs are fixed tensors); capture errors (a host
    synchronisation inside, say) are raised at the first call."""
    graph, output = None, None

    def replay():
        nonlocal graph, output
        if graph is None:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(3):  # cuDNN's algorithm search and the allocator's pools before capture
                    call()
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                output = call()
        graph.replay()
        return output
    return replay


def measure(call, device: torch.device, runs: int, warmup: int) -> dict:
    """Median, min and max seconds of ``runs`` synchronised calls after ``warmup``, and peak GPU memory; an
    error (out of memory, a failed capture) is recorded in place of the numbers."""
    cuda = device.type == "cuda"
    try:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for index in range(warmup + runs):
            start = time.perf_counter()
            call()
            if cuda:
                torch.cuda.synchronize(device)
            if index >= warmup:
                times.append(time.perf_counter() - start)
    except Exception as error:  # recorded, and the next case runs
        traceback.print_exc()
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
    finally:
        if cuda:
            torch.cuda.synchronize(device)
    result = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": runs}
    if cuda:
        result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    return result


class Report:
    """The results so far, written to ``gpu_check.json`` after each one."""

    def __init__(self, folder: Path, header: dict):
        self.folder, self.data = folder, {**header, "precision": [], "speed": []}
        self.save()

    def add(self, section: str, result: dict, **keys) -> None:
        self.data[section].append({**keys, **result})
        if section == "speed":
            print(f"{keys}: {self.describe(result)}", flush=True)
        self.save()

    def save(self) -> None:
        (self.folder / "gpu_check.json").write_text(json.dumps(self.data, indent=2))

    @staticmethod
    def describe(result: dict) -> str:
        if "error" in result:
            return result["error"]
        memory = f", {result['peak_gpu_mb']} MB" if "peak_gpu_mb" in result else ""
        return f"{result['median_s'] * 1000:.1f} ms ({result['min_s'] * 1000:.1f}-{result['max_s'] * 1000:.1f}){memory}"

    def write_markdown(self) -> None:
        lines = [f"Machine: {self.data['machine']}.", "", "| size | variant | median (min-max) | vs baseline |",
                 "|---|---|---|---|"]
        baselines = {row["size"]: row.get("median_s") for row in self.data["speed"]
                     if row["variant"].startswith("baseline")}
        for row in self.data["speed"]:
            base = baselines.get(row["size"])
            ratio = f"{base / row['median_s']:.2f}x" if base and "median_s" in row else ""
            lines.append(f"| {row['size']} | {row['variant']} | {self.describe(row)} | {ratio} |")
        lines += ["", "| pair | comparison | PSNR (dB) |", "|---|---|---|"]
        for row in self.data["precision"]:
            lines += [f"| {row['index']} | {key} | {value} |" for key, value in row.items() if key != "index"]
        (self.folder / "gpu_check.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())

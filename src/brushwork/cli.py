"""The ``brushwork`` command: a thin layer over the Python API.

Exit status: 0 on success, 2 on bad input (with one line saying what is wrong), 1 when something the input
cannot fix failed (missing weights, out of memory), 130 when interrupted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import torch
from tqdm import tqdm

from . import __version__
from . import weights as registry
from .api import DEFAULT_MAX_MEMORY, METHODS, Stylizer, load_model, style_weights_for
from .benchmark import (DEFAULT_SIZES, VIDEO_VARIANTS, convergence_table, describe_machine, markdown_table,
                        run_benchmark, run_gatys_convergence, run_training_benchmark, run_video_benchmark,
                        training_table, video_table)
from .errors import BrushworkError, WeightsError
from .evaluation import (evaluate, evaluate_video, summarize, summary_table, video_clips, video_summary,
                         video_summary_table, write_report, write_video_report)
from .images import (MAX_ASPECT, MAX_PIXELS, MIN_STYLE_SIDE, SAVE_FORMATS, check_writable, image_size, list_images,
                     resized_size, save_image)
from .methods import vst
from .methods.gatys import INITS as GATYS_INITS, OPTIMIZERS as GATYS_OPTIMIZERS
from .vgg import LOSS_NETWORKS
from .samples import PREFIX as SAMPLE_PREFIX, SAMPLES, is_sample
from .server.settings import Settings
from .train_config import METHOD_DEFAULTS, TrainConfig, load_config
from .temporal import (DEFAULT_STRENGTH, DEFAULT_TEMPORAL, FLOW_SIDE, LONG_TERM_GAP, TEMPORAL_MODES, WarpingErrors,
                       check_temporal)
from .video import DEFAULT_CRF, VideoInterrupted, stylize_video

_MODELS = [name for name, entry in registry.REGISTRY.items() if entry.kind == "model"] + ["gatys"]
#: The methods that paint a frame in one pass (video).
FEED_FORWARD = [method for method in METHODS if method != "gatys"]

#: Largest magnitude of a number setting. The work is in float32 (largest 3.4e38): a weight or rate beyond this
#: overflows the losses to inf and the image to nan. No size or budget comes near it.
_LARGEST_SETTING = 1e30


class _Number(click.FloatRange):
    """A float option that refuses nan and inf, which pass click's range checks (nan compares false with every
    bound) or overflow what they multiply."""

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


class _ByteCount(click.ParamType):
    """A number of bytes, written like 500MB, 2GB or 1.5GiB (as pydantic's ByteSize reads it)."""

    name = "size"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        from pydantic import ByteSize, TypeAdapter, ValidationError

        try:
            count = int(TypeAdapter(ByteSize).validate_python(value))
        except ValidationError:
            count = 0
        if count < 1:
            self.fail(f"{value!r} is not a size like 500MB, 2GB or 1.5GiB.", param, ctx)
        return count


#: A side longer than MAX_PIXELS makes an image of more pixels than that whatever its other side; a bound here
#: also keeps the arithmetic of a 400-digit size from overflowing before the real check.
_SIZE = click.IntRange(1, MAX_PIXELS)


def _style_weights(ctx, param, values: tuple[str, ...]) -> list[float] | None:
    """--style-weights (repeatable, each like 0.3,0.7) as one list of numbers."""
    if not values:
        return None
    given = " ".join(values)
    try:
        weights = [float(part) for part in given.replace(",", " ").split()]
    except ValueError:
        raise click.BadParameter(f"style weights must be numbers, like 0.3,0.7; got {given!r}") from None
    # One test for nan, inf and finite weights whose sum (the normaliser) overflows, like 1e308,1e308.
    if not math.isfinite(sum(weights)):
        raise click.BadParameter(f"style weights must be finite numbers with a finite sum, not {given!r}")
    return weights


def _output_path(ctx, param, value: str) -> Path:
    # Path("") is Path("."): an empty -o would quietly paint into the current folder.
    if not value:
        raise click.BadParameter("give a file or folder name, not an empty one")
    return Path(value)


_weights_dir_option = click.option(
    "--weights-dir", multiple=True, type=click.Path(file_okay=False, path_type=Path),
    help="Folder with weights laid out as DIR/<entry folder>/<file>; looked in before the cache. Repeatable.")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="brushwork")
def cli():
    """brushwork: paint photos in the style of paintings."""


_SAMPLES_HELP = "Sample photos: " + ", ".join(SAMPLE_PREFIX + name for name in SAMPLES) + "."


def _gatys_options(command):
    """The settings of the Gatys optimisation (None: the method's default)."""
    options = [
        click.option("--steps", type=click.IntRange(min=1), default=None,
                     help="gatys: loss evaluations at the coarsest scale [default: 300]."),
        click.option("--fine-steps", type=click.IntRange(min=1), default=None,
                     help="gatys: evaluations at each finer scale [default: steps // 3]."),
        click.option("--optimizer", type=click.Choice(list(GATYS_OPTIMIZERS)), default=None,
                     help="gatys: lbfgs (default) or adam."),
        click.option("--init", type=click.Choice(list(GATYS_INITS)), default=None,
                     help="gatys: start from the content (default) or from noise."),
        click.option("--content-weight", type=_Number(0, _LARGEST_SETTING), default=None, help="gatys [default: 1]."),
        click.option("--style-weight", type=_Number(0, _LARGEST_SETTING), default=None, help="gatys [default: 10]."),
        click.option("--tv-weight", type=_Number(0, _LARGEST_SETTING), default=None,
                     help="gatys: total-variation weight [default: 0.3]."),
        click.option("--multiscale/--single-scale", default=None,
                     help="gatys: optimise coarse to fine (default) or at the full size only."),
        click.option("--seed", type=int, default=None,
                     help="gatys: seed of the noise start; vst: seed of the sampled style codes [default: 0]."),
        click.option("--loss-net", type=click.Choice(["auto", *LOSS_NETWORKS]), default=None,
                     help="gatys: the VGG to optimise with [default: auto, the best at hand]."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@cli.command(epilog=_SAMPLES_HELP)
@click.argument("content")
@click.argument("style", nargs=-1, required=False)
@click.option("-o", "--output", required=True, type=click.Path(), callback=_output_path,
              help="Output file (its extension sets the format), or a folder when a folder is given as input.")
@click.option("--method", type=click.Choice(list(METHODS)), default=None,
              help="microast (feed-forward, default), adain (feed-forward) or gatys (optimisation; slow, no "
                   "trained weights). Without --model, the method's default model.")
@click.option("--model", default=None,
              help=f"A model of the registry ({', '.join(_MODELS)}), a folder of trained weights, an exported "
                   f"MODEL.onnx (run by ONNX Runtime), or gatys [default: {registry.DEFAULT_MODEL}; with --method "
                   "adain: adain].")
@click.option("--alpha", type=_Number(0, 1), default=1.0, show_default=True,
              help="Content-style trade-off: 0 keeps the content, 1 is full style (gatys: scales the style weight).")
@click.option("--mask", "masks", multiple=True,
              help="A grayscale image per style (in order), white where that style goes; uncovered areas keep the "
                   "content (adain). Repeatable.")
@click.option("--style-weights", multiple=True, callback=_style_weights,
              help="Weights for mixing several style images, e.g. 0.3,0.7 (normalised to sum to 1).")
@click.option("--content-size", type=_SIZE, default=None,
              help="Resize the content first so its shorter (see --resize-by) side has this many pixels.")
@click.option("--style-size", type=_SIZE, default=None,
              help="Resize each style image first, likewise.")
@click.option("--resize-by", type=click.Choice(["shorter", "longer"]), default="shorter", show_default=True,
              help="Which side --content-size and --style-size set.")
@click.option("--preserve-color", is_flag=True,
              help="Keep the content's colours: take only luminance from the stylised image.")
@click.option("--match-color", is_flag=True,
              help="Keep the content's colours by matching each style's colours (mean and covariance) to the "
                   "content's before stylising.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--max-memory", default=DEFAULT_MAX_MEMORY, show_default=True,
              help="Working memory for one image, like 800M or 2G; larger images are painted in tiles (same "
                   "result, with the statistics of the whole image). 'auto': 1G on the CPU, half the GPU's free "
                   "memory on CUDA. 'none': never tile.")
@click.option("--exact", is_flag=True,
              help="Run the plain fp32 network: no channels-last layout, no bfloat16/float16 layers (the fast "
                   "path, the default, stays within 45 dB PSNR of it).")
@_weights_dir_option
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True,
              help="JPEG/WebP quality.")
@click.option("--format", "image_format", type=click.Choice(["png", "jpg", "webp"]), default="png",
              show_default=True, help="Output format when writing into a folder.")
@click.option("--skip-existing", is_flag=True, help="In folder mode, leave outputs that already exist alone.")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help="vst: paint N stylisations from style codes sampled with --seed, written as OUTPUT_1 .. "
                   "OUTPUT_N (without it, or with --seed alone: the mean code, or one sample).")
@click.option("--temperature", type=_Number(0, vst.MAX_TEMPERATURE, min_open=True), default=None,
              help="vst: sample codes at this temperature (0 < T <= 10; lower keeps samples nearer the style, with "
                   "less variety) [default: the model's, 1 unless its training.json or registry entry says].")
@_gatys_options
def stylize(content, style, output, method, model, alpha, masks, style_weights, content_size, style_size, resize_by,
            preserve_color, match_color, device, max_memory, exact, weights_dir, quality, image_format, skip_existing,
            samples, temperature, **gatys_settings):
    """Paint CONTENT in the style of STYLE.

    CONTENT and STYLE are image files, folders of images, or sample photos (sample:NAME). Several STYLE
    files are mixed into one style (see --style-weights; vst mixes them in its latent space). A folder of
    contents and/or a folder of styles paints every content with every style into the folder given by -o.
    A johnson model paints the one style it was trained on: give no STYLE.

    With --method gatys, Ctrl-C stops the optimisation and writes the best image so far.
    """
    gatys_settings = {key: value for key, value in gatys_settings.items() if value is not None}
    gatys = method == "gatys" or model == "gatys"
    seed = None if gatys else gatys_settings.pop("seed", None)
    if gatys_settings and not (method == "gatys" or model == "gatys"):
        flags = ", ".join("--" + key.replace("_", "-") for key in sorted(gatys_settings))
        raise BrushworkError(f"{flags}: settings of --method gatys")
    if preserve_color and match_color:
        raise BrushworkError("choose one of --preserve-color and --match-color")
    color = "luminance" if preserve_color else "histogram" if match_color else None
    jobs, batch = _plan(content, list(style), output, image_format)
    if masks and batch:
        raise BrushworkError("--mask paints one content image, not folders")
    if jobs[0].styles:
        style_weights_for(style_weights, len(jobs[0].styles))  # refuse bad weights before any work
    if not batch:  # a batch checks each job's images in turn, and skips those it cannot paint
        _check_images(jobs[0], content_size, style_size, resize_by)
    if skip_existing:  # os.path.exists: False, not an error, for a name too long to exist
        jobs = [job for job in jobs if not os.path.exists(_sample_paths(job.output, samples)[-1])]
        if not jobs:
            click.echo("nothing to do: every output exists")
            return
    _check_outputs(jobs, samples)
    if method is not None and model is None:  # the method is known: refuse its wrong settings before loading
        _check_sampling(method, samples, seed, temperature)
    stylizer = Stylizer(model, method=method, alpha=alpha, style_weights=style_weights,
                        content_size=content_size, style_size=style_size, resize_by=resize_by,
                        preserve_color=color, device=device, weights_dir=list(weights_dir), max_memory=max_memory,
                        fast=not exact, progress=not batch, **gatys_settings)
    _check_sampling(stylizer.method, samples, seed, temperature)
    paint = _painter(stylizer, samples, seed, temperature)
    if not batch:
        job = jobs[0]
        start = time.perf_counter()
        images = paint(job, list(masks) or None)
        paths = _sample_paths(job.output, samples)
        for image, path in zip(images, paths):
            save_image(image, path, quality=quality)
        size = f"{images[0].width}x{images[0].height}"
        click.echo(f"wrote {', '.join(str(p) for p in paths)} ({size}, {time.perf_counter() - start:.2f} s)")
        _stop_if_interrupted(stylizer, job.output)
        return
    _run_batch(stylizer, jobs, output, quality, paint, samples)


def _check_sampling(method: str, samples: int | None, seed: int | None, temperature: float | None) -> None:
    """Refuse --samples, --seed (gatys takes its own) and --temperature for a method that does not sample."""
    if (samples is not None or seed is not None) and method != "vst":
        raise BrushworkError(f"{'--samples' if samples is not None else '--seed'}: a setting of --method vst"
                             f"{'' if samples is not None else ' or gatys'}, not of {method}")
    if temperature is not None and (method != "vst" or (samples is None and seed is None)):
        raise BrushworkError("--temperature: a setting of vst samples (--samples or --seed), not of "
                             + ("the mean code" if method == "vst" else method))


def _painter(stylizer: Stylizer, samples: int | None, seed: int | None, temperature: float | None = None):
    """A job's images: one painting, or (vst) ``samples`` paintings from codes drawn with ``seed`` at
    ``temperature``."""

    def paint(job: "_Job", masks=None) -> list:
        styles = job.styles or None
        if samples is not None:
            return stylizer.samples(job.content, styles, samples, seed or 0, temperature)
        if seed is not None:  # one sample
            return stylizer.samples(job.content, styles, 1, seed, temperature)
        return [stylizer(job.content, styles, masks=masks)]

    return paint


def _sample_paths(output: Path, samples: int | None) -> list[Path]:
    """Where the images of one job go: OUTPUT, or OUTPUT_1 .. OUTPUT_N for N samples."""
    if samples is None:
        return [output]
    return [output.with_name(f"{output.stem}_{k}{output.suffix}") for k in range(1, samples + 1)]


def _stop_if_interrupted(stylizer: Stylizer, output: Path) -> None:
    run = getattr(stylizer.model, "last_run", None)
    if run is not None and run.interrupted:
        click.echo(f"brushwork: interrupted after {run.evaluations} steps; {output} has the best image so far",
                   err=True)
        raise SystemExit(130)


@dataclass
class _Job:
    content: str
    styles: list[str]
    output: Path


def _plan(content: str, styles: list[str], output: Path, image_format: str) -> tuple[list[_Job], bool]:
    """Which images to paint with which styles and where each result goes; and whether it is a batch."""
    contents = _expand(content, "content")
    style_folders = [s for s in styles if _is_folder(s)]
    if style_folders:
        style_sets = [[s] for item in styles for s in _expand(item, "style")]
    else:
        style_sets = [styles]
    batch = _is_folder(content) or bool(style_folders) or _is_folder(output)
    if not batch:
        if output.suffix.lower() not in SAVE_FORMATS:
            raise BrushworkError(f"{output}: give the output a known extension ({', '.join(sorted(SAVE_FORMATS))})")
        return [_Job(contents[0], style_sets[0], output)], False
    if os.path.isfile(output):
        raise BrushworkError(f"{output}: several outputs need a folder, and this is a file")
    jobs = [
        _Job(c, s, output / (f"{_stem(c)}__{'+'.join(_stem(x) for x in s)}.{image_format}" if s
                             else f"{_stem(c)}.{image_format}"))
        for c in contents for s in style_sets
    ]
    _refuse_clashes(jobs)
    return jobs, True


def _is_folder(item: str | Path) -> bool:
    # os.path.isdir, unlike Path.is_dir, answers False for a name too long to exist instead of raising.
    return not is_sample(item) and os.path.isdir(item)


def _refuse_clashes(jobs: list[_Job]) -> None:
    """Refuse a batch in which two jobs would write one file (photo.jpg and photo.png both make photo__x.png).

    Outputs are named after their inputs so that a rerun (--skip-existing) finds them; numbering the second
    would make a name depend on what else is in the folder, so the user renames one instead. Names are compared
    ignoring case, as the file systems of macOS and Windows do."""
    seen: dict[str, _Job] = {}
    for job in jobs:
        first = seen.setdefault(str(job.output).casefold(), job)
        if first is not job:
            one, other = ((first.content, job.content) if first.content != job.content
                          else ("+".join(first.styles), "+".join(job.styles)))
            raise BrushworkError(f"{one} and {other} would both be painted to {job.output}: rename one of them")


def _check_images(job: _Job, content_size: int | None, style_size: int | None, resize_by: str) -> None:
    """Refuse a job's images that cannot be painted well, from their headers, before any work."""
    _check_image(job.content, "content", content_size, resize_by)
    for style in job.styles:
        _check_image(style, "style", style_size, resize_by)


def _check_image(item: str, role: str, size: int | None, resize_by: str) -> None:
    """Refuse an image too narrow to resize, too large once resized, or (a style) too small to hold a texture."""
    width, height = image_size(item)
    if size and max(width, height) > MAX_ASPECT * min(width, height):
        raise BrushworkError(f"{item}: {width}x{height} is more than {MAX_ASPECT:g} times as long as it is wide, too "
                             f"narrow to resize (--{role}-size); crop it first")
    # Enlarging a tiny style adds no texture: its own size must pass as well as the resized one.
    if role == "style" and min(width, height) < MIN_STYLE_SIDE:
        raise BrushworkError(f"{item}: {width}x{height} is too small for a style; it needs at least "
                             f"{MIN_STYLE_SIDE} pixels on its shorter side")
    new_width, new_height = resized_size(width, height, size, side=resize_by)
    if new_width * new_height > MAX_PIXELS:
        raise BrushworkError(f"{item}: --{role}-size {size} makes it {new_width}x{new_height}, more than the limit "
                             f"of {MAX_PIXELS / 1e6:.0f} megapixels")
    if role == "style" and min(new_width, new_height) < MIN_STYLE_SIDE:
        raise BrushworkError(f"{item}: --style-size {size} makes it {new_width}x{new_height}, too small for a style; "
                             f"it needs at least {MIN_STYLE_SIDE} pixels on its shorter side")


def _check_outputs(jobs: list[_Job], samples: int | None) -> None:
    """Refuse, before any work, outputs that could not be written."""
    paths = [path for job in jobs for path in _sample_paths(job.output, samples)]
    # They all go into one folder: only their names differ, and the longest is the one that may not fit.
    check_writable(max(paths, key=lambda path: len(os.fsencode(path.name))))


def _expand(item: str, role: str) -> list[str]:
    if not _is_folder(item):
        return [item]
    found = [str(p) for p in list_images(item)]
    if not found:
        raise BrushworkError(f"{item}: no {role} images in this folder")
    return found


def _stem(item: str) -> str:
    return item[len(SAMPLE_PREFIX):] if is_sample(item) else Path(item).stem


def _run_batch(stylizer: Stylizer, jobs: list[_Job], output: Path, quality: int, paint, samples: int | None) -> None:
    failures = 0
    start = time.perf_counter()
    with tqdm(jobs, desc="stylising", unit="image", file=sys.stderr) as progress:
        for job in progress:
            progress.set_postfix_str(job.output.name, refresh=False)
            try:
                _check_images(job, stylizer.content_size, stylizer.style_size, stylizer.resize_by)
                for image, path in zip(paint(job), _sample_paths(job.output, samples)):
                    save_image(image, path, quality=quality)
            except BrushworkError as error:  # one bad file does not end the batch
                failures += 1
                tqdm.write(f"brushwork: skipped {job.output.name}: {error}", file=sys.stderr)
            _stop_if_interrupted(stylizer, job.output)
    done = len(jobs) - failures
    click.echo(f"wrote {done} image(s) to {output} in {time.perf_counter() - start:.1f} s"
               + (f"; {failures} failed" if failures else ""))
    if failures:
        raise SystemExit(2)


@cli.command("video", epilog=_SAMPLES_HELP)
@click.argument("input_video", metavar="INPUT", type=click.Path(path_type=Path))
@click.argument("style", nargs=-1)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), callback=_output_path,
              help="Output video; its extension sets the container (.mp4, .mkv, .mov).")
@click.option("--method", type=click.Choice(list(FEED_FORWARD)), default=None,
              help="microast (default), adain, johnson (one trained style: give no STYLE) or vst: the "
                   "feed-forward methods. Without --model, its default model.")
@click.option("--model", default=None,
              help=f"A feed-forward model of the registry or a folder of trained weights "
                   f"[default: {registry.DEFAULT_MODEL}; with --method adain: adain].")
@click.option("--alpha", type=_Number(0, 1), default=1.0, show_default=True,
              help="Content-style trade-off: 0 keeps the content, 1 is full style.")
@click.option("--style-weights", multiple=True, callback=_style_weights,
              help="Weights for mixing several style images, e.g. 0.3,0.7 (normalised to sum to 1).")
@click.option("--content-size", type=click.IntRange(2, MAX_PIXELS), default=None,
              help="Resize the frames first so their shorter side has this many pixels (an odd width or height "
                   "then loses one pixel: H.264 in yuv420p needs even sizes).")
@click.option("--style-size", type=_SIZE, default=None,
              help="Resize each style image first so its shorter side has this many pixels.")
@click.option("--preserve-color", is_flag=True,
              help="Keep the frames' colours: take only luminance from the stylised frames.")
@click.option("--temporal", type=click.Choice(list(TEMPORAL_MODES)), default=DEFAULT_TEMPORAL, show_default=True,
              help="Keep the painting steady: flow blends each frame with the previous output moved along the "
                   "optical flow, where the flow is reliable (new at scene cuts); blend only where the picture is "
                   "still; none paints each frame alone.")
@click.option("--smooth", type=_Number(0, 1, max_open=True), default=DEFAULT_STRENGTH, show_default=True,
              help="Strength of --temporal: the weight of the previous output where it applies (0: off).")
@click.option("--flow-size", type=click.IntRange(min=0), default=FLOW_SIDE, show_default=True,
              help="Estimate the flow on frames scaled to this many pixels on their shorter side (0: full size).")
@click.option("--measure/--no-measure", default=True, show_default=True,
              help="Report the output's warping error (flicker) and the input's own.")
@click.option("--long-term-gap", type=click.IntRange(min=1), default=LONG_TERM_GAP, show_default=True,
              help="Frames apart for the long-term warping error.")
@click.option("--crf", type=click.IntRange(0, 51), default=DEFAULT_CRF, show_default=True,
              help="H.264 quality (x264's constant rate factor): lower is better and bigger.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None,
              help="Paint only the first N frames (and the sound up to there): a preview.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--max-memory", default=DEFAULT_MAX_MEMORY, show_default=True,
              help="Working memory for one frame, like 800M or 2G; larger frames are painted in tiles. 'auto': "
                   "1G on the CPU, half the GPU's free memory on CUDA. 'none': never tile.")
@_weights_dir_option
def video_command(input_video, style, output, method, model, alpha, style_weights, content_size, style_size,
                  preserve_color, temporal, smooth, flow_size, measure, long_term_gap, crf, max_frames, device,
                  max_memory, weights_dir):
    """Paint every frame of the video INPUT in the style of STYLE, keeping its sound.

    Several STYLE images are mixed into one style (see --style-weights); each is encoded once. The output is
    H.264 with the input's frame rate and timing; audio is copied, or re-encoded to AAC where the container
    cannot hold it. OUTPUT is written only at the end: Ctrl-C or an error leaves what was there before.

    The warping error is the mean absolute difference (0-255) between each output frame and the previous one
    moved along the input's optical flow, where the flow is reliable: the flicker. The input's own is the floor.
    """
    if style:
        style_weights_for(style_weights, len(style))  # refuse bad inputs before loading the model
    for item in style:
        _check_image(item, "style", style_size, "shorter")
    check_writable(output)
    stylizer = Stylizer(model, method=method, alpha=alpha, style_weights=style_weights, content_size=content_size,
                        style_size=style_size, preserve_color=preserve_color, device=device,
                        weights_dir=list(weights_dir), max_memory=max_memory)
    try:
        report = stylize_video(input_video, list(style), output, stylizer=stylizer, temporal=temporal,
                               smooth=smooth, flow_size=flow_size or None, measure=measure,
                               long_term_gap=long_term_gap, max_frames=max_frames, crf=crf)
    except VideoInterrupted as stop:
        click.echo(f"brushwork: interrupted after {stop.frames} frame(s); {output} not written", err=True)
        raise SystemExit(130) from None
    click.echo(f"wrote {report.output} ({report.frames} frames, {report.width}x{report.height}, audio "
               f"{report.audio}, temporal {report.temporal}"
               f"{f' {report.strength:g}' if report.temporal != 'none' else ''}) in {report.seconds:.1f} s: "
               f"{report.fps:.2f} frames/s; mean change between frames {report.frame_change:.2f}/255")
    if report.warping is not None:
        click.echo(warping_summary(report.warping))


@cli.command("export", epilog=_SAMPLES_HELP)
@click.option("--model", default=registry.DEFAULT_MODEL, show_default=True,
              help="A MicroAST model of the registry or a folder of trained MicroAST weights.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The .onnx file; the style encoder goes next to it as NAME.style.onnx.")
@click.option("--style", default=None,
              help="Bake this style image's signals into one graph (input: content only) instead.")
@click.option("--style-size", type=click.IntRange(min=8), default=512, show_default=True,
              help="Resize the baked style's shorter side to this first.")
@click.option("--check-size", type=click.IntRange(min=8), default=512, show_default=True,
              help="Compare ONNX Runtime with PyTorch on a sample photo of this size (refused below 45 dB).")
@click.option("--opset", type=click.IntRange(min=13), default=18, show_default=True, help="ONNX opset.")
@_weights_dir_option
def export_command(model, output, style, style_size, check_size, opset, weights_dir):
    """Export a MicroAST model to ONNX (dynamic height and width), checked against PyTorch.

    The export runs as a brushwork model: brushwork stylize photo.jpg style.jpg --model OUTPUT.onnx.
    """
    from .images import as_image, resize, to_tensor
    from .onnx_export import export_onnx

    network = load_model(model, device="cpu", weights_dir=list(weights_dir), fast=False)
    baked = to_tensor(resize(as_image(style), style_size)) if style else None
    report = export_onnx(network, output, style=baked, opset=opset,
                         check_content=to_tensor(resize(as_image("sample:astronaut"), check_size)),
                         check_style=to_tensor(resize(as_image("sample:hubble"), 256)))
    for path in report.paths:
        click.echo(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MB)")
    height, width = report.check_size
    click.echo(f"checked: ONNX Runtime vs PyTorch at {width}x{height}: {report.psnr_db:.1f} dB PSNR")


@cli.command("eval")
@click.argument("content_dir", metavar="CONTENT", type=click.Path(path_type=Path))
@click.argument("style_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for metrics.csv, summary.md/json, the plot and the contact sheet.")
@click.option("--model", "models", multiple=True,
              help=f"Model to evaluate: {', '.join(_MODELS)}, or a folder written by 'brushwork train'; "
                   f"repeatable [default: {registry.DEFAULT_MODEL}]. --video: one feed-forward model.")
@click.option("--loss-net", type=click.Choice(["vgg16-hed", "vgg16", "vgg19"]), default="vgg16-hed",
              show_default=True, help="Loss network of the feature metrics.")
@click.option("--content-size", type=click.IntRange(min=16), default=None,
              help="Shorter side of the content images [default: 512; --video: the frames' own size].")
@click.option("--style-size", type=click.IntRange(min=16), default=512, show_default=True,
              help="Shorter side of the style images.")
@click.option("--max-contents", type=click.IntRange(min=1), default=None, help="Use the first N contents.")
@click.option("--max-styles", type=click.IntRange(min=1), default=None, help="Use the first N styles.")
@click.option("--save-images", is_flag=True, help="Also write every output under OUTPUT/images/<model>/.")
@click.option("--faces", is_flag=True,
              help="Portraits: also measure the eyes-and-mouth SSIM and whether the face is still found "
                   "(scikit-image's face detector).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--steps", "gatys_steps", type=click.IntRange(min=1), default=None,
              help="Steps of the gatys model [default: gatys's 300].")
@click.option("--video", is_flag=True,
              help="Video mode: CONTENT is a video file, a folder of videos, or 'synthetic' (or synthetic:pan,zoom,"
                   "handheld): clips with exactly known motion. Compares temporal settings by warping error.")
@click.option("--temporal", "temporal_modes", default=",".join(TEMPORAL_MODES), show_default=True,
              help="--video: the temporal modes to compare, comma-separated.")
@click.option("--smooth", "strengths", default=f"{DEFAULT_STRENGTH:g}", show_default=True,
              help="--video: their strengths, comma-separated (each mode but none with each).")
@click.option("--max-frames", type=click.IntRange(min=2), default=None,
              help="--video: paint the first N frames of each clip [synthetic clips: 48].")
@click.option("--synthetic-photo", default="sample:astronaut", show_default=True,
              help="--video: the photo the synthetic clips move over.")
@click.option("--synthetic-size", default="640x360", show_default=True, help="--video: WIDTHxHEIGHT of them.")
@click.option("--flow-size", type=click.IntRange(min=0), default=FLOW_SIDE, show_default=True,
              help="--video: shorter side the flow is estimated at (0: full size).")
@click.option("--long-term-gap", type=click.IntRange(min=1), default=LONG_TERM_GAP, show_default=True,
              help="--video: frames apart for the long-term warping error.")
@_weights_dir_option
def eval_command(content_dir, style_dir, output, models, loss_net, content_size, style_size, max_contents,
                 max_styles, save_images, faces, device, gatys_steps, video, temporal_modes, strengths,
                 max_frames, synthetic_photo, synthetic_size, flow_size, long_term_gap, weights_dir):
    """Stylise every CONTENT x STYLE_DIR pair with each model and measure the results.

    Metrics: SSIM (grayscale) and content loss (relu4_1) and perceptual distance to the content; style loss
    (mean/std, relu1_1..relu4_1), Gram loss and colour distance to the style; seconds per image.

    With --video: every clip x style, each frame painted once and passed through each temporal setting; the
    warping errors (short- and long-term, the input's own; for synthetic clips also with their exact motion), the
    middle frame's style loss against painting each frame alone, a table and a plot.
    """
    if video:
        _eval_video(content_dir, style_dir, output, models, loss_net, content_size, style_size, max_styles, device,
                    temporal_modes, strengths, max_frames, synthetic_photo, synthetic_size, flow_size, long_term_gap,
                    weights_dir)
        return
    evaluation = evaluate(content_dir, style_dir, list(models) or [registry.DEFAULT_MODEL], loss_net=loss_net,
                          content_size=content_size or 512, style_size=style_size, max_contents=max_contents,
                          max_styles=max_styles, save_dir=output / "images" if save_images else None,
                          device=device, weights_dir=list(weights_dir), faces=faces,
                          gatys_options={"steps": gatys_steps} if gatys_steps else None)
    paths = write_report(evaluation, output)
    click.echo(summary_table(summarize(evaluation.records)))
    click.echo(f"wrote {', '.join(str(p) for p in paths.values())}")


def _eval_video(clips, style_dir, output, models, loss_net, content_size, style_size, max_styles, device,
                temporal_modes, strengths, max_frames, synthetic_photo, synthetic_size, flow_size, long_term_gap,
                weights_dir) -> None:
    from .benchmark import parse_size

    if len(models) > 1:
        raise BrushworkError("--video evaluates one model at a time")
    modes = [mode.strip() for mode in temporal_modes.split(",") if mode.strip()]
    for mode in modes:
        if mode not in TEMPORAL_MODES:
            raise BrushworkError(f"unknown temporal mode {mode!r}; choose from {', '.join(TEMPORAL_MODES)}")
    try:
        weights = [float(part) for part in strengths.split(",") if part.strip()]
    except ValueError:
        raise BrushworkError(f"--smooth takes numbers, like 0.5,0.8; got {strengths!r}") from None
    for weight in weights:
        check_temporal("flow", weight)
    settings = list(dict.fromkeys((mode, 0.0) if mode == "none" else (mode, weight)
                                  for mode in modes for weight in weights))
    if not settings:
        raise BrushworkError("give at least one temporal mode and strength")
    width, height = parse_size(synthetic_size)
    found = video_clips(clips, photo=synthetic_photo, size=(width, height), frames=max_frames or 48,
                        max_frames=max_frames)
    evaluation = evaluate_video(found, style_dir, model=models[0] if models else None, settings=settings,
                                loss_net=loss_net, content_size=content_size, style_size=style_size,
                                max_styles=max_styles, flow_size=flow_size or None, gap=long_term_gap, device=device,
                                weights_dir=list(weights_dir))
    paths = write_video_report(evaluation, output)
    click.echo(video_summary_table(video_summary(evaluation.records)))
    click.echo(f"wrote {', '.join(str(p) for p in paths.values())}")


@cli.command()
@click.option("--model", "models", multiple=True, type=click.Choice(_MODELS),
              help=f"Model to measure; repeatable [default: {registry.DEFAULT_MODEL}].")
@click.option("--sizes", default=",".join(DEFAULT_SIZES), show_default=True,
              help="Content sizes, comma-separated: N (square) or WIDTHxHEIGHT.")
@click.option("--device", "devices", multiple=True,
              help="cpu, cuda or cuda:N; repeatable [default: cpu, and cuda when there is a GPU].")
@click.option("--runs", type=click.IntRange(min=1), default=5, show_default=True, help="Timed runs per case.")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True, help="Untimed runs first.")
@click.option("--rounds", type=click.IntRange(min=1), default=2, show_default=True,
              help="Fresh processes per case, variants in alternating order; timings pooled.")
@click.option("--no-baseline", is_flag=True, help="Skip the reference-pattern baseline.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write all results.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the table.")
@click.option("--training", is_flag=True,
              help="Measure training steps (forward, losses, backward, Adam) instead of stylisation.")
@click.option("--method", "training_method", type=click.Choice(["microast", "adain", "johnson", "vst"]),
              default="microast", show_default=True, help="With --training: whose training step.")
@click.option("--batch-size", type=click.IntRange(min=2), default=8, show_default=True, help="With --training.")
@click.option("--crop", type=click.IntRange(min=16), default=256, show_default=True, help="With --training.")
@click.option("--loss-net", type=click.Choice(["vgg16-hed", "vgg16", "vgg19"]), default="vgg16-hed",
              show_default=True, help="With --training or --gatys-convergence.")
@click.option("--steps", "gatys_steps", type=click.IntRange(min=1), default=None,
              help="Steps of the gatys model (and of --gatys-convergence) [default: gatys's 300].")
@click.option("--gatys-convergence", is_flag=True,
              help="Time for Gatys to reach a given loss, coarse-to-fine against single-scale, at the first of "
                   "--sizes, on a real photo and painting (--content, --style).")
@click.option("--content", default="sample:astronaut", show_default=True, help="With --gatys-convergence or --video.")
@click.option("--style", default="sample:chelsea", show_default=True, help="With --gatys-convergence or --video.")
@click.option("--max-memory", default=DEFAULT_MAX_MEMORY, show_default=True,
              help="The brushwork variant's working-memory budget (larger images are tiled), as for stylize.")
@click.option("--onnx", is_flag=True, help="Also measure MicroAST models exported to ONNX, run by ONNX Runtime.")
@click.option("--video", is_flag=True,
              help="Frames/s of whole 'brushwork video' runs on a synthetic pan over --content, for each temporal "
                   "variant (--variants) at each of --sizes, against painting each frame alone.")
@click.option("--variants", default=",".join(VIDEO_VARIANTS), show_default=True,
              help="With --video: temporal modes, +measure to measure the warping error too.")
@click.option("--frames", type=click.IntRange(min=2), default=24, show_default=True, help="With --video.")
@_weights_dir_option
def bench(models, sizes, devices, runs, warmup, rounds, no_baseline, json_path, markdown_path, training,
          training_method, batch_size, crop, loss_net, gatys_steps, gatys_convergence, content, style, max_memory, onnx,
          video, variants, frames, weights_dir):
    """Latency (median, min-max of ROUNDS x RUNS after WARMUP) and peak memory per model, size and device.

    Each case runs in a fresh process. The baseline is the reference implementation's plain pattern (eager
    fp32, whole image; for --training, the same step in plain float32 and, for MicroAST, the reference training
    step with the contrastive loss built in Python loops), measured in the same run, so every figure is also a
    ratio.
    """
    if video:
        results = run_video_benchmark([s for s in sizes.split(",") if s], variants=variants.split(","),
                                      frames=frames, runs=runs, warmup=warmup, rounds=rounds,
                                      model=models[0] if models else None, content=content, style=style,
                                      device=(devices or ("cpu",))[0], weights_dir=list(weights_dir))
        table = video_table(results)
    elif gatys_convergence:
        results = run_gatys_convergence(sizes.split(",")[0], steps=gatys_steps or 300, content=content, style=style,
                                        device=(devices or ("cpu",))[0], loss_net=loss_net,
                                        weights_dir=list(weights_dir))
        table = convergence_table(results)
    elif training:
        results = run_training_benchmark(method=training_method, batch_size=batch_size, crop=crop,
                                         device=(devices or ("cpu",))[0],
                                         loss_net=loss_net, runs=runs, warmup=warmup, rounds=rounds,
                                         weights_dir=list(weights_dir))
        table = training_table(results)
    else:
        results = run_benchmark(list(models) or [registry.DEFAULT_MODEL], [s for s in sizes.split(",") if s],
                                list(devices) or None, runs=runs, warmup=warmup, rounds=rounds,
                                baseline=not no_baseline, weights_dir=list(weights_dir), gatys_steps=gatys_steps,
                                max_memory=max_memory, onnx=onnx)
        table = markdown_table(results)
    machine = describe_machine()
    if json_path:
        json_path.write_text(json.dumps({"machine": machine, "results": results}, indent=1))
    if markdown_path:
        markdown_path.write_text(f"{machine}\n\n{table}\n")
    click.echo(f"{machine}\n{table}")


def _train_options(command):
    """One option per training setting, generated from TrainConfig (None: keep the config file's value)."""
    number = _Number(-_LARGEST_SETTING, _LARGEST_SETTING)
    types = {"str": str, "int": int, "float": number, "str | None": str, "int | None": int, "float | None": number}
    for setting in reversed(dataclasses.fields(TrainConfig)):
        if setting.name in ("weights_dir", "method"):
            continue
        flag = "--" + setting.name.replace("_", "-")
        default = setting.default
        help_text = setting.metadata["help"] + ("" if default in (None, "") else f" [default: {default}]")
        if setting.type == "bool":
            option = click.option(f"{flag}/--no-{flag[2:]}", setting.name, default=None, help=help_text)
        else:
            option = click.option(flag, setting.name, type=types[setting.type], default=None, help=help_text)
        command = option(command)
    return command


@cli.command("train")
@click.argument("method", type=click.Choice(list(METHOD_DEFAULTS)))
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file of settings (a [sweep] table runs every combination); options override it.")
@click.option("--resume", is_flag=False, flag_value="last", default=None,
              help="Continue from OUTPUT_DIR/checkpoints/last.ckpt, or from the checkpoint given.")
@_train_options
@_weights_dir_option
def train_command(method, config, resume, weights_dir, **settings):
    """Train METHOD on folders of content and style images (PyTorch Lightning).

    Writes checkpoints, CSV and TensorBoard logs (and W&B with --wandb), sample grids, and at the end the
    weights in OUTPUT_DIR/weights/ (MicroAST: <part>.pth; AdaIN: decoder.pth, over the loss network as encoder),
    which 'stylize --model OUTPUT_DIR/weights' reads. Defaults differ per method: AdaIN trains with style
    weight 10 and no contrastive loss.
    """
    from .training import train

    settings["weights_dir"] = [str(d) for d in weights_dir] or None
    runs = load_config(config, settings, method)
    if resume and len(runs) > 1:
        raise BrushworkError("--resume continues one run, not a sweep")
    for name, run in runs:
        if name:
            click.echo(f"sweep run {name}")
        click.echo(f"wrote {train(run, resume)}")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every one).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("brushwork-data"),
              show_default=True, help="Folder of the stored images and the SQLite database.")
@click.option("--database", default=None, help="SQLAlchemy database URL [default: SQLite in --data].")
@click.option("--max-upload-mb", type=_Number(0, _LARGEST_SETTING, min_open=True), default=Settings.max_upload_mb,
              show_default=True, help="Largest request (all its uploads together).")
@click.option("--body-timeout", type=_Number(0, _LARGEST_SETTING, min_open=True), default=Settings.body_timeout,
              show_default=True, help="Seconds a request's body may take to arrive; a slower one gets 408.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=Settings.max_pixels, show_default=True,
              help="Largest uploaded image, in pixels (read from its header, before decoding).")
@click.option("--concurrent-decodes", type=click.IntRange(min=1), default=Settings.concurrent_decodes,
              show_default=True, help="Uploads decoded at once; more wait their turn.")
@click.option("--storage-quota", type=_ByteCount(), default="10GB", show_default=True,
              help="Most bytes of images kept in --data (500MB, 2GB, 1.5GiB); a request that would store more gets "
                   "507.")
@click.option("--unused-upload-hours", type=_Number(0, 100 * 365 * 24), default=24, show_default=True,
              help="An uploaded image that no result uses (and that is not a study artwork) is deleted this many "
                   "hours after its upload.")
@click.option("--workers", type=click.IntRange(min=1), default=Settings.workers, show_default=True,
              help="Stylisations at once (more help with a GPU or many cores).")
@click.option("--queue-size", type=click.IntRange(min=0), default=Settings.queue_size, show_default=True,
              help="Requests that may wait for a worker; more are refused with 503.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--preview-max-size", type=click.IntRange(16, 4096), default=Settings.preview_max_size, show_default=True,
              help="Live studio: largest preview (shorter side, px).")
@click.option("--preview-clients", type=click.IntRange(min=1), default=Settings.preview_clients, show_default=True,
              help="Live studio: clients whose content features and style signals are kept.")
@click.option("--preview-cache-mb", type=_Number(0, _LARGEST_SETTING, min_open=True), default=Settings.preview_cache_mb,
              show_default=True, help="Live studio: most memory kept for one client's previews.")
@click.option("--live-connections", type=click.IntRange(min=0), default=Settings.live_connections, show_default=True,
              help="Webcams painted at once; more are told to try later.")
@click.option("--live-max-fps", type=_Number(0, 240, min_open=True), default=Settings.live_max_fps, show_default=True,
              help="Webcam frames a second one connection may send; a faster one is disconnected.")
@click.option("--live-max-side", type=click.IntRange(16, 4096), default=Settings.live_max_side, show_default=True,
              help="Largest webcam frame (longer side, px).")
@_weights_dir_option
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME[:PORT]",
              help="A host name clients reach the server by, with or without a port (repeatable); requests for "
                   "any other get 400. [default: the --host address, localhost and 127.0.0.1, with --port]")
def serve(host, port, data_dir, database, max_upload_mb, body_timeout, max_pixels, concurrent_decodes,
          storage_quota, unused_upload_hours, workers, queue_size, device, preview_max_size, preview_clients,
          preview_cache_mb, live_connections, live_max_fps, live_max_side, weights_dir, allowed_hosts):
    """Serve the web app (studio, live webcam, gallery, study, about) and its REST API (described at /docs)."""
    import uvicorn
    from sqlalchemy.exc import SQLAlchemyError

    from .server.app import create_app
    from .server.settings import default_allowed_hosts

    allowed_hosts = list(allowed_hosts) or default_allowed_hosts(host, port)
    settings = Settings(data_dir=data_dir, database_url=database, weights_dirs=list(weights_dir), device=device,
                        max_upload_mb=max_upload_mb, body_timeout=body_timeout, max_pixels=max_pixels,
                        concurrent_decodes=concurrent_decodes, storage_quota=storage_quota,
                        unused_upload_grace=unused_upload_hours * 3600, workers=workers, queue_size=queue_size,
                        allowed_hosts=allowed_hosts, preview_max_size=preview_max_size,
                        preview_clients=preview_clients, preview_cache_mb=preview_cache_mb,
                        live_connections=live_connections, live_max_fps=live_max_fps, live_max_side=live_max_side)
    try:
        app = create_app(settings)
    except (OSError, SQLAlchemyError) as error:
        raise BrushworkError(f"cannot open the data folder or database: {error}") from None
    click.echo(f"brushwork: serving http://{host}:{port}/ (data in {data_dir}; answering to "
               f"{', '.join(allowed_hosts)})")
    # An idle keep-alive connection is closed after 5 s; a body slower than --body-timeout gets 408. A WebSocket
    # message (a webcam frame) is held whole before the app sees it: none may be much larger than a frame may be.
    uvicorn.run(app, host=host, port=port, timeout_keep_alive=5, ws_max_size=2 * settings.live_max_frame_bytes)


@cli.group()
def weights():
    """List, fetch and verify pretrained weights."""


@weights.command("list")
@_weights_dir_option
@click.option("-v", "--verbose", is_flag=True, help="Also show source, citation and notes.")
def weights_list(weights_dir, verbose):
    """Every registered entry and where its files are (local folder, cache, or missing)."""
    header = ("NAME", "KIND", "WHERE", "LICENCE")
    rows = []
    for name, entry in registry.REGISTRY.items():
        places = {s.found.place if s.found else "missing" for s in registry.status(entry, list(weights_dir))}
        label = name + (" (default)" if name == registry.DEFAULT_MODEL else "")
        rows.append((entry, (label, entry.kind, places.pop() if len(places) == 1 else "partial",
                             entry.licence.split(";")[0])))
    widths = [max(len(cells[i]) for cells in [header] + [cells for _, cells in rows]) for i in range(4)]
    click.echo("  ".join(cell.ljust(width) for cell, width in zip(header, widths)).rstrip())
    for entry, cells in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip())
        if verbose:
            for line in (entry.summary, f"source: {entry.source}", f"licence: {entry.licence}",
                         f"cite: {entry.citation}", entry.notes):
                if line:
                    click.echo(f"    {line}")


@weights.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--all", "fetch_all", is_flag=True, help="Fetch every entry.")
@_weights_dir_option
def weights_fetch(names, fetch_all, weights_dir):
    """Make sure the named weights are available (found locally or fetched into the cache), checked."""
    names = list(registry.REGISTRY) if fetch_all else list(names) or [registry.DEFAULT_MODEL]
    for name in names:
        paths = registry.resolve(name, list(weights_dir))
        folders = sorted({str(p.parent) for p in paths.values()})
        click.echo(f"{name}: ok ({', '.join(folders)})")


@weights.command("verify")
@click.argument("names", nargs=-1)
@_weights_dir_option
def weights_verify(names, weights_dir):
    """Check the sha256 of every weight file; exit 1 if a file is damaged or missing.

    Named entries must have every file. Without names every entry is checked that ships in the package or has any
    file at hand; entries with none (not fetched yet) are listed, and are not an error."""
    problems = []
    for name in names or registry.REGISTRY:
        statuses = registry.status(name, list(weights_dir), check=True)
        packaged = any(isinstance(item.file.source, registry.Packaged) for item in statuses)
        if not names and not packaged and all(item.found is None for item in statuses):
            click.echo(f"{name}: not fetched yet ('brushwork weights fetch {name}')")
            continue
        for item in statuses:
            if item.found is None:
                state = "MISSING"
                problems.append(f"{name}/{item.file.filename} is missing")
            elif not item.file.sha256:
                state = f"present, no published checksum to check {item.found.path}"
            elif item.ok:
                state = f"ok {item.found.path}"
            else:
                state = f"DAMAGED (sha256 does not match) {item.found.path}"
                problems.append(f"{item.found.path} is damaged")
            click.echo(f"{name}/{item.file.filename}: {state}")
    if problems:
        raise WeightsError(f"{len(problems)} weight file(s) missing or damaged: {'; '.join(problems)}")


def warping_summary(errors: WarpingErrors) -> str:
    """One line: the output's warping errors and the input's own, and the scene cuts."""
    def value(number: float) -> str:
        return "-" if math.isnan(number) else f"{number:.2f}"

    return (f"warping error (0-255, the input's own in brackets): short-term {value(errors.short_term)} "
            f"({value(errors.input_short_term)}) over {errors.short_pairs} pairs, long-term "
            f"{value(errors.long_term)} ({value(errors.input_long_term)}) over {errors.long_pairs} pairs "
            f"{errors.gap} frames apart; {errors.cuts} scene cut{'' if errors.cuts == 1 else 's'}")


def main() -> None:
    """Entry point: user errors as one line, never a traceback."""
    try:
        code = cli.main(standalone_mode=False, prog_name="brushwork")
    except click.exceptions.Abort:
        click.echo("brushwork: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except BrushworkError as error:
        click.echo(f"brushwork: error: {error}", err=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        click.echo("brushwork: interrupted", err=True)
        sys.exit(130)
    except (MemoryError, torch.OutOfMemoryError):
        click.echo("brushwork: error: out of memory; try a smaller --max-memory or --content-size, or --device cpu",
                   err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)

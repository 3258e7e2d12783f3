"""Evaluation: stylise every content x style pair with several models, measure, and report.

``evaluate`` returns one record per (model, content, style); ``write_report`` turns records into a CSV, a summary
table (mean and standard deviation per model), a plot of SSIM against style loss and a contact sheet.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from .api import Stylizer, load_model
from .errors import BrushworkError
from .faces import FACE_METRICS, face_measures, find_faces
from .images import list_images, load_image, resize, save_image, to_image, to_tensor
from .metrics import Metrics
from .reports import markdown_table, report_paths, write_csv
from .temporal import FLOW_SIDE, LONG_TERM_GAP

#: The measured columns, with whether higher is better.
METRICS = {
    "ssim": True,
    "content_loss": False,
    "perceptual_distance": False,
    "style_loss": False,
    "style_ratio": True,
    "gram_loss": False,
    "color_distance": False,
    "grid_artefact": False,
    "frame_artefact": False,
    "seconds": False,
}

#: Every column an evaluation may have: the face measures come with ``faces=True``.
ALL_METRICS = {**METRICS, **FACE_METRICS}


@dataclass
class Evaluation:
    """Records of an evaluation, and thumbnails of a few outputs for the contact sheet."""

    records: list[dict] = field(default_factory=list)
    #: (content, style) -> {"content": image, "style": image, model: output}
    samples: dict[tuple[str, str], dict[str, Image.Image]] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)


def evaluate(content_dir: str | Path, style_dir: str | Path, models: Sequence[str], *,
             loss_net: str = "vgg16-hed", content_size: int = 512, style_size: int = 512,
             max_contents: int | None = None, max_styles: int | None = None, sample_pairs: int = 6,
             save_dir: str | Path | None = None, device: str = "auto", weights_dir=None,
             progress: bool = True, gatys_options: dict | None = None, faces: bool = False) -> Evaluation:
    """Stylise every content with every style (the first ``max_*`` files by name) with each model.

    Inputs are resized so that their shorter side is ``content_size`` / ``style_size`` pixels. A per-style model
    (johnson) is measured on the pairs of its own style image only (matched by file name). With
    ``save_dir`` every output is also written there as ``<model>/<content>__<style>.jpg``. ``gatys_options``
    set the optimisation of the ``gatys`` model (``steps``, ...). With ``faces`` the records also hold the face
    measures of :mod:`brushwork.faces` (portraits: the eyes and mouth kept, the face still found).
    """
    contents = _images_in(content_dir, "content")[:max_contents]
    styles = _images_in(style_dir, "style")[:max_styles]
    if not models:
        raise BrushworkError("name at least one model to evaluate")
    # The content is read and resized once here; each model's Stylizer encodes each style once.
    stylizers = {name: Stylizer(load_model(name, device=device, weights_dir=weights_dir,
                                           **({"progress": False, **(gatys_options or {})} if name == "gatys" else {})),
                                style_size=style_size)
                 for name in models}
    scorer = Metrics(loss_net, device=device, weights_dir=weights_dir)
    pairs = [(c, s) for c in contents for s in styles]
    count = min(sample_pairs, len(pairs))
    shown = {pairs[round(i * (len(pairs) - 1) / max(1, count - 1))] for i in range(count)}  # spread evenly
    result = Evaluation(settings=dict(loss_net=loss_net, content_size=content_size, style_size=style_size,
                                      contents=len(contents), styles=len(styles), models=list(models),
                                      faces=faces,
                                      **({"gatys": gatys_options} if gatys_options and "gatys" in models else {})))
    style_cache: dict[Path, tuple] = {}
    def paints(name: str, style_path: Path) -> bool:
        """A per-style model (johnson) is measured only on the pairs of the style it was trained on."""
        model = stylizers[name].model
        return getattr(model, "needs_style", True) or getattr(model, "style_name", "") == style_path.name

    total = sum(paints(name, style) for _, style in pairs for name in models)
    if not total:
        raise BrushworkError("no pair to measure: a johnson model is measured on its own style image, which is not "
                             "among the styles given")
    with tqdm(total=total, desc="evaluating", unit="image", disable=not progress) as bar:
        for content_path in contents:
            content_image = resize(load_image(content_path), content_size)
            content = to_tensor(content_image)
            content_features = scorer.features(content)
            content_faces = find_faces(content_image) if faces else None
            for style_path in styles:
                if style_path not in style_cache:
                    style = to_tensor(resize(load_image(style_path), style_size))
                    style_cache[style_path] = (style, scorer.style_features(style))
                style, style_features = style_cache[style_path]
                pair = (content_path.name, style_path.name)
                if (content_path, style_path) in shown:
                    result.samples[pair] = {"content": _thumbnail(content), "style": _thumbnail(style)}
                for name, stylizer in stylizers.items():
                    if not paints(name, style_path):
                        continue
                    bar.set_postfix_str(f"{name}: {content_path.stem} x {style_path.stem}", refresh=False)
                    start = time.perf_counter()
                    per_style = not getattr(stylizer.model, "needs_style", True)
                    output_image = stylizer(content_image, None if per_style else style_path)
                    seconds = time.perf_counter() - start
                    output = to_tensor(output_image)
                    measured = scorer.measure(content, style, output, content_features=content_features,
                                              style_features=style_features)
                    if faces:
                        measured.update(face_measures(output_image, content_image, content_faces))
                    result.records.append({"model": name, "content": pair[0], "style": pair[1],
                                           "width": output_image.width, "height": output_image.height,
                                           **measured, "seconds": seconds})
                    if pair in result.samples:
                        result.samples[pair][name] = _thumbnail(output)
                    if save_dir is not None:
                        save_image(output_image, Path(save_dir) / _folder_name(name) /
                                   f"{content_path.stem}__{style_path.stem}.jpg", quality=90)
                    bar.update()
    return result


def summarize(records: Iterable[dict]) -> list[dict]:
    """Per model: the number of pairs and the mean and standard deviation of every metric."""
    by_model: dict[str, list[dict]] = {}
    for record in records:
        by_model.setdefault(record["model"], []).append(record)
    summary = []
    for model, rows in by_model.items():
        entry = {"model": model, "pairs": len(rows), "loss_net": rows[0]["loss_net"]}
        for metric in _metrics_of(rows):
            values = [row[metric] for row in rows if not math.isnan(row[metric])]  # nan: too small to measure
            entry[f"{metric}_mean"] = statistics.fmean(values) if values else math.nan
            entry[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        summary.append(entry)
    return summary


def _metrics_of(rows: list[dict]) -> list[str]:
    """The measured columns these records have, in table order."""
    return [metric for metric in ALL_METRICS if metric in rows[0]]


def summary_table(summary: list[dict]) -> str:
    """The summary as a markdown table: mean ± standard deviation, arrows saying which way is better."""
    metrics = [m for m in ALL_METRICS if summary and f"{m}_mean" in summary[0]]
    arrows = {True: "↑", False: "↓"}
    header = ["model", "pairs"] + [f"{name.replace('_', ' ')} {arrows[ALL_METRICS[name]]}" for name in metrics]
    rows = [[entry["model"], str(entry["pairs"])]
            + [f"{_number(entry[f'{m}_mean'])} ± {_number(entry[f'{m}_std'])}" for m in metrics] for entry in summary]
    return markdown_table(header, rows)


def write_report(evaluation: Evaluation, out_dir: str | Path) -> dict[str, Path]:
    """metrics.csv, summary.md, summary.json, ssim_vs_style_loss.png and contact_sheet.png in ``out_dir``."""
    paths = report_paths(out_dir, ("metrics.csv", "summary.md", "summary.json", "ssim_vs_style_loss.png",
                                   "contact_sheet.png"))
    records = evaluation.records
    write_csv(paths["metrics.csv"], records)
    summary = summarize(records)
    settings = evaluation.settings
    paths["summary.md"].write_text(
        f"{settings['contents']} contents x {settings['styles']} styles, inputs resized to "
        f"{settings['content_size']} / {settings['style_size']} px (shorter side), loss network "
        f"{settings['loss_net']}.\n\n{summary_table(summary)}\n")
    paths["summary.json"].write_text(json.dumps({"settings": settings, "summary": summary}, indent=1))
    _plot(records, summary, paths["ssim_vs_style_loss.png"], settings["loss_net"])
    _contact_sheet(evaluation, paths["contact_sheet.png"])
    return paths


def _images_in(folder: str | Path, role: str) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise BrushworkError(f"{folder}: not a folder of {role} images")
    found = list_images(folder)
    if not found:
        raise BrushworkError(f"{folder}: no {role} images in this folder")
    return found


def _folder_name(model: str) -> str:
    """A file-name-safe folder for a model's outputs: a registry name as it is, a trained model's folder as its
    path's last parts joined by '-' (``runs/mine/weights`` -> ``mine-weights``)."""
    parts = [part for part in Path(model).parts[-2:] if part not in ("/", "..", ".")]
    return "-".join(parts) or "model"


def _thumbnail(tensor, height: int = 160) -> Image.Image:
    image = to_image(tensor)
    return image.resize((max(1, round(image.width * height / image.height)), height), Image.Resampling.LANCZOS)


def _number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _plot(records: list[dict], summary: list[dict], path: Path, loss_net: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axes = plt.subplots(figsize=(7, 5), dpi=120)
    for index, entry in enumerate(summary):
        colour = f"C{index}"
        rows = [r for r in records if r["model"] == entry["model"]]
        axes.scatter([r["style_loss"] for r in rows], [r["ssim"] for r in rows], s=10, alpha=0.3, color=colour)
        error = 1 / len(rows) ** 0.5  # standard error of the mean
        axes.errorbar(entry["style_loss_mean"], entry["ssim_mean"], xerr=entry["style_loss_std"] * error,
                      yerr=entry["ssim_std"] * error, fmt="o", color=colour, markersize=8, capsize=3,
                      markeredgecolor="black", label=f"{entry['model']} (mean ± s.e.)")
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes.set_xlabel(f"style loss (mean/std, sum over relu1_1..relu4_1, {loss_net}; lower is more stylised)")
    axes.set_ylabel("SSIM to content (grayscale; higher keeps more)")
    axes.set_title("Content kept against style reached: one dot per pair")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _contact_sheet(evaluation: Evaluation, path: Path, height: int = 160) -> None:
    columns = ["content", "style", *evaluation.settings["models"]]
    rows = list(evaluation.samples.values())
    widths = [max((row[c].width for row in rows if c in row), default=height) for c in columns]
    label_height, gap = 22, 4
    sheet = Image.new("RGB", (sum(widths) + gap * (len(columns) + 1),
                              label_height + len(rows) * (height + gap) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    x = gap
    for column, width in zip(columns, widths):
        draw.text((x, 4), column if len(column) * 7 < width else column[: max(3, width // 7 - 1)] + "…",
                  fill="black", font=font)
        for index, row in enumerate(rows):
            if column in row:
                sheet.paste(row[column], (x, label_height + gap + index * (height + gap)))
        x += width + gap
    sheet.save(path)


# ------------------------------------------------------------------------------------------------ video

#: The prefix of the synthetic clips in a video evaluation: ``synthetic`` (every motion) or ``synthetic:pan,zoom``.
SYNTHETIC = "synthetic"
#: Columns of a video record that are warping errors, measured with the flow (and, for synthetic clips, with the
#: exactly known motion: ``known_*``).
WARPING_COLUMNS = ("short_term", "long_term", "input_short_term", "input_long_term")


@dataclass
class VideoClip:
    """A clip to evaluate on: its frames (a fresh iterator each time) and, for synthetic clips, its exact motion."""

    name: str
    frames: Callable[[], Iterator[Image.Image]]
    length: int
    known_motion: Callable | None = None


@dataclass
class VideoEvaluation:
    """Records of a video evaluation (one per clip, style and temporal setting), with each record's per-frame
    short-term warping errors, and the settings."""

    records: list[dict] = field(default_factory=list)
    per_frame: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)


def video_clips(source: str | Path, *, photo: str = "sample:astronaut", size: tuple[int, int] = (640, 360),
                frames: int = 48, max_frames: int | None = None) -> list[VideoClip]:
    """The clips a video evaluation paints: a video file, the videos in a folder (by name), or ``synthetic`` /
    ``synthetic:MOTION,...``: synthetic clips of ``frames`` frames of ``size`` over ``photo`` (see
    :mod:`brushwork.clips`). ``max_frames`` keeps the first frames of each."""
    from .clips import MOTIONS, synthetic_clip

    text = str(source)
    if text == SYNTHETIC or text.startswith(SYNTHETIC + ":"):
        motions = text[len(SYNTHETIC) + 1:].split(",") if ":" in text else list(MOTIONS)
        clips = []
        for motion in motions:
            clip = synthetic_clip(motion, photo, width=size[0], height=size[1],
                                  frames=min(frames, max_frames or frames))
            clips.append(VideoClip(f"{SYNTHETIC}-{motion}", clip.frames, len(clip), clip.motion))
        return clips
    path = Path(source)
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() in VIDEO_EXTENSIONS)
        if not paths:
            raise BrushworkError(f"{path}: no videos in this folder ({', '.join(sorted(VIDEO_EXTENSIONS))})")
    elif path.is_file():
        paths = [path]
    else:
        raise BrushworkError(f"{source}: no such video or folder; or give {SYNTHETIC}[:MOTION,...]")
    return [_file_clip(p, max_frames) for p in paths]


#: Extensions of the video files a folder is searched for.
VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v"})


def evaluate_video(clips: Sequence[VideoClip], style_dir: str | Path, *, model: str | None = None,
                   settings: Sequence[tuple[str, float]] = (("none", 0.0), ("blend", 0.8), ("flow", 0.8)),
                   loss_net: str = "vgg16-hed", content_size: int | None = None, style_size: int = 512,
                   max_styles: int | None = None, flow_size: int | None = FLOW_SIDE, gap: int = LONG_TERM_GAP,
                   device: str = "auto", weights_dir=None, progress: bool = True) -> VideoEvaluation:
    """Paint every clip with every style (the first ``max_styles`` by name) and compare temporal ``settings``
    ((mode, strength) pairs) on one painting: each frame is painted once and goes through every setting.

    Each record holds the output's and the input's warping errors measured with the flow, as ``brushwork video``
    reports them; for synthetic clips also with the exactly known motion (``known_*``, independent of the flow);
    and the style loss, SSIM and style ratio of the middle frame, and the painting's seconds per frame.
    """
    from .temporal import TemporalFilter, WarpingMeter
    from .video import FramePainter

    styles = _images_in(style_dir, "style")[:max_styles]
    if not clips:
        raise BrushworkError("give at least one clip")
    if not settings:
        raise BrushworkError("give at least one temporal setting")
    stylizer = Stylizer(load_model(model, device=device, weights_dir=weights_dir), content_size=content_size,
                        style_size=style_size)
    if not getattr(stylizer.model, "needs_style", True):
        raise BrushworkError(f"a video evaluation paints the style images given; a {stylizer.method} model "
                             "paints only its own")
    scorer = Metrics(loss_net, device=device, weights_dir=weights_dir)
    labels = [_setting_label(mode, strength) for mode, strength in settings]
    result = VideoEvaluation(settings=dict(loss_net=loss_net, model=model or "default", content_size=content_size,
                                           style_size=style_size, clips=[c.name for c in clips],
                                           styles=len(styles), settings=labels, gap=gap, flow_size=flow_size))
    with tqdm(total=sum(c.length for c in clips) * len(styles), desc="evaluating video", unit="frame",
              disable=not progress) as bar:
        for clip in clips:
            for style_path in styles:
                bar.set_postfix_str(f"{clip.name} x {style_path.stem}", refresh=False)
                style = to_tensor(resize(load_image(style_path), style_size))
                painter = FramePainter(stylizer, style_path, [TemporalFilter(m, s) for m, s in settings], flow=True,
                                       flow_size=flow_size)
                meter = WarpingMeter(gap, outputs=len(settings))
                known = WarpingMeter(gap, clip.known_motion, outputs=len(settings)) if clip.known_motion else None
                middle, seconds = clip.length // 2, 0.0
                for index, frame in enumerate(clip.frames()):
                    start = time.perf_counter()
                    painted = painter(frame)
                    seconds += time.perf_counter() - start
                    meter.add(painted.content, painted.written, painted.motion)
                    if known is not None:
                        known.add(painted.content, painted.written)
                    if index == middle:
                        content, outputs = painted.content.image, painted.written
                    bar.update()
                style_features = scorer.style_features(style)
                content_features = scorer.features(content)
                for number, label in enumerate(labels):
                    measured = scorer.measure(content, style, outputs[number], content_features=content_features,
                                              style_features=style_features)
                    errors = meter.result(number)
                    record = {"clip": clip.name, "style": style_path.name, "setting": label,
                              "temporal": settings[number][0], "strength": settings[number][1],
                              "frames": painter.frames, "width": content.shape[-1], "height": content.shape[-2],
                              **{column: getattr(errors, column) for column in WARPING_COLUMNS},
                              "cuts": errors.cuts}
                    if known is not None:
                        truth = known.result(number)
                        record.update({f"known_{column}": getattr(truth, column) for column in WARPING_COLUMNS})
                    record.update({"style_loss": measured["style_loss"], "ssim": measured["ssim"],
                                   "style_ratio": measured["style_ratio"],
                                   "seconds_per_frame": seconds / max(1, painter.frames)})
                    result.records.append(record)
                    result.per_frame[(clip.name, style_path.name, label)] = [e for e, _ in errors.per_frame]
    _add_style_loss_ratios(result.records)
    return result


def video_summary(records: Iterable[dict]) -> list[dict]:
    """Per clip and setting: the means over styles of the warping errors, the middle frame's style loss ratio
    (to painting each frame alone, where measured) and SSIM."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        groups.setdefault((record["clip"], record["setting"]), []).append(record)
    columns = [c for c in ("short_term", "long_term", "input_short_term", "input_long_term", "known_short_term",
                           "known_long_term", "known_input_short_term", "known_input_long_term",
                           "style_loss_ratio", "style_loss", "ssim", "cuts") if any(c in r for r in records)]
    summary = []
    for (clip, setting), rows in groups.items():
        entry = {"clip": clip, "setting": setting, "styles": len(rows)}
        for column in columns:
            values = [row[column] for row in rows if column in row and not math.isnan(row[column])]
            entry[column] = statistics.fmean(values) if values else math.nan
        summary.append(entry)
    return summary


def video_summary_table(summary: list[dict]) -> str:
    """The video summary as a markdown table (0-255 levels; known: measured with the exact motion)."""
    known = any("known_short_term" in entry for entry in summary)
    header = ["clip", "setting", "short-term ↓", "long-term ↓", "input short / long"]
    header += ["known motion: short ↓", "long ↓", "input short / long"] if known else []
    header += ["style loss ratio (middle frame) ↓", "SSIM ↑"]
    rows = []
    for entry in summary:
        cells = [entry["clip"], entry["setting"], _number(entry["short_term"]), _number(entry["long_term"]),
                 f"{_number(entry['input_short_term'])} / {_number(entry['input_long_term'])}"]
        if known:
            cells += [_number(entry.get("known_short_term", math.nan)), _number(entry.get("known_long_term", math.nan)),
                      f"{_number(entry.get('known_input_short_term', math.nan))} / "
                      f"{_number(entry.get('known_input_long_term', math.nan))}"]
        rows.append(cells + [_number(entry.get("style_loss_ratio", math.nan)), _number(entry["ssim"])])
    return markdown_table(header, rows)


def write_video_report(evaluation: VideoEvaluation, out_dir: str | Path) -> dict[str, Path]:
    """metrics.csv, per_frame.json, summary.md, summary.json and warping_error.png in ``out_dir``."""
    paths = report_paths(out_dir, ("metrics.csv", "per_frame.json", "summary.md", "summary.json",
                                   "warping_error.png"))
    records = evaluation.records
    write_csv(paths["metrics.csv"], records)
    paths["per_frame.json"].write_text(json.dumps(
        [{"clip": c, "style": s, "setting": t, "short_term": errors} for (c, s, t), errors in
         evaluation.per_frame.items()], indent=1))
    summary = video_summary(records)
    settings = evaluation.settings
    paths["summary.md"].write_text(
        f"{len(settings['clips'])} clips x {settings['styles']} styles, model {settings['model']}, warping errors "
        f"in levels (0-255), long-term {settings['gap']} frames apart, flow at {settings['flow_size'] or 'full'} px; "
        f"style loss with {settings['loss_net']}.\n\n{video_summary_table(summary)}\n")
    paths["summary.json"].write_text(json.dumps({"settings": settings, "summary": summary}, indent=1))
    _plot_video(evaluation, summary, paths["warping_error.png"])
    return paths


def _setting_label(mode: str, strength: float) -> str:
    return mode if mode == "none" or not strength else f"{mode} {strength:g}"


def _add_style_loss_ratios(records: list[dict]) -> None:
    """Each record's middle-frame style loss over that of painting each frame alone (same clip and style)."""
    alone = {(r["clip"], r["style"]): r["style_loss"] for r in records if r["temporal"] == "none" or not r["strength"]}
    for record in records:
        base = alone.get((record["clip"], record["style"]))
        if base:
            record["style_loss_ratio"] = record["style_loss"] / base


def _file_clip(path: Path, max_frames: int | None) -> VideoClip:
    from .video import _open_video

    with _open_video(path) as container:  # counted by decoding: headers may not say, or say wrong
        length = sum(1 for _ in container.decode(video=0))
    length = min(length, max_frames) if max_frames else length

    def frames() -> Iterator[Image.Image]:
        with _open_video(path) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index >= length:
                    break
                yield frame.to_image()

    return VideoClip(path.stem, frames, length)


def _plot_video(evaluation: VideoEvaluation, summary: list[dict], path: Path) -> None:
    """Left: each clip's short- and long-term warping errors per setting, the input's as a line. Right: the
    short-term error per frame of the first clip and style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips, labels = evaluation.settings["clips"], evaluation.settings["settings"]
    figure, (bars, lines) = plt.subplots(1, 2, figsize=(12, 5.5), dpi=110, gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / len(labels)
    by_key = {(e["clip"], e["setting"]): e for e in summary}
    for number, label in enumerate(labels):
        for term, hatch in (("short_term", None), ("long_term", "//")):
            offsets = [c + (number - (len(labels) - 1) / 2) * width for c in range(len(clips))]
            values = [by_key[(clip, label)][term] for clip in clips]
            bars.bar([o + (0 if term == "short_term" else width / 2) for o in offsets], values, width / 2,
                     color=f"C{number}", hatch=hatch, edgecolor="white",
                     label=f"{label} ({'short' if term == 'short_term' else 'long'}-term)")
    for index, clip in enumerate(clips):
        floor = by_key[(clip, labels[0])]["input_short_term"]
        bars.hlines(floor, index - 0.45, index + 0.45, colors="black", linestyles="dashed",
                    label="input's own (short-term)" if index == 0 else None)
    bars.set_xticks(range(len(clips)), clips)
    bars.set_ylabel("warping error (0-255, mean over styles)")
    bars.set_title("Flicker: output frame vs the previous one moved by the flow")
    bars.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    bars.grid(axis="y", alpha=0.3)
    first = next(iter(evaluation.per_frame))[:2] if evaluation.per_frame else None
    for number, label in enumerate(labels):
        errors = evaluation.per_frame.get((*first, label), []) if first else []
        lines.plot(range(len(errors)), errors, color=f"C{number}", label=label)
    lines.set_xlabel("frame")
    lines.set_ylabel("short-term warping error")
    lines.set_title(f"Per frame: {first[0]} x {Path(first[1]).stem}" if first else "Per frame")
    lines.legend(fontsize=8)
    lines.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)

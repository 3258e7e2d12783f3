"""Evaluation: stylise every content x style pair with several models, measure, and report.

``evaluate`` returns one record per (model, content, style); ``write_report`` turns records into a CSV, a summary
table (mean and standard deviation per model), a plot of SSIM against style loss and a contact sheet.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from .api import Stylizer, load_model
from .errors import BrushworkError
from .faces import FACE_METRICS, face_measures, find_faces
from .images import list_images, load_image, resize, save_image, to_image, to_tensor
from .metrics import Metrics

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
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in summary:
        cells = [entry["model"], str(entry["pairs"])]
        cells += [f"{_number(entry[f'{m}_mean'])} ± {_number(entry[f'{m}_std'])}" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(evaluation: Evaluation, out_dir: str | Path) -> dict[str, Path]:
    """metrics.csv, summary.md, summary.json, ssim_vs_style_loss.png and contact_sheet.png in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in
             ("metrics.csv", "summary.md", "summary.json", "ssim_vs_style_loss.png", "contact_sheet.png")}
    records = evaluation.records
    with open(paths["metrics.csv"], "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
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

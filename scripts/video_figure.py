"""The figure of docs/video_flow.jpg: a few frames painted alone and flow-guided, side by side, each with its
difference to the previous output moved along the flow (the flicker), and the warping error per frame.

    python scripts/video_figure.py CLIP STYLE -o docs/video_flow.jpg [--start 0] [--frames 40] [--show 10,20,30]

CLIP is a video file or synthetic:MOTION (see brushwork.clips; --photo sets the photo it moves over). One painting
of each frame goes through both settings, as in 'brushwork eval --video'.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from PIL import Image

from brushwork import Stylizer
from brushwork.evaluation import video_clips
from brushwork.temporal import DEFAULT_STRENGTH, TemporalFilter, WarpingMeter, warp
from brushwork.video import FramePainter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clip")
    parser.add_argument("style")
    parser.add_argument("-o", "--output", required=True, type=Path)
    parser.add_argument("--start", type=int, default=0, help="skip the first N frames")
    parser.add_argument("--frames", type=int, default=40, help="paint N frames from there")
    parser.add_argument("--show", default="10,20,30", help="frames to show, comma-separated")
    parser.add_argument("--content-size", type=int, default=None)
    parser.add_argument("--photo", default="sample:astronaut", help="the photo a synthetic clip moves over")
    parser.add_argument("--size", default="640x360", help="a synthetic clip's WIDTHxHEIGHT")
    parser.add_argument("--strength", type=float, default=DEFAULT_STRENGTH)
    parser.add_argument("--model", default=None)
    parser.add_argument("--weights-dir", action="append", default=None)
    args = parser.parse_args()

    width, height = (int(side) for side in args.size.split("x"))
    clip = video_clips(args.clip, photo=args.photo, size=(width, height), frames=args.start + args.frames,
                       max_frames=args.start + args.frames)[0]
    shown = [int(index) for index in args.show.split(",")]
    stylizer = Stylizer(args.model, content_size=args.content_size, style_size=512, device="cpu",
                        weights_dir=args.weights_dir)
    settings = [("none", 0.0), ("flow", args.strength)]
    painter = FramePainter(stylizer, args.style, [TemporalFilter(*s) for s in settings], flow=True)
    meter = WarpingMeter(outputs=len(settings))
    previous, kept = None, {}
    for index, frame in enumerate(clip.frames()):
        if index < args.start:
            continue
        painted = painter(frame)
        meter.add(painted.content, painted.written, painted.motion)
        if index in shown and previous is not None and painted.motion is not None:
            # The flicker: each output against the previous one moved along the flow, where the flow is reliable.
            kept[index] = [(written, (written - warp(before, painted.motion)).abs().mean(dim=1)[0]
                            * painted.motion.reliable[0, 0])
                           for written, before in zip(painted.written, previous)]
        previous = painted.written
    errors = [meter.result(number) for number in range(len(settings))]

    rows = [("painted alone", 0, False), ("its flicker", 0, True), (f"flow-guided ({args.strength:g})", 1, False),
            ("its flicker", 1, True)]
    figure = plt.figure(figsize=(3.2 * len(kept) + 0.6, 2.0 * len(rows) * height / width * 1.6 + 2.6), dpi=100)
    grid = figure.add_gridspec(len(rows) + 1, len(kept), height_ratios=[1] * len(rows) + [1.3])
    for column, (index, images) in enumerate(sorted(kept.items())):
        for row, (label, setting, difference) in enumerate(rows):
            axes = figure.add_subplot(grid[row, column])
            output, change = images[setting]
            if difference:
                axes.imshow(change.numpy() * 255, cmap="magma", vmin=0, vmax=40)
            else:
                axes.imshow(output[0].permute(1, 2, 0).numpy())
            axes.set_xticks([])
            axes.set_yticks([])
            if column == 0:
                axes.set_ylabel(label, fontsize=9)
            if row == 0:
                axes.set_title(f"frame {index}", fontsize=9)
    plot = figure.add_subplot(grid[len(rows), :])
    frames = range(args.start, args.start + len(errors[0].per_frame))
    for (mode, _), result, colour in zip(settings, errors, ("C3", "C0")):
        plot.plot(frames, [e for e, _ in result.per_frame], color=colour,
                  label=f"{'painted alone' if mode == 'none' else 'flow-guided'}: mean {result.short_term:.2f}")
    plot.plot(frames, [e for _, e in errors[0].per_frame], color="gray", linestyle="--",
              label=f"the input's own: mean {errors[0].input_short_term:.2f}")
    plot.set_xlabel("frame")
    plot.set_ylabel("warping error (0-255)")
    plot.set_ylim(bottom=0)
    plot.grid(alpha=0.3)
    plot.legend(fontsize=8, loc="upper right")
    plot.set_title(f"{clip.name}, {Path(args.style).stem}: each output vs the previous one moved by the flow "
                   "(flicker maps: 0-40 levels)", fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    Image.open(buffer).convert("RGB").save(args.output, quality=85, optimize=True)
    print(f"wrote {args.output} ({args.output.stat().st_size // 1024} kB); short-term warping error: painted alone "
          f"{errors[0].short_term:.2f}, flow-guided {errors[1].short_term:.2f}, input {errors[0].input_short_term:.2f}")


if __name__ == "__main__":
    main()

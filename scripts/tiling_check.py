"""Tiled against whole-image painting of one real photo: PSNR, the largest pixel difference, and a figure of a crop
across a tile boundary (tiled | whole | difference x 50), for docs/BENCHMARKS.md.

    python scripts/tiling_check.py PHOTO PAINTING --size 2048 --tile 512 --figure docs/tiling_seam_crop.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from brushwork import load_model
from brushwork.images import as_image, resize, to_image, to_tensor
from brushwork.metrics import psnr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("content")
    parser.add_argument("style")
    parser.add_argument("--model", default="microast")
    parser.add_argument("--size", type=int, default=2048, help="longer side of the content")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--weights-dir", action="append", default=None)
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args()

    model = load_model(args.model, device="cpu", weights_dir=args.weights_dir)
    content = to_tensor(resize(as_image(args.content), args.size, side="longer"))
    style = to_tensor(resize(as_image(args.style), 512))
    with torch.inference_mode():
        signals = model.encode_style(style)
        whole = model.stylize(content, [signals]).clamp(0, 1)
        tiled = model.stylize(content, [signals], tile=args.tile).clamp(0, 1)
    psnr_db = psnr(tiled, whole)
    height, width = content.shape[-2:]
    print(f"{args.model} {width}x{height}, tiles of {args.tile} px: PSNR {psnr_db:.1f} dB, "
          f"largest difference {(whole - tiled).abs().max().item() * 255:.3f} / 255")
    if args.figure:
        # A 192 px crop centred on the first interior corner where four tiles meet.
        half = 96
        top, left = args.tile - half, args.tile - half
        crops = [tensor[..., top:top + 2 * half, left:left + 2 * half] for tensor in
                 (tiled, whole, ((tiled - whole).abs() * 50).clamp(0, 1))]
        panels = [to_image(crop).resize((2 * half * 2, 2 * half * 2), Image.Resampling.NEAREST) for crop in crops]
        figure = Image.new("RGB", (sum(p.width for p in panels) + 20, panels[0].height + 24), "white")
        draw = ImageDraw.Draw(figure)
        for index, (panel, label) in enumerate(zip(panels, ("tiled", "whole image", "|difference| x 50"))):
            figure.paste(panel, (index * (panel.width + 10), 24))
            draw.text((index * (panel.width + 10) + 4, 6), label, fill="black")
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        figure.save(args.figure)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()

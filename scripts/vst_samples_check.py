"""Do the samples of variational style transfer differ, and does each stay as close to the style as the mean code?

For every content x style pair of two folders (the first files by name), the mean-code stylisation and N samples
(seed S): the LPIPS-style perceptual distance between the samples (mean over the pairs of samples), and each
sample's style loss (the evaluation's: channel mean/std over relu1_1..relu4_1 of vgg16-hed) over the mean code's.
Prints one line per pair and a summary: the median and worst of both over the pairs.

    python scripts/vst_samples_check.py CONTENTS/ STYLES/ [--model vst] [--size 384] [--samples 4] [--seed 0]
        [--temperature T]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import brushwork
from brushwork import losses
from brushwork.images import list_images, load_image, resize, to_tensor
from brushwork.metrics import Metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("contents", type=Path)
    parser.add_argument("styles", type=Path)
    parser.add_argument("--model", default="vst")
    parser.add_argument("--size", type=int, default=384, help="Shorter side of contents and styles.")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=None, help="Sampling temperature [default: the model's].")
    parser.add_argument("--max-contents", type=int, default=None)
    parser.add_argument("--max-styles", type=int, default=None)
    parser.add_argument("--weights-dir", default=None)
    args = parser.parse_args()

    stylizer = brushwork.Stylizer(args.model, device="cpu", content_size=args.size, style_size=args.size,
                                  weights_dir=args.weights_dir)
    metrics = Metrics("vgg16-hed", device="cpu", weights_dir=args.weights_dir)
    distances, spreads = [], []
    for content in list_images(args.contents)[:args.max_contents]:
        for style in list_images(args.styles)[:args.max_styles]:
            target = metrics.style_features(to_tensor(resize(load_image(style), args.size)))

            def style_loss(image) -> float:
                return float(losses.style_loss(metrics.features(to_tensor(image)), target))

            mean = style_loss(stylizer(content, style))
            samples = stylizer.samples(content, style, args.samples, seed=args.seed, temperature=args.temperature)
            features = [metrics.features(to_tensor(image)) for image in samples]
            pairwise = [float(losses.perceptual_distance(a, b)) for i, a in enumerate(features)
                        for b in features[i + 1:]]
            ratios = [style_loss(image) / mean for image in samples]
            distances.append(statistics.fmean(pairwise))
            spreads.append(max(ratios))
            print(f"{content.stem} x {style.stem}: distance between samples {distances[-1]:.3f} "
                  f"(min {min(pairwise):.3f}), style loss of the samples / the mean code's "
                  f"{min(ratios):.2f}-{max(ratios):.2f}", flush=True)
    temperature = stylizer.model.temperature if args.temperature is None else args.temperature
    print(f"{len(distances)} pairs, {args.samples} samples each (seed {args.seed}, temperature {temperature:g}), "
          f"{args.size} px: perceptual "
          f"distance between samples median {statistics.median(distances):.3f} (lowest {min(distances):.3f}); "
          f"worst sample's style loss / the mean code's median {statistics.median(spreads):.2f} "
          f"(highest {max(spreads):.2f})")


if __name__ == "__main__":
    main()

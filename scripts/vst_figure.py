"""What variational style transfer is for, in one figure and a few numbers.

Row 1: the content, style A, the mean-code stylisation and N samples; row 2: interpolation from style A to style
B in the latent space; right: the style loss (VST's: Gram over relu1_1..relu4_1 relative to the style's) to A and
to B along the interpolation. Prints the perceptual distances between samples and each sample's style loss
(beside the mean code's and the content's).

    python scripts/vst_figure.py STYLE_A STYLE_B [--content sample:astronaut] [-o docs/vst_samples.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import brushwork  # noqa: E402
from brushwork import losses  # noqa: E402
from brushwork.images import as_image, load_image, resize, to_tensor  # noqa: E402
from brushwork.methods import vst  # noqa: E402
from brushwork.metrics import Metrics  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("style_a")
    parser.add_argument("style_b")
    parser.add_argument("--content", default="sample:astronaut")
    parser.add_argument("--model", default="vst")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights-dir", default=None)
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/vst_samples.png"))
    args = parser.parse_args()

    stylizer = brushwork.Stylizer(args.model, device="cpu", content_size=args.size, style_size=args.size,
                                  weights_dir=args.weights_dir)
    metrics = Metrics("vgg16-hed", device="cpu", weights_dir=args.weights_dir)
    content = to_tensor(resize(as_image(args.content), args.size))
    style_a, style_b = (to_tensor(resize(load_image(p), args.size)) for p in (args.style_a, args.style_b))

    def gram(output, style) -> float:
        """VST's style loss: the Gram loss over relu1_1..relu4_1 relative to the style's (vgg16-hed)."""
        targets = {layer: losses.gram_matrix(value) for layer, value in metrics.features(style).items()
                   if layer in vst.STYLE_LAYERS}
        return float(losses.relative_gram_loss(metrics.features(output), targets, vst.STYLE_LAYERS))

    mean = stylizer(args.content, args.style_a)
    samples = stylizer.samples(args.content, args.style_a, args.samples, seed=args.seed)
    features = [metrics.features(to_tensor(image)) for image in samples]
    distances = [float(losses.perceptual_distance(a, b)) for i, a in enumerate(features) for b in features[i + 1:]]
    print(f"perceptual distance between samples: min {min(distances):.3f}, mean "
          f"{sum(distances) / len(distances):.3f}, max {max(distances):.3f}")
    print(f"style loss (relative Gram) to style A: content {gram(content, style_a):.4g}, mean code {gram(to_tensor(mean), style_a):.4g}, "
          f"samples {', '.join(f'{gram(to_tensor(s), style_a):.4g}' for s in samples)}")

    weights = [0.0, 0.25, 0.5, 0.75, 1.0]
    mixed, to_a, to_b = [], [], []
    for weight in weights:
        mixer = brushwork.Stylizer(stylizer.model, style_weights=[1 - weight, weight], content_size=args.size,
                                   style_size=args.size)
        image = mixer(args.content, [args.style_a, args.style_b])
        mixed.append(image)
        to_a.append(gram(to_tensor(image), style_a))
        to_b.append(gram(to_tensor(image), style_b))
    print("weight of B:", weights)
    print("style loss to A:", [f"{v:.4g}" for v in to_a])
    print("style loss to B:", [f"{v:.4g}" for v in to_b])

    columns = max(3 + args.samples, len(weights) + 2)
    figure = plt.figure(figsize=(2.0 * columns + 3.2, 4.6), dpi=110)
    grid = figure.add_gridspec(2, columns + 2)
    row1 = [("content", as_image(args.content)), ("style A", load_image(args.style_a)), ("mean code", mean)]
    row1 += [(f"sample {k + 1}", image) for k, image in enumerate(samples)]
    row2 = [("style A", load_image(args.style_a))]
    row2 += [(f"B weight {w:g}", image) for w, image in zip(weights, mixed)]
    row2 += [("style B", load_image(args.style_b))]
    for row, items in enumerate((row1, row2)):
        for column, (title, image) in enumerate(items):
            axes = figure.add_subplot(grid[row, column])
            axes.imshow(image)
            axes.set_title(title, fontsize=8)
            axes.axis("off")
    plot = figure.add_subplot(grid[:, columns:])
    plot.plot(weights, to_a, "o-", label="style loss to A")
    plot.plot(weights, to_b, "s-", label="style loss to B")
    plot.set_xlabel("weight of style B")
    plot.set_yscale("log")
    plot.legend(fontsize=8)
    plot.grid(alpha=0.3)
    figure.suptitle(f"Variational style transfer: {args.samples} samples of one pair (seed {args.seed}, temperature "
                    f"{stylizer.model.temperature:g}), and "
                    "interpolation in the latent space", fontsize=10)
    figure.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

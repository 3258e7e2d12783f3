"""Gatys, Ecker & Bethge (CVPR 2016): style transfer by optimising the image itself.

The output starts from the content (or from noise) and is optimised, with L-BFGS or Adam, so that its VGG
features at one layer match the content's and its Gram matrices at several layers match the style's, plus a
total-variation prior. Losses are *relative* (each squared error divided by the target's mean square), so the
same weights work with every loss network whatever the scale of its features.

Large outputs are optimised coarse to fine: the image is solved at a small size first, then upsampled and
refined at each octave up to the full size, each finer scale with fewer steps. Most of the work is done where
it is cheap, so 1024 px and above is practical on a CPU (``brushwork bench --gatys-convergence`` measures the
time to a given loss against plain single-scale optimisation).

Ctrl-C during an optimisation returns the best image so far; :attr:`Gatys.last_run` tells how the last
optimisation went (steps, losses, whether it was interrupted, the loss history).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..errors import BrushworkError
from ..functional import normalize_weights
from ..losses import gram_matrix, total_variation
from ..vgg import VGGFeatures, choose_loss_net, load_loss_network

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")


@dataclass
class GatysSettings:
    """Every setting of the optimisation; the defaults give a clear stylisation that keeps the content."""

    steps: int = 300  # loss evaluations at the coarsest (or only) scale
    fine_steps: int | None = None  # at each finer scale [default: steps // 3, at least 20]
    optimizer: str = "lbfgs"
    lr: float | None = None  # Adam's step in pixel values [default 0.02]; L-BFGS uses a line search
    init: str = "content"
    content_weight: float = 1.0
    style_weight: float = 10.0
    tv_weight: float = 0.3
    content_layer: str = "relu4_2"
    style_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    layer_weights: tuple[float, ...] | None = None  # per style layer [default: equal]
    multiscale: bool = True
    min_side: int = 256  # shorter side of the coarsest scale
    seed: int = 0
    progress: bool = True

    def validate(self) -> "GatysSettings":
        checks = [
            (self.steps >= 1 and (self.fine_steps is None or self.fine_steps >= 1), "steps must be at least 1"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.init in INITS, f"init must be one of {', '.join(INITS)}"),
            (min(self.content_weight, self.style_weight, self.tv_weight) >= 0, "loss weights must not be negative"),
            (self.lr is None or self.lr > 0, "lr must be positive"),
            (bool(self.style_layers), "give at least one style layer"),
            (self.layer_weights is None or len(self.layer_weights) == len(self.style_layers),
             "give one layer weight per style layer"),
            (self.min_side >= 32, "min_side must be at least 32 pixels"),
        ]
        for ok, message in checks:
            if not ok:
                raise BrushworkError(f"gatys: {message}")
        return self


@dataclass
class Run:
    """How an optimisation went. ``history``: (seconds, evaluation, scale index, total loss) per evaluation."""

    evaluations: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    sizes: list[tuple[int, int]] = field(default_factory=list)
    losses: dict[str, float] = field(default_factory=dict)
    history: list[tuple[float, int, int, float]] = field(default_factory=list)
    #: The lowest-loss image of the scale being optimised (what an interruption returns).
    best: torch.Tensor | None = field(default=None, repr=False)


class GatysStyle:
    """An encoded style: the style image, and its Gram matrices per scale factor (computed when first needed)."""

    def __init__(self, image: torch.Tensor):
        self.image = image
        self._grams: dict[tuple, dict[str, torch.Tensor]] = {}

    def grams(self, network: VGGFeatures, layers: Sequence[str], factor: float) -> dict[str, torch.Tensor]:
        key = (id(network), tuple(layers), round(factor, 4))
        if key not in self._grams:
            image = self.image
            if factor != 1.0:
                size = [max(16, round(side * factor)) for side in image.shape[-2:]]
                image = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
            with torch.no_grad():
                features = network(image)
            self._grams[key] = {layer: gram_matrix(features[layer]) for layer in layers}
        return self._grams[key]


class Gatys(nn.Module):
    """Neural style transfer by optimisation, with the interface of the feed-forward methods."""

    def __init__(self, loss_network: VGGFeatures, settings: GatysSettings | None = None, loss_net_name: str = ""):
        super().__init__()
        self.settings = (settings or GatysSettings()).validate()
        needed = {self.settings.content_layer, *self.settings.style_layers}
        missing = needed - set(loss_network.layers)
        if missing:
            raise BrushworkError(f"gatys: the loss network does not give {', '.join(sorted(missing))}")
        self.loss_network = loss_network
        self.loss_net_name = loss_net_name
        self.last_run = Run()

    def encode_style(self, style: torch.Tensor) -> GatysStyle:
        return GatysStyle(style)

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """The reference computation: single-scale optimisation at the content's size."""
        return self.optimize(content, [GatysStyle(style)], [1.0], 1.0, multiscale=False)

    def stylize(self, content: torch.Tensor, styles: Sequence[GatysStyle], style_weights: Sequence[float] | None = None,
                alpha: float = 1.0) -> torch.Tensor:
        """Optimise an image like ``content`` (1x3xHxW) towards the weighted mix of the styles' Gram matrices.
        ``alpha`` scales the style weight (0 returns the content)."""
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
        return self.optimize(content, list(styles), normalize_weights(style_weights, len(styles)), alpha,
                             multiscale=self.settings.multiscale)

    # ------------------------------------------------------------------------------------------ optimisation

    def scales(self, height: int, width: int, multiscale: bool) -> list[tuple[int, int]]:
        """Sizes to optimise at, coarsest first: halving until the shorter side would drop below ``min_side``."""
        sizes = [(height, width)]
        while multiscale and min(sizes[0]) / 2 >= self.settings.min_side:
            h, w = sizes[0]
            sizes.insert(0, (math.ceil(h / 2), math.ceil(w / 2)))
        return sizes

    def steps_at(self, scale: int) -> int:
        s = self.settings
        return s.steps if scale == 0 else (s.fine_steps or max(20, s.steps // 3))

    def optimize(self, content: torch.Tensor, styles: list[GatysStyle], weights: list[float], alpha: float, *,
                 multiscale: bool) -> torch.Tensor:
        if content.shape[0] != 1:
            raise BrushworkError("gatys optimises one image at a time (batch of 1)")
        s = self.settings
        height, width = content.shape[-2:]
        sizes = self.scales(height, width, multiscale)
        run = self.last_run = Run(sizes=sizes)
        start = time.perf_counter()
        with torch.inference_mode(False), torch.enable_grad():
            content = content.clone().float()
            generator = torch.Generator(device="cpu").manual_seed(s.seed)
            image = None
            try:
                for index, size in enumerate(sizes):
                    target = _resized(content, size)
                    if image is None:
                        image = target.clone() if s.init == "content" else torch.rand(
                            target.shape, generator=generator).to(target.device)
                    else:
                        image = _resized(image, size)
                    image = self._optimize_at(image, target, styles, weights, alpha, index, len(sizes), run, start)
            except KeyboardInterrupt:
                run.interrupted = True
                image = run.best if run.best is not None else content
            run.best = None
        run.seconds = time.perf_counter() - start
        return _resized(image, (height, width)).detach().clamp(0, 1)

    def _optimize_at(self, image, content, styles, weights, alpha, index, count, run: Run, start: float):
        s = self.settings
        network = self.loss_network
        factor = content.shape[-2] / run.sizes[-1][0]  # style images scale with the content
        layer_weights = normalize_weights(s.layer_weights, len(s.style_layers))
        targets = {layer: sum(w * style.grams(network, s.style_layers, factor)[layer] for style, w in zip(styles, weights))
                   for layer in s.style_layers}
        target_scale = {layer: targets[layer].pow(2).mean().clamp_min(1e-12) for layer in s.style_layers}
        with torch.no_grad():
            content_target = network(content)[s.content_layer]
        content_scale = content_target.pow(2).mean().clamp_min(1e-12)
        style_weight = s.style_weight * alpha

        image = image.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)
        steps = self.steps_at(index)
        best = {"loss": math.inf}
        done = {"evaluations": 0}
        run.best = None
        label = f"gatys {content.shape[-1]}x{content.shape[-2]}" + (f" ({index + 1}/{count})" if count > 1 else "")
        bar = tqdm(total=steps, desc=label, unit="step", disable=not s.progress, file=sys.stderr, leave=count == 1)

        def closure():
            if done["evaluations"] >= steps:  # L-BFGS may ask once more than its budget
                raise _Done
            optimizer.zero_grad(set_to_none=True)
            features = network(image)
            terms = {"content": F.mse_loss(features[s.content_layer], content_target) / content_scale}
            terms["style"] = sum(w * F.mse_loss(gram_matrix(features[layer]), targets[layer]) / target_scale[layer]
                                 for layer, w in zip(s.style_layers, layer_weights))
            terms["tv"] = total_variation(image)
            total = s.content_weight * terms["content"] + style_weight * terms["style"] + s.tv_weight * terms["tv"]
            total.backward()
            value = float(total.detach())
            run.evaluations += 1
            done["evaluations"] += 1
            run.history.append((time.perf_counter() - start, run.evaluations, index, value))
            if value < best["loss"]:
                best["loss"] = value
                run.losses = {name: float(term.detach()) for name, term in terms.items()} | {"total": value}
                run.best = image.detach().clone()
            bar.update()
            bar.set_postfix(content=f"{float(terms['content'].detach()):.3g}", style=f"{float(terms['style'].detach()):.3g}",
                            total=f"{value:.3g}", refresh=False)
            return total

        try:
            if s.optimizer == "lbfgs":
                optimizer = torch.optim.LBFGS([image], lr=1.0, max_iter=steps, max_eval=steps, history_size=50,
                                              tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")
                try:
                    optimizer.step(closure)
                except _Done:
                    pass
            else:
                optimizer = torch.optim.Adam([image], lr=s.lr or 0.02)
                while done["evaluations"] < steps:
                    optimizer.step(closure)
                    with torch.no_grad():
                        image.clamp_(0, 1)
        finally:
            bar.close()
        return (run.best if run.best is not None else image).detach()


class _Done(Exception):
    """The step budget of a scale is spent."""


def _resized(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=size, mode="bicubic", align_corners=False,
                         antialias=size[0] < image.shape[-2]).clamp(0, 1)


def build(loss_net: str = "auto", weights_dir=None, **settings) -> Gatys:
    """A Gatys model over a registry loss network (``auto``: the best one at hand, vgg16-hed at worst)."""
    known = {f.name for f in dataclasses.fields(GatysSettings)}
    unknown = set(settings) - known
    if unknown:
        raise BrushworkError(f"gatys: unknown setting(s) {', '.join(sorted(unknown))}")
    values = GatysSettings(**settings).validate()
    name = choose_loss_net(loss_net, weights_dir)
    network = load_loss_network(name, [values.content_layer, *values.style_layers], weights_dir=weights_dir)
    return Gatys(network, values, loss_net_name=name)

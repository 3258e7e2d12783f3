"""Training style-transfer networks (MicroAST, AdaIN) with PyTorch Lightning.

The settings are a :class:`~brushwork.train_config.TrainConfig`. :class:`StyleTransferTraining` is the
``LightningModule`` every method shares (loss terms, logging, optimiser); a subclass per method builds the network
and computes its losses. :func:`train` builds the ``Trainer`` (devices,
precision, checkpoints and resume, gradient clipping, CSV/TensorBoard/W&B loggers, a grid of sample stylisations)
and writes the trained weights where ``load_model`` can read them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torchmetrics.aggregation import RunningMean
from tqdm import tqdm

from . import losses
from . import weights as registry
import torch.nn.functional as F

from .data import ContentCrops, ContentStylePairs, find_images, pair_loader, random_crop
from .errors import BrushworkError, ImageError
from .images import load_image, resize, save_image, to_image, to_tensor
from .functional import adaptive_instance_norm, mean_std
from .methods import adain, johnson, microast, vst
from .methods.adain import AdaIN, AdaINDecoder
from .methods.microast import MicroAST, pad_to
from .train_config import METHOD_LOSS_NETS, TrainConfig
from .vgg import LOSS_NETWORKS, VGGFeatures, choose_loss_net, load_loss_network

log = logging.getLogger(__name__)


class StyleTransferTraining(pl.LightningModule):
    """What every trained method shares: weighted loss terms, their logging, Adam with the paper's decay.

    A method's subclass builds ``self.model`` (the trained part only: the frozen loss network is never part of
    the trained state, so it stays out of the checkpoints), computes its loss terms, starts from given weights
    and exports what ``load_model`` reads.
    """

    def __init__(self, config: dict[str, Any], loss_network: VGGFeatures | None = None):
        super().__init__()
        self.save_hyperparameters(config)
        self.config = TrainConfig(**{k: v for k, v in config.items() if k in TrainConfig.fields()})
        self.__dict__["loss_network"] = loss_network
        self.model = self.build_model()
        self.running = torch.nn.ModuleDict({name: RunningMean(window=self.config.log_every)
                                            for name in ("total", *self.loss_weights(), *self.warmup_weights())})

    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def compute_losses(self, content: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The stylised batch and every loss term (unweighted)."""
        raise NotImplementedError

    def load_initial(self, source: str, weights_dir) -> None:
        """Start from a registry model, a Lightning checkpoint or a folder of exported weights."""
        raise NotImplementedError

    def prepare(self, config: TrainConfig) -> None:
        """Set up what a fresh run (not a resumed or fine-tuned one) derives from the data before its first step."""

    def export(self, folder: Path, steps: int) -> Path:
        """Write the trained weights where ``load_model`` reads them, with a ``training.json``."""
        raise NotImplementedError

    def loss_weights(self) -> dict[str, float]:
        """The loss terms in use, with their weights."""
        c = self.config
        weights = {"content": c.content_weight, "style": c.style_weight, "ssc": c.ssc_weight,
                   "tv": c.tv_weight, "perceptual": c.perceptual_weight, "hinge": c.hinge_weight,
                   "kl": c.kl_weight, "diversity": c.diversity_weight, "structure": c.structure_weight,
                   "frame": c.frame_weight, "anchor": c.anchor_weight, "teacher": c.teacher_weight}
        return {name: weight for name, weight in weights.items() if weight > 0}

    def warmup_weights(self) -> dict[str, float]:
        """The loss terms of a method's warm-up phase (``warmup_steps``), with their weights."""
        return {}

    def in_warmup(self) -> bool:
        return self.global_step < self.config.warmup_steps

    def active_weights(self) -> dict[str, float]:
        """The loss terms of the current step's phase."""
        return self.warmup_weights() if self.in_warmup() else self.loss_weights()

    @staticmethod
    def loss_layers(config: TrainConfig) -> tuple[str, ...]:
        layers = [losses.CONTENT_LAYER, *losses.STYLE_LAYERS]
        if config.perceptual_weight > 0:
            layers += losses.PERCEPTUAL_LAYERS
        return tuple(dict.fromkeys(layers))

    def _require_loss_network(self) -> VGGFeatures:
        if self.loss_network is None:
            raise RuntimeError(f"{type(self).__name__} needs a loss network to compute losses")
        return self.loss_network

    def common_terms(self, output: torch.Tensor, output_features, content_features, style_features,
                     content_target=None, content: torch.Tensor | None = None,
                     style: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The terms every method shares; ``content_target`` replaces the content's features in the content
        loss (AdaIN compares with the AdaIN output, not with the content); ``content`` and ``style``: the photos
        and paintings, for the structure and teacher terms."""
        weights, terms = self.loss_weights(), {}
        if "content" in weights:
            terms["content"] = losses.CONTENT_LOSSES[self.config.content_loss](
                output_features, content_target if content_target is not None else content_features)
        if "style" in weights:
            terms["style"] = losses.STYLE_LOSSES[self.config.style_loss](output_features, style_features)
        terms.update(self.photo_terms(output, output_features, content_features, content))
        if "teacher" in weights:
            terms["teacher"] = self.distance_to_painting(output_features, self.teacher(), content, style)
        return terms

    def photo_terms(self, output: torch.Tensor, output_features, content_features,
                    content: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The optional terms every method computes alike: total variation, and the perceptual distance and
        structure (SSIM) against the photo."""
        weights, terms = self.loss_weights(), {}
        if "tv" in weights:
            terms["tv"] = losses.total_variation(output)
        if "perceptual" in weights:
            terms["perceptual"] = losses.perceptual_distance(output_features, content_features)
        if "structure" in weights:
            terms["structure"] = losses.structure_loss(output, content, self.config.structure_window)
        if "frame" in weights:
            terms["frame"] = losses.frame_loss(output, content)
        return terms

    def distance_to_painting(self, output_features, painter: torch.nn.Module, content: torch.Tensor,
                             style: torch.Tensor, layers: Sequence[str] = losses.STYLE_LAYERS) -> torch.Tensor:
        """How far the output is from what a frozen ``painter`` paints of the same pairs: relative feature
        distance at ``layers`` (the anchor and teacher terms)."""
        network = self._require_loss_network()
        with torch.no_grad():
            target_features = network(painter(content, style))
        return sum(losses.relative_content_loss(output_features, target_features, layer) for layer in layers)

    def teacher(self) -> torch.nn.Module:
        """The frozen ``teacher`` model (any arbitrary-style model ``load_model`` reads); kept out of the
        checkpoints and loaded again on a resumed run."""
        teacher = self.__dict__.get("_teacher")
        if teacher is None:
            from .api import load_model

            teacher = load_model(self.config.teacher, device=self.device, weights_dir=self.config.weights_dir,
                                 fast=False)
            if not callable(getattr(teacher, "encode_style", None)):
                raise BrushworkError(f"{self.config.teacher}: a teacher must paint any style (an arbitrary-style "
                                     "model such as microast)")
            self.__dict__["_teacher"] = teacher
        return teacher

    @classmethod
    def dataset(cls, config: TrainConfig, seed: int, length: int):
        """The endless stream of training examples (content, style) crop pairs."""
        return ContentStylePairs(config.content_dir, config.style_dir, resize_to=config.resize, crop=config.crop,
                                 seed=seed, length=length, cache_bytes=config.cache_mb << 20,
                                 style_resize_to=config.style_resize)

    def training_step(self, batch, batch_index):
        batch = batch if isinstance(batch, (list, tuple)) else (batch,)
        _, terms = self.compute_losses(*(images.contiguous(memory_format=torch.channels_last) for images in batch))
        weights = self.active_weights()
        total = sum(weights[name] * term.float() for name, term in terms.items())
        if not torch.isfinite(total):
            raise FloatingPointError(f"the training loss became {total.item()} at step {self.global_step}: "
                                     f"{ {name: float(term) for name, term in terms.items()} }")
        for name, value in (("total", total), *terms.items()):
            self.running[name].update(value.detach().float())
            self.log(f"loss/{name}", self.running[name].compute(), prog_bar=name == "total")
        self.log("lr", self.optimizers().param_groups[0]["lr"])
        for name, value in self.__dict__.pop("_diagnostics", {}).items():  # what a method reports besides losses
            self.log(name, value)
        return total

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.lr)
        decay = self.config.lr_decay
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1.0 + decay * step))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_fit_start(self):
        # Channels-last: oneDNN's and cuDNN's fast convolution layout (1.2-1.4x a training step on the CPU).
        self.loss_network.to(self.device, memory_format=torch.channels_last)
        self.model.to(memory_format=torch.channels_last)

    def _training_record(self, steps: int, **extra) -> str:
        return json.dumps({"method": self.config.method, "steps": steps, **extra,
                           "config": dataclasses.asdict(self.config)}, indent=1)

    def _frozen(self, name: str, build) -> torch.nn.Module:
        """The network ``build()`` makes, frozen on this module's device, made once and kept out of the state dict
        (so out of the checkpoints: a resumed run builds it again)."""
        network = self.__dict__.get(name)
        if network is None:
            network = build().to(self.device, memory_format=torch.channels_last).eval().requires_grad_(False)
            self.__dict__[name] = network
        return network

    def _initial_state(self, source: str, weights_dir, find_weights, key: str) -> dict[str, torch.Tensor]:
        """The trained part's state dict from a checkpoint, a folder (``find_weights`` names its file) or a
        registry model (its file ``key``)."""
        path = Path(source)
        if path.is_file() and path.suffix == ".ckpt":
            return self._checkpoint_state(path)
        weights = find_weights(path) if path.is_dir() else registry.resolve(source, weights_dir)[key]
        return registry.read_state_dict(weights)

    def _load_state(self, state: dict[str, torch.Tensor], source: str, what: str) -> None:
        try:
            self.model.load_state_dict({k: v.float() for k, v in state.items()})
        except RuntimeError as error:
            raise BrushworkError(f"{source}: does not fit {what} ({str(error).splitlines()[0]})") from None

    def _export_half(self, folder: Path, filename: str, steps: int, **record) -> Path:
        """The trained part as one float16 state dict (half the size, the same images) and a training.json."""
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu().half() for k, v in self.model.state_dict().items()}, folder / filename)
        (folder / "training.json").write_text(self._training_record(steps, **record))
        return folder

    @staticmethod
    def _checkpoint_state(path: Path) -> dict[str, torch.Tensor]:
        return trained_state(torch.load(path, map_location="cpu", weights_only=False))


class MicroASTTraining(StyleTransferTraining):
    """One MicroAST training step: content, style and contrastive losses (plus the optional ones)."""

    def build_model(self) -> MicroAST:
        return MicroAST(self.config.decoder)

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.model(content, style)

    def compute_losses(self, content: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        network = self._require_loss_network()
        signals = self.model.encode_style(style)
        output = self.model.decode(content, signals)
        output_features = network(output)
        with torch.no_grad():
            content_features = network(content)
            style_features = network(style)
        terms = self.common_terms(output, output_features, content_features, style_features, content=content,
                                  style=style)
        weights = self.loss_weights()
        if "ssc" in weights:
            output_signals = self.model.encode_style(output)
            terms["ssc"] = losses.style_signal_contrastive_loss(
                output_signals.components(), signals.components(), self.config.ssc_negatives)
        if "anchor" in weights:
            terms["anchor"] = self.distance_to_painting(output_features, self.anchor(), content, style)
        return output, terms

    def anchor(self) -> MicroAST:
        """The network the run started from (``init_from``), frozen: ``anchor_weight`` holds the outputs near
        its own. Loaded again from its source on a resumed run."""
        def build() -> MicroAST:
            state, skipped = self._fitting_state(self.config.init_from, self.config.weights_dir)
            if skipped:
                raise BrushworkError(f"{self.config.init_from}: has another decoder head than {self.config.decoder!r}, "
                                     "so it cannot be the anchor")
            anchor = MicroAST(self.config.decoder)
            anchor.load_state_dict(state)
            return anchor

        return self._frozen("_anchor", build)

    def _fitting_state(self, source: str, weights_dir) -> tuple[dict[str, torch.Tensor], list[str]]:
        """The weights of ``source`` that fit this network, and the keys of the network they leave out."""
        path = Path(source)
        if path.is_file() and path.suffix == ".ckpt":
            state = self._checkpoint_state(path)
        else:
            paths = microast.find_parts(path) if path.is_dir() else registry.resolve(source, weights_dir)
            state = {f"{part}.{key}": value for part in microast.PARTS
                     for key, value in registry.read_state_dict(paths[part]).items()}
        own = self.model.state_dict()
        fitting = {k: v.float() for k, v in state.items() if k in own and own[k].shape == v.shape}
        skipped = sorted(set(own) - set(fitting))
        if any(not key.startswith("decoder.dec3.") for key in skipped):
            raise BrushworkError(f"{source}: does not fit MicroAST (no weights for {skipped[0]})")
        return fitting, skipped

    def load_initial(self, source: str, weights_dir) -> None:
        """A decoder head of another kind than the one being trained is left at its fresh initialisation (with a
        warning)."""
        fitting, skipped = self._fitting_state(source, weights_dir)
        if skipped:
            log.warning("%s has another decoder head than %r: the head starts from scratch", source,
                        self.config.decoder)
        self.model.load_state_dict(fitting, strict=False)

    def export(self, folder: Path, steps: int) -> Path:
        """The four state dicts as ``<part>.pth``, and a ``training.json``."""
        folder.mkdir(parents=True, exist_ok=True)
        for part in microast.PARTS:
            torch.save({k: v.detach().cpu().float() for k, v in getattr(self.model, part).state_dict().items()},
                       folder / f"{part}.pth")
        (folder / "training.json").write_text(self._training_record(steps))
        return folder


class AdaINTraining(StyleTransferTraining):
    """One AdaIN training step (the paper's): the decoder learns to invert the encoder after AdaIN; content loss
    against the AdaIN output t at relu4_1, style loss against the style image. The loss network is the
    encoder, so the trained decoder belongs to that network (recorded in ``training.json``)."""

    def build_model(self) -> AdaINDecoder:
        if self.loss_network is not None:
            return AdaINDecoder(self.loss_network.architecture)
        encoder = LOSS_NETWORKS.get(self.hparams.get("encoder") or self.config.loss_net)
        return AdaINDecoder(encoder.architecture if encoder else "vgg19")

    def adain(self) -> AdaIN:
        return AdaIN(self._require_loss_network(), self.model)

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        model = self.adain()
        return model.stylize(content, [model.encode_style(style)])

    def warmup_weights(self) -> dict[str, float]:
        """Inversion: the decoder learns to give back the content from its own relu4_1 features (pixels, and
        features at relu1_1..relu4_1 relative to their mean squares), which converges far faster than the
        stylisation loss and starts it from a decoder that already draws the content."""
        return {"pixel": 10.0, "features": 1.0} if self.config.warmup_steps else {}

    def compute_losses(self, content: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        network = self._require_loss_network()
        if self.in_warmup():
            with torch.no_grad():
                content_features = network(content)
            output = self.model(content_features[adain.ENCODER_LAYER])
            output_features = network(output)
            return output, {"pixel": F.mse_loss(output.float(), content.float()),
                            "features": sum(losses.relative_content_loss(output_features, content_features, layer)
                                            for layer in losses.STYLE_LAYERS)}
        with torch.no_grad():
            content_features = network(content)
            style_features = network(style)
            target = adaptive_instance_norm(content_features[adain.ENCODER_LAYER],
                                            *mean_std(style_features[adain.ENCODER_LAYER]))
        output = self.model(target)
        output_features = network(output)
        terms = self.common_terms(output, output_features, content_features, style_features,
                                  content_target={losses.CONTENT_LAYER: target}, content=content, style=style)
        return output, terms

    def load_initial(self, source: str, weights_dir) -> None:
        self._load_state(self._initial_state(source, weights_dir, adain.find_decoder, "decoder"), source,
                         "this AdaIN decoder")

    def export(self, folder: Path, steps: int) -> Path:
        """``decoder.pth`` and a ``training.json`` naming the encoder it belongs to."""
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu().float() for k, v in self.model.state_dict().items()}, folder / "decoder.pth")
        (folder / "training.json").write_text(self._training_record(steps, encoder=self.hparams.get("encoder", self.config.loss_net)))
        return folder


class JohnsonTraining(StyleTransferTraining):
    """Johnson et al.: one transformation network learns one style image over a set of content images. Content
    loss at relu2_2, Gram style loss at relu1_2, relu2_2, relu3_3 and relu4_3 of VGG16, total variation.

    Both feature losses are relative to their targets' mean squares (:func:`losses.relative_gram_loss`), so that
    every style layer counts and the weights do not depend on the VGG's input scale."""

    def build_model(self) -> johnson.TransformNet:
        return johnson.TransformNet()

    @classmethod
    def dataset(cls, config: TrainConfig, seed: int, length: int):
        return ContentCrops(config.content_dir, resize_to=config.resize, crop=config.crop, seed=seed, length=length,
                            cache_bytes=config.cache_mb << 20)

    @staticmethod
    def loss_layers(config: TrainConfig) -> tuple[str, ...]:
        return tuple(dict.fromkeys((johnson.CONTENT_LAYER, *johnson.STYLE_LAYERS)))

    def forward(self, content: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        height, width = content.shape[-2:]
        return self.model(pad_to(content, johnson.SIZE_MULTIPLE))[..., :height, :width]

    def style_targets(self) -> dict[str, torch.Tensor]:
        """Gram matrices of the style image (1xCxC per layer), computed once."""
        targets = self.__dict__.get("_style_targets")
        if targets is None or next(iter(targets.values())).device != self.device:
            style = to_tensor(resize(load_image(self.config.style_image), self.config.style_size)).to(self.device)
            with torch.no_grad():
                features = self._require_loss_network()(style)
            targets = {layer: losses.gram_matrix(features[layer]) for layer in johnson.STYLE_LAYERS}
            self.__dict__["_style_targets"] = targets
        return targets

    def compute_losses(self, content: torch.Tensor, style: torch.Tensor | None = None):
        network = self._require_loss_network()
        output = self(content)
        output_features = network(output)
        with torch.no_grad():
            content_features = network(content)
        weights, terms = self.loss_weights(), {}
        if "content" in weights:
            terms["content"] = losses.relative_content_loss(output_features, content_features, johnson.CONTENT_LAYER)
        if "style" in weights:
            terms["style"] = losses.relative_gram_loss(output_features, self.style_targets(), johnson.STYLE_LAYERS)
        if "tv" in weights:
            terms["tv"] = losses.total_variation(output)
        if "perceptual" in weights:
            terms["perceptual"] = losses.perceptual_distance(output_features, content_features,
                                                             layers=johnson.STYLE_LAYERS)
        if "frame" in weights:
            terms["frame"] = losses.frame_loss(output, content)
        if "anchor" in weights:
            anchor, (height, width) = self.anchor(), content.shape[-2:]
            painter = lambda photo, _: anchor(pad_to(photo, johnson.SIZE_MULTIPLE))[..., :height, :width]  # noqa: E731
            terms["anchor"] = self.distance_to_painting(output_features, painter, content, None, johnson.STYLE_LAYERS)
        return output, terms

    def anchor(self) -> johnson.TransformNet:
        """The network the run started from (``init_from``), frozen: ``anchor_weight`` keeps the outputs near its
        own (to mend one flaw, such as a frame, without retraining the style). Loaded again on a resumed run."""
        def build() -> johnson.TransformNet:
            anchor = johnson.TransformNet()
            state = self._initial_state(self.config.init_from, self.config.weights_dir, johnson.find_weights, "transform")
            anchor.load_state_dict({k: v.float() for k, v in state.items()})
            return anchor

        return self._frozen("_anchor", build)

    def load_initial(self, source: str, weights_dir) -> None:
        """Start from another Johnson network (a checkpoint, a folder or a registry model): a new style learns
        faster from a network that already reproduces content."""
        state = self._initial_state(source, weights_dir, johnson.find_weights, "transform")
        self._load_state(state, source, "the Johnson network")

    def export(self, folder: Path, steps: int) -> Path:
        """``transform.pth`` (float16) and a ``training.json`` naming the style image."""
        return self._export_half(folder, johnson.WEIGHTS_FILE, steps, style=Path(self.config.style_image).name)


class VSTTraining(StyleTransferTraining):
    """Variational style transfer: the style encoder gives a Gaussian, a code is sampled from it with the
    reparameterisation trick and decoded with the content. Samples come in pairs that share a style image and
    a code, for the disentanglement hinge loss. The loss network is the (frozen) content encoder. Content and
    Gram losses are relative to their targets (see :class:`JohnsonTraining`), and so is the hinge's distance."""

    def build_model(self) -> vst.VSTNetwork:
        architecture = self.loss_network.architecture if self.loss_network is not None else \
            LOSS_NETWORKS[self.hparams.get("encoder") or self.config.loss_net].architecture
        return vst.VSTNetwork(architecture, self.config.latent_dim)

    @staticmethod
    def loss_layers(config: TrainConfig) -> tuple[str, ...]:
        layers = [vst.ENCODER_LAYER, *vst.STYLE_LAYERS]
        if config.perceptual_weight > 0 or config.diversity_weight > 0:
            layers += losses.PERCEPTUAL_LAYERS
        return tuple(dict.fromkeys(layers))

    def full_model(self) -> vst.VariationalStyleTransfer:
        return vst.VariationalStyleTransfer(self._require_loss_network(), self.model)

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        model = self.full_model()
        return model.stylize(content, [model.encode_style(style)])

    def compute_losses(self, content: torch.Tensor, style: torch.Tensor):
        network = self._require_loss_network()
        style = style[0::2].repeat_interleave(2, dim=0)[:len(content)]  # pairs (2k, 2k+1) share a style
        with torch.no_grad():
            content_features = network(content)
            style_features = network(style)
        mu, logvar = self.model.style_encoder(style_features)
        self.__dict__["_diagnostics"] = {  # the codes' spread across styles, and the samples' spread
            "code/mu_spread": mu.detach()[0::2].float().std(dim=0).mean() if len(mu) > 2 else mu.new_zeros(()),
            "code/sigma": torch.exp(0.5 * logvar.detach()).float().mean()}
        eps = torch.randn(len(content) // 2, mu.shape[1], device=mu.device).repeat_interleave(2, dim=0)
        std = torch.exp(0.5 * logvar)
        z = mu + std * eps  # the reparameterisation trick; each pair shares z
        output = self.model.paint(content_features[vst.ENCODER_LAYER], z)
        output_features = network(output)
        weights, terms = self.loss_weights(), {}
        style_grams = {layer: losses.gram_matrix(style_features[layer]) for layer in vst.STYLE_LAYERS}
        if "content" in weights:
            terms["content"] = losses.relative_content_loss(output_features, content_features, vst.ENCODER_LAYER)
        if "style" in weights:  # the paper's relative Gram loss, or AdaIN's channel mean/std loss
            terms["style"] = (losses.relative_gram_loss(output_features, style_grams, vst.STYLE_LAYERS)
                              if self.config.style_loss == "gram" else
                              losses.style_loss(output_features, style_features, vst.STYLE_LAYERS))
        if "hinge" in weights:
            terms["hinge"] = losses.disentanglement_hinge(output_features, style_grams, vst.STYLE_LAYERS,
                                                          self.config.hinge_margin)
        if "kl" in weights:
            terms["kl"] = losses.gaussian_kl(mu, logvar)
        if "diversity" in weights:  # one more sample of each pair's first item, from a code drawn apart
            first = slice(0, None, 2)
            other_z = mu[first] + std[first] * torch.randn_like(eps[first])
            other = network(self.model.paint(content_features[vst.ENCODER_LAYER][first], other_z))
            terms["diversity"] = losses.diversity_hinge({layer: output_features[layer][first] for layer in other},
                                                        other, self.config.diversity_margin)
        terms.update(self.photo_terms(output, output_features, content_features, content))
        return output, terms

    #: Style images whose statistics frame the latent space (more than the code's size).
    SPACE_STYLES = 256

    def prepare(self, config: TrainConfig) -> None:
        """Frame the latent space by the principal axes of the statistics of up to 256 training styles (random
        crops, as training sees them)."""
        network = self._require_loss_network()
        rng = random.Random(config.seed)
        paths = find_images(config.style_dir)
        rng.shuffle(paths)
        statistics = []
        for path in tqdm(paths, desc="style space", unit="style", leave=False, disable=not sys.stderr.isatty()):
            try:
                crop = random_crop(load_image(path), config.style_resize or config.resize, config.crop, rng)
            except ImageError:
                continue
            with torch.no_grad():
                statistics.append(vst.style_statistics(network(crop[None])))
            if len(statistics) == self.SPACE_STYLES:
                break
        if len(statistics) <= config.latent_dim:
            raise BrushworkError(f"{config.style_dir}: variational style transfer needs more than {config.latent_dim} "
                                 f"readable style images (latent_dim) to frame its latent space, not {len(statistics)}")
        self.model.space.fit(torch.cat(statistics))
        log.info("style space: %d styles, %.0f%% of their variance on %d axes", len(statistics),
                 100 * float(self.model.space.scale.pow(2).sum() / torch.cat(statistics).var(dim=0).sum()),
                 config.latent_dim)

    def load_decoder(self, source: str, weights_dir) -> None:
        """Start the decoder from an AdaIN decoder over the same encoder (a registry model or a folder)."""
        path = Path(source)
        decoder = adain.find_decoder(path) if path.is_dir() else registry.resolve(source, weights_dir)["decoder"]
        try:
            self.model.decoder.layers.load_state_dict({k: v.float() for k, v in
                                                       registry.read_state_dict(decoder).items()})
        except RuntimeError as error:
            raise BrushworkError(f"{source}: does not fit this decoder ({str(error).splitlines()[0]})") from None

    def load_initial(self, source: str, weights_dir) -> None:
        self._load_state(self._initial_state(source, weights_dir, vst.find_weights, "vst"), source,
                         "this VST network")

    def export(self, folder: Path, steps: int) -> Path:
        """``vst.pth`` (float16) and a ``training.json`` naming the encoder and the code size."""
        return self._export_half(folder, vst.WEIGHTS_FILE, steps,
                                 encoder=self.hparams.get("encoder", self.config.loss_net),
                                 latent_dim=self.config.latent_dim)
        return folder


#: The LightningModule of each trainable method.
TRAINERS: dict[str, type[StyleTransferTraining]] = {"microast": MicroASTTraining, "adain": AdaINTraining,
                                                    "johnson": JohnsonTraining, "vst": VSTTraining}


class SampleGrid(Callback):
    """Every N steps, stylise a few fixed (content, style) pairs and save them as a grid (and to the loggers)."""

    def __init__(self, pairs: list[tuple[torch.Tensor, torch.Tensor]], folder: Path, every: int):
        self.contents = torch.stack([content for content, _ in pairs])
        self.styles = torch.stack([style for _, style in pairs])
        self.folder, self.every = folder, every

    def on_train_start(self, trainer, module):
        self.save(trainer, module)  # where the run starts from

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_index):
        if self.every and trainer.global_step % self.every == 0:
            self.save(trainer, module)

    def on_train_end(self, trainer, module):
        self.save(trainer, module)

    @torch.no_grad()
    def save(self, trainer, module) -> Path:
        was_training = module.training
        module.eval()
        outputs = module(self.contents.to(module.device), self.styles.to(module.device)).float().clamp(0, 1).cpu()
        module.train(was_training)
        rows = [torch.cat([c, s, o], dim=2) for c, s, o in zip(self.contents, self.styles, outputs)]
        grid = torch.cat(rows, dim=1)  # one row per pair: content | style | output
        path = save_image(to_image(grid), self.folder / f"step_{trainer.global_step:07d}.png")
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("samples", grid, trainer.global_step)
            elif hasattr(logger, "log_image"):
                logger.log_image("samples", [str(path)], step=trainer.global_step)
        return path


def choose_precision(precision: str, accelerator: str) -> str:
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda"):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    # CPUs with bfloat16 arithmetic (AVX-512 BF16, AMX): 1.8-2x faster steps, weights and Adam in float32.
    if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def train(config: TrainConfig, resume: str | None = None) -> Path:
    """Run a training; returns the folder of exported weights. ``resume``: a checkpoint path, or "last"."""
    config.validate()
    out = Path(config.output_dir)
    checkpoints = out / "checkpoints"
    resume_path = None
    if resume is not None:
        resume_path = checkpoints / "last.ckpt" if resume == "last" else Path(resume)
        if not resume_path.is_file():
            raise BrushworkError(f"{resume_path}: no checkpoint to resume from")
    pl.seed_everything(config.seed, workers=True, verbose=False)
    loss_net = choose_loss_net(config.loss_net, config.weights_dir,
                               **({"candidates": METHOD_LOSS_NETS[config.method]}
                                  if config.method in METHOD_LOSS_NETS else {}))
    trainer_class = TRAINERS[config.method]
    network = load_loss_network(loss_net, trainer_class.loss_layers(config), weights_dir=config.weights_dir)
    module = trainer_class({**dataclasses.asdict(config), "encoder": loss_net}, network)
    if config.init_from and resume_path is None:
        module.load_initial(config.init_from, config.weights_dir)
    elif resume_path is None:
        module.prepare(config)
        if config.init_decoder:
            module.load_decoder(config.init_decoder, config.weights_dir)

    start_step = torch.load(resume_path, map_location="cpu", weights_only=False)["global_step"] if resume_path else 0
    # A resumed run draws new crops instead of repeating the ones it has seen.
    dataset = trainer_class.dataset(config, seed=config.seed * 1_000_003 + start_step,
                                    length=config.max_steps * config.batch_size)
    loader = pair_loader(dataset, config.batch_size, config.workers)

    # Every start (a resume included) logs into a new version folder: nothing logged before is overwritten.
    loggers = [CSVLogger(out, name="csv"), TensorBoardLogger(out, name="tensorboard")]
    if config.wandb:
        from pytorch_lightning.loggers import WandbLogger

        try:
            import wandb  # noqa: F401
        except ImportError:
            raise BrushworkError("--wandb needs the wandb package: pip install 'brushwork[wandb]'") from None
        loggers.append(WandbLogger(project=config.wandb_project, save_dir=str(out), offline=config.wandb_offline,
                                   config=dataclasses.asdict(config)))
    trainer = pl.Trainer(
        accelerator=config.accelerator, devices=1, precision=choose_precision(config.precision, config.accelerator),
        max_steps=config.max_steps, gradient_clip_val=config.grad_clip, logger=loggers,
        log_every_n_steps=config.log_every, default_root_dir=out, enable_model_summary=False,
        callbacks=[
            # In a log file rather than a terminal, redraw the bar only as often as the losses are logged.
            TQDMProgressBar(refresh_rate=1 if sys.stderr.isatty() else config.log_every),
            ModelCheckpoint(dirpath=checkpoints, filename="step_{step:07d}", every_n_train_steps=config.checkpoint_every,
                            save_top_k=-1, save_last=True, auto_insert_metric_name=False),
            SampleGrid(sample_pairs(config), out / "samples", config.sample_every),
        ],
    )
    log.info("training %s with loss network %s on %s", config.method, loss_net, trainer.strategy.root_device)
    with warnings.catch_warnings():
        # Handled: each data-loader worker draws its own stream, and a resumed run reseeds it with the step.
        warnings.filterwarnings("ignore", message=".*IterableDataset. has .__len__. defined")
        warnings.filterwarnings("ignore", message=".*your dataloader is not resumable")
        warnings.filterwarnings("ignore", message=".*LeafSpec.* is deprecated")
        trainer.fit(module, train_dataloaders=loader, ckpt_path=resume_path)
    return module.export(out / "weights", trainer.global_step)


def trained_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The trained part's state dict (``model.*``, prefix removed) of a loaded Lightning checkpoint."""
    return {k[len("model."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}


def average_checkpoints(paths: list[Path], folder: Path) -> Path:
    """Export the uniform average of the trained weights of several checkpoints of one run (checkpoint averaging,
    as in stochastic weight averaging, Izmailov et al. 2018) as a weights folder; its ``training.json`` records
    the settings and step of the last checkpoint and the steps averaged."""
    if not paths:
        raise BrushworkError("no checkpoints to average")
    states, steps, module = [], [], None
    for path in paths:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
            hparams, model_state = checkpoint["hyper_parameters"], trained_state(checkpoint)
        except Exception as error:  # any file torch cannot read as a Lightning checkpoint (pickle, zip, keys)
            reason = str(error).splitlines()[0] if str(error) else ""
            raise BrushworkError(f"{path}: not a brushwork training checkpoint ({type(error).__name__}: {reason})") \
                from None
        if module is None:
            trainer_class = TRAINERS.get(hparams.get("method"))
            if trainer_class is None:
                raise BrushworkError(f"{path}: not a brushwork training checkpoint (no known method)")
            module = trainer_class(hparams)
        elif hparams.get("method") != module.config.method:
            raise BrushworkError(f"{path}: a {hparams.get('method')} checkpoint, the first is {module.config.method}")
        if states and model_state.keys() != states[0].keys():
            raise BrushworkError(f"{path}: another network than {paths[0]}'s")
        states.append(model_state)
        steps.append(int(checkpoint["global_step"]))
    average = {k: (torch.stack([s[k].double() for s in states]).mean(0).to(v.dtype) if v.is_floating_point()
                   else states[-1][k]) for k, v in states[0].items()}
    module._load_state(average, str(paths[-1]), f"this {module.config.method} network")
    folder = module.export(Path(folder), steps[-1])
    record = json.loads((folder / "training.json").read_text())
    (folder / "training.json").write_text(json.dumps({**record, "averaged_steps": steps}, indent=1))
    return folder


def sample_pairs(config: TrainConfig, count: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed pairs for the sample grid: crops of the first readable contents and styles, with a fixed seed."""
    rng = random.Random(0)
    contents = _first_readable(find_images(config.content_dir), count)
    styles = _first_readable([Path(config.style_image)] if config.style_image else find_images(config.style_dir), count)
    if not contents or not styles:
        raise BrushworkError("no readable training images for the sample grid")
    count = max(len(contents), len(styles))
    return [(random_crop(contents[i % len(contents)], config.resize, config.crop, rng),
             random_crop(styles[i % len(styles)], config.resize, config.crop, rng)) for i in range(count)]


def _first_readable(paths: list[Path], count: int) -> list:
    images = []
    for path in paths:
        try:
            images.append(load_image(path))
        except ImageError:
            continue
        if len(images) == count:
            break
    return images

"""Training MicroAST with PyTorch Lightning.

The settings are a :class:`~brushwork.train_config.TrainConfig`. :class:`MicroASTTraining` is the
``LightningModule``: the losses of one step and the optimiser. :func:`train` builds the ``Trainer`` (devices,
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
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torchmetrics.aggregation import RunningMean

from . import losses
from . import weights as registry
from .data import ContentStylePairs, find_images, pair_loader, random_crop
from .errors import BrushworkError, ImageError
from .images import load_image, save_image, to_image
from .methods import microast
from .methods.microast import MicroAST
from .train_config import TrainConfig
from .vgg import LOSS_NETWORKS, VGGFeatures, load_loss_network

log = logging.getLogger(__name__)


class MicroASTTraining(pl.LightningModule):
    """One MicroAST training step: content, style and contrastive losses (plus the optional ones)."""

    def __init__(self, config: dict[str, Any], loss_network: VGGFeatures | None = None):
        super().__init__()
        self.save_hyperparameters(config)
        self.config = TrainConfig(**config)
        self.model = MicroAST(self.config.decoder)
        # The frozen loss network is not part of the trained state, so it is kept out of the checkpoints.
        self.__dict__["loss_network"] = loss_network
        self.running = torch.nn.ModuleDict({name: RunningMean(window=self.config.log_every)
                                            for name in ("total", *self.loss_weights())})

    def loss_weights(self) -> dict[str, float]:
        """The loss terms in use, with their weights."""
        c = self.config
        weights = {"content": c.content_weight, "style": c.style_weight, "ssc": c.ssc_weight,
                   "tv": c.tv_weight, "perceptual": c.perceptual_weight}
        return {name: weight for name, weight in weights.items() if weight > 0}

    @staticmethod
    def loss_layers(config: TrainConfig) -> tuple[str, ...]:
        layers = [losses.CONTENT_LAYER, *losses.STYLE_LAYERS]
        if config.perceptual_weight > 0:
            layers += losses.PERCEPTUAL_LAYERS
        return tuple(dict.fromkeys(layers))

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.model(content, style)

    def compute_losses(self, content: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The stylised batch and every loss term (unweighted)."""
        if self.loss_network is None:
            raise RuntimeError("MicroASTTraining needs a loss network to compute losses")
        signals = self.model.encode_style(style)
        output = self.model.decode(content, signals)
        output_features = self.loss_network(output)
        with torch.no_grad():
            content_features = self.loss_network(content)
            style_features = self.loss_network(style)
        weights, terms = self.loss_weights(), {}
        if "content" in weights:
            terms["content"] = losses.CONTENT_LOSSES[self.config.content_loss](output_features, content_features)
        if "style" in weights:
            terms["style"] = losses.STYLE_LOSSES[self.config.style_loss](output_features, style_features)
        if "ssc" in weights:
            output_signals = self.model.encode_style(output)
            terms["ssc"] = losses.style_signal_contrastive_loss(
                output_signals.components(), signals.components(), self.config.ssc_negatives)
        if "tv" in weights:
            terms["tv"] = losses.total_variation(output)
        if "perceptual" in weights:
            terms["perceptual"] = losses.perceptual_distance(output_features, content_features)
        return output, terms

    def training_step(self, batch, batch_index):
        content, style = batch
        _, terms = self.compute_losses(content, style)
        weights = self.loss_weights()
        total = sum(weights[name] * term.float() for name, term in terms.items())
        if not torch.isfinite(total):
            raise FloatingPointError(f"the training loss became {total.item()} at step {self.global_step}: "
                                     f"{ {name: float(term) for name, term in terms.items()} }")
        for name, value in (("total", total), *terms.items()):
            self.running[name].update(value.detach().float())
            self.log(f"loss/{name}", self.running[name].compute(), prog_bar=name == "total")
        self.log("lr", self.optimizers().param_groups[0]["lr"])
        return total

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.lr)
        decay = self.config.lr_decay
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1.0 + decay * step))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_fit_start(self):
        self.loss_network.to(self.device)


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


def choose_loss_net(name: str, weights_dir) -> str:
    """``auto``: the most preferred loss network whose weights are already at hand, else vgg16-hed."""
    if name != "auto":
        return name
    for candidate in LOSS_NETWORKS:  # in order of preference: vgg19, vgg16, vgg16-hed
        if all(s.found for s in registry.status(candidate, weights_dir)):
            return candidate
    return "vgg16-hed"


def choose_precision(precision: str, accelerator: str) -> str:
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda"):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def initial_weights(module: MicroASTTraining, source: str, weights_dir) -> None:
    """Start from a registry model, a Lightning checkpoint or a folder of exported weights. A decoder head of
    another kind than the one being trained is left at its fresh initialisation (with a warning)."""
    path = Path(source)
    if path.is_file() and path.suffix == ".ckpt":
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        state = {k[len("model."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    else:
        if path.is_dir():
            paths = microast.find_parts(path)
        else:
            paths = registry.resolve(source, weights_dir)
        state = {f"{part}.{key}": value for part in microast.PARTS
                 for key, value in registry.read_state_dict(paths[part]).items()}
    own = module.model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(fitting))
    if any(not key.startswith("decoder.dec3.") for key in skipped):
        raise BrushworkError(f"{source}: does not fit MicroAST (no weights for {skipped[0]})")
    if skipped:
        log.warning("%s has another decoder head than %r: the head starts from scratch", source,
                    module.config.decoder)
    module.model.load_state_dict(fitting, strict=False)


def export_weights(model: MicroAST, folder: Path, config: TrainConfig, steps: int) -> Path:
    """Write the four state dicts as ``<part>.pth`` (readable by ``load_model``) and a ``training.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    for part in microast.PARTS:
        torch.save({k: v.detach().cpu().float() for k, v in getattr(model, part).state_dict().items()},
                   folder / f"{part}.pth")
    record = {"steps": steps, "config": dataclasses.asdict(config)}
    (folder / "training.json").write_text(json.dumps(record, indent=1))
    return folder


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
    loss_net = choose_loss_net(config.loss_net, config.weights_dir)
    network = load_loss_network(loss_net, MicroASTTraining.loss_layers(config), weights_dir=config.weights_dir)
    module = MicroASTTraining(dataclasses.asdict(config), network)
    if config.init_from and resume_path is None:
        initial_weights(module, config.init_from, config.weights_dir)

    start_step = torch.load(resume_path, map_location="cpu", weights_only=False)["global_step"] if resume_path else 0
    # A resumed run draws new crops instead of repeating the ones it has seen.
    dataset = ContentStylePairs(config.content_dir, config.style_dir, resize_to=config.resize, crop=config.crop,
                                seed=config.seed * 1_000_003 + start_step, length=config.max_steps * config.batch_size)
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
    log.info("training MicroAST (%s decoder) with loss network %s on %s", config.decoder, loss_net,
             trainer.strategy.root_device)
    with warnings.catch_warnings():
        # Handled: each data-loader worker draws its own stream, and a resumed run reseeds it with the step.
        warnings.filterwarnings("ignore", message=".*IterableDataset. has .__len__. defined")
        warnings.filterwarnings("ignore", message=".*your dataloader is not resumable")
        warnings.filterwarnings("ignore", message=".*LeafSpec.* is deprecated")
        trainer.fit(module, train_dataloaders=loader, ckpt_path=resume_path)
    return export_weights(module.model, out / "weights", config, trainer.global_step)


def sample_pairs(config: TrainConfig, count: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed pairs for the sample grid: crops of the first readable contents and styles, with a fixed seed."""
    rng = random.Random(0)
    contents = _first_readable(find_images(config.content_dir), count)
    styles = _first_readable(find_images(config.style_dir), count)
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

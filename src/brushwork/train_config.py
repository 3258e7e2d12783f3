"""Training settings: one dataclass with the paper's defaults, read from TOML files and the command line.

Kept apart from :mod:`brushwork.training` so that reading a configuration does not import Lightning.
"""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BrushworkError
from .losses import CONTENT_LOSSES, STRUCTURE_WINDOWS, STYLE_LOSSES
from .methods.microast import DECODER_HEADS
from .vgg import LOSS_NETWORKS


def _setting(default, help: str, **kwargs):
    return field(default=default, metadata={"help": help}, **kwargs)


#: Methods the trainer knows, with the settings whose defaults differ from MicroAST's (AdaIN's paper: style
#: weight 10, no contrastive loss).
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "microast": {},
    "adain": {"style_weight": 10.0, "ssc_weight": 0.0, "output_dir": "runs/adain"},
    # Johnson et al.: Gram style loss over relu1_2..relu4_3 and content at relu2_2 of VGG16 (both relative to
    # their targets), total variation, Adam at 1e-3. Style weight 0.5: 3 and 1 gave colour blobs, 0.1 grey.
    "johnson": {"style_loss": "gram", "content_weight": 1.0, "style_weight": 0.5, "ssc_weight": 0.0,
                "tv_weight": 0.1, "lr": 1e-3, "lr_decay": 0.0, "batch_size": 4, "output_dir": "runs/johnson"},
    # Variational style transfer: Gram style loss, perceptual content loss, disentanglement hinge, KL.
    # Relative content and Gram losses (about 1 each); KL is about 10 at the prior and 100 at a standard
    # deviation of 0.1 per dimension: its weight bounds how far the codes shrink (the samples' variety) without
    # pulling every style's code to the prior (a weight of 0.01 did, in the first steps of a run).
    "vst": {"style_loss": "gram", "content_weight": 1.0, "style_weight": 3.0, "ssc_weight": 0.0,
            "hinge_weight": 1.0, "kl_weight": 0.001, "lr": 5e-4, "batch_size": 8, "output_dir": "runs/vst"},
}
#: Loss networks a method may train with (None: any).
METHOD_LOSS_NETS: dict[str, tuple[str, ...]] = {"johnson": ("vgg16", "vgg16-hed")}


@dataclass
class TrainConfig:
    """Every training setting. Defaults follow the MicroAST paper; :data:`METHOD_DEFAULTS` changes some per
    method."""

    method: str = _setting("microast", "What to train: microast, adain, johnson or vst.")
    content_dir: str = _setting("", "Folder of content images (searched recursively).")
    style_dir: str = _setting("", "Folder of style images (searched recursively; not for johnson).")
    style_image: str = _setting("", "johnson: the one style image the network learns.")
    style_size: int = _setting(256, "johnson: shorter side the style image is resized to for its Gram targets.")
    output_dir: str = _setting("runs/microast", "Folder for checkpoints, logs, sample grids and the weights.")
    decoder: str = _setting("bilinear", "MicroAST decoder head: bilinear (official), tuned (bicubic + 15x15 "
                                        "final convolution) or transposed.")
    init_from: str | None = _setting(None, "Start from a registry model, a .ckpt checkpoint or a folder of "
                                           "exported weights (fine-tuning).")
    loss_net: str = _setting("auto", "vgg19, vgg16, vgg16-hed, vgg19-normalised, or auto: the first of those "
                                     "whose weights are at hand. For AdaIN it is also the encoder.")
    content_loss: str = _setting("mse", "Content loss on relu4_1: mse, l1 or cosine.")
    style_loss: str = _setting("mean_std", "Style loss over relu1_1..relu4_1: mean_std or gram.")
    content_weight: float = _setting(1.0, "Weight of the content loss.")
    style_weight: float = _setting(3.0, "Weight of the style loss.")
    ssc_weight: float = _setting(3.0, "Weight of the style-signal contrastive loss.")
    tv_weight: float = _setting(0.0, "Weight of the total-variation loss.")
    perceptual_weight: float = _setting(0.0, "Weight of the LPIPS-style perceptual distance to the content.")
    structure_weight: float = _setting(0.0, "microast, adain, vst: weight of 1 - SSIM between the output's and the content's "
                                            "luminance (keeps the photo's structure; not the paper's loss).")
    frame_weight: float = _setting(0.0, "Weight of a term against a frame drawn along the border: how much the "
                                        "output's outermost 4 px differ from the band inside them in mean and "
                                        "contrast beyond what the photo's do (not the paper's loss).")
    structure_window: str = _setting("gaussian11", "SSIM window of the structure term: gaussian11 (11 px, sigma "
                                                   "1.5) or uniform7 (7x7 uniform, the window the evaluation's SSIM "
                                                   "uses).")
    anchor_weight: float = _setting(0.0, "microast, johnson: weight of the distance (features at relu1_1..relu4_1) to what "
                                         "the init_from weights, frozen, paint: fine-tuning that keeps what they "
                                         "do well (their outputs as targets; not the paper's protocol).")
    teacher: str | None = _setting(None, "microast, adain: a frozen arbitrary-style model (registry name or folder) "
                                         "whose paintings of the same pairs are targets of --teacher-weight.")
    teacher_weight: float = _setting(0.0, "microast, adain: weight of the distance (features at relu1_1..relu4_1) "
                                          "to the teacher's painting (its outputs as targets; not the paper's "
                                          "protocol).")
    hinge_weight: float = _setting(0.0, "vst: weight of the disentanglement hinge loss.")
    hinge_margin: float = _setting(0.0, "vst: margin of the disentanglement hinge loss.")
    kl_weight: float = _setting(0.0, "vst: weight of the KL divergence of the style code from N(0, I).")
    diversity_weight: float = _setting(0.0, "vst: weight of a hinge that keeps two samples of the same pair (codes "
                                            "drawn apart) at least diversity_margin apart in perceptual distance "
                                            "(keeps samples different; not the paper's loss).")
    diversity_margin: float = _setting(0.1, "vst: perceptual distance the diversity hinge asks between two samples.")
    latent_dim: int = _setting(64, "vst: size of the style code.")
    init_decoder: str | None = _setting(None, "vst: start the decoder from an AdaIN model over the same encoder "
                                              "(registry name or folder), e.g. adain-vgg16-hed.")
    ssc_negatives: int | None = _setting(None, "Negatives per sample in the contrastive loss [default: the rest "
                                               "of the batch].")
    lr: float = _setting(1e-4, "Learning rate of Adam.")
    lr_decay: float = _setting(5e-5, "Learning rate at step t is lr / (1 + lr_decay * t).")
    batch_size: int = _setting(8, "Pairs per step.")
    resize: int = _setting(512, "Shorter side images are resized to before cropping.")
    style_resize: int | None = _setting(None, "Shorter side the style images are resized to before cropping "
                                              "[default: --resize].")
    crop: int = _setting(256, "Side of the random square crops trained on.")
    max_steps: int = _setting(160_000, "Steps to train for.")
    workers: int = _setting(4, "Data-loading processes (0: load in the training process).")
    precision: str = _setting("auto", "auto (bf16-mixed on a GPU or CPU that has bfloat16 arithmetic, 16-mixed on "
                                      "other GPUs, else 32-true) or a Lightning precision.")
    warmup_steps: int = _setting(0, "adain: first train the decoder for N steps to invert the encoder (content "
                                    "reconstruction), then to stylise.")
    cache_mb: int = _setting(2048, "Keep up to this many MB of decoded, resized training images in memory (per "
                                   "data-loading process).")
    accelerator: str = _setting("auto", "auto, cpu or gpu.")
    grad_clip: float | None = _setting(None, "Clip the gradient norm to this value.")
    sample_every: int = _setting(500, "Save a grid of sample stylisations every N steps (0: only at the end).")
    checkpoint_every: int = _setting(1000, "Save a checkpoint every N steps.")
    log_every: int = _setting(10, "Log running means of the losses every N steps.")
    seed: int = _setting(0, "Random seed.")
    wandb: bool = _setting(False, "Also log to Weights & Biases.")
    wandb_project: str = _setting("brushwork", "Weights & Biases project.")
    wandb_offline: bool = _setting(False, "Log to Weights & Biases offline (sync later with 'wandb sync').")
    weights_dir: list[str] = field(default_factory=list, metadata={"help": "Local weights folders."})

    def validate(self) -> "TrainConfig":
        johnson = self.method == "johnson"
        allowed_nets = METHOD_LOSS_NETS.get(self.method)
        checks = [
            (self.method in METHOD_DEFAULTS, f"method must be one of {', '.join(METHOD_DEFAULTS)}"),
            (bool(self.content_dir) and (bool(self.style_image) if johnson else bool(self.style_dir)),
             "give content_dir and style_image" if johnson else "give content_dir and style_dir"),
            (not self.style_image or johnson, "style_image is for johnson (other methods learn from style_dir)"),
            (not johnson or not self.style_dir, "johnson learns one style: give style_image, not style_dir"),
            (not self.style_image or Path(self.style_image).is_file(), f"{self.style_image}: no such style image"),
            (allowed_nets is None or self.loss_net in ("auto", *allowed_nets),
             f"{self.method} trains with loss_net {' or '.join(allowed_nets or ())}"),
            (self.method == "vst" or (self.hinge_weight == 0 and self.kl_weight == 0 and self.diversity_weight == 0),
             "hinge_weight, kl_weight and diversity_weight are settings of vst"),
            (self.diversity_margin > 0, "diversity_margin must be positive"),
            (self.method != "vst" or self.batch_size % 2 == 0,
             "vst trains on pairs of samples sharing a style code: batch_size must be even"),
            (self.method == "vst" or not self.init_decoder, "init_decoder is a setting of vst"),
            (self.method == "adain" or self.warmup_steps == 0, "warmup_steps (inversion) is a setting of adain"),
            (0 <= self.warmup_steps <= self.max_steps and self.cache_mb >= 0,
             "warmup_steps must be between 0 and max_steps, cache_mb at least 0"),
            (self.latent_dim >= 1 and self.style_size >= 16, "latent_dim must be positive, style_size >= 16"),
            (self.method == "microast" or self.ssc_weight == 0,
             "the style-signal contrastive loss (ssc_weight) is MicroAST's"),
            (self.method in ("microast", "adain", "vst") or self.structure_weight == 0,
             "structure_weight is a setting of microast, adain and vst"),
            (self.method in ("microast", "johnson") or self.anchor_weight == 0,
             "anchor_weight is a setting of microast and johnson"),
            (self.anchor_weight == 0 or bool(self.init_from), "anchor_weight needs init_from (the anchor)"),
            (self.method in ("microast", "adain") or self.teacher_weight == 0,
             "teacher_weight is a setting of microast and adain"),
            ((self.teacher_weight > 0) == bool(self.teacher), "teacher and teacher_weight go together"),
            (self.decoder in DECODER_HEADS, f"decoder must be one of {', '.join(DECODER_HEADS)}"),
            (self.loss_net == "auto" or self.loss_net in LOSS_NETWORKS,
             f"loss_net must be auto or one of {', '.join(LOSS_NETWORKS)}"),
            (self.content_loss in CONTENT_LOSSES, f"content_loss must be one of {', '.join(CONTENT_LOSSES)}"),
            (self.style_loss in STYLE_LOSSES, f"style_loss must be one of {', '.join(STYLE_LOSSES)}"),
            (self.structure_window in STRUCTURE_WINDOWS,
             f"structure_window must be one of {', '.join(STRUCTURE_WINDOWS)}"),
            (self.batch_size >= 2 or self.ssc_weight == 0, "the contrastive loss needs batch_size >= 2"),
            (self.crop >= 16 and self.resize >= 16 and (self.style_resize or 16) >= 16,
             "crop, resize and style_resize must be at least 16 pixels"),
            (self.max_steps >= 1 and self.lr > 0, "max_steps and lr must be positive"),
            (min(self.log_every, self.checkpoint_every) >= 1 and self.sample_every >= 0 and self.workers >= 0,
             "log_every and checkpoint_every must be at least 1, sample_every and workers at least 0"),
            (self.ssc_negatives is None or 1 <= self.ssc_negatives < self.batch_size,
             "ssc_negatives must be between 1 and batch_size - 1"),
            (min(self.content_weight, self.style_weight, self.ssc_weight, self.tv_weight,
                 self.perceptual_weight, self.hinge_weight, self.kl_weight, self.diversity_weight,
                 self.structure_weight, self.anchor_weight, self.teacher_weight, self.frame_weight) >= 0, "loss weights must not be negative"),
        ]
        for ok, message in checks:
            if not ok:
                raise BrushworkError(f"training config: {message}")
        return self

    @classmethod
    def fields(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}


def load_config(path: str | Path | None, overrides: dict[str, Any],
                method: str = "microast") -> list[tuple[str, TrainConfig]]:
    """Configurations of ``method`` from a TOML file plus overrides: one, or one per combination of a ``[sweep]``
    table. The method's defaults (:data:`METHOD_DEFAULTS`) come first, then the file, then the overrides.

    A sweep lists values per setting (``style_weight = [3.0, 6.0]``); each run gets its own output folder,
    named after its values, under ``output_dir``.
    """
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise BrushworkError(f"{path}: cannot read the training config ({error})") from None
    sweep = values.pop("sweep", {})
    if method not in METHOD_DEFAULTS:
        raise BrushworkError(f"unknown method {method!r}; trainable: {', '.join(METHOD_DEFAULTS)}")
    if values.setdefault("method", method) != method:
        raise BrushworkError(f"{path} is a {values['method']} config, not {method}")
    values = {**METHOD_DEFAULTS[method], **values}
    values.update({key: value for key, value in overrides.items() if value is not None})
    unknown = (set(values) | set(sweep)) - TrainConfig.fields()
    if unknown:
        raise BrushworkError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
    if not sweep:
        return [("", _config(values))]
    keys = sorted(sweep)
    runs = []
    for combination in itertools.product(*(_as_list(sweep[key]) for key in keys)):
        name = ",".join(f"{key}={value}" for key, value in zip(keys, combination))
        run = dict(values, **dict(zip(keys, combination)))
        run["output_dir"] = str(Path(values.get("output_dir", TrainConfig.output_dir)) / name)
        runs.append((name, _config(run)))
    return runs


def _config(values: dict[str, Any]) -> TrainConfig:
    try:
        return TrainConfig(**values).validate()
    except TypeError as error:
        raise BrushworkError(f"training config: {error}") from None


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]

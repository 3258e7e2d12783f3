"""Loss networks: one VGG feature extractor for every loss, metric and VGG-based method.

Layers are named as in the papers (``conv3_1``, ``relu3_1``, ``pool3``); the network is built only up to the
deepest layer asked for, frozen, and moves with ``.to(device, dtype)``. It takes RGB images in [0, 1] and does its
own preprocessing, so callers never think about it. Weights come from the registry:

- ``vgg16`` / ``vgg19``: torchvision's ImageNet weights (state-dict keys ``features.<index>.weight``), ImageNet
  mean/std preprocessing, floor-mode pooling, as torchvision defines the networks;
- ``vgg16-hed``: VGG16 from HED (Keras 3 ``.weights.h5``, read with h5py), BGR 0-255 minus the Caffe mean,
  ceil-mode ("same") pooling, as in that network;
- ``vgg16-hed-reflect``: the same weights with reflection padding, so that the features at an image's border look
  like the interior's (an AdaIN decoder trained over zero padding paints a frame);
- ``vgg19-normalised``: AdaIN's encoder (pytorch-AdaIN's ``vgg_normalised.pth``): a learned 1x1 input convolution
  (RGB [0, 1] -> Caffe BGR), reflection padding, ceil-mode pooling; its ``nn.Sequential`` indices are mapped to
  torchvision's by :func:`read_adain_vgg`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from . import weights as registry
from .errors import BrushworkError, WeightsError

#: Output channels of each convolution, block by block.
BLOCKS = {
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Caffe's per-channel mean, in BGR order, on the 0-255 scale.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def layer_names(architecture: str) -> list[str]:
    """Every layer of the feature part, in order: conv1_1, relu1_1, conv1_2, relu1_2, pool1, conv2_1, ..."""
    names = []
    for block, widths in enumerate(BLOCKS[architecture], start=1):
        for index in range(1, len(widths) + 1):
            names += [f"conv{block}_{index}", f"relu{block}_{index}"]
        names.append(f"pool{block}")
    return names


class ImageNetNormalize(nn.Module):
    """RGB in [0, 1] -> (x - mean) / std with ImageNet statistics (torchvision models)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.mean) / self.std


class CaffeBGR(nn.Module):
    """RGB in [0, 1] -> BGR on the 0-255 scale minus the Caffe mean (Caffe-trained models such as HED)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image.flip(1) * 255.0 - self.mean


class InputConv(nn.Conv2d):
    """A learned 1x1 convolution as preprocessing (AdaIN's normalised VGG19 starts with one)."""

    def __init__(self):
        super().__init__(3, 3, 1)


class VGGFeatures(nn.Module):
    """VGG features by layer name. ``features`` has torchvision's indices, so its state dicts load by key."""

    def __init__(self, architecture: str, layers: Iterable[str], preprocess: nn.Module, ceil_mode: bool = False,
                 padding_mode: str = "zeros"):
        super().__init__()
        if architecture not in BLOCKS:
            raise ValueError(f"unknown VGG {architecture!r}; choose from {', '.join(BLOCKS)}")
        all_names = layer_names(architecture)
        self.layers = tuple(dict.fromkeys(layers))
        unknown = [name for name in self.layers if name not in all_names]
        if unknown or not self.layers:
            raise ValueError(f"{architecture} has no layer {', '.join(unknown) or '(none asked for)'}")
        depth = max(all_names.index(name) for name in self.layers) + 1
        self.architecture = architecture
        self.names = all_names[:depth]
        self.preprocess = preprocess
        modules, channels = [], 3
        for name in self.names:
            if name.startswith("conv"):
                width = BLOCKS[architecture][int(name[4]) - 1][int(name[6]) - 1]
                modules.append(nn.Conv2d(channels, width, 3, padding=1, padding_mode=padding_mode))
                channels = width
            elif name.startswith("relu"):
                modules.append(nn.ReLU())  # not in place: a conv output may be a requested layer
            else:
                modules.append(nn.MaxPool2d(2, 2, ceil_mode=ceil_mode))
        self.features = nn.Sequential(*modules)
        self.requires_grad_(False).eval()

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features of Nx3xHxW RGB images in [0, 1] at every requested layer."""
        x = self.preprocess(image)
        wanted, result = set(self.layers), {}
        for name, module in zip(self.names, self.features):
            x = module(x)
            if name in wanted:
                result[name] = x
        return result

    def train(self, mode: bool = True) -> "VGGFeatures":
        return super().train(False)  # a loss network never leaves eval mode


@dataclass(frozen=True)
class LossNetwork:
    """How a registry entry becomes a :class:`VGGFeatures`."""

    architecture: str
    preprocess: type[nn.Module]
    ceil_mode: bool
    padding_mode: str = "zeros"


#: Every loss network by registry name (``choose_loss_net`` picks one for ``auto``).
LOSS_NETWORKS = {
    "vgg19": LossNetwork("vgg19", ImageNetNormalize, ceil_mode=False),
    "vgg16": LossNetwork("vgg16", ImageNetNormalize, ceil_mode=False),
    "vgg16-hed": LossNetwork("vgg16", CaffeBGR, ceil_mode=True),
    "vgg16-hed-reflect": LossNetwork("vgg16", CaffeBGR, ceil_mode=True, padding_mode="reflect"),
    "vgg19-normalised": LossNetwork("vgg19", InputConv, ceil_mode=True, padding_mode="reflect"),
}


def choose_loss_net(name: str, weights_dir=None, candidates: Sequence[str] = ("vgg19", "vgg16", "vgg16-hed")) -> str:
    """``auto``: the most preferred of ``candidates`` whose weights are already at hand, else vgg16-hed."""
    if name != "auto":
        return name
    for candidate in candidates:  # the ImageNet networks first
        if all(s.found for s in registry.status(candidate, weights_dir)):
            return candidate
    return "vgg16-hed"


def load_loss_network(name: str, layers: Sequence[str], *, device: str | torch.device = "cpu",
                      weights_dir=None) -> VGGFeatures:
    """A frozen VGG feature extractor from the registry entry ``name`` (one of :data:`LOSS_NETWORKS`)."""
    if name not in LOSS_NETWORKS:
        raise BrushworkError(f"unknown loss network {name!r}; choose from {', '.join(LOSS_NETWORKS)}")
    spec = LOSS_NETWORKS[name]
    try:
        network = VGGFeatures(spec.architecture, layers, spec.preprocess(), spec.ceil_mode, spec.padding_mode)
    except ValueError as error:
        raise BrushworkError(str(error)) from None
    path = registry.resolve(name, weights_dir)["features"]
    if path.suffix == ".h5":
        state = read_hed_h5(path)
    elif name == "vgg19-normalised":
        state = read_adain_vgg(registry.read_state_dict(path), path)
    else:
        state = registry.read_state_dict(path)
    load_features(network, state, path)
    return network.to(device)


def load_features(network: VGGFeatures, state: dict[str, torch.Tensor], source: Path | str) -> None:
    """Load the convolutions the network has from a torchvision-layout state dict (other keys are ignored), and
    the learned preprocessing (``preprocess.*``) where the network has one."""
    learned = network.preprocess.state_dict() if isinstance(network.preprocess, InputConv) else {}
    if learned:
        if any(f"preprocess.{key}" not in state for key in learned):
            raise WeightsError(f"{source}: no weights for the input convolution of {network.architecture}")
        network.preprocess.load_state_dict({key: state[f"preprocess.{key}"] for key in learned})
    wanted = network.features.state_dict()
    missing = [key for key in wanted if f"features.{key}" not in state]
    if missing:
        raise WeightsError(f"{source}: no weights for {network.architecture} features.{missing[0]}")
    try:
        network.features.load_state_dict({key: state[f"features.{key}"] for key in wanted})
    except RuntimeError as error:
        raise WeightsError(f"{source}: does not fit {network.architecture} ({str(error).splitlines()[-1].strip()})")


def read_hed_h5(path: Path | str) -> dict[str, torch.Tensor]:
    """HED's VGG16 convolutions as a torchvision-layout VGG16 state dict.

    The file has ``blockN/layers/conv2d[_K]/vars/{0,1}``: Keras kernels (kh, kw, in, out) and biases.
    """
    import h5py

    state, index = {}, 0
    try:
        with h5py.File(path, "r") as file:
            for block, widths in enumerate(BLOCKS["vgg16"], start=1):
                for k in range(len(widths)):
                    group = file[f"block{block}/layers/conv2d" + (f"_{k}" if k else "") + "/vars"]
                    kernel = torch.from_numpy(group["0"][()]).permute(3, 2, 0, 1).contiguous()
                    state[f"features.{index}.weight"] = kernel
                    state[f"features.{index}.bias"] = torch.from_numpy(group["1"][()])
                    index += 2  # conv, relu
                index += 1  # pool
    except (OSError, KeyError) as error:
        raise WeightsError(f"{path}: not a HED VGG16 weights file ({error})") from None
    return state


def read_adain_vgg(state: dict[str, torch.Tensor], source: Path | str = "vgg") -> dict[str, torch.Tensor]:
    """pytorch-AdaIN's ``vgg_normalised.pth`` (one ``nn.Sequential``: a 1x1 convolution, then VGG19 with a
    reflection-padding module before every 3x3 convolution) as a torchvision-layout state dict plus
    ``preprocess.*`` for the 1x1 convolution. Convolutions are matched in order."""
    def index(key: str) -> int:
        return int(key.split(".")[0])

    try:
        convs = sorted({index(key) for key in state if key.endswith(".weight") and state[key].dim() == 4})
    except ValueError:
        raise WeightsError(f"{source}: not an AdaIN VGG state dict (keys like '0.weight' expected)") from None
    if not convs or state[f"{convs[0]}.weight"].shape[-1] != 1:
        raise WeightsError(f"{source}: not an AdaIN VGG state dict (no 1x1 input convolution first)")
    names = layer_names("vgg19")
    targets = [i for i, name in enumerate(names) if name.startswith("conv")]
    result = {"preprocess.weight": state[f"{convs[0]}.weight"], "preprocess.bias": state[f"{convs[0]}.bias"]}
    for source_index, target_index in zip(convs[1:], targets):
        result[f"features.{target_index}.weight"] = state[f"{source_index}.weight"]
        result[f"features.{target_index}.bias"] = state[f"{source_index}.bias"]
    return result

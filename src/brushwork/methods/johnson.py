"""Johnson et al. (ECCV 2016): one feed-forward transformation network per style, trained with perceptual losses.

The network is that of the paper with the improvements that became standard: instance normalisation instead of
batch normalisation (Ulyanov et al. 2016), reflection padding, and upsampling by nearest-neighbour resize followed
by a convolution instead of transposed convolutions (Odena et al. 2016), which removes checkerboard artefacts.

    9x9 conv 3->32, 3x3 conv 32->64 stride 2, 3x3 conv 64->128 stride 2      (three down-sampling convolutions)
    5 residual blocks of two 3x3 convolutions, 128 channels                  (no ReLU after the sum)
    2x resize + 3x3 conv 128->64, 2x resize + 3x3 conv 64->32, 9x9 conv 32->3 (three up-sampling convolutions)

Every convolution but the last is followed by instance normalisation (with learned scale and shift) and a ReLU.
The output is an RGB image in [0, 1] (a sigmoid-free clamp at inference; training sees the raw output).

A trained network *is* its style: :meth:`Johnson.stylize` takes no style image. Its folder holds
``transform.pth`` and a ``training.json`` whose ``method`` is ``johnson`` (and which names the style image).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BrushworkError, WeightsError
from ..weights import read_state_dict
from .microast import pad_to

#: Two stride-2 convolutions: sizes are padded to multiples of 4 (and cropped back).
SIZE_MULTIPLE = 4
WIDTHS = (32, 64, 128)
RESIDUAL_BLOCKS = 5
WEIGHTS_FILE = "transform.pth"
#: The loss layers of the paper (VGG16): content at relu2_2, Gram matrices at relu1_2, relu2_2, relu3_3, relu4_3.
CONTENT_LAYER = "relu2_2"
STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")


class ConvLayer(nn.Sequential):
    """Reflection padding, a convolution, and (unless ``last``) instance normalisation and a ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, last: bool = False,
                 relu: bool = True):
        layers: list[nn.Module] = [nn.ReflectionPad2d(kernel_size // 2),
                                   nn.Conv2d(in_channels, out_channels, kernel_size, stride)]
        if not last:
            layers.append(nn.InstanceNorm2d(out_channels, affine=True))
            if relu:
                layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """x + IN(conv(ReLU(IN(conv(x))))), as in Johnson et al.'s supplementary material (Gross & Wilber)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(ConvLayer(channels, channels, 3), ConvLayer(channels, channels, 3, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UpsampleConv(nn.Module):
    """Nearest-neighbour 2x resize, then a convolution layer (a resize-convolution: no checkerboard)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv = ConvLayer(in_channels, out_channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TransformNet(nn.Module):
    """Nx3xHxW images in [0, 1] (H, W multiples of 4) -> Nx3xHxW, unclamped."""

    def __init__(self, widths: Sequence[int] = WIDTHS, residual_blocks: int = RESIDUAL_BLOCKS):
        super().__init__()
        a, b, c = widths
        self.down = nn.Sequential(ConvLayer(3, a, 9), ConvLayer(a, b, 3, stride=2), ConvLayer(b, c, 3, stride=2))
        self.residual = nn.Sequential(*(ResidualBlock(c) for _ in range(residual_blocks)))
        self.up = nn.Sequential(UpsampleConv(c, b), UpsampleConv(b, a), ConvLayer(a, 3, 9, last=True))
        for block in self.residual:  # each residual block starts as the identity (zero scale of its last norm)
            nn.init.zeros_(block.body[1][2].weight)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.up(self.residual(self.down(image)))


class Johnson(nn.Module):
    """A trained per-style network with the interface of the other methods; it needs no style image."""

    method = "johnson"
    #: The style is in the weights: ``stylize`` takes no style images.
    needs_style = False

    def __init__(self, network: TransformNet | None = None, style_name: str = ""):
        super().__init__()
        self.network = network if network is not None else TransformNet()
        #: The style image the network was trained on (its file name), for messages and the web page.
        self.style_name = style_name

    def forward(self, content: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """The network on Nx3xHxW content (sizes multiples of 4); ``style`` is ignored (the network is one)."""
        return self.network(content)

    def stylize(self, content: torch.Tensor, styles: Sequence | None = None, style_weights=None,
                alpha: float = 1.0, **_) -> torch.Tensor:
        """Paint Nx3xHxW ``content`` (any size >= 8 px a side) in the network's style, clamped to [0, 1].

        ``alpha`` < 1 blends the painting with the content in pixel space (the network has no feature space to
        blend in). ``styles`` must be empty: the style is in the weights.
        """
        if styles:
            raise BrushworkError("a johnson model paints the one style it was trained on: give no style image")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
        height, width = content.shape[-2:]
        output = self(pad_to(content, SIZE_MULTIPLE))[..., :height, :width].float().clamp(0, 1)
        if alpha < 1.0:
            output = alpha * output + (1.0 - alpha) * content
        return output


def load(paths: Mapping[str, Path], style_name: str = "") -> Johnson:
    """A Johnson model from its ``transform`` file (a state dict of :class:`TransformNet`)."""
    state = read_state_dict(paths["transform"])
    model = Johnson(style_name=style_name)
    try:
        model.network.load_state_dict({key: value.float() for key, value in state.items()})
    except RuntimeError as error:
        reason = str(error).splitlines()[0]
        raise WeightsError(f"{paths['transform']}: does not fit the Johnson transformation network ({reason})") from None
    return model.eval().requires_grad_(False)


def find_weights(folder: Path) -> Path:
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise BrushworkError(f"{folder}: no {WEIGHTS_FILE}, so not a folder of Johnson weights")
    return path


def style_name_of(folder: Path) -> str:
    """The style image a folder's ``training.json`` names (empty if it names none)."""
    try:
        record = json.loads((folder / "training.json").read_text())
    except (OSError, ValueError):
        return ""
    return Path(record.get("config", {}).get("style_image") or "").name

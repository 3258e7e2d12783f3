"""The fast engine: faster executors built from the plain, loaded networks of :mod:`brushwork.methods`.

The networks stay what trains and what ``--exact`` runs; an executor is made from one, holds prepared copies of
its weights, and leaves the network as it is (as torch.ao's and TensorRT's wrappers do). :func:`build` picks the
executor of a model; ``load_model`` calls it unless ``fast=False``.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn

from ..methods.adain import AdaIN
from ..methods.microast import MicroAST
from ..methods.vst import VariationalStyleTransfer
from .microast import FastMicroAST

__all__ = ["FastMicroAST", "build"]


def build(model: nn.Module, low_precision: torch.dtype | None | Literal["native"] = "native") -> nn.Module:
    """The fast executor of a loaded model, on the model's device; the model itself is not changed.

    - MicroAST: :class:`FastMicroAST` (``low_precision`` as in :meth:`FastMicroAST.from_network`).
    - AdaIN and VST: a copy with channels-last weights: oneDNN's and cuDNN's faster kernels, which the
      convolutions choose from their weights' layout, so the copy computes exactly what the model computes.
    - Others: the model itself. Channels-last makes Johnson's network slower on the CPU (0.83x at 512 px, 0.91x at
      1024 px, measured with ``brushwork bench``: its fifteen instance normalisations are slow in that layout);
      Gatys optimises an image, with no network of its own to prepare.
    """
    if isinstance(model, MicroAST):
        return FastMicroAST.from_network(model, low_precision)
    if isinstance(model, (AdaIN, VariationalStyleTransfer)):
        return copy.deepcopy(model).to(memory_format=torch.channels_last)
    return model

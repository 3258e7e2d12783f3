"""Which device to compute on, and what it computes natively: asked by the API, the metrics, the benchmarks and
the fast engine alike, so it sits below all of them and imports none."""

from __future__ import annotations

import torch

from .errors import BrushworkError


def choose_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when it is there, else the CPU; ``cuda`` (or ``cuda:N``) must be there."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise BrushworkError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise BrushworkError("device cuda asked for, but PyTorch sees no CUDA GPU here; use --device cpu or auto")
    if chosen.type not in ("cpu", "cuda"):
        raise BrushworkError(f"unsupported device {device!r}; use auto, cpu or cuda")
    return chosen


def native_low_precision(device: torch.device) -> torch.dtype | None:
    """The half-precision type this device computes convolutions in natively, if any: float16 on CUDA GPUs,
    bfloat16 on CPUs with AVX-512 BF16 or AMX."""
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None

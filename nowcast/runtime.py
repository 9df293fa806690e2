"""Device, precision and thread selection shared by training, prediction and evaluation."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import ContextManager

import torch

log = logging.getLogger(__name__)


def select_device(name: str = "auto") -> torch.device:
    """``auto``: the local CUDA device when there is one (LOCAL_RANK under torchrun), else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` becomes bf16 on CUDA and fp32 on the CPU; an explicit choice is kept."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(device: torch.device, precision: str) -> ContextManager:
    """bf16 autocast on ``device`` for precision ``bf16``; a no-op context for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_threads(threads: int = 0) -> int:
    """Use ``threads`` CPU threads for torch (0: the cores this process may run on); returns the count."""
    if threads <= 0:
        try:
            threads = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads

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


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_threads(requested: int = 0) -> int:
    """torch threads for inference: ``requested`` if > 0; else ``$OMP_NUM_THREADS`` when set; else the
    free cores: the available cores minus the 1-minute load average, at least 1 (a second busy process
    on the same cores makes torch's threads wait on each other: ``docs/performance.md``).
    """
    if requested > 0:
        return int(requested)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cores = available_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return max(1, min(cores, int(cores - load + 0.5)))


def set_threads(threads: int = 0) -> int:
    """Use ``threads`` CPU threads for torch (0: all available cores); returns the count."""
    threads = threads if threads > 0 else available_cores()
    torch.set_num_threads(threads)
    return threads

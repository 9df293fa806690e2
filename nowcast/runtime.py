"""Device, precision, thread and process-group selection shared by training, prediction and evaluation.

torch is imported by the functions that need it, not by this module: ``predict`` settles its CPU
threads (``cpu_threads``) and starts the motion estimate before torch has loaded.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ContextManager

from nowcast.errors import NowcastError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def select_device(name: str = "auto") -> torch.device:
    """``auto``: the local CUDA device when there is one, else the CPU. ``cuda`` without an index is the
    local one too (LOCAL_RANK under torchrun, else 0); ``cuda:N`` is taken as given.

    Raises NowcastError (exit 2) for a name torch does not know, or CUDA asked for where there is none.
    """
    import torch

    local = int(os.environ.get("LOCAL_RANK", 0))
    if name == "auto":
        return torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise NowcastError(f"--device {name}: expected auto, cpu, cuda or cuda:N, found {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise NowcastError(
                f"--device {name}: expected a CUDA GPU, found none (torch {torch.__version__}); use --device cpu"
            )
        if device.index is None:
            device = torch.device("cuda", local)
        if device.index >= torch.cuda.device_count():
            raise NowcastError(
                f"--device {name}: expected one of {torch.cuda.device_count()} CUDA devices, found index {device.index}"
            )
    return device


@dataclass(frozen=True)
class DistInfo:
    """This process's place among the ``torchrun`` processes (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    distributed: bool = False
    """In a process group (under torchrun, even with one process): the model is wrapped in DDP."""

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes logs, checkpoints and reports."""
        return self.rank == 0


def setup_distributed(device: torch.device) -> DistInfo:
    """Join the process group when started by torchrun (even ``--nproc_per_node 1``, so that one GPU
    exercises the DDP path) or with WORLD_SIZE > 1: NCCL on CUDA, gloo on the CPU.

    On CUDA the process's current device is set to ``device`` first, as NCCL collectives expect.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        return DistInfo()
    import torch
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), distributed=True)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` becomes bf16 on CUDA and fp32 on the CPU; an explicit choice is kept."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(device: torch.device, precision: str) -> ContextManager:
    """bf16 autocast on ``device`` for precision ``bf16``; a no-op context for fp32."""
    if precision == "bf16":
        import torch

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
    import torch

    threads = threads if threads > 0 else available_cores()
    torch.set_num_threads(threads)
    return threads


PROGRESS_SIZE = (80, 20)
"""Columns and rows of a progress bar's terminal when it reports 0 (a pty whose window size was never set)."""


def progress_bar(total: int, unit: str, initial: int = 0) -> Any:
    """A tqdm bar on stderr, sized to the terminal. A terminal that reports a size of 0 (a pty whose window
    size was never set, as under some schedulers and ``ssh -T`` wrappers) is taken as ``PROGRESS_SIZE``:
    tqdm's own sizing would then draw nothing at all (it places the bar below the last of 0 rows)."""
    import sys

    from tqdm import tqdm

    try:
        size = os.get_terminal_size(sys.stderr.fileno())
        columns, rows = size.columns, size.lines
    except (OSError, ValueError):
        columns, rows = 0, 0
    sizing: dict[str, Any] = {"dynamic_ncols": True}
    if columns <= 0 or rows <= 0:
        sizing = {"ncols": columns or PROGRESS_SIZE[0], "nrows": rows or PROGRESS_SIZE[1]}
    return tqdm(total=total, initial=initial, unit=unit, file=sys.stderr, **sizing)

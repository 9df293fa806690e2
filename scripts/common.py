"""What the scripts (and the tests that need real rain) share: the repository, the real radar events, the CPU."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import xarray as xr

REPO = Path(__file__).resolve().parents[1]
"""The repository root."""
RADAR_DIR = Path(os.environ.get("NOWCAST_RADAR_DIR", REPO.parent / "shared" / "data" / "radar"))
"""The real radar events (``../shared/data/radar`` beside the clone, or ``$NOWCAST_RADAR_DIR``); a user's
clone does not have them, so whatever needs them checks ``RADAR_DIR.is_dir()`` first."""


def cpu_summary() -> str:
    """The CPU's model name, core count and widest vector extension, stated next to every figure."""
    name = platform.processor() or "?"
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        name = next(
            (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), name
        )
        first = next((line for line in text.splitlines() if line.startswith("flags")), "")
        flags = "AVX-512" if "avx512f" in first else "AVX2" if "avx2" in first else "no AVX2"
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, {flags}"


def command_seconds(cmd: list[str], env: dict[str, str], cwd: Path = REPO, expect: int = 0) -> float:
    """Wall seconds of a whole command, from process start to exit; SystemExit (with its stderr) when its
    exit code is not ``expect``."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != expect:
        raise SystemExit(f"expected exit {expect}, found {proc.returncode}: {' '.join(cmd)}\n{proc.stderr}")
    return took


def frames_at(path: str | Path, t0: str) -> tuple[xr.DataArray, int]:
    """The segment of ``path`` (time, y, x) mm/h, read as nowcast reads it (``io.open_archive``: the rain
    variable, its units, the time step in ``attrs["time_step"]``), that holds forecast time ``t0``, and
    t0's index in it; SystemExit naming the file when no segment does."""
    import numpy as np

    from nowcast.io import open_archive

    when = np.datetime64(t0)
    for segment in open_archive([path], time_step=None).segments:
        hit = np.flatnonzero(segment.time.values == when)
        if hit.size:
            return segment, int(hit[0])
    raise SystemExit(f"{path}: expected the forecast time {t0} among the frames' times, found none")

"""What the scripts (and the tests that need real rain) share: the repository, the real radar events, the CPU."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

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

"""Benchmark: start-up cost of the commands, as ratios to a bare ``import torch`` measured in the same run.

Each figure is taken in a fresh interpreter, in rounds (one of each per round, so that a shared CPU
slows all of them alike), and the median over ``--repeat`` rounds is printed:

- import time (inside the interpreter) of ``nowcast.cli``, of ``nowcast.predict`` and of bare ``torch``;
- wall time of the whole ``python -m nowcast --version`` command;
- wall time of a ``predict`` refused for its input (a file with fewer frames than the shipped model
  needs): it reads the file and the checkpoint's stored config, and must not import torch;
- the interpreter alone (``python -c pass``), for reference.

``--before DIR`` also times the same refused ``predict`` with the ``nowcast`` package found in DIR
(e.g. ``git archive <commit> nowcast | tar -x -C DIR``), to compare with an earlier version.

    python -m scripts.bench.bench_startup [--repeat 3] [--before DIR]
"""

from __future__ import annotations

from scripts.common import REPO, command_seconds, cpu_summary

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

NEUTRAL = Path(tempfile.gettempdir())
"""Working directory of the commands: not the repository, whose ``nowcast`` would shadow ``--before``."""

IMPORT_TIME = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def _env(root: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _import_s(module: str, env: dict[str, str]) -> float:
    """Seconds to import ``module`` in a fresh interpreter (the interpreter's own start excluded)."""
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_TIME.format(module=module)],
        env=env,
        cwd=NEUTRAL,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def _wall_s(args: list[str], env: dict[str, str], expect: int) -> float:
    """Wall seconds of a whole command in a fresh interpreter; its exit code must be ``expect``."""
    return command_seconds([sys.executable, *args], env, NEUTRAL, expect)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before", type=Path, help="a directory holding an earlier nowcast package, to compare")
    args = parser.parse_args()

    env = _env(REPO)
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:
        short = Path(tmp) / "short.nc"
        subprocess.run(
            [sys.executable, "-m", "nowcast", "-q", "synth", str(short), "--frames", "3", "--size", "64", "64"],
            env=env,
            cwd=NEUTRAL,
            check=True,
        )
        refused = ["-m", "nowcast", "predict", str(short), "-o", str(Path(tmp) / "fc.nc")]
        figures: dict[str, tuple[str, object]] = {
            "interpreter alone (python -c pass)": ("wall", lambda: _wall_s(["-c", "pass"], env, 0)),
            "import torch": ("import", lambda: _import_s("torch", env)),
            "import nowcast.cli": ("import", lambda: _import_s("nowcast.cli", env)),
            "import nowcast.predict": ("import", lambda: _import_s("nowcast.predict", env)),
            "nowcast --version (whole command)": ("wall", lambda: _wall_s(["-m", "nowcast", "--version"], env, 0)),
            "nowcast predict, input refused (whole command)": ("wall", lambda: _wall_s(refused, env, 2)),
        }
        if args.before is not None:
            figures["  the same with the package in --before"] = (
                "wall",
                lambda: _wall_s(refused, _env(args.before), 2),
            )
        times: dict[str, list[float]] = {name: [] for name in figures}
        for k in range(args.repeat):
            for name, (_, run) in figures.items():
                times[name].append(run())  # type: ignore[operator]
            print(
                f"round {k + 1}: " + ", ".join(f"{n.split(' (')[0].strip()} {v[-1]:.2f} s" for n, v in times.items()),
                flush=True,
            )

    try:
        load = f"{os.getloadavg()[0]:.1f}"
    except OSError:
        load = "?"
    print(f"start-up benchmark: median of {args.repeat} rounds, each figure in a fresh interpreter")
    print(f"CPU: {cpu_summary()}; load average {load} at the end (a shared CPU slows everything: compare the ratios)")
    torch_s = statistics.median(times["import torch"])
    print(f"\n{'':48} {'median s':>9} {'min s':>7} {'/ import torch':>15}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:48} {med:9.2f} {min(values):7.2f} {med / torch_s:15.2f}")
    print("\nimport: time inside the interpreter; whole command: wall time from process start to exit.")


if __name__ == "__main__":
    main()

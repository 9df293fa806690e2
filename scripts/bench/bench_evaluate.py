"""Benchmark of ``nowcast evaluate`` on one radar event: wall time split by method, measured side by side.

Runs the whole command path (``evaluate_files``: open, rolling verification of the model, persistence
and pySTEPS extrapolation, reports and plots) on one 40-frame 640 x 710 event, 12 lead times,
stride 1, and prints the time per method and the two targets of issue #5:

- the model's share of the forecast time is no larger than the extrapolation baseline's;
- the whole run takes under 5 minutes on the 2-core development CPU.

Data: ``../shared/data/radar/mch_switzerland_20150515.nc`` when present, else a synthetic event of
the same shape (``nowcast.synth``). Model: ``--model CKPT``, default the shipped model, else a freshly
initialised ``configs/default.yaml`` model (the run says so: the timing is the same, the scores are not
meaningful). The number of input frames is the checkpoint's.

    python -m scripts.bench.bench_evaluate [--model CKPT] [--data FILE.nc] [--steps 12] [--stride 1] [--threads N]

A benchmark, not a test: on a shared machine the load average (printed) makes the figures noisy.
"""

from __future__ import annotations

from scripts.common import RADAR_DIR, REPO

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REAL = RADAR_DIR / "mch_switzerland_20150515.nc"


def _model(path: str | None, tmp: Path) -> tuple[Path, str]:
    """(checkpoint, description): the given one, the shipped one, or a fresh configs/default.yaml model."""
    import torch

    from nowcast.models.checkpoint import default_model_path, save_checkpoint
    from nowcast.config import load_config
    from nowcast.models.registry import build_model

    if path:
        return Path(path), f"{path}"
    if default_model_path().exists():
        return default_model_path(), f"the shipped model ({default_model_path()})"
    cfg = load_config(REPO / "configs" / "default.yaml")
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp / "fresh_default.pt", config=cfg, state_dict=build_model(cfg.model).state_dict())
    return (
        ckpt,
        "a freshly initialised configs/default.yaml model (no shipped model found; scores meaningless, timing valid)",
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="checkpoint (default: the shipped model, else a fresh configs/default.yaml model)")
    ap.add_argument("--data", help=f"radar file (default: {REAL.name} when present, else synthetic 40 x 640 x 710)")
    ap.add_argument("--steps", type=int, default=12, help="lead times")
    ap.add_argument("--stride", type=int, default=1, help="frames between forecast times")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: the free cores)")
    args = ap.parse_args()

    from nowcast.models.checkpoint import model_from_checkpoint
    from nowcast.verification.evaluate import EvaluateSettings, evaluate_files

    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_evaluate_") as tmp_name:
        tmp = Path(tmp_name)
        if args.data:
            data, what = Path(args.data), args.data
        elif REAL.exists():
            data, what = REAL, f"{REAL.name} (real MeteoSwiss event)"
        else:
            from nowcast.synth import write_synthetic

            data = write_synthetic(tmp / "synthetic.nc", frames=40, size=(640, 710), seed=0)
            what = "a synthetic 40 x 640 x 710 event (real file not found)"
        ckpt, model_what = _model(args.model, tmp)
        _, cfg, _ = model_from_checkpoint(ckpt)
        out = tmp / "report"
        tick = time.perf_counter()
        table = evaluate_files(
            [data],
            EvaluateSettings(
                model=ckpt,
                baselines=("persistence", "extrapolation"),
                steps=args.steps,
                stride=args.stride,
                out_dir=out,
                threads=args.threads,
            ),
        )
        total = time.perf_counter() - tick
        summary = json.loads((out / "summary.json").read_text())
    load1 = os.getloadavg()

    wall, cpu = summary["wall_time_s"], summary["cpu_time_s"]
    threads = summary["settings"]["threads"]
    n = summary["n_cases"]
    methods = summary["methods"]
    forecast_total = sum(wall[m] for m in methods)
    print(f"bench_evaluate: {what}")
    print(f"  model: {model_what}")
    print(
        f"  {cfg.data.in_frames} frames in, {args.steps} lead times, stride {args.stride}: {n} forecast times; "
        f"torch threads {threads}, {os.cpu_count()} CPUs, load average {load0[0]:.1f} before, {load1[0]:.1f} after"
    )
    print(f"  {'part':<16}{'wall (s)':>10}{'per case (s)':>14}{'share of forecasts':>20}{'CPU (s)':>10}")
    for m in methods:
        print(f"  {m:<16}{wall[m]:>10.1f}{wall[m] / n:>14.3f}{wall[m] / forecast_total:>19.0%}{cpu[m]:>11.1f}")
    for part in ("read", "scoring"):
        print(f"  {part:<16}{wall[part]:>10.1f}{wall[part] / n:>14.3f}{'':>20}{cpu[part]:>10.1f}")
    rest = total - sum(wall.values())
    print(f"  {'open+reports':<16}{rest:>10.1f}")
    print(f"  {'total':<16}{total:>10.1f}")
    ratio = wall["model"] / max(wall["extrapolation"], 1e-9)
    ok_ratio, ok_total = ratio <= 1.0, total < 300.0
    print(f"  target: model / extrapolation = {ratio:.2f} (<= 1): {'met' if ok_ratio else 'MISSED'}")
    print(f"  target: whole run {total:.0f} s (< 300 s): {'met' if ok_total else 'MISSED'}")
    print()
    print(table.split("\nreports:")[0])  # the report directory was temporary
    return 0


if __name__ == "__main__":
    sys.exit(main())

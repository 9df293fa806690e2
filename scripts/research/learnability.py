"""Does the learned correction learn when the data carry a signal? The default recipe on synthetic growth.

Synthetic rain with growth and decay that the frames predict but extrapolation cannot forecast
(``nowcast synth --growth orographic``: rain enhanced up to x5 over fixed hills, different hills in every
file; or ``--growth trend``: every cell strengthens or weakens steadily through its life) trains
``configs/default.yaml`` as a user would (``nowcast train --config default``); the model is
then scored with ``nowcast evaluate`` on a sequence from a seed it never saw, beside S-PROG,
extrapolation and persistence. Prints the mean CSI at 1 mm/h over the leads up to 60 minutes and the
ratio to S-PROG's (the issue's target: at least 1.10). Resumable: run it again to continue the training.

    python -m scripts.research.learnability [--out runs/learnability] [--steps 600] [--files 8] [--threads 2]
        [--growth orographic|trend] [--wind 1] [--run run] [--set KEY=VALUE ...] [--ceiling]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import xarray as xr

from nowcast.verification.metrics import accumulate, compute, init_scores
from scripts.common import cpu_summary

SIZE = 256
FRAMES = 96
TEST_SEED = 999


def _nowcast(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "nowcast", *args], check=True)


def _archive(out: Path, n_files: int, wind: float, growth: str = "orographic") -> tuple[list[Path], Path]:
    """Training files (seeds 100..) and the test file (seed ``TEST_SEED``) of one ``growth``, made once."""
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    files = []
    for seed in [*range(100, 100 + n_files), TEST_SEED]:
        path = data / f"{growth}_{seed}.nc"
        if not path.exists():
            frames = 48 if seed == TEST_SEED else FRAMES
            _nowcast("-q", "synth", str(path), "--growth", growth, "--frames", str(frames), "--size", str(SIZE),
                     str(SIZE), "--seed", str(seed), "--wind-scale", str(wind))  # fmt: skip
        files.append(path)
    return files[:-1], files[-1]


def mean_csi(metrics_csv: Path, threshold: float = 1.0, max_lead: float = 60.0) -> dict[str, float]:
    """Mean CSI at ``threshold`` over leads up to ``max_lead`` minutes, per method, from ``metrics.csv``."""
    values: dict[str, list[float]] = defaultdict(list)
    with open(metrics_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["score"] == "CSI" and float(row["threshold"]) == threshold and float(row["lead_min"]) <= max_lead:
                values[row["method"]].append(float(row["value"]))
    return {m: sum(v) / len(v) for m, v in values.items()}


def matched_ceiling(path: Path, in_frames: int = 6, leads: int = 12, stride: int = 6) -> tuple[float, float]:
    """Mean CSI at 1 mm/h of two oracles on ``path``'s cases (forecast times every ``stride`` frames).

    The first is the observed future itself, given the last observation's distribution of rain rates
    (each future frame's ranks kept, its values replaced by the last frame's sorted values): the best any
    forecast can do under the recipe's probability matching. The second is persistence, for reference.
    """
    with xr.open_dataset(path) as ds:
        x = ds["rainfall_rate"].values.astype(np.float32)  # (time, y, x), mm/h
    oracle, persistence = init_scores(leads, [1.0]), init_scores(leads, [1.0])
    for t0 in range(in_frames - 1, x.shape[0] - leads, stride):
        last, future = x[t0], x[t0 + 1 : t0 + 1 + leads]
        ranks = np.argsort(future.reshape(leads, -1), axis=1, kind="stable")
        matched = np.empty_like(future.reshape(leads, -1))
        np.put_along_axis(matched, ranks, np.sort(last.ravel())[None], axis=1)
        accumulate(oracle, matched.reshape(future.shape), future)
        accumulate(persistence, np.broadcast_to(last, future.shape), future)
    return float(np.nanmean(compute(oracle)["CSI"])), float(np.nanmean(compute(persistence)["CSI"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/learnability"))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--growth", default="orographic", choices=("orographic", "trend"), help="--growth of the files")
    ap.add_argument("--wind", type=float, default=1.0, help="--wind-scale of the synthetic files")
    ap.add_argument("--run", default="run", help="run directory's name in --out (the archive and motion are shared)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a change to the recipe")
    ap.add_argument("--ceiling", action="store_true", help="only print the matched oracle's ceiling on the test file")
    args = ap.parse_args()
    if args.ceiling:
        test_file = _archive(args.out, args.files, args.wind, args.growth)[1]
        ceiling, persistence = matched_ceiling(test_file)
        print(f"matched oracle, persistence: {ceiling:.3f}, {persistence:.3f}")
        return
    train_files, test_file = _archive(args.out, args.files, args.wind, args.growth)
    run = args.out / args.run
    sets = [
        *args.set,
        f"data.files=[{','.join(map(str, train_files))}]",
        f"train.steps={args.steps}",
        "train.val_every=200",
        f"data.cache_dir={args.out / 'motion'}",
    ]
    if (run / "last.pt").exists():
        _nowcast(
            "train", "--resume", str(run), *[x for s in sets for x in ("--set", s)], "--threads", str(args.threads)
        )
    else:
        _nowcast("train", "--config", "default", "--run-dir", str(run), *[x for s in sets for x in ("--set", s)],
                 "--threads", str(args.threads))  # fmt: skip
    ev = args.out / ("eval" if args.run == "run" else f"eval-{args.run}")
    _nowcast("evaluate", str(test_file), "--model", str(run / "model.pt"), "--baselines",
             "persistence,extrapolation,sprog", "--out", str(ev), "--threads", str(args.threads))  # fmt: skip
    csi = mean_csi(ev / "metrics.csv")
    print(
        f"machine: {cpu_summary()}; {args.steps} steps on {len(train_files)} files of {FRAMES} x {SIZE}^2, wind x{args.wind:g}, growth {args.growth}"
        + "".join(f"; {s}" for s in args.set)
    )
    for method, value in sorted(csi.items(), key=lambda kv: -kv[1]):
        print(f"  {method:14} mean CSI >= 1 mm/h, leads <= 60 min: {value:.3f}")
    ceiling, persistence = matched_ceiling(test_file)
    print(f"  ceiling under the last frame's distribution (the observed future, matched): {ceiling:.3f}"
          f" = {ceiling / csi['sprog']:.3f} x S-PROG (persistence on the same cases: {persistence:.3f})")  # fmt: skip
    ratio = csi["model"] / csi["sprog"]
    print(f"model / S-PROG: {ratio:.3f} (target >= 1.10: {'met' if ratio >= 1.10 else 'NOT met'})")


if __name__ == "__main__":
    main()

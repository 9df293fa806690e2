"""Benchmark: a Lagrangian training step against an Eulerian one of the same size (issue 12: <= 1.3x).

Side by side in one run, on the same synthetic windows (``nowcast.synth``, ``--size`` pixels, the
frames of ``configs/lagrangian.yaml``), on ``--threads`` CPU threads:

- the one-off cost of a window's motion (Lucas-Kanade), paid once per forecast time and cached in
  ``data.cache_dir``;
- a training step (a batch of ``TrainWindows`` items from frames in memory, warped per batch by
  ``training_batch``, forward, masked balanced loss, backward, AdamW) of the
  Lagrangian recipe r1 (residual head on the last frame, step channel), of the shipped model's
  settings (v6: the residual added to the torch S-PROG of ``nowcast.nowcasts.cascade``, smoothed by
  sigma = 8 px, matched in the Lagrangian frame), and of the same network in the Eulerian frame (no
  residual, no step channel), interleaved, best of ``--repeat``.

Prints the times and the ratios Lagrangian / Eulerian. The machine may be shared: compare the ratio.

    python -m scripts.bench.bench_lagrangian [--size 128] [--batch 8] [--threads 2] [--repeat 5]
"""

from __future__ import annotations

from scripts.common import REPO

import argparse
import tempfile
import time
from pathlib import Path

import torch

from nowcast.config import load_config
from nowcast.io import open_archive
from nowcast.models.registry import build_model
from nowcast.motion import motion_field
from nowcast.synth import write_synthetic
from nowcast.training.losses import HKO7_THRESHOLDS, HKO7_WEIGHTS, masked_loss
from nowcast.training.windows import FrameSource, SampleSettings, TrainWindows, Window, training_batch
from nowcast.transforms import Transform


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lag_cfg = load_config(REPO / "configs" / "lagrangian.yaml", [f"data.crop={args.size}"])
    v6_cfg = load_config(
        REPO / "configs" / "lagrangian.yaml",
        [
            f"data.crop={args.size}",
            "model.base=sprog",
            "model.residual_smoothing=8",
            "model.probmatching=cdf_lagrangian",
        ],
    )
    eul_cfg = load_config(
        REPO / "configs" / "lagrangian.yaml",
        [
            f"data.crop={args.size}",
            "model.frame=eulerian",
            "model.residual=false",
            "model.step_input=false",
            "data.time_step=300",
        ],
    )
    d = lag_cfg.data
    n = d.in_frames + d.out_frames
    tr = Transform.from_config(lag_cfg)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_synthetic(Path(tmp) / "s.nc", frames=n + 4, size=(args.size, args.size), seed=3)
        source = FrameSource(open_archive([path], time_step=None, scan=False).segments, preload=True)
    prep = []
    for start in range(4):
        t0 = time.perf_counter()
        motion_field(source.read(0, start, start + d.in_frames))
        prep.append(time.perf_counter() - t0)
    windows = [Window(0, s) for s in range(4)]
    lag_settings = SampleSettings(d.in_frames, d.out_frames, args.size, margin=d.margin, lagrangian=True)
    eul_settings = SampleSettings(d.in_frames, d.out_frames, args.size)
    lag_ds = TrainWindows(source, windows, lag_settings, tr)
    for i in range(4):
        lag_ds[(i, i)]  # the motion of each window, computed once here and kept in memory (as a warm cache)
    sets = {
        "lagrangian": (lag_cfg, lag_ds),
        "lagrangian-v6": (v6_cfg, lag_ds),
        "eulerian": (eul_cfg, TrainWindows(source, windows, eul_settings, tr)),
    }
    levels = torch.tensor([tr.threshold(r) for r in HKO7_THRESHOLDS])
    weights = torch.tensor(HKO7_WEIGHTS)
    runners = {}
    for name, (cfg, ds) in sets.items():
        torch.manual_seed(0)
        model = build_model(cfg.model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(model=model, opt=opt, ds=ds) -> None:
            items = [ds[(i % len(ds), i)] for i in range(args.batch)]
            block, velocity, dt, aug = (torch.stack(v) for v in zip(*items))
            x, y, _ = training_batch(block, velocity, aug, ds.settings)
            loss = masked_loss(model(x, d.out_frames, dt), y, "mse+mae", weights, levels)
            opt.zero_grad()
            loss.backward()
            opt.step()

        step()  # warm-up
        runners[name] = step
    best = {name: float("inf") for name in runners}
    for _ in range(args.repeat):
        for name, fn in runners.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    print(
        f"{args.size}x{args.size} crops, batch {args.batch}, {d.in_frames}+{d.out_frames} frames, {args.threads} threads, "
        f"CPU {torch.backends.cpu.get_cpu_capability()}"
    )
    print(f"motion of a window (once per forecast time, cached): {min(prep):.3f} s per {args.size}^2 window")
    for name, t in best.items():
        print(f"training step, {name:13}: {t:.3f} s")
    for name in ("lagrangian", "lagrangian-v6"):
        ratio = best[name] / best["eulerian"]
        print(f"{name} / eulerian step: {ratio:.2f}  (target <= 1.3: {'ok' if ratio <= 1.3 else 'MISSED'})")


if __name__ == "__main__":
    main()

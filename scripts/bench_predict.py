"""Benchmark: ``nowcast predict`` against pySTEPS Lucas-Kanade + semi-Lagrangian extrapolation.

On each grid (512 x 512 and 765 x 700; the real radar files of ../shared/data/radar when present, else
synthetic rain from ``nowcast.synth``), forecasting ``--steps`` (12) frames ahead on ``--threads`` (2)
CPU threads, it times, side by side in one run:

(a) the whole ``python -m nowcast predict`` command in a subprocess, from process start to the file
    written (imports, checkpoint, reading and checking the input, forward pass, CF NetCDF);
(a0) of that, the interpreter start and the imports alone (``python -c "import nowcast.predict"``);
(b) the model's forward pass alone (``nowcast.predict.forecast_array``: transform, model, inverse) in
    fp32, and for information under bf16 autocast where oneDNN supports bf16 on this CPU (elsewhere
    torch falls back to a reference convolution some 50x slower, so it is skipped);
(c) pySTEPS: Lucas-Kanade motion (``pysteps.motion.get_method("LK")``) on the last 3 frames in dBR and
    semi-Lagrangian extrapolation (``pysteps.extrapolation.get_method("semilagrangian")``) of the last
    frame to the same lead times, when pysteps is installed (OpenCV also on ``--threads`` threads);

and prints each time (the best of ``--repeat``), the ratios and the targets: (a) under 10 s on
512 x 512; (b) no slower than (c). It also times ``nowcast --help`` (target under 1.5 s) and checks that
importing ``nowcast.cli`` loads none of torch, numpy, xarray, dask, netCDF4, pandas, matplotlib.

The model is ``--model`` (default: the shipped ``nowcast/models/default.pt``); without one, a freshly
initialised model of configs/default.yaml (same architecture, so the same speed) is used, and said so.
The CPU may be shared: figures are noisy, compare ratios measured in the same run.

    python scripts/bench_predict.py [--model CKPT] [--threads 2] [--steps 12] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "radar"
GRIDS = {  # grid: (real file at the model's 300 s step, synthetic size)
    "512x512": ("opera_cirrus_europe_20241126.nc", (512, 512)),
    "765x700": ("knmi_netherlands_20100826.nc", (765, 700)),
}
HEAVY = ("torch", "numpy", "xarray", "dask", "netCDF4", "pandas", "matplotlib")


def _best(times: list[float]) -> str:
    return f"{min(times):6.2f} s" + (f" (median {statistics.median(times):.2f})" if len(times) > 1 else "")


def _env(threads: int) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _wall(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    return took


def _model(path: str | None, work: Path) -> tuple[Path, str]:
    import torch

    from nowcast.checkpoint import default_model_path, save_checkpoint
    from nowcast.config import load_config
    from nowcast.model import build_model

    if path:
        return Path(path), f"{path}"
    shipped = default_model_path()
    if shipped.is_file():
        return shipped, f"the shipped model {shipped}"
    cfg = load_config(REPO / "configs" / "default.yaml")
    torch.manual_seed(0)
    ckpt = save_checkpoint(work / "default-init.pt", config=cfg, state_dict=build_model(cfg.model).state_dict())
    return ckpt, f"NO shipped model at {shipped}: a freshly initialised model of configs/default.yaml"


def _input(grid: str, work: Path, frames: int) -> tuple[Path, str]:
    from nowcast.synth import write_synthetic

    name, size = GRIDS[grid]
    if (REAL / name).is_file():
        return REAL / name, f"real: {name}"
    path = write_synthetic(work / f"synth_{grid}.nc", frames=frames, size=size, seed=1)
    return path, f"synthetic ({frames} frames, nowcast.synth)"


def _pysteps(frames: np.ndarray, steps: int, threads: int) -> tuple[list[float], str]:
    """Best-of times of LK motion + semi-Lagrangian extrapolation, or why it could not run."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pysteps prints a banner on import
            import pysteps  # noqa: F401
            from pysteps import extrapolation, motion
            from pysteps.utils import transformation
    except ImportError as exc:
        return [], f"pysteps not installed ({exc}); pip install 'nowcast[baselines]'"
    with contextlib.suppress(ImportError):
        import cv2

        cv2.setNumThreads(threads)
    lk = motion.get_method("LK")
    sl = extrapolation.get_method("semilagrangian")

    def run() -> np.ndarray:
        r, _ = transformation.dB_transform(frames[-3:].astype(np.float64), threshold=0.1, zerovalue=-15.0)
        r[~np.isfinite(r)] = -15.0
        velocity = lk(r)
        return sl(np.nan_to_num(frames[-1], nan=0.0), velocity, steps)  # it refuses NaN (no coverage)

    out = run()  # warm-up
    assert out.shape == (steps, *frames.shape[-2:])
    times = []
    for _ in range(3):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times, ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="checkpoint (default: the shipped model, else a fresh default.yaml model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--grids", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    args = parser.parse_args()

    import torch

    from nowcast.io import open_radar
    from nowcast.predict import forecast_array, load_model
    from nowcast.transforms import Transform

    torch.set_num_threads(args.threads)
    env = _env(args.threads)
    bf16_ok = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    print(f"nowcast predict benchmark: {args.threads} threads, {args.steps} steps, best of {args.repeat}")
    print(
        f"CPU: {os.cpu_count()} cores, {torch.backends.cpu.get_cpu_capability()}, oneDNN bf16: {bf16_ok}, "
        f"load average {os.getloadavg()[0]:.1f} at start (shared: figures are noisy)"
    )

    # nowcast --help and what importing the CLI loads
    help_times = [_wall([sys.executable, "-m", "nowcast", "--help"], env) for _ in range(3)]
    probe = "import sys, nowcast.cli; print(','.join(m for m in %r if m in sys.modules))" % (HEAVY,)
    loaded = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True).stdout.strip()
    ok = "ok" if min(help_times) < 1.5 else "MISSED"
    print(f"nowcast --help: {_best(help_times)}   target < 1.5 s: {ok}; heavy modules imported by nowcast.cli: {loaded or 'none'}")
    imports = [_wall([sys.executable, "-c", "import nowcast.predict"], env) for _ in range(args.repeat)]
    print(f"(a0) interpreter + imports of nowcast.predict (torch, xarray, netCDF4): {_best(imports)}")

    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        work = Path(tmp)
        ckpt, what = _model(args.model, work)
        m = load_model(ckpt)
        cfg = m.config
        n_params = sum(p.numel() for p in m.model.parameters())
        print(
            f"model: {what}\n       '{cfg.model.name}', patch {cfg.model.patch}, hidden {list(cfg.model.hidden)}, "
            f"downsample {list(cfg.model.downsample)}, {n_params:,} parameters, {cfg.data.in_frames} frames in, "
            f"{cfg.data.time_step} s"
        )
        transform = Transform.from_config(cfg)
        rows = []
        for grid in args.grids:
            src, origin = _input(grid, work, frames=cfg.data.in_frames + 2)
            print(f"\n[{grid}] input {src} ({origin})")
            out = work / f"fc_{grid}.nc"
            cmd = [sys.executable, "-m", "nowcast", "-q", "predict", str(src), "--model", str(ckpt),
                   "--steps", str(args.steps), "-o", str(out)]  # fmt: skip
            a = [_wall(cmd, env) for _ in range(args.repeat)]
            assert out.is_file()
            print(f"(a) nowcast predict command:      {_best(a)}")

            rate = open_radar(src, time_step=cfg.data.time_step, variable=cfg.data.variable, units=cfg.data.units)
            frames = np.asarray(rate.isel(time=slice(-cfg.data.in_frames, None)).values, dtype=np.float32)
            x = frames[None, :, None]  # (1, T, 1, H, W)
            b = {"bf16": [float("nan")]}
            for precision in ("fp32", "bf16") if bf16_ok else ("fp32",):
                forecast_array(m.model, transform, x, args.steps, precision=precision)  # warm-up
                times = []
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    forecast_array(m.model, transform, x, args.steps, precision=precision)
                    times.append(time.perf_counter() - start)
                b[precision] = times
            print(f"(b) forward pass, fp32:           {_best(b['fp32'])}")
            if bf16_ok:
                print(f"    forward pass, bf16 autocast:  {_best(b['bf16'])}")
            else:
                print("    forward pass, bf16 autocast:  skipped: oneDNN has no bf16 on this CPU (slow fallback, ~50x)")
            c, why = _pysteps(frames, args.steps, args.threads)
            print(f"(c) pySTEPS LK + semi-Lagrangian: {_best(c)}" if c else f"(c) skipped: {why}")
            rows.append((grid, min(a), min(b["fp32"]), min(b["bf16"]), min(c) if c else float("nan")))

    print("\nsummary (best times, s)")
    print(f"{'grid':9} {'(a) command':>12} {'(b) fp32':>9} {'(b) bf16':>9} {'(c) pySTEPS':>12} {'(b)/(c)':>8} {'(a) < 10 s':>11} {'(b) <= (c)':>11}")
    for grid, a, b32, b16, c in rows:
        ratio = b32 / c if c == c else float("nan")
        target_a = ("ok" if a < 10 else "MISSED") if grid == "512x512" else "-"
        target_b = "-" if c != c else ("ok" if b32 <= c else "MISSED")
        print(f"{grid:9} {a:12.2f} {b32:9.2f} {b16:9.2f} {c:12.2f} {ratio:8.2f} {target_a:>11} {target_b:>11}")
    print(f"(b)/(c) < 1: the ConvLSTM forward pass is faster than pySTEPS extrapolation on the same input.")


if __name__ == "__main__":
    main()

"""Benchmark: the whole ``nowcast predict`` command against whole pySTEPS commands (LK + extrapolation,
LK + S-PROG) on the same file.

On each grid (512 x 512 and 765 x 700; the real radar files of ../shared/data/radar when present, else
synthetic rain from ``nowcast.synth``), forecasting ``--steps`` (12) frames ahead on ``--threads`` (2)
CPU threads, it times, side by side in one run:

(a) the whole ``python -m nowcast predict`` command in a subprocess, from process start to the file
    written (imports, checkpoint, reading and checking the input, motion, warps, network, CF NetCDF),
    and, in this process, its parts: reading, motion (Lucas-Kanade), warping (inputs into the frame
    of the last observation, forecasts out of it), the network, writing;
(a0) the interpreter start and the imports alone (``python -c "import nowcast.predict"``; torch is imported
    only when the model is loaded, see scripts/bench/bench_startup.py);
(c) minimal whole pySTEPS commands in a subprocess (``PYSTEPS_COMMAND``): read the file, LK motion on
    the last 3 frames in dBR, then semi-Lagrangian extrapolation or S-PROG (6 levels, AR(2)), write
    a NetCDF;

and prints each time (the best of ``--repeat``), the ratios and the target of issue 12: (a) no slower
than the whole pySTEPS S-PROG command. It also times ``nowcast --help`` and checks that importing
``nowcast.cli`` loads none of torch, numpy, xarray, dask, netCDF4, pandas, matplotlib.

The model is ``--model`` (default: the shipped ``nowcast/models/weights/default.pt``); without one, a freshly
initialised model of configs/default.yaml is used, and said so. The CPU may be shared: figures are
noisy, compare ratios measured in the same run.

    python -m scripts.bench.bench_predict [--model CKPT] [--threads 2] [--steps 12] [--repeat 3]
"""

from __future__ import annotations

from scripts.common import RADAR_DIR, REPO, command_seconds

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REAL = RADAR_DIR
GRIDS = {  # grid: (real file at the model's 300 s step, synthetic size)
    "512x512": ("opera_cirrus_europe_20241126.nc", (512, 512)),
    "765x700": ("knmi_netherlands_20100826.nc", (765, 700)),
}
HEAVY = ("torch", "numpy", "xarray", "dask", "netCDF4", "pandas", "matplotlib")


def _best(times: list[float]) -> str:
    return f"{min(times):6.2f} s" + (f" (median {statistics.median(times):.2f})" if len(times) > 1 else "")


def _env(threads: int) -> dict[str, str]:
    return dict(
        os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    )


def _model(path: str | None, work: Path) -> tuple[Path, str]:
    import torch

    from nowcast.models.checkpoint import default_model_path, save_checkpoint
    from nowcast.config import load_config
    from nowcast.models.registry import build_model

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


PYSTEPS_COMMAND = """
import sys, contextlib, io
import numpy as np, xarray as xr
with contextlib.redirect_stdout(io.StringIO()):
    from pysteps import extrapolation, motion, nowcasts
    from pysteps.utils import transformation
src, out, steps, method = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with xr.open_dataset(src) as ds:
    r = ds["rainfall_rate"].isel(time=slice(-3, None)).values.astype(np.float64)
    grid = {"y": ds["y"].values, "x": ds["x"].values}
dbr, _ = transformation.dB_transform(r, threshold=0.1, zerovalue=-15.0)
dbr[~np.isfinite(dbr)] = -15.0
velocity = motion.get_method("LK")(dbr)
if method == "extrapolation":
    fc = extrapolation.get_method("semilagrangian")(np.nan_to_num(r[-1]), velocity, steps)
else:
    with contextlib.redirect_stdout(io.StringIO()):
        fc = nowcasts.get_method("sprog")(dbr, velocity, steps, precip_thr=-10.0, n_cascade_levels=6, ar_order=2)
    fc = np.where(fc >= -10.0, 10.0 ** (fc / 10.0), 0.0)
xr.Dataset({"rainfall_rate": (("time", "y", "x"), fc.astype(np.float32))}, coords=grid).to_netcdf(out)
"""
"""A minimal whole pySTEPS command: read the last 3 frames, LK motion in dBR, extrapolation or S-PROG
(6 levels, AR(2)), write a NetCDF: what an operator would otherwise run from cron."""


def _breakdown(m, src: Path, steps: int, out: Path, repeat: int) -> dict[str, float]:
    """Best-of seconds of each part of a forecast, in this process: reading and checking the input,
    motion (Lucas-Kanade), warping (inputs in, forecasts out), the network, writing the NetCDF."""
    import torch

    from nowcast.io import open_radar, write_forecast
    from nowcast.forecast import forecast
    from nowcast.io import data_time_step
    from nowcast.motion import from_lagrangian, motion_field, to_lagrangian
    from nowcast.transforms import Transform

    cfg = m.config
    d = cfg.data
    step = d.time_step or data_time_step([str(src)], d.variable)
    best: dict[str, float] = {}

    def timed(name: str, fn):
        start = time.perf_counter()
        result = fn()
        took = time.perf_counter() - start
        best[name] = min(best.get(name, float("inf")), took)
        return result

    transform = Transform.from_config(cfg)
    for _ in range(repeat):
        rate = timed("read", lambda: open_radar(src, time_step=step, variable=d.variable, units=d.units))
        frames = timed("read", lambda: np.asarray(rate.isel(time=slice(-d.in_frames, None)).values, np.float32))
        x = torch.from_numpy(transform.forward(frames[None, :, None]))
        lagrangian = cfg.model.frame == "lagrangian"
        if lagrangian:
            from nowcast.motion.flow import clear_motion_cache

            clear_motion_cache()
            v = torch.from_numpy(timed("motion", lambda: motion_field(frames)))[None]
            x = timed("warping", lambda: to_lagrangian(x, v))
        x = torch.nan_to_num(x, nan=0.0)
        with torch.inference_mode():
            y = timed("network", lambda: m.model(x, steps, float(step), batched_input=False))
        if lagrangian:
            pred = torch.from_numpy(transform.inverse(y.numpy()))
            timed("warping", lambda: from_lagrangian(pred, v))
        fc = forecast(rate, m.model, dataclasses_replace_step(cfg, step), steps=steps)
        timed("write", lambda: write_forecast(fc, out, global_attrs={"title": "bench"}, packed=True))
    return best


def dataclasses_replace_step(cfg, step: int):
    """``cfg`` at the data's step (models trained for any step have ``data.time_step`` 0)."""
    import dataclasses

    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, time_step=int(step)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="checkpoint (default: the shipped model, else a fresh default.yaml model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--grids", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    args = parser.parse_args()

    import torch

    from nowcast.models.checkpoint import load_model

    torch.set_num_threads(args.threads)
    env = _env(args.threads)
    bf16_ok = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    print(f"nowcast predict benchmark: {args.threads} threads, {args.steps} steps, best of {args.repeat}")
    print(
        f"CPU: {os.cpu_count()} cores, {torch.backends.cpu.get_cpu_capability()}, oneDNN bf16: {bf16_ok}, "
        f"load average {os.getloadavg()[0]:.1f} at start (shared: figures are noisy)"
    )

    # nowcast --help and what importing the CLI loads
    help_times = [command_seconds([sys.executable, "-m", "nowcast", "--help"], env) for _ in range(3)]
    probe = f"import sys, nowcast.cli; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True).stdout.strip()
    ok = "ok" if min(help_times) < 1.5 else "MISSED"
    print(
        f"nowcast --help: {_best(help_times)}   target < 1.5 s: {ok}; heavy modules imported by nowcast.cli: {loaded or 'none'}"
    )
    imports = [command_seconds([sys.executable, "-c", "import nowcast.predict"], env) for _ in range(args.repeat)]
    print(
        f"(a0) interpreter + imports of nowcast.predict (xarray, netCDF4; torch loads with the model): {_best(imports)}"
    )

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
        rows = []
        for grid in args.grids:
            src, origin = _input(grid, work, frames=cfg.data.in_frames + 2)
            print(f"\n[{grid}] input {src} ({origin})")
            out = work / f"fc_{grid}.nc"
            cmd = [
                sys.executable,
                "-m",
                "nowcast",
                "-q",
                "predict",
                str(src),
                "--model",
                str(ckpt),
                "--steps",
                str(args.steps),
                "-o",
                str(out),
            ]
            a = [command_seconds(cmd, env) for _ in range(args.repeat)]
            assert out.is_file()
            print(f"(a) nowcast predict command:      {_best(a)}")

            parts = _breakdown(m, src, args.steps, work / f"part_{grid}.nc", args.repeat)
            print("    of which, in process: " + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items()))
            c = {}
            for method in ("extrapolation", "sprog"):
                cmd = [
                    sys.executable,
                    "-c",
                    PYSTEPS_COMMAND,
                    str(src),
                    str(work / f"ps_{method}.nc"),
                    str(args.steps),
                    method,
                ]
                c[method] = [command_seconds(cmd, env) for _ in range(args.repeat)]
                print(f"(c) whole pySTEPS command, LK + {method}: {_best(c[method])}")
            rows.append((grid, min(a), parts, min(c["extrapolation"]), min(c["sprog"])))

    print("\nsummary (best times, s)")
    print(
        f"{'grid':9} {'(a) nowcast':>12} {'(c) LK+extrap':>14} {'(c) LK+S-PROG':>14} {'(a)/S-PROG':>11} {'target (a) <= S-PROG':>21}"
    )
    for grid, a, _parts, ce, cs in rows:
        print(f"{grid:9} {a:12.2f} {ce:14.2f} {cs:14.2f} {a / cs:11.2f} {'ok' if a <= cs else 'MISSED':>21}")
    print(
        "(a)/S-PROG < 1: the whole nowcast predict command is faster than a whole pySTEPS S-PROG command on the same file."
    )


if __name__ == "__main__":
    main()

"""Benchmark: per-forecast latency of the resident ``nowcast watch`` against whole commands (pySTEPS LK +
S-PROG, and a cold ``nowcast predict``) on the same frames.

A radar feed is simulated: synthetic rain (``nowcast.synth``, ``--size`` 512 x 512) is split into one
NetCDF file per frame. ``nowcast watch`` runs in a subprocess on an ``incoming/`` folder with the
shipped model, ``--threads`` threads and its default ``--poll`` and ``--settle`` (or those given).
Then ``--arrivals`` times, side by side:

(w) a new frame file lands in ``incoming/`` (written beside it, then renamed in, with a fresh mtime,
    as a feed writes it): the seconds until its forecast file exists, polled every 20 ms. This
    includes the watcher's poll interval and settle time, reading, the network and the write;
(c) a whole pySTEPS command (``bench_predict.PYSTEPS_COMMAND``: read, LK motion on the last 3 frames
    in dBR, S-PROG with 6 levels and AR(2), write a NetCDF) on one file holding the same window;
(p) the whole ``python -m nowcast predict`` command on the same frame files (the forecast's input
    window), with the same model, threads and lead times: interpreter start, imports, checkpoint,
    reading, the network, the write.

It prints each (median and min), the ratios (w)/(c) and (w)/(p), and the target of issue 29:
(w)/(c) at most 0.3. Where the watcher's time goes comes from its own log (run with ``-v``): the wait
from the file's arrival to the watcher's look, and the parts of the forecast (``predict``'s debug
line). The CPU may be shared: figures are noisy, the ratios are measured in one run.

    python -m scripts.bench.bench_watch [--arrivals 5] [--size 512 512] [--threads 2] [--poll P] [--settle S]
"""

from __future__ import annotations

from scripts.bench.bench_predict import PYSTEPS_COMMAND
from scripts.common import REPO, command_seconds, cpu_summary

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TEMPLATE = "fc_{reference_time:%Y%m%d%H%M}.nc"


def _frame_files(work: Path, frames: int, size: tuple[int, int]) -> list[tuple[Path, str]]:
    """One NetCDF per frame (the real schema, from nowcast.synth) in ``work/frames``, with each
    frame's forecast name; ``work/windows/upto_NNN.nc``: the last 3 frames up to frame NNN in one file
    (what the pySTEPS command reads)."""
    import xarray as xr

    from nowcast.synth import write_synthetic

    whole = write_synthetic(work / "whole.nc", frames=frames, size=size, seed=3)
    out = []
    (work / "frames").mkdir()
    (work / "windows").mkdir()
    with xr.open_dataset(whole, mask_and_scale=False, decode_times=False) as ds:
        import pandas as pd

        units = ds["time"].attrs["units"]
        for i in range(ds.sizes["time"]):
            one = ds.isel(time=[i])
            path = work / "frames" / f"radar_{i:03d}.nc"
            one.to_netcdf(path, encoding={v: {"zlib": True} for v in one.data_vars if one[v].ndim == 3})
            if i >= 2:
                last3 = ds.isel(time=slice(i - 2, i + 1))
                last3.to_netcdf(
                    work / "windows" / f"upto_{i:03d}.nc",
                    encoding={v: {"zlib": True} for v in last3.data_vars if last3[v].ndim == 3},
                )
            ref = pd.Timestamp(xr.coding.times.decode_cf_datetime(one["time"].values, units)[0])
            out.append((path, TEMPLATE.format(reference_time=ref.to_pydatetime())))
    return out


def _arrive(src: Path, incoming: Path) -> None:
    """Copy ``src`` into ``incoming`` as a feed does: a hidden temporary name, then a rename."""
    tmp = incoming / f".{src.name}.part"
    tmp.write_bytes(src.read_bytes())
    os.replace(tmp, incoming / src.name)


def _wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 600.0) -> float:
    start = time.perf_counter()
    while not path.exists():
        if proc.poll() is not None:
            raise SystemExit(f"the watcher exited ({proc.returncode}) before writing {path}")
        if time.perf_counter() - start > timeout_s:
            raise SystemExit(f"no forecast {path} after {timeout_s:g} s")
        time.sleep(0.02)
    return time.perf_counter() - start


PART = re.compile(r"(\w+) ([0-9.]+) s")
"""One part of the watcher's debug lines of where the time went: 'parts: wait 0.10 s, open 0.03 s (FILE)'
(taking a file) and 'parts: read 0.05 s, motion 0.40 s, network 1.20 s, write 0.15 s' (a forecast)."""


def _parts(log: list[str], last: int) -> dict[str, float]:
    """Median seconds of each part named in the watcher's debug lines (wait, open, read, motion, ...), over
    the ``last`` of each (the arrivals, not the files already there at start)."""
    seen: dict[str, list[float]] = {}
    for line in log:
        if "parts: " in line:
            for name, value in PART.findall(line.split("parts: ", 1)[1]):
                seen.setdefault(name, []).append(float(value))
    return {k: statistics.median(v[-last:]) for k, v in seen.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arrivals", type=int, default=5)
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--poll", type=float, default=None, help="the watcher's --poll (default: its own)")
    parser.add_argument("--settle", type=float, default=None, help="the watcher's --settle (default: its own)")
    args = parser.parse_args()

    from nowcast.models.checkpoint import default_model_path, read_config

    cfg = read_config(default_model_path())
    if cfg is None:
        raise SystemExit(f"no readable shipped model at {default_model_path()}")
    n_in = cfg.data.in_frames
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(args.threads),
        PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )

    with tempfile.TemporaryDirectory(prefix="bench_watch_") as tmp:
        work = Path(tmp)
        frames = _frame_files(work, n_in + args.arrivals, tuple(args.size))
        incoming, fc, cold = work / "incoming", work / "fc", work / "cold"
        incoming.mkdir()
        cold.mkdir()
        for path, _ in frames[: n_in - 1]:
            _arrive(path, incoming)
        cmd = [sys.executable, "-m", "nowcast", "-v", "watch", str(incoming / "*.nc"), "-o", str(fc / TEMPLATE)]
        cmd += ["--threads", str(args.threads), "--state", str(work / "state.json")]
        cmd += [] if args.poll is None else ["--poll", str(args.poll)]
        cmd += [] if args.settle is None else ["--settle", str(args.settle)]
        proc = subprocess.Popen(cmd, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        log: list[str] = []
        reader = threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
        reader.start()
        try:
            started = time.perf_counter()
            while not any("watching" in line for line in log):  # model loaded and warmed up
                if proc.poll() is not None or time.perf_counter() - started > 600:
                    raise SystemExit(f"the watcher did not start: {''.join(log)}")
                time.sleep(0.05)
            time.sleep(max(args.poll or 1.0, args.settle or 1.0) + 0.5)  # its first look at the files there
            w, c, p = [], [], []
            for k in range(args.arrivals):
                path, name = frames[n_in - 1 + k]
                os.utime(path)  # a file just written
                _arrive(path, incoming)
                w.append(_wait_for(fc / name, proc))
                window = [str(f) for f, _ in frames[k : n_in + k]]
                cold_cmd = [
                    sys.executable,
                    "-m",
                    "nowcast",
                    "-q",
                    "predict",
                    *window,
                    "--threads",
                    str(args.threads),
                    "-o",
                    str(cold / name),
                ]
                p.append(command_seconds(cold_cmd, env, work))
                window_file = work / "windows" / f"upto_{n_in - 1 + k:03d}.nc"
                steps = str(cfg.data.out_frames)
                sprog_cmd = [
                    sys.executable,
                    "-c",
                    PYSTEPS_COMMAND,
                    str(window_file),
                    str(cold / f"ps_{name}"),
                    steps,
                    "sprog",
                ]
                c.append(command_seconds(sprog_cmd, env, work))
                print(
                    f"arrival {k + 1}: watch {w[-1]:.2f} s, pySTEPS S-PROG {c[-1]:.2f} s, cold predict {p[-1]:.2f} s",
                    flush=True,
                )
        finally:
            proc.terminate()
            proc.wait(60)
            reader.join(5)

    forecast_s = [float(line.rsplit(" in ", 1)[1].split()[0]) for line in log if " INFO forecast from " in line]
    try:
        load = f"{os.getloadavg()[0]:.1f}"
    except OSError:
        load = "?"
    opts = " ".join(f"--{k} {v:g}" for k, v in (("poll", args.poll), ("settle", args.settle)) if v is not None)
    print(
        f"\nnowcast watch against whole commands: {args.size[0]} x {args.size[1]}, {cfg.data.out_frames} lead times, "
        f"model '{cfg.model.name}', {args.threads} thread(s), fp32, watcher {opts or 'with its default --poll/--settle'}"
    )
    print(f"CPU: {cpu_summary()}; load average {load} at the end (shared: compare the ratio)")
    med_w, med_p = statistics.median(w), statistics.median(p)
    print(f"(w) new file -> forecast written, resident watcher: median {med_w:.2f} s, min {min(w):.2f} s")
    if forecast_s:
        print(
            f"    of which the forecast itself (the watcher's log line): median {statistics.median(forecast_s):.2f} s"
        )
    parts = _parts(log, args.arrivals)
    if parts:
        print(
            "    its parts (medians, the watcher's debug lines): "
            + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items())
        )
    med_c = statistics.median(c)
    print(f"(c) whole pySTEPS LK + S-PROG command, same window: median {med_c:.2f} s, min {min(c):.2f} s")
    print(f"(p) whole nowcast predict command, same files:      median {med_p:.2f} s, min {min(p):.2f} s")
    ratio = med_w / med_c
    print(f"(w)/(c) = {ratio:.2f} (medians)   target <= 0.3: {'ok' if ratio <= 0.3 else 'MISSED'}")
    print(f"(w)/(p) = {med_w / med_p:.2f} (medians)")


if __name__ == "__main__":
    main()

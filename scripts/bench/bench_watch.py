"""Benchmark: per-forecast latency of the resident ``nowcast watch`` against a cold ``nowcast predict``.

A radar feed is simulated: synthetic rain (``nowcast.synth``, ``--size`` 512 x 512) is split into one
NetCDF file per frame. ``nowcast watch`` runs in a subprocess on an ``incoming/`` folder with the
shipped model, ``--threads`` threads and its default ``--poll`` and ``--settle`` (or those given).
Then ``--arrivals`` times, side by side:

(w) a new frame file lands in ``incoming/`` (written beside it, then renamed in, with a fresh mtime,
    as a feed writes it): the seconds until its forecast file exists, polled every 20 ms. This
    includes the watcher's poll interval and settle time, reading, the network and the write;
(p) the whole ``python -m nowcast predict`` command on the same frame files (the forecast's input
    window), with the same model, threads and lead times: interpreter start, imports, checkpoint,
    reading, the network, the write.

It prints both (median and min), the ratio (w)/(p) and the target of issue 14: at most 0.4.
The CPU may be shared: figures are noisy, the ratio is measured in one run.

    python -m scripts.bench.bench_watch [--arrivals 5] [--size 512 512] [--threads 2] [--poll 1] [--settle 1]
"""

from __future__ import annotations

from scripts.common import REPO, cpu_summary

import argparse
import os
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
    frame's forecast name."""
    import xarray as xr

    from nowcast.synth import write_synthetic

    whole = write_synthetic(work / "whole.nc", frames=frames, size=size, seed=3)
    out = []
    (work / "frames").mkdir()
    with xr.open_dataset(whole, mask_and_scale=False, decode_times=False) as ds:
        import pandas as pd

        units = ds["time"].attrs["units"]
        for i in range(ds.sizes["time"]):
            one = ds.isel(time=[i])
            path = work / "frames" / f"radar_{i:03d}.nc"
            one.to_netcdf(path, encoding={v: {"zlib": True} for v in one.data_vars if one[v].ndim == 3})
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arrivals", type=int, default=5)
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--poll", type=float, default=1.0, help="the watcher's --poll (its default: 1)")
    parser.add_argument("--settle", type=float, default=1.0, help="the watcher's --settle (its default: 1)")
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
        for path, _ in frames[: n_in - 1]:
            _arrive(path, incoming)
        cmd = [
            sys.executable,
            "-m",
            "nowcast",
            "watch",
            str(incoming / "*.nc"),
            "-o",
            str(fc / TEMPLATE),
            "--threads",
            str(args.threads),
            "--poll",
            str(args.poll),
            "--settle",
            str(args.settle),
            "--state",
            str(work / "state.json"),
        ]
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
            time.sleep(max(args.poll, args.settle) + 0.5)  # its first look at the files already there
            w, p = [], []
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
                start = time.perf_counter()
                done = subprocess.run(cold_cmd, env=env, cwd=work, capture_output=True, text=True)
                p.append(time.perf_counter() - start)
                if done.returncode != 0:
                    raise SystemExit(f"nowcast predict failed: {done.stderr}")
                print(f"arrival {k + 1}: watch {w[-1]:.2f} s, cold predict {p[-1]:.2f} s", flush=True)
        finally:
            proc.terminate()
            proc.wait(60)
            reader.join(5)

    forecast_s = [float(line.rsplit(" in ", 1)[1].split()[0]) for line in log if " INFO forecast from " in line]
    try:
        load = f"{os.getloadavg()[0]:.1f}"
    except OSError:
        load = "?"
    print(
        f"\nnowcast watch against nowcast predict: {args.size[0]} x {args.size[1]}, {cfg.data.out_frames} lead times, "
        f"model '{cfg.model.name}', {args.threads} thread(s), fp32, watcher --poll {args.poll:g} --settle {args.settle:g}"
    )
    print(f"CPU: {cpu_summary()}; load average {load} at the end (shared: compare the ratio)")
    med_w, med_p = statistics.median(w), statistics.median(p)
    print(f"(w) new file -> forecast written, resident watcher: median {med_w:.2f} s, min {min(w):.2f} s")
    if forecast_s:
        print(
            f"    of which the forecast itself (the watcher's log line): median {statistics.median(forecast_s):.2f} s"
        )
    print(f"(p) whole nowcast predict command, same files:      median {med_p:.2f} s, min {min(p):.2f} s")
    ratio = med_w / med_p
    print(f"(w)/(p) = {ratio:.2f} (medians)   target <= 0.4: {'ok' if ratio <= 0.4 else 'MISSED'}")


if __name__ == "__main__":
    main()

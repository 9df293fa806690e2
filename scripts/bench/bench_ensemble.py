"""Benchmark: our STEPS-like ensemble against pySTEPS' STEPS, whole commands and in-process.

Whole commands (the targets): on a 512 x 512 real radar file of ../shared/data/radar (``--command-file``,
OPERA CIRRUS by default), interleaved in one run, best of ``--repeat``, each in its own process under a
small wrapper that reads its peak resident memory (``getrusage``):

- ``python -m nowcast predict FILE --members M --steps 12 --seed 1 -o OUT.nc`` (M and M / 4 members, for
  the cost per member; ``--motion-perturbation both``: also M members with ``bps``, for its extra cost);
- a whole pySTEPS command (``PYSTEPS_COMMAND``): read the last 3 frames, Lucas-Kanade motion, STEPS with
  M members (6 levels, AR(2), nonparametric noise, ``cdf`` matching; ``--pysteps-settings same``: no motion
  perturbation and no mask, as ours; ``defaults``: pySTEPS' ``bps`` and ``incremental``), ``num_workers``
  = the threads, exceedance probabilities at 1, 10, 30 mm/h, members and probabilities to a NetCDF.

In-process (``--file``, MRMS by default): the ensemble alone against ``baselines.steps_ensemble`` with the
same motion, how close the two are (spread, correlation of their means) and, when the file holds the
observed frames, their CRPS and Brier skill score at 1 mm/h (``verification.probscores``).

    OMP_NUM_THREADS=2 python -m scripts.bench.bench_ensemble [--threads 2] [--members 20] [--steps 12]
        [--repeat 1] [--pysteps-settings same|defaults] [--motion-perturbation none|bps|both] [--skip-inprocess]
"""

from __future__ import annotations

from scripts.common import RADAR_DIR, cpu_summary

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_FILE = "mrms_conus_20190610.nc"  # 36 frames of 512 x 512 at 2 min, 76 % rainy
REFERENCE_FRAME = 20  # the reference time's index: 12 observed frames follow it
COMMAND_FILE = "opera_cirrus_europe_20241126.nc"  # 13 frames of 512 x 512 at 5 min, the file

RSS_WRAPPER = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)"
)
"""Runs a command and prints its peak resident memory (KiB) as the last line of stderr."""

PYSTEPS_COMMAND = """
import sys, contextlib, io
import numpy as np, xarray as xr
with contextlib.redirect_stdout(io.StringIO()):
    from pysteps import motion, nowcasts
    from pysteps.postprocessing.ensemblestats import excprob
    from pysteps.utils import transformation
src, out, steps, members, workers, settings = sys.argv[1:7]
steps, members, workers = int(steps), int(members), int(workers)
with xr.open_dataset(src) as ds:
    r = ds["rainfall_rate"].isel(time=slice(-3, None)).values.astype(np.float64)
    grid = {"y": ds["y"].values, "x": ds["x"].values}
    km = abs(float(ds["x"][1] - ds["x"][0])) / 1000.0
    minutes = float((ds["time"][-1] - ds["time"][-2]) / np.timedelta64(1, "m"))
dbr, _ = transformation.dB_transform(r, threshold=0.1, zerovalue=-15.0)
dbr[~np.isfinite(dbr)] = -15.0
velocity = motion.get_method("LK")(dbr)
extra = dict(vel_pert_method=None, mask_method=None) if settings == "same" else {}
with contextlib.redirect_stdout(io.StringIO()):
    fc = nowcasts.get_method("steps")(
        dbr, velocity, steps, n_ens_members=members, n_cascade_levels=6, ar_order=2, precip_thr=-10.0,
        kmperpixel=km, timestep=minutes, noise_method="nonparametric", probmatching_method="cdf",
        seed=1, num_workers=workers, **extra,
    )
fc = np.where(fc >= -10.0, 10.0 ** (fc / 10.0), 0.0).astype(np.float32)
prob = np.stack([excprob(fc, t, ignore_nan=True) for t in (1.0, 10.0, 30.0)]).astype(np.float32)
enc = {"zlib": True, "complevel": 4}
xr.Dataset(
    {"members": (("realization", "time", "y", "x"), fc), "probability": (("threshold", "time", "y", "x"), prob)},
    coords=grid,
).to_netcdf(out, encoding={"members": enc, "probability": enc})
"""
"""A whole pySTEPS STEPS command: read, LK motion in dBR, STEPS, probabilities, write a NetCDF."""


def _input(name: str, steps: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(frames up to the reference time, the observed frames after it or None, a description)."""
    path = RADAR_DIR / name
    if path.is_file():
        from nowcast.io import open_radar

        rate = np.asarray(open_radar(path).values, dtype=np.float32)
        ref = min(REFERENCE_FRAME, rate.shape[0] - 1)
        observed = rate[ref + 1 : ref + 1 + steps]
        return rate[: ref + 1], observed if len(observed) == steps else None, f"{name}, frame {ref}"
    from nowcast.synth import synthetic_sequence

    frames = np.asarray(synthetic_sequence(frames=4 + steps, size=(512, 512))["rainfall_rate"].values, np.float32)
    return frames[:4], frames[4:], "synthetic 512 x 512 (nowcast.synth)"


def _best_of_interleaved(fns: list, repeat: int) -> list[tuple[float, np.ndarray]]:
    """Best time and last output of each function, run in turn ``repeat`` times (a shared CPU's load
    drifts: interleaving keeps it from favouring whichever runs first)."""
    times: list[list[float]] = [[] for _ in fns]
    outs: list = [None] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            outs[i] = fn()
            times[i].append(time.perf_counter() - start)
    return [(min(t), o) for t, o in zip(times, outs)]


def _scores(name: str, ens: np.ndarray, observed: np.ndarray) -> str:
    from nowcast.verification import probscores

    s = probscores.init_probscores(ens.shape[1], [1.0], ens.shape[0])
    probscores.accumulate(s, ens, observed)
    res = probscores.compute(s)
    leads = [0, min(5, ens.shape[1] - 1), ens.shape[1] - 1]
    crps = " ".join(f"{v:.3f}" for v in res["CRPS"][leads])
    bss = " ".join(f"{v:.3f}" for v in res["BSS"][leads, 0])
    where = "/".join(str(k + 1) for k in leads)
    return f"{name:>6}: CRPS (mm/h) at leads {where}: {crps}; BSS >= 1 mm/h: {bss}"


def _run(cmd: list[str], threads: int) -> tuple[float, float]:
    """(wall seconds, peak resident memory in GiB) of a whole command in a fresh process."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RSS_WRAPPER, *cmd], env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return took, int(proc.stderr.strip().splitlines()[-1]) / 2**20


def _whole_commands(args: argparse.Namespace) -> None:
    """Whole ``nowcast predict --members`` (M and M / 4) and whole pySTEPS STEPS commands, interleaved."""
    src = RADAR_DIR / args.command_file
    if not src.is_file():
        print(f"whole commands: skipped ({src} not found)")
        return
    few = max(1, args.members // 4)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)

        def ours(m: int, motion: str = "none") -> list[str]:
            return [
                sys.executable,
                "-m",
                "nowcast",
                "predict",
                str(src),
                "--members",
                str(m),
                "--steps",
                str(args.steps),
                "--seed",
                "1",
                "--threads",
                str(args.threads),
                "--motion-perturbation",
                motion,
                "-o",
                str(out / f"ours{m}{motion}.nc"),
            ]

        motion = "none" if args.motion_perturbation == "both" else args.motion_perturbation
        main_cmd, few_cmd = f"nowcast predict --members {args.members}", f"nowcast predict --members {few}"
        bps_cmd = f"{main_cmd} --motion-perturbation bps"
        cmds = {
            main_cmd: ours(args.members, motion),
            few_cmd: ours(few, motion),
            f"pySTEPS STEPS ({args.pysteps_settings}), {args.members} members": [
                sys.executable,
                "-c",
                PYSTEPS_COMMAND,
                str(src),
                str(out / "ref.nc"),
                str(args.steps),
                str(args.members),
                str(args.threads),
                args.pysteps_settings,
            ],
        }
        if args.motion_perturbation == "both":
            cmds[bps_cmd] = ours(args.members, "bps")
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.repeat):
            for name, cmd in cmds.items():
                wall, rss = _run(cmd, args.threads)
                old = best.get(name, (float("inf"), 0.0))
                best[name] = (min(old[0], wall), max(old[1], rss))
    print(f"whole commands on {args.command_file}, {args.steps} leads, {args.threads} threads (best of {args.repeat}):")
    for name, (wall, rss) in best.items():
        print(f"  {name:<45} {wall:7.2f} s  peak RSS {rss:5.2f} GiB")
    (t_m, r_m), (t_f, r_f) = best[main_cmd], best[few_cmd]
    t_p, r_p = next(v for k, v in best.items() if k.startswith("pySTEPS"))
    print(f"  motion perturbation of ours: {motion}")
    if bps_cmd in best:
        t_b, r_b = best[bps_cmd]
        print(f"  bps / none (ours, {args.members} members): time {t_b / t_m:.2f}, peak RSS {r_b / r_m:.2f}")
    print(f"  ratio ours / pySTEPS: time {t_m / t_p:.2f} (target <= 0.25), peak RSS {r_m / r_p:.2f} (target <= 0.5)")
    if args.members > few:
        per_s, per_mb = (t_m - t_f) / (args.members - few), (r_m - r_f) * 1024 / (args.members - few)
        print(f"  per member (ours): {per_s:.2f} s and {per_mb:.0f} MiB; fixed part {t_m - per_s * args.members:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--file", default=DEFAULT_FILE, help="a radar file of RADAR_DIR (in-process comparison)")
    parser.add_argument("--command-file", default=COMMAND_FILE, help="a radar file of RADAR_DIR (whole commands)")
    parser.add_argument("--pysteps-settings", choices=("same", "defaults"), default="same")
    parser.add_argument(
        "--motion-perturbation",
        choices=("none", "bps", "both"),
        default="none",
        help="ours with this motion perturbation; both: none, and bps as a fourth command (its extra cost)",
    )
    parser.add_argument("--skip-inprocess", action="store_true")
    parser.add_argument("--skip-commands", action="store_true")
    args = parser.parse_args()
    print(f"machine: {cpu_summary()}")
    if not args.skip_commands:
        _whole_commands(args)
    if args.skip_inprocess:
        return

    import torch

    from nowcast.motion.flow import motion_field
    from nowcast.nowcasts.baselines import pysteps_methods, steps_ensemble
    from nowcast.nowcasts.ensemble import EnsembleSettings, ensemble_forecast

    torch.set_num_threads(args.threads)
    frames, observed, what = _input(args.file, args.steps)
    velocity = motion_field(frames)
    pysteps_methods()  # imported before timing
    settings = EnsembleSettings(members=args.members, seed=1)
    (ours_s, ours), (ref_s, ref) = _best_of_interleaved(
        [
            lambda: ensemble_forecast(frames, velocity, args.steps, settings),
            lambda: steps_ensemble(frames, args.steps, args.members, 1, velocity=velocity),
        ],
        args.repeat,
    )

    print(f"machine: {cpu_summary()}; torch threads {torch.get_num_threads()}")
    print(f"input: {what}, {frames.shape[1]} x {frames.shape[2]}; {args.members} members x {args.steps} leads")
    print(f"ours (torch, batched): {ours_s:7.2f} s")
    print(f"pySTEPS STEPS:         {ref_s:7.2f} s")
    print(f"ratio ours / pySTEPS:  {ours_s / ref_s:7.2f}  ({ref_s / ours_s:.1f}x faster)")
    ok = np.isfinite(ours[0, -1]) & np.isfinite(ref[0, -1])
    spreads = [np.nanmean(e[:, -1].std(0)[ok]) for e in (ours, ref)]
    corr = np.corrcoef(ours[:, -1].mean(0)[ok], ref[:, -1].mean(0)[ok])[0, 1]
    print(f"last lead: spread {spreads[0]:.3f} vs {spreads[1]:.3f} mm/h; correlation of the means {corr:.3f}")
    if observed is not None:
        print(_scores("ours", ours, observed))
        print(_scores("STEPS", ref, observed))


if __name__ == "__main__":
    main()

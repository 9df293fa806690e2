"""Benchmark: our batched STEPS-like ensemble (``nowcast.nowcasts.ensemble``) against pySTEPS' STEPS.

Same input (a 512 x 512 real radar file of ../shared/data/radar when present, else synthetic rain from
``nowcast.synth``), same motion (``motion_field``, computed once and given to both), same members (20),
same 12 lead times, same cascade (6 levels, AR(2), nonparametric noise, cdf matching, no motion
perturbation, no mask); timed side by side in one run, in turn, best of ``--repeat``. It prints both times, their
ratio, the machine and the threads, how close the two ensembles are (spread, correlation of their
means) and, when the file holds the 12 observed frames after the reference time, their CRPS and Brier
skill score at 1 mm/h against them (``verification.probscores``).

    OMP_NUM_THREADS=2 python -m scripts.bench.bench_ensemble [--threads 2] [--members 20] [--steps 12]
"""

from __future__ import annotations

from scripts.common import RADAR_DIR, cpu_summary

import argparse
import time

import numpy as np

DEFAULT_FILE = "mrms_conus_20190610.nc"  # 36 frames of 512 x 512 at 2 min, 76 % rainy
REFERENCE_FRAME = 20  # the reference time's index: 12 observed frames follow it


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
    crps = " ".join(f"{v:.3f}" for v in res["CRPS"][[0, 5, -1]])
    bss = " ".join(f"{v:.3f}" for v in res["BSS"][[0, 5, -1], 0])
    return f"{name:>6}: CRPS (mm/h) at leads 1/6/{ens.shape[1]}: {crps}; BSS >= 1 mm/h: {bss}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--file", default=DEFAULT_FILE, help="a radar file of RADAR_DIR")
    args = parser.parse_args()

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

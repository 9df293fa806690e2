"""How far above S-PROG could a forecast get by knowing growth and decay, or motion, perfectly?

Upper bounds for the issue's target (mean CSI >= 1 mm/h >= 1.10 x S-PROG's on radars the model never
saw), computed on the cases and pixels of the cross-radar fold evaluation (``scripts/research/folds.py``:
6 frames in, a forecast every 3 frames, each event at its own step and leads) with oracles that
peek at the observed future:

- ``sprog``: pySTEPS S-PROG as the baseline (``baselines.sprog``), the anchor.
- ``sprog-obs-amounts``: S-PROG's forecast in dBR (before its 0.1 mm/h threshold) given, at each lead,
  the distribution of the observed frame (``probmatch.match_cdf``): its pattern, the true amounts and
  wet area: what perfect growth and decay of the rain *amounts* would give S-PROG's pattern.
- ``sprog-obs-motion``: S-PROG advected along the motion of the observed hour (Lucas-Kanade of all
  frames from t0 to the last lead, pooled, in dBR): the motion the rain had, held constant (not the
  best constant motion for every lead: on MRMS and CIRRUS it scores below the input motion).
- ``sprog-obs-both``: both.
- ``sprog-obs-amounts-wide`` and ``sprog-obs-both-wide``: the same with the wet area above every rate
  1.25 times the observed one (frequency bias 1.25, the issue's upper limit). Where the pattern is
  imperfect, a larger area than observed can score a higher CSI; these bound that gain within the
  issue's rules.
- ``persistence`` and ``extrapolation``. Persistence checks that the cases are those of the fold
  evaluation (``--check``: its mean CSI must agree to 0.002 per event). The pixels differ a little:
  every method is scored where all of these have data, and the motion of the observed hour leaves the
  domain at other edges than the model of a fold evaluation; S-PROG's event means here differ from the
  fold evaluation's by up to 0.003. The ratios compare methods on the same pixels.

Writes ``OUT/EVENT/metrics.csv`` (the ``nowcast evaluate`` format, every method on the same pixels)
and prints, per held-out fold of the selection rule, the fold means of CSI >= 1 mm/h and their ratio
to S-PROG's.

    python -m scripts.research.skill_ceiling --out evaluation/ceiling [--events E ...] [--check evaluation/folds/r3]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from nowcast.nowcasts import baselines
from nowcast.verification import metrics  # noqa: E402
from nowcast.verification.results import Evaluation  # noqa: E402
from nowcast.verification.evaluate import SegmentFrames, score_case
from nowcast.io import open_archive  # noqa: E402
from nowcast.motion.lucaskanade import dense_lucaskanade  # noqa: E402
from nowcast.motion import motion_field  # noqa: E402
from nowcast.units import dbr_to_rate, to_dbr  # noqa: E402
from scripts.research import folds  # noqa: E402
from nowcast.nowcasts.probmatch import match_cdf  # noqa: E402
from nowcast.verification.reports import write_reports  # noqa: E402

METHODS = (
    "sprog",
    "sprog-obs-amounts",
    "sprog-obs-amounts-wide",
    "sprog-obs-motion",
    "sprog-obs-both",
    "sprog-obs-both-wide",
    "extrapolation",
    "persistence",
)
WIDE = 1.25
"""Wet-area factor of the ``-wide`` oracles: the issue's upper limit on frequency bias."""
THRESHOLDS = (0.5, 1.0, 5.0, 10.0)


def _obs_amounts(dbr: np.ndarray, observed: np.ndarray, area: float = 1.0) -> np.ndarray:
    """Each lead of S-PROG's dBR forecast (steps, H, W) given the observed frame's distribution on the
    pixels both have data: mm/h (steps, H, W). ``area`` > 1: the area above every rate is that many
    times the observed one (frequency bias ``area`` at every threshold, as far as the pixels allow): the
    pixel S-PROG ranks i-th wettest gets the observed (i / area)-th wettest value."""
    out = np.full(dbr.shape, np.nan, dtype=np.float32)
    for k in range(dbr.shape[0]):
        both = np.isfinite(dbr[k]) & np.isfinite(observed[k])
        # ranks from dBR (every pixel is ranked, dry ones too, so the wet area can grow), values observed
        ranked = np.where(both, dbr[k] - np.nanmin(dbr[k]) + 1.0, np.nan)
        if area == 1.0:
            out[k] = match_cdf(ranked, np.where(both, observed[k], np.nan))
            continue
        wettest_first = np.argsort(-ranked[both], kind="stable")
        values = np.sort(observed[k][both])[::-1]
        matched = np.empty(values.size, dtype=np.float32)
        matched[wettest_first] = values[(np.arange(values.size) / area).astype(np.int64)]
        out[k][both] = matched
    return out


def _hour_motion(last: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Lucas-Kanade motion of the frames t0 (``last``, (H, W)) .. last lead (``observed`` (steps, H, W)),
    vectors of all consecutive pairs pooled: (2, H, W) pixels per step."""
    seq = np.concatenate([last[None], observed]).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        v = dense_lucaskanade(to_dbr(seq), workers=1)
    return np.nan_to_num(np.asarray(v, dtype=np.float32), nan=0.0)


def score_event(event: str, out: Path) -> None:
    """Every method of ``METHODS`` on every fold-evaluation case of ``event`` -> ``out/event/metrics.csv``."""
    steps = folds.LEADS[event]
    archive = open_archive([folds.DATA / f"{event}.nc"], time_step=None)
    seg = archive.segments[0]
    time_step = float(seg.attrs["time_step"])
    lead_min = [(k + 1) * time_step / 60.0 for k in range(steps)]
    scores = {m: metrics.init_scores(steps, THRESHOLDS, ">=") for m in METHODS}
    ev = Evaluation(
        list(METHODS), scores, {}, lead_min, {"oracle": "scripts/research/skill_ceiling.py"}, list(archive.files), []
    )
    frames = SegmentFrames(seg)
    window = folds.IN_FRAMES + steps
    starts = range(0, seg.sizes["time"] - window + 1, folds.STRIDE)
    tick = time.perf_counter()
    for a in starts:
        frames.forget_before(a)
        x = frames.get(a, a + folds.IN_FRAMES)[:, 0]  # (in, H, W) mm/h
        obs = frames.get(a + folds.IN_FRAMES, a + window)[:, 0]  # (steps, H, W)
        v_in = motion_field(x)
        v_obs = _hour_motion(x[-1], obs)
        base = baselines.sprog_dbr(x, steps, v_in)
        moved = baselines.sprog_dbr(x, steps, v_obs)
        fc = {
            "sprog": dbr_to_rate(base),  # baselines.sprog(x, steps), without computing it twice
            "sprog-obs-amounts": _obs_amounts(base, obs),
            "sprog-obs-motion": dbr_to_rate(moved),
            "sprog-obs-both": _obs_amounts(moved, obs),
            "sprog-obs-amounts-wide": _obs_amounts(base, obs, WIDE),
            "sprog-obs-both-wide": _obs_amounts(moved, obs, WIDE),
            "extrapolation": baselines.extrapolation(x, steps),
            "persistence": baselines.persistence(x, steps),
        }
        nan_last = ~np.isfinite(x[-1])
        for m in (m for m in METHODS if m.startswith("sprog")):
            fc[m][:, nan_last] = np.nan  # as every method: no forecast where the last frame has no data
        score_case(ev, {m: f[:, None] for m, f in fc.items()}, obs[:, None], True)
        ev.n_cases += 1
    write_reports(ev, out / event, plots=False)
    print(f"{event}: {ev.n_cases} cases in {time.perf_counter() - tick:.0f} s", file=sys.stderr)


def _csi1(path: Path) -> dict[str, float]:
    """Method -> mean over leads of CSI >= 1 mm/h in an evaluate metrics.csv (read by ``folds``)."""
    table = folds.read_metrics(path)
    return {
        m: folds._mean([v for _, v in rows]) for (m, score, thr), rows in table.items() if (score, thr) == ("CSI", "1")
    }


def report(out: Path, check: Path | None) -> str:
    """Markdown: per event, then per held-out fold (the fold means of the selection rule), the mean CSI
    >= 1 mm/h of each method over its leads and its ratio to S-PROG's."""
    head = ["| " + " | ".join(METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    events_lines = ["| event | " + head[0][2:], head[1]]
    fold_lines = ["| held-out events | " + head[0][2:], head[1]]

    def cells(csi: dict[str, float]) -> str:
        return " | ".join(f"{csi[m]:.3f} ({csi[m] / csi['sprog']:.3f})" for m in METHODS)

    for fold in ("A", "B"):
        events = [e for e in folds.held_out(fold) if (out / e / "metrics.csv").is_file()]
        if not events:
            continue
        per = [_csi1(out / e / "metrics.csv") for e in events]
        if check is not None:
            for e, p in zip(events, per):
                ref = _csi1(check / e / "metrics.csv")["persistence"]
                if abs(ref - p["persistence"]) > 2e-3:
                    raise SystemExit(
                        f"{e}: persistence CSI>=1 {p['persistence']:.4f} here, {ref:.4f} in {check}: not the same cases"
                    )
        events_lines += [f"| {folds.EVENT_NAMES[e]} | {cells(p)} |" for e, p in zip(events, per)]
        means = {m: float(np.mean([p[m] for p in per])) for m in METHODS}
        fold_lines.append(f"| {', '.join(folds.EVENT_NAMES[e] for e in events)} | {cells(means)} |")
    return "\n".join(["Per event:", "", *events_lines, "", "Per held-out fold:", "", *fold_lines])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--events", nargs="*", help="only these events (default: all eight)")
    p.add_argument("--check", type=Path, help="a fold evaluation whose persistence scores must agree")
    p.add_argument("--report-only", action="store_true", help="only print the table of what is scored")
    a = p.parse_args()
    if not a.report_only:
        for event in a.events or [*folds.FOLD_EVENTS["A"], *folds.FOLD_EVENTS["B"]]:
            if (a.out / event / "metrics.csv").is_file():
                print(f"{event}: already scored", file=sys.stderr)
                continue
            score_event(event, a.out)
    print(report(a.out, a.check))


if __name__ == "__main__":
    main()

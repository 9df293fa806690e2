"""Our ensemble against pySTEPS STEPS over several seeds: fold tables and the issue's skill targets.

Reads ``ROOT/SEED/EVENT/metrics.csv`` (one ``scripts.research.ensemble_events --steps-baseline --seed SEED``
run per seed folder) and prints Markdown: per event and fold, CRPS (mean over leads, then over seeds;
with the range of the per-seed ratios), the Brier score at ``--threshold`` (mean over leads and seeds)
and the number of leads where the seed-mean Brier score of ours is no worse than STEPS', and the
spread-skill ratio per lead averaged over seeds (mean, min-max). Then the three targets read on the
seed means: fold CRPS at most 0.90 x STEPS, Brier score no worse at every lead, spread-skill within
0.8-1.2 at every lead. Events count once in a fold mean; only events present for every seed are read.

    python -m scripts.research.ensemble_seeds evaluation/ensemble-seeds [--threshold 1]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scripts.research.ensemble_folds import SS_BAND, _mean, _read
from scripts.research.folds import FOLD_EVENTS

CRPS_TARGET = 0.90
"""The issue's target: fold-mean CRPS at most this times STEPS'."""

Scores = dict[tuple[str, str], dict[float, float]]


def seed_means(runs: list[Scores]) -> Scores:
    """{(method, score): {lead: mean over the seeds' runs}} (a lead counts where every run has it)."""
    out: Scores = {}
    for key in runs[0]:
        leads = set.intersection(*(set(r[key]) for r in runs))
        out[key] = {k: _mean([r[key][k] for r in runs]) for k in sorted(leads)}
    return out


def event_row(runs: list[Scores]) -> dict[str, float]:
    """One event's figures over its seeds' runs (see the module's docstring)."""
    m = seed_means(runs)
    ratios = [_mean(list(r[("ensemble", "CRPS")].values())) / _mean(list(r[("steps", "CRPS")].values())) for r in runs]
    bs_o, bs_s = m[("ensemble", "BS")], m[("steps", "BS")]
    ss_o, ss_s = list(m[("ensemble", "SPREAD_SKILL")].values()), list(m[("steps", "SPREAD_SKILL")].values())
    return {
        "crps_o": _mean(list(m[("ensemble", "CRPS")].values())),
        "crps_s": _mean(list(m[("steps", "CRPS")].values())),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "bs_o": _mean(list(bs_o.values())),
        "bs_s": _mean(list(bs_s.values())),
        "bs_ok": sum(bs_o[k] <= bs_s[k] for k in bs_o),
        "leads": len(bs_o),
        "ss_o": _mean(ss_o),
        "ss_o_min": min(ss_o),
        "ss_o_max": max(ss_o),
        "ss_s": _mean(ss_s),
        "ss_s_min": min(ss_s),
        "ss_s_max": max(ss_s),
        "ss_in": sum(SS_BAND[0] <= v <= SS_BAND[1] for v in ss_o),
    }


def fold_row(rows: list[dict[str, float]]) -> dict[str, float]:
    """The fold's figures: means of its events' (sums for lead counts, extremes for ranges)."""
    out = {k: _mean([r[k] for r in rows]) for k in ("crps_o", "crps_s", "bs_o", "bs_s", "ss_o", "ss_s")}
    out.update({k: sum(r[k] for r in rows) for k in ("bs_ok", "leads", "ss_in")})
    out.update({k: min(r[k] for r in rows) for k in ("ratio_min", "ss_o_min", "ss_s_min")})
    out.update({k: max(r[k] for r in rows) for k in ("ratio_max", "ss_o_max", "ss_s_max")})
    return out


def line(fold: str, name: str, r: dict[str, float]) -> str:
    """A Markdown table row."""
    return (
        f"| {fold} | {name} | {r['crps_o']:.4f} / {r['crps_s']:.4f} | {r['crps_o'] / r['crps_s']:.3f} "
        f"({r['ratio_min']:.3f}-{r['ratio_max']:.3f}) | {r['bs_o']:.4f} / {r['bs_s']:.4f} "
        f"| {r['bs_ok']:.0f} of {r['leads']:.0f} | {r['ss_o']:.2f} ({r['ss_o_min']:.2f}-{r['ss_o_max']:.2f}) "
        f"| {r['ss_s']:.2f} ({r['ss_s_min']:.2f}-{r['ss_s_max']:.2f}) | {r['ss_in']:.0f} of {r['leads']:.0f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="one folder per seed, each with one folder per event")
    ap.add_argument("--threshold", type=float, default=1.0)
    a = ap.parse_args()
    seeds = sorted(p for p in a.root.iterdir() if p.is_dir())
    t = f"{a.threshold:g}"
    print(f"Seeds: {', '.join(p.name for p in seeds)}\n")
    print(
        f"| fold | event | CRPS ours / STEPS | ratio (range over seeds) | BS >= {t} ours / STEPS "
        f"| leads BS ours <= STEPS | spread-skill ours (min-max) | STEPS (min-max) | leads ours in 0.8-1.2 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    verdicts = []
    for fold, events in FOLD_EVENTS.items():
        rows = []
        for event in events:
            paths = [s / event / "metrics.csv" for s in seeds]
            if not all(p.is_file() for p in paths):
                continue
            rows.append(event_row([_read(p, a.threshold) for p in paths]))
            print(line(fold, event, rows[-1]))
        if not rows:
            continue
        f = fold_row(rows)
        print(line(fold, f"**fold {fold} (mean of {len(rows)} events)**", f))
        ratio = f["crps_o"] / f["crps_s"]
        verdicts.append(
            f"- fold {fold}: CRPS {ratio:.3f} x STEPS (target <= {CRPS_TARGET}: "
            f"{'met' if ratio <= CRPS_TARGET else 'not met'}); BS no worse at {f['bs_ok']:.0f} of {f['leads']:.0f} "
            f"leads ({'met' if f['bs_ok'] == f['leads'] else 'not met'}); spread-skill in 0.8-1.2 at "
            f"{f['ss_in']:.0f} of {f['leads']:.0f} leads ({'met' if f['ss_in'] == f['leads'] else 'not met'})"
        )
    print("\nTargets, on the seed means:\n" + "\n".join(verdicts))


if __name__ == "__main__":
    main()

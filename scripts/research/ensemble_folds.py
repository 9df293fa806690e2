"""Tabulate ``nowcast evaluate --members N --baselines steps`` runs per cross-radar fold: ours against STEPS.

Reads ``DIR/EVENT/metrics.csv`` for every event of ``folds.FOLD_EVENTS`` found under DIR and prints Markdown:
per event and per fold (the mean of its events' values), CRPS (mean over leads, mm/h), Brier score and
skill score at ``--threshold`` (mean over leads), ROC area, spread-skill (mean, min and max over leads),
then the Brier score at the threshold at every lead. Fold rows average events, each event counting
once whatever its number of cases or pixels.

    python -m scripts.research.ensemble_folds evaluation/ensemble-folds [--threshold 1]
"""

from __future__ import annotations

from scripts.research.folds import FOLD_EVENTS

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path

METHODS = ("ensemble", "steps")


def _read(path: Path, threshold: float) -> dict[tuple[str, str], dict[float, float]]:
    """{(method, score): {lead_min: value}} of the ensembles' per-lead scores (threshold ones at ``threshold``)."""
    out: dict[tuple[str, str], dict[float, float]] = defaultdict(dict)
    with path.open() as f:
        for row in csv.DictReader(f):
            if row["method"] not in METHODS:
                continue
            score, thr = row["score"], row["threshold"]
            if (
                score in ("CRPS", "SPREAD_SKILL")
                and thr == ""
                or score in ("BS", "BSS", "ROC_AUC")
                and thr
                and (math.isclose(float(thr), threshold))
            ):
                out[(row["method"], score)][float(row["lead_min"])] = float(row["value"])
    return out


def _mean(values: list[float]) -> float:
    good = [v for v in values if math.isfinite(v)]
    return sum(good) / len(good) if good else math.nan


def _summary(scores: dict[tuple[str, str], dict[float, float]]) -> dict[str, float]:
    row: dict[str, float] = {}
    for m in METHODS:
        for s in ("CRPS", "BS", "BSS", "ROC_AUC", "SPREAD_SKILL"):
            row[f"{m}:{s}"] = _mean(list(scores[(m, s)].values()))
        ss = list(scores[(m, "SPREAD_SKILL")].values())
        row[f"{m}:SS_MIN"], row[f"{m}:SS_MAX"] = min(ss), max(ss)
    bs_o, bs_s = scores[("ensemble", "BS")], scores[("steps", "BS")]
    row["bs_leads_not_worse"] = sum(bs_o[k] <= bs_s[k] for k in bs_o)
    row["leads"] = len(bs_o)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--threshold", type=float, default=1.0)
    args = parser.parse_args()
    t = f"{args.threshold:g}"
    print(
        f"| fold | event | CRPS ours / STEPS | ratio | BS >= {t} ours / STEPS | leads BS ours <= STEPS "
        f"| BSS >= {t} ours / STEPS | ROC AUC >= {t} ours / STEPS | spread-skill ours (min-max) | STEPS (min-max) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    per_lead: list[str] = []
    for fold, events in FOLD_EVENTS.items():
        rows = []
        for event in events:
            path = args.root / event / "metrics.csv"
            if not path.is_file():
                continue
            scores = _read(path, args.threshold)
            r = _summary(scores)
            rows.append(r)
            print(_line(fold, event, r))
            bs = " ".join(
                f"{k:g}: {scores[('ensemble', 'BS')][k]:.4f}/{scores[('steps', 'BS')][k]:.4f}"
                for k in sorted(scores[("ensemble", "BS")])
            )
            per_lead.append(f"| {fold} | {event} | {bs} |")
        if rows:
            mean = {k: _mean([r[k] for r in rows]) for k in rows[0] if k not in ("bs_leads_not_worse", "leads")}
            mean["bs_leads_not_worse"] = sum(r["bs_leads_not_worse"] for r in rows)
            mean["leads"] = sum(r["leads"] for r in rows)
            mean.update({f"{m}:SS_MIN": min(r[f"{m}:SS_MIN"] for r in rows) for m in METHODS})
            mean.update({f"{m}:SS_MAX": max(r[f"{m}:SS_MAX"] for r in rows) for m in METHODS})
            print(_line(fold, f"**fold {fold} (mean of {len(rows)} events)**", mean))
    print(f"\nBrier score at {t} mm/h per lead (min): ours / STEPS\n\n| fold | event | lead: BS |\n|---|---|---|")
    print("\n".join(per_lead))


def _line(fold: str, event: str, r: dict[str, float]) -> str:
    o, s = "ensemble:", "steps:"
    return (
        f"| {fold} | {event} | {r[o + 'CRPS']:.4f} / {r[s + 'CRPS']:.4f} | {r[o + 'CRPS'] / r[s + 'CRPS']:.3f} "
        f"| {r[o + 'BS']:.4f} / {r[s + 'BS']:.4f} | {r['bs_leads_not_worse']:.0f} of {r['leads']:.0f} "
        f"| {r[o + 'BSS']:.3f} / {r[s + 'BSS']:.3f} | {r[o + 'ROC_AUC']:.3f} / {r[s + 'ROC_AUC']:.3f} "
        f"| {r[o + 'SPREAD_SKILL']:.2f} ({r[o + 'SS_MIN']:.2f}-{r[o + 'SS_MAX']:.2f}) "
        f"| {r[s + 'SPREAD_SKILL']:.2f} ({r[s + 'SS_MIN']:.2f}-{r[s + 'SS_MAX']:.2f}) |"
    )


if __name__ == "__main__":
    main()

"""Tabulate ``nowcast evaluate --members N --baselines steps`` runs per cross-radar fold: ours against STEPS.

Reads ``DIR/EVENT/metrics.csv`` for every event of ``folds.FOLD_EVENTS`` found under DIR and prints Markdown:
per event and per fold (the mean of its events' values), CRPS (mean over leads, mm/h), Brier score and
skill score at ``--threshold`` (mean over leads), ROC area, spread-skill (mean, min and max over leads),
then the Brier score at the threshold at every lead. Fold rows average events, each event counting
once whatever its number of cases or pixels.

    python -m scripts.research.ensemble_folds evaluation/ensemble-folds [--threshold 1]
        [--methods model_ensemble,ensemble]   # two ensemble methods of the runs, ours first (default ensemble,steps)

``--rule BEFORE_DIR``: docs/probabilistic.md's rule for a change to the method, ROOT (after the change)
against BEFORE_DIR (before it), our ensemble only: on the mean over both folds' events (each event once),
CRPS does not rise, the Brier score at ``--threshold`` does not rise, and the mean spread-skill ratio
moves toward 1 with no (event, lead) leaving 0.8-1.2 that was inside it before. Prints a table per
event and the verdict.
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
            if not row["method"].endswith(("ensemble", "steps")):
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


def _summary(scores: dict[tuple[str, str], dict[float, float]], methods: tuple[str, str] = METHODS) -> dict[str, float]:
    row: dict[str, float] = {}
    named = ("CRPS", "BS", "BSS", "ROC_AUC", "SPREAD_SKILL")  # keyed as ours and the other, whichever they are
    scores = {(m, k): scores[(name, k)] for m, name in zip(METHODS, methods) for k in named}
    for m in METHODS:
        for s in named:
            row[f"{m}:{s}"] = _mean(list(scores[(m, s)].values()))
        ss = list(scores[(m, "SPREAD_SKILL")].values())
        row[f"{m}:SS_MIN"], row[f"{m}:SS_MAX"] = min(ss), max(ss)
    bs_o, bs_s = scores[("ensemble", "BS")], scores[("steps", "BS")]
    row["bs_leads_not_worse"] = sum(bs_o[k] <= bs_s[k] for k in bs_o)
    row["leads"] = len(bs_o)
    return row


SS_BAND = (0.8, 1.2)
"""The spread-skill ratio's target band."""


def _inside(ss: float) -> bool:
    return SS_BAND[0] <= ss <= SS_BAND[1]


def rule(after: Path, before: Path, threshold: float) -> tuple[str, bool]:
    """The rule's table (Markdown) of our ensemble in ``after`` against ``before`` and whether it keeps the change."""
    t = f"{threshold:g}"
    lines = [
        f"| fold | event | CRPS before / after | BS >= {t} before / after | spread-skill before (min-max) "
        "| after (min-max) | leads in 0.8-1.2 before / after | leads that left 0.8-1.2 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    means: dict[str, list[float]] = defaultdict(list)
    left_total = 0
    for fold, events in FOLD_EVENTS.items():
        for event in events:
            paths = [d / event / "metrics.csv" for d in (before, after)]
            if not all(p.is_file() for p in paths):
                continue
            b, a = (_read(p, threshold) for p in paths)
            ss_b, ss_a = b[("ensemble", "SPREAD_SKILL")], a[("ensemble", "SPREAD_SKILL")]
            if not ss_b or not ss_a:  # no ensemble rows (a run that did not finish)
                continue
            left = sum(_inside(ss_b[k]) and not _inside(ss_a.get(k, math.nan)) for k in ss_b)
            left_total += left
            row = {}
            for name, scores in (("before", b), ("after", a)):
                for s in ("CRPS", "BS", "SPREAD_SKILL"):
                    row[f"{name}:{s}"] = _mean(list(scores[("ensemble", s)].values()))
                    means[f"{name}:{s}"].append(row[f"{name}:{s}"])
            lines.append(
                f"| {fold} | {event} | {row['before:CRPS']:.4f} / {row['after:CRPS']:.4f} "
                f"| {row['before:BS']:.4f} / {row['after:BS']:.4f} "
                f"| {row['before:SPREAD_SKILL']:.2f} ({min(ss_b.values()):.2f}-{max(ss_b.values()):.2f}) "
                f"| {row['after:SPREAD_SKILL']:.2f} ({min(ss_a.values()):.2f}-{max(ss_a.values()):.2f}) "
                f"| {sum(map(_inside, ss_b.values()))} / {sum(map(_inside, ss_a.values()))} of {len(ss_b)} | {left} |"
            )
    m = {k: _mean(v) for k, v in means.items()}
    n = len(means["before:CRPS"])
    lines.append(
        f"| | **mean of {n} events** | {m['before:CRPS']:.4f} / {m['after:CRPS']:.4f} "
        f"| {m['before:BS']:.4f} / {m['after:BS']:.4f} | {m['before:SPREAD_SKILL']:.3f} | {m['after:SPREAD_SKILL']:.3f} "
        f"| | {left_total} |"
    )
    checks = {
        "CRPS does not rise": m["after:CRPS"] <= m["before:CRPS"],
        f"BS >= {t} does not rise": m["after:BS"] <= m["before:BS"],
        "mean spread-skill moves toward 1": abs(m["after:SPREAD_SKILL"] - 1) < abs(m["before:SPREAD_SKILL"] - 1),
        "no lead leaves 0.8-1.2": left_total == 0,
    }
    keep = bool(n) and all(checks.values())
    lines.append("")
    lines += [f"- {name}: {'yes' if ok else 'NO'}" for name, ok in checks.items()]
    lines.append(f"- verdict: {'keep the change' if keep else 'do not keep the change'} ({n} events)")
    return "\n".join(lines), keep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--threshold", type=float, default=1.0)
    parser.add_argument("--rule", type=Path, metavar="BEFORE_DIR", help="apply the rule: ROOT against BEFORE_DIR")
    parser.add_argument("--methods", default=",".join(METHODS), help="ours,the other (default ensemble,steps)")
    args = parser.parse_args()
    ours, other = args.methods.split(",")
    if args.rule is not None:
        print(rule(args.root, args.rule, args.threshold)[0])
        return
    t = f"{args.threshold:g}"
    if (ours, other) != METHODS:
        print(f"ours: {ours}, against: {other} (the columns say ours / STEPS)\n")
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
            r = _summary(scores, (ours, other))
            rows.append(r)
            print(_line(fold, event, r))
            bs = " ".join(
                f"{k:g}: {scores[(ours, 'BS')][k]:.4f}/{scores[(other, 'BS')][k]:.4f}"
                for k in sorted(scores[(ours, "BS")])
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

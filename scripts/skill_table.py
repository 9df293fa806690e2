"""Markdown skill table (README "Skill" section) from the metrics.csv of `nowcast evaluate`.

Usage: python scripts/skill_table.py evaluation/metrics.csv [--leads 5,15,30,60] [--thresholds 0.5,1,5,10]
Prints CSI per threshold and MSE at the given lead times, and POD/FAR/bias at 1 mm/h, per method.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics", type=Path)
    parser.add_argument("--leads", default="5,15,30,60")
    parser.add_argument("--thresholds", default="0.5,1,5,10")
    args = parser.parse_args()
    leads = [float(x) for x in args.leads.split(",")]
    thresholds = [float(x) for x in args.thresholds.split(",")]
    values: dict[tuple[str, str, float, float], float] = {}
    methods: list[str] = []
    with open(args.metrics, newline="") as fh:
        for row in csv.DictReader(fh):
            thr = float(row["threshold"]) if row["threshold"] not in ("", "nan") else math.nan
            values[(row["method"], row["score"], float(row["lead_min"]), thr)] = float(row["value"])
            if row["method"] not in methods:
                methods.append(row["method"])

    def get(method: str, score: str, lead: float, thr: float = math.nan) -> str:
        for (m, s, l, t), v in values.items():
            if m == method and s == score and l == lead and (t == thr or (math.isnan(t) and math.isnan(thr))):
                return f"{v:.3f}"
        return "–"

    rows_by_score: dict[str, list[list[str]]] = defaultdict(list)
    for m in methods:
        for t in thresholds:
            rows_by_score["CSI"].append([m, f"{t:g}"] + [get(m, "CSI", l, t) for l in leads])
        rows_by_score["MSE"].append([m] + [get(m, "MSE", l) for l in leads])
        rows_by_score["POD/FAR/bias ≥1"].append(
            [m] + [f"{get(m, 'POD', l, 1.0)} / {get(m, 'FAR', l, 1.0)} / {get(m, 'BIAS', l, 1.0)}" for l in leads]
        )
    lead_cols = " | ".join(f"{l:g} min" for l in leads)
    print(
        f"CSI (event: rain ≥ threshold)\n\n| method | threshold (mm/h) | {lead_cols} |\n|---|---|" + "---|" * len(leads)
    )
    for r in rows_by_score["CSI"]:
        print("| " + " | ".join(r) + " |")
    print(f"\nMSE (mm²/h²)\n\n| method | {lead_cols} |\n|---|" + "---|" * len(leads))
    for r in rows_by_score["MSE"]:
        print("| " + " | ".join(r) + " |")
    print(f"\nPOD / FAR / frequency bias at 1 mm/h\n\n| method | {lead_cols} |\n|---|" + "---|" * len(leads))
    for r in rows_by_score["POD/FAR/bias ≥1"]:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()

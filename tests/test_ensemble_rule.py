"""``scripts.research.ensemble_folds --rule``: docs/probabilistic.md's rule for keeping a change to the ensemble."""

from __future__ import annotations

import csv
from pathlib import Path

from scripts.research.ensemble_folds import rule


def _write(root: Path, event: str, crps: float, bs: float, ss: list[float]) -> None:
    (root / event).mkdir(parents=True)
    with open(root / event / "metrics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "lead_min", "threshold", "score", "value"])
        for k, s in enumerate(ss):
            lead = 5 * (k + 1)
            w.writerow(["ensemble", lead, "", "CRPS", crps])
            w.writerow(["ensemble", lead, "", "SPREAD_SKILL", s])
            w.writerow(["ensemble", lead, 1.0, "BS", bs])
            w.writerow(["ensemble", lead, 5.0, "BS", 99.0])  # another threshold: not read


def test_rule_keeps_a_change_only_when_every_condition_holds(tmp_path: Path) -> None:
    before = tmp_path / "before"
    _write(before, "knmi_netherlands_20100826", 0.20, 0.06, [0.70, 0.85])
    _write(before, "bom_melbourne_20180616", 0.40, 0.08, [0.90, 0.75])
    good = tmp_path / "good"
    _write(good, "knmi_netherlands_20100826", 0.19, 0.06, [0.80, 0.95])
    _write(good, "bom_melbourne_20180616", 0.40, 0.079, [1.00, 0.85])
    text, keep = rule(good, before, 1.0)
    assert keep and "keep the change (2 events)" in text

    worse_crps = tmp_path / "crps"
    _write(worse_crps, "knmi_netherlands_20100826", 0.21, 0.06, [0.80, 0.95])
    _write(worse_crps, "bom_melbourne_20180616", 0.40, 0.079, [1.00, 0.85])
    assert not rule(worse_crps, before, 1.0)[1]

    left = tmp_path / "left"  # the mean moves toward 1, but a lead inside the band (0.85) leaves it
    _write(left, "knmi_netherlands_20100826", 0.19, 0.06, [1.10, 1.25])
    _write(left, "bom_melbourne_20180616", 0.40, 0.079, [1.00, 0.85])
    text, keep = rule(left, before, 1.0)
    assert not keep and "no lead leaves 0.8-1.2: NO" in text

    same = rule(before, before, 1.0)
    assert not same[1] and "moves toward 1: NO" in same[0]  # no change is not an improvement

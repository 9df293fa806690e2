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


def _write_both(path: Path, rows: dict[str, tuple[float, list[float], list[float]]]) -> None:
    """metrics.csv with, per method, a CRPS per lead, BS at 1 mm/h per lead and spread-skill per lead."""
    path.mkdir(parents=True)
    with open(path / "metrics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "lead_min", "threshold", "score", "value"])
        for method, (crps, bs, ss) in rows.items():
            for k, (b, s) in enumerate(zip(bs, ss)):
                w.writerow([method, 5 * (k + 1), "", "CRPS", crps])
                w.writerow([method, 5 * (k + 1), 1.0, "BS", b])
                w.writerow([method, 5 * (k + 1), "", "SPREAD_SKILL", s])


def test_seed_means_read_the_targets_on_the_average_of_the_seeds(tmp_path: Path) -> None:
    """``ensemble_seeds``: two seeds of one event. Worked by hand: CRPS 0.30 and 0.50 against 0.40 and 0.40
    give seed ratios 0.75 and 1.25 and a mean ratio 0.40 / 0.40 = 1; BS per lead (0.10, 0.30) and (0.20,
    0.20) against (0.20, 0.20) twice: seed 2 alone is no worse at both leads, but the seed means (0.15,
    0.25) are no worse at lead 1 only; spread-skill (0.7, 1.0) and (0.9, 1.4) average to (0.8, 1.2), both
    inside 0.8-1.2 although each seed has a lead outside."""
    from scripts.research.ensemble_seeds import event_row, fold_row
    from scripts.research.ensemble_folds import _read

    event = "bom_melbourne_20180616"
    _write_both(
        tmp_path / "1" / event, {"ensemble": (0.30, [0.10, 0.30], [0.7, 1.0]), "steps": (0.40, [0.2, 0.2], [1, 1])}
    )
    _write_both(
        tmp_path / "2" / event, {"ensemble": (0.50, [0.20, 0.20], [0.9, 1.4]), "steps": (0.40, [0.2, 0.2], [1, 1])}
    )
    r = event_row([_read(tmp_path / s / event / "metrics.csv", 1.0) for s in ("1", "2")])
    assert abs(r["crps_o"] - 0.40) < 1e-12 and abs(r["crps_s"] - 0.40) < 1e-12
    assert (round(r["ratio_min"], 12), round(r["ratio_max"], 12)) == (0.75, 1.25)
    assert abs(r["bs_o"] - 0.20) < 1e-12 and r["bs_ok"] == 1 and r["leads"] == 2
    assert r["ss_in"] == 2 and abs(r["ss_o_min"] - 0.8) < 1e-12 and abs(r["ss_o_max"] - 1.2) < 1e-12
    f = fold_row([r, r | {"bs_ok": 2, "ratio_max": 1.5}])
    assert f["bs_ok"] == 3 and f["leads"] == 4 and f["ratio_max"] == 1.5

"""``scripts/research/folds.py readme``: the README's Skill table rebuilt from fold evaluations (issue 12)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


@pytest.fixture
def folds():
    """``scripts/research/folds.py``."""
    from scripts.research import folds

    return folds


def _metrics(path: Path, csi1: dict[str, list[float]], mse: dict[str, list[float]]) -> None:
    """A metrics.csv as ``nowcast evaluate`` writes it: CSI, bias at 1 mm/h and MSE per lead (5, 10 min)."""
    path.mkdir(parents=True)
    with open(path / "metrics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "lead_min", "threshold", "score", "value"])
        for m, values in csi1.items():
            for lead, v in zip((5, 10), values):
                w.writerow([m, lead, 1.0, "CSI", v])
                w.writerow([m, lead, 5.0, "CSI", v / 2])
                w.writerow([m, lead, 1.0, "BIAS", 1.0 if m == "model" else 0.9])
                w.writerow([m, lead, "", "MSE", mse[m][(5, 10).index(lead)]])


def test_readme_table_is_the_mean_over_held_out_events_and_replaces_only_the_marked_block(folds, tmp_path):
    root = tmp_path / "folds"
    methods = folds.METHODS  # model, extrapolation, sprog, persistence
    for i, event in enumerate(folds.FOLD_EVENTS["B"]):  # held out from fold A
        base = 0.5 + 0.1 * i  # events' CSI 0.5, 0.6, 0.7, 0.8 (+ per-method offsets)
        _metrics(
            root / event,
            {m: [base + 0.02 * k, base + 0.02 * k] for k, m in enumerate(methods)},
            {m: [1.0 + k, 3.0 + k] for k, m in enumerate(methods)},
        )
    for event in folds.FOLD_EVENTS["A"]:  # held out from fold B: every event the same
        _metrics(root / event, {m: [0.4, 0.2] for m in methods}, {m: [2.0, 2.0] for m in methods})

    block = folds.readme_block(root, "docs/x.md")
    # fold B's events: model mean (0.5 + 0.6 + 0.7 + 0.8) / 4 = 0.65; extrapolation +0.02, S-PROG +0.04,
    # persistence +0.06; fold A's events: (0.4 + 0.2) / 2 = 0.3 for every method
    assert "| BoM Brisbane, BoM Melbourne, OPERA 2018, MRMS | **0.650** | 0.670 | 0.690 | 0.710 |" in block
    assert "| KNMI, MeteoSwiss 2015, MeteoSwiss 2016, OPERA CIRRUS | **0.300** | 0.300 | 0.300 | 0.300 |" in block
    # MSE: model (1 + 3) / 2 = 2.00 and 2.00; extrapolation (2 + 4) / 2 = 3.00 and 2.00
    assert (
        "Frequency bias at 1 mm/h 1.00 and 1.00; MSE 2.00 and 2.00 mm²/h² against extrapolation's 3.00 and 2.00"
        in block
    )
    assert "`docs/x.md`" in block

    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{folds.README_BEGIN}\nold table\n{folds.README_END}\n\nafter\n")
    folds.write_readme(readme, block)
    folds.write_readme(readme, block)  # idempotent
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n") and text.endswith(f"{folds.README_END}\n\nafter\n")
    assert "old table" not in text and text.count("**0.650**") == 1

    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="expected one"):
        folds.write_readme(readme, block)
    (root / folds.FOLD_EVENTS["A"][0] / "metrics.csv").unlink()
    for event in folds.FOLD_EVENTS["A"][1:]:
        (root / event / "metrics.csv").unlink()
    with pytest.raises(SystemExit, match="expected both folds scored"):
        folds.readme_block(root, "docs/x.md")


def test_the_shipped_readme_has_one_skill_block(folds):
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert text.count(folds.README_BEGIN) == 1 and text.count(folds.README_END) == 1
    assert text.index(folds.README_BEGIN) < text.index(folds.README_END)

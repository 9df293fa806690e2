"""``evaluate`` scaled out: forecast times split among ranks, counts merged on rank 0 (issue 16)."""

from __future__ import annotations

import dataclasses

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from nowcast.verification import metrics
from nowcast.models.checkpoint import model_from_checkpoint
from nowcast.verification.evaluate import EvaluateSettings, evaluate_files, rank_share, Verification, run_evaluation
from nowcast.verification.results import merge_evaluations
from nowcast.io import open_archive
from nowcast.transforms import Transform

from tests.conftest import moving_rain

REPO = Path(__file__).resolve().parents[1]
SIZE = (32, 40)  # multiples of the tiny model's total stride (8)


def _archive_files(radar_file: Callable[..., Path]) -> list[Path]:
    """Two files of one archive: 11 and 10 frames (4 and 3 forecast times of the tiny model, 4 in + 4 out)."""
    a = moving_rain(11, SIZE, shift=(1, 1), seed=1)
    a[:, :2, :3] = np.nan  # a corner without coverage
    b = moving_rain(10, SIZE, shift=(0, 1), seed=2)
    return [
        radar_file("a.nc", frames=11, size=SIZE, values=a, start="2021-06-01T12:00:00"),
        radar_file("b.nc", frames=10, size=SIZE, values=b, start="2021-06-02T12:00:00"),
    ]


def test_rank_share_cuts_the_cases_into_contiguous_blocks() -> None:
    cases = [(0, [0, 1, 2]), (1, [0, 2, 4, 6])]  # 7 cases: blocks of 2, 2 and 3 (7 * r // 3)
    assert rank_share(cases, 0, 3) == [(0, [0, 1])]
    assert rank_share(cases, 1, 3) == [(0, [2]), (1, [0])]
    assert rank_share(cases, 2, 3) == [(1, [2, 4, 6])]
    assert rank_share(cases, 0, 1) == cases
    assert rank_share([(0, [5])], 1, 2) == [(0, [5])] and rank_share([(0, [5])], 0, 2) == []
    with pytest.raises(ValueError, match="rank"):
        rank_share(cases, 3, 3)


def test_merged_shares_equal_one_process(radar_file: Callable[..., Path], tiny_checkpoint: Path) -> None:
    files = _archive_files(radar_file)
    net, cfg, _ = model_from_checkpoint(tiny_checkpoint)
    archive = open_archive([str(f) for f in files], time_step=300, min_frames=8)
    v = Verification(
        in_frames=4, steps=4, baselines=("persistence",), thresholds=(0.1, 1.0, 5.0), fss_scales=(3,), batch_size=1
    )
    models = {"model": (net, Transform.from_config(cfg))}
    whole = run_evaluation(archive, v, models)
    parts = [run_evaluation(archive, dataclasses.replace(v, rank=r, world=3), models) for r in range(3)]
    assert [p.n_cases for p in parts] == [2, 2, 3]  # 4 + 3 = 7 forecast times
    merged = merge_evaluations(parts)
    assert merged.n_cases == whole.n_cases == 7
    assert (
        (merged.first_t0, merged.last_t0)
        == (whole.first_t0, whole.last_t0)
        == ("2021-06-01T12:15:00Z", "2021-06-02T12:25:00Z")
    )
    assert merged.example is not None and whole.example is not None and merged.example.t0 == whole.example.t0
    for m in ("model", "persistence"):
        for name in metrics.COUNTS:
            np.testing.assert_array_equal(getattr(merged.scores[m], name), getattr(whole.scores[m], name))
        for name in metrics.SUMS + metrics.FSS_SUMS:  # float sums: same terms, another order
            np.testing.assert_allclose(
                getattr(merged.fss[m] if name.startswith("fss") else merged.scores[m], name),
                getattr(whole.fss[m] if name.startswith("fss") else whole.scores[m], name),
                rtol=1e-12,
            )
        assert whole.scores[m].hits.sum() > 0


def _counts(path: Path) -> dict[tuple[str, str, str, str], tuple[str, ...]]:
    with open(path, newline="") as fh:
        return {
            (r["method"], r["lead_min"], r["threshold"], r["score"]): tuple(r[c] for c in metrics.COUNTS)
            for r in csv.DictReader(fh)
            if r["hits"]
        }


@pytest.mark.slow  # three processes importing torch: 15 s on an idle 2-core machine, minutes on a loaded one
def test_torchrun_two_gloo_ranks_give_the_counts_of_one_process(
    radar_file: Callable[..., Path], tiny_checkpoint: Path, tmp_path: Path
) -> None:
    files = [str(f) for f in _archive_files(radar_file)]
    one = tmp_path / "one"
    evaluate_files(
        files,
        EvaluateSettings(
            model=tiny_checkpoint, baselines=("persistence",), steps=4, out_dir=one, plots=False, device="cpu"
        ),
    )
    two = tmp_path / "two"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "nowcast",
        "evaluate",
        *files,
        "--model",
        str(tiny_checkpoint),
        "--baselines",
        "persistence",
        "--steps",
        "4",
        "--out",
        str(two),
        "--device",
        "cpu",
        "--threads",
        "1",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("CSI (event: rain >= 1 mm/h)") == 1  # rank 0 alone prints the table
    assert "7 forecast times" in proc.stdout
    assert "rank 1 of 2 verifies 4 of the 7 forecast times" in proc.stderr
    counts_one, counts_two = _counts(one / "metrics.csv"), _counts(two / "metrics.csv")
    assert len(counts_one) == 2 * 4 * 4 * 6  # methods x leads x thresholds x categorical scores
    assert counts_two == counts_one
    s1, s2 = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    assert s1["n_cases"] == s2["n_cases"] == 7 and s2["settings"]["ranks"] == 2 and s1["settings"]["ranks"] == 1
    assert (s1["first_t0"], s1["last_t0"]) == (s2["first_t0"], s2["last_t0"])
    assert s2["scores_mean_over_leads"]["model"]["MSE"] == pytest.approx(s1["scores_mean_over_leads"]["model"]["MSE"])


@pytest.mark.parametrize("device, found", [("cuda", "expected a CUDA GPU, found none"), ("gpu", "expected auto, cpu")])
def test_device_that_is_not_there_is_a_one_line_error(
    radar_file: Callable[..., Path], tiny_checkpoint: Path, device: str, found: str
) -> None:
    import torch
    from typer.testing import CliRunner

    from nowcast.cli import app

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    data = radar_file("r.nc", frames=9, size=SIZE)
    for command in (["predict", str(data)], ["evaluate", str(data), "--baselines", "persistence"]):
        result = CliRunner().invoke(app, [*command, "--model", str(tiny_checkpoint), "--device", device])
        assert result.exit_code == 2, result.output
        assert f"--device {device}: {found}" in result.output and "Traceback" not in result.output

"""``nowcast evaluate``: rolling verification, streaming accumulation, reports and the command line."""

from __future__ import annotations

import dataclasses

import csv
import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from nowcast.verification import metrics
from nowcast.models.checkpoint import model_from_checkpoint
from nowcast.cli import app
from nowcast.verification.evaluate import EvaluateSettings, evaluate_files, Verification, run_evaluation
from nowcast.io import open_archive
from nowcast.forecast import forecast_array
from nowcast.transforms import Transform

from tests.conftest import moving_rain

REPO = Path(__file__).resolve().parents[1]
SIZE = (32, 40)  # multiples of the tiny model's total stride (8)
PLOTS = ("csi_by_lead.png", "pod_by_lead.png", "far_by_lead.png", "mse_mae_by_lead.png", "example_case.png")


def _moving_file(radar_file: Callable[..., Path], name: str, frames: int, seed: int = 0, **kw) -> Path:
    values = moving_rain(frames, SIZE, shift=(1, 1), seed=seed)
    values[:, :2, :3] = np.nan  # a corner without coverage
    return radar_file(name, frames=frames, size=SIZE, values=values, **kw)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_cli_writes_every_report_and_prints_the_table(
    cli_runner, radar_file: Callable[..., Path], tiny_checkpoint: Path, tmp_path: Path
) -> None:
    data = _moving_file(radar_file, "event.nc", 12)
    out = tmp_path / "rep"
    result = cli_runner.invoke(
        app,
        [
            "evaluate",
            str(data),
            "--model",
            str(tiny_checkpoint),
            "--out",
            str(out),
            "--fss-scales",
            "1,5",
            "--lead",
            "20min",
        ],
    )
    assert result.exit_code == 0, result.output
    table = result.stdout
    assert "CSI (event: rain >= 1 mm/h)" in table and "MSE (mm²/h²)" in table
    for method in ("model", "persistence", "extrapolation"):
        assert sum(line.startswith(method) for line in table.splitlines()) == 2  # a CSI row and an MSE row
    assert "5 forecast times" in table  # 12 frames - (4 in + 4 out) + 1
    assert "; methods: model, persistence and extrapolation\n" in table

    for name in (*PLOTS, "fss_by_lead.png"):
        png = out / name
        assert png.stat().st_size > 5000, name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not list(out.glob(".*"))  # no temporary files left behind

    rows = _read_csv(out / "metrics.csv")
    assert list(rows[0]) == list(metrics.ROW_FIELDS)
    methods, leads, thresholds, fss = 3, 4, 4, 2  # 4 lead times of the tiny model; FSS at 1 mm/h, 2 scales
    n_cat, n_cont = len(metrics.CATEGORICAL), len(metrics.CONTINUOUS)
    assert len(rows) == methods * leads * (thresholds * n_cat + n_cont + fss)
    keys = {(r["method"], r["lead_min"], r["threshold"], r["score"]) for r in rows}
    assert len(keys) == len(rows)  # exactly one row per (method, lead, threshold, score)
    assert {r["lead_min"] for r in rows} == {"5", "10", "15", "20"}
    csi = [r for r in rows if r["score"] == "CSI"]
    assert all(
        int(r["hits"]) + int(r["misses"]) + int(r["false_alarms"]) + int(r["correct_negatives"]) > 0 for r in csi
    )
    assert all(r["threshold"] == "" and r["hits"] == "" for r in rows if r["score"] == "MSE")

    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == 5 and summary["files"] == [str(data)]
    assert summary["settings"]["in_frames"] == 4 and summary["settings"]["steps"] == 4
    assert summary["settings"]["model"]["checkpoint"] == str(tiny_checkpoint)
    assert set(summary["scores_mean_over_leads"]) == {"model", "persistence", "extrapolation"}
    assert set(summary["wall_time_s"]) >= {"model", "persistence", "extrapolation"}
    assert summary["scores_mean_over_leads"]["persistence"]["CSI"]["1"] > 0


def test_persistence_of_an_unchanging_sequence_scores_csi_one_at_every_lead(
    radar_file: Callable[..., Path], tmp_path: Path
) -> None:
    still = np.repeat(moving_rain(1, SIZE), 16, axis=0)
    data = radar_file("still.nc", frames=16, size=SIZE, values=still)
    out = tmp_path / "rep"
    table = evaluate_files(
        [data], EvaluateSettings(no_model=True, baselines=("persistence",), steps=3, out_dir=out, plots=False)
    )
    assert "persistence" in table
    rows = _read_csv(out / "metrics.csv")
    assert {float(r["value"]) for r in rows if r["score"] in ("CSI", "POD")} == {1.0}
    assert {float(r["value"]) for r in rows if r["score"] in ("FAR", "MSE", "MAE")} == {0.0}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == 16 - (3 + 3) + 1  # without a model: the baselines' 3 input frames
    assert summary["settings"]["in_frames"] == 3
    assert summary["settings"]["model"] is None and summary["settings"]["time_step_s"] == 300


def test_extrapolation_beats_persistence_on_rain_moving_one_pixel_per_step(radar_file: Callable[..., Path]) -> None:
    archive = open_archive([_moving_file(radar_file, "moving.nc", 14)], time_step=300)
    ev = run_evaluation(
        archive, Verification(in_frames=3, steps=6, baselines=("persistence", "extrapolation"), stride=2)
    )
    k = ev.scores["persistence"].thresholds.index(1.0)
    csi = {m: metrics.compute(ev.scores[m])["CSI"][:, k] for m in ev.methods}
    assert ev.n_cases == len(range(0, 14 - 9 + 1, 2))
    assert np.all(csi["extrapolation"][1:] > csi["persistence"][1:]), csi
    assert csi["extrapolation"][0] >= csi["persistence"][0]


def test_two_files_together_pool_the_counts_of_each(radar_file: Callable[..., Path], tiny_checkpoint: Path) -> None:
    a = _moving_file(radar_file, "a.nc", 11, seed=1)
    b = _moving_file(radar_file, "b.nc", 10, seed=2, start="2021-06-02T08:00:00")
    model, cfg, _ = model_from_checkpoint(tiny_checkpoint)
    v = Verification(in_frames=4, steps=4, baselines=("persistence", "extrapolation"), fss_scales=(3,), batch_size=2)
    models = {"model": (model, Transform.from_config(cfg))}
    both = run_evaluation(open_archive([a, b], time_step=300), v, models)
    each = [run_evaluation(open_archive([f], time_step=300), v, models) for f in (a, b)]
    assert both.n_cases == each[0].n_cases + each[1].n_cases == 4 + 3
    for m in both.methods:
        pooled = metrics.merge(each[0].scores[m], each[1].scores[m])
        for name in metrics.COUNTS:
            np.testing.assert_array_equal(getattr(both.scores[m], name), getattr(pooled, name), err_msg=f"{m} {name}")
        for name in metrics.SUMS:
            np.testing.assert_allclose(
                getattr(both.scores[m], name), getattr(pooled, name), rtol=1e-10, err_msg=f"{m} {name}"
            )
        fss = metrics.merge(each[0].fss[m], each[1].fss[m])
        np.testing.assert_allclose(both.fss[m].fss_sq_diff, fss.fss_sq_diff, rtol=1e-10)
    assert both.files == [str(a), str(b)]


def test_model_scores_equal_training_validation_on_the_same_windows(
    radar_file: Callable[..., Path], tiny_checkpoint: Path
) -> None:
    """What ``train._validate`` does per window (forecast_array, then metrics.accumulate) gives the same numbers."""
    data = _moving_file(radar_file, "val.nc", 13)
    model, cfg, _ = model_from_checkpoint(tiny_checkpoint)
    transform = Transform.from_config(cfg)
    archive = open_archive([data], time_step=300)
    frames = np.asarray(archive.segments[0].values, dtype=np.float32)[:, None]  # (T, 1, H, W)
    expected = metrics.init_scores(4, cfg.eval.thresholds, cfg.eval.comparison)
    for start in range(0, 13 - 8 + 1, 2):
        pred = forecast_array(model, transform, frames[start : start + 4][None], 4)
        metrics.accumulate(expected, pred, frames[start + 4 : start + 8][None])
    for baselines, common in (((), True), (("extrapolation",), False)):
        v = Verification(
            in_frames=4,
            steps=4,
            baselines=baselines,
            thresholds=cfg.eval.thresholds,
            comparison=cfg.eval.comparison,
            stride=2,
            common_mask=common,
            batch_size=2,
        )
        ev = run_evaluation(archive, v, {"model": (model, transform)})
        got = ev.scores["model"]
        for name in metrics.COUNTS:
            np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
        for name in metrics.SUMS:
            np.testing.assert_allclose(getattr(got, name), getattr(expected, name), rtol=1e-6, err_msg=name)


def test_common_mask_scores_every_method_on_the_same_pixels(radar_file: Callable[..., Path]) -> None:
    archive = open_archive([_moving_file(radar_file, "m.nc", 10)], time_step=300)
    v = Verification(in_frames=3, steps=3, baselines=("persistence", "extrapolation"))
    common = run_evaluation(archive, v)
    own = run_evaluation(archive, dataclasses.replace(v, common_mask=False))
    np.testing.assert_array_equal(common.scores["persistence"].n, common.scores["extrapolation"].n)
    # rain moves in from outside the domain, where extrapolation has no value: fewer pixels than persistence alone
    assert np.all(own.scores["extrapolation"].n < own.scores["persistence"].n)
    np.testing.assert_array_equal(common.scores["extrapolation"].n, own.scores["extrapolation"].n)


def test_windows_never_cross_a_gap_and_the_example_is_the_rainiest_t0(radar_file: Callable[..., Path]) -> None:
    values = np.repeat(moving_rain(1, SIZE), 14, axis=0) * np.linspace(0.2, 1.0, 14)[:, None, None]
    values[11:] *= 0.1  # the rainiest input frame is frame 10
    times = [300 * i for i in range(7)] + [300 * i for i in range(9, 16)]  # 2 frames missing after the 7th
    data = radar_file("gap.nc", size=SIZE, times=times, values=values)
    archive = open_archive([data], time_step=300, min_frames=5)
    ev = run_evaluation(archive, Verification(in_frames=3, steps=2, baselines=("persistence",)))
    assert [s.sizes["time"] for s in archive.segments] == [7, 7]
    assert ev.n_cases == 3 + 3
    assert ev.example is not None and ev.example.t0 == "2021-06-01T13:00:00Z"  # frame 10, 12 steps after 12:00


def test_cli_errors_exit_2_with_one_line(
    cli_runner, radar_file: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = radar_file("e.nc", frames=14, size=SIZE)
    runner = cli_runner
    result = runner.invoke(app, ["evaluate", str(data), "--no-model", "--out", str(tmp_path / "r1")])
    assert result.exit_code == 2  # without a model: 3 input frames + 12 lead times
    assert "expected a run of at least 15 frames" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r1").exists()  # failed before any work

    result = runner.invoke(app, ["evaluate", str(data), "--no-model", "--baselines", "persistence,optical"])
    assert result.exit_code == 2 and "expected one of persistence, extrapolation" in result.stderr

    import nowcast.models.checkpoint

    monkeypatch.setattr(nowcast.models.checkpoint, "default_model_path", lambda: tmp_path / "missing" / "default.pt")
    result = runner.invoke(app, ["evaluate", str(data), "--baselines", "persistence"])
    assert result.exit_code == 2 and "--no-model" in result.stderr and "default.pt" in result.stderr

    result = runner.invoke(app, ["evaluate", str(data), "--no-model", "--baselines", "persistence", "--steps", "13"])
    assert result.exit_code == 2 and "at least 16 frames" in result.stderr

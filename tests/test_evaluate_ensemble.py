"""``nowcast evaluate --members N``: the ensembles' scores, recomputed independently, reproducible and splittable."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from nowcast.cli import app
from nowcast.io import open_archive
from nowcast.motion.flow import motion_field
from nowcast.nowcasts import resolve_motion_perturbation
from nowcast.nowcasts.baselines import steps_ensemble
from nowcast.nowcasts.ensemble import EnsembleSettings, ensemble_forecast
from nowcast.verification import metrics, probscores
from nowcast.verification.ensembles import EnsembleEvaluation, case_seed
from nowcast.verification.evaluate import EvaluateSettings, evaluate_files, rank_share, Verification, run_evaluation
from nowcast.verification.results import merge_evaluations

from tests.conftest import moving_rain

SIZE = (32, 40)
MEMBERS, STEPS, IN_FRAMES = 4, 3, 3
PROB_SCORES = ("CRPS", "BS", "BSS", "ROC_AUC", "SPREAD_SKILL")
MOTION = resolve_motion_perturbation(EnsembleEvaluation(1).motion_perturbation, 1.0)  # the default on 1 km pixels
GRID = dict(motion_perturbation=MOTION, km_per_px=1.0, step_min=5.0)  # radar_file: 1 km pixels, 5 min apart


def _data(radar_file: Callable[..., Path], frames: int) -> Path:
    values = moving_rain(frames, SIZE, shift=(1, 1), seed=3)
    values[:, :2, :3] = np.nan  # a corner without coverage
    return radar_file("ens.nc", frames=frames, size=SIZE, values=values)


def _run(path: Path, seed: int = 3, **kw) -> object:
    archive = open_archive([path], time_step=300)
    kw = dict(in_frames=IN_FRAMES, steps=STEPS, baselines=("persistence", "steps")) | kw
    return run_evaluation(archive, Verification(ensemble=EnsembleEvaluation(MEMBERS, seed), **kw))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _same_rows(a: list[dict], b: list[dict]) -> None:
    assert [(r["method"], r["lead_min"], r["score"]) for r in a] == [
        (r["method"], r["lead_min"], r["score"]) for r in b
    ]
    got, want = np.array([r["value"] for r in a], float), np.array([r["value"] for r in b], float)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0, equal_nan=True)


def _recompute(frames: np.ndarray, n_cases: int, thresholds: tuple[float, ...], seed: int) -> dict:
    """Members of every case made again outside ``evaluate``, on the common mask of persistence and both means."""
    prob = {m: probscores.init_probscores(STEPS, thresholds, MEMBERS) for m in ("ensemble", "steps")}
    det = {m: metrics.init_scores(STEPS, thresholds) for m in ("ensemble_mean", "steps_mean")}
    pooled: dict[str, list] = {"ensemble": [], "steps": [], "observed": []}
    for a in range(n_cases):
        x, obs = frames[a : a + IN_FRAMES], frames[a + IN_FRAMES : a + IN_FRAMES + STEPS]
        velocity, s = motion_field(x), case_seed(seed, 0, a)
        members = {
            "ensemble": ensemble_forecast(x, velocity, STEPS, EnsembleSettings(members=MEMBERS, seed=s, **GRID)),
            "steps": steps_ensemble(x, STEPS, MEMBERS, s, velocity, bps=(1.0, 5.0) if MOTION == "bps" else None),
        }
        means = {m: v.astype(np.float32).mean(0) for m, v in members.items()}
        valid = np.isfinite(obs) & np.isfinite(x[-1]) & np.isfinite(means["ensemble"]) & np.isfinite(means["steps"])
        o = np.where(valid, obs, np.nan)
        for m, v in members.items():
            probscores.accumulate(prob[m], v, o)
            metrics.accumulate(det[f"{m}_mean"], means[m][:, None], o[:, None], batched=False)
            pooled[m].append(v)
        pooled["observed"].append(o)
    return {"prob": prob, "det": det, **{k: np.stack(v, axis=-3) for k, v in pooled.items()}}


def test_scores_equal_those_recomputed_from_the_same_members(
    radar_file: Callable[..., Path], pysteps_installed
) -> None:
    path = _data(radar_file, 9)
    ev = _run(path)
    assert ev.methods == ["persistence", "ensemble_mean", "steps_mean"] and list(ev.prob) == ["ensemble", "steps"]
    frames = np.asarray(open_archive([path], time_step=300).segments[0].values, dtype=np.float32)
    thresholds = ev.scores["persistence"].thresholds
    ref = _recompute(frames, ev.n_cases, thresholds, seed=3)
    rows = ev.rows()
    for m in ("ensemble", "steps"):
        _same_rows([r for r in rows if r["method"] == m], probscores.to_rows(ref["prob"][m], m, ev.lead_min))
        crps = probscores.compute(ev.prob[m])["CRPS"]
        k = thresholds.index(1.0)
        for lead in range(STEPS):  # CRPS and a Brier score by hand, on the pooled cases
            x, o = ref[m][:, lead].astype(float), ref["observed"][lead].astype(float)  # (M, cases, H, W), (cases, H, W)
            ok = np.isfinite(o) & np.isfinite(x).all(0)
            x, o = x[:, ok], o[ok]
            # the energy form; not pySTEPS' CRPS, which drops a member tied with the observation (here
            # frequent: values in steps of 0.01 mm/h, members probability-matched to the last frame)
            spread = np.abs(x[:, None] - x[None]).sum((0, 1)) / (2 * MEMBERS**2)
            assert crps[lead] == pytest.approx((np.abs(x - o).mean(0) - spread).mean(), rel=1e-10)
            p, yes = (x >= 1.0).mean(0), o >= 1.0
            assert probscores.compute(ev.prob[m])["BS"][lead, k] == pytest.approx(((p - yes) ** 2).mean(), rel=1e-12)
        mean = f"{m}_mean"  # the ensemble mean is a deterministic method: its CSI is metrics' on the mean
        for name in metrics.COUNTS:
            np.testing.assert_array_equal(getattr(ev.scores[mean], name), getattr(ref["det"][mean], name))
        np.testing.assert_array_equal(metrics.compute(ev.scores[mean])["CSI"], metrics.compute(ref["det"][mean])["CSI"])


def test_two_shares_merged_equal_one_pass(radar_file: Callable[..., Path], pysteps_installed) -> None:
    path = _data(radar_file, 10)
    one = _run(path)
    parts = [_run(path, rank=r, world=2) for r in range(2)]
    assert [p.n_cases for p in parts] == [len(rank_share([(0, list(range(5)))], r, 2)[0][1]) for r in range(2)]
    merged = merge_evaluations(parts)
    assert merged.n_cases == one.n_cases == 5
    for m in one.prob:
        for name in probscores.ADDITIVE:
            np.testing.assert_allclose(getattr(merged.prob[m], name), getattr(one.prob[m], name), rtol=1e-12)
    _same_rows(merged.rows(), one.rows())


def test_cli_writes_the_ensemble_rows_summary_table_and_figures(
    cli_runner, radar_file: Callable[..., Path], tmp_path: Path, pysteps_installed
) -> None:
    path = _data(radar_file, 6)  # 3 input frames without a model: 1 case
    args = ["evaluate", str(path), "--no-model", "--baselines", "persistence,steps", "--steps", str(STEPS)]
    args += ["--members", str(MEMBERS), "--threads", "1"]
    result = cli_runner.invoke(app, [*args, "--seed", "5", "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "CRPS (mm/h), ensembles of 4 members" in result.stdout and "BSS (event: rain >= 1 mm/h)" in result.stdout
    for name in ("reliability.png", "rank_histogram.png", "crps_by_lead.png"):
        assert (tmp_path / "a" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    rows = _read_csv(tmp_path / "a" / "metrics.csv")
    scores = {(r["method"], r["score"]) for r in rows}
    assert {("ensemble", s) for s in PROB_SCORES} | {("steps", s) for s in PROB_SCORES} <= scores
    assert {
        ("ensemble_mean", "CSI"),
        ("steps_mean", "MSE"),
        ("ensemble", "REL_00_FREQ"),
        ("steps", "RANK_04"),
    } <= scores
    n_thr = 4  # the default eval thresholds
    per_method = STEPS * (len(probscores.PER_LEAD) + n_thr * (len(probscores.PER_THRESHOLD) + 3 * 10) + MEMBERS + 1)
    assert sum(r["method"] == "ensemble" for r in rows) == per_method
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["ensemble_methods"] == ["ensemble", "steps"]
    assert summary["settings"]["ensemble"]["members"] == MEMBERS and summary["settings"]["ensemble"]["seed"] == 5
    entry = summary["scores_mean_over_leads"]["steps"]
    crps = [float(r["value"]) for r in rows if r["method"] == "steps" and r["score"] == "CRPS"]
    assert entry["CRPS"] == pytest.approx(np.mean(crps)) and set(entry["BSS"]) == {"0.1", "1", "5", "10"}

    again = cli_runner.invoke(app, [*args, "--seed", "5", "--out", str(tmp_path / "b")])
    other = cli_runner.invoke(app, [*args, "--seed", "6", "--out", str(tmp_path / "c")])
    assert again.exit_code == other.exit_code == 0
    assert (tmp_path / "b" / "metrics.csv").read_bytes() == (tmp_path / "a" / "metrics.csv").read_bytes()
    crps_other = [float(r["value"]) for r in _read_csv(tmp_path / "c" / "metrics.csv") if r["score"] == "CRPS"]
    assert not np.allclose(crps_other, [float(r["value"]) for r in rows if r["score"] == "CRPS"])


def test_same_seed_same_scores_in_library_calls(radar_file: Callable[..., Path], tmp_path: Path) -> None:
    path = _data(radar_file, 7)
    kw = dict(no_model=True, baselines=("persistence",), steps=2, plots=False, threads=1)
    evaluate_files([path], EvaluateSettings(out_dir=tmp_path / "a", ensemble=EnsembleEvaluation(3, 1), **kw))
    evaluate_files([path], EvaluateSettings(out_dir=tmp_path / "b", ensemble=EnsembleEvaluation(3, 1), **kw))
    a, b = ((tmp_path / d / "metrics.csv").read_text() for d in "ab")
    assert a == b and "ensemble_mean" in a and "steps" not in a


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--members", "0"], "--members"),
        (["--members", "-3"], "--members"),
        (["--members", "2", "--seed", "-1"], "--seed"),
        (["--baselines", "persistence,steps"], "--members"),
    ],
)
def test_cli_refuses_bad_members_and_steps_without_members(
    cli_runner, radar_file: Callable[..., Path], tmp_path: Path, extra: list[str], needle: str
) -> None:
    path = _data(radar_file, 15)
    result = cli_runner.invoke(app, ["evaluate", str(path), "--no-model", "--out", str(tmp_path / "r"), *extra])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()


def test_no_model_needs_only_the_ensembles_inputs(
    cli_runner, radar_file: Callable[..., Path], tmp_path: Path, pysteps_installed
) -> None:
    """A file too short for the shipped model's 12 input frames (as OPERA CIRRUS, 13 frames) is scored
    without a model: 3 input frames (AR(2), Lucas-Kanade) and the lead times that fit."""
    path = _data(radar_file, 8)
    args = ["evaluate", str(path), "--no-model", "--baselines", "persistence,sprog,steps", "--steps", str(STEPS)]
    result = cli_runner.invoke(app, [*args, "--members", "2", "--threads", "1", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["settings"]["in_frames"] == IN_FRAMES and summary["n_cases"] == 8 - (IN_FRAMES + STEPS) + 1
    assert summary["settings"]["model"] is None
    assert {"ensemble", "steps", "sprog"} <= set(summary["scores_mean_over_leads"])

    short = cli_runner.invoke(app, [*args, "--members", "2", "--steps", "6", "--out", str(tmp_path / "s")])
    assert short.exit_code == 2 and "expected a run of at least 9 frames" in short.stderr
    assert "--steps 5" in short.stderr


def test_case_seed_depends_on_the_case_alone() -> None:
    seeds = {case_seed(0, s, a) for s in range(3) for a in range(50)}
    assert len(seeds) == 150 and all(0 <= v < 2**32 for v in seeds)
    assert case_seed(7, 1, 2) == case_seed(7, 1, 2) != case_seed(8, 1, 2)


def test_no_model_ensemble_runs_on_the_device_asked_for(radar_file: Callable[..., Path], tmp_path: Path) -> None:
    """``--no-model --members`` makes our ensemble on ``--device`` (baselines alone stay on the CPU): the CPU
    is recorded in summary.json, and a GPU asked for where there is none is a one-line exit 2."""
    import torch
    from typer.testing import CliRunner

    path = _data(radar_file, 6)
    runner = CliRunner()
    base = ["evaluate", str(path), "--no-model", "--baselines", "persistence", "--members", "2", "--steps", "2"]
    ok = runner.invoke(app, [*base, "--device", "cpu", "--out", str(tmp_path / "cpu")])
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "cpu" / "summary.json").read_text())["settings"]["device"] == "cpu"
    if not torch.cuda.is_available():
        bad = runner.invoke(app, [*base, "--device", "cuda", "--out", str(tmp_path / "gpu")])
        assert bad.exit_code == 2 and "--device cuda: expected a CUDA GPU, found none" in bad.output

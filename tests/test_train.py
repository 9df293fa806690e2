"""Training: artifacts, learning, exact resume, DDP on gloo, Ctrl-C, NaN loss, config errors."""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nowcast.models.checkpoint import load_checkpoint, save_checkpoint
from nowcast.cli import app
from nowcast.config import load_config
from nowcast.errors import CheckpointError, ConfigError, TrainingDivergedError
from nowcast.models.registry import build_model
from nowcast.synth import write_synthetic
import nowcast.training.loop
from nowcast.training.loop import lr_at, run_training
from nowcast.training.losses import masked_loss, soft_csi_loss

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def synth_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("synth") / "s.nc"
    write_synthetic(path, frames=30, size=(64, 64), seed=1)
    return path


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_cli_tiny_run_leaves_every_artifact(cli_runner, synth_file: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = cli_runner.invoke(
        app,
        [
            "train",
            "--config",
            str(TINY),
            "--set",
            f"data.files=[{synth_file}]",
            "--set",
            "train.steps=10",
            "--set",
            "train.val_every=5",
            "--set",
            "train.threads=1",
            "--run-dir",
            str(run),
        ],
    )
    assert result.exit_code == 0, result.output
    for name in ("config.yaml", "metrics.csv", "last.pt", "best.pt", "model.pt"):
        assert (run / name).is_file(), name
    rows = _rows(run)
    assert [int(r["step"]) for r in rows] == [5, 10]
    assert all(r["val_loss"] and r["val_csi_1"] != "" for r in rows)
    assert float(rows[-1]["frames_per_s"]) > 0
    last = load_checkpoint(run / "last.pt")
    assert last["training"]["step"] == 10
    assert "training" not in load_checkpoint(run / "model.pt")
    info = cli_runner.invoke(app, ["info", str(run / "model.pt")])
    assert info.exit_code == 0 and "20,320 parameters" in info.output and str(synth_file.name) in info.output


def test_tiny_model_overfits_one_batch() -> None:
    torch.manual_seed(0)
    cfg = load_config(TINY)
    model = build_model(cfg.model)
    gen = torch.Generator().manual_seed(0)
    # a blob moving one patch per step: learnable, not constant
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    frames = torch.stack([torch.exp(-((yy - 16) ** 2 + (xx - 4 - 3 * t) ** 2) / 20) for t in range(8)])
    batch = frames[None, :, None].repeat(2, 1, 1, 1, 1) * 0.8 + 0.02 * torch.rand(2, 8, 1, 32, 32, generator=gen)
    x, y = batch[:, :4], batch[:, 4:]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        loss = masked_loss(model(x, 4), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < np.mean(losses[:3]) / 10


def test_masked_loss_ignores_nodata_and_balances() -> None:
    pred = torch.zeros(1, 1, 1, 2, 2)
    target = torch.tensor([[[[[1.0, float("nan")], [0.5, 0.0]]]]])
    # valid pixels: errors 1 and 0.5 and 0 -> (mse + mae) = (1 + 0.25 + 0) + (1 + 0.5 + 0) = 2.75 over 3 pixels
    assert float(masked_loss(pred, target)) == pytest.approx(2.75 / 3)
    levels = torch.tensor([0.4, 0.9])
    weights = torch.tensor([1.0, 2.0, 5.0])
    # weights by target level: 1.0 -> 5, 0.5 -> 2, 0.0 -> 1: (2*5 + 0.75*2 + 0) / 3
    assert float(masked_loss(pred, target, "mse+mae", weights, levels)) == pytest.approx((10 + 1.5) / 3)


def test_soft_csi_loss_is_one_minus_hand_counted_csi() -> None:
    nan = float("nan")
    # two lead times of six pixels; the last pixel has no data (its forecast event must not count)
    target = torch.tensor([[1.0, 0.7, 1.0, 0.0, 0.0, nan], [0.0, 0.0, 0.0, 0.0, 0.0, nan]]).view(1, 2, 1, 1, 6)
    # forecasts far from both levels (in units of the sigmoid's width), so the soft counts are the hard ones
    pred = torch.tensor([[2.0, 2.0, -1.0, 2.0, -1.0, 2.0], [2.0, -1.0, -1.0, -1.0, -1.0, 2.0]]).view(1, 2, 1, 1, 6)
    # level 0.5, lead 1: observed {0, 1, 2}, forecast {0, 1, 3}: 2 hits, 1 miss, 1 false alarm -> CSI 1/2
    # level 0.9, lead 1: observed {0, 2}, forecast {0, 1, 3}: 1 hit, 1 miss, 2 false alarms -> CSI 1/4
    # lead 2 has no observed event at either level and is left out
    loss = soft_csi_loss(pred, target, torch.tensor([0.5, 0.9]))
    assert float(loss) == pytest.approx(1 - (0.5 + 0.25) / 2, abs=1e-6)
    assert float(soft_csi_loss(pred, torch.zeros_like(target), torch.tensor([0.5]))) == 0.0


def test_soft_csi_loss_gradient_grows_missed_rain_and_shrinks_false_alarms() -> None:
    target = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 1, 1, 4)
    pred = torch.tensor([0.6, 0.45, 0.55, 0.3]).view(1, 1, 1, 1, 4).requires_grad_()
    soft_csi_loss(pred, target, torch.tensor([0.5])).backward()
    grad = pred.grad.view(-1)
    assert grad[1] < 0  # a near-miss: raising it lowers the loss
    assert grad[2] > 0  # a near false alarm: lowering it lowers the loss


def test_csi_weight_adds_to_the_training_loss(synth_file: Path, tmp_path: Path) -> None:
    common = [
        f"data.files=[{synth_file}]",
        "train.threads=1",
        "train.steps=2",
        "train.log_every=1",
        "train.val_every=1000",
    ]
    plain = run_training(load_config(TINY, common), run_dir=tmp_path / "plain")
    with_csi = run_training(load_config(TINY, common + ["train.csi_weight=0.5"]), run_dir=tmp_path / "csi")
    first_plain, first_csi = float(_rows(plain)[0]["train_loss"]), float(_rows(with_csi)[0]["train_loss"])
    # same seed, same first batch and weights: the first loss differs by 0.5 x (1 - soft CSI), in (0, 0.5]
    assert 0 < first_csi - first_plain <= 0.5
    with pytest.raises(ConfigError, match=r"train.csi_weight: expected >= 0, found -1.0"):
        load_config(TINY, common + ["train.csi_weight=-1"])


def test_lr_schedule_warmup_then_cosine() -> None:
    cfg = load_config(TINY, ["train.steps=100", "train.warmup_steps=10", "train.lr=1.0", "train.min_lr_ratio=0.1"])
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_at(100, cfg) == pytest.approx(0.1)


def test_resume_is_exact(synth_file: Path, tmp_path: Path) -> None:
    common = [
        f"data.files=[{synth_file}]",
        "train.threads=1",
        "train.warmup_steps=0",
        "train.min_lr_ratio=1.0",
        "train.val_every=1000",
        "train.ckpt_every=1000",
        "train.log_every=2",
    ]
    straight = run_training(load_config(TINY, common + ["train.steps=8"]), run_dir=tmp_path / "a")
    half = run_training(load_config(TINY, common + ["train.steps=4"]), run_dir=tmp_path / "b")
    resumed = run_training(load_config(half / "config.yaml", ["train.steps=8"]), resume=half)
    a = load_checkpoint(straight / "model.pt")["state_dict"]
    b = load_checkpoint(resumed / "model.pt")["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    assert [r["train_loss"] for r in _rows(straight)] == [r["train_loss"] for r in _rows(resumed)]


def test_export_best_gives_model_pt_the_weights_of_the_lowest_validation_loss(
    synth_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    common = [f"data.files=[{synth_file}]", "train.threads=1", "train.ckpt_every=1000", "train.val_every=2"]
    # the weights after 4 steps, from a plain run (training is deterministic: see the resume test)
    plain = run_training(load_config(TINY, common + ["train.steps=4"]), run_dir=tmp_path / "plain")
    at_step_4 = load_checkpoint(plain / "model.pt")["state_dict"]
    # validation losses the test decides: the start, then steps 2, 4, 6; the lowest is at step 4
    losses = iter([1.0, 2.0, 0.5, 3.0])
    real = nowcast.training.loop._validate
    monkeypatch.setattr(nowcast.training.loop, "_validate", lambda *a, **k: (next(losses), real(*a, **k)[1]))
    run = run_training(load_config(TINY, common + ["train.steps=6", "train.export=best"]), run_dir=tmp_path / "best")
    rows = [r for r in _rows(run) if r["val_loss"]]
    assert [int(r["step"]) for r in rows] == [0, 2, 4, 6]  # the start is validated too
    model = load_checkpoint(run / "model.pt")
    for key, value in at_step_4.items():
        torch.testing.assert_close(model["state_dict"][key], value, rtol=0, atol=1e-6)
    assert model["provenance"]["final_metrics"]["step"] == 4
    last = load_checkpoint(run / "last.pt")["state_dict"]
    assert any(not torch.equal(last[k], v) for k, v in at_step_4.items())  # not simply the last weights


def test_export_best_gives_back_the_start_when_training_only_gets_worse(
    synth_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    common = [f"data.files=[{synth_file}]", "train.threads=1", "train.ckpt_every=1000", "train.val_every=2"]
    losses = iter([1.0, 1.5, 2.0])
    real = nowcast.training.loop._validate
    monkeypatch.setattr(nowcast.training.loop, "_validate", lambda *a, **k: (next(losses), real(*a, **k)[1]))
    cfg = load_config(TINY, common + ["train.steps=4", "train.export=best"])
    run = run_training(cfg, run_dir=tmp_path / "run")
    torch.manual_seed(cfg.train.seed)  # the start, built as run_training builds it
    start = build_model(cfg.model, cfg.data).state_dict()
    model = load_checkpoint(run / "model.pt")
    for key, value in start.items():
        torch.testing.assert_close(model["state_dict"][key], value, rtol=0, atol=0)
    assert model["provenance"]["final_metrics"]["step"] == 0


def test_resume_on_new_data_restarts_best_and_keeps_provenance(synth_file: Path, tmp_path: Path) -> None:
    common = [f"data.files=[{synth_file}]", "train.threads=1", "train.val_every=1000", "train.ckpt_every=1000"]
    first = run_training(load_config(TINY, common + ["train.steps=4"]), run_dir=tmp_path / "first")
    # pretend the first run reached a validation loss nothing can beat
    last = torch.load(first / "last.pt", weights_only=True)
    last["training"]["best_val"] = 0.0
    torch.save(last, first / "last.pt")
    best_step = lambda run: load_checkpoint(run / "best.pt")["provenance"]["final_metrics"]["step"]  # noqa: E731
    assert best_step(first) == 4

    same, changed = tmp_path / "same", tmp_path / "changed"
    shutil.copytree(first, same)
    shutil.copytree(first, changed)
    run_training(load_config(same / "config.yaml", ["train.steps=6"]), resume=same)
    other = write_synthetic(tmp_path / "other.nc", frames=30, size=(64, 64), seed=2)
    run_training(load_config(changed / "config.yaml", ["train.steps=6", f"data.files=[{other}]"]), resume=changed)
    assert best_step(same) == 4  # same validation windows: the old best (0.0) still stands
    assert best_step(changed) == 6  # other windows: losses not comparable, so this run's validation is the best
    # the weights learned from both files, and the provenance says so, in training order
    prov = load_checkpoint(changed / "model.pt")["provenance"]
    assert prov["train_files"] == [str(synth_file), str(other)]
    assert [p.split(":")[0] for p in prov["train_periods"]] == ["s.nc", "other.nc"]
    assert load_checkpoint(same / "model.pt")["provenance"]["train_files"] == [str(synth_file)]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(synth_file: Path, tmp_path: Path, monkeypatch) -> None:
    calls = {"n": 0}

    def poisoned(*args: object) -> torch.Tensor:
        calls["n"] += 1
        loss = masked_loss(*args)  # type: ignore[arg-type]
        return loss * float("nan") if calls["n"] == 4 else loss

    cfg = load_config(
        TINY,
        [
            f"data.files=[{synth_file}]",
            "train.threads=1",
            "train.steps=10",
            "train.ckpt_every=2",
            "train.val_every=1000",
        ],
    )
    with pytest.raises(TrainingDivergedError, match="step 3: expected a finite value, found nan"):
        monkeypatch.setattr(nowcast.training.loop, "masked_loss", poisoned)
        run_training(cfg, run_dir=tmp_path / "run")
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["training"]["step"] == 2
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())


def test_resume_from_an_inference_checkpoint_is_a_checkpoint_error(synth_file: Path, tmp_path: Path) -> None:
    cfg = load_config(TINY, [f"data.files=[{synth_file}]", "train.threads=1"])
    run = tmp_path / "run"
    save_checkpoint(run / "last.pt", config=cfg, state_dict=build_model(cfg.model).state_dict())  # no training state
    with pytest.raises(
        CheckpointError, match="last.pt: expected a resumable training checkpoint, found an inference-only one"
    ):
        run_training(cfg, resume=run)


def test_config_errors_listed_together_exit_2(cli_runner, synth_file: Path, tmp_path: Path) -> None:
    result = cli_runner.invoke(
        app,
        [
            "train",
            "--config",
            str(TINY),
            "--set",
            "model.hiden=[4]",
            "--set",
            "train.lr=fast",
            "--run-dir",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 2
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1
    assert "--set model.hiden=[4]: unknown key 'model.hiden' (did you mean 'hidden'?)" in err
    assert "--set train.lr=fast: train.lr: expected float" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_sigint_leaves_loadable_last_checkpoint(synth_file: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "nowcast",
        "train",
        "--config",
        str(TINY),
        "--set",
        f"data.files=[{synth_file}]",
        "--set",
        "train.steps=100000",
        "--set",
        "train.log_every=2",
        "--set",
        "train.val_every=100000",
        "--set",
        "train.threads=1",
        "--run-dir",
        str(run),
    ]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (run / "metrics.csv").exists() and _rows(run):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "resume with: nowcast train --resume" in err
    last = load_checkpoint(run / "last.pt")
    assert last["training"]["step"] >= 2
    assert not list(run.glob(".*.tmp")) and not list(run.glob(".*.pt"))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_to_process_group_with_workers_saves_last(synth_file: Path, tmp_path: Path, sig: int) -> None:
    """A service stop or a Ctrl-C reaches the DataLoader worker too: the run still stops after its step."""
    run = tmp_path / "run"
    sets = [f"data.files=[{synth_file}]", "data.workers=1", "train.steps=100000", "train.log_every=2",
            "train.val_every=100000", "train.threads=1"]  # fmt: skip
    cmd = [sys.executable, "-m", "nowcast", "train", "--config", str(TINY), "--run-dir", str(run)]
    cmd += [x for s in sets for x in ("--set", s)]
    proc = subprocess.Popen(
        cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (run / "metrics.csv").exists() and _rows(run):
            break
        time.sleep(0.2)
    os.killpg(proc.pid, sig)  # the whole group, as systemd or a terminal does: main process and worker
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "DataLoader worker" not in err and "unexpected error" not in err
    assert "resume with: nowcast train --resume" in err
    last = load_checkpoint(run / "last.pt")
    assert last["training"]["step"] >= 2
    assert not list(run.glob(".*.tmp")) and not list(run.glob(".*.pt"))


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_ddp_two_gloo_ranks_match_single_process(synth_file: Path, tmp_path: Path) -> None:
    sets = [
        f"data.files=[{synth_file}]",
        "train.steps=4",
        "train.log_every=1",
        "train.val_every=4",
        "train.batch_size=4",
        "train.threads=1",
        "data.augment=false",
    ]
    args = ["-m", "nowcast", "train", "--config", str(TINY)]
    for s in sets:
        args += ["--set", s]
    single = subprocess.run(
        [sys.executable, *args, "--run-dir", str(tmp_path / "one")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            *args,
            "--run-dir",
            str(tmp_path / "two"),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    one, two = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert [r["step"] for r in two] == ["1", "2", "3", "4"]  # rank 0 alone wrote: no duplicated rows
    # The global batch is identical; each rank normalises its loss by its own valid pixels, so the
    # DDP loss (mean of the two halves) may differ slightly from the pooled single-process loss.
    for a, b in zip(one, two):
        assert float(b["train_loss"]) == pytest.approx(float(a["train_loss"]), rel=0.05)
    a = load_checkpoint(tmp_path / "one" / "model.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "two" / "model.pt")["state_dict"]
    drift = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert drift < 1e-2
    assert math.isfinite(float(two[-1]["val_loss"]))
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_info_says_when_the_head_is_zero(cli_runner, tmp_path: Path) -> None:
    """A residual model exported at its start (train.export best) is its base alone: info says so."""
    cfg = load_config(TINY)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, residual=True))
    model = build_model(cfg.model)
    save_checkpoint(tmp_path / "zero.pt", config=cfg, state_dict=model.state_dict(), provenance={})
    with torch.no_grad():
        model.head[-1].bias.fill_(0.1)
    save_checkpoint(tmp_path / "trained.pt", config=cfg, state_dict=model.state_dict(), provenance={})
    zero = cli_runner.invoke(app, ["info", str(tmp_path / "zero.pt")])
    trained = cli_runner.invoke(app, ["info", str(tmp_path / "trained.pt")])
    assert zero.exit_code == trained.exit_code == 0
    assert "output head is all zeros" in zero.output and "output head" not in trained.output


def test_export_best_on_few_validation_windows_warns(synth_file: Path, tmp_path: Path, caplog) -> None:
    """``train.export: best`` chooses model.pt on the validation windows; with fewer than
    ``FEW_VAL_WINDOWS`` of them the run says the choice is fragile (and is silent when it exports the last)."""
    import logging

    common = [f"data.files=[{synth_file}]", "train.threads=1", "train.steps=1", "train.val_every=1000"]
    for export, warned in (("best", True), ("last", False)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="nowcast"):
            run_training(load_config(TINY, [*common, f"train.export={export}"]), run_dir=tmp_path / export)
        windows = [r.getMessage() for r in caplog.records if "validation windows" in r.getMessage()]
        assert bool(windows) == warned, windows
        if warned:
            n = int(windows[0].split()[1])
            assert 0 < n < nowcast.training.loop.FEW_VAL_WINDOWS
            assert "train.export=best chooses model.pt on them" in windows[0]

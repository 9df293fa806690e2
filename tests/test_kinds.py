"""``model.kind``: the comparison models (FC-LSTM, CNN-LSTM, UNet) and several models in one evaluation."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from nowcast.nowcasts import baselines
from nowcast.cli import app
from nowcast.config import ConfigError, DataConfig, ModelConfig, load_config
from nowcast.verification.evaluate import EvaluateSettings, evaluate_files
from nowcast.models.registry import build_model, count_parameters
from nowcast.forecast import forecast_array
from nowcast.transforms import Transform
from tests.conftest import REPO_ROOT, make_tiny_checkpoint, moving_rain

TINY = REPO_ROOT / "configs" / "tiny.yaml"
KINDS = {  # tiny versions of each comparison model
    "fc_lstm": ("model.kind=fc_lstm", "model.hidden=[16]"),  # one LSTM layer (tiny.yaml's kernels are ConvLSTM's)
    "cnn_lstm": ("model.kind=cnn_lstm", "model.hidden=[16]", "model.conv_widths=[4,8]"),
    "unet": ("model.kind=unet", "model.conv_widths=[4,8]"),
}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------------------------------
# the models


@pytest.mark.parametrize("kind", ["fc_lstm", "cnn_lstm", "unet"])
@pytest.mark.parametrize("steps", [1, 3, 7])
def test_every_kind_maps_frames_to_any_number_of_steps(kind: str, steps: int) -> None:
    extra = ["model.frame_size=[32,32]"] if kind != "unet" else []
    cfg = load_config(TINY, [*KINDS[kind], *extra, "model.channels=3"])
    model = build_model(cfg.model, cfg.data).eval()
    x = torch.rand(2, cfg.data.in_frames, 3, 32, 32)
    with torch.no_grad():
        y = model(x, steps)
    assert y.shape == (2, steps, 3, 32, 32) and torch.isfinite(y).all()


def test_fc_lstm_has_the_parameters_of_its_lstm_layers() -> None:
    """8 x 8 frames, patch 2: one vector of 64 values per frame; encoder LSTM 64 -> 5, forecaster LSTM 1 -> 5
    (a zero input), linear 5 -> 64. An LSTM cell of input n and hidden h has 4h(n + h) weights and 2 x 4h biases."""
    cfg = ModelConfig(kind="fc_lstm", patch=2, hidden=(5,), kernels=(3,), downsample=(1,), frame_size=(8, 8))
    model = build_model(cfg)
    encoder = 4 * 5 * (64 + 5) + 2 * 4 * 5  # 1420
    forecaster = 4 * 5 * (1 + 5) + 2 * 4 * 5  # 160
    head = 5 * 64 + 64  # 384
    assert count_parameters(model) == encoder + forecaster + head == 1964


def test_unet_feeds_its_forecast_back_beyond_out_frames() -> None:
    cfg = load_config(TINY, list(KINDS["unet"]))  # 4 frames in, 4 out
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.data).eval()
    x = torch.rand(1, 4, 1, 16, 24)
    with torch.no_grad():
        long = model(x, 6)
        first = model(x, 4)
        second = model(torch.cat([x, first], 1)[:, -4:], 4)
    torch.testing.assert_close(long[:, :4], first)
    torch.testing.assert_close(long[:, 4:], second[:, :2])
    with pytest.raises(ValueError, match="expected 4 input frames"):
        model(x[:, :3], 2)


@pytest.mark.parametrize("kind", ["fc_lstm", "cnn_lstm", "unet"])
def test_untrained_lagrangian_residual_model_of_every_kind_is_extrapolation(kind: str, pysteps_installed) -> None:
    """Lagrangian frame, residual head and time-step channel work for every kind: a residual head starts
    at zero, so the untrained forecast is the last frame advected, i.e. pySTEPS extrapolation."""
    extra = ["model.frame_size=[32,48]"] if kind != "unet" else []
    cfg = load_config(
        TINY,
        [
            *KINDS[kind],
            *extra,
            "model.frame=lagrangian",
            "model.residual=true",
            "model.step_input=true",
            "data.time_step=0",
        ],
    )
    model = build_model(cfg.model, cfg.data).eval()
    frames = moving_rain(4, size=(32, 48), shift=(1, 2)).astype(np.float32)
    out = forecast_array(model, Transform.from_config(cfg), frames[None, :, None], 5, time_step=300.0)[0, :, 0]
    ref = baselines.extrapolation(frames, 5)
    both = np.isfinite(out) & np.isfinite(ref) & (ref >= 0.05)
    assert both.sum() > 1000  # of 5 x 32 x 48: the rainy pixels both have data for
    np.testing.assert_allclose(out[both], ref[both], rtol=1e-3, atol=0.01)


def test_config_checks_kind_and_frame_size() -> None:
    with pytest.raises(
        ConfigError, match="model.kind: expected one of convlstm, fc_lstm, cnn_lstm, unet, found 'lstm'"
    ):
        load_config(TINY, ["model.kind=lstm"])
    with pytest.raises(ConfigError, match="model.frame_size: expected none for model.kind=unet"):
        load_config(TINY, ["model.kind=unet", "model.frame_size=[32,32]"])
    with pytest.raises(ConfigError, match=r"model.frame_size: expected \[height, width\]"):
        load_config(TINY, ["model.kind=fc_lstm", "model.frame_size=[32]"])
    with pytest.raises(ValueError, match="multiples of 16"):
        build_model(ModelConfig(kind="cnn_lstm", conv_widths=(4, 8), frame_size=(40, 40)))
    with pytest.raises(ValueError, match="in_frames"):
        build_model(ModelConfig(kind="unet"))  # a UNet's weights depend on the numbers of frames
    assert build_model(ModelConfig(kind="unet"), DataConfig(in_frames=2, out_frames=3)).head.out_channels == 3 * 16


# ----------------------------------------------------------------------------------------------------
# through the command line


@pytest.fixture(scope="module")
def event(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nowcast.synth import write_synthetic

    path = tmp_path_factory.mktemp("kinds") / "event.nc"
    write_synthetic(path, frames=20, size=(32, 32), seed=3)
    return path


@pytest.mark.parametrize("kind", ["fc_lstm", "cnn_lstm", "unet"])
def test_each_kind_trains_predicts_and_evaluates_through_the_cli(
    kind: str, event: Path, tmp_path: Path, cli_runner
) -> None:
    run = tmp_path / kind
    sets = [
        f"data.files=[{event}]",
        "data.crop=128",
        "train.steps=2",
        "train.val_every=2",
        "train.threads=1",
        "train.max_val_windows=2",
        *KINDS[kind],
    ]
    result = cli_runner.invoke(
        app, ["train", "--config", str(TINY), *sum((["--set", s] for s in sets), []), "--run-dir", str(run)]
    )
    assert result.exit_code == 0, result.output
    assert len(_rows(run / "metrics.csv")) == 1  # the one validation at step 2
    stored = load_config(run / "config.yaml")
    assert stored.model.kind == kind
    assert stored.model.frame_size == (() if kind == "unet" else (32, 32))  # the crop, capped by the 32 x 32 frames

    fc = tmp_path / "fc.nc"
    result = cli_runner.invoke(
        app, ["predict", str(event), "--model", str(run / "model.pt"), "-o", str(fc), "--steps", "6", "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    import xarray as xr

    with xr.open_dataset(fc) as ds:
        assert ds["rainfall_rate"].shape == (6, 32, 32)

    out = tmp_path / "ev"
    result = cli_runner.invoke(
        app,
        [
            "evaluate",
            str(event),
            "--model",
            str(run / "model.pt"),
            "--baselines",
            "persistence",
            "--steps",
            "4",
            "--out",
            str(out),
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"] == ["model", "persistence"] and summary["n_cases"] == 20 - 8 + 1
    info = cli_runner.invoke(app, ["info", str(run / "model.pt")])
    assert f"kind {kind}" in info.stdout


def _fc_lstm_checkpoint(path: Path, size: tuple[int, int]) -> Path:
    return make_tiny_checkpoint(path, *KINDS["fc_lstm"], f"model.frame_size=[{size[0]},{size[1]}]", "model.name=flat")


def test_a_fixed_size_model_refuses_other_sizes_in_one_line(
    radar_file: Callable[..., Path], tmp_path: Path, cli_runner
) -> None:
    ckpt = _fc_lstm_checkpoint(tmp_path / "flat.pt", (32, 40))
    data = radar_file("wide.nc", frames=10, size=(32, 48))
    for args in (
        ["predict", str(data), "-o", str(tmp_path / "fc.nc")],
        ["evaluate", str(data), "--steps", "4", "--out", str(tmp_path / "ev")],
    ):
        result = cli_runner.invoke(app, [*args, "--model", str(ckpt)])
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr
        assert str(data) in lines[0]
        assert "expected frames of 32 x 40 pixels" in lines[0] and "found 32 x 48" in lines[0]
    assert not (tmp_path / "fc.nc").exists() and not (tmp_path / "ev").exists()
    right = radar_file("right.nc", frames=10, size=(32, 40))
    result = cli_runner.invoke(app, ["predict", str(right), "--model", str(ckpt), "-o", str(tmp_path / "ok.nc")])
    assert result.exit_code == 0, result.output


def test_training_a_fixed_size_model_on_another_frame_size_is_refused(event: Path, tmp_path: Path, cli_runner) -> None:
    result = cli_runner.invoke(
        app,
        [
            "train",
            "--config",
            str(TINY),
            "--set",
            f"data.files=[{event}]",
            *sum((["--set", s] for s in KINDS["fc_lstm"]), []),
            "--set",
            "model.frame_size=[32,40]",
            "--run-dir",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 2
    assert "model.frame_size: expected a square size" in result.stderr and "found 32 x 40" in result.stderr


# ----------------------------------------------------------------------------------------------------
# several models in one evaluation


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    a = make_tiny_checkpoint(tmp_path / "convlstm-run" / "model.pt")
    (tmp_path / "flat-run").mkdir()
    b = _fc_lstm_checkpoint(tmp_path / "flat-run" / "model.pt", (32, 40))
    return a, b


def _scores(rows: list[dict[str, str]], method: str) -> dict[tuple[str, str, str], str]:
    return {(r["lead_min"], r["threshold"], r["score"]): r["value"] for r in rows if r["method"] == method}


def test_several_checkpoints_are_methods_named_after_their_runs_on_the_same_cases(
    radar_file: Callable[..., Path], two_runs: tuple[Path, Path], tmp_path: Path, cli_runner
) -> None:
    a, b = two_runs
    data = radar_file("event.nc", frames=12, size=(32, 40), values=moving_rain(12, (32, 40), shift=(1, 1)))
    out = tmp_path / "both"
    result = cli_runner.invoke(
        app,
        [
            "evaluate",
            str(data),
            "--model",
            str(a),
            "--model",
            str(b),
            "--baselines",
            "persistence",
            "--steps",
            "4",
            "--out",
            str(out),
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"] == ["convlstm-run", "flat-run", "persistence"]
    assert summary["n_cases"] == 12 - 8 + 1
    assert summary["settings"]["models"]["flat-run"]["checkpoint"] == str(b)
    table = result.stdout
    assert sum(line.startswith("flat-run") for line in table.splitlines()) == 2  # CSI and MSE rows
    example = (out / "example_case.png").stat().st_size
    assert example > 5000

    # each model scores what it scores alone, on the same cases and pixels (all forecasts have data where
    # the last frame has, so the common mask is the same with one model or two)
    rows = _rows(out / "metrics.csv")
    for ckpt, name in ((a, "convlstm-run"), (b, "flat-run")):
        alone = tmp_path / f"alone-{name}"
        evaluate_files(
            [data],
            EvaluateSettings(model=ckpt, baselines=("persistence",), steps=4, out_dir=alone, plots=False, threads=1),
        )
        single = _scores(_rows(alone / "metrics.csv"), "model")
        assert _scores(rows, name) == single and len(single) > 20
    assert _scores(rows, "convlstm-run") != _scores(rows, "flat-run")  # two different models


def test_names_override_run_names_and_duplicates_are_refused(
    radar_file: Callable[..., Path], two_runs: tuple[Path, Path], tmp_path: Path, cli_runner
) -> None:
    a, b = two_runs
    data = radar_file("event.nc", frames=9, size=(32, 40))
    result = cli_runner.invoke(
        app,
        [
            "evaluate",
            str(data),
            "--model",
            str(a),
            "--model",
            str(b),
            "--name",
            "ConvLSTM",
            "--name",
            "FC-LSTM",
            "--baselines",
            "persistence",
            "--steps",
            "4",
            "--out",
            str(tmp_path / "n"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "n" / "summary.json").read_text())["methods"] == [
        "ConvLSTM",
        "FC-LSTM",
        "persistence",
    ]

    twin = tmp_path / "other" / "convlstm-run" / "model.pt"
    twin.parent.mkdir(parents=True)
    shutil.copy(a, twin)
    cases = {
        "same run name": (["--model", str(a), "--model", str(twin)], "'convlstm-run' more than once"),
        "names count": (
            ["--model", str(a), "--model", str(b), "--name", "x"],
            "expected one name per --model (2), found 1",
        ),
        "baseline name": (
            ["--model", str(a), "--model", str(b), "--name", "persistence", "--name", "y"],
            "other than the baselines', found persistence",
        ),
    }
    for why, (args, message) in cases.items():
        result = cli_runner.invoke(
            app,
            ["evaluate", str(data), *args, "--baselines", "persistence", "--steps", "4", "--out", str(tmp_path / "x")],
        )
        assert result.exit_code == 2, why
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, (why, result.stderr)

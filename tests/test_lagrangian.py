"""The Lagrangian model: shapes and no-data masks at any grid size and step, and the any-step workflow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from nowcast.nowcasts import baselines
from nowcast.config import ConfigError, load_config
from nowcast.models.registry import build_model
from nowcast.forecast import forecast_array
from nowcast.transforms import Transform
from tests.conftest import REPO_ROOT, moving_rain

LAGRANGIAN = ("model.frame=lagrangian", "model.residual=true", "model.step_input=true", "data.time_step=0")


def _tiny(*extra: str):
    return load_config(REPO_ROOT / "configs" / "tiny.yaml", [*LAGRANGIAN, *extra])


def test_untrained_residual_model_is_extrapolation_at_odd_sizes_and_any_step(pysteps_installed) -> None:
    """A residual head starts at zero: the forecast is the last frame advected, i.e. pySTEPS extrapolation."""
    cfg = _tiny()
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    seq = moving_rain(9, size=(37, 53), shift=(1, 2)).astype(np.float32)
    frames = seq[:4].copy()
    frames[:, :3, 40:] = np.nan  # a corner without data in every frame
    for step in (120.0, 900.0):
        out = forecast_array(model, Transform.from_config(cfg), frames[None, :, None], 5, time_step=step)
        assert out.shape == (1, 5, 1, 37, 53) and out.dtype == np.float32
        ref = baselines.extrapolation(frames, 5)  # (5, H, W)
        ours = out[0, :, 0]
        assert (np.isfinite(ours) != np.isfinite(ref)).mean() < 1e-3  # same no-data: outside, upwind
        assert np.isnan(ours[:, :3, 40:]).all()
        both = np.isfinite(ours) & np.isfinite(ref) & (ref >= 0.05)
        np.testing.assert_allclose(ours[both], ref[both], rtol=1e-3, atol=0.01)
    with pytest.raises(ValueError, match="time_step"):
        model(torch.zeros(1, 4, 1, 16, 16), 2)  # a step-aware model needs the step


def test_trained_step_input_changes_the_forecast_with_the_step(pysteps_installed) -> None:
    cfg = _tiny()
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    with torch.no_grad():
        for p in model.head.parameters():  # as after training: a non-zero change from the last frame
            p.normal_(0, 0.05)
    frames = moving_rain(4, size=(32, 32)).astype(np.float32)[None, :, None]
    tr = Transform.from_config(cfg)
    a = forecast_array(model, tr, frames, 3, time_step=120)
    b = forecast_array(model, tr, frames, 3, time_step=900)
    assert np.nanmax(np.abs(a - b)) > 1e-3


def test_native_step_needs_a_lagrangian_model() -> None:
    with pytest.raises(ConfigError, match="data.time_step.*model.frame=lagrangian"):
        load_config(REPO_ROOT / "configs" / "tiny.yaml", ["data.time_step=0"])
    with pytest.raises(ConfigError, match="model.frame: expected one of eulerian, lagrangian"):
        load_config(REPO_ROOT / "configs" / "tiny.yaml", ["model.frame=polar"])
    assert _tiny().model.frame == "lagrangian"


@pytest.mark.slow
def test_one_model_trains_and_forecasts_at_each_file_s_own_step(
    cli_runner, radar_file, tmp_path: Path, pysteps_installed
) -> None:
    """Files at 5 and 10 minutes train one model; predict and evaluate then run at each file's step."""

    from nowcast.cli import app

    vals5 = moving_rain(30, size=(48, 48), shift=(0, 1))
    vals10 = moving_rain(30, size=(48, 48), shift=(1, 0), seed=1)
    f5 = radar_file("five.nc", frames=30, size=(48, 48), step=300, values=vals5)
    f10 = radar_file("ten.nc", frames=30, size=(48, 48), step=600, values=vals10)
    runner = cli_runner
    run = tmp_path / "run"
    args = ["train", "--config", str(REPO_ROOT / "configs" / "tiny.yaml"), "--run-dir", str(run)]
    args += [x for s in LAGRANGIAN for x in ("--set", s)]
    args += [
        "--set",
        f"data.files=[{f5},{f10}]",
        "--set",
        "train.steps=6",
        "--set",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "cache").glob("lag-*.npy"))) > 0
    for f, step in ((f5, 300), (f10, 600)):
        out = tmp_path / f"fc_{step}.nc"
        res = runner.invoke(app, ["predict", str(f), "--model", str(run / "model.pt"), "-o", str(out)])
        assert res.exit_code == 0, res.output
        with xr.open_dataset(out, decode_timedelta=True) as ds:
            lead_s = ds["forecast_period"].values.astype("timedelta64[s]").astype(int)
            np.testing.assert_array_equal(lead_s, np.arange(step, 3601, step))  # the next hour at its own step
            assert int(ds.attrs["time_step_seconds"]) == step
    res = runner.invoke(
        app,
        [
            "evaluate",
            str(f10),
            "--model",
            str(run / "model.pt"),
            "--baselines",
            "extrapolation,sprog",
            "--out",
            str(tmp_path / "ev"),
            "--stride",
            "8",
            "--steps",
            "3",
        ],
    )
    assert res.exit_code == 0, res.output
    import json

    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["settings"]["time_step_s"] == 600
    assert summary["methods"] == ["model", "extrapolation", "sprog"]
    assert summary["lead_min"] == [10.0, 20.0, 30.0]


def test_training_and_inference_warp_inputs_the_same_way() -> None:
    """Training's Lagrangian window and inference's input warp are one transform: on the same frames the
    input part of a training window equals what ``forecast_array`` feeds the network (to float16)."""
    import torch

    from nowcast.motion import motion_field, to_lagrangian
    from nowcast.training.windows import lagrangian_window

    frames = moving_rain(9, size=(48, 56), shift=(1, 2), seed=4)[:, None].astype(np.float32)  # (T, 1, H, W)
    frames[:, :, :3, :5] = np.nan
    transform = Transform()
    window = lagrangian_window(frames, 6, transform)  # (9, 1, H, W) float16: 6 inputs, 3 targets
    x = torch.from_numpy(transform.forward(frames[:6]).astype(np.float32))[None]
    velocity = torch.from_numpy(motion_field(frames[:6]))[None]
    inference = to_lagrangian(x, velocity)[0].numpy().astype(np.float16)
    np.testing.assert_array_equal(window[:6], inference)
    assert np.isfinite(window[:6]).mean() > 0.5 and not np.array_equal(window[0], window[5])

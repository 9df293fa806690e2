"""The operational user's day (issue 29): horizons as durations (--lead), a short file's advice, the capping
note at predict time, the no-data status of the forecast, frame-numbered image sequences, the training time
estimate, --set typos, progress on a terminal without a size, the evaluate summary."""

from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from nowcast import transforms
from nowcast.cli import app
from nowcast.errors import NowcastError
from nowcast.forecast import nodata_status
from nowcast.leads import forecast_steps, parse_duration
from tests.conftest import REPO_ROOT, make_tiny_checkpoint

SIZE = (32, 40)


def _one_line_error(result, *parts: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for part in parts:
        assert part in lines[0], lines[0]


# ----------------------------------------------------------------------------------------------------
# --lead DURATION


@pytest.mark.parametrize(
    "text, seconds",
    [("60min", 3600), ("1h", 3600), ("90m", 5400), ("1h30min", 5400), ("1.5h", 5400), ("45 s", 45), ("2 hours", 7200)],
)
def test_durations_parse_to_seconds(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["60", "0min", "-5min", "abc", "5 parsecs", "", "0.5s"])
def test_bad_durations_are_refused_naming_the_option(text: str) -> None:
    with pytest.raises(NowcastError, match="--lead: expected a positive duration"):
        parse_duration(text)


def test_the_default_horizon_is_an_hour_at_every_time_step() -> None:
    # 60 min / step, rounded up so the horizon is reached (7 min: 9 steps, to +63 min)
    assert [forecast_steps(None, None, step, 12) for step in (120, 300, 360, 420, 600, 900)] == [30, 12, 10, 9, 6, 4]
    assert forecast_steps(None, 35 * 60, 300, 12) == 7
    assert forecast_steps(5, None, 120, 12) == 5  # --steps counts frames
    assert forecast_steps(None, None, 60, 6, in_frames_only=True) == 6  # images: the trained frames
    with pytest.raises(NowcastError, match="found both"):
        forecast_steps(3, 3600, 300, 12)
    with pytest.raises(NowcastError, match="use --steps N"):
        forecast_steps(None, 3600, 60, 6, in_frames_only=True)


def test_predict_lead_is_the_same_hour_on_a_2_and_a_10_minute_radar(cli_runner, radar_file, tmp_path: Path) -> None:
    any_step = make_tiny_checkpoint(tmp_path / "lag.pt", "model.frame=lagrangian", "data.time_step=0")
    for step, n in ((120, 30), (600, 6)):
        src = radar_file(f"r{step}.nc", frames=6, step=step, size=SIZE)
        out = tmp_path / f"fc{step}.nc"
        result = cli_runner.invoke(app, ["predict", str(src), "--model", str(any_step), "-o", str(out)])
        assert result.exit_code == 0, result.output
        with xr.open_dataset(out) as ds:
            assert ds.sizes["time"] == n
            assert int(ds["forecast_period"].values[-1]) == 60
        assert f"+60 min ({n} steps of {step / 60:g} min, beyond the 4 trained)" in result.stderr
    out = tmp_path / "fc90.nc"
    result = cli_runner.invoke(app, ["predict", str(src), "--model", str(any_step), "--lead", "90m", "-o", str(out)])
    assert result.exit_code == 0, result.output
    with xr.open_dataset(out) as ds:
        np.testing.assert_array_equal(ds["forecast_period"].values, [10, 20, 30, 40, 50, 60, 70, 80, 90])


def test_steps_and_lead_together_are_a_usage_error(cli_runner, radar_file, tiny_checkpoint: Path) -> None:
    src = radar_file(frames=6, size=SIZE)
    for command in ("predict", "evaluate"):
        result = cli_runner.invoke(
            app, [command, str(src), "--model", str(tiny_checkpoint), "--steps", "3", "--lead", "1h"]
        )
        _one_line_error(result, "--steps/--lead: expected one of them", "found both (--steps 3, --lead 1h)")
    result = cli_runner.invoke(app, ["predict", str(src), "--model", str(tiny_checkpoint), "--lead", "60"])
    _one_line_error(result, "--lead: expected a positive duration", "found '60' (a bare number: add its unit)")


# ----------------------------------------------------------------------------------------------------
# evaluate on a short file


def test_evaluate_on_a_short_file_says_what_would_fit(cli_runner, radar_file, tiny_checkpoint, tmp_path) -> None:
    src = radar_file("short.nc", frames=10, size=SIZE)  # the tiny model takes 4 frames in: 6 lead times fit
    result = cli_runner.invoke(app, ["evaluate", str(src), "--model", str(tiny_checkpoint), "--out", str(tmp_path)])
    _one_line_error(
        result,
        f"{src}: expected a run of at least 16 frames 300 s apart (4 input frames + 12 lead times of 5 min), "
        "found at most 10: --steps 6 or --lead 30min is the most it allows",
    )
    ok = cli_runner.invoke(
        app,
        ["evaluate", str(src), "--model", str(tiny_checkpoint), "--baselines", "persistence", "--lead", "30min"]
        + ["--out", str(tmp_path / "r")],
    )
    assert ok.exit_code == 0, ok.output
    assert "1 forecast times" in ok.stdout and "; methods: model and persistence" in ok.stdout
    tiny = radar_file("tiny.nc", frames=4, size=SIZE)
    result = cli_runner.invoke(app, ["evaluate", str(tiny), "--model", str(tiny_checkpoint), "--steps", "1"])
    _one_line_error(result, "found at most 4: too short for even one lead time, which needs 5 frames")


def test_evaluate_help_names_every_baseline(cli_runner) -> None:
    from nowcast.nowcasts.baselines import _METHODS

    result = cli_runner.invoke(app, ["--help"])
    line = next(t for t in result.stdout.splitlines() if t.strip().startswith("evaluate"))
    assert all(name in line for name in _METHODS), line


# ----------------------------------------------------------------------------------------------------
# values the model caps: said once at predict, without training advice


def test_predict_notes_capped_values_once_without_train_advice(
    cli_runner, radar_file, tiny_checkpoint, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(transforms, "_NOTED", set())
    values = np.zeros((5, *SIZE))
    values[:, 4:8, 4:8] = 300.0  # above dbz_max 60 dBZ: R = (10^6 / 200)^(1 / 1.6) = 205.0 mm/h
    src = radar_file(frames=5, size=SIZE, values=values)
    for k in range(2):
        result = cli_runner.invoke(
            app, ["predict", str(src), "--model", str(tiny_checkpoint), "--steps", "1", "-o", str(tmp_path / f"{k}.nc")]
        )
        assert result.exit_code == 0, result.output
        said = "INFO input values above 205 mm/h (found 300) are capped at 205 mm/h by the model's dbz transform"
        assert (said in result.stderr) == (k == 0)  # once per process (watch, or two forecasts in one run)
        assert "transform.dbz_max" not in result.stderr and "WARNING" not in result.stderr


# ----------------------------------------------------------------------------------------------------
# why the forecast has no value: no radar data, or rain from outside the domain


def test_nodata_status_tells_no_data_from_outside_the_domain() -> None:
    last = np.ones((1, 12, 20), np.float32)
    last[0, 5:8, 10:13] = np.nan  # no coverage in a block
    velocity = np.zeros((2, 12, 20), np.float32)
    velocity[0] = 2.0  # 2 px per step to the right: the value at column c after k steps comes from c - 2k
    status = nodata_status(last, 3, velocity)
    assert status.shape == (3, 1, 12, 20) and status.dtype == np.int8
    for k in (1, 2, 3):
        expected = np.zeros((12, 20), np.int8)
        expected[5:8, 10 + 2 * k : 13 + 2 * k] = 1  # rain from the block without data
        expected[:, : 2 * k] = 2  # from outside the grid (column < 0)
        expected[5:8, 10:13] = 1  # no data at the pixel itself
        np.testing.assert_array_equal(status[k - 1, 0], expected)
    eulerian = nodata_status(last, 2, None)
    np.testing.assert_array_equal(eulerian[:, 0], np.broadcast_to(np.isnan(last[0]), (2, 12, 20)).astype(np.int8))


def test_forecast_file_flags_every_nan_with_its_reason(cli_runner, radar_file, tiny_checkpoint, tmp_path) -> None:
    mask = np.zeros(SIZE, bool)
    mask[:5, :7] = True  # a corner without coverage
    src = radar_file(frames=5, size=SIZE, nan_mask=mask)
    out = tmp_path / "fc.nc"
    result = cli_runner.invoke(
        app, ["predict", str(src), "--model", str(tiny_checkpoint), "--steps", "3", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    with xr.open_dataset(out) as ds:
        rate, status = ds["rainfall_rate"], ds["rainfall_rate_status"]
        assert rate.attrs["ancillary_variables"] == "rainfall_rate_status"
        assert status.attrs["standard_name"] == "status_flag"
        assert status.attrs["flag_meanings"] == "forecast no_radar_data from_outside_domain"
        np.testing.assert_array_equal(status.attrs["flag_values"], [0, 1, 2])
        np.testing.assert_array_equal(status.values, np.broadcast_to(mask, (3, *SIZE)).astype(np.int8))
        np.testing.assert_array_equal(np.isnan(rate.values), status.values > 0)


def test_real_forecast_marks_rain_from_outside_the_domain(cli_runner, real_data: Path, tmp_path: Path) -> None:
    """OPERA CIRRUS has data everywhere in its last frame: every NaN of the shipped (Lagrangian) model's
    forecast is rain advected in from outside the window, and grows with lead time."""
    out = tmp_path / "cirrus.nc"
    result = cli_runner.invoke(
        app, ["predict", str(real_data / "opera_cirrus_europe_20241126.nc"), "--lead", "30min", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    with xr.open_dataset(out) as ds:
        nan = np.isnan(ds["rainfall_rate"].values)
        status = ds["rainfall_rate_status"].values
    np.testing.assert_array_equal(nan, status == 2)
    assert 0 < nan[0].mean() < nan[-1].mean()


# ----------------------------------------------------------------------------------------------------
# image sequences: frame numbers, their own units, packing by range


def _frames_file(path: Path, top: float = 250.0, frames: int = 10) -> Path:
    data = np.full((frames, 3, 24, 24), 10.0, np.float32)
    for t in range(frames):
        data[t, 1, 6:14, 2 + t : 10 + t] = top
    ds = xr.Dataset({"frames": (("time", "channel", "y", "x"), data)}, coords={"time": np.arange(frames)})
    ds.to_netcdf(path)
    return path


def _image_model(path: Path, top: float) -> Path:
    return make_tiny_checkpoint(
        path,
        "model.channels=3",
        "transform.kind=minmax",
        "transform.value_min=0",
        f"transform.value_max={top}",
        "data.units=mm h-1",
        "data.time_step=60",
    )


def test_info_describes_a_frame_numbered_file_without_a_step(cli_runner, tmp_path: Path) -> None:
    images = _frames_file(tmp_path / "frames.nc")
    result = cli_runner.invoke(app, ["info", str(images)])
    assert result.exit_code == 0, result.output
    assert "frames:          0 to 9 (numbered, no dates)" in result.stdout
    assert "units:           (no units) (not a rain unit" in result.stdout
    assert "maximum:         250.00 (no units)" in result.stdout
    assert "1970" not in result.stdout and "rainy fraction" not in result.stdout


def test_image_forecast_keeps_name_units_and_frame_numbers(cli_runner, tmp_path: Path) -> None:
    images = _frames_file(tmp_path / "frames.nc")
    model = _image_model(tmp_path / "img.pt", 255.0)
    result = cli_runner.invoke(app, ["predict", str(images), "--model", str(model), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "forecast from frame 9, +4 frames" in result.stderr  # the trained 4 frames, not an hour
    out = tmp_path / "frames_nowcast_frame000009.nc"  # no date of 1970 in the default name
    with xr.open_dataset(out) as ds:
        v = ds["frames"]
        assert v.dims == ("frame", "channel", "y", "x")
        assert v.attrs["units"] == "1" and "standard_name" not in v.attrs  # the input had no units
        assert v.attrs["long_name"] == "nowcast of frames"
        np.testing.assert_array_equal(ds["frame"].values, [10, 11, 12, 13])
        np.testing.assert_array_equal(ds["frames_ahead"].values, [1, 2, 3, 4])
        assert int(ds["last_observed_frame"]) == 9 and "time_step_seconds" not in ds.attrs
        assert v.encoding["dtype"] == np.int16  # 0-255 fits the packing
    result = cli_runner.invoke(app, ["predict", str(images), "--model", str(model), "--lead", "5min"])
    _one_line_error(result, "--lead: expected dated frames", "use --steps N")


def test_values_beyond_the_int16_packing_are_written_as_float32(cli_runner, tmp_path: Path) -> None:
    images = _frames_file(tmp_path / "bright.nc", top=1000.0)
    model = _image_model(tmp_path / "bright.pt", 1000.0)
    out = tmp_path / "fc.nc"
    result = cli_runner.invoke(app, ["predict", str(images), "--model", str(model), "--steps", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    with xr.open_dataset(out) as ds:
        assert ds["frames"].encoding["dtype"] == np.float32
        assert float(ds["frames"].max()) <= 1000.0


def test_plot_panels_of_frame_numbered_input_are_labelled_by_frame() -> None:
    from nowcast.plots import panel_titles

    t = np.datetime64("1970-01-01T00:00:00", "ns") + np.arange(9, 13) * np.timedelta64(60, "s")
    fc = xr.DataArray(
        np.zeros((3, 2, 2)),
        dims=("time", "y", "x"),
        coords={
            "time": t[1:],
            "forecast_period": ("time", np.arange(1, 4) * np.timedelta64(60, "s")),
            "forecast_reference_time": t[0],
        },
        attrs={"frame_numbers": 60},
    )
    observed = xr.DataArray(np.zeros((2, 2)), dims=("y", "x"), coords={"time": t[0]})
    assert panel_titles(observed, fc, [0, 2]) == ["observed\nframe 9", "+1\nframe 10", "+3\nframe 12"]
    dated = fc.copy()
    dated.attrs = {}
    assert panel_titles(observed, dated, [2])[1] == "+3 min\nvalid 1970-01-01 00:12 UTC"


# ----------------------------------------------------------------------------------------------------
# training: a time estimate after the first steps


def test_training_logs_speed_and_time_left(caplog, monkeypatch) -> None:
    from nowcast.training import loop

    now = [100.0]
    monkeypatch.setattr(loop.time, "perf_counter", lambda: now[0])
    package = logging.getLogger("nowcast")  # a CLI run of a module fixture may have left its handlers
    monkeypatch.setattr(package, "handlers", [])
    monkeypatch.setattr(package, "propagate", True)
    clock: dict[str, float] = {}
    with caplog.at_level(logging.INFO, logger="nowcast"):
        loop.log_eta(1, 0, 2000, clock)  # the first (warm-up) step ends: the clock starts
        now[0] += 4.0 * loop.ETA_AFTER  # then 4 s a step
        loop.log_eta(1 + loop.ETA_AFTER, 0, 2000, clock)
        loop.log_eta(2 + loop.ETA_AFTER, 0, 2000, clock)  # said once
    lines = [r.getMessage() for r in caplog.records if "steps/s" in r.getMessage()]
    left = 2000 - 1 - loop.ETA_AFTER  # 1994 steps x 4 s = 7976 s = 2 h 13 min
    assert len(lines) == 1
    assert lines[0].startswith(f"0.25 steps/s (4 s a step): {left} steps left, about 2 h 13 min, ending about ")


# ----------------------------------------------------------------------------------------------------
# small things


def test_a_set_typo_is_attributed_to_the_override(cli_runner) -> None:
    result = cli_runner.invoke(app, ["train", "--config", "tiny", "--set", "train.stepz=5"])
    _one_line_error(result, "--set train.stepz=5: unknown key 'train.stepz' (did you mean 'steps'?)")
    assert "tiny.yaml" not in result.stderr


def test_config_problems_and_set_problems_are_told_apart(tmp_path: Path) -> None:
    from nowcast.config import load_config

    path = tmp_path / "my.yaml"
    path.write_text("train:\n  lr: fast\n")
    with pytest.raises(NowcastError) as err:
        load_config(path, ["model.hiden=[8]"])
    assert str(err.value) == (
        f"{path}: 1 problem(s): train.lr: expected float, found 'fast'; "
        "--set model.hiden=[8]: unknown key 'model.hiden' (did you mean 'hidden'?)"
    )


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pty")
def test_progress_shows_on_a_terminal_that_reports_no_size() -> None:
    """A pty whose window size was never set reports 0 columns; tqdm alone then draws nothing at all."""
    import pty

    code = (
        "import os, sys; assert os.get_terminal_size(sys.stderr.fileno()).columns == 0\n"
        "from nowcast.runtime import progress_bar\n"
        "bar = progress_bar(5, 'case')\n"
        "[bar.update(1) for _ in range(5)]\n"
        "bar.close()\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    pid, fd = pty.fork()
    if pid == 0:  # the child, on a fresh pty of size 0 x 0
        os.execve(sys.executable, [sys.executable, "-c", code], env)
    out = b""
    while select.select([fd], [], [], 60)[0]:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out.decode(errors="replace")
    assert "5/5" in out.decode(errors="replace")


def test_predict_help_offers_lead(cli_runner) -> None:
    for command in ("predict", "watch", "evaluate"):
        result = cli_runner.invoke(app, [command, "--help"])
        assert "--lead DURATION" in result.stdout, command


def test_the_shipped_console_script_runs(tmp_path: Path) -> None:
    """--lead through the real entry point (not CliRunner): parse errors exit 2 in one line."""
    proc = subprocess.run(
        [sys.executable, "-m", "nowcast", "predict", str(tmp_path / "x.nc"), "--lead", "soon"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "nowcast: error: --lead: expected a positive duration in whole seconds such as 60min, 1h, 90m or 1h30min, "
        "found 'soon'"
    ]

"""Faults found by the fault corpus: forecasts never read as radar, -o equal to --plot, infinite input
values, a refused --resume, settings validated before any work (train, evaluate, watch), the output
lock free while a forecast is computed, grids too small to forecast, and a full disk under a checkpoint.
(The watcher's faults around time and unwritable outputs are in tests/test_watch.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from nowcast.cli import app
from nowcast.errors import InputError
from nowcast.io import open_radar

SIZE = (64, 80)


def _files(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its modification time (ns), to see that nothing changed."""
    return {str(p): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def _refused(result, expected: str) -> str:
    """Exit 2 and one stderr line holding ``expected``; the line."""
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    return lines[0]


# ---------------------------------------------------------------------------------------------------
# 1. forecasts are never radar input


def test_a_forecast_file_is_refused_as_radar(cli_runner, radar_file, tiny_checkpoint, tmp_path):
    src = radar_file("radar.nc", frames=5, size=SIZE)
    out = tmp_path / "fc.nc"
    assert cli_runner.invoke(app, ["predict", str(src), "--model", str(tiny_checkpoint), "-o", str(out)]).exit_code == 0
    with pytest.raises(InputError, match="expected radar observations, found a nowcast forecast"):
        open_radar(out)
    before = _files(tmp_path)
    again = cli_runner.invoke(app, ["predict", str(out), "--model", str(tiny_checkpoint), "-o", str(tmp_path / "x.nc")])
    line = _refused(again, "expected radar observations, found a nowcast forecast (written by nowcast")
    assert str(out) in line
    assert _files(tmp_path) == before


def test_predict_on_a_glob_skips_its_earlier_forecast(cli_runner, radar_file, tiny_checkpoint, tmp_path):
    radar_file("a.nc", frames=5, size=SIZE)
    pattern = str(tmp_path / "*.nc")
    args = ["predict", pattern, "--model", str(tiny_checkpoint), "--steps", "2"]
    first = cli_runner.invoke(app, args)
    assert first.exit_code == 0, first.stderr
    (fc,) = [p for p in tmp_path.glob("*.nc") if p.name != "a.nc"]
    second = cli_runner.invoke(app, [*args, "-o", str(tmp_path / "out" / "second.nc")])
    assert second.exit_code == 0, second.stderr
    assert "found a nowcast forecast" in second.stderr and fc.name in second.stderr
    with xr.open_dataset(tmp_path / "out" / "second.nc") as ds:
        assert "a.nc" in ds.attrs["input_files"] and fc.name not in ds.attrs["input_files"]


def test_watch_never_forecasts_from_its_own_forecasts(cli_runner, radar_file, tiny_checkpoint, tmp_path):
    (tmp_path / "in").mkdir()
    radar_file("in/radar.nc", frames=4, size=SIZE)
    args = ["watch", str(tmp_path / "in" / "*.nc"), "--model", str(tiny_checkpoint), "--settle", "0", "--once"]
    args += ["-o", str(tmp_path / "in" / "fc_{reference_time:%Y%m%d%H%M}.nc")]
    assert cli_runner.invoke(app, args).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "in").glob("*.nc")) == ["fc_202106011215.nc", "radar.nc"]
    again = cli_runner.invoke(app, args)
    assert again.exit_code == 0, again.stderr
    assert sorted(p.name for p in (tmp_path / "in").glob("*.nc")) == ["fc_202106011215.nc", "radar.nc"]


# ---------------------------------------------------------------------------------------------------
# 3. infinite input values are no data


def test_infinite_values_are_no_data_only_where_they_are(radar_file):
    values = np.full((4, *SIZE), 1.0)
    values[-1, :4, :4] = np.inf
    values[-1, 10, 10] = -np.inf
    da = open_radar(radar_file(frames=4, size=SIZE, values=values, packed=False))
    last = da.values[-1]
    assert np.isnan(last[:4, :4]).all() and np.isnan(last[10, 10])
    assert int(np.isnan(da.values).sum()) == 17


# ---------------------------------------------------------------------------------------------------
# 2. -o equal to --plot


@pytest.mark.parametrize("plot", ["fc.nc", "./sub/../fc.nc"])
def test_plot_equal_to_output_is_refused_before_any_work(cli_runner, radar_file, tiny_checkpoint, tmp_path, plot):
    src = radar_file("radar.nc", frames=5, size=SIZE)
    (tmp_path / "sub").mkdir()
    before = _files(tmp_path)
    out = str(tmp_path / "fc.nc")
    args = ["predict", str(src), "--model", str(tiny_checkpoint), "-o", out, "--plot", str(tmp_path / plot)]
    _refused(cli_runner.invoke(app, args), "expected a path other than the forecast's (-o), found the same path")
    assert _files(tmp_path) == before


# ---------------------------------------------------------------------------------------------------
# 4. a refused --resume leaves the run as it was

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def synth_file(tmp_path_factory) -> Path:
    from nowcast.synth import write_synthetic

    path = tmp_path_factory.mktemp("synth") / "s.nc"
    write_synthetic(path, frames=30, size=(64, 64), seed=1)
    return path


def _train_args(synth_file: Path, *sets: str) -> list[str]:
    args = ["-q", "train", "--config", str(TINY)]
    for item in (f"data.files=[{synth_file}]", "train.threads=1", "train.val_every=1000", *sets):
        args += ["--set", item]
    return args


def test_resume_with_another_model_shape_changes_nothing(cli_runner, synth_file, tmp_path):
    run = tmp_path / "run"
    done = cli_runner.invoke(
        app, [*_train_args(synth_file, "train.steps=2", "train.ckpt_every=2"), "--run-dir", str(run)]
    )
    assert done.exit_code == 0, done.stderr
    config = (run / "config.yaml").read_text()
    before = _files(run)
    args = _train_args(synth_file, "train.steps=4", "model.hidden=[16, 8]")
    line = _refused(
        cli_runner.invoke(app, [*args, "--resume", str(run)]), "expected the weights of the configured model"
    )
    assert "last.pt" in line and "Traceback" not in line
    assert (run / "config.yaml").read_text() == config and _files(run) == before


# ---------------------------------------------------------------------------------------------------
# 5. train: every value that would fail later is refused before the run directory exists


@pytest.mark.parametrize(
    "bad",
    [
        "train.lr=.nan",
        "train.lr=-0.1",
        "train.weight_decay=-1",
        "train.min_lr_ratio=2",
        "train.warmup_steps=-1",
        "train.val_every=0",
        "train.ckpt_every=0",
        "train.log_every=0",
        "train.batch_size=0",
        "train.threads=-1",
    ],
)
def test_train_refuses_bad_values_before_the_run_directory(cli_runner, synth_file, tmp_path, bad):
    run = tmp_path / "run"
    result = cli_runner.invoke(app, [*_train_args(synth_file, "train.steps=2", bad), "--run-dir", str(run)])
    _refused(result, bad.split("=")[0])
    assert not run.exists()


def test_train_lists_every_bad_value_at_once(cli_runner, synth_file, tmp_path):
    args = _train_args(synth_file, "train.lr=0", "train.val_every=0", "train.warmup_steps=-2")
    line = _refused(cli_runner.invoke(app, [*args, "--run-dir", str(tmp_path / "run")]), "train.lr")
    assert "train.val_every" in line and "train.warmup_steps" in line
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------------
# 6. evaluate: thresholds and --out checked before any work


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--thresholds", "-1,1"], "--thresholds: expected finite rain rates > 0 (mm/h), found -1.0"),
        (["--thresholds", "nan"], "--thresholds: expected finite rain rates > 0 (mm/h), found nan"),
        (["--out", "taken.txt"], "expected a report directory, found an existing file"),
        (["--out", "taken.txt/sub"], "expected a writable report directory"),
    ],
)
def test_evaluate_refuses_bad_settings_before_any_work(cli_runner, radar_file, tmp_path, monkeypatch, extra, expected):
    src = radar_file("radar.nc", frames=8, size=(32, 32))
    (tmp_path / "taken.txt").write_text("mine\n")
    monkeypatch.chdir(tmp_path)
    before = _files(tmp_path)
    result = cli_runner.invoke(app, ["evaluate", str(src), "--no-model", "--baselines", "persistence", *extra])
    _refused(result, expected)
    assert _files(tmp_path) == before and (tmp_path / "taken.txt").read_text() == "mine\n"


# ---------------------------------------------------------------------------------------------------
# 7. watch: --steps 0 and --max-forecasts -1


@pytest.mark.parametrize(
    ("extra", "expected"),
    [(["--steps", "0"], "--steps 0: expected a positive number"), (["--max-forecasts", "-1"], "--max-forecasts -1")],
)
def test_watch_refuses_bad_counts(cli_runner, tiny_checkpoint, tmp_path, extra, expected):
    (tmp_path / "in").mkdir()
    args = ["watch", str(tmp_path / "in" / "*.nc"), "--model", str(tiny_checkpoint), "-o", str(tmp_path / "fc.nc")]
    before = _files(tmp_path)
    _refused(cli_runner.invoke(app, [*args, *extra, "--once"]), expected)
    assert _files(tmp_path) == before


# ---------------------------------------------------------------------------------------------------
# 7. the directory lock is held for the write only


@pytest.mark.parametrize("product", ["forecast", "ensemble"])
def test_the_lock_is_free_while_the_forecast_is_computed(
    cli_runner, radar_file, tiny_checkpoint, tmp_path, monkeypatch, product
):
    """Another run can write into the directory while this one computes (minutes on a large grid)."""
    import nowcast.predict
    from nowcast.io import output_lock

    out = tmp_path / "fc" / "fc.nc"
    free: list[bool] = []
    name = "forecast_frames" if product == "forecast" else "ensemble_members"
    compute = getattr(nowcast.predict, name)

    def checked(*args, **kwargs):
        with output_lock(tmp_path / "fc" / "other.nc", timeout_s=0):  # raises OutputError if held
            free.append(True)
        return compute(*args, **kwargs)

    monkeypatch.setattr(nowcast.predict, name, checked)
    src = radar_file(frames=6, size=SIZE)
    args = ["predict", str(src), "--model", str(tiny_checkpoint), "-o", str(out), "--steps", "2"]
    args += ["--members", "2"] if product == "ensemble" else []
    result = cli_runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert free == [True] and out.is_file()


# ---------------------------------------------------------------------------------------------------
# 8. degenerate inputs


@pytest.mark.parametrize("size", [(1, 1), (1, 40), (40, 1)])
@pytest.mark.parametrize("command", ["predict", "evaluate", "watch"])
def test_a_grid_too_small_is_one_line_exit_2(cli_runner, radar_file, tmp_path, size, command):
    """Grids without a neighbour along y or x (1 x 1, one row, one column), with the shipped model."""
    (tmp_path / "in").mkdir()
    src = radar_file("in/radar.nc", frames=20, size=size)
    out = tmp_path / "out"
    args = {
        "predict": ["predict", str(src), "-o", str(out / "fc.nc")],
        "evaluate": ["evaluate", str(src), "--steps", "2", "--baselines", "persistence", "--out", str(out)],
        "watch": ["watch", str(tmp_path / "in" / "*.nc"), "-o", str(out / "fc.nc"), "--once", "--settle", "0"],
    }[command]
    before = _files(tmp_path / "in")
    result = cli_runner.invoke(app, args)
    if command == "watch":  # a resident process skips what it cannot forecast: one warning line, exit 0
        assert result.exit_code == 0, result.stderr
        lines = [line for line in result.stderr.splitlines() if "WARNING" in line]
        assert len(lines) == 1 and f"found {size[0]} x {size[1]}" in lines[0]
    else:
        _refused(
            result,
            f"expected a grid of at least 2 x 2 pixels (motion and advection need neighbours), found {size[0]} x {size[1]}",
        )
    assert not list(out.glob("*.nc")) and _files(tmp_path / "in") == before


def test_a_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(cli_runner, synth_file, tmp_path, monkeypatch):
    """The kernel's ENOSPC (writes to /dev/full) while train writes a checkpoint: one line, exit 2, the
    previous checkpoints intact, no temporary file left."""
    import builtins

    import nowcast.models.checkpoint as checkpoint

    run = tmp_path / "run"
    done = cli_runner.invoke(
        app, [*_train_args(synth_file, "train.steps=2", "train.ckpt_every=2"), "--run-dir", str(run)]
    )
    assert done.exit_code == 0, done.stderr
    before = {p.name: p.read_bytes() for p in run.glob("*.pt")}
    assert "last.pt" in before

    def full(path, mode="r", *args, **kwargs):
        return (
            builtins.open("/dev/full", mode, *args, **kwargs)
            if "w" in mode
            else builtins.open(path, mode, *args, **kwargs)
        )

    monkeypatch.setattr(checkpoint, "open", full, raising=False)
    args = _train_args(synth_file, "train.steps=4", "train.ckpt_every=2")
    line = _refused(cli_runner.invoke(app, [*args, "--resume", str(run)]), "no space left on the device")
    assert ".pt: expected room to write it" in line
    assert {p.name: p.read_bytes() for p in run.glob("*.pt")} == before
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]

"""``nowcast predict`` and ``nowcast.predict``: the CF forecast file, reference times, horizons, channels,
several files, output templates, locks, and one-line errors (exit 2) for every bad input.

A tiny random checkpoint (configs/tiny.yaml: 4 frames in, 4 out, 300 s) and 64 x 80 grids keep it fast.
The subprocess tests (SIGKILL while writing, overlapping runs) are in test_predict_cron.py.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr

from conftest import make_tiny_checkpoint
from nowcast.cli import app
from nowcast.errors import CheckpointError, InputError, OutputError
from nowcast.io import lock_path, open_radar, output_lock, remove_stale_temporaries
from nowcast.forecast import forecast, forecast_array
from nowcast.models.checkpoint import load_model
from nowcast.predict import PredictSettings, predict_to_file
from nowcast.transforms import Transform

REPO = Path(__file__).resolve().parents[1]
SIZE = (64, 80)
STEP = 300
T_START = np.datetime64("2021-06-01T12:00:00", "ns")


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint: Path) -> Path:
    """A tiny, randomly initialised checkpoint: 4 frames in, 4 out, 300 s, one channel."""
    return tiny_checkpoint


def _coverage(frames: int) -> np.ndarray:
    """No-data mask (time, y, x): a corner missing in every frame, a strip missing in the last one only."""
    mask = np.zeros((frames, *SIZE), bool)
    mask[:, :10, :12] = True
    mask[-1, 30:34, :] = True
    mask[0, 40:, 40:] = True  # an earlier frame's gap must not reach the forecast
    return mask


def _predict(cli_runner, *args: str):
    result = cli_runner.invoke(app, ["predict", *map(str, args)])
    return result


def _ok(result):
    assert result.exit_code == 0, (result.exit_code, result.stderr, result.exception)
    return result


# ---------------------------------------------------------------------------------------------------
# the CF file


def test_forecast_file_is_cf_and_matches_the_input(cli_runner, radar_file, ckpt, tmp_path, monkeypatch):
    frames = 6
    src = radar_file("radar.nc", frames=frames, size=SIZE, nan_mask=_coverage(frames))
    before = _sha(src)
    out = tmp_path / "out" / "fc.nc"
    args = [str(src), "--model", str(ckpt), "-o", str(out), "--steps", "6"]
    monkeypatch.setattr("sys.argv", ["nowcast", "predict", *args])  # what the CLI records as history

    result = _ok(_predict(cli_runner, *args))

    # exactly one INFO line: reference time, output, wall time
    info = [line for line in result.stderr.splitlines() if " INFO " in line]
    assert len(info) == 1 and "2021-06-01T12:25:00Z" in info[0] and str(out) in info[0], result.stderr
    assert _sha(src) == before  # the input is only read

    last = T_START + np.timedelta64((frames - 1) * STEP, "s")
    inp = xr.open_dataset(src)
    with xr.open_dataset(out) as ds:
        da = ds["rainfall_rate"]
        assert da.dims == ("time", "y", "x") and da.shape == (6, *SIZE)
        assert da.dtype == np.float32
        # times: valid = reference + k * step; lead times in minutes; reference = last input frame
        np.testing.assert_array_equal(ds["time"].values, last + np.arange(1, 7) * np.timedelta64(STEP, "s"))
        assert ds["time"].attrs["standard_name"] == "time" and ds["time"].attrs["axis"] == "T"
        fp = ds["forecast_period"]
        assert fp.dims == ("time",) and fp.attrs["standard_name"] == "forecast_period"
        np.testing.assert_array_equal(np.asarray(fp.values), [5, 10, 15, 20, 25, 30])
        assert fp.attrs["units"] == "minutes"
        frt = ds["forecast_reference_time"]
        assert frt.ndim == 0 and frt.values == last
        assert frt.attrs["standard_name"] == "forecast_reference_time"
        assert da.encoding["coordinates"].split()[:2] == ["forecast_period", "forecast_reference_time"]
        # the data variable
        assert da.attrs["units"] == "mm h-1" and da.attrs["standard_name"] == "rainfall_rate"
        assert da.attrs["grid_mapping"] == "crs" and "long_name" in da.attrs
        # grid and grid mapping exactly the input's
        for name in ("x", "y"):  # values, dims and attrs (the scalar reference time aside)
            xr.testing.assert_identical(ds[name].variable, inp[name].variable)
        assert ds["crs"].values == inp["crs"].values  # the grid mapping: every input attribute kept, ...
        kept = {k: v for k, v in inp["crs"].attrs.items() if k != "crs_wkt"}  # the fixture's WKT is unreadable
        assert {k: v for k, v in ds["crs"].attrs.items() if k in kept} == kept
        assert ds["crs"].attrs["reference_ellipsoid_name"] == "WGS 84"  # ... completed from its proj4
        assert ds["crs"].attrs["crs_wkt"].startswith("PROJCRS[")  # rewritten from the proj4 PROJ can read
        # no data exactly where the last input frame has none, in every lead time
        last_nan = np.isnan(inp["rainfall_rate"].values[-1])
        values = da.values
        assert np.array_equal(np.isnan(values), np.broadcast_to(last_nan, values.shape))
        assert (values[:, ~last_nan] >= 0).all()
        # global attributes
        g = ds.attrs
        assert g["Conventions"] == "CF-1.11"
        assert g["institution"] == "nowcast test suite"
        assert "Shi" in g["references"] and "Convolutional LSTM Network" in g["references"]
        assert _sha(ckpt) in g["source"] and "tiny" in g["source"] and "nowcast" in g["source"]
        command, completed = g["history"].split("; ", 1)
        assert command.endswith(f"nowcast predict {src} --model {ckpt} -o {out} --steps 6")
        assert g["title"] == "Nowcast of Synthetic radar rainfall rate"  # "Nowcast of " + the input's title
        assert (
            completed.startswith("grid mapping 'crs' completed from its CRS: ")
            and "reference_ellipsoid_name" in completed
        )
        assert "crs_wkt (from proj4; the input's could not be read)" in completed
        # round trip through xarray
        again = tmp_path / "again.nc"
        ds.to_netcdf(again)
        with xr.open_dataset(again) as back:
            xr.testing.assert_identical(back, ds)
    inp.close()

    # the bytes as a CF tool sees them
    with netCDF4.Dataset(out) as nc:
        v = nc["rainfall_rate"]
        assert v.dtype == np.int16 and v.scale_factor == pytest.approx(0.01) and v._FillValue == -32768
        assert v.filters()["zlib"] and v.dimensions == ("time", "y", "x")
        assert v.coordinates.startswith("forecast_period forecast_reference_time")
        t = nc["time"]
        assert t.dtype == np.int64 and t.units.startswith("seconds since 1970-01-01")
        ref = int((last - np.datetime64("1970-01-01", "ns")) // np.timedelta64(1, "s"))
        assert list(t[:]) == [ref + k * STEP for k in range(1, 7)]
        assert int(nc["forecast_reference_time"][...]) == ref
        assert nc["forecast_reference_time"].units.startswith("seconds since 1970-01-01")
        assert "coordinates" not in nc["crs"].ncattrs()
        assert "coordinates" not in nc.ncattrs()


def test_forecast_in_memory_equals_the_array_forecast(radar_file, ckpt):
    src = radar_file(frames=7, size=SIZE, nan_mask=_coverage(7))
    loaded = load_model(ckpt)
    rate = open_radar(src, time_step=STEP)

    fc = forecast(rate, loaded.model, loaded.config, steps=3)

    frames = rate.values[-4:][None, :, None]  # (1, 4, 1, H, W)
    expected = forecast_array(loaded.model, Transform.from_config(loaded.config), frames, 3)[0, :, 0]
    np.testing.assert_array_equal(fc.values, expected)
    assert fc.dims == ("time", "y", "x")
    np.testing.assert_array_equal(fc["forecast_period"].values, np.arange(1, 4) * np.timedelta64(STEP, "s"))
    assert fc["forecast_reference_time"].values == rate["time"].values[-1]
    xr.testing.assert_identical(fc["crs"].variable, rate["crs"].variable)


# ---------------------------------------------------------------------------------------------------
# reference time, horizon, channels, several files, finer steps, templates


def test_at_selects_an_earlier_reference_time_and_templates_expand(cli_runner, radar_file, ckpt, tmp_path):
    src = radar_file("event.nc", frames=10, size=SIZE)
    template = str(tmp_path / "fc" / "{stem}_{reference_time:%Y%m%d%H%M}.nc")

    _ok(_predict(cli_runner, src, "--model", ckpt, "--at", "2021-06-01T12:30:00Z", "-o", template))

    out = tmp_path / "fc" / "event_202106011230.nc"
    with xr.open_dataset(out) as ds:
        assert ds["forecast_reference_time"].values == np.datetime64("2021-06-01T12:30:00", "ns")
        assert ds["time"].values[0] == np.datetime64("2021-06-01T12:35:00", "ns")
        assert ds.sizes["time"] == 12  # the next hour at 5 min (the model was trained for 4 steps)


def test_at_with_an_offset_is_converted_to_utc(cli_runner, radar_file, ckpt, tmp_path):
    src = radar_file("event.nc", frames=8, size=SIZE)
    _ok(_predict(cli_runner, src, "--model", ckpt, "--at", "2021-06-01T14:20:00+02:00", "-o", tmp_path / "o.nc"))
    with xr.open_dataset(tmp_path / "o.nc") as ds:
        assert ds["forecast_reference_time"].values == np.datetime64("2021-06-01T12:20:00", "ns")


def test_default_output_is_next_to_the_input(cli_runner, radar_file, ckpt, tmp_path):
    src = radar_file("latest.nc", frames=5, size=SIZE)
    _ok(_predict(cli_runner, src, "--model", ckpt, "--steps", 2))
    assert (tmp_path / "latest_nowcast_202106011220.nc").is_file()


def test_output_directory_gets_the_default_name(cli_runner, radar_file, ckpt, tmp_path):
    src = radar_file("latest.nc", frames=5, size=SIZE)
    (tmp_path / "srv").mkdir()
    _ok(_predict(cli_runner, src, "--model", ckpt, "--steps", 1, "-o", tmp_path / "srv"))
    assert (tmp_path / "srv" / "latest_nowcast_202106011220.nc").is_file()


def test_more_steps_than_trained(cli_runner, radar_file, ckpt, tmp_path):
    src = radar_file(frames=4, size=SIZE)
    _ok(_predict(cli_runner, src, "--model", ckpt, "--steps", 13, "-o", tmp_path / "long.nc"))
    with xr.open_dataset(tmp_path / "long.nc") as ds:
        assert ds.sizes["time"] == 13
        assert int(ds["forecast_period"].values[-1]) == 65


def test_multichannel_sequence(cli_runner, radar_file, tmp_path):
    ckpt3 = make_tiny_checkpoint(tmp_path / "rgb.pt", "model.channels=3")
    src = radar_file("rgb.nc", frames=5, size=SIZE, dims=("time", "channel", "y", "x"), channels=3)

    _ok(_predict(cli_runner, src, "--model", ckpt3, "-o", tmp_path / "rgb_fc.nc"))

    with xr.open_dataset(tmp_path / "rgb_fc.nc") as ds:
        assert ds["rainfall_rate"].dims == ("time", "channel", "y", "x")
        assert ds["rainfall_rate"].shape == (12, 3, *SIZE)  # the next hour


def test_several_files_form_one_archive(cli_runner, radar_file, ckpt, tmp_path):
    a = radar_file("a.nc", frames=3, size=SIZE, seed=1)  # 12:00 - 12:10
    b = radar_file("b.nc", frames=3, size=SIZE, start="2021-06-01T12:10:00", seed=2)  # 12:10 - 12:20, overlaps
    out = tmp_path / "fc.nc"
    _ok(_predict(cli_runner, a, b, "--model", ckpt, "-o", out))  # the 4 frames 12:05 - 12:20 span both files
    with xr.open_dataset(out) as ds:
        assert ds["forecast_reference_time"].values == np.datetime64("2021-06-01T12:20:00", "ns")
        assert "a.nc" in ds.attrs["input_files"] and "b.nc" in ds.attrs["input_files"]


def test_files_on_other_grids_are_not_mixed(cli_runner, radar_file, ckpt, tmp_path):
    a = radar_file("a.nc", frames=3, size=SIZE)
    b = radar_file("b.nc", frames=3, size=(64, 81), start="2021-06-01T12:15:00")
    result = _predict(cli_runner, a, b, "--model", ckpt, "-o", tmp_path / "fc.nc")
    assert result.exit_code == 2
    assert "b.nc: expected the grid of" in result.stderr and "found 64 x 81" in result.stderr


def test_auxiliary_lat_lon_are_copied(ckpt, tmp_path):
    from nowcast.synth import synthetic_sequence

    ds = synthetic_sequence(frames=5, size=(32, 40))
    yy, xx = np.meshgrid(ds["y"].values, ds["x"].values, indexing="ij")
    ds = ds.assign_coords(
        lat=(("y", "x"), 50 + yy / 111e3, {"standard_name": "latitude", "units": "degrees_north"}),
        lon=(("y", "x"), 10 + xx / 70e3, {"standard_name": "longitude", "units": "degrees_east"}),
    )
    src = tmp_path / "latlon.nc"
    ds.to_netcdf(src, encoding={n: dict(ds[n].encoding) for n in ("rainfall_rate", "time", "x", "y")})

    out = predict_to_file([src], PredictSettings(model=ckpt, output=tmp_path / "fc.nc"))

    with xr.open_dataset(out) as fc, xr.open_dataset(src) as inp:
        for name in ("lat", "lon"):
            xr.testing.assert_identical(fc[name].variable, inp[name].variable)
        assert fc["rainfall_rate"].encoding["coordinates"].split() == [
            "forecast_period",
            "forecast_reference_time",
            "lat",
            "lon",
        ]


def test_finer_input_step_is_subsampled(cli_runner, radar_file, ckpt, tmp_path):
    src = radar_file("fine.nc", frames=10, step=150, size=SIZE)  # 12:00 to 12:22:30
    _ok(_predict(cli_runner, src, "--model", ckpt, "-o", tmp_path / "fc.nc"))
    with xr.open_dataset(tmp_path / "fc.nc") as ds:
        assert ds["forecast_reference_time"].values == np.datetime64("2021-06-01T12:22:30", "ns")
        np.testing.assert_array_equal(np.asarray(ds["forecast_period"].values), np.arange(5, 65, 5))


def test_fresh_input_passes_max_age(cli_runner, radar_file, ckpt, tmp_path):
    start = (datetime.now(timezone.utc) - timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%S")
    src = radar_file(frames=4, size=SIZE, start=start)  # newest frame 5 min old
    _ok(_predict(cli_runner, src, "--model", ckpt, "--max-age", 10, "-o", tmp_path / "fc.nc"))


def test_plot_is_written(cli_runner, radar_file, ckpt, tmp_path):
    src = radar_file("r.nc", frames=4, size=SIZE, nan_mask=_coverage(4))
    _ok(
        _predict(
            cli_runner,
            src,
            "--model",
            ckpt,
            "-o",
            tmp_path / "fc.nc",
            "--plot",
            tmp_path / "{stem}_{reference_time:%H%M}.png",
        )
    )
    png = tmp_path / "r_1215.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".r_1215.png.*.tmp"))


# ---------------------------------------------------------------------------------------------------
# errors: exit 2, one line on stderr


def _random_ckpt(tmp_path: Path, ckpt: Path) -> Path:
    path = tmp_path / "random.pt"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    return path


def _truncated_ckpt(tmp_path: Path, ckpt: Path) -> Path:
    path = tmp_path / "truncated.pt"
    data = ckpt.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


ERRORS = {
    # case: (radar_file options, extra args, checkpoint maker or None, expected text)
    "stale input": ({}, ["--max-age", "10"], None, "at most 10 min old (--max-age), found 2021-06-01T12:25:00Z"),
    "too few frames": (
        {"frames": 3},
        [],
        None,
        "expected 4 frames 300 s apart from 2021-06-01T11:55:00Z to 2021-06-01T12:10:00Z, found 3 (the input starts at 2021-06-01T12:00:00Z)",
    ),
    "gap in the needed frames": (
        {"times": [0, 300, 600, 1200, 1500]},
        [],
        None,
        "found 3 (a gap in time: missing 2021-06-01T12:15:00Z)",
    ),
    "checkpoint for another step": (
        {"step": 600},
        [],
        None,
        "expected a time step that divides the model's time step of 300 s, found 600 s",
    ),
    "step not a divisor": ({"step": 420}, [], None, "of 300 s, found 420 s"),
    "corrupt checkpoint": ({}, [], _random_ckpt, "random.pt: expected a nowcast checkpoint"),
    "truncated checkpoint": (
        {},
        [],
        _truncated_ckpt,
        "expected a nowcast checkpoint, found a truncated or damaged archive",
    ),
    "no frame at --at": (
        {},
        ["--at", "2021-06-01T12:07:00"],
        None,
        "expected a frame at the reference time 2021-06-01T12:07:00Z, found none",
    ),
    "bad --at": ({}, ["--at", "yesterday-ish"], None, "expected an ISO 8601 time"),
    "channels": (
        {"dims": ("time", "channel", "y", "x"), "channels": 3},
        [],
        None,
        "expected 1 channel(s) for model 'tiny', found 3",
    ),
    "empty last frame": (
        {"nan_mask": np.arange(6)[:, None, None] == 5},
        [],
        None,
        "found 1 frame(s) with no data at all: 2021-06-01T12:25:00Z",
    ),
    "unknown template field": (
        {},
        ["-o", "fc_{run}.nc"],
        None,
        "expected a path using only {reference_time:%Y%m%d%H%M} and {stem}, found unknown field 'run'",
    ),
    "unbalanced template": ({}, ["-o", "fc_{reference_time:%Y.nc"], None, "expected a path using only"),
    "output is the input": ({}, ["-o", "{stem}.nc"], None, "found an input file"),
    "steps zero": ({}, ["--steps", "0"], None, "--steps: expected a positive number"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_input_exits_2_with_one_line(cli_runner, case, radar_file, ckpt, tmp_path, monkeypatch):
    options, args, make_ckpt, expected = ERRORS[case]
    src = radar_file("radar.nc", size=SIZE, **options)
    model = make_ckpt(tmp_path, ckpt) if make_ckpt else ckpt
    before = _sha(src)
    monkeypatch.chdir(tmp_path)

    result = _predict(cli_runner, src, "--model", model, *(args if "-o" in args else [*args, "-o", "out.nc"]))

    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nowcast: error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert _sha(src) == before
    assert not (tmp_path / "out.nc").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_missing_default_model_says_pass_model(cli_runner, radar_file, tmp_path, monkeypatch):
    monkeypatch.setattr("nowcast.models.checkpoint.default_model_path", lambda: tmp_path / "models" / "default.pt")
    with pytest.raises(CheckpointError, match="pass a checkpoint with --model"):
        load_model(None)
    src = radar_file(size=SIZE)
    result = _predict(cli_runner, src, "-o", tmp_path / "fc.nc")
    assert result.exit_code == 2 and "--model" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_default_model_forecasts(cli_runner, radar_file, tmp_path):
    from nowcast.models.checkpoint import default_model_path

    if not default_model_path().is_file():
        pytest.skip(f"no shipped model at {default_model_path()}")
    src = radar_file(frames=12, size=SIZE)
    _ok(_predict(cli_runner, src, "-o", tmp_path / "fc.nc", "--steps", 2))
    with xr.open_dataset(tmp_path / "fc.nc") as ds:
        assert ds.sizes["time"] == 2


# ---------------------------------------------------------------------------------------------------
# locks and temporary files


def test_held_lock_times_out_with_one_line(cli_runner, radar_file, ckpt, tmp_path):
    src = radar_file(frames=4, size=SIZE)
    out = tmp_path / "fc.nc"
    with output_lock(out):  # another run writing the same output
        result = _predict(cli_runner, src, "--model", ckpt, "-o", out, "--lock-timeout", 0.3)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "held by another run for 0.3 s" in lines[0] and str(out) in lines[0]
    assert not out.exists()


def test_lock_waits_for_the_holder(tmp_path):
    out = tmp_path / "fc.nc"
    got = []
    with output_lock(out):
        waiter = threading.Thread(target=lambda: got.append(_acquire(out)))
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive()  # waiting, not failing
    waiter.join(5)
    assert got == [True]
    assert lock_path(out) == tmp_path / ".nowcast.lock"
    with pytest.raises(OutputError, match="held by another run"):
        with output_lock(out):
            with output_lock(out, timeout_s=0.1):
                pass


def _acquire(path: Path) -> bool:
    with output_lock(path, timeout_s=5):
        return True


def test_stale_temporaries_are_removed_only_for_their_target(tmp_path):
    out = tmp_path / "fc.nc"
    mine = [tmp_path / ".fc.nc.abcd1234.tmp", tmp_path / ".fc.nc.zz_9yy8x.tmp"]
    others = [
        tmp_path / ".fc.nc.x.abcd1234.tmp",
        tmp_path / "fc.nc.tmp",
        tmp_path / ".fc.nc.lock",
        tmp_path / ".other.nc.abcd1234.tmp",
    ]
    for p in mine + others:
        p.write_bytes(b"partial")
    assert remove_stale_temporaries(out, min_age_s=3600) == []  # fresh: kept
    assert sorted(remove_stale_temporaries(out, min_age_s=0)) == sorted(mine)
    assert all(p.exists() for p in others)


def test_write_errors_are_output_errors(radar_file, ckpt, tmp_path):
    src = radar_file(frames=4, size=SIZE)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError):
        predict_to_file([src], PredictSettings(model=ckpt, output=blocker / "fc.nc"))


def test_library_errors_are_input_errors(radar_file, ckpt):
    src = radar_file(frames=3, size=SIZE)
    with pytest.raises(InputError, match="found 3"):
        predict_to_file([src], PredictSettings(model=ckpt))


def test_an_ensemble_the_model_does_not_run_in_needs_only_the_cascades_frames(cli_runner, radar_file, ckpt, tmp_path):
    """The model wants 4 frames; ``--members`` without ``--centre model`` makes its ensemble from the 3 the
    file has (the AR(2) cascade's), while the model's own forecast and a centred ensemble still ask for 4,
    and 2 frames are refused naming the cascade's 3."""
    three = radar_file("three.nc", frames=3, size=(48, 64))
    two = radar_file("two.nc", frames=2, size=(48, 64))
    model = ["--model", str(ckpt)]
    made = cli_runner.invoke(app, ["predict", str(three), *model, "--members", "3", "-o", str(tmp_path / "e.nc")])
    assert made.exit_code == 0, made.stderr
    assert "ensemble from the 3 frames up to the reference time (the model's 4 are not needed)" in made.stderr
    with xr.open_dataset(tmp_path / "e.nc") as ds:
        assert ds.sizes["realization"] == 3 and np.isfinite(ds["rainfall_rate"].values).any()
    for extra in ([], ["--members", "3", "--centre", "model"]):
        refused = cli_runner.invoke(app, ["predict", str(three), *model, *extra, "-o", str(tmp_path / "x.nc")])
        assert refused.exit_code == 2 and "expected 4 frames 300 s apart" in refused.stderr, refused.stderr
    short = cli_runner.invoke(app, ["predict", str(two), *model, "--members", "3", "-o", str(tmp_path / "y.nc")])
    assert short.exit_code == 2 and "expected 3 frames 300 s apart" in short.stderr, short.stderr
    assert not (tmp_path / "x.nc").exists() and not (tmp_path / "y.nc").exists()

"""Synthetic radar sequences: determinism, the real files' schema, coverage, rain statistics and motion."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from nowcast.cli import app
from nowcast.errors import NowcastError
from nowcast.synth import synthetic_sequence, write_synthetic


@pytest.fixture(scope="module")
def sequence() -> xr.Dataset:
    return synthetic_sequence(frames=24, size=(128, 128), seed=0)


def _mean_squared_change(rain: np.ndarray, dy: int, dx: int, margin: int) -> float:
    """MSE between frame t shifted by (dy, dx) pixels and frame t+1, pooled over all pairs and valid pixels."""
    height, width = rain.shape[1:]
    before = rain[:-1, margin - dy : height - margin - dy, margin - dx : width - margin - dx]
    after = rain[1:, margin : height - margin, margin : width - margin]
    return float(np.nanmean((before - after) ** 2))


def _best_shift(rain: np.ndarray, max_shift: int = 8) -> tuple[tuple[int, int], float]:
    """The integer displacement per step that best maps frame t onto t+1, and its MSE relative to persistence."""
    errors = {
        (dy, dx): _mean_squared_change(rain, dy, dx, max_shift)
        for dy in range(-max_shift, max_shift + 1)
        for dx in range(-max_shift, max_shift + 1)
    }
    best = min(errors, key=errors.get)
    return best, errors[best] / errors[(0, 0)]


def test_same_seed_gives_identical_data_and_another_seed_differs() -> None:
    a = synthetic_sequence(frames=6, size=(48, 64), seed=5)
    b = synthetic_sequence(frames=6, size=(48, 64), seed=5)
    c = synthetic_sequence(frames=6, size=(48, 64), seed=6)
    np.testing.assert_array_equal(a["rainfall_rate"].values, b["rainfall_rate"].values)
    xr.testing.assert_identical(a, b)
    assert not np.array_equal(a["rainfall_rate"].values, c["rainfall_rate"].values, equal_nan=True)


def test_in_memory_layout(sequence: xr.Dataset) -> None:
    rr = sequence["rainfall_rate"]
    assert rr.dims == ("time", "y", "x")
    assert rr.shape == (24, 128, 128)
    assert rr.dtype == np.float32
    values = rr.values[~np.isnan(rr.values)]
    assert values.min() >= 0.0 and values.max() <= 327.67
    np.testing.assert_allclose(values * 100, np.round(values * 100), atol=1e-3)  # the int16 packing's steps


def test_file_has_the_radar_schema(tmp_path) -> None:
    path = write_synthetic(tmp_path / "syn.nc", frames=5, size=(40, 56), step_s=300, seed=2)
    assert path == tmp_path / "syn.nc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn.nc"]  # no temporary file left behind

    with xr.open_dataset(path, mask_and_scale=False, decode_times=False) as raw:
        rr = raw["rainfall_rate"]
        assert rr.dims == ("time", "y", "x") and rr.dtype == np.int16
        assert rr.attrs["_FillValue"] == -32768
        assert rr.attrs["scale_factor"] == np.float32(0.01) and rr.attrs["scale_factor"].dtype == np.float32
        assert rr.attrs["add_offset"] == 0
        assert rr.attrs["units"] == "mm h-1"
        assert rr.attrs["standard_name"] == "rainfall_rate"
        assert rr.attrs["grid_mapping"] == "crs"
        assert rr.attrs["cell_methods"] == "time: point"
        assert rr.attrs["long_name"]
        assert rr.encoding["zlib"] and rr.encoding["shuffle"]
        assert rr.encoding["chunksizes"] == (1, 40, 56)
        packed = rr.values
        assert ((packed == -32768) | ((packed >= 0) & (packed <= 32767))).all()

        time = raw["time"]
        assert time.dtype == np.int64
        assert time.attrs["units"] == "seconds since 1970-01-01"
        assert time.attrs["standard_name"] == "time" and time.attrs["axis"] == "T"
        assert time.values[0] == np.datetime64("2024-06-01T12:00", "s").astype(np.int64)
        assert (np.diff(time.values) == 300).all()

        y, x = raw["y"].values, raw["x"].values
        assert (np.diff(y) == -1000.0).all() and (np.diff(x) == 1000.0).all()
        assert raw["y"].attrs["standard_name"] == "projection_y_coordinate" and raw["y"].attrs["units"] == "m"
        assert raw["x"].attrs["standard_name"] == "projection_x_coordinate" and raw["x"].attrs["units"] == "m"

        crs = raw["crs"]
        assert crs.dtype == np.int32 and crs.ndim == 0
        assert crs.attrs["grid_mapping_name"] == "azimuthal_equidistant"
        assert "+proj=aeqd" in crs.attrs["proj4"]
        assert "+lat_0=50 " in crs.attrs["proj4"] and "+lon_0=10 " in crs.attrs["proj4"]
        assert crs.attrs["crs_wkt"].startswith("PROJCRS[") and '"Azimuthal Equidistant"' in crs.attrs["crs_wkt"]
        assert crs.attrs["latitude_of_projection_origin"] == 50.0

        attrs = raw.attrs
        assert attrs["Conventions"] == "CF-1.10"
        assert attrs["institution"] == "nowcast synthetic data"
        for key in ("title", "source", "history"):
            assert attrs[key]
        assert attrs["time_step_seconds"] == 300
        assert attrs["time_coverage_start"] == "2024-06-01T12:00:00Z"
        assert attrs["time_coverage_end"] == "2024-06-01T12:20:00Z"
        assert attrs["synthetic_seed"] == 2

    with xr.open_dataset(path) as decoded:
        assert decoded["rainfall_rate"].dtype == np.float32
        assert decoded["time"].dtype.kind == "M"
        expected = synthetic_sequence(frames=5, size=(40, 56), step_s=300, seed=2)
        xr.testing.assert_allclose(decoded["rainfall_rate"], expected["rainfall_rate"], atol=1e-5)
        xr.testing.assert_identical(decoded.drop_vars("rainfall_rate"), expected.drop_vars("rainfall_rate"))


def test_no_data_exactly_outside_the_coverage_disc() -> None:
    ds = synthetic_sequence(frames=3, size=(64, 80), seed=1)
    pixel = float(ds["x"][1] - ds["x"][0])
    distance = np.hypot(ds["y"].values[:, None], ds["x"].values[None, :]) / pixel  # pixels from the centre
    outside = distance > 0.48 * 64
    nan = np.isnan(ds["rainfall_rate"].values)
    assert outside.any() and (~outside).any()
    assert (nan == outside[None]).all()


def test_rainy_fraction_and_intensity_distribution(sequence: xr.Dataset) -> None:
    rain = sequence["rainfall_rate"].values
    valid = rain[~np.isnan(rain)]
    rainy = valid[valid > 0.1]
    assert 0.05 <= rainy.size / valid.size <= 0.4
    per_frame = [(frame[~np.isnan(frame)] > 0.1).mean() for frame in rain]
    assert min(per_frame) > 0.02  # every frame has rain to track
    assert np.median(rainy) < 3.0  # mostly light rain ...
    assert np.percentile(rainy, 99) > 10.0  # ... with a few intense cores
    assert valid.max() < 200.0


def test_rain_moves_so_that_extrapolation_beats_persistence(sequence: xr.Dataset) -> None:
    rain = sequence["rainfall_rate"].values[:12]
    (dy, dx), ratio = _best_shift(rain)
    assert (dy, dx) != (0, 0)
    assert ratio < 0.6


def test_displacement_per_step_scales_with_the_time_step(sequence: xr.Dataset) -> None:
    (dy5, dx5), _ = _best_shift(sequence["rainfall_rate"].values[:12])
    slow_steps = synthetic_sequence(frames=12, size=(128, 128), seed=0, step_s=600)["rainfall_rate"].values
    (dy10, dx10), ratio = _best_shift(slow_steps, max_shift=10)
    assert ratio < 0.6
    assert 1.4 <= np.hypot(dy10, dx10) / np.hypot(dy5, dx5) <= 2.8


def test_pysteps_lucas_kanade_tracks_the_motion(sequence: xr.Dataset) -> None:
    motion = pytest.importorskip("pysteps.motion")
    nowcasts = pytest.importorskip("pysteps.nowcasts")
    rain = sequence["rainfall_rate"].values
    observed, future = rain[:4], rain[4:8]
    velocity = motion.get_method("LK")(observed)  # (2, H, W): pixels per step along x, then y (rows)
    (dy, dx), _ = _best_shift(rain[:12])
    assert abs(np.nanmean(velocity[0]) - dx) < 1.0 and abs(np.nanmean(velocity[1]) - dy) < 1.0
    forecast = nowcasts.get_method("extrapolation")(observed[-1], velocity, 4)

    def csi(a: np.ndarray, b: np.ndarray, threshold: float = 1.0) -> float:
        ok = ~np.isnan(a) & ~np.isnan(b)
        a, b = a[ok] >= threshold, b[ok] >= threshold
        return (a & b).sum() / (a | b).sum()

    assert csi(forecast[-1], future[-1]) > csi(observed[-1], future[-1]) + 0.1


def test_invalid_arguments_raise_a_project_error() -> None:
    with pytest.raises(NowcastError, match="frames"):
        synthetic_sequence(frames=0)
    with pytest.raises(NowcastError, match="size"):
        synthetic_sequence(size=(4, 64))
    with pytest.raises(NowcastError, match="seed"):
        synthetic_sequence(seed=-1)
    with pytest.raises(NowcastError, match="start"):
        synthetic_sequence(start="yesterday")


def test_cli_synth_writes_the_file(cli_runner, tmp_path) -> None:
    out = tmp_path / "demo.nc"
    result = cli_runner.invoke(app, ["synth", str(out), "--frames", "8", "--size", "64", "80", "--seed", "3"])
    assert result.exit_code == 0, result.output
    with xr.open_dataset(out) as ds:
        assert ds["rainfall_rate"].shape == (8, 64, 80)
        assert ds.attrs["synthetic_seed"] == 3
        np.testing.assert_allclose(
            ds["rainfall_rate"].values,
            synthetic_sequence(frames=8, size=(64, 80), seed=3)["rainfall_rate"].values,
            atol=1e-5,
        )


def test_cli_synth_rejects_bad_arguments_with_exit_code_2(cli_runner, tmp_path) -> None:
    out = tmp_path / "bad.nc"
    result = cli_runner.invoke(app, ["synth", str(out), "--frames", "0"])
    assert result.exit_code == 2
    assert "frames" in result.output
    assert not out.exists()


def test_orographic_growth_multiplies_the_same_rain_by_the_hills() -> None:
    """``growth="orographic"``: the rain of the same seed, plus the light background, times 1 + gain x
    hill height, so the heaviest enhancement sits still on the hilltops while the rain moves through."""
    from nowcast.synth import OROGRAPHIC_BACKGROUND, OROGRAPHIC_GAIN, RAIN_OFFSET, hill_heights, synthetic_sequence

    flat = synthetic_sequence(frames=6, size=(64, 64), seed=5)["rainfall_rate"].values.astype(np.float64)
    oro = synthetic_sequence(frames=6, size=(64, 64), seed=5, growth="orographic")["rainfall_rate"].values
    hills = hill_heights(5, (64, 64))
    assert hills.max() == pytest.approx(1.0, abs=0.05) and hills.min() < 0.05
    base = np.where(flat > 0, flat + RAIN_OFFSET, np.nan)  # where the flat field is not clipped at 0
    expected = (base + OROGRAPHIC_BACKGROUND) * (1.0 + OROGRAPHIC_GAIN * hills) - RAIN_OFFSET
    ok = np.isfinite(expected) & (expected < 327)
    # both fields are rounded to 0.01 mm/h; the flat one's rounding is multiplied by up to 1 + gain = 5
    np.testing.assert_allclose(oro[ok], expected[ok], atol=0.005 * (1 + OROGRAPHIC_GAIN) + 0.005 + 1e-6)
    top = np.unravel_index(hills.argmax(), hills.shape)
    assert (oro[:, top[0], top[1]] >= (OROGRAPHIC_BACKGROUND * (1 + OROGRAPHIC_GAIN * 0.95) - RAIN_OFFSET)).all()
    with pytest.raises(NowcastError, match="growth must be one of none, orographic, trend"):
        synthetic_sequence(frames=2, size=(16, 16), growth="convective")


def test_trend_cell_changes_by_its_rate_per_hour_within_its_bound() -> None:
    """``growth="trend"``: a cell's peak is its peak x exp(rate x hours from mid-life), bounded by
    ``TREND_MAX_FACTOR`` either way, and fades only over the first and last ``TREND_FADE`` of its life.
    One cell of 200 steps of 5 minutes (16.7 h), rate +0.9 per hour, read at its centre."""
    from nowcast.synth import TREND_FADE, TREND_MAX_FACTOR, _render

    cell = {"birth": np.array([-100.0]), "life": np.array([200.0]), "peak": np.array([4.0]), "sa": np.array([3.0]),
            "sb": np.array([3.0]), "angle": np.array([0.0]), "rate": np.array([0.9])}  # fmt: skip
    centre = np.array([16.0])
    at = {t: _render(centre, centre, t, cell, (32, 32), 300)[16, 16] for t in (-6, 0, 6, 12, 60, 94)}
    # mid-life is t = 0; 6 steps = 0.5 h; the fades end at t = -100 + 20 = -80 and begin at t = 80
    assert at[0] == pytest.approx(4.0)
    assert at[6] == pytest.approx(4.0 * np.exp(0.45))
    assert at[12] == pytest.approx(4.0 * np.exp(0.9))
    assert at[-6] == pytest.approx(4.0 * np.exp(-0.45))
    assert at[60] == pytest.approx(4.0 * TREND_MAX_FACTOR)  # 5 h: exp(4.5) is beyond the bound
    fade = (100 - 94) / (200 * TREND_FADE)  # 6 steps before its end, inside the last 20
    assert at[94] == pytest.approx(4.0 * TREND_MAX_FACTOR * fade * fade * (3 - 2 * fade), rel=1e-6)


def test_trend_growth_keeps_the_seeds_cells_and_is_reproducible() -> None:
    """``growth="trend"`` changes the cells' intensities, not where they are: the rain of the same seed
    covers the same pixels where both have rain well above the threshold, and the same seed gives the same data."""
    from nowcast.synth import synthetic_sequence

    flat = synthetic_sequence(frames=8, size=(64, 64), seed=5)["rainfall_rate"].values
    trend = synthetic_sequence(frames=8, size=(64, 64), seed=5, growth="trend")["rainfall_rate"].values
    again = synthetic_sequence(frames=8, size=(64, 64), seed=5, growth="trend")["rainfall_rate"].values
    np.testing.assert_array_equal(trend, again)
    assert not np.array_equal(np.nan_to_num(flat), np.nan_to_num(trend))
    np.testing.assert_array_equal(np.isnan(flat), np.isnan(trend))
    wet = np.isfinite(flat)
    assert ((flat[wet] > 0) == (trend[wet] > 0)).mean() > 0.7  # the same cells, some above and some below


def test_wind_scale_speeds_the_same_rain_up() -> None:
    """``wind_scale``: the same draws, the wind (mean and perturbations) that many times faster."""
    from nowcast.synth import _Wind

    slow, fast = (_Wind(np.random.default_rng(4), (64, 64), 300, scale=s) for s in (1.0, 3.0))
    cols, rows = np.array([5.0, 40.0]), np.array([10.0, 60.0])
    for a, b in zip(slow(cols, rows, 2.0), fast(cols, rows, 2.0)):
        np.testing.assert_allclose(b, 3.0 * a, rtol=1e-12)
    with pytest.raises(NowcastError, match="wind_scale must be in"):
        synthetic_sequence(frames=2, size=(16, 16), wind_scale=0.0)

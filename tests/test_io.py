"""Reading radar NetCDF: variable and dims, units, no-data, time checks, segments, archives, ``info`` lines."""

from __future__ import annotations

import hashlib
import logging

import dask.array
import numpy as np
import pytest

from nowcast.errors import InputError
from nowcast.io import describe_radar, open_archive, open_radar, segments

T0 = np.datetime64("2021-06-01T12:00:00", "ns")


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _offsets(da) -> list[int]:
    """Times of ``da`` in seconds after T0."""
    return [int(s) for s in (da["time"].values - T0) // np.timedelta64(1, "s")]


# ---------------------------------------------------------------------------------------------------
# the returned DataArray


def test_open_radar_schema_values_and_metadata(radar_file):
    values = np.zeros((4, 5, 6))
    values[1, 2, 3] = 12.34
    values[3, 0, 0] = 0.01
    nan = np.zeros((5, 6), bool)
    nan[4, :] = True  # last row outside coverage in every frame
    path = radar_file(frames=4, size=(5, 6), values=values, nan_mask=nan)

    da = open_radar(path)

    assert da.dims == ("time", "y", "x")
    assert da.dtype == np.float32
    assert da.name == "rainfall_rate"
    assert isinstance(da.data, dask.array.Array)
    assert da.data.chunksize[0] == 1  # read frame by frame
    out = da.values
    assert np.isnan(out[:, 4, :]).all()
    np.testing.assert_allclose(out[:, :4, :], values[:, :4, :], atol=1e-6)
    assert out[1, 2, 3] == pytest.approx(12.34, abs=1e-5)
    # coordinates: y decreasing as in the file, with attrs; the grid mapping as a scalar coordinate
    assert np.all(np.diff(da["y"].values) < 0)
    assert da["y"].attrs["standard_name"] == "projection_y_coordinate"
    assert da["x"].attrs["units"] == "m"
    assert da["crs"].ndim == 0 and "crs" not in da.dims
    assert da["crs"].attrs["grid_mapping_name"] == "polar_stereographic"
    assert da["time"].values[1] - da["time"].values[0] == np.timedelta64(300, "s")
    a = da.attrs
    assert a["source_file"] == str(path)
    assert (a["variable"], a["standard_name"], a["units"], a["grid_mapping"]) == (
        "rainfall_rate",
        "rainfall_rate",
        "mm h-1",
        "crs",
    )
    assert a["time_step"] == 300 and isinstance(a["time_step"], int)
    assert a["input_title"] == "Synthetic radar rainfall rate"
    assert a["input_institution"] == "nowcast test suite"
    assert all(isinstance(v, (str, int, float)) for v in a.values())  # netCDF-serialisable


def test_open_radar_is_lazy_and_leaves_the_file_unchanged(radar_file):
    path = radar_file(frames=5)
    before = _sha(path)
    da = open_radar(path)
    assert isinstance(da.data, dask.array.Array)
    assert da.data.numblocks[0] == 5
    da.isel(time=2).values  # noqa: B018 - reads one frame
    describe_radar([str(path)])
    assert _sha(path) == before


# ---------------------------------------------------------------------------------------------------
# variable selection


def test_variable_chosen_by_standard_name_among_others(radar_file):
    other = np.ones((6, 16, 20))
    path = radar_file(extra_vars={"quality": (("time", "y", "x"), other, {"units": "1"})})
    assert open_radar(path).attrs["variable"] == "rainfall_rate"


def test_variable_chosen_as_the_only_3d_one(radar_file):
    path = radar_file(variable="precip", standard_name=None)
    da = open_radar(path)
    assert da.name == "precip" and da.attrs["standard_name"] == "rainfall_rate"


def test_explicit_variable_and_missing_variable(radar_file):
    other = np.ones((6, 16, 20))
    path = radar_file(standard_name=None, extra_vars={"other": (("time", "y", "x"), other, {"units": "mm/h"})})
    with pytest.raises(InputError, match=r"several candidates: rainfall_rate \(time, y, x\), other \(time, y, x\)"):
        open_radar(path)
    assert float(open_radar(path, variable="other").max()) == 1.0
    with pytest.raises(InputError, match=r"expected a variable 'nope', found variables: .*rainfall_rate"):
        open_radar(path, variable="nope")


# ---------------------------------------------------------------------------------------------------
# dims


@pytest.mark.parametrize("dims", [("time", "lat", "lon"), ("time", "latitude", "longitude"), ("time", "rows", "cols")])
def test_spatial_dims_renamed_to_y_x(radar_file, dims):
    path = radar_file(dims=dims, size=(4, 7))
    da = open_radar(path)
    assert da.dims == ("time", "y", "x")
    assert da.shape == (6, 4, 7)
    if dims[1] == "lat":
        np.testing.assert_allclose(da["y"].values, 50.0 - 0.01 * np.arange(4))
        assert da["y"].attrs["standard_name"] == "latitude"


def test_multichannel_input_keeps_channel_dim(radar_file):
    values = np.arange(6 * 3 * 4 * 5, dtype=float).reshape(6, 3, 4, 5) / 10
    path = radar_file(dims=("time", "channel", "y", "x"), size=(4, 5), values=values)
    da = open_radar(path)
    assert da.dims == ("time", "channel", "y", "x")
    np.testing.assert_allclose(da.values, values, atol=1e-5)


def test_channel_last_layout_is_transposed(radar_file):
    values = np.random.default_rng(1).uniform(0, 5, size=(6, 4, 5, 3)).round(2)
    path = radar_file(dims=("time", "y", "x", "band"), size=(4, 5), values=values)
    da = open_radar(path)
    assert da.dims == ("time", "channel", "y", "x")
    np.testing.assert_allclose(da.values, values.transpose(0, 3, 1, 2), atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# units


def test_kg_m2_s1_is_multiplied_by_3600(radar_file):
    values = np.zeros((3, 2, 2))
    values[0, 0, 0] = 1 / 3600  # 1 mm/h
    values[1, 1, 1] = 0.001  # 3.6 mm/h
    path = radar_file(frames=3, size=(2, 2), values=values, units="kg m-2 s-1", standard_name=None, packed=False)
    da = open_radar(path)
    assert da.dtype == np.float32
    assert da.values[0, 0, 0] == pytest.approx(1.0, rel=1e-5)
    assert da.values[1, 1, 1] == pytest.approx(3.6, rel=1e-5)
    assert da.attrs["units"] == "mm h-1" and da.attrs["input_units"] == "kg m-2 s-1"


def test_dbz_converted_by_marshall_palmer(radar_file):
    # Z = 200 R^1.6: R = 1 mm/h is 10 log10(200) = 23.0103 dBZ; R = 10 mm/h is 16 dB more; 0 dBZ is 0.005^0.625
    values = np.array([23.0103, 39.0103, 0.0, np.nan]).reshape(1, 2, 2).repeat(3, axis=0)
    path = radar_file(
        frames=3, size=(2, 2), values=values, units="dBZ", standard_name="equivalent_reflectivity_factor", packed=False
    )
    da = open_radar(path)
    frame = da.values[0]
    assert frame[0, 0] == pytest.approx(1.0, rel=1e-4)
    assert frame[0, 1] == pytest.approx(10.0, rel=1e-4)
    assert frame[1, 0] == pytest.approx(0.03647, rel=1e-3)
    assert np.isnan(frame[1, 1])
    assert da.attrs["standard_name"] == "rainfall_rate"
    assert da.attrs["input_standard_name"] == "equivalent_reflectivity_factor"


def test_dbz_with_other_zr_relation_and_units_override(radar_file):
    # Z = 300 R^1.4: 30 dBZ is Z = 1000, R = (1000 / 300)^(1 / 1.4) = 2.3631 mm/h
    values = np.full((2, 1, 1), 30.0)
    path = radar_file(frames=2, size=(1, 1), values=values, units="furlongs", standard_name=None, packed=False)
    da = open_radar(path, units="dBZ", zr_a=300.0, zr_b=1.4)
    assert da.values[0, 0, 0] == pytest.approx(2.3631, rel=1e-4)


@pytest.mark.parametrize("units", ["mm/h", "mm hr-1", "mm h**-1", "mm  h-1"])
def test_rate_unit_spellings(radar_file, units):
    path = radar_file(units=units)
    assert open_radar(path).attrs["units"] == "mm h-1"


def test_unknown_units_is_an_error_unless_given(radar_file):
    path = radar_file(units="furlongs")
    with pytest.raises(InputError, match=r"radar\.nc: variable 'rainfall_rate': expected units .*found 'furlongs'"):
        open_radar(path)
    assert open_radar(path, units="mm h-1").attrs["units"] == "mm h-1"
    with pytest.raises(InputError, match="units given explicitly: .*found 'parsecs'"):
        open_radar(path, units="parsecs")


# ---------------------------------------------------------------------------------------------------
# no data


def test_negative_values_become_nan_and_are_logged_once(radar_file, caplog):
    values = np.ones((4, 3, 3))
    values[0, 0, 0] = -1.0
    values[2, 1, :] = -0.1
    path = radar_file(frames=4, size=(3, 3), values=values)
    with caplog.at_level(logging.INFO, logger="nowcast.io"):
        da = open_radar(path)
    out = da.values
    assert np.isnan(out[0, 0, 0]) and np.isnan(out[2, 1]).all()
    assert np.isfinite(out).sum() == 4 * 9 - 4
    lines = [r.getMessage() for r in caplog.records if r.name == "nowcast.io"]
    assert len(lines) == 1 and "4 negative values" in lines[0] and str(path) in lines[0]


def test_all_nan_is_an_error(radar_file):
    path = radar_file(nan_mask=np.ones((16, 20), bool))
    with pytest.raises(InputError, match="expected some valid rain rates, found only NaN"):
        open_radar(path)


# ---------------------------------------------------------------------------------------------------
# time


def test_gaps_split_into_segments(radar_file):
    path = radar_file(times=[0, 300, 600, 1500, 1800, 2100, 2400, 3600])
    da = open_radar(path)
    assert da.attrs["time_step"] == 300
    runs = segments(da)
    assert [_offsets(r) for r in runs] == [[0, 300, 600], [1500, 1800, 2100, 2400], [3600]]
    assert [r.sizes["time"] for r in segments(da, min_frames=3)] == [3, 4]
    assert all(r.attrs["time_step"] == 300 for r in runs)


def test_subsampling_keeps_the_phase_with_most_frames(radar_file):
    # 60 s frames 0..11 min; 300 s phases {0, 5, 10} and {1, 6, 11} both hold 3: the one with the last frame wins
    path = radar_file(frames=12, step=60, size=(3, 3))
    da = open_radar(path, time_step=300)
    assert da.attrs["time_step"] == 300
    assert _offsets(da) == [60, 360, 660]
    np.testing.assert_allclose(da.values, open_radar(path).values[[1, 6, 11]])


def test_subsampling_with_gaps(radar_file):
    # 150 s frames with a gap: phase 0 (even indices from the start) keeps 4 frames, phase 1 keeps 3
    path = radar_file(times=[0, 150, 300, 450, 600, 1200, 1350, 1500], size=(3, 3))
    da = open_radar(path, time_step=300)
    assert _offsets(da) == [0, 300, 600, 1200, 1500]
    assert [_offsets(r) for r in segments(da)] == [[0, 300, 600], [1200, 1500]]


@pytest.mark.parametrize(("step", "model"), [(120, 300), (600, 300), (360, 300)])
def test_step_not_dividing_the_model_step_names_both(radar_file, step, model):
    path = radar_file(step=step)
    with pytest.raises(InputError, match=f"model's time step of {model} s, found {step} s"):
        open_radar(path, time_step=model)


def test_irregular_step_is_an_error(radar_file):
    path = radar_file(times=[0, 300, 600, 1000])
    with pytest.raises(InputError, match=r"expected a regular time step .* found 400 s between time\[2\]"):
        open_radar(path)


@pytest.mark.parametrize(
    ("times", "message"),
    [
        ([0, 300, 600, 300, 900], r"time\[3\] = 2021-06-01T12:05:00Z is before time\[2\] = 2021-06-01T12:10:00Z"),
        ([0, 300, 600, 600, 900], r"time\[3\] = 2021-06-01T12:10:00Z repeats time\[2\]"),
    ],
)
def test_times_must_increase_strictly(radar_file, times, message):
    with pytest.raises(InputError, match=message):
        open_radar(radar_file(times=times))


def test_time_axis_that_is_not_time(radar_file):
    with pytest.raises(InputError, match="expected a time coordinate of datetimes.*found int64 values without units"):
        open_radar(radar_file(time_units=None))


# ---------------------------------------------------------------------------------------------------
# archives


def test_archive_of_files_and_globs_skips_unusable_files(radar_file, tmp_path, caplog):
    a = radar_file("a.nc", frames=8)
    radar_file("b.nc", frames=4, start="2021-06-02T00:00:00")  # too short for min_frames=6
    radar_file("c.nc", frames=8, step=360)  # 360 s does not divide 300 s
    d = radar_file("d.nc", frames=24, step=150, start="2021-06-03T00:00:00")
    with caplog.at_level(logging.WARNING, logger="nowcast.io"):
        arc = open_archive([str(tmp_path / "*.nc")], time_step=300, min_frames=6)
    assert arc.files == [str(a), str(d)]
    assert [s.sizes["time"] for s in arc.segments] == [8, 12]
    assert arc.time_step == 300
    assert [(f.rsplit("/", 1)[-1], "360 s" in r or "at least 6 frames" in r) for f, r in arc.skipped] == [
        ("b.nc", True),
        ("c.nc", True),
    ]
    warnings = [r.getMessage() for r in caplog.records if r.name == "nowcast.io" and r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "b.nc" in warnings[0] and "c.nc" in warnings[1]


def test_archive_of_one_named_file_raises_its_error(radar_file):
    path = radar_file(step=360)
    with pytest.raises(InputError, match="found 360 s"):
        open_archive([str(path)], time_step=300)


def test_archive_errors(radar_file, tmp_path):
    radar_file("a.nc", step=360)
    with pytest.raises(InputError, match=r"nothing\*\.nc: expected radar files matching this pattern, found none"):
        open_archive([str(tmp_path / "nothing*.nc")], time_step=300)
    with pytest.raises(InputError, match="expected at least one usable file among 1, found none.*a.nc: .*360 s"):
        open_archive([str(tmp_path / "*.nc")], time_step=300)


# ---------------------------------------------------------------------------------------------------
# nowcast info


def _field(lines: list[str], key: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in lines if line.startswith(key))


def test_describe_radar_statistics(radar_file):
    values = np.zeros((4, 2, 5))
    values[0, 0, :] = [0.1, 0.11, 0.5, 7.25, 0.0]  # 0.1 itself is not rainy: 3 rainy pixels
    values[3, 1, 0] = 42.0  # the maximum, the 4th rainy pixel
    nan = np.zeros((2, 5), bool)
    nan[1, 4] = True  # 4 no-data pixels of 40
    path = radar_file(frames=4, size=(2, 5), values=values, nan_mask=nan, times=[0, 300, 900, 1200])
    lines = describe_radar([str(path)])
    assert _field(lines, "file") == str(path)
    assert _field(lines, "variable") == "rainfall_rate (standard_name: rainfall_rate)"
    assert _field(lines, "units") == "mm h-1"
    assert _field(lines, "shape (t, y, x)") == "4 x 2 x 5"
    assert _field(lines, "period (UTC)") == "2021-06-01T12:00:00Z to 2021-06-01T12:20:00Z"
    assert _field(lines, "time step").startswith("300 s (5 min)")
    assert _field(lines, "gaps").startswith("1 (longest 5 min missing); 2 segments of 2 to 2 frames")
    assert _field(lines, "rainy fraction").startswith(f"{4 / 36:.3f}")
    assert _field(lines, "NaN fraction").startswith("0.100")
    assert _field(lines, "maximum") == "42.00 mm/h"


def test_describe_radar_several_files(radar_file):
    a = radar_file("a.nc", values=np.full((6, 16, 20), 1.0))
    b = radar_file("b.nc", values=np.zeros((6, 16, 20)), step=600)
    c = radar_file("c.nc", values=np.zeros((6, 16, 20)), start="2021-06-02T12:00:00")
    lines = describe_radar([str(a), str(b), str(c)])
    assert sum(line.startswith("file:") for line in lines) == 3
    # pooled at the step of most files (300 s); b, at 600 s, is left out as the archive reader would
    assert lines[-2].startswith("archive:         2 files at 300 s, 12 frames, rainy fraction 0.500")
    assert lines[-1] == f"left out:        1 file(s) at another time step: {b}"


def test_single_frame_takes_the_step_from_the_file_attribute(radar_file):
    da = open_radar(radar_file(frames=1, step=600))
    assert da.attrs["time_step"] == 600
    with pytest.raises(InputError, match="divides the model's time step of 300 s, found 600 s"):
        open_radar(radar_file("b.nc", frames=1, step=600), time_step=300)


def test_big_variables_are_checked_without_a_full_pass(radar_file, monkeypatch):
    import nowcast.io.reading

    monkeypatch.setattr(nowcast.io.reading, "_SCAN_LIMIT", 10)
    nan = np.zeros((12, 3, 3), bool)
    nan[:10] = True  # the first 10 frames hold no data: found in the second block of 8 frames
    values = np.where(np.arange(9).reshape(3, 3) == 4, -1.0, 2.0)[None].repeat(12, axis=0)
    da = open_radar(radar_file(frames=12, size=(3, 3), values=values, nan_mask=nan))
    assert np.isfinite(da.values).sum() == 2 * 8  # negatives are still masked, though not counted
    with pytest.raises(InputError, match="found only NaN"):
        open_radar(radar_file("empty.nc", frames=12, size=(3, 3), nan_mask=np.ones((3, 3), bool)))

"""``nowcast convert``: operational radar files read by pySTEPS' importers -> the radar NetCDF schema.

The inputs are small synthetic files written here in three formats, following what pySTEPS' importers
read (``pysteps/io/importers.py``): FMI PGM (reflectivity, dBZ), BoM Rainfields3 NetCDF (6-minute
accumulations in mm) and ODIM HDF5 (rain rate in mm/h; needs h5py, skipped without it). Expected rates,
times and coordinates are worked out here from the values written, not from the converter.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import netCDF4
import numpy as np
import pytest

from nowcast.cli import app

pyproj = pytest.importorskip("pyproj")

FMI_PROJ = "+proj=stere +lon_0=25E +lat_0=90N +lat_ts=60 +a=6371288 +x_0=380886.310 +y_0=3395677.920 +no_defs"
BOM_PROJ = "+proj=aea +lon_0=144.752 +lat_0=-37.852 +lat_1=-18.000 +lat_2=-36.000"
ODIM_PROJ = "+proj=laea +lat_0=55.0 +lon_0=10.0 +x_0=1950000.0 +y_0=-2100000.0 +units=m +ellps=WGS84"
CHECKER = shutil.which("compliance-checker")


# ----------------------------------------------------------------------------------------------------
# writers of the three formats


def _lonlat(proj: str, x: float, y: float) -> tuple[float, float]:
    lon, lat = pyproj.Proj(proj)(x, y, inverse=True)
    return float(lon), float(lat)


def write_fmi_pgm(path: Path, digital: np.ndarray, ll_xy: tuple[float, float], pixel_m: float = 1000.0) -> Path:
    """An FMI PGM composite: 8-bit digital numbers (dBZ = (n - 64) / 2, 255 = no data) below a header of
    '# key value' comments naming the stereographic grid by its lower-left and upper-right corners."""
    height, width = digital.shape
    ll = _lonlat(FMI_PROJ, ll_xy[0], ll_xy[1])
    ur = _lonlat(FMI_PROJ, ll_xy[0] + width * pixel_m, ll_xy[1] + height * pixel_m)
    header = [
        "P5",
        "# type stereographic",
        "# centrallongitude 25",
        "# centrallatitude 90",
        "# truelatitude 60",
        f"# bottomleft {ll[0]:.10f} {ll[1]:.10f}",
        f"# topright {ur[0]:.10f} {ur[1]:.10f}",
        f"# metersperpixel_x {pixel_m}",
        f"# metersperpixel_y {pixel_m}",
        f"{width} {height}",
        "255",
    ]
    path.write_bytes(("\n".join(header) + "\n").encode() + digital.astype(np.uint8).tobytes())
    return path


def write_bom_rf3(path: Path, mm: np.ndarray, x_km: np.ndarray, y_km: np.ndarray, valid: str, minutes: int) -> Path:
    """A BoM Rainfields3 NetCDF: ``precipitation`` (mm over ``minutes`` ending at ``valid``; -1 fill),
    x/y in km, an Albers grid mapping ``proj``, scalar ``valid_time`` and ``start_time``."""
    t_end = int(np.datetime64(valid, "s").astype(np.int64))
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("y", y_km.size)
        nc.createDimension("x", x_km.size)
        proj = nc.createVariable("proj", "i4", ())
        proj.setncatts(
            {
                "grid_mapping_name": "albers_conical_equal_area",
                "longitude_of_central_meridian": 144.752,
                "latitude_of_projection_origin": -37.852,
                "standard_parallel": np.array([-18.0, -36.0]),
            }
        )
        for name, values in (("x", x_km), ("y", y_km)):
            v = nc.createVariable(name, "f4", (name,))
            v.units = "km"
            v[:] = values
        for name, t in (("valid_time", t_end), ("start_time", t_end - 60 * minutes)):
            v = nc.createVariable(name, "i8", ())
            v.units = "seconds since 1970-01-01 00:00:00"
            v.assignValue(t)
        p = nc.createVariable("precipitation", "f4", ("y", "x"), fill_value=np.float32(-1.0))
        p.units = "mm"
        p.grid_mapping = "proj"
        p[:] = np.ma.masked_invalid(mm)
    return path


def write_odim(path: Path, raw: np.ndarray, ll_xy: tuple[float, float], pixel_m: float = 2000.0) -> Path:
    """An ODIM_H5 composite of rain rate: uint16 with gain 0.01 mm/h, nodata 65535, undetect 0, on a
    Lambert azimuthal grid given by its four corners (as OPERA writes it)."""
    h5py = pytest.importorskip("h5py")
    height, width = raw.shape
    x0, y0 = ll_xy
    x1, y1 = x0 + width * pixel_m, y0 + height * pixel_m
    with h5py.File(path, "w") as f:
        f.attrs["Conventions"] = np.bytes_("ODIM_H5/V2_2")
        what = f.create_group("what")
        what.attrs["object"] = np.bytes_("COMP")
        where = f.create_group("where")
        where.attrs["projdef"] = np.bytes_(ODIM_PROJ)
        for corner, (x, y) in {"LL": (x0, y0), "UR": (x1, y1), "UL": (x0, y1), "LR": (x1, y0)}.items():
            lon, lat = _lonlat(ODIM_PROJ, x, y)
            where.attrs[f"{corner}_lon"] = lon
            where.attrs[f"{corner}_lat"] = lat
        where.attrs["xscale"] = pixel_m
        where.attrs["yscale"] = pixel_m
        where.attrs["xsize"] = width
        where.attrs["ysize"] = height
        data = f.create_group("dataset1").create_group("data1")
        data.create_dataset("data", data=raw.astype(np.uint16))
        dwhat = data.create_group("what")
        dwhat.attrs["quantity"] = np.bytes_("RATE")
        dwhat.attrs["gain"] = 0.01
        dwhat.attrs["offset"] = 0.0
        dwhat.attrs["nodata"] = 65535.0
        dwhat.attrs["undetect"] = 0.0
    return path


def _read(path: Path) -> dict:
    """The converted file as written (packed values, attributes), read with netCDF4."""
    with netCDF4.Dataset(path) as nc:
        var = nc["rainfall_rate"]
        var.set_auto_maskandscale(False)
        return {
            "raw": var[:],
            "rate": np.where(var[:] == -32768, np.nan, var[:] * 0.01),
            "var": {k: var.getncattr(k) for k in var.ncattrs()},
            "filters": var.filters(),
            "chunks": var.chunking(),
            "time": nc["time"][:],
            "time_attrs": {k: nc["time"].getncattr(k) for k in nc["time"].ncattrs()},
            "x": nc["x"][:],
            "y": nc["y"][:],
            "crs": {k: nc["crs"].getncattr(k) for k in nc["crs"].ncattrs()},
            "global": {k: nc.getncattr(k) for k in nc.ncattrs()},
        }


def _epoch(text: str) -> int:
    return int(np.datetime64(text, "s").astype(np.int64))


# ----------------------------------------------------------------------------------------------------
# FMI PGM: reflectivity -> rate


FMI_DIGITAL = np.array(
    [
        [0, 110, 142, 174, 255, 255],
        [64, 110, 142, 174, 110, 255],
        [0, 0, 110, 142, 110, 0],
        [255, 0, 0, 110, 0, 0],
    ]
)
"""dBZ = (n - 64) / 2: 0 -> -32, 64 -> 0, 110 -> 23, 142 -> 39, 174 -> 55; 255 no data."""
FMI_RATE = {0: 0.0, 64: 0.04, 110: 1.0, 142: 9.99, 174: 99.85}
"""R = 10^((dBZ - 10 log10 200) / 16) to 0.01 mm/h (10 log10 200 = 23.0103): 23 dBZ -> 10^(-0.00064) =
0.9985 -> 1.00; 39 dBZ -> 10^0.99936 = 9.985 -> 9.99; 55 dBZ -> 10^1.99936 = 99.85; 0 dBZ -> 10^(-1.43814)
= 0.0365 -> 0.04; -32 dBZ -> 10^(-3.44) -> 0."""


@pytest.fixture
def fmi_files(tmp_path: Path) -> list[Path]:
    """Three FMI PGM frames, 5 min apart, the middle one shifted by one grey level on a rainy pixel."""
    paths = []
    for k, stamp in enumerate(("201609281600", "201609281605", "201609281610")):
        digital = FMI_DIGITAL.copy()
        digital[0, 0] = 0 if k != 1 else 64
        paths.append(
            write_fmi_pgm(
                tmp_path / f"{stamp}_fmi.radar.composite.lowest_FIN_SUOMI1.pgm", digital, (100000.0, 200000.0)
            )
        )
    return paths


def test_fmi_pgm_reflectivity_becomes_rain_rate(cli_runner, fmi_files, tmp_path):
    out = tmp_path / "fmi.nc"
    shuffled = [fmi_files[2], fmi_files[0], fmi_files[1]]  # sorted by time, not by argument order
    result = cli_runner.invoke(app, ["convert", *map(str, shuffled), "--format", "fmi_pgm", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    got = _read(out)

    expected = np.vectorize(lambda n: np.nan if n == 255 else FMI_RATE[int(n)])(FMI_DIGITAL)
    np.testing.assert_allclose(got["rate"][0], expected, atol=1e-6)
    assert got["raw"][0, 0, 2] == 999 and got["raw"][0, 0, 3] == 9985  # packed in steps of 0.01 mm/h
    assert got["raw"][0, 0, 4] == -32768  # no data is the fill value
    assert got["rate"][1, 0, 0] == pytest.approx(0.04) and got["rate"][2, 0, 0] == 0.0

    assert list(got["time"]) == [_epoch("2016-09-28T16:00"), _epoch("2016-09-28T16:05"), _epoch("2016-09-28T16:10")]
    # Lower-left corner (100 km, 200 km), 1 km pixels, 6 x 4: centres 100.5 .. 105.5 km, y 203.5 .. 200.5 km.
    np.testing.assert_allclose(got["x"], 100500.0 + 1000.0 * np.arange(6), atol=0.01)
    np.testing.assert_allclose(got["y"], 203500.0 - 1000.0 * np.arange(4), atol=0.01)

    assert got["var"]["units"] == "mm h-1" and got["var"]["standard_name"] == "rainfall_rate"
    assert got["var"]["cell_methods"] == "time: point"
    assert "Z = 200 R^1.6" in got["global"]["conversion"]
    assert "importer names Z = 223 R^1.53" in result.stderr  # FMI's own relation is named, not used
    assert got["global"]["institution"] == "Finnish Meteorological Institute"
    assert got["global"]["time_step_seconds"] == 300
    assert got["crs"]["grid_mapping_name"] == "polar_stereographic"
    assert got["crs"]["proj4"] == FMI_PROJ
    assert pyproj.CRS.from_wkt(got["crs"]["crs_wkt"]).equals(pyproj.CRS.from_proj4(FMI_PROJ))


# ----------------------------------------------------------------------------------------------------
# BoM Rainfields3: 6-minute accumulation -> rate


BOM_MM = np.array(
    [
        [0.0, 0.05, 0.1, np.nan],
        [0.3, 1.2, 2.45, 0.0],
        [-0.1, 0.0, 0.05, 5.0],
    ],
    dtype=np.float32,
)
"""mm in 6 minutes; the rate is x 10: 0.05 -> 0.5 mm/h, 2.45 -> 24.5, 5 -> 50; NaN (fill) and the
negative flag -0.1 -> no data."""
BOM_RATE = np.array([[0.0, 0.5, 1.0, np.nan], [3.0, 12.0, 24.5, 0.0], [np.nan, 0.0, 0.5, 50.0]])
BOM_X_KM = np.array([-0.75, -0.25, 0.25, 0.75])
BOM_Y_KM = np.array([0.5, 0.0, -0.5])


@pytest.fixture
def bom_files(tmp_path: Path) -> list[Path]:
    return [
        write_bom_rf3(tmp_path / f"2_20180616_{hhmm}00.prcp-cscn.nc", BOM_MM * (k + 1), BOM_X_KM, BOM_Y_KM, iso, 6)
        for k, (hhmm, iso) in enumerate((("1000", "2018-06-16T10:00"), ("1006", "2018-06-16T10:06")))
    ]


def test_bom_accumulation_becomes_rain_rate_and_reads_back(cli_runner, bom_files, tmp_path):
    from nowcast.io import open_radar

    out = tmp_path / "bom.nc"
    result = cli_runner.invoke(
        app, ["convert", *map(str, bom_files), "-f", "bom_rf3", "-o", str(out), "--variable-name", "precip_rate"]
    )
    assert result.exit_code == 0, result.stderr
    with netCDF4.Dataset(out) as nc:
        assert "precip_rate" in nc.variables and "rainfall_rate" not in nc.variables
        var = nc["precip_rate"]
        assert var.dtype == np.int16 and var.dimensions == ("time", "y", "x")
        assert var.getncattr("_FillValue") == -32768 and var.getncattr("scale_factor") == np.float32(0.01)
        assert var.filters()["zlib"] and var.chunking() == [1, 3, 4]
        assert var.cell_methods == "time: mean (interval: 6 minutes)"
        assert nc.Conventions == "CF-1.11" and nc.original_accumulation_minutes == 6.0
        assert nc.institution == "Commonwealth of Australia, Bureau of Meteorology"
        assert "bom_rf3" in nc.history and "bom_rf3" in nc.source
        assert nc.n_negative_values_set_to_nan == 2  # one per frame

    da = open_radar(out).compute()
    np.testing.assert_allclose(da.values[0], BOM_RATE, atol=1e-5)
    np.testing.assert_allclose(da.values[1], np.round(BOM_RATE * 2, 2), atol=1e-5)
    assert da.attrs["time_step"] == 360
    assert [str(t)[:16] for t in da["time"].values] == ["2018-06-16T10:00", "2018-06-16T10:06"]
    # The BoM importer gives the first and last stored coordinates: the km values are pixel centres.
    np.testing.assert_allclose(da["x"].values, BOM_X_KM * 1000.0)
    np.testing.assert_allclose(da["y"].values, BOM_Y_KM * 1000.0)

    info = cli_runner.invoke(app, ["info", str(out)])
    assert info.exit_code == 0, info.stderr
    assert "time step:       360 s (6 min)" in info.stdout


@pytest.mark.skipif(CHECKER is None, reason="compliance-checker is not installed")
def test_converted_file_passes_cf_1_11(cli_runner, bom_files, fmi_files, tmp_path):
    for name, files, fmt in (("bom", bom_files, "bom_rf3"), ("fmi", fmi_files, "fmi_pgm")):
        out = tmp_path / f"{name}.nc"
        assert cli_runner.invoke(app, ["convert", *map(str, files), "-f", fmt, "-o", str(out)]).exit_code == 0
        proc = subprocess.run(
            [CHECKER, "--test=cf:1.11", "--format=text", str(out)], capture_output=True, text=True, timeout=300
        )
        assert "All tests passed!" in proc.stdout, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------------------------------
# ODIM HDF5: rain rate as is


def test_odim_rate_with_nodata_and_undetect(cli_runner, tmp_path):
    raw = np.array([[0, 1234, 65535], [50, 0, 32767]])  # undetect -> 0 mm/h, nodata -> NaN, 327.67 kept
    files = [
        write_odim(tmp_path / f"T_PAAH21_C_EUOC_20180824{hhmm}00.hdf", raw, (2000000.0, -2000000.0))
        for hhmm in ("1800", "1815")
    ]
    out = tmp_path / "opera.nc"
    result = cli_runner.invoke(app, ["convert", *map(str, files), "-f", "odim_hdf5", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    got = _read(out)
    np.testing.assert_allclose(got["rate"][0], [[0.0, 12.34, np.nan], [0.5, 0.0, 327.67]], atol=1e-6)
    assert got["global"]["time_step_seconds"] == 900
    assert got["var"]["cell_methods"] == "time: point"
    np.testing.assert_allclose(got["x"], [2001000.0, 2003000.0, 2005000.0], atol=0.5)
    np.testing.assert_allclose(got["y"], [-1997000.0, -1999000.0], atol=0.5)
    assert got["crs"]["grid_mapping_name"] == "lambert_azimuthal_equal_area"


# ----------------------------------------------------------------------------------------------------
# times, grids and errors


def test_file_times_from_names():
    from nowcast.errors import InputError
    from nowcast.io import file_time

    t = np.datetime64
    assert file_time("radar/T_PAAH21_C_EUOC_20180824181500.hdf") == t("2018-08-24T18:15:00")
    assert file_time("RAD_NL25_RAP_5min_201008260035.h5") == t("2010-08-26T00:35")
    assert file_time("PrecipRate_00.00_20190610-000200.grib2") == t("2019-06-10T00:02")
    assert file_time("66_20201031_235000.prcp-c10.nc") == t("2020-10-31T23:50")
    # MeteoSwiss: two-digit year and day of year; day 135 of 2015 is 15 May.
    assert file_time("AQC151351545F_00005.801.gif", "AQC%y%j%H%M?_") == t("2015-05-15T15:45")
    with pytest.raises(InputError, match="expected a time stamp in the file name"):
        file_time("AQC151351545F_00005.801.gif")
    with pytest.raises(InputError, match="found several"):
        file_time("201008260035_to_201008260040.h5")
    with pytest.raises(InputError, match="expected a valid time"):
        file_time("x_20181324.h5", "x_%Y%m%d")


def test_grid_from_metadata_lower_origin_and_km():
    from nowcast.io import frame_grid

    meta = {
        "projection": "+proj=stere +lat_0=90 +lon_0=0 +lat_ts=60 +ellps=WGS84 +units=km",
        "x1": 0.0,
        "x2": 3.0,
        "y1": -10.0,
        "y2": -8.0,
        "xpixelsize": 1.0,
        "ypixelsize": 1.0,
        "cartesian_unit": "km",
        "yorigin": "lower",
    }
    grid = frame_grid(meta, (2, 3))
    np.testing.assert_allclose(grid.x, [500.0, 1500.0, 2500.0])
    np.testing.assert_allclose(grid.y, [-8500.0, -9500.0])  # row 0 north after flipping
    assert grid.flip and "+units=m" in grid.projection


def _fake_importer(frames: dict[str, tuple[np.ndarray, dict]]):
    def importer(filename: str, **kwargs):
        values, meta = frames[Path(filename).name]
        return values.copy(), None, dict(meta)

    return importer


def test_lower_origin_frames_are_flipped_and_mixed_grids_refused(cli_runner, tmp_path, monkeypatch):
    import nowcast.io.convert as convert

    meta = {
        "projection": "+proj=laea +lat_0=55 +lon_0=10 +ellps=WGS84",
        "x1": 0.0,
        "x2": 2000.0,
        "y1": 0.0,
        "y2": 2000.0,
        "xpixelsize": 1000.0,
        "ypixelsize": 1000.0,
        "cartesian_unit": "m",
        "yorigin": "lower",
        "unit": "mm/h",
        "transform": None,
        "institution": "test radar",
    }
    south_first = np.array([[1.0, 2.0], [3.0, np.nan]])  # row 0 is the southern row
    frames = {
        "a_202401010000.dat": (south_first, meta),
        "a_202401010005.dat": (south_first * 2, meta),
        "a_202401010010.dat": (south_first, {**meta, "x2": 3000.0, "xpixelsize": 1500.0}),
    }
    for name in frames:
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.setattr(convert, "_importer", lambda fmt: _fake_importer(frames))

    out = tmp_path / "out.nc"
    two = [str(tmp_path / n) for n in list(frames)[:2]]
    assert cli_runner.invoke(app, ["convert", *two, "-f", "odim_hdf5", "-o", str(out)]).exit_code == 0
    got = _read(out)
    np.testing.assert_allclose(got["rate"][0], [[3.0, np.nan], [1.0, 2.0]])
    np.testing.assert_allclose(got["y"], [1500.0, 500.0])

    bad = cli_runner.invoke(app, ["convert", *[str(tmp_path / n) for n in frames], "-f", "odim_hdf5", "-o", str(out)])
    assert bad.exit_code == 2
    line = bad.stderr.strip()
    assert (
        len(line.splitlines()) == 1 and "a_202401010010.dat: expected the grid of" in line and "x 750 to 2250" in line
    )


def _one_error_line(result) -> str:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nowcast: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_unknown_format_lists_the_valid_ones(cli_runner, fmi_files, tmp_path):
    line = _one_error_line(
        cli_runner.invoke(app, ["convert", str(fmi_files[0]), "-f", "hdf9", "-o", str(tmp_path / "o.nc")])
    )
    assert "--format 'hdf9': expected one of bom_rf3," in line and "odim_hdf5" in line and "saf_crri" in line


def test_wrong_file_for_the_format(cli_runner, fmi_files, tmp_path):
    out = tmp_path / "o.nc"
    line = _one_error_line(cli_runner.invoke(app, ["convert", str(fmi_files[0]), "-f", "bom_rf3", "-o", str(out)]))
    assert f"{fmi_files[0]}: expected a bom_rf3 file, found one pySTEPS cannot read" in line
    assert not out.exists() and list(tmp_path.glob(".o.nc*")) == []  # nothing half-written left


def test_missing_file_and_duplicated_times(cli_runner, fmi_files, tmp_path):
    out = str(tmp_path / "o.nc")
    missing = tmp_path / "201609281615_fmi.pgm"
    line = _one_error_line(
        cli_runner.invoke(app, ["convert", str(fmi_files[0]), str(missing), "-f", "fmi_pgm", "-o", out])
    )
    assert f"{missing}: expected a fmi_pgm radar file, found no such file" in line

    twin = tmp_path / "copy_201609281600.pgm"
    shutil.copy(fmi_files[0], twin)
    line = _one_error_line(
        cli_runner.invoke(app, ["convert", str(fmi_files[0]), str(twin), "-f", "fmi_pgm", "-o", out])
    )
    assert "expected one file per time, found the time 2016-09-28T16:00:00Z" in line


def test_gap_is_refused(cli_runner, fmi_files, tmp_path):
    out = str(tmp_path / "o.nc")
    shifted = tmp_path / "201609281620_fmi.pgm"
    shutil.copy(fmi_files[2], shifted)
    line = _one_error_line(
        cli_runner.invoke(
            app, ["convert", str(fmi_files[0]), str(fmi_files[1]), str(shifted), "-f", "fmi_pgm", "-o", out]
        )
    )
    assert f"{shifted}: expected frames every 300 s, found 900 s after {fmi_files[1]}" in line


def test_missing_reader_dependency_names_the_pip_command(cli_runner, tmp_path, monkeypatch):
    import nowcast.io.convert as convert
    from pysteps.exceptions import MissingOptionalDependency

    def importer(filename: str, **kwargs):
        raise MissingOptionalDependency(
            "pygrib package is required to import NCEP's MRMS products but it is not installed"
        )

    monkeypatch.setattr(convert, "_importer", lambda fmt: importer)
    src = tmp_path / "PrecipRate_00.00_20190610-000200.grib2"
    src.write_bytes(b"GRIB")
    line = _one_error_line(
        cli_runner.invoke(app, ["convert", str(src), "-f", "mrms_grib", "-o", str(tmp_path / "o.nc")])
    )
    assert "--format mrms_grib: expected the pygrib package" in line and "pip install pygrib" in line


def test_bad_option_is_a_usage_error(cli_runner, tmp_path):
    line = _one_error_line(
        cli_runner.invoke(app, ["convert", "x.pgm", "-f", "fmi_pgm", "-o", "o.nc", "--option", "qty"])
    )
    assert "--option" in line and "KEY=VALUE" in line


def test_importer_arguments_are_checked_before_reading(cli_runner, tmp_path):
    src = tmp_path / "AQC151351545F_00005.801.gif"
    src.write_bytes(b"GIF89a")
    args = ["convert", str(src), "-f", "mch_gif", "-o", str(tmp_path / "o.nc"), "--time-pattern", "AQC%y%j%H%M"]
    line = _one_error_line(cli_runner.invoke(app, args))
    assert "--format mch_gif: expected its importer's arguments as --option KEY=VALUE (product, unit, accutime)" in line
    assert "missing a required argument: 'product'" in line

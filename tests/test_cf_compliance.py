"""Forecast files are CF-1.11 clean: the IOOS compliance checker (``compliance-checker --test=cf:1.11``)
reports no error and no warning for forecasts from ``nowcast synth`` and from every real radar file, whose
grid mappings have gaps (KNMI: no latitude_of_projection_origin; MRMS: no CF grid mapping at all).

The checker tests skip where ``compliance-checker`` is not installed (``pip install -e ".[dev]"``), the
real-data ones where ``../shared/data/radar`` is absent.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr

from conftest import REAL_DATA, make_tiny_checkpoint
from nowcast.cli import app
from nowcast.io import complete_grid_mapping

CHECKER = shutil.which("compliance-checker")
needs_checker = pytest.mark.skipif(CHECKER is None, reason="compliance-checker is not installed")
REAL_FILES = sorted(REAL_DATA.glob("*.nc")) if (REAL_DATA / "README.md").is_file() else []


def _check_cf(path: Path) -> None:
    """Run the IOOS checker on ``path``; fail with its report unless it found nothing at all."""
    proc = subprocess.run(
        [CHECKER, "--test=cf:1.11", "--format=text", str(path)], capture_output=True, text=True, timeout=300
    )
    assert "All tests passed!" in proc.stdout, proc.stdout + proc.stderr


def _predict(cli_runner, src: Path, ckpt: Path, out: Path, *extra: str) -> str:
    """Run ``nowcast predict`` (2 lead times); return its log (stderr)."""
    result = cli_runner.invoke(app, ["predict", str(src), "--model", str(ckpt), "-o", str(out), "--steps", "2", *extra])
    assert result.exit_code == 0, result.stderr
    return result.stderr


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny random checkpoints by time step (s): the file's contents, not the model, are under test."""
    folder = tmp_path_factory.mktemp("ckpts")
    made: dict[int, Path] = {}

    def get(step: int) -> Path:
        if step not in made:
            made[step] = make_tiny_checkpoint(folder / f"tiny_{step}.pt", f"data.time_step={step}")
        return made[step]

    return get


@needs_checker
def test_forecast_from_synth_passes_cf_1_11(cli_runner, checkpoints, tmp_path):
    src = tmp_path / "synth.nc"
    result = cli_runner.invoke(app, ["synth", str(src), "--frames", "6", "--size", "64", "64"])
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "fc.nc"
    _predict(cli_runner, src, checkpoints(300), out)
    _check_cf(out)
    with xr.open_dataset(out, decode_times=False) as ds:
        assert ds.attrs["Conventions"] == "CF-1.11"
        assert ds["time"].attrs["units_metadata"] == "leap_seconds: none"


@needs_checker
@pytest.mark.parametrize("src", REAL_FILES or [None], ids=[p.stem for p in REAL_FILES] or ["no real data"])
def test_forecast_from_real_file_passes_cf_1_11(cli_runner, src, checkpoints, tmp_path):
    if src is None:
        pytest.skip(f"real radar data not found at {REAL_DATA}")
    with netCDF4.Dataset(src) as nc:
        step, attrs = int(nc.time_step_seconds), nc.__dict__
    out = tmp_path / "fc.nc"
    _predict(cli_runner, src, checkpoints(step), out)
    _check_cf(out)
    with netCDF4.Dataset(out) as nc:
        assert nc.institution == attrs["institution"]
        assert nc.license == attrs.get("licence", attrs.get("license"))  # usage terms travel with the product


def test_knmi_like_gap_is_completed_and_said_in_history(cli_runner, radar_file, checkpoints, tmp_path):
    src = radar_file(frames=5, size=(32, 40))
    with netCDF4.Dataset(src, "a") as nc:  # as KNMI's file: polar stereographic without its origin latitude
        nc["crs"].delncattr("latitude_of_projection_origin")
    out = tmp_path / "fc.nc"
    _predict(cli_runner, src, checkpoints(300), out)
    with netCDF4.Dataset(out) as nc:
        assert nc["crs"].latitude_of_projection_origin == 90.0
        assert nc["crs"].standard_parallel == 60.0  # present attributes unchanged
        assert (
            "grid mapping 'crs' completed from its CRS: " in nc.history
            and "latitude_of_projection_origin" in nc.history
        )
    if CHECKER:
        _check_cf(out)


def test_crs_without_cf_grid_mapping_gets_latitude_longitude(cli_runner, radar_file, checkpoints, tmp_path):
    src = radar_file(frames=5, size=(32, 40), global_attrs={"license": "CC-BY 4.0"})
    with netCDF4.Dataset(src, "a") as nc:  # as MRMS: an equidistant cylindrical CRS, no grid_mapping_name
        crs = nc["crs"]
        for name in crs.ncattrs():
            crs.delncattr(name)
        crs.proj4 = "+proj=eqc +lat_ts=45.44 +lat_0=0 +lon_0=-84.5 +x_0=0 +y_0=0 +R=6371000 +units=m +no_defs"
    out = tmp_path / "fc.nc"
    said = [
        line for line in _predict(cli_runner, src, checkpoints(300), out).splitlines() if "no CF equivalent" in line
    ]
    assert len(said) == 1 and " INFO grid mapping 'crs' has no CF equivalent (+proj=eqc" in said[0]
    with netCDF4.Dataset(out) as nc:
        assert "crs" not in nc.variables and "grid_mapping" not in nc["rainfall_rate"].ncattrs()
        assert nc["lat"].dimensions == ("y", "x") and nc["lat"].units == "degrees_north"
        assert set(nc["rainfall_rate"].coordinates.split()) >= {"lat", "lon"}
        # pixel (row 0, col 0) at x = 500 m, y = 31500 m on a sphere of radius 6371 km with lat_ts 45.44
        lon0 = -84.5 + np.degrees(500.0 / (6371000.0 * np.cos(np.radians(45.44))))
        assert abs(nc["lon"][0, 0] - lon0) < 1e-6 and abs(nc["lat"][0, 0] - np.degrees(31500.0 / 6371000.0)) < 1e-6
        assert "has no CF equivalent" in nc.history
        assert nc.license == "CC-BY 4.0"
    if CHECKER:
        _check_cf(out)


def test_complete_grid_mapping_keeps_present_attributes():
    attrs = {
        "grid_mapping_name": "oblique_mercator",
        "azimuth_of_central_line": 90.0,
        "latitude_of_projection_origin": 46.95,
        "longitude_of_projection_origin": 7.44,
        "scale_factor_at_projection_origin": 1.0,
        "false_easting": 600000.0,
        "false_northing": 200000.0,
    }
    done, added = complete_grid_mapping(attrs)
    assert done is not None and {k: done[k] for k in attrs} == attrs
    assert done["azimuth"] == 90.0 and added == ["azimuth"]  # no CRS text: only the checker's alias
    assert complete_grid_mapping({"proj4": "+proj=eqc +lat_ts=45 +R=6371000"}) == (None, [])

"""Shared fixtures: synthetic radar files in the schema of ``shared/data/radar`` and the real-data path."""

from __future__ import annotations

from scripts.common import RADAR_DIR

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = RADAR_DIR
"""The eight real radar events (see its README.md); absent on machines without the shared folder."""

CRS_ATTRS = {
    "grid_mapping_name": "polar_stereographic",
    "straight_vertical_longitude_from_pole": 0.0,
    "latitude_of_projection_origin": 90.0,
    "standard_parallel": 60.0,
    "false_easting": 0.0,
    "false_northing": 0.0,
    "semi_major_axis": 6378137.0,
    "inverse_flattening": 298.257223563,
    "proj4": "+proj=stere +lat_0=90 +lon_0=0 +lat_ts=60 +ellps=WGS84 +units=m",
    "crs_wkt": 'PROJCS["synthetic polar stereographic"]',
}


def default_rain(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """Deterministic rain-like values (mm/h, float64): about half the pixels 0, the rest 0.01-40 mm/h."""
    rng = np.random.default_rng(seed)
    rain = rng.gamma(0.6, 4.0, size=tuple(shape))
    rain[rng.random(tuple(shape)) < 0.5] = 0.0
    return np.round(np.minimum(rain, 40.0), 2)


@pytest.fixture
def radar_file(tmp_path: Path) -> Callable[..., Path]:
    """Factory of small synthetic radar NetCDF files in the real schema (``shared/data/radar/README.md``).

    ``radar_file(name="radar.nc", **options) -> Path`` writes ``tmp_path / name`` with netCDF4 directly
    (not through xarray, so the reader is tested against an independent writer). By default: dims
    ``(time, y, x)``; ``rainfall_rate`` stored as int16 with ``scale_factor = 0.01``, ``add_offset = 0``,
    ``_FillValue = -32768``, zlib, one chunk per frame, ``units = "mm h-1"``,
    ``standard_name = "rainfall_rate"``, ``grid_mapping = "crs"``; ``time`` int64
    ``seconds since 1970-01-01 00:00:00``; ``y`` decreasing and ``x`` increasing, in metres (1 km pixels);
    a scalar ``crs`` grid-mapping variable; global ``title``, ``institution``, ``time_step_seconds``.

    Options (all keyword):
        frames, size=(ny, nx), step (s), start (ISO time of the first frame), channels (for 4-D dims)
        times: explicit offsets in seconds from ``start`` (gaps, duplicates, decreasing times), overrides
            frames and step
        values: the data (physical units, NaN = no data) with the shape of ``dims``; default: ``default_rain``
        nan_mask: boolean array broadcast against the data; True -> no data (NaN / _FillValue)
        variable: data variable name; None writes no data variable at all
        units, standard_name, long_name: attributes of the data variable (None: attribute left out)
        dims: data dims, e.g. ("time", "lat", "lon"), ("time", "channel", "y", "x"), ("time", "y", "x", "band"),
            ("y", "x"); spatial: the two named y/x, lat/lon, latitude/longitude or rows/cols, else the last
            two; "time" gets the time coordinate; any other dim has ``channels`` entries
        packed: int16 packing as above (True) or float32 with ``_FillValue`` NaN (False)
        time_units: units of the time variable; None writes plain integers (a time axis that is not time)
        extra_vars: {name: (dims, array, attrs)} written as further variables (float32 unless int/str)
        global_attrs: extra or replacement global attributes
        seed: seed of the default values
    """

    def make(
        name: str = "radar.nc",
        *,
        frames: int = 6,
        size: tuple[int, int] = (16, 20),
        step: int = 300,
        start: str = "2021-06-01T12:00:00",
        times: Sequence[int] | None = None,
        channels: int = 3,
        values: np.ndarray | None = None,
        nan_mask: np.ndarray | None = None,
        variable: str | None = "rainfall_rate",
        units: str | None = "mm h-1",
        standard_name: str | None = "rainfall_rate",
        long_name: str | None = "radar rainfall rate",
        dims: Sequence[str] = ("time", "y", "x"),
        packed: bool = True,
        time_units: str | None = "seconds since 1970-01-01 00:00:00",
        extra_vars: dict[str, tuple[Sequence[str], Any, dict[str, Any]]] | None = None,
        global_attrs: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> Path:
        import netCDF4

        path = tmp_path / name
        offsets = np.asarray(times if times is not None else np.arange(frames) * step, dtype=np.int64)
        t0 = int(np.datetime64(start, "s").astype(np.int64))
        ny, nx = size
        dims = tuple(dims)
        named = [d for d in dims if d in ("y", "x", "lat", "lon", "latitude", "longitude", "rows", "cols")]
        spatial = tuple(named) if len(named) == 2 else dims[-2:]
        sizes = {d: len(offsets) if d == "time" else channels for d in dims} | {spatial[0]: ny, spatial[1]: nx}
        shape = tuple(sizes[d] for d in dims)
        data = default_rain(shape, seed) if values is None else np.asarray(values, dtype=np.float64).copy()
        if data.shape != shape:
            raise ValueError(f"values: expected shape {shape} for dims {dims}, found {data.shape}")
        if nan_mask is not None:
            data[np.broadcast_to(nan_mask, shape)] = np.nan

        with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
            nc.setncatts(
                {
                    "Conventions": "CF-1.8",
                    "title": "Synthetic radar rainfall rate",
                    "institution": "nowcast test suite",
                    "time_step_seconds": np.int32(step),
                    **(global_attrs or {}),
                }
            )
            for d in dims:
                nc.createDimension(d, sizes[d])
            if "time" in dims:
                tv = nc.createVariable("time", "i8", ("time",))
                if time_units is not None:
                    tv.setncatts({"units": time_units, "calendar": "standard", "standard_name": "time", "axis": "T"})
                tv[:] = t0 + offsets if time_units is not None else offsets
            ydim, xdim = spatial
            geographic = ydim in ("lat", "latitude")
            yv = nc.createVariable(ydim, "f8", (ydim,))
            xv = nc.createVariable(xdim, "f8", (xdim,))
            if geographic:
                yv.setncatts({"standard_name": "latitude", "units": "degrees_north"})
                xv.setncatts({"standard_name": "longitude", "units": "degrees_east"})
                yv[:] = 50.0 - 0.01 * np.arange(ny)
                xv[:] = 5.0 + 0.01 * np.arange(nx)
            else:
                yv.setncatts({"standard_name": "projection_y_coordinate", "units": "m", "axis": "Y"})
                xv.setncatts({"standard_name": "projection_x_coordinate", "units": "m", "axis": "X"})
                yv[:] = 1000.0 * (ny - 1 - np.arange(ny)) + 500.0  # row 0 is the northern edge
                xv[:] = 1000.0 * np.arange(nx) + 500.0
            crs = nc.createVariable("crs", "i4", ())
            crs.setncatts(CRS_ATTRS)
            crs.assignValue(0)

            if variable is not None:
                chunks = tuple(1 if d == "time" else sizes[d] for d in dims)
                if packed:
                    v = nc.createVariable(
                        variable, "i2", dims, fill_value=np.int16(-32768), zlib=True, shuffle=True, chunksizes=chunks
                    )
                    v.setncatts({"scale_factor": np.float32(0.01), "add_offset": np.float32(0.0)})
                    v.set_auto_maskandscale(False)
                    raw = np.where(np.isnan(data), -32768, np.clip(np.round(np.nan_to_num(data) / 0.01), -32767, 32767))
                    v[...] = raw.astype(np.int16)
                else:
                    nan32 = np.float32(np.nan)
                    v = nc.createVariable(variable, "f4", dims, fill_value=nan32, zlib=True, chunksizes=chunks)
                    v.set_auto_maskandscale(False)
                    v[...] = data.astype(np.float32)
                attrs = {"units": units, "standard_name": standard_name, "long_name": long_name, "grid_mapping": "crs"}
                v.setncatts({k: val for k, val in attrs.items() if val is not None})
            for extra, (edims, arr, eattrs) in (extra_vars or {}).items():
                arr = np.asarray(arr)
                if arr.dtype.kind in "US":
                    ev = nc.createVariable(extra, str, tuple(edims))
                    ev[:] = arr.astype(object)
                else:
                    kind = "i4" if arr.dtype.kind in "iu" else "f4"
                    ev = nc.createVariable(extra, kind, tuple(edims))
                    ev[...] = arr
                ev.setncatts(eattrs)
        return path

    return make


@pytest.fixture
def real_data() -> Path:
    """The real radar folder; skips the test when it is absent."""
    if not (REAL_DATA / "README.md").is_file():
        pytest.skip(f"real radar data not found at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(autouse=True)
def _restore_nowcast_logging():
    """Undo the CLI's logging set-up (handlers, level, propagate=False) so ``caplog`` sees every test."""
    logger = logging.getLogger("nowcast")

    def clean() -> None:  # as before any CLI run (a module fixture may have run one before this test)
        logger.handlers[:] = []
        logger.setLevel(logging.NOTSET)
        logger.propagate = True

    clean()
    yield
    clean()


@pytest.fixture(autouse=True)
def _one_torch_thread(monkeypatch):
    """Tiny models on tiny grids: one torch thread is fastest and does not fight other processes
    (``predict`` and subprocesses honour OMP_NUM_THREADS)."""
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_tiny_checkpoint(path: Path, *overrides: str) -> Path:
    """An untrained, seeded ``configs/tiny.yaml`` model (4 frames in, 4 out, 300 s) saved at ``path``."""
    import torch

    from nowcast.models.checkpoint import save_checkpoint
    from nowcast.config import load_config
    from nowcast.models.registry import build_model

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml", list(overrides))
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.data)
    return save_checkpoint(path, config=cfg, state_dict=model.state_dict(), provenance={"note": "random test weights"})


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """Path of an untrained tiny checkpoint shared by a test module."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def moving_rain(
    frames: int, size: tuple[int, int] = (40, 48), shift: tuple[int, int] = (0, 1), seed: int = 0
) -> np.ndarray:
    """(frames, H, W) mm/h: Gaussian rain cells moving ``shift`` = (rows, cols) pixels per frame.

    Frame t is a window of a larger fixed field, moved by ``t * shift`` (no wrap-around: rain enters
    from outside the domain on the upwind side). About a tenth of the pixels have >= 1 mm/h.
    """
    h, w = size
    dy, dx = shift
    pad = frames * max(abs(dy), abs(dx)) + 8
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0 : h + 2 * pad, 0 : w + 2 * pad]
    big = np.zeros(rows.shape)
    n_cells = max(4, big.size // 500)
    for r, c, sigma, peak in zip(
        rng.uniform(0, rows.shape[0], n_cells),
        rng.uniform(0, cols.shape[1], n_cells),
        rng.uniform(1.5, 3.5, n_cells),
        rng.uniform(2.0, 30.0, n_cells),
    ):
        big += peak * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * sigma**2))
    big = np.round(np.where(big < 0.05, 0.0, big), 2)
    return np.stack([big[pad - t * dy : pad - t * dy + h, pad - t * dx : pad - t * dx + w] for t in range(frames)])


@pytest.fixture
def cli_runner():
    """A Typer ``CliRunner`` whose result keeps stderr apart from stdout (``result.stderr``)."""
    from typer.testing import CliRunner

    try:
        return CliRunner(mix_stderr=False)  # click < 8.2 mixes stderr into output unless told not to
    except TypeError:
        return CliRunner()  # click >= 8.2 keeps result.stderr separate


@pytest.fixture
def pysteps_installed() -> None:
    """Imports pysteps (a core dependency) once, without its stdout banner, before a test that compares with it."""
    from nowcast.nowcasts.baselines import pysteps_methods

    pysteps_methods()


SLOW_WRITER = """
import sys, time
import xarray as xr
real = xr.Dataset.to_netcdf
def slow(self, path=None, *args, **kwargs):
    out = real(self, path, *args, **kwargs)
    print("TEMP-WRITTEN", path, flush=True)
    time.sleep(float(sys.argv[1]))
    return out
xr.Dataset.to_netcdf = slow
from nowcast.cli import app
app(sys.argv[2:], prog_name="nowcast")
"""
"""``nowcast`` with every NetCDF write slowed: after the temporary file is written and before the
rename it prints a line and sleeps, so a test knows the command is mid-write."""


def slowed_nowcast(sleep_s: float, args: Sequence[str | Path], cwd: Path = REPO_ROOT) -> subprocess.Popen:
    """``nowcast ARGS`` in a subprocess (one torch thread) whose NetCDF writes sleep ``sleep_s`` before the rename."""
    env = dict(
        os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    )
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(sleep_s), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
    )


def next_slowed_write(proc: subprocess.Popen, timeout_s: float = 120.0) -> Path:
    """The temporary file a ``slowed_nowcast`` process has just written (it now sleeps before renaming)."""
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        for line in proc.stdout:
            if line.startswith("TEMP-WRITTEN"):
                return Path(line.split(maxsplit=1)[1].strip())
    finally:
        timer.cancel()
    raise AssertionError(f"the slowed run ended before writing (exit {proc.wait()}): {proc.stderr.read()}")

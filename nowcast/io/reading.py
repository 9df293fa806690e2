"""Reading radar NetCDF files: open, validate, convert to mm/h. No torch import.

Input files are opened read-only with xarray's netCDF4 engine and never written to. The data variable
becomes a dask array of one frame per chunk, so a frame is read only when a caller asks for it and an
archive larger than memory is never loaded whole.

- ``open_radar``: one file -> rain rate (mm/h, float32, NaN = no data) as a lazy DataArray with dims
  ``(time, y, x)`` or ``(time, channel, y, x)``, its regular time step in ``attrs["time_step"]``.
- ``segments``: the gap-free runs of such a DataArray.
- ``open_archive``: many files and glob patterns -> an ``Archive`` of segments; unusable files skipped.
- ``data_time_step``: the time step of the first (or newest) usable file.
"""

from __future__ import annotations

import functools
import glob
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import dask
import numpy as np
import xarray as xr

from nowcast.errors import InputError, first_line
from nowcast.units import ZR_A, ZR_B, dbz_to_rate

log = logging.getLogger("nowcast.io")  # one logger for the package: its messages read "nowcast.io"


RAIN_STANDARD_NAMES = ("rainfall_rate", "lwe_precipitation_rate", "equivalent_reflectivity_factor")
"""standard_name values that select the data variable when ``variable`` is not given."""

_UNITS = {
    "mm h-1": "rate",
    "mm/h": "rate",
    "mm hr-1": "rate",
    "mm h**-1": "rate",
    "mm h^-1": "rate",
    "mm/hr": "rate",
    "kg m-2 s-1": "flux",
    "kg m**-2 s**-1": "flux",
    "kg m^-2 s^-1": "flux",
    "dbz": "dbz",
}
_ACCEPTED_UNITS = "mm h-1, mm/h, mm hr-1, mm h**-1, kg m-2 s-1 or dBZ"
_SPATIAL_NAMES = {
    "y": "y",
    "lat": "y",
    "latitude": "y",
    "rows": "y",
    "x": "x",
    "lon": "x",
    "longitude": "x",
    "cols": "x",
}
_SCAN_LIMIT = 2**28
"""Variables up to this many values (1 GiB of float32) get an exact count of negative values at open."""
NS = 1_000_000_000
"""Nanoseconds per second: times are int64 nanoseconds since 1970 (UTC) throughout."""


# ----------------------------------------------------------------------------------------------------
# small helpers


def iso_time(t: int | np.integer | np.datetime64) -> str:
    """UTC ISO 8601 text, to the second, of a time in nanoseconds since 1970 or a datetime64 (times
    are taken as UTC)."""
    t64 = t if isinstance(t, np.datetime64) else np.datetime64(int(t), "ns")
    return str(np.datetime_as_string(t64, unit="s")) + "Z"


def _dims_text(dims: Sequence[str]) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ")"


def _unit_kind(units: object) -> str | None:
    """'rate' (mm/h), 'flux' (kg m-2 s-1) or 'dbz' for accepted unit strings, else None."""
    return None if units is None else _UNITS.get(" ".join(str(units).split()).lower())


def _is_pattern(path: str) -> bool:
    return any(c in path for c in "*?[")


def _expand(paths: Sequence[str | Path]) -> list[str]:
    """Files named by ``paths``: glob patterns expanded (sorted), plain paths kept; duplicates dropped."""
    files: list[str] = []
    for item in paths:
        text = os.path.expanduser(str(item))
        if _is_pattern(text):
            matches = sorted(glob.glob(text))
            if not matches:
                raise InputError(f"{item}: expected radar files matching this pattern, found none")
            files.extend(matches)
        else:
            files.append(text)
    return list(dict.fromkeys(files))


def _reason(path: str, exc: InputError) -> str:
    """The message of ``exc`` without its leading ``path: ``."""
    text = str(exc)
    return text[len(path) + 2 :] if text.startswith(f"{path}: ") else text


# ----------------------------------------------------------------------------------------------------
# opening one file


@contextmanager
def _without_chunk_cache() -> Iterator[None]:
    """Files opened within keep no chunk cache (the netCDF library's default for files opened, restored
    after).

    Every read of ours wants frames it has not read before (a window, a new frame, one pass), so the
    library's default cache of 64 MB per variable and open file only held decompressed frames: a training
    run reading windows from many files grew by up to that much per file it kept open. The setting must be
    made when the file is opened: a second handle on a file already open shares the first one's cache.
    """
    import netCDF4

    before = netCDF4.get_chunk_cache()
    netCDF4.set_chunk_cache(size=0, nelems=before[1], preemption=before[2])
    try:
        yield
    finally:
        netCDF4.set_chunk_cache(*before)


def _open_dataset(path: Path) -> xr.Dataset:
    """The file as a lazily read xarray Dataset (netCDF4 engine, read-only, no chunk cache) or an InputError."""
    if not path.exists():
        raise InputError(f"{path}: expected a radar NetCDF file, found no such file")
    if path.is_dir():
        raise InputError(f"{path}: expected a radar NetCDF file, found a directory")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096 + 8)
    except OSError as exc:
        raise InputError(f"{path}: expected a readable NetCDF file, found {first_line(exc)}") from None
    hdf5 = any(head[i : i + 8] == b"\x89HDF\r\n\x1a\n" for i in (0, 512, 1024, 2048, 4096))
    if not (hdf5 or head[:3] == b"CDF"):
        raise InputError(f"{path}: expected a NetCDF file, found data in another format (first bytes {head[:8]!r})")
    try:
        with _without_chunk_cache():
            return xr.open_dataset(path, engine="netcdf4", cache=False, decode_times=True)
    except (OSError, RuntimeError) as exc:
        why = first_line(exc)
        raise InputError(f"{path}: expected a readable NetCDF file, found a damaged or truncated one ({why})") from None
    except (ValueError, KeyError, TypeError, IndexError) as exc:  # e.g. times that cannot be decoded
        raise InputError(f"{path}: expected a decodable NetCDF file, found {first_line(exc)}") from None


def _refuse_forecast(ds: xr.Dataset, path: Path) -> None:
    """Raise if ``ds`` is a forecast written by nowcast (a ``source`` starting with "nowcast" and a
    ``forecast_reference_time`` or ``forecast_period``): forecasts are never taken as observations."""
    source = str(ds.attrs.get("source", ""))
    if not source.startswith("nowcast"):
        return
    if "forecast_reference_time" in ds.variables or "forecast_period" in ds.variables:
        raise InputError(
            f"{path}: expected radar observations, found a nowcast forecast (written by {source.split(',')[0]})"
        )


def _several(ds: xr.Dataset, path: Path, names: list[str]) -> InputError:
    listed = ", ".join(f"{n} {_dims_text(ds[n].dims)}" for n in names)
    return InputError(
        f"{path}: expected one rain variable, found several candidates: {listed}; choose one with --variable"
    )


def _select_variable(ds: xr.Dataset, path: Path, variable: str | None) -> str:
    """Name of the rain variable: explicit, else by standard_name, else the only 3-D/4-D one with time."""
    if variable is not None:
        if variable not in ds.data_vars:
            found = ", ".join(map(str, ds.data_vars)) or "none"
            raise InputError(f"{path}: expected a variable '{variable}', found variables: {found}")
        return variable
    named = [str(n) for n, v in ds.data_vars.items() if v.attrs.get("standard_name") in RAIN_STANDARD_NAMES]
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        raise _several(ds, path, named)
    grid_mappings = {str(v.attrs.get("grid_mapping", "")).split(":")[0].strip() for v in ds.data_vars.values()}
    numeric = [
        str(n)
        for n, v in ds.data_vars.items()
        if n not in grid_mappings and v.ndim > 0 and np.issubdtype(v.dtype, np.number) and v.dtype != bool
    ]
    fitting = [n for n in numeric if "time" in ds[n].dims and ds[n].ndim in (3, 4)]
    if len(fitting) == 1:
        return fitting[0]
    if len(fitting) > 1:
        raise _several(ds, path, fitting)
    if len(numeric) == 1:
        return numeric[0]  # its dimensions are reported by _arrange
    found = ", ".join(f"{n} {_dims_text(ds[n].dims)}" for n in numeric)
    found = found or f"none (variables: {', '.join(map(str, ds.variables)) or 'none'})"
    raise InputError(
        f"{path}: expected a numeric variable with dims (time, y, x) or (time, channel, y, x), found {found}"
    )


def _layout(var: xr.DataArray, path: Path) -> tuple[list[str], dict[str, str]]:
    """The file's dimension names of ``var`` in (time, [channel,] y, x) order, and their renaming."""
    if "time" not in var.dims or var.ndim not in (3, 4):
        raise InputError(
            f"{path}: variable '{var.name}': expected dims (time, y, x) or (time, channel, y, x), "
            f"found {_dims_text(var.dims)}"
        )
    others = [str(d) for d in var.dims if d != "time"]
    known = {d: _SPATIAL_NAMES[d.lower()] for d in others if d.lower() in _SPATIAL_NAMES}
    if sorted(known.values()) == ["x", "y"] and len(known) == 2:
        y_dim = next(d for d, r in known.items() if r == "y")
        x_dim = next(d for d, r in known.items() if r == "x")
        rest = [d for d in others if d not in known]
    else:  # names unknown: take the order as given, (time, y, x) or (time, channel, y, x)
        y_dim, x_dim, rest = others[-2], others[-1], others[:-2]
    order = ["time", *rest, y_dim, x_dim]
    rename = {d: new for d, new in zip(order[1:], (["channel"] if rest else []) + ["y", "x"]) if d != new}
    return order, rename


def _arrange(var: xr.DataArray, path: Path) -> xr.DataArray:
    """``var`` chunked one frame per chunk, dims renamed and ordered to (time, [channel,] y, x)."""
    order, rename = _layout(var, path)
    taken = [n for n in rename.values() if n in var.coords and n not in rename]
    if taken:
        raise InputError(f"{path}: variable '{var.name}': expected no coordinates named {taken}, found them")
    arranged = var.chunk({"time": 1}).transpose(*order)
    small = {n: c.variable.compute() for n, c in arranged.coords.items() if c.chunks is not None}
    arranged = arranged.assign_coords(small)  # lat/lon and the like: read once, kept in memory
    return arranged.rename(rename) if rename else arranged


def _is_frame_index(da: xr.DataArray) -> bool:
    """Whether ``da``'s time coordinate numbers the frames (integers counting by 1, no time units)."""
    if "time" not in da.coords:
        return False
    values = da["time"].values
    if not np.issubdtype(values.dtype, np.integer) or values.size < 2 or np.diff(values).min() != 1:
        return False
    return str(da["time"].attrs.get("units", "1")).strip().lower() in ("1", "frame", "frames", "index", "")


def _index_as_time(da: xr.DataArray, path: Path, time_step: int | None) -> xr.DataArray:
    """``da`` with a time coordinate of frame numbers (``_is_frame_index``) replaced by datetimes
    ``time_step`` seconds apart from 1970-01-01; unchanged otherwise or without ``time_step``.

    Image sequences often number their frames instead of dating them; the model's step then says how
    far apart they are. Frame n is then n * time_step seconds after 1970-01-01, so it can be recovered.
    """
    if not time_step or not _is_frame_index(da):
        return da
    log.debug("%s: time is a frame index; frames read as %d s apart from 1970-01-01", path, time_step)
    start = np.datetime64("1970-01-01T00:00:00", "ns")
    values = da["time"].values
    return da.assign_coords(time=start + values.astype(np.int64) * np.timedelta64(int(time_step), "s"))


def times_ns(da: xr.DataArray, path: str | Path | None = None) -> np.ndarray:
    """Times of ``da`` as int64 nanoseconds since 1970, checked to be datetimes and strictly increasing.

    ``path`` names the data in errors (default: ``attrs["source_file"]``).
    """
    path = path if path is not None else da.attrs.get("source_file", da.name)
    if "time" not in da.coords:
        raise InputError(f"{path}: expected a time coordinate of datetimes, found a time dimension without coordinate")
    values = da["time"].values
    if not np.issubdtype(values.dtype, np.datetime64):
        units = da["time"].attrs.get("units")
        found = f"{values.dtype} values " + (f"with units '{units}'" if units else "without units")
        if values.dtype == object:
            found = "non-standard-calendar dates (cftime)"
        elif np.issubdtype(values.dtype, np.integer):
            found += " (a frame index 0, 1, 2, ... is read as time only at a model time step: data.time_step)"
        raise InputError(f"{path}: expected a time coordinate of datetimes (units 'seconds since ...'), found {found}")
    if np.isnat(values).any():
        i = int(np.flatnonzero(np.isnat(values))[0])
        raise InputError(f"{path}: expected valid times, found a missing time at index {i}")
    t = values.astype("datetime64[ns]").astype(np.int64)
    d = np.diff(t)
    bad = np.flatnonzero(d <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        how = "repeats" if d[bad[0]] == 0 else "is before"
        raise InputError(
            f"{path}: expected strictly increasing times, found time[{i}] = {iso_time(t[i])} {how} "
            f"time[{i - 1}] = {iso_time(t[i - 1])}"
        )
    return t


def _time_step(t: np.ndarray, ds: xr.Dataset, path: Path, time_step: int | None) -> int:
    """The regular step (s): the smallest difference, every other difference a whole multiple (a gap)."""
    if t.size < 2:  # nothing to infer from: the file's time_step_seconds attribute, else the model's step
        declared = ds.attrs.get("time_step_seconds", time_step)
        try:
            step = int(declared)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            step = 0
        if step <= 0:
            raise InputError(f"{path}: expected at least 2 frames to infer the time step, found {t.size}")
        return step
    d = np.diff(t)
    step_ns = int(d.min())
    if step_ns % NS:
        raise InputError(f"{path}: expected a time step of whole seconds, found {step_ns / NS:g} s")
    off = np.flatnonzero(d % step_ns)
    if off.size:
        i = int(off[0])
        raise InputError(
            f"{path}: expected a regular time step (gaps as whole multiples of {step_ns // NS} s), found "
            f"{d[i] / NS:g} s between time[{i}] = {iso_time(t[i])} and time[{i + 1}] = {iso_time(t[i + 1])}"
        )
    return step_ns // NS


def _subsample(da: xr.DataArray, t: np.ndarray, step: int, time_step: int, path: Path) -> xr.DataArray:
    """Frames ``time_step`` apart from a file whose step divides it.

    Frames fall into ``time_step // step`` phases; the phase with most frames is kept, on a tie the one
    holding the last frame (the newest observation matters most for a forecast).
    """
    if time_step % step:
        raise InputError(
            f"{path}: expected a time step that divides the model's time step of {time_step} s, found {step} s"
        )
    k = time_step // step
    phase = ((t - t[0]) // (step * NS)) % k
    counts = np.bincount(phase, minlength=k)
    best = max(range(k), key=lambda p: (counts[p], p == phase[-1]))
    keep = np.flatnonzero(phase == best)
    log.debug("%s: kept %d of %d frames (step %d s -> %d s)", path, keep.size, t.size, step, time_step)
    return da.isel(time=keep)


def _rate32(values: np.ndarray, kind: str, zr_a: float, zr_b: float) -> np.ndarray:
    """Values in the file's units (``kind``: ``rate``, ``flux`` or ``dbz``) -> rain rate in mm/h, float32."""
    if kind == "flux":
        return values.astype(np.float32) * np.float32(3600.0)
    if kind == "dbz":
        return dbz_to_rate(values, zr_a, zr_b).astype(np.float32)
    return values.astype(np.float32)


def _rate_values(values: np.ndarray, kind: str, zr_a: float, zr_b: float) -> np.ndarray:
    """``_rate32`` then ``open_radar``'s mask, on values in memory: mm/h, float32, NaN = no data."""
    rate = _rate32(values, kind, zr_a, zr_b)
    return np.where((rate >= 0) & (rate < np.inf), rate, np.float32(np.nan))


def _to_rate(da: xr.DataArray, kind: str, zr_a: float, zr_b: float) -> xr.DataArray:
    """Lazy conversion of ``da`` to rain rate in mm/h, float32 (``_rate32`` on each frame)."""
    return xr.apply_ufunc(
        functools.partial(_rate32, kind=kind, zr_a=zr_a, zr_b=zr_b),  # picklable, unlike a lambda
        da,
        dask="parallelized",
        output_dtypes=[np.float32],
        keep_attrs=True,
    )


def _open_rate(
    path: str | Path,
    *,
    variable: str | None,
    units: str | None,
    zr_a: float,
    zr_b: float,
    time_step: int | None,
    frame_step: int | None = None,
    as_read: bool = False,
    forecasts: bool = False,
) -> tuple[xr.DataArray, int]:
    """Rain rate (mm/h, lazy, negatives not yet masked) at ``time_step`` and the file's own step.
    ``nowcast info`` describes any sequence: ``frame_step``, seconds between numbered frames when
    ``time_step`` is None; ``as_read``, values without units (or ``1``) taken as they are; ``forecasts``, nowcast's own
    forecasts read too (else refused)."""
    p = Path(path)
    ds = _open_dataset(p)
    if not forecasts:
        _refuse_forecast(ds, p)
    name = _select_variable(ds, p, variable)
    var = ds[name]
    where = f"{p}: variable '{name}'"
    if not np.issubdtype(var.dtype, np.number) or var.dtype == bool:
        raise InputError(f"{where}: expected numeric values, found {var.dtype}")
    arranged = _arrange(var, p)
    numbered = _is_frame_index(arranged) and bool(time_step or frame_step)
    da = _index_as_time(arranged, p, time_step or frame_step)
    t = times_ns(da, p)
    step = _time_step(t, ds, p, time_step)

    declared = units if units is not None else var.attrs.get("units")
    kind = _unit_kind(declared)
    own_kind = _unit_kind(var.attrs.get("units"))  # None: the file's values are not rain (units given for them)
    if kind is None and as_read and units is None and str(declared or "1").strip() in ("1", ""):
        kind = "rate"  # no units: an image sequence, described as it is
    if kind is None:
        if units is not None:
            raise InputError(f"{where}: units given explicitly: expected one of {_ACCEPTED_UNITS}, found '{units}'")
        found = f"'{declared}'" if declared is not None else "no units attribute"
        raise InputError(f"{where}: expected units {_ACCEPTED_UNITS} (or units given explicitly), found {found}")

    if time_step is not None and time_step != step:
        da = _subsample(da, t, step, int(time_step), p)
    rate = _to_rate(da, kind, zr_a, zr_b)
    rate.name = name
    rate.encoding = {}

    in_attrs = var.attrs
    attrs: dict[str, object] = {"source_file": str(p), "variable": name}
    std = in_attrs.get("standard_name")
    attrs["standard_name"] = std if std in ("rainfall_rate", "lwe_precipitation_rate") else "rainfall_rate"
    if std and std != attrs["standard_name"]:
        attrs["input_standard_name"] = str(std)
    long_name = str(in_attrs.get("long_name", "rain rate" if own_kind else name))
    if kind == "dbz":
        attrs["long_name"] = f"rain rate from {long_name} by Z = {zr_a:g} R^{zr_b:g}"
    elif kind == "flux":
        attrs["long_name"] = f"rain rate from {long_name}"
    else:
        attrs["long_name"] = long_name
    attrs["units"] = "mm h-1"
    if kind != "rate" or declared != "mm h-1":
        attrs["input_units"] = str(declared)
    if "cell_methods" in in_attrs:
        attrs["cell_methods"] = str(in_attrs["cell_methods"])
    attrs["time_step"] = int(time_step if time_step is not None else step)
    if numbered:
        attrs["frame_numbers"] = int(time_step or frame_step)  # type: ignore[arg-type]
    if own_kind is None:
        attrs["data_units"] = str(var.attrs.get("units", ""))
    for key in ("title", "institution"):
        if key in ds.attrs:
            attrs[f"input_{key}"] = str(ds.attrs[key])
    licence = ds.attrs.get("licence", ds.attrs.get("license"))
    if licence is not None:
        attrs["input_license"] = str(licence)

    gm = str(in_attrs.get("grid_mapping") or var.encoding.get("grid_mapping") or "").split(":")[0].strip()
    if gm and gm in ds.variables and ds[gm].ndim == 0:
        rate = rate.assign_coords({gm: xr.Variable((), ds[gm].values, dict(ds[gm].attrs))})
        attrs["grid_mapping"] = gm
    rate.attrs = attrs
    return rate, step


def _no_data_error(da: xr.DataArray) -> InputError:
    return InputError(
        f"{da.attrs['source_file']}: variable '{da.attrs['variable']}': expected some valid rain rates, "
        "found only NaN/_FillValue, infinite or negative values"
    )


def _read_error(da: xr.DataArray, exc: BaseException) -> InputError:
    return InputError(
        f"{da.attrs['source_file']}: variable '{da.attrs['variable']}': expected readable data, found {first_line(exc)}"
    )


def _scan(rate: xr.DataArray) -> None:
    """Raise if ``rate`` holds no valid value; count and log its negative values once.

    Variables up to ``_SCAN_LIMIT`` values are read in one streaming pass (one frame per task), which
    gives the exact count of negatives. Bigger ones are only read until the first frame with valid
    data; their negatives are still masked (when read) but not counted, to keep opening cheap.
    """
    x = rate.data
    try:
        if x.size <= _SCAN_LIMIT:
            n_valid, n_negative = dask.compute(((x >= 0) & (x < np.inf)).sum(), (x < 0).sum())
        else:
            n_negative = None
            n_valid = next(
                (
                    1
                    for i in range(0, x.shape[0], 8)
                    if bool(((x[i : i + 8] >= 0) & (x[i : i + 8] < np.inf)).any().compute())
                ),
                0,
            )
    except (OSError, RuntimeError) as exc:
        raise _read_error(rate, exc) from None
    if int(n_valid) == 0:
        raise _no_data_error(rate)
    if n_negative is None:
        log.debug("%s: large variable, negative values (if any) are masked but not counted", rate.attrs["source_file"])
    elif int(n_negative):
        log.info(
            "%s: %d negative values of '%s' treated as no data (NaN)",
            rate.attrs["source_file"],
            int(n_negative),
            rate.attrs["variable"],
        )


def open_radar(
    path: str | Path,
    *,
    variable: str | None = None,
    units: str | None = None,
    zr_a: float = ZR_A,
    zr_b: float = ZR_B,
    time_step: int | None = None,
    scan: bool = True,
) -> xr.DataArray:
    """Rain rates of one radar NetCDF file, read lazily.

    Parameters
    ----------
    path
        The file; opened read-only with the netCDF4 engine, never modified.
    variable
        Data variable; None: the one whose ``standard_name`` is rainfall_rate, lwe_precipitation_rate or
        equivalent_reflectivity_factor, else the only numeric 3-D/4-D variable with a time dimension.
    units
        Overrides the variable's ``units`` attribute: mm h-1 (mm/h, mm hr-1, mm h**-1), kg m-2 s-1
        (x 3600) or dBZ (converted by Z = ``zr_a`` R^``zr_b``).
    time_step
        Model time step (s). A file at a step that divides it is subsampled (the phase keeping most
        frames; on a tie the one keeping the last frame); any other step is an error. None: as in the file.
    scan
        Read every frame once at opening to reject an all-NaN variable and count negative values.
        ``predict`` turns it off: it reads only the frames it needs and checks those.

    Returns
    -------
    xr.DataArray
        float32 mm/h, dask-backed with one frame per chunk, dims ``(time, y, x)`` or
        ``(time, channel, y, x)`` (lat/lon, latitude/longitude, rows/cols renamed to y/x). NaN = no data;
        negative and infinite values become NaN. Keeps x/y (and lat/lon) coordinates and the grid-mapping variable
        as a scalar coordinate. ``attrs``: source_file, variable, standard_name, long_name, units
        (mm h-1), time_step (s, int), grid_mapping, cell_methods, input_title, input_institution, input_license,
        input_units / input_standard_name when converted; ``frame_numbers`` (the seconds per frame used)
        when time numbered the frames; ``data_units`` (the file's own units, '' for none) when they are not
        a rain unit and ``units`` made the values readable as they are (image sequences).

    Raises
    ------
    InputError
        One line naming the file, what was expected and what was found: missing or unreadable file,
        no or several candidate variables, wrong dims, unknown units, times not datetimes or not
        strictly increasing, an irregular or incompatible step, no valid value at all.

    Notes
    -----
    Opening reads one streaming pass over the frames (constant memory) to reject all-NaN variables
    and count negative values, logged once; above ``_SCAN_LIMIT`` values it stops at the first
    frame with data and does not count negatives.
    """
    rate, _ = _open_rate(path, variable=variable, units=units, zr_a=zr_a, zr_b=zr_b, time_step=time_step)
    if scan:
        _scan(rate)
    masked = rate.where((rate >= 0) & (rate < np.inf))  # NaN, negative and +-Inf: no data
    masked.attrs = rate.attrs
    masked.encoding = {}
    return masked


def segments(da: xr.DataArray, min_frames: int = 1) -> list[xr.DataArray]:
    """Gap-free runs of ``da``: consecutive times exactly ``da.attrs["time_step"]`` seconds apart.

    Runs shorter than ``min_frames`` frames are dropped. Each run is a lazy slice of ``da`` with its attrs.
    """
    step = da.attrs.get("time_step")
    if not step:
        raise InputError(f"{da.attrs.get('source_file', da.name)}: expected attrs['time_step'] in seconds, found none")
    if da.sizes["time"] == 0:
        return []
    t = times_ns(da)
    cuts = [0, *(np.flatnonzero(np.diff(t) != int(step) * NS) + 1).tolist(), t.size]
    return [da.isel(time=slice(a, b)) for a, b in zip(cuts[:-1], cuts[1:]) if b - a >= min_frames]


_OPEN_LIMIT = 32
"""Files a process keeps open for ``FrameReader`` (least recently used closed first)."""
_open_files: dict[str, Any] = {}
_open_pid = os.getpid()
_inherited: list[dict[str, Any]] = []


def _netcdf_variable(path: str, name: str) -> Any:
    """The netCDF4 variable ``name`` of ``path``, raw (no masking or scaling) and without a chunk cache
    (``_without_chunk_cache``), from the process's ``_OPEN_LIMIT`` most recently used files. Handles opened
    before a fork (a DataLoader worker) are never used nor closed in the child: it opens its own."""
    global _open_pid
    import netCDF4

    if os.getpid() != _open_pid:
        _inherited.append(dict(_open_files))  # kept, not closed: they belong to the parent
        _open_files.clear()
        _open_pid = os.getpid()
    ds = _open_files.pop(path, None)
    if ds is None:
        while len(_open_files) >= _OPEN_LIMIT:
            _open_files.pop(next(iter(_open_files))).close()
        with _without_chunk_cache():
            ds = netCDF4.Dataset(path, "r")
        ds.set_auto_maskandscale(False)  # raw values: xarray's CF decoding is applied by the reader
    _open_files[path] = ds  # the most recently used last
    return ds[name]


@dataclass(frozen=True)
class FrameReader:
    """How to read the frames of one segment (``segments``) straight from its file, without dask.

    The values are the segment's own: only the asked rows and columns of the asked frames are read from
    the file, then decoded by xarray's CF decoding (``_FillValue``, ``scale_factor``, ``add_offset``, as
    xarray's netCDF4 engine decodes them), arranged, converted to mm/h and masked as ``open_radar`` does.
    A training window takes half the time of computing the segment's dask array (one task per frame,
    whose scheduling costs as much as decompressing the frame), and no decompressed frame is kept
    (``_without_chunk_cache``). Files are opened on first use in each process and kept open.
    """

    path: str
    variable: str
    dims: tuple[str, ...]
    """The file's dimension names in (time, [channel,] y, x) order."""
    start: int
    """The segment's first frame in the file's time dimension."""
    stride: int
    """Frames of the file per frame of the segment (a file subsampled to the model's step: more than 1)."""
    kind: str
    """Units of the file's values: ``rate``, ``flux`` or ``dbz`` (``_UNITS``)."""
    zr_a: float
    zr_b: float

    def read(self, t0: int, t1: int, ys: slice = slice(None), xs: slice = slice(None)) -> np.ndarray:
        """Frames ``t0 .. t1 - 1`` of the segment within rows ``ys`` and columns ``xs``: (T, [C,] h, w)
        float32 mm/h, NaN = no data."""
        var = _netcdf_variable(self.path, self.variable)
        frames = slice(self.start + t0 * self.stride, self.start + (t1 - 1) * self.stride + 1, self.stride)
        wanted = {self.dims[0]: frames, self.dims[-2]: ys, self.dims[-1]: xs}
        raw = np.asarray(var[tuple(wanted.get(d, slice(None)) for d in var.dimensions)])
        attrs = {k: var.getncattr(k) for k in var.ncattrs()}
        decoded = xr.conventions.decode_cf_variable(self.variable, xr.Variable(var.dimensions, raw, attrs))
        return _rate_values(decoded.transpose(*self.dims).values, self.kind, self.zr_a, self.zr_b)


def frame_reader(segment: xr.DataArray, zr_a: float = ZR_A, zr_b: float = ZR_B) -> FrameReader | None:
    """A ``FrameReader`` of ``segment`` (from ``open_archive`` or ``segments`` of ``open_radar``, opened
    with the Z-R parameters ``zr_a``, ``zr_b``), or None when its frames cannot be found again in its file
    (no ``source_file``, the file changed or gone, times that do not match): read it through dask then."""
    attrs = segment.attrs
    path, name = attrs.get("source_file"), attrs.get("variable")
    if not path or not name or segment.sizes.get("time", 0) == 0:
        return None
    numbered = int(attrs["frame_numbers"]) if attrs.get("frame_numbers") else None
    try:
        stat = os.stat(str(path))
        order, file_t = _file_frames(str(path), str(name), numbered, (stat.st_size, stat.st_mtime_ns))
    except (InputError, KeyError, OSError) as exc:
        log.debug("%s: frames read through dask (%s)", path, first_line(exc))
        return None
    seg_t = times_ns(segment)
    index = np.minimum(np.searchsorted(file_t, seg_t), file_t.size - 1)
    stride = int(index[1] - index[0]) if index.size > 1 else 1
    expected = index[0] + stride * np.arange(index.size)
    if stride < 1 or not np.array_equal(file_t[index], seg_t) or not np.array_equal(index, expected):
        log.debug("%s: frames read through dask (times differ from the file's)", path)
        return None
    kind = _unit_kind(attrs.get("input_units", "mm h-1")) or "rate"  # no units (an image sequence): as read
    return FrameReader(str(path), str(name), order, int(index[0]), stride, kind, float(zr_a), float(zr_b))


@functools.lru_cache(maxsize=256)
def _file_frames(
    path: str, name: str, numbered: int | None, version: tuple[int, int]
) -> tuple[tuple[str, ...], np.ndarray]:
    """The dimension names of variable ``name`` of ``path`` in (time, [channel,] y, x) order and its times
    (int64 ns), read once per file ``version`` (size, modification time) and process: every segment of a
    file, in the training and the validation source, needs them."""
    with _open_dataset(Path(path)) as ds:
        var = ds[name]
        order, _ = _layout(var, Path(path))
        times = times_ns(_index_as_time(var, Path(path), numbered))
    times.setflags(write=False)
    return tuple(order), times


@dataclass
class Archive:
    """Radar frames from one or more files, as gap-free segments at one time step."""

    segments: list[xr.DataArray]
    """Contiguous runs, regular at ``time_step``, each from one file (windows never cross files)."""
    files: list[str]
    """Files that contributed segments."""
    skipped: list[tuple[str, str]]
    """(file, reason) of each file that could not be used."""

    @property
    def time_step(self) -> int | None:
        """Seconds between consecutive frames when every segment has the same step, else None. Derived
        from the segments' ``attrs["time_step"]``, the one carrier of a segment's step."""
        steps = {int(seg.attrs["time_step"]) for seg in self.segments}
        return steps.pop() if len(steps) == 1 else None

    def periods(self) -> list[str]:
        """One ``"file.nc: YYYY-MM-DDTHH:MM to YYYY-MM-DDTHH:MM"`` per segment (UTC), for provenance."""
        out = []
        for s in self.segments:
            t = s["time"].values
            out.append(f"{Path(str(s.attrs.get('source_file', '?'))).name}: {str(t[0])[:16]} to {str(t[-1])[:16]}")
        return out


def open_archive(
    paths: Sequence[str | Path],
    *,
    time_step: int | None,
    variable: str | None = None,
    units: str | None = None,
    zr_a: float = ZR_A,
    zr_b: float = ZR_B,
    min_frames: int = 1,
    scan: bool = True,
    too_short: Callable[[int], str] | None = None,
) -> Archive:
    """Open files and glob patterns (sorted) as one archive of segments at ``time_step`` (None: each
    file at its own step, carried by each segment's ``attrs["time_step"]``).

    A file that cannot be used (unreadable, no variable, a step that does not divide ``time_step``,
    no run of ``min_frames`` frames) is skipped with one warning naming it and why; but when exactly one
    plain path (no glob) is given, its error is raised. A pattern matching nothing, or no usable file
    at all, raises InputError. ``too_short``: given the longest run (frames) of a file without a run of
    ``min_frames``, its message after the file name (e.g. saying what would fit).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files = _expand(paths)
    if not files:
        raise InputError("radar archive: expected at least one file or glob pattern, found none")
    strict = len(paths) == 1 and not _is_pattern(str(paths[0]))
    archive = Archive(segments=[], files=[], skipped=[])
    for f in files:
        try:
            da = open_radar(f, variable=variable, units=units, zr_a=zr_a, zr_b=zr_b, time_step=time_step, scan=scan)
            runs = segments(da, min_frames)
            if not runs:
                longest = max(s.sizes["time"] for s in segments(da))
                why = f"expected a run of at least {min_frames} frames {da.attrs['time_step']} s apart, found at most"
                raise InputError(f"{f}: " + (too_short(longest) if too_short is not None else f"{why} {longest}"))
        except InputError as exc:
            if strict:
                raise
            log.warning("skipped %s", exc)
            archive.skipped.append((f, _reason(f, exc)))
            continue
        archive.segments.extend(runs)
        archive.files.append(f)
    if not archive.segments:
        why = "; ".join(f"{f}: {r}" for f, r in archive.skipped)
        raise InputError(f"radar archive: expected at least one usable file among {len(files)}, found none ({why})")
    return archive


def data_time_step(paths: Sequence[str | Path], variable: str | None = None, *, newest: bool = False) -> int | None:
    """Time step (s) of the first (``newest``: the last) usable file named by ``paths`` (globs expanded,
    sorted), read from its metadata; None if no file is usable."""
    files = _expand(paths)
    for path in reversed(files) if newest else files:
        try:
            return int(open_radar(path, variable=variable, scan=False).attrs["time_step"])
        except InputError:
            continue
    return None


_LENGTH_KM = {"m": 1e-3, "meter": 1e-3, "meters": 1e-3, "metre": 1e-3, "metres": 1e-3, "km": 1.0, "kilometer": 1.0}
"""Units of projected x/y coordinates and their length in km."""


def pixel_size_km(da: xr.DataArray) -> float | None:
    """The pixel size (km) of ``da``'s grid: the side of a square of the pixel's area, sqrt(|dx| |dy|), from
    its 1-D ``x`` and ``y`` coordinates in m or km (MRMS: 0.78 km x 1.11 km gives 0.93 km) or, on a
    latitude-longitude grid (``lat``/``lon`` or ``latitude``/``longitude``, or x/y in degrees), from the
    spacing in degrees at the grid's mean latitude on a sphere of 6371 km. None without either (image
    sequences)."""
    for xn, yn in (("x", "y"), ("lon", "lat"), ("longitude", "latitude")):
        if xn in da.coords and yn in da.coords:
            break
    else:
        return None
    coords = [da[xn], da[yn]]
    if any(c.ndim != 1 or c.size < 2 for c in coords):
        return None
    steps = [abs(float(c.values[1]) - float(c.values[0])) for c in coords]
    units = [str(c.attrs.get("units", "")).strip().lower() for c in coords]
    if all(u.startswith("degree") for u in units) or (xn != "x" and not any(units)):
        km_per_degree = 6371.0 * np.pi / 180.0
        lat = float(np.nanmean(coords[1].values))
        sides = [steps[0] * km_per_degree * np.cos(np.radians(lat)), steps[1] * km_per_degree]
    else:
        sides = [step * (_LENGTH_KM.get(u) or 0.0) for step, u in zip(steps, units)]
    if not all(np.isfinite(side) and side > 0 for side in sides):
        return None
    return float(np.sqrt(sides[0] * sides[1]))

"""Radar NetCDF input (open, validate, convert to mm/h) and atomic output. No torch import.

Input files are opened read-only with xarray's netCDF4 engine and never written to. The data variable
becomes a dask array of one frame per chunk, so a frame is read only when a caller asks for it and an
archive larger than memory is never loaded whole.

- ``open_radar``: one file -> rain rate (mm/h, float32, NaN = no data) as a lazy DataArray with dims
  ``(time, y, x)`` or ``(time, channel, y, x)``, its regular time step in ``attrs["time_step"]``.
- ``segments``: the gap-free runs of such a DataArray.
- ``open_archive``: many files and glob patterns -> an ``Archive`` of segments; unusable files skipped.
- ``describe_radar``: the lines ``nowcast info`` prints for radar files.
- ``atomic_output``: write-to-temporary-then-rename for every output file.
- ``output_lock`` / ``remove_stale_temporaries``: one writer per output directory at a time (cron safety).
- ``forecast_dataset`` / ``write_forecast``: a forecast DataArray as a CF-1.11 NetCDF (DESIGN section 7).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import glob
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import dask
import dask.array
import numpy as np
import xarray as xr

from nowcast.errors import InputError, OutputError
from nowcast.transforms import dbz_to_rate

log = logging.getLogger(__name__)

RAIN_STANDARD_NAMES = ("rainfall_rate", "lwe_precipitation_rate", "equivalent_reflectivity_factor")
"""standard_name values that select the data variable when ``variable`` is not given."""

_UNITS = {
    "mm h-1": "rate", "mm/h": "rate", "mm hr-1": "rate", "mm h**-1": "rate", "mm h^-1": "rate", "mm/hr": "rate",
    "kg m-2 s-1": "flux", "kg m**-2 s**-1": "flux", "kg m^-2 s^-1": "flux",
    "dbz": "dbz",
}  # fmt: skip
_ACCEPTED_UNITS = "mm h-1, mm/h, mm hr-1, mm h**-1, kg m-2 s-1 or dBZ"
_SPATIAL_NAMES = {
    "y": "y", "lat": "y", "latitude": "y", "rows": "y",
    "x": "x", "lon": "x", "longitude": "x", "cols": "x",
}  # fmt: skip
_SCAN_LIMIT = 2**28
"""Variables up to this many values (1 GiB of float32) get an exact count of negative values at open."""
_NS = 1_000_000_000


# ----------------------------------------------------------------------------------------------------
# small helpers


def _iso(t_ns: int | np.integer) -> str:
    """UTC ISO 8601 text of a time in nanoseconds since 1970 (times are taken as UTC)."""
    return str(np.datetime_as_string(np.datetime64(int(t_ns), "ns"), unit="s")) + "Z"


def _first_line(exc: BaseException) -> str:
    """A short, one-line description of an exception raised by a reader."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


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


def _open_dataset(path: Path) -> xr.Dataset:
    """The file as a lazily read xarray Dataset (netCDF4 engine, read-only) or an InputError."""
    if not path.exists():
        raise InputError(f"{path}: expected a radar NetCDF file, found no such file")
    if path.is_dir():
        raise InputError(f"{path}: expected a radar NetCDF file, found a directory")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096 + 8)
    except OSError as exc:
        raise InputError(f"{path}: expected a readable NetCDF file, found {_first_line(exc)}") from None
    hdf5 = any(head[i : i + 8] == b"\x89HDF\r\n\x1a\n" for i in (0, 512, 1024, 2048, 4096))
    if not (hdf5 or head[:3] == b"CDF"):
        raise InputError(f"{path}: expected a NetCDF file, found data in another format (first bytes {head[:8]!r})")
    try:
        return xr.open_dataset(path, engine="netcdf4", cache=False, decode_times=True)
    except (OSError, RuntimeError) as exc:
        why = _first_line(exc)
        raise InputError(f"{path}: expected a readable NetCDF file, found a damaged or truncated one ({why})") from None
    except (ValueError, KeyError, TypeError, IndexError) as exc:  # e.g. times that cannot be decoded
        raise InputError(f"{path}: expected a decodable NetCDF file, found {_first_line(exc)}") from None


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


def _arrange(var: xr.DataArray, path: Path) -> xr.DataArray:
    """``var`` chunked one frame per chunk, dims renamed and ordered to (time, [channel,] y, x)."""
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
    taken = [n for n in rename.values() if n in var.coords and n not in rename]
    if taken:
        raise InputError(f"{path}: variable '{var.name}': expected no coordinates named {taken}, found them")
    arranged = var.chunk({"time": 1}).transpose(*order)
    small = {n: c.variable.compute() for n, c in arranged.coords.items() if c.chunks is not None}
    arranged = arranged.assign_coords(small)  # lat/lon and the like: read once, kept in memory
    return arranged.rename(rename) if rename else arranged


def _index_as_time(da: xr.DataArray, path: Path, time_step: int | None) -> xr.DataArray:
    """``da`` with a time coordinate of frame numbers (integers counting by 1, no time units) replaced by
    datetimes ``time_step`` seconds apart from 1970-01-01; unchanged otherwise or without ``time_step``.

    Image sequences often number their frames instead of dating them; the model's step then says how
    far apart they are.
    """
    if not time_step or "time" not in da.coords:
        return da
    values = da["time"].values
    if not np.issubdtype(values.dtype, np.integer) or values.size < 2 or np.diff(values).min() != 1:
        return da
    if str(da["time"].attrs.get("units", "1")).strip().lower() not in ("1", "frame", "frames", "index", ""):
        return da
    log.debug("%s: time is a frame index; frames read as %d s apart from 1970-01-01", path, time_step)
    start = np.datetime64("1970-01-01T00:00:00", "ns")
    return da.assign_coords(time=start + values.astype(np.int64) * np.timedelta64(int(time_step), "s"))


def _times_ns(da: xr.DataArray, path: Path) -> np.ndarray:
    """Times of ``da`` as int64 nanoseconds since 1970, checked to be datetimes and strictly increasing."""
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
            f"{path}: expected strictly increasing times, found time[{i}] = {_iso(t[i])} {how} "
            f"time[{i - 1}] = {_iso(t[i - 1])}"
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
    if step_ns % _NS:
        raise InputError(f"{path}: expected a time step of whole seconds, found {step_ns / _NS:g} s")
    off = np.flatnonzero(d % step_ns)
    if off.size:
        i = int(off[0])
        raise InputError(
            f"{path}: expected a regular time step (gaps as whole multiples of {step_ns // _NS} s), found "
            f"{d[i] / _NS:g} s between time[{i}] = {_iso(t[i])} and time[{i + 1}] = {_iso(t[i + 1])}"
        )
    return step_ns // _NS


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
    phase = ((t - t[0]) // (step * _NS)) % k
    counts = np.bincount(phase, minlength=k)
    best = max(range(k), key=lambda p: (counts[p], p == phase[-1]))
    keep = np.flatnonzero(phase == best)
    log.debug("%s: kept %d of %d frames (step %d s -> %d s)", path, keep.size, t.size, step, time_step)
    return da.isel(time=keep)


def _dbz_to_rate32(dbz: np.ndarray, a: float, b: float) -> np.ndarray:
    return dbz_to_rate(dbz, a, b).astype(np.float32)


def _to_rate(da: xr.DataArray, kind: str, zr_a: float, zr_b: float) -> xr.DataArray:
    """Lazy conversion of ``da`` to rain rate in mm/h, float32."""
    if kind == "flux":
        return da.astype(np.float32) * np.float32(3600.0)
    if kind == "dbz":
        return xr.apply_ufunc(
            functools.partial(_dbz_to_rate32, a=zr_a, b=zr_b),  # picklable, unlike a lambda
            da,
            dask="parallelized",
            output_dtypes=[np.float32],
            keep_attrs=True,
        )
    return da.astype(np.float32)


def _open_rate(
    path: str | Path,
    *,
    variable: str | None,
    units: str | None,
    zr_a: float,
    zr_b: float,
    time_step: int | None,
) -> tuple[xr.DataArray, int]:
    """Rain rate (mm/h, lazy, negatives not yet masked) at ``time_step`` and the file's own step."""
    p = Path(path)
    ds = _open_dataset(p)
    name = _select_variable(ds, p, variable)
    var = ds[name]
    where = f"{p}: variable '{name}'"
    if not np.issubdtype(var.dtype, np.number) or var.dtype == bool:
        raise InputError(f"{where}: expected numeric values, found {var.dtype}")
    da = _index_as_time(_arrange(var, p), p, time_step)
    t = _times_ns(da, p)
    step = _time_step(t, ds, p, time_step)

    declared = units if units is not None else var.attrs.get("units")
    kind = _unit_kind(declared)
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
    long_name = str(in_attrs.get("long_name", "rain rate"))
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
        "found only NaN/_FillValue or negative values"
    )


def _read_error(da: xr.DataArray, exc: BaseException) -> InputError:
    return InputError(
        f"{da.attrs['source_file']}: variable '{da.attrs['variable']}': expected readable data, "
        f"found {_first_line(exc)}"
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
            n_valid, n_negative = dask.compute((x >= 0).sum(), (x < 0).sum())
        else:
            n_negative = None
            n_valid = next((1 for i in range(0, x.shape[0], 8) if bool((x[i : i + 8] >= 0).any().compute())), 0)
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
    zr_a: float = 200.0,
    zr_b: float = 1.6,
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
        negative values become NaN. Keeps x/y (and lat/lon) coordinates and the grid-mapping variable
        as a scalar coordinate. ``attrs``: source_file, variable, standard_name, long_name, units
        (mm h-1), time_step (s, int), grid_mapping, cell_methods, input_title, input_institution, input_license,
        input_units / input_standard_name when converted.

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
    masked = rate.where(rate >= 0)
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
    t = da["time"].values.astype("datetime64[ns]").astype(np.int64)
    cuts = [0, *(np.flatnonzero(np.diff(t) != int(step) * _NS) + 1).tolist(), t.size]
    return [da.isel(time=slice(a, b)) for a, b in zip(cuts[:-1], cuts[1:]) if b - a >= min_frames]


@dataclass
class Archive:
    """Radar frames from one or more files, as gap-free segments at one time step."""

    segments: list[xr.DataArray]
    """Contiguous runs, regular at ``time_step``, each from one file (windows never cross files)."""
    files: list[str]
    """Files that contributed segments."""
    skipped: list[tuple[str, str]]
    """(file, reason) of each file that could not be used."""
    time_step: int | None
    """Seconds between consecutive frames of a segment; None: each file's own (``attrs["time_step"]``)."""

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
    zr_a: float = 200.0,
    zr_b: float = 1.6,
    min_frames: int = 1,
    scan: bool = True,
) -> Archive:
    """Open files and glob patterns (sorted) as one archive of segments at ``time_step`` (None: each
    file at its own step, carried by each segment's ``attrs["time_step"]``).

    A file that cannot be used (unreadable, no variable, a step that does not divide ``time_step``,
    no run of ``min_frames`` frames) is skipped with one warning naming it and why; but when exactly one
    plain path (no glob) is given, its error is raised. A pattern matching nothing, or no usable file
    at all, raises InputError.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files = _expand(paths)
    if not files:
        raise InputError("radar archive: expected at least one file or glob pattern, found none")
    strict = len(paths) == 1 and not _is_pattern(str(paths[0]))
    archive = Archive(segments=[], files=[], skipped=[], time_step=None if time_step is None else int(time_step))
    for f in files:
        try:
            da = open_radar(f, variable=variable, units=units, zr_a=zr_a, zr_b=zr_b, time_step=time_step, scan=scan)
            runs = segments(da, min_frames)
            if not runs:
                longest = max(s.sizes["time"] for s in segments(da))
                raise InputError(
                    f"{f}: expected a run of at least {min_frames} frames {da.attrs['time_step']} s apart, "
                    f"found at most {longest}"
                )
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


# ----------------------------------------------------------------------------------------------------
# nowcast info


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} min"


def _file_stats(rate: xr.DataArray) -> dict[str, float]:
    """Pixel counts and maximum of an unmasked rate, in one streaming pass over the frames."""
    x = rate.data
    valid = x >= 0
    try:
        n_valid, n_rainy, n_negative, vmax = dask.compute(
            valid.sum(), (x > 0.1).sum(), (x < 0).sum(), dask.array.where(valid, x, -np.inf).max()
        )
    except (OSError, RuntimeError) as exc:
        raise _read_error(rate, exc) from None
    if int(n_valid) == 0:
        raise _no_data_error(rate)
    counts = {"n": x.size, "valid": n_valid, "rainy": n_rainy, "negative": n_negative, "max": vmax}
    return {k: float(v) for k, v in counts.items()}


def _describe_file(path: str, variable: str | None) -> tuple[list[str], dict[str, float]]:
    rate, step = _open_rate(path, variable=variable, units=None, zr_a=200.0, zr_b=1.6, time_step=None)
    stats = _file_stats(rate)
    a = rate.attrs
    t = rate["time"].values.astype("datetime64[ns]").astype(np.int64)
    shape_dims = ", ".join("t" if d == "time" else "c" if d == "channel" else str(d) for d in rate.dims)
    lines = [f"file:            {path}"]
    if "input_title" in a:
        lines.append(f"title:           {a['input_title']}")
    std = a.get("input_standard_name", a["standard_name"])
    lines.append(f"variable:        {a['variable']} (standard_name: {std})")
    units = a.get("input_units", "mm h-1")
    how = {"dbz": ", converted to mm h-1 by Z = 200 R^1.6", "flux": ", converted to mm h-1 (x 3600)"}
    lines.append(f"units:           {units}{how.get(_unit_kind(units) or '', '')}")
    lines.append(f"shape ({shape_dims}): " + " x ".join(str(n) for n in rate.shape))
    lines.append(f"period (UTC):    {_iso(t[0])} to {_iso(t[-1])}")
    lines.append(f"time step:       {step} s ({_minutes(step)})")
    runs = segments(rate)
    if len(runs) == 1:
        lines.append(f"gaps:            none (1 segment of {t.size} frames)")
    else:
        longest_gap = int(np.diff(t).max() // _NS) - step
        sizes = [s.sizes["time"] for s in runs]
        lines.append(
            f"gaps:            {len(runs) - 1} (longest {_minutes(longest_gap)} missing); {len(runs)} segments "
            f"of {min(sizes)} to {max(sizes)} frames"
        )
    lines.append(f"rainy fraction:  {stats['rainy'] / stats['valid']:.3f} (valid pixels > 0.1 mm/h, all frames)")
    lines.append(f"NaN fraction:    {1 - stats['valid'] / stats['n']:.3f} (pixels with no data)")
    if stats["negative"]:
        lines.append(f"negative values: {int(stats['negative'])} (treated as no data)")
    lines.append(f"maximum:         {stats['max']:.2f} mm/h")
    stats["frames"] = float(t.size)
    stats["step"] = float(step)
    return lines, stats


def describe_radar(paths: Sequence[str], variable: str | None = None) -> list[str]:
    """Lines describing radar files for ``nowcast info``: variable, units, shape, period, step, gaps,
    rainy and NaN fractions, maximum. Statistics stream over frames (dask), so no file is loaded whole.

    Several files (or glob patterns) give one block per file and a last line summing them up. As
    ``open_archive`` would at the step of most files, that line leaves out (with one warning each) the
    files whose time step does not divide it.
    """
    files = _expand(paths)
    if not files:
        raise InputError("nowcast info: expected at least one radar file, found none")
    lines: list[str] = []
    described = [_describe_file(f, variable) for f in files]
    for i, (block, _) in enumerate(described):
        lines.extend(([""] if i else []) + block)
    if len(files) > 1:
        steps = [int(stats["step"]) for _, stats in described]
        base = collections.Counter(steps).most_common(1)[0][0]  # on a tie, the first file's
        kept, off = [], []
        for f, step, (_, stats) in zip(files, steps, described):
            if base % step:
                log.warning("skipped %s: expected a time step that divides the archive's time step of %d s "
                            "(that of most files), found %d s", f, base, step)  # fmt: skip
                off.append(f)
            else:
                kept.append(stats)
        total = {key: sum(st[key] for st in kept) for key in ("n", "valid", "rainy", "frames")}
        lines += [
            "",
            f"archive:         {len(kept)} file{'s' if len(kept) != 1 else ''} at {base} s, "
            f"{int(total['frames'])} frames, rainy fraction "
            f"{total['rainy'] / total['valid']:.3f}, NaN fraction {1 - total['valid'] / total['n']:.3f}, "
            f"maximum {max(st['max'] for st in kept):.2f} mm/h",
        ]
        if off:
            lines.append(f"left out:        {len(off)} file(s) at another time step: {', '.join(off)}")
    return lines


# ----------------------------------------------------------------------------------------------------
# output


_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _free_bytes(directory: Path) -> int | None:
    """Bytes free to an unprivileged user on ``directory``'s file system, None if unknown."""
    try:
        return int(shutil.disk_usage(directory).free)
    except OSError:
        return None


def write_error(target: Path, exc: BaseException, need_bytes: int = 1 << 20) -> OutputError:
    """A one-line ``OutputError`` for a failed write of ``target`` that names the cause.

    A full disk (or quota) is named as such: by the error number when the writer reports one, and by
    the free space left (under ``need_bytes``) when it does not, as the netCDF library, which says
    only ``NetCDF: HDF error``. Anything else is quoted.
    """
    why = _first_line(exc)
    free = _free_bytes(target.parent)
    if getattr(exc, "errno", None) in _NO_SPACE or (free is not None and free < need_bytes):
        left = "" if free is None else f"{free:,} bytes free in {target.parent}"
        said = "" if "no space" in why.lower() or "quota" in why.lower() else why
        detail = "; ".join(x for x in (left, said) if x)
        return OutputError(
            f"{target}: expected room to write it, found no space left on the device"
            + (f" ({detail})" if detail else "")
            + "; the previous file, if any, is untouched"
        )
    return OutputError(f"{target}: expected a writable output file, found {why}")


@contextlib.contextmanager
def atomic_output(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path in the target's directory; on success fsync and rename it onto ``path``.

    The target is therefore either absent, the previous complete file, or the new complete file.
    On any exception the temporary file is removed and the target left as it was; an ``OSError`` for
    a full disk or quota (while writing, flushing or renaming) becomes a one-line ``OutputError``.
    Temporary names start with ``.`` and end with ``suffix`` so that globs of outputs skip them.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    except OSError as exc:
        raise write_error(target, exc, need_bytes=0) from None
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the target the usual permissions
    try:
        try:
            yield tmp
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                raise write_error(target, exc) from None
            raise
        with contextlib.suppress(OSError):  # make the rename durable where the platform allows
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        if tmp.exists():
            tmp.unlink()


_TEMP_CHARS = "[a-z0-9_]{8}"  # the random part of a ``tempfile.mkstemp`` name


def _temp_pattern(target: Path, suffix: str) -> re.Pattern[str]:
    """Names ``atomic_output(target, suffix)`` gives its temporary files, and no others."""
    return re.compile(rf"\.{re.escape(target.name)}\.{_TEMP_CHARS}{re.escape(suffix)}")


def remove_stale_temporaries(path: str | Path, *, suffix: str = ".tmp", min_age_s: float = 3600.0) -> list[Path]:
    """Delete temporary files that ``atomic_output(path, suffix)`` left behind (a killed run).

    Only files named exactly like its temporaries for this target, at least ``min_age_s`` seconds old,
    are removed. Under ``output_lock(path)`` no other nowcast run is writing ``path``, so
    ``min_age_s=0`` is safe there. Returns the removed paths; files that vanish meanwhile are skipped.
    """
    target = Path(path)
    pattern = _temp_pattern(target, suffix)
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False) and now - entry.stat(follow_symlinks=False).st_mtime >= min_age_s:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    if removed:
        log.debug("removed %d stale temporary file(s) of %s: %s", len(removed), target, ", ".join(p.name for p in removed))
    return removed


LOCK_NAME = ".nowcast.lock"
"""The one lock file ``output_lock`` keeps in each output directory."""


def lock_path(path: str | Path) -> Path:
    """The lock file ``output_lock`` uses for ``path``: ``.nowcast.lock`` in its directory.

    One lock per directory, not per output: a templated output such as ``fc_{reference_time}.nc``
    written every 5 minutes for years then leaves one lock file in all, not one per forecast.
    """
    return Path(path).parent / LOCK_NAME


@contextlib.contextmanager
def output_lock(path: str | Path, timeout_s: float = 60.0, poll_s: float = 0.1) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on the output directory's ``.nowcast.lock`` while writing ``path``.

    Two runs writing into the same directory (overlapping cron jobs) thus never interleave: the second
    waits, polling every ``poll_s`` seconds, up to ``timeout_s`` seconds, then raises ``OutputError``.
    The kernel releases the lock when its holder exits, even on SIGKILL, so a killed run never leaves a
    stale lock. The lock file is left in place (deleting it would race with a waiting run), but there is
    only one per directory. The lock is not re-entrant: do not nest two locks on one directory.
    Yields the lock file's path. On platforms without ``fcntl`` no lock is taken.
    """
    target = Path(path)
    lock = lock_path(target)
    try:
        import fcntl
    except ImportError:  # not POSIX: atomic renames still keep the target whole
        log.debug("no fcntl on this platform: writing %s without a lock", target)
        yield lock
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise OutputError(f"{target}: expected a writable output directory, found {_first_line(exc)} ({lock})") from None
    try:
        deadline = time.monotonic() + max(0.0, float(timeout_s))
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise OutputError(
                        f"{target}: expected to lock {lock} for writing, found it held by another run "
                        f"for {timeout_s:g} s (raise --lock-timeout, or look for a stuck nowcast process)"
                    ) from None
                if not waited:
                    log.debug("%s: another run holds %s; waiting up to %g s", target, lock, timeout_s)
                    waited = True
                time.sleep(poll_s)
        try:
            yield lock
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


FORECAST_REFERENCES = (
    "Shi, X., Z. Chen, H. Wang, D.-Y. Yeung, W.-K. Wong and W.-C. Woo, 2015: Convolutional LSTM Network: "
    "A Machine Learning Approach for Precipitation Nowcasting. Advances in Neural Information Processing "
    "Systems 28 (NeurIPS 2015), 802-810."
)
"""The ``references`` global attribute of every forecast file."""

_PACK_SCALE = 0.01
_PACK_FILL = -32768
_PACK_MAX = 327.67  # mm/h, the largest value int16 with scale_factor 0.01 holds
_TIME_UNITS = "seconds since 1970-01-01 00:00:00"
_INTERNAL_ATTRS = ("source_file", "variable", "time_step", "input_title", "input_institution", "input_license")
_TIME_UNITS_METADATA = "leap_seconds: none"  # CF-1.11: POSIX seconds, as the radar files' times are
_CRS_TEXT_ATTRS = ("crs_wkt", "spatial_ref", "proj4", "proj4_params")


def _parse_crs(attrs: Mapping[str, object]) -> tuple[object, str] | None:
    """The CRS a grid-mapping variable describes, read by pyproj from crs_wkt, spatial_ref or proj4
    (the first that parses), with the attribute's name; None without pyproj or a readable CRS."""
    try:
        import pyproj
    except ImportError:
        return None
    for key in _CRS_TEXT_ATTRS:
        if attrs.get(key):
            try:
                return pyproj.CRS.from_user_input(str(attrs[key])), key
            except pyproj.exceptions.CRSError:
                continue
    return None


def complete_grid_mapping(attrs: Mapping[str, object]) -> tuple[dict[str, object] | None, list[str]]:
    """A grid mapping's attributes completed from the CRS it describes (CF-1.11 Appendix F).

    Real radar files often carry a ``crs_wkt``/``proj4`` but leave out attributes CF requires (KNMI's
    polar stereographic has no ``latitude_of_projection_origin``). The attributes pyproj derives from
    the CRS (``CRS.to_cf``) are added where missing; present ones are not changed, except a
    ``crs_wkt`` that PROJ cannot read, rewritten from the ``proj4`` text that it can.

    Returns
    -------
    attrs, added
        The completed attributes and the names added; ``attrs`` is None when the CRS has no CF grid
        mapping at all (e.g. an equidistant cylindrical "plate carree" with a true-scale latitude):
        then the caller writes latitude/longitude coordinates instead.
    """
    import warnings

    out = dict(attrs)
    parsed = _parse_crs(attrs)
    cf: dict[str, object] = {}
    params: dict[str, object] = {}
    if parsed is not None:
        crs = parsed[0]
        with warnings.catch_warnings():  # pyproj warns that a WKT-only result loses information
            warnings.simplefilter("ignore")
            cf = dict(crs.to_cf())  # type: ignore[attr-defined]
            params = dict(crs.to_dict())  # type: ignore[attr-defined]
    name = out.get("grid_mapping_name") or cf.get("grid_mapping_name")
    if not name:
        return None, []
    added = [k for k in cf if k not in out]
    out.update({k: cf[k] for k in added})
    if parsed is not None and "crs_wkt" in attrs and parsed[1] != "crs_wkt":  # the input's WKT did not parse
        out["crs_wkt"] = parsed[0].to_wkt()  # type: ignore[attr-defined]
        added.append(f"crs_wkt (from {parsed[1]}; the input's could not be read)")
    if name == "polar_stereographic" and "latitude_of_projection_origin" not in out:
        lat0 = params.get("lat_0")
        if lat0 is None and out.get("standard_parallel") is not None:
            lat0 = 90.0 if float(np.ravel(out["standard_parallel"])[0]) >= 0 else -90.0
        if lat0 is not None:
            out["latitude_of_projection_origin"] = float(lat0)  # type: ignore[arg-type]
            added.append("latitude_of_projection_origin")
    if name == "oblique_mercator":
        if "azimuth_of_central_line" not in out and (params.get("alpha") is not None or params.get("proj") == "somerc"):
            out["azimuth_of_central_line"] = float(params.get("alpha", 90.0))  # type: ignore[arg-type]
            added.append("azimuth_of_central_line")
        if "azimuth_of_central_line" in out and "azimuth" not in out:
            out["azimuth"] = out["azimuth_of_central_line"]  # compliance-checker <= 6.1 asks for this name
            added.append("azimuth")
    return out, added


def _latitude_longitude(crs_attrs: Mapping[str, object], x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """2-D latitude and longitude (degrees, (y, x)) of the pixel centres, from the grid's CRS."""
    parsed = _parse_crs(crs_attrs)
    if parsed is None:
        return None
    import pyproj

    to_lonlat = pyproj.Transformer.from_crs(parsed[0], "EPSG:4326", always_xy=True)
    xx, yy = np.meshgrid(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    lon, lat = to_lonlat.transform(xx, yy)
    return np.asarray(lat), np.asarray(lon)


def _lead_seconds(fp: xr.DataArray) -> np.ndarray:
    """forecast_period values in whole seconds (timedelta64, or numbers with units minutes/seconds)."""
    v = fp.values
    if np.issubdtype(v.dtype, np.timedelta64):
        return (v // np.timedelta64(1, "s")).astype(np.int64)
    units = str(fp.attrs.get("units", "seconds")).split()[0].lower()
    factor = {"minutes": 60, "minute": 60, "min": 60, "seconds": 1, "second": 1, "s": 1}.get(units)
    if factor is None:
        raise ValueError(f"forecast_period: expected timedelta64 or units minutes/seconds, found units {units!r}")
    return np.round(np.asarray(v, dtype=np.float64) * factor).astype(np.int64)


def forecast_dataset(
    forecast: xr.DataArray,
    *,
    global_attrs: Mapping[str, object] | None = None,
    packed: bool = True,
) -> xr.Dataset:
    """The CF-1.11 Dataset (with encodings) that ``write_forecast`` writes.

    The input's grid mapping is completed from its CRS (``complete_grid_mapping``), or left out with
    latitude/longitude coordinates where CF has none for it; ``history`` says which.

    Parameters
    ----------
    forecast
        Rain rates in mm/h, NaN = no data, dims ``(time, y, x)`` or ``(time, channel, y, x)``, as made by
        ``nowcast.predict.forecast``: ``time`` valid times (datetime64), ``forecast_period(time)``
        (timedelta64, or numbers with units minutes/seconds), scalar ``forecast_reference_time``, the
        input's grid coordinates and its grid-mapping variable as a 0-d coordinate named by
        ``attrs["grid_mapping"]``. ``attrs``: variable (output name; default the DataArray's name),
        standard_name, long_name, units, cell_methods, input_institution.
    global_attrs
        Added to (and overriding) the global attributes: give ``title``, ``source`` and ``history``.
    packed
        int16 with scale_factor 0.01 and _FillValue -32768 like the radar files (rates clipped at
        327.67 mm/h), else float32 with _FillValue NaN. Both zlib-compressed, one chunk per frame.
    """
    fc = forecast
    for need in ("time", "forecast_period", "forecast_reference_time"):
        if need not in fc.coords:
            raise ValueError(f"forecast: expected a '{need}' coordinate, found {list(fc.coords)}")
    a = dict(fc.attrs)
    name = str(a.get("variable") or fc.name or "rainfall_rate")
    gm = str(a.get("grid_mapping") or "")
    gm_var = fc.coords[gm].variable.copy() if gm and gm in fc.coords and fc.coords[gm].ndim == 0 else None
    notes: list[str] = []  # what was completed, for the history attribute
    latlon: tuple[np.ndarray, np.ndarray] | None = None
    if gm_var is not None:
        completed, added = complete_grid_mapping(gm_var.attrs)
        if completed is None:  # no CF grid mapping describes this CRS: locate pixels by latitude/longitude
            has_latlon = {str(c.attrs.get("standard_name")) for c in fc.coords.values()} >= {"latitude", "longitude"}
            if not has_latlon and "x" in fc.coords and "y" in fc.coords:
                latlon = _latitude_longitude(gm_var.attrs, fc["x"].values, fc["y"].values)
            what = "existing" if has_latlon else "2-D" if latlon is not None else "no"
            log.info(
                "grid mapping '%s' has no CF equivalent (%s): written without it, with %s latitude/longitude coordinates",
                gm, str(gm_var.attrs.get("proj4") or gm_var.attrs.get("proj4_params") or "no grid_mapping_name").strip(),
                what,
            )
            notes.append(f"grid mapping '{gm}' has no CF equivalent: left out, pixels located by {what} latitude/longitude")
            gm_var = None
        elif added:
            gm_var.attrs = completed
            notes.append(f"grid mapping '{gm}' completed from its CRS: {', '.join(added)}")

    # the data variable
    long_name = str(a.get("long_name", "rain rate"))
    attrs: dict[str, object] = {
        "standard_name": str(a.get("standard_name", "rainfall_rate")),
        "long_name": f"nowcast of {long_name}",
        "units": "mm h-1",
    }
    if "cell_methods" in a:
        attrs["cell_methods"] = str(a["cell_methods"])
    if gm_var is not None:
        attrs["grid_mapping"] = gm
    attrs["comment"] = "NaN/_FillValue: no data (no coverage in the last observed frame); 0: no rain"
    data = fc.data if isinstance(fc.data, np.ndarray) else np.asarray(fc.values)
    data = data.astype(np.float32, copy=False)
    if packed:
        over = int(np.count_nonzero(data > _PACK_MAX))
        if over:
            log.debug("%d forecast values above %.2f mm/h clipped to it (int16 packing)", over, _PACK_MAX)
            data = np.minimum(data, np.float32(_PACK_MAX))
    var = xr.Variable(fc.dims, data, attrs)

    # coordinates
    lead_s = _lead_seconds(fc["forecast_period"])
    in_minutes = bool(np.all(lead_s % 60 == 0))
    fp = xr.Variable(
        ("time",),
        (lead_s // 60 if in_minutes else lead_s).astype(np.int32),
        {
            "standard_name": "forecast_period",
            "long_name": "forecast lead time",
            "units": "minutes" if in_minutes else "seconds",
        },
    )
    coords: dict[str, xr.Variable] = {
        "time": xr.Variable(
            ("time",), fc["time"].values.astype("datetime64[ns]"),
            {"standard_name": "time", "long_name": "valid time (UTC)", "axis": "T"},
        ),
        "forecast_period": fp,
        "forecast_reference_time": xr.Variable(
            (), np.datetime64(fc["forecast_reference_time"].values, "ns"),
            {"standard_name": "forecast_reference_time", "long_name": "time of the last observed frame (UTC)"},
        ),
    }
    aux: list[str] = []
    for cname, coord in fc.coords.items():
        cname = str(cname)
        if cname in coords or cname == gm or "time" in coord.dims:
            continue
        coords[cname] = coord.variable.copy()
        if cname not in fc.dims:
            aux.append(cname)
    if latlon is not None:
        coords["lat"] = xr.Variable(("y", "x"), latlon[0], {"standard_name": "latitude", "units": "degrees_north", "long_name": "latitude of pixel centre"})
        coords["lon"] = xr.Variable(("y", "x"), latlon[1], {"standard_name": "longitude", "units": "degrees_east", "long_name": "longitude of pixel centre"})
        aux += ["lat", "lon"]
    ds = xr.Dataset({name: var}, coords=coords)
    if gm_var is not None:
        ds[gm] = gm_var

    # encodings
    enc_time = {"units": _TIME_UNITS, "calendar": "standard", "dtype": "int64"}
    ds["time"].encoding = dict(enc_time)
    ds["forecast_reference_time"].encoding = dict(enc_time)
    for tname in ("time", "forecast_reference_time"):
        ds[tname].attrs["units_metadata"] = _TIME_UNITS_METADATA
    ds["forecast_period"].encoding = {"dtype": "int32", "_FillValue": None}
    for cname in ds.coords:
        if cname not in ("time", "forecast_reference_time", "forecast_period"):
            dtype = ds[cname].dtype
            ds[cname].encoding = {"_FillValue": None} if dtype.kind in "fiu" else {}
    chunks = tuple(1 if d in ("time", "channel") else ds.sizes[d] for d in fc.dims)
    enc: dict[str, object] = {"zlib": True, "complevel": 4, "shuffle": True, "chunksizes": chunks}
    if packed:
        enc.update(
            dtype="int16", scale_factor=np.float32(_PACK_SCALE), add_offset=np.float32(0.0), _FillValue=np.int16(_PACK_FILL)
        )
    else:
        enc.update(dtype="float32", _FillValue=np.float32(np.nan))
    enc["coordinates"] = " ".join(["forecast_period", "forecast_reference_time", *aux])
    ds[name].encoding = enc
    if gm_var is not None:
        ds[gm].encoding = {"coordinates": None}  # a grid mapping has no coordinates of its own

    # global attributes
    g: dict[str, object] = {"Conventions": "CF-1.11", "title": f"nowcast of {long_name}"}
    if a.get("input_institution"):
        g["institution"] = str(a["input_institution"])
    if a.get("input_license"):
        g["license"] = str(a["input_license"])  # the data's usage terms travel with the product
    g["source"] = "nowcast"
    g["references"] = FORECAST_REFERENCES
    g.update(global_attrs or {})
    if notes:
        g["history"] = "; ".join(([str(g["history"])] if g.get("history") else []) + notes)
    ds.attrs = {k: v for k, v in g.items() if v is not None}
    return ds


def write_forecast(
    forecast: xr.DataArray,
    path: str | Path,
    *,
    global_attrs: Mapping[str, object] | None = None,
    packed: bool = True,
) -> Path:
    """Write a forecast as a CF-1.11 NetCDF (``forecast_dataset``) atomically; return the path.

    The file appears complete under ``path`` or not at all (temporary file in the same directory, fsync,
    rename); a previous file at ``path`` stays intact until then. Take ``output_lock(path)`` around this
    when other processes may write the same path. Raises ``OutputError`` (one line naming the cause,
    e.g. no space left on the device) when the directory or file cannot be written.
    """
    target = Path(path)
    ds = forecast_dataset(forecast, global_attrs=global_attrs, packed=packed)
    need = (1 << 20) + sum(int(v.size) * (2 if packed else 4) for v in ds.data_vars.values())
    try:
        with atomic_output(target) as tmp:
            ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4")
    except (OSError, RuntimeError) as exc:  # a full disk surfaces as RuntimeError('NetCDF: HDF error')
        raise write_error(target, exc, need_bytes=need) from None
    log.debug("wrote %s", target)
    return target

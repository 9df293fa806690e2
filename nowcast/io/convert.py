"""Operational radar files (ODIM HDF5, BoM Rainfields3, FMI PGM, ...) -> the radar NetCDF input schema. No torch.

Each file is read with pySTEPS' importer for its format (``pysteps.io.importers.import_<format>``), one
frame per file, converted to rain rate in mm/h and written into one NetCDF file in exactly the schema
of the real radar files (``shared/data/radar/README.md``): ``rainfall_rate(time, y, x)`` packed as
int16 in steps of 0.01 mm/h, ``_FillValue`` -32768 (no data), zlib, one chunk per frame; pixel-centre
``x``/``y`` with row 0 at the northern edge; a CF grid-mapping variable ``crs`` built from the
importer's PROJ string. Frames are written one at a time, so memory holds one frame whatever the
number of files.

- ``convert_files``: files -> one NetCDF file, written atomically (``ConvertSettings`` says how).
- ``file_time``: the valid time of a file, from its name.
- ``frame_grid``: pixel-centre coordinates of a frame from the importer's metadata.
- ``to_rain_rate``: an imported frame in mm/h, from its ``unit`` (mm/h, mm over ``accutime``, dBZ).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from nowcast import __version__
from nowcast.errors import InputError, MissingDependencyError, first_line
from nowcast.io.atomic import atomic_output, write_error
from nowcast.io.writing import PACK_MAX, PACK_STEP, PACKING, complete_grid_mapping
from nowcast.units import ZR_A, ZR_B, dbz_to_rate

log = logging.getLogger("nowcast.io")

FORMATS = (
    "bom_rf3",
    "dwd_hdf5",
    "dwd_radolan",
    "fmi_geotiff",
    "fmi_pgm",
    "knmi_hdf5",
    "mch_gif",
    "mch_hdf5",
    "mch_metranet",
    "mrms_grib",
    "odim_hdf5",
    "opera_hdf5",
    "saf_crri",
)
"""The pySTEPS importers ``--format`` accepts (``pysteps.io.get_method(name, "importer")``)."""

DEFAULT_TIME_PATTERNS = (
    "%Y%m%d%H%M%S",
    "%Y%m%d_%H%M%S",
    "%Y%m%d-%H%M%S",
    "%Y%m%dT%H%M%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y%m%d%H%M",
    "%Y%m%d_%H%M",
    "%Y%m%d-%H%M",
    "%Y%m%dT%H%M",
)
"""Time stamps looked for in a file name when no ``time_pattern`` is given, in this order; the first
that matches (not inside a longer run of digits) gives the time. Covers OPERA/ODIM, KNMI, FMI, BoM and
MRMS names; MeteoSwiss (``AQC%y%j%H%M``) and RADOLAN (``%y%m%d%H%M``) need a pattern."""

_INSTALL = {
    "h5py": "pip install h5py",
    "pygrib": "pip install pygrib",
    "gdal": "conda install -c conda-forge gdal (or pip install gdal==$(gdal-config --version) where the GDAL library is installed)",
    "metranet": "pip install metranet",
    "PIL": "pip install pillow",
    "netCDF4": "pip install netCDF4",
    "pyproj": "pip install pyproj",
}
"""How to install each optional reader dependency pySTEPS names in its MissingOptionalDependency."""

_DIRECTIVES = {"Y": r"\d{4}", "y": r"\d{2}", "m": r"\d{2}", "d": r"\d{2}", "j": r"\d{3}", "H": r"\d{2}"}
_DIRECTIVES.update({"M": r"\d{2}", "S": r"\d{2}"})
_GRID_TOLERANCE = 0.01
"""Relative tolerance (of a pixel) when comparing grids and extents."""


@dataclass(frozen=True)
class ConvertSettings:
    """How ``convert_files`` reads and writes."""

    format: str
    """pySTEPS importer name, one of ``FORMATS`` (or an importer registered by a pySTEPS plugin)."""
    time_pattern: str | None = None
    """strftime-like pattern of the time stamp in the file name (%Y %y %m %d %j %H %M %S; ``?`` any one
    character), searched in the base name; None: ``DEFAULT_TIME_PATTERNS``. Times are UTC."""
    variable_name: str = "rainfall_rate"
    """Name of the data variable written."""
    importer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments of the importer (e.g. ``qty="DBZH"`` for ODIM; ``product``, ``unit`` and
    ``accutime`` for mch_gif)."""
    zr_a: float = ZR_A
    """Z = a R^b prefactor used for reflectivity (dBZ) products."""
    zr_b: float = ZR_B
    """Z = a R^b exponent."""
    command: str | None = None
    """The command line, recorded in ``history``."""


@dataclass(frozen=True)
class Grid:
    """Where a frame's pixels are: centres along x (W,) and y (H,), y decreasing (row 0 = north)."""

    x: np.ndarray
    """(W,) pixel-centre x, metres (degrees of longitude on a geographic grid), increasing."""
    y: np.ndarray
    """(H,) pixel-centre y, metres (degrees of latitude on a geographic grid), decreasing."""
    flip: bool
    """True when the importer's first row is the southern edge (``yorigin`` 'lower'): rows are reversed."""
    projection: str
    """PROJ string of the grid, in metres (or geographic)."""
    geographic: bool
    """True for a longitude/latitude grid (``cartesian_unit`` 'degrees')."""

    def describe(self) -> str:
        """The grid in a few words, for messages."""
        return (
            f"{self.y.size} x {self.x.size} pixels, x {self.x[0]:g} to {self.x[-1]:g}, "
            f"y {self.y[0]:g} to {self.y[-1]:g}{', yorigin lower' if self.flip else ''}"
        )

    def differs_from(self, other: Grid) -> str | None:
        """How ``other`` differs from this grid, in words; None when they are the same."""
        if (self.y.size, self.x.size) != (other.y.size, other.x.size):
            return f"{other.y.size} x {other.x.size} pixels"
        if self.projection != other.projection:
            return f"projection {other.projection!r}"
        step = abs(float(self.x[1] - self.x[0])) if self.x.size > 1 else 1.0
        tol = _GRID_TOLERANCE * step
        if np.abs(self.x - other.x).max() > tol or np.abs(self.y - other.y).max() > tol or self.flip != other.flip:
            return other.describe()
        return None


# ----------------------------------------------------------------------------------------------------
# times from file names


def _pattern_regex(pattern: str, bounded: bool) -> re.Pattern[str]:
    """A regex for a strftime-like pattern; each directive a named group. ``bounded``: not inside digits."""
    out, seen, i = [], set(), 0
    while i < len(pattern):
        c = pattern[i]
        if c == "%" and i + 1 < len(pattern):
            d = pattern[i + 1]
            if d == "%":
                out.append("%")
            elif d in _DIRECTIVES and d not in seen:
                out.append(f"(?P<{d}>{_DIRECTIVES[d]})")
                seen.add(d)
            elif d in _DIRECTIVES:
                out.append(_DIRECTIVES[d])
            else:
                raise InputError(
                    f"--time-pattern {pattern!r}: expected the directives %Y %y %m %d %j %H %M %S, found %{d}"
                )
            i += 2
            continue
        out.append("." if c == "?" else re.escape(c))
        i += 1
    body = "".join(out)
    return re.compile(rf"(?<!\d){body}(?!\d)" if bounded else body)


def _time_of(match: re.Match[str]) -> dt.datetime:
    """The datetime a pattern match names (ValueError for an impossible date)."""
    g = match.groupdict()
    year = int(g["Y"]) if g.get("Y") else 2000 + int(g["y"]) if g.get("y") else None
    if year is None:
        raise ValueError("no year (%Y or %y) in the pattern")
    hms = dt.timedelta(hours=int(g.get("H") or 0), minutes=int(g.get("M") or 0), seconds=int(g.get("S") or 0))
    if int(g.get("H") or 0) > 23 or int(g.get("M") or 0) > 59 or int(g.get("S") or 0) > 59:
        raise ValueError(f"time of day {g.get('H')}:{g.get('M')}:{g.get('S')}")
    if g.get("j"):
        day = int(g["j"])
        if not 1 <= day <= (366 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 365):
            raise ValueError(f"day of year {day}")
        return dt.datetime(year, 1, 1) + dt.timedelta(days=day - 1) + hms
    if not (g.get("m") and g.get("d")):
        raise ValueError("no month and day (%m %d) or day of year (%j) in the pattern")
    return dt.datetime(year, int(g["m"]), int(g["d"])) + hms


def file_time(path: str | Path, pattern: str | None = None) -> np.datetime64:
    """The valid time (UTC, datetime64[s]) that a file's base name gives.

    ``pattern`` is searched in the name (``?`` matches any one character); None tries
    ``DEFAULT_TIME_PATTERNS`` in order, each away from other digits, and takes the first that matches.
    A name that matches none, or one pattern at two different times, is an ``InputError``.
    """
    name = Path(path).name
    patterns = (pattern,) if pattern else DEFAULT_TIME_PATTERNS
    for p in patterns:
        found: set[dt.datetime] = set()
        for m in _pattern_regex(p, bounded=pattern is None).finditer(name):
            try:
                found.add(_time_of(m))
            except ValueError as exc:
                if pattern:
                    raise InputError(
                        f"{path}: expected a valid time where --time-pattern {pattern!r} matches, found "
                        f"{m.group(0)!r} ({exc})"
                    ) from None
        if len(found) > 1:
            times = ", ".join(sorted(t.isoformat() for t in found))
            raise InputError(
                f"{path}: expected one time stamp in the file name, found several ({times}); give --time-pattern"
            )
        if found:
            return np.datetime64(found.pop(), "s")
    if pattern:
        raise InputError(f"{path}: expected a file name matching --time-pattern {pattern!r}, found none")
    raise InputError(
        f"{path}: expected a time stamp in the file name (e.g. 20240601120000, 202406011200, 20240601_1200), "
        "found none; give --time-pattern (e.g. 'AQC%y%j%H%M' for MeteoSwiss)"
    )


# ----------------------------------------------------------------------------------------------------
# one frame: importer, grid, units


def _importer(fmt: str) -> Callable[..., tuple]:
    """pySTEPS' importer for ``fmt`` (its import banner swallowed); InputError listing the valid names."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pysteps.io import get_method
    except ImportError as exc:
        raise MissingDependencyError(
            f"convert: expected pysteps, found it missing ({first_line(exc)}); install it with: pip install pysteps"
        ) from None
    try:
        return get_method(fmt, "importer")
    except ValueError:
        plugins: list[str] = []
        with contextlib.suppress(ImportError, AttributeError):  # importers that pySTEPS plugins registered
            from pysteps.io.interface import _importer_methods

            plugins = sorted(set(_importer_methods) - set(FORMATS))
        names = ", ".join([*FORMATS, *plugins])
        raise InputError(f"--format {fmt!r}: expected one of {names}, found an unknown format") from None


def _missing(exc: BaseException, fmt: str) -> MissingDependencyError:
    """The one-line error for an importer whose optional dependency is not installed."""
    text = first_line(exc)
    package = text.split(" ", 1)[0]
    how = _INSTALL.get(package, f"pip install {package}")
    return MissingDependencyError(
        f"--format {fmt}: expected the {package} package that pySTEPS needs to read it, found it missing; "
        f"install it with: {how}"
    )


def _read(path: Path, fmt: str, importer: Callable[..., tuple], kwargs: Mapping[str, Any]) -> tuple[np.ndarray, dict]:
    """(values (H, W) float64 with NaN = no data, metadata) of one file, or a one-line error."""
    from pysteps.exceptions import MissingOptionalDependency

    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            values, _quality, metadata = importer(str(path), **kwargs)
    except MissingOptionalDependency as exc:
        raise _missing(exc, fmt) from None
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input file
        raise InputError(
            f"{path}: expected a {fmt} file, found one pySTEPS cannot read ({type(exc).__name__}: {first_line(exc)})"
        ) from None
    arr = np.ma.filled(np.ma.asarray(values, dtype=np.float64), np.nan)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise InputError(f"{path}: expected one 2-D frame from the {fmt} importer, found shape {arr.shape}")
    return arr, dict(metadata or {})


def _metres(projection: str, unit: str, path: Path) -> tuple[str, float]:
    """(PROJ string in metres, factor from the importer's cartesian unit to metres)."""
    if unit in ("m", "", None):
        return projection, 1.0
    if unit == "km":
        if re.search(r"\+units=km\b", projection):
            return re.sub(r"\+units=km\b", "+units=m", projection), 1000.0
        raise InputError(
            f"{path}: expected a projection in metres or with +units=km, found coordinates in km with {projection!r}"
        )
    raise InputError(f"{path}: expected coordinates in m, km or degrees, found cartesian_unit {unit!r}")


def _centres(lo: float, hi: float, n: int, size: float | None, axis: str, path: Path, warn: bool) -> np.ndarray:
    """(n,) increasing pixel centres between ``lo`` and ``hi``.

    pySTEPS' convention: ``lo``/``hi`` are the outer edges of the raster (n pixels of ``size``). Where
    they are ``size * (n - 1)`` apart instead, they are the first and last coordinates the file stores
    (the BoM importer reads them so) and are taken as pixel centres (BoM's older prcp-cscn files
    store upper-left corners there: their grid comes out half a pixel north-west). ``warn``: log when
    the extent and the pixel size disagree.
    """
    span = float(hi) - float(lo)
    if n < 1 or not np.isfinite(span) or span <= 0:
        raise InputError(f"{path}: expected a positive extent along {axis}, found {lo} to {hi}")
    if (
        size
        and n > 1
        and abs(span - size * (n - 1)) < abs(span - size * n)
        and abs(span - size * (n - 1)) < _GRID_TOLERANCE * size
    ):
        return float(lo) + np.arange(n) * float(size)
    step = span / n
    if warn and size and abs(step - float(size)) > _GRID_TOLERANCE * float(size):
        log.warning(
            "%s: the extent along %s (%g, %d pixels) gives pixels of %g, the metadata say %g; using the extent",
            path,
            axis,
            span,
            n,
            step,
            float(size),
        )
    return float(lo) + (np.arange(n) + 0.5) * step


def frame_grid(
    metadata: Mapping[str, Any], shape: tuple[int, int], path: str | Path = "", *, warn: bool = True
) -> Grid:
    """The pixel-centre grid of an imported frame of ``shape`` (H, W) from pySTEPS metadata.

    Uses ``x1, x2, y1, y2`` (edges of the raster, lower-left and upper-right), ``xpixelsize``,
    ``ypixelsize``, ``yorigin`` ('upper': row 0 is the northern edge; 'lower': rows are reversed),
    ``cartesian_unit`` (m, km, degrees) and ``projection`` (PROJ string). ``warn``: log a warning when
    the extent and the pixel size disagree (the extent is used).
    """
    p = Path(path)
    missing = [k for k in ("projection", "x1", "x2", "y1", "y2") if metadata.get(k) is None]
    if missing:
        raise InputError(f"{p}: expected georeferencing in the importer's metadata, found no {', '.join(missing)}")
    unit = str(metadata.get("cartesian_unit") or "m")
    projection = " ".join(str(metadata["projection"]).split())
    geographic = unit.startswith("deg")
    factor = 1.0
    if not geographic:
        projection, factor = _metres(projection, unit, p)
    height, width = shape

    def size(key: str) -> float | None:
        v = metadata.get(key)
        return None if v is None else abs(float(v)) * factor

    x = _centres(
        float(metadata["x1"]) * factor, float(metadata["x2"]) * factor, width, size("xpixelsize"), "x", p, warn
    )
    y = _centres(
        float(metadata["y1"]) * factor, float(metadata["y2"]) * factor, height, size("ypixelsize"), "y", p, warn
    )
    origin = str(metadata.get("yorigin") or "upper")
    if origin not in ("upper", "lower"):
        raise InputError(f"{p}: expected yorigin 'upper' or 'lower' in the importer's metadata, found {origin!r}")
    return Grid(x=x, y=y[::-1].copy(), flip=origin == "lower", projection=projection, geographic=geographic)


def to_rain_rate(
    values: np.ndarray, metadata: Mapping[str, Any], zr_a: float = ZR_A, zr_b: float = ZR_B, path: str | Path = ""
) -> tuple[np.ndarray, str]:
    """An imported frame (H, W) as rain rate in mm/h (float64, NaN kept), and the conversion in words.

    ``unit`` 'mm/h': as is; 'mm': an accumulation over ``accutime`` minutes, times 60 / accutime (the
    mean rate over the period); 'dBZ' (``transform`` 'dB'): R = (10^(dBZ/10) / a)^(1/b).
    """
    unit = str(metadata.get("unit") or "")
    transform = metadata.get("transform")
    if transform not in (None, "dB") or (transform == "dB" and unit.lower() != "dbz"):
        raise InputError(
            f"{path}: expected untransformed data or dBZ, found unit {unit!r} with transform {transform!r}"
        )
    if unit.lower() in ("mm/h", "mm h-1", "mm/hr"):
        return values, "rain rate as read (mm/h)"
    if unit == "mm":
        accutime = metadata.get("accutime")
        try:
            minutes = float(accutime)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            minutes = float("nan")
        if not minutes > 0:
            raise InputError(
                f"{path}: expected the accumulation period (accutime, minutes) of a product in mm, found {accutime!r}; "
                "give --option accutime=MINUTES"
            )
        return values * (60.0 / minutes), (
            f"rain rate = accumulation (mm over {minutes:g} min) x 60/{minutes:g}; "
            f"the value is the mean rate over the {minutes:g} min ending at the time stamp"
        )
    if unit.lower() == "dbz":
        return dbz_to_rate(values, zr_a, zr_b), f"rain rate from reflectivity (dBZ) by Z = {zr_a:g} R^{zr_b:g}"
    raise InputError(f"{path}: expected data in mm/h, mm or dBZ, found unit {unit!r}")


# ----------------------------------------------------------------------------------------------------
# the output file


def _note_zr(metadata: Mapping[str, Any], settings: ConvertSettings) -> None:
    """One log line when a reflectivity product's importer names a Z-R relation other than the one used."""
    a, b = metadata.get("zr_a"), metadata.get("zr_b")
    if str(metadata.get("unit")).lower() == "dbz" and a is not None and b is not None:
        if (float(a), float(b)) != (settings.zr_a, settings.zr_b):
            log.info(
                "the %s importer names Z = %g R^%g for this product; converting with Z = %g R^%g",
                settings.format,
                float(a),
                float(b),
                settings.zr_a,
                settings.zr_b,
            )


def _product(metadata: Mapping[str, Any]) -> tuple[Any, ...]:
    """What must stay the same from frame to frame besides the grid: unit, transform, accumulation."""
    acc = metadata.get("accutime")
    return (metadata.get("unit"), metadata.get("transform"), None if acc is None else float(acc))


def _crs_attrs(grid: Grid, path: Path) -> dict[str, Any]:
    """CF grid-mapping attributes of the grid's CRS (pyproj), with ``crs_wkt`` and the PROJ string."""
    import pyproj

    try:
        crs = pyproj.CRS.from_user_input(grid.projection)
    except pyproj.exceptions.CRSError as exc:
        raise InputError(
            f"{path}: expected a PROJ projection pyproj can read, found {grid.projection!r} ({first_line(exc)})"
        ) from None
    wkt = crs.to_wkt()
    attrs, _ = complete_grid_mapping({"crs_wkt": wkt})
    if attrs is None:
        log.warning(
            "%s: projection %r has no CF grid mapping; written with crs_wkt and proj4 only", path, grid.projection
        )
        attrs = {"crs_wkt": wkt}
    attrs.update({"proj4": grid.projection, "proj4_params": grid.projection, "spatial_ref": wkt})
    return attrs


def _lonlat_bounds(grid: Grid) -> dict[str, float]:
    """geospatial_lat/lon_min/max of the pixel centres (ACDD attributes)."""
    import pyproj

    if grid.geographic:
        lon, lat = grid.x, grid.y
    else:
        to_lonlat = pyproj.Transformer.from_crs(
            pyproj.CRS.from_user_input(grid.projection), "EPSG:4326", always_xy=True
        )
        xx, yy = np.meshgrid(grid.x, grid.y)
        lon, lat = to_lonlat.transform(xx, yy)
    return {
        "geospatial_lon_min": float(np.nanmin(lon)),
        "geospatial_lon_max": float(np.nanmax(lon)),
        "geospatial_lat_min": float(np.nanmin(lat)),
        "geospatial_lat_max": float(np.nanmax(lat)),
    }


def _define(nc: Any, name: str, times: np.ndarray, grid: Grid, crs: Mapping[str, Any]) -> Any:
    """Dimensions, coordinates, ``crs`` and the empty packed data variable; returns the data variable."""
    height, width = grid.y.size, grid.x.size
    nc.createDimension("time", times.size)
    nc.createDimension("y", height)
    nc.createDimension("x", width)
    t = nc.createVariable("time", "i8", ("time",))
    t.setncatts(
        {
            "standard_name": "time",
            "long_name": "time (UTC)",
            "axis": "T",
            "units": "seconds since 1970-01-01",
            "units_metadata": "leap_seconds: none",
            "calendar": "standard",
        }
    )
    t[:] = times.astype("datetime64[s]").astype(np.int64)
    if grid.geographic:
        ys = {"standard_name": "latitude", "long_name": "latitude of pixel centre", "units": "degrees_north"}
        xs = {"standard_name": "longitude", "long_name": "longitude of pixel centre", "units": "degrees_east"}
    else:
        ys = {
            "standard_name": "projection_y_coordinate",
            "long_name": "y coordinate of pixel centre (row 0 = northern edge)",
            "units": "m",
        }
        xs = {"standard_name": "projection_x_coordinate", "long_name": "x coordinate of pixel centre", "units": "m"}
    for dim, values, attrs, axis in (("y", grid.y, ys, "Y"), ("x", grid.x, xs, "X")):
        v = nc.createVariable(dim, "f8", (dim,))
        v.setncatts({**attrs, "axis": axis})
        v[:] = values
    c = nc.createVariable("crs", "i4", ())
    c.setncatts(dict(crs))
    fill = PACKING["_FillValue"]
    var = nc.createVariable(
        name,
        "i2",
        ("time", "y", "x"),
        zlib=True,
        shuffle=True,
        complevel=4,
        chunksizes=(1, height, width),
        fill_value=fill,
    )
    var.set_auto_maskandscale(False)  # packed here (_pack), not by the library
    return var


def _pack(rate: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(int16 (H, W) in steps of PACK_STEP with the fill value for no data, negatives dropped, values clipped)."""
    negative = np.isfinite(rate) & (rate < 0)
    high = np.isfinite(rate) & (rate > PACK_MAX)
    r = np.where(negative, np.nan, np.minimum(rate, PACK_MAX))
    packed = np.where(np.isfinite(r), np.round(np.nan_to_num(r) / PACK_STEP), float(PACKING["_FillValue"]))
    return packed.astype(np.int16), int(negative.sum()), int(high.sum())


def _ordered(paths: Sequence[str | Path], pattern: str | None, fmt: str) -> list[tuple[np.datetime64, Path]]:
    """(time, file) sorted by time; a missing file, duplicated times or an irregular step are an InputError."""
    import glob

    files: list[Path] = []
    for item in paths:
        text = os.path.expanduser(str(item))
        if any(ch in text for ch in "*?[") and not Path(text).exists():
            matches = sorted(glob.glob(text))
            if not matches:
                raise InputError(f"{item}: expected radar files matching this pattern, found none")
            files.extend(Path(m) for m in matches)
        else:
            files.append(Path(text))
    files = list(dict.fromkeys(files))
    if not files:
        raise InputError("convert: expected at least one radar file, found none")
    for f in files:
        if not f.is_file():
            raise InputError(
                f"{f}: expected a {fmt} radar file, found {'a directory' if f.is_dir() else 'no such file'}"
            )
    timed = sorted(((file_time(f, pattern), f) for f in files), key=lambda tf: tf[0])
    times = np.array([t for t, _ in timed], dtype="datetime64[s]")
    if times.size > 1:
        d = np.diff(times).astype(np.int64)
        dup = np.flatnonzero(d == 0)
        if dup.size:
            i = int(dup[0])
            raise InputError(
                f"{timed[i + 1][1]}: expected one file per time, found the time {times[i]}Z of {timed[i][1]} again"
            )
        step = int(d.min())  # the regular step; any longer difference is a gap (a missing file)
        off = np.flatnonzero(d != step)
        if off.size:
            i = int(off[0])
            raise InputError(
                f"{timed[i + 1][1]}: expected frames every {step} s, found {int(d[i])} s after {timed[i][1]} "
                f"({times[i]}Z to {times[i + 1]}Z); convert each regular run of files separately"
            )
    return timed


def _check_arguments(importer: Callable[..., tuple], fmt: str, kwargs: Mapping[str, Any]) -> None:
    """InputError when ``kwargs`` do not fit the importer's signature (e.g. mch_gif without ``product``)."""
    import inspect

    try:
        signature = inspect.signature(importer)
    except (TypeError, ValueError):  # no signature to check against: the importer decides
        return
    try:
        signature.bind("file", **kwargs)
    except TypeError as exc:
        variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        names = [n for n, prm in list(signature.parameters.items())[1:] if prm.kind not in variadic]
        raise InputError(
            f"--format {fmt}: expected its importer's arguments as --option KEY=VALUE ({', '.join(names) or 'none'}), "
            f"found {first_line(exc)}"
        ) from None


def _write_frames(
    var: Any,
    timed: Sequence[tuple[np.datetime64, Path]],
    first: tuple[np.ndarray, dict],
    grid: Grid,
    read: Callable[[Path], tuple[np.ndarray, dict]],
    settings: ConvertSettings,
) -> tuple[dict, str, int, int]:
    """Read, check, convert and pack every frame into ``var`` (time, y, x), one at a time.

    Returns the last frame's metadata, the conversion in words, and the numbers of negative values
    set to no data and of values clipped to ``PACK_MAX``.
    """
    first_path = timed[0][1]
    product = _product(first[1])
    negatives = clipped = 0
    conversion = ""
    for i, (_, path) in enumerate(timed):
        values, meta = first if i == 0 else read(path)
        change = grid.differs_from(frame_grid(meta, values.shape, path, warn=False))
        if change is not None:
            raise InputError(f"{path}: expected the grid of {first_path} ({grid.describe()}), found {change}")
        if _product(meta) != product:
            raise InputError(
                f"{path}: expected unit, transform and accumulation minutes {product} as in {first_path}, "
                f"found {_product(meta)}"
            )
        rate, conversion = to_rain_rate(values, meta, settings.zr_a, settings.zr_b, path)
        packed, neg, high = _pack(rate[::-1] if grid.flip else rate)
        negatives += neg
        clipped += high
        var[i] = packed
        log.debug("%s: frame %d of %d", path, i + 1, len(timed))
    return meta, conversion, negatives, clipped


def convert_files(paths: Sequence[str | Path], out: str | Path, settings: ConvertSettings) -> Path:
    """Convert radar files to one NetCDF file in the input schema, written atomically; returns ``out``.

    Parameters
    ----------
    paths
        One file per frame (glob patterns expanded), in any order: they are sorted by the time in their
        names (``file_time``). The times must be distinct and regularly spaced.
    out
        The NetCDF file to write (temporary file in its directory, then renamed).
    settings
        Format, time pattern, variable name, importer arguments, Z-R relation, command line.

    Raises
    ------
    InputError
        Unknown format (the valid names listed), importer arguments that do not fit, a missing or
        unreadable file, no time in a name, duplicated or irregular times, frames on different grids
        or of different products, units other than mm/h, mm or dBZ.
    MissingDependencyError
        The format's reader needs a package that is not installed (the pip command given).
    OutputError
        The output cannot be written.
    """
    import netCDF4

    fmt = settings.format
    importer = _importer(fmt)
    kwargs = dict(settings.importer_kwargs)
    _check_arguments(importer, fmt, kwargs)
    timed = _ordered(paths, settings.time_pattern, fmt)
    times = np.array([t for t, _ in timed], dtype="datetime64[s]")
    target = Path(out)

    def read(path: Path) -> tuple[np.ndarray, dict]:
        return _read(path, fmt, importer, kwargs)

    first = read(timed[0][1])
    grid = frame_grid(first[1], first[0].shape, timed[0][1])
    _note_zr(first[1], settings)
    crs = _crs_attrs(grid, timed[0][1])
    try:
        with atomic_output(target, suffix=".nc") as tmp, netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
            var = _define(nc, settings.variable_name, times, grid, crs)
            meta, conversion, negatives, clipped = _write_frames(var, timed, first, grid, read, settings)
            _attributes(nc, var, settings, timed, grid, meta, conversion, negatives, clipped)
    except OSError as exc:
        raise write_error(target, exc) from None
    if negatives:
        log.info("%s: %d negative values (flags) set to no data", target, negatives)
    if clipped:
        log.warning("%s: %d values above %g mm/h clipped to it (the int16 packing's limit)", target, clipped, PACK_MAX)
    log.info("wrote %s: %d frames of %d x %d from %s files", target, len(timed), grid.y.size, grid.x.size, fmt)
    return target


def _attributes(
    nc: Any,
    var: Any,
    settings: ConvertSettings,
    timed: Sequence[tuple[np.datetime64, Path]],
    grid: Grid,
    meta: Mapping[str, Any],
    conversion: str,
    negatives: int,
    clipped: int,
) -> None:
    """Attributes of the data variable and the file (the real files' schema)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        pysteps_version = version("pysteps")
    except PackageNotFoundError:
        pysteps_version = "unknown"
    fmt = settings.format
    unit = str(meta.get("unit"))
    accutime = meta.get("accutime")
    accumulated = unit == "mm"
    first, last = timed[0][0], timed[-1][0]
    institution = meta.get("institution")
    var.setncatts(
        {
            "standard_name": "rainfall_rate",
            "long_name": "radar rainfall rate",
            "units": "mm h-1",
            "grid_mapping": "crs",
            "cell_methods": f"time: mean (interval: {float(accutime):g} minutes)" if accumulated else "time: point",
            "comment": f"NaN/_FillValue: outside radar coverage or no data; 0: no rain measured. {conversion}",
            "scale_factor": PACKING["scale_factor"],
            "add_offset": PACKING["add_offset"],
        }
    )
    kwargs = json.dumps(dict(settings.importer_kwargs), sort_keys=True, default=str)
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    notes = [f"{negatives} negative values set to NaN"] if negatives else []
    if clipped:
        notes.append(f"{clipped} values above {PACK_MAX} mm/h clipped")
    history = (
        f"{now}: converted from {len(timed)} {fmt} files ({timed[0][1].name} to {timed[-1][1].name}) with pysteps "
        f"{pysteps_version} (importer '{fmt}', kwargs {kwargs}) by nowcast {__version__}"
        + (f" ({settings.command})" if settings.command else "")
        + (f"; {'; '.join(notes)}" if notes else "")
    )
    attrs: dict[str, Any] = {
        "Conventions": "CF-1.11",  # units_metadata on time is a CF-1.11 attribute
        "title": f"Radar rainfall rate from {fmt} files, {first}Z to {last}Z",
        "source": f"radar product read by pysteps.io.importers.import_{fmt}"
        + (f" ({institution})" if institution else ""),
        "history": history,
        "references": "https://pysteps.github.io",
        "time_coverage_start": f"{first}Z",
        "time_coverage_end": f"{last}Z",
        "pysteps_importer": fmt,
        "pysteps_importer_kwargs": kwargs,
        "original_unit": unit,
        "conversion": conversion,
        "n_missing_frames": np.int32(0),
        "n_negative_values_set_to_nan": np.int32(negatives),
    }
    if institution:
        attrs["institution"] = str(institution)
    if len(timed) > 1:
        attrs["time_step_seconds"] = np.int32((timed[1][0] - first).astype(np.int64))
    if accumulated:
        attrs["original_accumulation_minutes"] = float(accutime)  # type: ignore[arg-type]
    if not grid.geographic and grid.x.size > 1 and grid.y.size > 1:
        attrs["pixel_size_x_m"] = float(abs(grid.x[1] - grid.x[0]))
        attrs["pixel_size_y_m"] = float(abs(grid.y[1] - grid.y[0]))
    attrs.update(_lonlat_bounds(grid))
    nc.setncatts(attrs)

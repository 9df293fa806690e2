"""Writing the forecast: a forecast DataArray as a CF-1.11 NetCDF (DESIGN section 7). No torch import.

- ``forecast_dataset``: the Dataset, with encodings, that is written.
- ``write_forecast``: that Dataset written atomically (``nowcast.io.atomic``).
- ``complete_grid_mapping``: the input's grid mapping completed from the CRS it carries.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np
import xarray as xr

from nowcast.io.atomic import atomic_output, write_error

log = logging.getLogger("nowcast.io")


FORECAST_REFERENCES = (
    "Shi, X., Z. Chen, H. Wang, D.-Y. Yeung, W.-K. Wong and W.-C. Woo, 2015: Convolutional LSTM Network: "
    "A Machine Learning Approach for Precipitation Nowcasting. Advances in Neural Information Processing "
    "Systems 28 (NeurIPS 2015), 802-810."
)
"""The ``references`` global attribute of every forecast file."""

PACKING = {
    "dtype": "int16",
    "scale_factor": np.float32(0.01),
    "add_offset": np.float32(0.0),
    "_FillValue": np.int16(-32768),
}
"""NetCDF encoding of rain rates packed as int16 in steps of 0.01 mm/h, as the radar files and ``synth`` write them."""
PACK_STEP = 0.01
"""The packing's resolution in mm/h (its scale_factor)."""
PACK_MAX = 327.67
"""The largest rate (mm/h) the packing holds: 32767 steps of 0.01."""
STATUS = "nodata_status"
"""Name of the forecast DataArray's coordinate saying why a pixel has no value (``STATUS_FLAGS``); written
as the variable ``<data variable>_status``, named by the data variable's ``ancillary_variables``."""
STATUS_FORECAST, STATUS_NO_DATA, STATUS_OUTSIDE = 0, 1, 2
STATUS_FLAGS = {
    STATUS_FORECAST: ("forecast", "a value is forecast"),
    STATUS_NO_DATA: (
        "no_radar_data",
        "no value: the last observed frame has no data here, or where the rain arriving here comes from",
    ),
    STATUS_OUTSIDE: (
        "from_outside_domain",
        "no value: the rain arriving here comes from outside the radar grid, so it is unknown",
    ),
}
"""Flag value -> (CF flag meaning, explanation) of the status variable."""
_TIME_UNITS = "seconds since 1970-01-01 00:00:00"


def fits_packing(low: float, high: float) -> bool:
    """Whether values from ``low`` to ``high`` keep their value, to ``PACK_STEP``, in the int16 packing."""
    return -PACK_MAX <= low and high <= PACK_MAX


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


def _latitude_longitude(
    crs_attrs: Mapping[str, object], x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
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
        ``attrs["grid_mapping"]``, and optionally ``STATUS`` (dims as the data, int8 ``STATUS_FLAGS``),
        written as ``<name>_status`` and named by the data variable's ``ancillary_variables``. ``attrs``: variable (output name; default the DataArray's name),
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
    gm_var, latlon, notes = _grid_mapping(fc, gm)
    status_name = f"{name}_status" if STATUS in fc.coords else None
    attrs = _data_attrs(a, name, gm if gm_var is not None else None, status_name)
    coords, aux = _coordinates(fc, gm, latlon)
    ds = xr.Dataset({name: xr.Variable(fc.dims, _values(fc, packed), attrs)}, coords=coords)
    if gm_var is not None:
        ds[gm] = gm_var
    if status_name:
        ds[status_name] = _status_variable(fc[STATUS], name, gm if gm_var is not None else None)
    _set_encodings(ds, name, fc.dims, aux, packed, gm if gm_var is not None else None, status_name)
    if fc.attrs.get("frame_numbers"):
        ds = _as_frames(ds)
    ds.attrs = _global_attributes(a, str(attrs["long_name"]), global_attrs, notes)
    return ds


def _grid_mapping(
    fc: xr.DataArray, gm: str
) -> tuple[xr.Variable | None, tuple[np.ndarray, np.ndarray] | None, list[str]]:
    """The input's grid-mapping variable completed from its CRS (``complete_grid_mapping``), or None with
    2-D latitude/longitude (lat, lon) where CF has no grid mapping for the CRS; and notes for ``history``."""
    gm_var = fc.coords[gm].variable.copy() if gm and gm in fc.coords and fc.coords[gm].ndim == 0 else None
    notes: list[str] = []
    latlon: tuple[np.ndarray, np.ndarray] | None = None
    if gm_var is None:
        return None, None, notes
    completed, added = complete_grid_mapping(gm_var.attrs)
    if completed is None:  # no CF grid mapping describes this CRS: locate pixels by latitude/longitude
        has_latlon = {str(c.attrs.get("standard_name")) for c in fc.coords.values()} >= {"latitude", "longitude"}
        if not has_latlon and "x" in fc.coords and "y" in fc.coords:
            latlon = _latitude_longitude(gm_var.attrs, fc["x"].values, fc["y"].values)
        what = "existing" if has_latlon else "2-D" if latlon is not None else "no"
        log.info(
            "grid mapping '%s' has no CF equivalent (%s): written without it, with %s latitude/longitude coordinates",
            gm,
            str(gm_var.attrs.get("proj4") or gm_var.attrs.get("proj4_params") or "no grid_mapping_name").strip(),
            what,
        )
        notes.append(f"grid mapping '{gm}' has no CF equivalent: left out, pixels located by {what} latitude/longitude")
        return None, latlon, notes
    if added:
        gm_var.attrs = completed
        notes.append(f"grid mapping '{gm}' completed from its CRS: {', '.join(added)}")
    return gm_var, None, notes


def _values(fc: xr.DataArray, packed: bool) -> np.ndarray:
    """The forecast's values as float32, clipped at ``PACK_MAX`` when ``packed``."""
    data = fc.data if isinstance(fc.data, np.ndarray) else np.asarray(fc.values)
    data = data.astype(np.float32, copy=False)
    if packed:
        over = int(np.count_nonzero(data > PACK_MAX))
        if over:
            log.debug("%d forecast values above %.2f mm/h clipped to it (int16 packing)", over, PACK_MAX)
            data = np.minimum(data, np.float32(PACK_MAX))
    return data


def _coordinates(
    fc: xr.DataArray, gm: str, latlon: tuple[np.ndarray, np.ndarray] | None
) -> tuple[dict[str, xr.Variable], list[str]]:
    """The file's coordinates (times, the input's grid, lat/lon when computed) and the names of the
    auxiliary ones the data variable's ``coordinates`` attribute lists."""
    coords = _time_coords(fc)
    aux: list[str] = []
    for cname, coord in fc.coords.items():
        cname = str(cname)
        if cname in coords or cname in (gm, STATUS) or "time" in coord.dims:
            continue
        coords[cname] = coord.variable.copy()
        if cname not in fc.dims:
            aux.append(cname)
    if latlon is not None:
        for key, values, std, units in (
            ("lat", latlon[0], "latitude", "degrees_north"),
            ("lon", latlon[1], "longitude", "degrees_east"),
        ):
            coords[key] = xr.Variable(
                ("y", "x"), values, {"standard_name": std, "units": units, "long_name": f"{std} of pixel centre"}
            )
        aux += ["lat", "lon"]
    return coords, aux


def _set_encodings(
    ds: xr.Dataset,
    name: str,
    dims: tuple,
    aux: list[str],
    packed: bool,
    gm: str | None,
    status_name: str | None,
) -> None:
    """Encodings of every variable: times as int64 seconds since 1970 (CF-1.11 ``units_metadata``), the
    data int16-packed or float32, zlib, one chunk per frame, its ``coordinates`` attribute."""
    for tname in ("time", "forecast_reference_time"):
        if np.issubdtype(ds[tname].dtype, np.datetime64):
            ds[tname].encoding = {"units": _TIME_UNITS, "calendar": "standard", "dtype": "int64"}
            ds[tname].attrs["units_metadata"] = _TIME_UNITS_METADATA
        else:  # frame numbers
            ds[tname].encoding = {"dtype": "int64", "_FillValue": None}
    ds["forecast_period"].encoding = {"dtype": "int32", "_FillValue": None}
    for cname in ds.coords:
        if cname not in ("time", "forecast_reference_time", "forecast_period"):
            ds[cname].encoding = {"_FillValue": None} if ds[cname].dtype.kind in "fiu" else {}
    chunks = tuple(1 if d in ("time", "channel") else ds.sizes[d] for d in dims)
    enc: dict[str, object] = {"zlib": True, "complevel": 4, "shuffle": True, "chunksizes": chunks}
    enc.update(PACKING if packed else {"dtype": "float32", "_FillValue": np.float32(np.nan)})
    enc["coordinates"] = " ".join(["forecast_period", "forecast_reference_time", *aux])
    ds[name].encoding = enc
    if gm is not None:
        ds[gm].encoding = {"coordinates": None}  # a grid mapping has no coordinates of its own
    if status_name:
        ds[status_name].encoding = {
            "zlib": True,
            "complevel": 4,
            "chunksizes": chunks,
            "dtype": "int8",
            "_FillValue": None,
            "coordinates": enc["coordinates"],
        }


def _global_attributes(
    a: Mapping[str, object], title: str, given: Mapping[str, object] | None, notes: list[str]
) -> dict[str, object]:
    """Conventions, title, the input's institution and licence, source, references, then ``given``
    (title, source, history, ...), and what the writer completed appended to ``history``."""
    g: dict[str, object] = {"Conventions": "CF-1.11", "title": title}
    if a.get("input_institution"):
        g["institution"] = str(a["input_institution"])
    if a.get("input_license"):
        g["license"] = str(a["input_license"])  # the data's usage terms travel with the product
    g["source"] = "nowcast"
    g["references"] = FORECAST_REFERENCES
    g.update(given or {})
    if notes:
        g["history"] = "; ".join(([str(g["history"])] if g.get("history") else []) + notes)
    return {k: v for k, v in g.items() if v is not None}


def _data_attrs(a: Mapping[str, object], name: str, grid_mapping: str | None, status: str | None) -> dict[str, object]:
    """Attributes of the forecast variable from the input's (``open_radar``'s attrs): rain in mm h-1 with
    its standard_name, or values that are not rain (``data_units``) in the input's own units."""
    not_rain = "data_units" in a
    long_name = str(a.get("long_name", name if not_rain else "rain rate"))
    attrs: dict[str, object] = {}
    if not not_rain or a.get("input_standard_name"):
        attrs["standard_name"] = str(a.get("input_standard_name" if not_rain else "standard_name", "rainfall_rate"))
    attrs["long_name"] = f"nowcast of {long_name}"
    attrs["units"] = (str(a["data_units"]) or "1") if not_rain else "mm h-1"
    if "cell_methods" in a:
        attrs["cell_methods"] = str(a["cell_methods"])
    if grid_mapping:
        attrs["grid_mapping"] = grid_mapping
    if status:
        attrs["ancillary_variables"] = status
    why = f"no forecast, {status} says why" if status else "no data (no coverage in the last observed frame)"
    attrs["comment"] = f"NaN/_FillValue: {why}" + ("" if not_rain else "; 0: no rain")
    return attrs


def _time_coords(fc: xr.DataArray) -> dict[str, xr.Variable]:
    """``time``, ``forecast_period`` and ``forecast_reference_time`` of the file: valid times, lead times
    (minutes, or seconds when not whole minutes) and the last observed frame's time; for frame-numbered
    input (``attrs["frame_numbers"]``, the seconds per frame) frame numbers and frames ahead, no dates."""
    per_frame = int(fc.attrs.get("frame_numbers") or 0)
    lead_s = _lead_seconds(fc["forecast_period"])
    ref = np.datetime64(fc["forecast_reference_time"].values, "ns")
    if per_frame:

        def number(t: object) -> np.ndarray:
            return np.asarray(t, "datetime64[ns]").astype(np.int64) // (per_frame * 1_000_000_000)

        return {
            "time": xr.Variable(("time",), number(fc["time"].values), {"long_name": "frame number", "units": "1"}),
            "forecast_period": xr.Variable(
                ("time",),
                (lead_s // per_frame).astype(np.int32),
                {"long_name": "frames after the last observed frame", "units": "1"},
            ),
            "forecast_reference_time": xr.Variable(
                (), number(ref), {"long_name": "number of the last observed frame", "units": "1"}
            ),
        }
    in_minutes = bool(np.all(lead_s % 60 == 0))
    return {
        "time": xr.Variable(
            ("time",),
            fc["time"].values.astype("datetime64[ns]"),
            {"standard_name": "time", "long_name": "valid time (UTC)", "axis": "T"},
        ),
        "forecast_period": xr.Variable(
            ("time",),
            (lead_s // 60 if in_minutes else lead_s).astype(np.int32),
            {
                "standard_name": "forecast_period",
                "long_name": "forecast lead time",
                "units": "minutes" if in_minutes else "seconds",
            },
        ),
        "forecast_reference_time": xr.Variable(
            (),
            ref,
            {"standard_name": "forecast_reference_time", "long_name": "time of the last observed frame (UTC)"},
        ),
    }


FRAME_NAMES = {"time": "frame", "forecast_period": "frames_ahead", "forecast_reference_time": "last_observed_frame"}
"""Names in the file of a forecast from frame-numbered input, which has no times (``_time_coords``)."""


def _as_frames(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with its time names replaced by ``FRAME_NAMES`` (CF reserves ``time`` for times)."""
    out = ds.rename(FRAME_NAMES)
    for var in out.variables.values():
        text = var.encoding.get("coordinates")
        if text:
            var.encoding["coordinates"] = " ".join(FRAME_NAMES.get(n, n) for n in str(text).split())
    return out


def _status_variable(status: xr.DataArray, name: str, grid_mapping: str | None) -> xr.Variable:
    """The CF flag variable (int8, ``STATUS_FLAGS``) saying why ``name`` has no value at a pixel."""
    values = sorted(STATUS_FLAGS)
    attrs: dict[str, object] = {
        "long_name": f"status of {name}: why it has no value",
        "standard_name": "status_flag",
        "flag_values": np.array(values, dtype=np.int8),
        "flag_meanings": " ".join(STATUS_FLAGS[v][0] for v in values),
        "comment": "; ".join(f"{v} {STATUS_FLAGS[v][0]}: {STATUS_FLAGS[v][1]}" for v in values),
    }
    if grid_mapping:
        attrs["grid_mapping"] = grid_mapping
    return xr.Variable(status.dims, np.asarray(status.values, dtype=np.int8), attrs)


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

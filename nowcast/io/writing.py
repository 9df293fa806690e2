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
_TIME_UNITS = "seconds since 1970-01-01 00:00:00"
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
                gm,
                str(gm_var.attrs.get("proj4") or gm_var.attrs.get("proj4_params") or "no grid_mapping_name").strip(),
                what,
            )
            notes.append(
                f"grid mapping '{gm}' has no CF equivalent: left out, pixels located by {what} latitude/longitude"
            )
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
        over = int(np.count_nonzero(data > PACK_MAX))
        if over:
            log.debug("%d forecast values above %.2f mm/h clipped to it (int16 packing)", over, PACK_MAX)
            data = np.minimum(data, np.float32(PACK_MAX))
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
            ("time",),
            fc["time"].values.astype("datetime64[ns]"),
            {"standard_name": "time", "long_name": "valid time (UTC)", "axis": "T"},
        ),
        "forecast_period": fp,
        "forecast_reference_time": xr.Variable(
            (),
            np.datetime64(fc["forecast_reference_time"].values, "ns"),
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
        coords["lat"] = xr.Variable(
            ("y", "x"),
            latlon[0],
            {"standard_name": "latitude", "units": "degrees_north", "long_name": "latitude of pixel centre"},
        )
        coords["lon"] = xr.Variable(
            ("y", "x"),
            latlon[1],
            {"standard_name": "longitude", "units": "degrees_east", "long_name": "longitude of pixel centre"},
        )
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
        enc.update(PACKING)
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

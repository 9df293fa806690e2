"""Writing an ensemble nowcast: members, exceedance probabilities and the mean in one CF-1.11 NetCDF. No torch.

- ``ensemble_dataset``: the Dataset, with encodings: the ensemble mean as the deterministic
  ``rainfall_rate`` (as ``writing.forecast_dataset`` writes a single forecast), the members as
  ``rainfall_rate_ensemble(realization, time, y, x)`` and the probabilities of reaching each threshold as
  ``probability_of_rainfall_rate_above_threshold(threshold, time, y, x)``, IMPROVER's convention: the
  ``threshold`` coordinate carries the quantity's standard name and units and
  ``spp__relative_to_threshold = "greater_than_or_equal_to"``; probabilities have units "1".
- ``write_ensemble``: that Dataset written atomically (``atomic.atomic_output``).
- ``exceedance_probability``: the fraction of members at or above each threshold.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from nowcast.io.atomic import atomic_output, write_error
from nowcast.io.writing import PACK_MAX, forecast_dataset

log = logging.getLogger("nowcast.io")

MEMBERS_VARIABLE = "rainfall_rate_ensemble"
"""Name of the members' variable (realization, time, y, x)."""
MEMBERS_COMPLEVEL = 1
"""zlib level of the members, the bulk of the file: level 1 writes 20 members x 12 leads of 512 x 512 in
0.6 of level 4's time for a file 3 % larger (int16 with shuffle; measured on OPERA CIRRUS)."""
PROBABILITY_VARIABLE = "probability_of_rainfall_rate_above_threshold"
"""Name of the exceedance probabilities' variable (threshold, time, y, x), as IMPROVER names them."""
PROBABILITY_PACKING = {
    "dtype": "int16",
    "scale_factor": np.float32(1e-4),
    "add_offset": np.float32(0.0),
    "_FillValue": np.int16(-32768),
}
"""Probabilities as int16 in steps of 1e-4 (k / M for up to 5,000 members within half a step)."""


def exceedance_probability(members: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Fraction of members at or above each threshold: members (M, ...) mm/h -> (n_thresholds, ...)
    float32; NaN where any member has no data."""
    m = np.asarray(members, dtype=np.float32)
    thr = [np.float32(t) for t in thresholds]
    count = np.zeros((len(thr), *m.shape[1:]), dtype=np.int32)
    nodata = np.zeros(m.shape[1:], dtype=bool)
    with np.errstate(invalid="ignore"):
        for member in m:  # one member at a time: no temporaries of the ensemble's size
            nodata |= ~np.isfinite(member)
            for c, t in zip(count, thr):
                c += member >= t
    p = (count / np.float64(len(m))).astype(np.float32)  # as the float64 mean of booleans gives it
    p[:, nodata] = np.nan
    return p


def ensemble_dataset(
    members: xr.DataArray,
    thresholds: Sequence[float],
    *,
    global_attrs: Mapping[str, object] | None = None,
    packed: bool = True,
) -> xr.Dataset:
    """The CF-1.11 Dataset of an ensemble nowcast.

    members: rain rates in mm/h, NaN = no data, dims ``(realization, time, y, x)``, with the coordinates
    and attrs a single forecast has for ``writing.forecast_dataset`` (valid times, ``forecast_period``,
    ``forecast_reference_time``, the input's grid and grid mapping); ``realization`` values are member
    numbers (default 0..M-1). thresholds: mm/h, increasing. ``packed``: int16 (rates in 0.01 mm/h,
    probabilities in 1e-4) rather than float32.
    """
    if members.dims[0] != "realization" or members.ndim != 4:
        raise ValueError(f"members: expected dims (realization, time, y, x), found {members.dims}")
    thr = np.asarray([float(t) for t in thresholds], dtype=np.float32)
    if thr.size == 0 or np.any(np.diff(thr) <= 0) or not np.isfinite(thr).all():
        raise ValueError(f"thresholds: expected finite, increasing rates in mm/h, found {list(thresholds)}")
    data = np.asarray(members.values, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        mean = members.isel(realization=0, drop=True).copy(data=data.mean(0))
    ds = forecast_dataset(mean, global_attrs=global_attrs, packed=packed)
    name = str(mean.attrs.get("variable") or mean.name or "rainfall_rate")  # as forecast_dataset names it
    mean_var = ds[name]
    mean_var.attrs["long_name"] = f"{mean_var.attrs['long_name']}, ensemble mean"  # not in cell_methods:
    # CF checkers want a name there to be a dimension or coordinate of the variable, and the mean has none
    realization = members["realization"].values if "realization" in members.coords else np.arange(data.shape[0])
    ds = ds.assign_coords(
        realization=("realization", np.asarray(realization, np.int32), {"standard_name": "realization", "units": "1"}),
        threshold=(
            "threshold",
            thr,
            {
                "standard_name": mean_var.attrs.get("standard_name", "rainfall_rate"),
                "long_name": "rain rate threshold",
                "units": "mm h-1",
                "spp__relative_to_threshold": "greater_than_or_equal_to",
            },
        ),
    )
    _add_members(ds, name, data, packed)
    _add_probabilities(ds, name, exceedance_probability(data, thr), packed)
    for cname in ("realization", "threshold"):
        ds[cname].encoding = {"_FillValue": None}
    return ds


def _add_members(ds: xr.Dataset, name: str, data: np.ndarray, packed: bool) -> None:
    """The members (M, time, y, x) as ``MEMBERS_VARIABLE``, attributes and encoding from ``ds[name]``;
    a dask array over ``data`` (no copy), so that writing encodes and compresses one frame at a time."""
    ref = ds[name]
    attrs = dict(ref.attrs)
    attrs["long_name"] = ref.attrs["long_name"].replace("ensemble mean", "ensemble members")
    import dask.array as da  # lazy, one frame at a time: the packing's temporaries stay one frame large

    # a random name (no hash of the data) and a wrapper: dask copies an ndarray whole before slicing it
    values = da.from_array(_Frames(data), chunks=(1, 1, *data.shape[2:]), name=False, meta=data[:0, :0, :0, :0])
    values = da.minimum(values, np.float32(PACK_MAX)) if packed else values
    ds[MEMBERS_VARIABLE] = xr.Variable(("realization", *ref.dims), values, attrs)
    enc = dict(ref.encoding)
    enc["chunksizes"] = (1, *enc["chunksizes"])
    if "complevel" in enc:
        enc["complevel"] = MEMBERS_COMPLEVEL
    ds[MEMBERS_VARIABLE].encoding = enc


class _Frames:
    """An array (M, T, H, W) as dask sees it without copying it: shape, dtype, and slices on demand."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim

    def __getitem__(self, key: object) -> np.ndarray:
        return self.data[key]


def _add_probabilities(ds: xr.Dataset, name: str, prob: np.ndarray, packed: bool) -> None:
    """Exceedance probabilities (n_thresholds, time, y, x) as ``PROBABILITY_VARIABLE``."""
    ref = ds[name]
    attrs: dict[str, object] = {
        "long_name": PROBABILITY_VARIABLE,
        "units": "1",
        "comment": "fraction of the ensemble members at or above the threshold; NaN/_FillValue: no data",
    }
    if "grid_mapping" in ref.attrs:
        attrs["grid_mapping"] = ref.attrs["grid_mapping"]
    ds[PROBABILITY_VARIABLE] = xr.Variable(("threshold", *ref.dims), prob, attrs)
    enc = {k: v for k, v in ref.encoding.items() if k in ("zlib", "complevel", "shuffle", "chunksizes", "coordinates")}
    enc["chunksizes"] = (1, *enc["chunksizes"])
    enc.update(PROBABILITY_PACKING if packed else {"dtype": "float32", "_FillValue": np.float32(np.nan)})
    ds[PROBABILITY_VARIABLE].encoding = enc


def write_ensemble(
    members: xr.DataArray,
    thresholds: Sequence[float],
    path: str | Path,
    *,
    global_attrs: Mapping[str, object] | None = None,
    packed: bool = True,
) -> Path:
    """Write ``ensemble_dataset(members, thresholds)`` atomically to ``path`` and return it; raises
    ``OutputError`` (one line) when it cannot be written. Take ``output_lock(path)`` around it when other
    processes may write the same path."""
    target = Path(path)
    ds = ensemble_dataset(members, thresholds, global_attrs=global_attrs, packed=packed)
    need = (1 << 20) + sum(int(v.size) * (2 if packed else 4) for v in ds.data_vars.values())
    try:
        with atomic_output(target) as tmp:
            ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4")
    except (OSError, RuntimeError) as exc:
        raise write_error(target, exc, need_bytes=need) from None
    log.debug("wrote %s", target)
    return target


__all__ = [
    "MEMBERS_VARIABLE",
    "PROBABILITY_PACKING",
    "PROBABILITY_VARIABLE",
    "ensemble_dataset",
    "exceedance_probability",
    "write_ensemble",
]

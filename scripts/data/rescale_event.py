"""Turn a radar event at another time step into a 5-minute training event without inventing frames.

Usage: python -m scripts.data.rescale_event IN.nc OUT.nc [--step 300] [--pixel 1000]

A model trained at 5 min on a 1 km grid learns motion in pixels per step. An event at step ``s``
with pixels of ``p`` metres moves rain by ``v * s / p`` pixels per step; coarsening its grid to pixels
of ``pixel * s / step`` metres gives the same displacement per step as a ``step``-second event on a
``pixel``-metre grid. Only the space axis is
resampled (area mean over valid pixels; a coarse pixel with less than half its area valid is no
data); every source frame is kept and relabelled ``step`` seconds apart. What is not matched:
storms grow and decay faster per step, and look smaller in pixels. The time axis of the output is
therefore synthetic, and its ``history`` and ``nowcast_rescaled`` attributes say so. The package
never imports this script; it prepares extra training events (docs/default-model.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr

from nowcast.io import atomic_output, open_radar, segments


def area_mean(rate: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Area mean of ``rate`` (t, y, x), mm/h with NaN = no data, onto ``out_hw`` pixels (t, Y, X)."""
    valid = np.isfinite(rate)
    vals = torch.from_numpy(np.where(valid, rate, 0.0).astype(np.float64))[:, None]
    frac = torch.from_numpy(valid.astype(np.float64))[:, None]
    total = F.adaptive_avg_pool2d(vals, out_hw)[:, 0].numpy()
    cover = F.adaptive_avg_pool2d(frac, out_hw)[:, 0].numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        out = total / cover
    out[cover < 0.5] = np.nan
    return out.astype(np.float32)


def centres(coord: np.ndarray, n: int) -> np.ndarray:
    """Pixel centres of ``n`` equal pixels spanning the same extent as the centres ``coord``."""
    step = coord[1] - coord[0]
    lo, hi = coord[0] - step / 2, coord[-1] + step / 2
    edges = np.linspace(lo, hi, n + 1)
    return (edges[:-1] + edges[1:]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--step", type=int, default=300, help="Target time step, s.")
    parser.add_argument("--pixel", type=float, default=1000.0, help="Pixel size of the target grid, m.")
    args = parser.parse_args()

    rate = open_radar(args.source, scan=False)  # checks variable, units, dims and a regular step
    n_segments = len(segments(rate))
    if rate.ndim != 3 or n_segments > 1:
        raise SystemExit(
            f"{args.source}: expected one gap-free (time, y, x) sequence, found dims {rate.dims} "
            f"in {n_segments} segment(s)"
        )
    with xr.open_dataset(args.source) as ds:  # metadata only: global and variable attributes
        global_attrs, var_attrs = dict(ds.attrs), dict(ds[rate.attrs["variable"]].attrs)
    src_step = int(rate.attrs["time_step"])
    px = float(global_attrs["pixel_size_x_m"])
    new_px = args.pixel * src_step / args.step
    factor = new_px / px
    if factor < 1:
        raise SystemExit(f"{args.source}: expected a coarsening factor >= 1, found {factor:.2f} (would invent detail)")
    values = rate.values
    ny, nx = (round(n / factor) for n in values.shape[1:])
    coarse = area_mean(values, (ny, nx))
    times = rate["time"].values[0] + np.arange(values.shape[0]) * np.timedelta64(args.step, "s")
    out = xr.Dataset(
        {"rainfall_rate": (("time", "y", "x"), coarse, var_attrs)},
        coords={
            "time": ("time", times, dict(rate["time"].attrs)),
            "y": ("y", centres(rate["y"].values, ny), dict(rate["y"].attrs)),
            "x": ("x", centres(rate["x"].values, nx), dict(rate["x"].attrs)),
        },
    )
    if "crs" in rate.coords:
        out["crs"] = ((), rate["crs"].values, dict(rate["crs"].attrs))
    note = (
        f"grid coarsened {factor:.2f}x ({px:.0f} m -> {new_px:.0f} m, area mean) and frames relabelled "
        f"{args.step} s apart (source step {src_step} s) so that displacement per step matches a "
        f"{args.step} s, {args.pixel:.0f} m product; the time axis is synthetic"
    )
    out.attrs = {
        **global_attrs,
        "time_step_seconds": args.step,
        "pixel_size_x_m": new_px,
        "pixel_size_y_m": new_px,
        "nowcast_rescaled": note,
        "history": f"{global_attrs.get('history', '')}\nscripts/rescale_event.py: {note}",
    }
    enc = {
        "rainfall_rate": {
            "dtype": "int16",
            "scale_factor": np.float32(0.01),
            "add_offset": np.float32(0),
            "_FillValue": np.int16(-32768),
            "zlib": True,
            "shuffle": True,
            "chunksizes": (1, ny, nx),
        },
        "time": {"units": "seconds since 1970-01-01", "dtype": "int64"},
    }
    with atomic_output(args.output) as tmp:
        out.to_netcdf(tmp, encoding=enc)
    print(f"{args.output}: {values.shape} -> {coarse.shape}; {note}")


if __name__ == "__main__":
    main()

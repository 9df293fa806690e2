"""Cut a radar event into square tiles of one size, one file each, for models with a fixed frame size.

Usage: python -m scripts.data.tile_event IN.nc OUT_DIR [--size 64] [--min-valid 0.5]

``model.kind`` fc_lstm and cnn_lstm take frames of one size only (their weights depend on it). To
score them on a whole event beside the ConvLSTM and the baselines, on the same pixels, the event's
grid is cut into non-overlapping ``size`` x ``size`` tiles (the last rows and columns that do not fill
a tile are left out) and every tile whose share of valid pixels over all frames is at least
``--min-valid`` is written as ``OUT_DIR/<stem>_r<row>_c<col>.nc`` in the input's schema (variable,
attributes, packing, grid mapping; ``x``/``y`` cut with the data). ``nowcast evaluate OUT_DIR/*.nc``
then verifies every method on every tile and every forecast time (each tile is its own segment, so
extrapolation sees only its tile: rain entering from outside is no data, for every method alike
under the common mask). The package never imports this script (docs/why-convlstm.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import xarray as xr

from nowcast.io import atomic_output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--size", type=int, default=64, help="Tile height and width in pixels.")
    parser.add_argument("--min-valid", type=float, default=0.5, help="Least share of valid pixels a tile keeps.")
    parser.add_argument("--variable", default="rainfall_rate")
    args = parser.parse_args()

    args.out_dir.mkdir(parents=True, exist_ok=True)
    with xr.open_dataset(args.source, mask_and_scale=True) as ds:
        var = ds[args.variable]
        ny, nx = var.sizes["y"], var.sizes["x"]
        valid = np.isfinite(var.values).mean(axis=0)  # (y, x) share of frames with data
        enc = {k: v for k, v in var.encoding.items() if k in ("dtype", "scale_factor", "add_offset", "_FillValue")}
        enc |= {"zlib": True, "shuffle": True, "chunksizes": (1, args.size, args.size)}
        kept = 0
        for r in range(ny // args.size):
            for c in range(nx // args.size):
                ys, xs = slice(r * args.size, (r + 1) * args.size), slice(c * args.size, (c + 1) * args.size)
                share = float(valid[ys, xs].mean())
                if share < args.min_valid:
                    continue
                tile = ds.isel(y=ys, x=xs)
                attrs = {k: v for k, v in ds.attrs.items() if not k.startswith("geospatial_")}  # the whole grid's
                tile.attrs = attrs | {
                    "history": f"{ds.attrs.get('history', '')}\nscripts/tile_event.py: rows {ys.start}-{ys.stop - 1}, "
                    f"columns {xs.start}-{xs.stop - 1} of {ny} x {nx}",
                }
                out = args.out_dir / f"{args.source.stem}_r{r:02d}_c{c:02d}.nc"
                with atomic_output(out) as tmp:
                    tile.to_netcdf(
                        tmp,
                        encoding={args.variable: enc, "time": {"units": "seconds since 1970-01-01", "dtype": "int64"}},
                    )
                kept += 1
    print(
        f"{args.source}: {kept} tiles of {args.size} x {args.size} with >= {args.min_valid:.0%} valid pixels in {args.out_dir}"
    )


if __name__ == "__main__":
    main()

"""Write a synthetic image sequence: coloured shapes moving on a dark background, 3 channels, 0-255.

Usage: python -m scripts.data.shapes_sequence OUT.nc [--frames 200] [--size 64] [--shapes 4] [--seed 0]

For the image-sequence user (README "Image sequences", docs/why-convlstm.md): a frame sequence that is
not rain, in the layout ``nowcast train --config images`` reads: one variable ``frames`` with dims
``(time, channel, y, x)``, float32 values 0-255, and a time axis of plain frame numbers 0, 1, 2, ...
Each shape (disc, square or triangle, 6-14 pixels across) has its own colour and a constant velocity
of 0.5-2 pixels per frame, and bounces off the frame's edges; where shapes overlap the later one is
drawn on top. The same seed gives the same file. The package never imports this script.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import xarray as xr


def shapes_sequence(frames: int, size: int, n_shapes: int, seed: int) -> np.ndarray:
    """(frames, 3, size, size) float32 in 0-255: ``n_shapes`` coloured shapes bouncing in a box."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.full((frames, 3, size, size), 10.0, dtype=np.float32)  # a dark grey background
    kinds = rng.integers(0, 3, n_shapes)
    radius = rng.uniform(3.0, 7.0, n_shapes)
    colour = rng.uniform(60.0, 255.0, (n_shapes, 3))
    pos = rng.uniform(radius[:, None], size - radius[:, None], (n_shapes, 2))
    speed = rng.uniform(0.5, 2.0, n_shapes)
    angle = rng.uniform(0, 2 * np.pi, n_shapes)
    vel = np.stack([speed * np.sin(angle), speed * np.cos(angle)], 1)  # (rows, cols) pixels per frame
    for t in range(frames):
        for k in range(n_shapes):
            dy, dx = rows - pos[k, 0], cols - pos[k, 1]
            r = radius[k]
            if kinds[k] == 0:
                inside = dy**2 + dx**2 <= r**2
            elif kinds[k] == 1:
                inside = (np.abs(dy) <= r * 0.8) & (np.abs(dx) <= r * 0.8)
            else:  # a triangle pointing up
                inside = (dy <= r * 0.7) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
            out[t][:, inside] = colour[k][:, None]
        pos += vel
        for d in range(2):  # bounce off the edges
            low, high = pos[:, d] < radius, pos[:, d] > size - radius
            vel[low | high, d] *= -1
            pos[:, d] = np.clip(pos[:, d], radius, size - radius)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--shapes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    values = shapes_sequence(args.frames, args.size, args.shapes, args.seed)
    ds = xr.Dataset(
        {"frames": (("time", "channel", "y", "x"), values, {"long_name": "RGB frame", "units": "1"})},
        coords={"time": np.arange(args.frames)},
        attrs={"title": "moving coloured shapes (scripts/data/shapes_sequence.py)", "seed": args.seed},
    )
    ds.to_netcdf(args.output)
    print(f"{args.output}: {values.shape} frames, values {values.min():.0f}-{values.max():.0f}")


if __name__ == "__main__":
    main()

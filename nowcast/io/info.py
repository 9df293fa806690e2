"""What ``nowcast info`` prints for radar files: grid, period, time step, rain statistics, per file and as
one archive. (A checkpoint describes itself: ``models.checkpoint.describe_checkpoint``.)"""

from __future__ import annotations

import collections
import logging
from typing import Sequence

import dask
import dask.array
import numpy as np
import xarray as xr

from nowcast.units import RAIN_THRESHOLD, ZR_A, ZR_B
from nowcast.errors import InputError
from nowcast.io.reading import (
    NS,
    _expand,
    _no_data_error,
    _open_rate,
    _read_error,
    _unit_kind,
    iso_time,
    segments,
    times_ns,
)

log = logging.getLogger("nowcast.io")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} min"


def _file_stats(rate: xr.DataArray) -> dict[str, float]:
    """Pixel counts and maximum of an unmasked rate, in one streaming pass over the frames."""
    x = rate.data
    valid = x >= 0
    try:
        n_valid, n_rainy, n_negative, vmax = dask.compute(
            valid.sum(), (x > RAIN_THRESHOLD).sum(), (x < 0).sum(), dask.array.where(valid, x, -np.inf).max()
        )
    except (OSError, RuntimeError) as exc:
        raise _read_error(rate, exc) from None
    if int(n_valid) == 0:
        raise _no_data_error(rate)
    counts = {"n": x.size, "valid": n_valid, "rainy": n_rainy, "negative": n_negative, "max": vmax}
    return {k: float(v) for k, v in counts.items()}


def _describe_file(path: str, variable: str | None) -> tuple[list[str], dict[str, float]]:
    rate, step = _open_rate(
        path,
        variable=variable,
        units=None,
        zr_a=ZR_A,
        zr_b=ZR_B,
        time_step=None,
        frame_step=1,
        as_read=True,
        forecasts=True,
    )
    stats = _file_stats(rate)
    a = rate.attrs
    t = times_ns(rate)
    shape_dims = ", ".join("t" if d == "time" else "c" if d == "channel" else str(d) for d in rate.dims)
    lines = [f"file:            {path}"]
    if "input_title" in a:
        lines.append(f"title:           {a['input_title']}")
    std = a.get("input_standard_name", "none" if "data_units" in a else a["standard_name"])
    lines.append(f"variable:        {a['variable']} (standard_name: {std})")
    unit = "mm/h"
    if "data_units" in a:  # not rain: e.g. image intensities
        unit = a["data_units"] or "(no units)"
        lines.append(
            f"units:           {unit} (not a rain unit: values as they are; train and predict need data.units)"
        )
    else:
        units = a.get("input_units", "mm h-1")
        how = {"dbz": f", converted to mm h-1 by Z = {ZR_A:g} R^{ZR_B:g}", "flux": ", converted to mm h-1 (x 3600)"}
        lines.append(f"units:           {units}{how.get(_unit_kind(units) or '', '')}")
    lines.append(f"shape ({shape_dims}): " + " x ".join(str(n) for n in rate.shape))
    if rate.attrs.get("frame_numbers"):  # read 1 s apart: the seconds are the frame numbers
        lines.append(f"frames:          {t[0] // NS} to {t[-1] // NS} (numbered, no dates)")
        lines.append("time step:       1 frame (train and predict read frames data.time_step seconds apart)")
    else:
        lines.append(f"period (UTC):    {iso_time(t[0])} to {iso_time(t[-1])}")
        lines.append(f"time step:       {step} s ({_minutes(step)})")
    runs = segments(rate)
    if len(runs) == 1:
        lines.append(f"gaps:            none (1 segment of {t.size} frames)")
    else:
        longest_gap = int(np.diff(t).max() // NS) - step
        sizes = [s.sizes["time"] for s in runs]
        gap = f"{longest_gap} frames" if rate.attrs.get("frame_numbers") else _minutes(longest_gap)
        lines.append(
            f"gaps:            {len(runs) - 1} (longest {gap} missing); {len(runs)} segments "
            f"of {min(sizes)} to {max(sizes)} frames"
        )
    if "data_units" not in a:
        lines.append(
            f"rainy fraction:  {stats['rainy'] / stats['valid']:.3f} (valid pixels > {RAIN_THRESHOLD:g} mm/h, all frames)"
        )
    lines.append(f"NaN fraction:    {1 - stats['valid'] / stats['n']:.3f} (pixels with no data)")
    if stats["negative"]:
        lines.append(f"negative values: {int(stats['negative'])} (treated as no data)")
    lines.append(f"maximum:         {stats['max']:.2f} {unit}")
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
                log.warning(
                    "skipped %s: expected a time step that divides the archive's time step of %d s "
                    "(that of most files), found %d s",
                    f,
                    base,
                    step,
                )
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

"""What ``nowcast info`` prints: descriptions of radar files and of checkpoints, in one place.

No torch import at module level: a checkpoint is read (with torch) only when one is described.
"""

from __future__ import annotations

import collections
import logging
from pathlib import Path
from typing import Any, Sequence

import dask
import dask.array
import numpy as np
import xarray as xr

from nowcast.config import ZR_A, ZR_B
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

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
"""File endings ``describe`` reads as a checkpoint rather than a radar file."""


def describe(paths: Sequence[str | Path], variable: str | None = None) -> list[str]:
    """The lines ``nowcast info`` prints: one checkpoint (by its ending), else radar files as one archive."""
    if len(paths) == 1 and Path(paths[0]).suffix in CHECKPOINT_SUFFIXES:
        return describe_checkpoint(paths[0])
    return describe_radar([str(f) for f in paths], variable=variable)


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
    rate, step = _open_rate(path, variable=variable, units=None, zr_a=ZR_A, zr_b=ZR_B, time_step=None)
    stats = _file_stats(rate)
    a = rate.attrs
    t = times_ns(rate)
    shape_dims = ", ".join("t" if d == "time" else "c" if d == "channel" else str(d) for d in rate.dims)
    lines = [f"file:            {path}"]
    if "input_title" in a:
        lines.append(f"title:           {a['input_title']}")
    std = a.get("input_standard_name", a["standard_name"])
    lines.append(f"variable:        {a['variable']} (standard_name: {std})")
    units = a.get("input_units", "mm h-1")
    how = {"dbz": f", converted to mm h-1 by Z = {ZR_A:g} R^{ZR_B:g}", "flux": ", converted to mm h-1 (x 3600)"}
    lines.append(f"units:           {units}{how.get(_unit_kind(units) or '', '')}")
    lines.append(f"shape ({shape_dims}): " + " x ".join(str(n) for n in rate.shape))
    lines.append(f"period (UTC):    {iso_time(t[0])} to {iso_time(t[-1])}")
    lines.append(f"time step:       {step} s ({_minutes(step)})")
    runs = segments(rate)
    if len(runs) == 1:
        lines.append(f"gaps:            none (1 segment of {t.size} frames)")
    else:
        longest_gap = int(np.diff(t).max() // NS) - step
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


def describe_checkpoint(path: str | Path) -> list[str]:
    """Lines describing a checkpoint for ``nowcast info``: config, provenance, metrics, size, SHA-256."""
    from nowcast.checkpoint import model_from_checkpoint, sha256_file  # torch, only for a checkpoint

    model, cfg, ckpt = model_from_checkpoint(path)
    n_params = sum(p.numel() for p in model.parameters())
    m, d = cfg.model, cfg.data
    prov = ckpt.get("provenance", {})
    step = f"{d.time_step} s" if d.time_step else "the data's own"
    lines = [
        f"checkpoint: {path}",
        f"  format: {ckpt['format']} v{ckpt['format_version']}, written by nowcast {ckpt.get('nowcast_version', '?')}",
        f"  sha256: {sha256_file(path)}",
        f"  kind: {'training (resumable)' if 'training' in ckpt else 'inference'}",
        (
            f"  model: {m.name}, patch {m.patch}, levels {list(m.hidden)}, kernels {list(m.kernels)}, "
            f"downsample {list(m.downsample)}, peephole {m.peephole}, {n_params:,} parameters"
            if m.kind == "convlstm"
            else f"  model: {m.name}, kind {m.kind}, patch {m.patch}, LSTM widths {list(m.hidden)}, "
            f"conv widths {list(m.conv_widths)}"
            + (f", frames of {m.frame_size[0]} x {m.frame_size[1]} only" if m.frame_size else "")
            + f", {n_params:,} parameters"
        ),
        f"  frame: {m.frame}"
        + (
            (
                ", forecasts the change from S-PROG"
                if m.base == "sprog"
                else ", forecasts the change from the last frame"
            )
            if m.residual
            else ""
        )
        + (", sees the time step" if m.step_input else "")
        + (", probability-matched to the last frame" if m.probmatching == "cdf" else ""),
        f"  input: {m.channels} channel(s), {d.in_frames} frames in, {d.out_frames} out, time step "
        f"{step}, variable {d.variable or '(auto)'}, "
        f"units {d.units or '(from file)'}",
        f"  transform: {cfg.transform.kind}",
    ]
    if "training" in ckpt:
        lines.append(f"  step: {ckpt['training'].get('step')}")
    for key, value in prov.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k}={_short(v)}" for k, v in value.items())
            lines.append(f"  {key}: {inner}")
        elif isinstance(value, list):
            lines.append(f"  {key}: {len(value)} item(s)")
            lines.extend(f"    {_short(v)}" for v in value[:20])
        else:
            lines.append(f"  {key}: {_short(value)}")
    return lines


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_short(x)}" for k, x in v.items()) + "}"
    return str(v)

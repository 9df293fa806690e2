"""Forecasts: rain-rate arrays in, rain-rate arrays out (the model's part of predict, evaluate and validation).

- ``forecast_array``: numpy frames (B, T, C, H, W) in mm/h -> forecast frames; used by training
  validation, ``evaluate`` and ``forecast``.
- ``load_model``: a checkpoint (default: the model shipped in the package) with its config and SHA-256.
- ``forecast``: a checked radar DataArray in, a forecast DataArray out (valid times, lead times,
  reference time, the input's grid and grid mapping), all in memory.
- ``predict_to_file``: ``nowcast predict``: open the inputs as one archive, check age, frames and step,
  forecast, and write the CF NetCDF (and optionally a PNG) atomically under a lock.

Length: over 600 lines because the checks of an input (frames, step, age, channels) sit next to
the forecast that needs them, so that ``predict`` and ``watch`` share exactly one path.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import xarray as xr

from nowcast import __version__
from nowcast.checkpoint import default_model_path, model_from_checkpoint, read_config, sha256_file
from nowcast.config import Config, frame_size_problem, lead_times
from nowcast.errors import CheckpointError, InputError, OutputError, StaleInputError
from nowcast.motion import motion_field
from nowcast.probmatch import match_forecast
from nowcast.io import (
    FORECAST_REFERENCES,
    NS,
    data_time_step,
    iso_time,
    open_archive,
    output_lock,
    remove_stale_temporaries,
    times_ns,
    write_forecast,
)
from nowcast.transforms import Transform

if TYPE_CHECKING:  # torch loads with the model, not with this module: input errors are reported first
    import torch

log = logging.getLogger(__name__)

TRAINED_STEPS = (120, 900)
"""Seconds between frames of the radars a model for any step (``data.time_step`` 0) is trained on
(the shared events: 2 to 15 minutes); other steps work, with a warning."""
DEFAULT_OUTPUT = "{stem}_nowcast_{reference_time:%Y%m%d%H%M}.nc"
"""Output name when ``-o`` is not given, in the directory of the first input file."""


def forecast_array(
    model: torch.nn.Module,
    transform: Transform,
    frames: np.ndarray,
    steps: int,
    *,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    time_step: float | None = None,
    velocity: np.ndarray | None = None,
) -> np.ndarray:
    """Forecast ``steps`` frames from observed rain rates.

    frames: (B, T_in, C, H, W) mm/h, NaN = no data; ``time_step``: seconds between them (used by
    models with ``step_input``). Returns (B, steps, C, H, W) float32 mm/h, NaN wherever the last input
    frame has no data (and, for a Lagrangian model, where the forecast's source lies outside the data).
    The model runs in inference mode on ``device``. On the CPU the encoder steps through time with one
    fused convolution per step (``batched_input=False``): as fast there, and it does not keep every
    frame's gate pre-activations alive.

    With ``model.probmatching: cdf`` each forecast frame then takes the last frame's distribution
    (``probmatch.match_forecast``); with ``cdf_lagrangian`` it does so before it is advected.

    Lagrangian models (``model.frame``): motion from ``motion.motion_field`` on each sample's input
    frames, or ``velocity`` (B, 2, H, W) px per step when the caller has computed it; input frame
    t_last - j is advected j steps forward into the frame of the last observation, the network
    forecasts there, and its forecast k (in mm/h) is advected k steps forward.
    """
    import torch

    from nowcast.motion import displacements, warp
    from nowcast.runtime import autocast

    device = torch.device(device)
    cfg = getattr(model, "cfg", None)
    problem = frame_size_problem(cfg, frames.shape) if cfg is not None else None
    if problem:
        raise InputError(f"input frames: {problem}")
    lagrangian = getattr(cfg, "frame", "eulerian") == "lagrangian"
    x = transform.forward(frames)  # (B, T, C, H, W) model space, NaN = no data
    with torch.inference_mode():
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
        if lagrangian:
            if velocity is None:
                velocity = np.stack([motion_field(f) for f in frames])
            velocity = torch.from_numpy(np.asarray(velocity, dtype=np.float32)).to(device)  # (B, 2, H, W)
            xt = to_lagrangian_inputs(xt, velocity)
        xt = torch.nan_to_num(xt, nan=0.0)
        with autocast(device, precision):
            out = model(xt, steps, time_step, batched_input=device.type != "cpu")
        pred = torch.from_numpy(transform.inverse(out.float().cpu().numpy()))  # (B, steps, C, H, W)
        if lagrangian:  # no data where the last frame has none, then carried along with the rain
            last_ok = torch.from_numpy(np.isfinite(frames[:, -1:]))  # (B, 1, C, H, W)
            pred = torch.where(last_ok, pred, torch.full((), float("nan")))
            if getattr(cfg, "probmatching", "none") == "cdf_lagrangian":  # same pixels as the last frame here
                pred = torch.from_numpy(match_forecast(pred.numpy(), frames[:, -1]))
            disp = displacements(velocity.float(), steps).cpu()  # (B, steps, 2, H, W)
            pred = torch.stack([warp(pred[:, k], disp[:, k]) for k in range(steps)], 1)
    nodata = ~np.isfinite(frames[:, -1:])  # (B, 1, C, H, W)
    pred_np = np.where(nodata, np.float32(np.nan), pred.numpy()).astype(np.float32)
    if getattr(cfg, "probmatching", "none") == "cdf":
        pred_np = match_forecast(pred_np, frames[:, -1])
    return pred_np


def to_lagrangian_inputs(frames: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
    """Input frames (B, T, C, H, W) warped into the frame of the last one along ``velocity`` (B, 2, H, W).

    Frame T-1-j is advected j steps forward (NaN where its source lies outside the data); the last
    frame is unchanged.
    """
    import torch

    from nowcast.motion import displacements, warp

    T = frames.shape[1]
    if T < 2:
        return frames
    disp = displacements(velocity.to(frames.dtype), T - 1)  # (B, T-1, 2, H, W)
    out = [warp(frames[:, T - 1 - j], disp[:, j - 1]) for j in range(T - 1, 0, -1)]
    return torch.stack([*out, frames[:, -1]], 1)


# ----------------------------------------------------------------------------------------------------
# the model


@dataclass(frozen=True)
class LoadedModel:
    """A model rebuilt from a checkpoint, in eval mode, with what a forecast file records about it."""

    model: torch.nn.Module
    config: Config
    path: Path
    sha256: str


def model_path(path: str | Path | None = None) -> Path:
    """The checkpoint to use: ``path``, or (None) the model shipped in the package, which must exist."""
    if path is not None:
        return Path(path)
    shipped = default_model_path()
    if not shipped.is_file():
        raise CheckpointError(
            f"{shipped}: expected the default model shipped with nowcast, found no file "
            "(this installation has none); pass a checkpoint with --model CKPT (evaluate: or --no-model)"
        )
    return shipped


def load_model(path: str | Path | None = None) -> LoadedModel:
    """The checkpoint at ``path`` (None: the model shipped in the package) as a ``LoadedModel``.

    Raises CheckpointError (one line) for a missing, corrupt, truncated, foreign or newer-format file.
    """
    path = model_path(path)
    model, cfg, _ = model_from_checkpoint(path)
    return LoadedModel(model=model, config=cfg, path=path, sha256=sha256_file(path))


# ----------------------------------------------------------------------------------------------------
# time helpers


def parse_time(value: str | np.datetime64 | datetime) -> int:
    """A reference time as nanoseconds since 1970 (UTC). Text is ISO 8601; an offset or ``Z`` is
    converted to UTC, a time without one is taken as UTC."""
    import pandas as pd

    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        ts = pd.NaT
    if ts is pd.NaT:
        raise InputError(f"--at {value!s}: expected an ISO 8601 time such as 2021-06-01T12:00Z, found {value!r}")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return int(ts.as_unit("ns").value)


def _source(rate: xr.DataArray) -> str:
    return str(rate.attrs.get("source_file") or rate.name or "input")


# ----------------------------------------------------------------------------------------------------
# the forecast in memory


def select_frames(rate: xr.DataArray, in_frames: int, time_step: int, at: int | None = None) -> np.ndarray:
    """Indices along ``time`` of the ``in_frames`` frames ``time_step`` seconds apart ending at ``at``
    (ns since 1970; None: the last frame).

    Raises InputError naming what was needed and what was found: no frame at ``at``, too few frames
    before it, a gap among them, or a frame among them without any data.
    """
    src = _source(rate)
    t = times_ns(rate)
    if t.size == 0:
        raise InputError(f"{src}: expected {in_frames} frames {time_step} s apart, found none")
    t_ref = int(t[-1]) if at is None else int(at)
    needed = t_ref - np.arange(in_frames - 1, -1, -1, dtype=np.int64) * int(time_step) * NS
    idx = np.searchsorted(t, needed)
    present = (idx < t.size) & (t[np.minimum(idx, t.size - 1)] == needed)
    span = f"{in_frames} frames {time_step} s apart from {iso_time(needed[0])} to {iso_time(t_ref)}"
    if not present[-1]:
        before = t[t <= t_ref]
        nearest = f"; the last frame before it is {iso_time(before[-1])}" if before.size else ""
        raise InputError(
            f"{src}: expected a frame at the reference time {iso_time(t_ref)}, found none "
            f"(frames at {time_step} s from {iso_time(t[0])} to {iso_time(t[-1])}{nearest})"
        )
    if not present.all():
        missing = needed[~present]
        listed = ", ".join(iso_time(m) for m in missing[:3]) + (
            f" and {missing.size - 3} more" if missing.size > 3 else ""
        )
        why = f"the input starts at {iso_time(t[0])}" if missing.max() < t[0] else f"a gap in time: missing {listed}"
        raise InputError(f"{src}: expected {span}, found {int(present.sum())} ({why})")
    return idx


def _checked_frames(rate: xr.DataArray, idx: np.ndarray, time_step: int) -> np.ndarray:
    """The selected frames as float32 (T, C, H, W); frames without any data count as missing."""
    frames = np.asarray(rate.isel(time=idx).values, dtype=np.float32)
    if "channel" not in rate.dims:
        frames = frames[:, None]
    empty = ~np.isfinite(frames).reshape(frames.shape[0], -1).any(axis=1)
    if empty.any():
        t = times_ns(rate)[idx]
        n_empty = int(empty.sum())
        listed = ", ".join(iso_time(x) for x in t[empty][:3]) + (f" and {n_empty - 3} more" if n_empty > 3 else "")
        raise InputError(
            f"{_source(rate)}: expected data in each of the {len(idx)} input frames ({time_step} s apart up to "
            f"{iso_time(t[-1])}), found {n_empty} frame(s) with no data at all: {listed}"
        )
    return frames


def check_input(rate: xr.DataArray, config: Config) -> None:
    """Raise InputError unless ``rate`` fits the model of ``config``: dims, channel count, time step."""
    src = _source(rate)
    if "time" not in rate.dims or rate.ndim not in (3, 4) or rate.dims[-2:] != ("y", "x"):
        raise InputError(f"{src}: expected dims (time, y, x) or (time, channel, y, x), found {rate.dims}")
    channels = rate.sizes.get("channel", 1)
    if channels != config.model.channels:
        raise InputError(
            f"{src}: expected {config.model.channels} channel(s) for model '{config.model.name}', "
            f"found {channels} (dims {', '.join(map(str, rate.dims))})"
        )
    problem = frame_size_problem(config.model, rate.shape)
    if problem:
        raise InputError(f"{src}: {problem}")
    declared = rate.attrs.get("time_step")
    step = config.data.time_step
    if declared is not None and int(declared) != step:
        raise InputError(
            f"{src}: expected frames at the model's time step of {step} s, found a step of {int(declared)} s"
        )


def forecast(
    rate: xr.DataArray,
    model: torch.nn.Module,
    config: Config,
    *,
    steps: int | None = None,
    at: str | np.datetime64 | datetime | int | None = None,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> xr.DataArray:
    """Forecast from the last ``config.data.in_frames`` frames of ``rate``, ending at ``at``.

    Parameters
    ----------
    rate
        Rain rates (mm/h, NaN = no data) with dims ``(time, y, x)`` or ``(time, channel, y, x)``, as
        from ``io.open_radar(..., time_step=config.data.time_step)`` (or several files joined along
        time); lazy (dask) arrays are fine: only the needed frames are read.
    model, config
        The model (eval mode, on ``device``) and the config of its checkpoint: time step, frames in,
        transform.
    steps
        Lead times to forecast (default ``config.data.out_frames``); more or fewer than trained is fine.
    at
        Reference time (ISO text, datetime64, datetime, or ns since 1970 UTC); None: the last frame.

    Returns
    -------
    xr.DataArray
        float32 mm/h, dims as ``rate``, NaN where the reference frame has no data, the full frame
        (any size). Coordinates: ``time`` (valid times), ``forecast_period(time)`` (timedelta64),
        scalar ``forecast_reference_time``, and the input's grid coordinates and grid mapping.
        ``attrs``: those of ``rate`` (variable, standard_name, long_name, units, grid_mapping, ...).

    Raises
    ------
    InputError
        Wrong channel count for the model, a step other than the model's, no frame at ``at``, too few
        frames, a gap, or a needed frame without any data.
    """
    frames, idx = input_frames(rate, config, at)
    return _forecast_frames(frames, int(times_ns(rate)[idx[-1]]), rate, model, config, steps, device, precision)


def input_frames(
    rate: xr.DataArray, config: Config, at: str | np.datetime64 | datetime | int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The checked input of a forecast: the ``in_frames`` frames ending at ``at`` as float32
    (T, C, H, W) mm/h, read once, and their indices along ``rate``'s time.

    Raises InputError (``forecast``'s list) for input the model cannot use.
    """
    d = config.data
    check_input(rate, config)
    t_at = None if at is None else (int(at) if isinstance(at, (int, np.integer)) else parse_time(at))
    idx = select_frames(rate, d.in_frames, d.time_step, t_at)
    return _checked_frames(rate, idx, d.time_step), idx


def _forecast_frames(
    frames: np.ndarray,
    t_ref: int,
    like: xr.DataArray,
    model: torch.nn.Module,
    config: Config,
    steps: int | None,
    device: torch.device | str,
    precision: str,
    velocity: np.ndarray | None = None,
) -> xr.DataArray:
    """``forecast`` of checked input ``frames`` (T, C, H, W) whose last is at ``t_ref`` (ns); dims,
    grid coordinates, name and attrs as ``like``; ``velocity`` (2, H, W): their motion, if known."""
    d = config.data
    rate = like
    steps = lead_times(steps, d.out_frames)
    started = time.perf_counter()
    out = forecast_array(
        model,
        Transform.from_config(config),
        frames[None],
        steps,
        device=device,
        precision=precision,
        time_step=d.time_step,
        velocity=None if velocity is None else velocity[None],
    )
    log.debug(
        "model forward: %d x %s frames -> %d steps in %.2f s",
        frames.shape[0],
        "x".join(map(str, frames.shape[1:])),
        steps,
        time.perf_counter() - started,
    )
    out = out[0] if "channel" in rate.dims else out[0, :, 0]  # (steps, [C,] H, W)

    lead = np.arange(1, steps + 1, dtype=np.int64) * d.time_step
    coords: dict[str, object] = {
        "time": ("time", (t_ref + lead * NS).astype("datetime64[ns]"), {"standard_name": "time", "axis": "T"}),
        "forecast_period": (
            "time",
            lead.astype("timedelta64[s]").astype("timedelta64[ns]"),
            {"standard_name": "forecast_period"},
        ),
        "forecast_reference_time": ((), np.datetime64(t_ref, "ns"), {"standard_name": "forecast_reference_time"}),
    }
    for name, coord in rate.coords.items():
        if "time" not in coord.dims and name not in coords:
            coords[str(name)] = coord.variable
    result = xr.DataArray(out, dims=rate.dims, coords=coords, name=rate.name, attrs=dict(rate.attrs))
    result.attrs["time_step"] = d.time_step
    return result


# ----------------------------------------------------------------------------------------------------
# the file wrapper (nowcast predict)


def _window(archive_segments: Sequence[xr.DataArray], t_ref: int, in_frames: int, time_step: int) -> xr.DataArray:
    """The frames of all segments between the first needed time and ``t_ref``, joined along time.

    Frames of several files are one archive: the latest frames may span files. A time found in several
    files is taken from the file listed last. The files must share the grid.
    """
    lo = t_ref - (in_frames - 1) * time_step * NS
    if not any(np.any(times_ns(seg) == t_ref) for seg in archive_segments):
        times = np.unique(np.concatenate([times_ns(seg) for seg in archive_segments]))
        before = times[times < t_ref]
        nearest = f"; the last frame before it is {iso_time(before[-1])}" if before.size else ""
        raise InputError(
            f"{_source(archive_segments[-1])}: expected a frame at the reference time {iso_time(t_ref)}, found none "
            f"(the input covers {iso_time(times[0])} to {iso_time(times[-1])} at {time_step} s{nearest})"
        )
    pieces = []
    for seg in archive_segments:
        t = times_ns(seg)
        keep = np.flatnonzero((t >= lo) & (t <= t_ref))
        if keep.size:
            pieces.append(seg.isel(time=keep))
    if len(pieces) == 1:
        return pieces[0]
    base = pieces[0]
    for p in pieces[1:]:
        same = p.shape[1:] == base.shape[1:] and all(
            np.array_equal(p[c].values, base[c].values) for c in ("y", "x") if c in p.coords and c in base.coords
        )
        if not same:
            raise InputError(
                f"{_source(p)}: expected the grid of {_source(base)} ({' x '.join(map(str, base.shape[1:]))}, same x/y), "
                f"found {' x '.join(map(str, p.shape[1:]))}{'' if p.shape[1:] != base.shape[1:] else ' with other x/y'}"
            )
    latest: dict[int, tuple[int, int]] = {}
    for k, p in enumerate(pieces):
        for i, t in enumerate(times_ns(p)):
            latest[int(t)] = (k, i)  # a later file wins
    order = [latest[t] for t in sorted(latest)]
    frames = [pieces[k].isel(time=[i]) for k, i in order]
    joined = xr.concat(
        frames, dim="time", coords="minimal", compat="override", join="override", combine_attrs="override"
    )
    joined.attrs = dict(pieces[-1].attrs)
    files = list(dict.fromkeys(str(p.attrs.get("source_file", "?")) for p in pieces))
    joined.attrs["source_file"] = files[-1] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} more files)"
    return joined


def _expand(template: str, reference_time: int, stem: str, what: str) -> Path:
    """``template`` with ``{reference_time:...}`` and ``{stem}`` filled in; OutputError if it is malformed."""
    ref = datetime.fromtimestamp(reference_time / NS, tz=timezone.utc).replace(tzinfo=None)
    try:
        text = template.format(reference_time=ref, stem=stem)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
        why = f"unknown field {exc}" if isinstance(exc, (KeyError, IndexError)) else " ".join(str(exc).split())
        raise OutputError(
            f"{what} {template}: expected a path using only {{reference_time:%Y%m%d%H%M}} and {{stem}}, found {why}"
        ) from None
    if not text.strip():
        raise OutputError(f"{what} {template!r}: expected a file path, found an empty one")
    return Path(os.path.expanduser(text))


def _output_path(output: str | Path | None, reference_time: int, first_input: str, inputs: Sequence[str]) -> Path:
    """The forecast's path: ``-o`` expanded (a directory gets the default name), else the default name
    next to the first input. Never one of the input files."""
    stem = Path(first_input).stem
    if output is None:
        path = Path(first_input).parent / _expand(DEFAULT_OUTPUT, reference_time, stem, "default output")
    else:
        path = _expand(str(output), reference_time, stem, "-o")
        if path.is_dir():
            path = path / _expand(DEFAULT_OUTPUT, reference_time, stem, "default output")
    _not_an_input(path, inputs, "-o")
    return path


def _not_an_input(path: Path, inputs: Sequence[str], what: str) -> None:
    for f in inputs:
        try:
            same = path.exists() and os.path.samefile(path, f)
        except OSError:
            same = False
        if same or Path(f).resolve() == path.resolve():
            raise OutputError(f"{what} {path}: expected an output path, found an input file (it is never overwritten)")


def _check_age(newest: int, max_age_min: float, now: datetime | None, src: str) -> None:
    now_dt = now or datetime.now(timezone.utc)
    if now_dt.tzinfo is not None:
        now_dt = now_dt.astimezone(timezone.utc).replace(tzinfo=None)
    now_ns = int(np.datetime64(now_dt, "ns").astype(np.int64))
    age_min = (now_ns - newest) / NS / 60.0
    if age_min > max_age_min:
        raise StaleInputError(
            f"{src}: expected a newest frame at most {max_age_min:g} min old (--max-age), found {iso_time(newest)}, "
            f"{age_min:.1f} min before now ({iso_time(now_ns)})"
        )


def predict_to_file(
    inputs: Sequence[str | Path],
    *,
    model: str | Path | LoadedModel | None = None,
    steps: int | None = None,
    at: str | None = None,
    output: str | Path | None = None,
    plot: str | Path | None = None,
    max_age_min: float | None = None,
    variable: str | None = None,
    lock_timeout_s: float = 60.0,
    history: str | None = None,
    threads: int = 0,
    device: str = "auto",
    packed: bool = True,
    now: datetime | None = None,
    stem_of: str | Path | None = None,
) -> Path:
    """``nowcast predict``: forecast from the latest frames of ``inputs`` and write a CF NetCDF.

    Parameters
    ----------
    inputs
        Radar NetCDF files or glob patterns, one archive (the frames needed may span files).
    model
        Checkpoint; None: the model shipped with nowcast; or a ``LoadedModel`` already in memory
        (``nowcast watch`` loads it once).
    steps, at
        As in ``forecast``: lead times (default as trained) and reference time (default the last frame).
    output
        Output path; may hold ``{reference_time:%Y%m%d%H%M}`` and ``{stem}`` (stem of the first input).
        An existing directory gets the default name. None: ``{stem}_nowcast_{reference_time:%Y%m%d%H%M}.nc``
        next to the first input.
    plot
        Also write this PNG (same templates): the last observed frame and four lead times.
    max_age_min
        Raise StaleInputError when the newest input frame is older than this (minutes) at ``now``.
    variable
        Input variable (default: the checkpoint's, else chosen by standard_name).
    lock_timeout_s
        Seconds to wait for another run writing the same output before raising OutputError.
    history
        The command line, recorded in the file's ``history``.
    threads
        torch CPU threads; 0: ``$OMP_NUM_THREADS`` if set, else the free cores (``runtime.cpu_threads``).
    device
        ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.
    packed
        int16-packed output (as the radar files) rather than float32.
    now
        The current time for ``max_age_min`` (tests); default the clock, UTC.
    stem_of
        The input file whose name fills ``{stem}`` (default: the first input file).

    Returns the path written. Logs exactly one INFO line (reference time, output, wall time).
    The input files are only read. The output is written atomically under ``output_lock``: it is
    the previous complete file or the new complete one at every moment. The input is checked against
    the checkpoint's stored config (read without torch) before torch and the model are loaded, so a
    bad input fails in about a second.
    """
    started = time.perf_counter()
    if isinstance(model, LoadedModel):
        loaded: LoadedModel | None = model
        cfg = model.config
    else:
        ckpt_path = model_path(model)
        stored = read_config(ckpt_path)
        loaded = load_model(ckpt_path) if stored is None else None  # unreadable without torch: its error now
        cfg = stored if stored is not None else loaded.config  # type: ignore[union-attr]
    lead_times(steps, cfg.data.out_frames)  # before any file is read
    if cfg.data.time_step == 0:  # a model for any step: the newest input file's
        step = data_time_step([str(p) for p in inputs], variable or cfg.data.variable, newest=True)
        if step is None:  # no usable file: the archive reader names each one and why
            open_archive([str(p) for p in inputs], time_step=None, variable=variable or cfg.data.variable, scan=False)
            raise InputError(f"{inputs[0]}: expected a radar file whose time step can be read, found none")
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, time_step=step))
        lo, hi = TRAINED_STEPS
        if not lo <= step <= hi:
            log.warning(
                "%s: a step of %d s is outside the %d-%d s the model was trained on; expect less skill",
                inputs[0],
                step,
                lo,
                hi,
            )
    d = cfg.data
    archive = open_archive(
        [str(p) for p in inputs],
        time_step=d.time_step,
        variable=variable or d.variable,
        units=d.units,
        zr_a=d.zr_a,
        zr_b=d.zr_b,
        scan=False,
    )
    newest_seg = max(archive.segments, key=lambda s: int(times_ns(s)[-1]))
    newest = int(times_ns(newest_seg)[-1])
    if max_age_min is not None:
        _check_age(newest, float(max_age_min), now, _source(newest_seg))
    t_ref = newest if at is None else parse_time(at)
    rate = _window(archive.segments, t_ref, d.in_frames, d.time_step)
    # the one check of the input, and its one read, before creating anything or waiting for a lock
    frames, idx = input_frames(rate, cfg, t_ref)
    rate = rate.isel(time=idx)
    named = str(stem_of) if stem_of is not None else archive.files[0]
    out_path = _output_path(output, t_ref, named, archive.files)
    plot_path = None
    if plot is not None:
        plot_path = _expand(str(plot), t_ref, Path(named).stem, "--plot")
        _not_an_input(plot_path, archive.files, "--plot")

    from nowcast.runtime import cpu_threads

    n_cpu = cpu_threads(threads)
    with ThreadPoolExecutor(max_workers=1) as pool:
        # the Lagrangian model's motion needs no torch: it is estimated while torch and the model load
        motion = (
            pool.submit(motion_field, frames, n_cpu) if loaded is None and cfg.model.frame == "lagrangian" else None
        )
        from nowcast.runtime import resolve_precision, select_device, set_threads

        if loaded is None:
            loaded = load_model(ckpt_path)
        dev = select_device(device)
        n_threads = set_threads(n_cpu) if dev.type == "cpu" else threads
        velocity = None if motion is None else motion.result()
    log.debug(
        "model %s (%s, sha256 %s) on %s, %s thread(s)", loaded.path, cfg.model.name, loaded.sha256[:12], dev, n_threads
    )
    with output_lock(out_path, lock_timeout_s):
        remove_stale_temporaries(out_path, min_age_s=0.0)  # under the lock: leftovers of killed runs
        net = loaded.model.to(dev)
        precision = resolve_precision("auto", dev)
        fc = _forecast_frames(frames, t_ref, rate, net, cfg, steps, dev, precision, velocity)
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        title = f"Nowcast of {rate.attrs.get('input_title') or rate.attrs.get('long_name', 'rain rate')}"
        attrs = {
            "title": title,
            "source": f"nowcast {__version__}, model '{cfg.model.name}', checkpoint {loaded.path.name} "
            f"(sha256 {loaded.sha256})",
            "history": f"{stamp} {history or 'nowcast.predict.predict_to_file'}",
            "references": FORECAST_REFERENCES,
            "date_created": stamp,
            "input_files": ", ".join(archive.files),
            "time_step_seconds": np.int32(d.time_step),
            "forecast_reference_time": iso_time(t_ref),
        }
        write_forecast(fc, out_path, global_attrs=attrs, packed=packed)
    if plot_path is not None:
        from nowcast.plots import plot_forecast

        observed = rate.isel(time=-1).copy(data=frames[-1] if "channel" in rate.dims else frames[-1, 0])
        with output_lock(plot_path, lock_timeout_s):
            remove_stale_temporaries(plot_path, min_age_s=0.0)
            plot_forecast(observed, fc, plot_path, model=cfg.model.name)
    elapsed = time.perf_counter() - started
    lead_min = fc.sizes["time"] * d.time_step / 60
    extra = f" and {plot_path}" if plot_path is not None else ""
    log.info("forecast from %s, +%g min: wrote %s%s in %.1f s", iso_time(t_ref), lead_min, out_path, extra, elapsed)
    return out_path

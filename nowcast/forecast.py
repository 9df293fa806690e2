"""The forecast engine: rain-rate frames in, forecast frames out, in memory.

- ``forecast_array``: numpy frames (B, T, C, H, W) in mm/h -> forecast frames; what ``predict``,
  ``watch``, ``evaluate`` and training's validation all call. A Lagrangian model's frames go through
  ``motion.lagrangian`` (the same transform training uses).
- ``input_frames`` / ``select_frames`` / ``check_input``: the checked input of one forecast from a radar
  DataArray (frames, step, channels, gaps, frames without data).
- ``forecast`` / ``forecast_frames``: a forecast DataArray with valid times, lead times, reference time
  and the input's grid.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from nowcast.config import Config, frame_size_problem
from nowcast.errors import InputError
from nowcast.io import NS, STATUS, STATUS_NO_DATA, STATUS_OUTSIDE, iso_time, times_ns
from nowcast.leads import forecast_steps
from nowcast.motion.flow import motion_field
from nowcast.nowcasts.probmatch import match_forecast
from nowcast.transforms import Transform
from nowcast.units import to_dbr

_WARP_VALUES = 1 << 24
"""Pixel values warped at once by ``nodata_status`` (a few lead times of a large grid, all of a small one)."""

if TYPE_CHECKING:  # torch loads with the model, not with this module: input errors are reported first
    import torch

log = logging.getLogger(__name__)


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
    displacement: torch.Tensor | None = None,
) -> np.ndarray:
    """Forecast ``steps`` frames from observed rain rates.

    frames: (B, T_in, C, H, W) mm/h, NaN = no data; ``time_step``: seconds between them (used by
    models with ``step_input``). Returns (B, steps, C, H, W) float32 mm/h, NaN wherever the last input
    frame has no data (and, for a Lagrangian model, where the forecast's source lies outside the data).
    The model runs in inference mode on ``device``. On the CPU the encoder steps through time with one
    fused convolution per step (``batched_input=False``): as fast there, and it does not keep every
    frame's gate pre-activations alive.

    With ``model.probmatching: cdf`` each forecast frame then takes the last frame's distribution
    (``nowcasts.probmatch.match_forecast``); with ``cdf_lagrangian`` it does so before it is advected.

    Lagrangian models (``model.frame``): motion from ``motion.motion_field`` on each sample's input
    frames, or ``velocity`` (B, 2, H, W) px per step when the caller has computed it; input frame
    t_last - j is advected j steps forward into the frame of the last observation, the network
    forecasts there, and its forecast k (in mm/h) is advected k steps forward; ``displacement``
    (B, steps, 2, H, W): ``motion.displacements`` of ``velocity`` when the caller has computed them.
    """
    return forecast_and_centre(
        model, transform, frames, steps, device=device, precision=precision, time_step=time_step,
        velocity=velocity, displacement=displacement, centre=False,
    )[0]  # fmt: skip


def centre_problem(model: torch.nn.Module, transform: Transform) -> str | None:
    """Why ``model`` cannot centre an ensemble on its forecast (``forecast_and_centre``), or None: it
    must add a change to an S-PROG base in the Lagrangian frame, in dBZ, on one channel."""
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        return "expected a nowcast model, found one without its settings"
    wants = {
        "model.frame": (getattr(cfg, "frame", "eulerian"), "lagrangian"),
        "model.residual": (getattr(cfg, "residual", False), True),
        "model.base": (getattr(cfg, "base", "last"), "sprog"),
        "transform.kind": (transform.kind, "dbz"),
        "model.channels": (getattr(cfg, "channels", 1), 1),
    }
    wrong = [f"{k}={found}" for k, (found, want) in wants.items() if found != want]
    if not wrong and not hasattr(model, "head_is_zero"):
        wrong = [f"model.name={getattr(cfg, 'name', '?')} (no residual head)"]
    if wrong:
        return "expected a Lagrangian residual model on an S-PROG base in dBZ on one channel, found " + ", ".join(wrong)
    return None


def forecast_and_centre(
    model: torch.nn.Module,
    transform: Transform,
    frames: np.ndarray,
    steps: int,
    *,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    time_step: float | None = None,
    velocity: np.ndarray | None = None,
    displacement: torch.Tensor | None = None,
    centre: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``forecast_array``'s forecast and, from the same run of the network, that forecast in the frame of
    the last observation before probability matching and advection, in dB of rain rate as
    ``units.to_dbr`` gives it (``DBR_ZERO`` below ``RAIN_THRESHOLD``): (B, steps, H, W) float32.
    None instead when the network adds nothing to its S-PROG base (``head_is_zero``: an ensemble
    is then S-PROG's) or ``centre`` is False. ``nowcasts.ensemble.ensemble_forecast`` centres its members
    on it.

    Raises ValueError when a centre is asked of a model ``centre_problem`` rejects.
    """
    import torch

    from nowcast.motion.lagrangian import from_lagrangian, persistence_frames, to_lagrangian
    from nowcast.runtime import autocast

    device = torch.device(device)
    cfg = getattr(model, "cfg", None)
    problem = frame_size_problem(cfg, frames.shape) if cfg is not None else None
    if problem:
        raise InputError(f"input frames: {problem}")
    if centre and (problem := centre_problem(model, transform)):
        raise ValueError(f"model: {problem}")
    lagrangian = getattr(cfg, "frame", "eulerian") == "lagrangian"
    transform.note_capped(frames)
    x = transform.forward(frames, check=False)  # (B, T, C, H, W) model space, NaN = no data
    extra: dict[str, torch.Tensor] = {}
    in_dbr = None
    with torch.inference_mode():
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
        if lagrangian:
            if velocity is None:
                velocity = np.stack([motion_field(f) for f in frames])
            velocity = torch.from_numpy(np.asarray(velocity, dtype=np.float32)).to(device)  # (B, 2, H, W)
            if getattr(cfg, "persistence_input", False):  # the same frames training gives the network
                history = getattr(cfg, "persistence_history", 1)
                extra["persistence"] = torch.nan_to_num(
                    persistence_frames(xt, velocity, steps, history=history), nan=0.0
                )
            xt = to_lagrangian(xt, velocity, displacement=None if displacement is None else displacement.to(device))
        xt = torch.nan_to_num(xt, nan=0.0)
        with autocast(device, precision):
            out = model(xt, steps, time_step, batched_input=device.type != "cpu", **extra)
        pred = torch.from_numpy(transform.inverse(out.float().cpu().numpy()))  # (B, steps, C, H, W)
        if centre and not model.head_is_zero():  # the network's forecast before matching, finite, in dBR
            in_dbr = to_dbr(pred[:, :, 0].numpy()).astype(np.float32)
        if lagrangian:  # no data where the last frame has none, then carried along with the rain
            last_ok = torch.from_numpy(np.isfinite(frames[:, -1:]))  # (B, 1, C, H, W)
            pred = torch.where(last_ok, pred, torch.full((), float("nan")))
            if getattr(cfg, "probmatching", "none") == "cdf_lagrangian":  # same pixels as the last frame here
                pred = torch.from_numpy(match_forecast(pred.numpy(), frames[:, -1]))
            pred = from_lagrangian(pred, velocity.cpu(), displacement)
    nodata = ~np.isfinite(frames[:, -1:])  # (B, 1, C, H, W)
    pred_np = np.where(nodata, np.float32(np.nan), pred.numpy()).astype(np.float32)
    if getattr(cfg, "probmatching", "none") == "cdf":
        pred_np = match_forecast(pred_np, frames[:, -1])
    return pred_np, in_dbr


def nodata_status(
    last: np.ndarray, steps: int, velocity: np.ndarray | None = None, displacement: torch.Tensor | None = None
) -> np.ndarray:
    """Why forecast pixels have no value: (steps, C, H, W) int8 of ``io.STATUS_FLAGS``.

    ``last``: the last observed frame (C, H, W) mm/h, NaN = no data. ``velocity``: the motion (2, H, W)
    in px per step of a Lagrangian forecast, None for an Eulerian one. A pixel is ``STATUS_NO_DATA`` where
    ``last`` has no data there or (Lagrangian) where the rain arriving there after k steps comes from a
    pixel without data; ``STATUS_OUTSIDE`` where it comes from outside the grid (not observed); else
    ``STATUS_FORECAST``. The same advection as ``forecast_array``'s, so a forecast is NaN exactly where
    this is not ``STATUS_FORECAST``; ``displacement`` (steps, 2, H, W): its trajectories, if computed.
    """
    nodata = ~np.isfinite(last)  # (C, H, W)
    status = np.zeros((steps, *last.shape), dtype=np.int8)
    if velocity is not None:
        import torch

        from nowcast.motion.advection import displacements, outside, warp

        if displacement is None:
            displacement = displacements(torch.from_numpy(np.asarray(velocity, np.float32))[None], steps)[0]
        disp = displacement  # (steps, 2, H, W)
        if nodata.any():  # rain arriving from pixels without data: every lead time in one batched warp
            probe = torch.from_numpy(np.where(nodata, np.float32(np.nan), np.float32(0.0))[None])  # (1, C, H, W)
            chunk = max(1, _WARP_VALUES // probe.numel())  # lead times per warp: memory bounded on large grids
            for k in range(0, steps, chunk):
                part = disp[k : k + chunk]
                reached = warp(probe.expand(part.shape[0], *probe.shape[1:]), part).numpy()  # (chunk, C, H, W)
                status[k : k + chunk][np.isnan(reached)] = STATUS_NO_DATA
        status[np.broadcast_to(outside(disp).numpy()[:, None], status.shape)] = STATUS_OUTSIDE
    status[:, nodata] = STATUS_NO_DATA
    return status


def counts_frames(rate: xr.DataArray, config: Config) -> bool:
    """Whether the forecast horizon of ``rate`` is a number of frames rather than a duration: frame-numbered
    input (no dates), or a model of values that are not rain (``transform.kind: minmax``)."""
    return bool(rate.attrs.get("frame_numbers")) or config.transform.kind == "minmax"


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


def source_name(rate: xr.DataArray) -> str:
    """The file a radar DataArray came from, for messages."""
    return str(rate.attrs.get("source_file") or rate.name or "input")


def select_frames(rate: xr.DataArray, in_frames: int, time_step: int, at: int | None = None) -> np.ndarray:
    """Indices along ``time`` of the ``in_frames`` frames ``time_step`` seconds apart ending at ``at``
    (ns since 1970; None: the last frame).

    Raises InputError naming what was needed and what was found: no frame at ``at``, too few frames
    before it, a gap among them, or a frame among them without any data.
    """
    src = source_name(rate)
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
            f"{source_name(rate)}: expected data in each of the {len(idx)} input frames ({time_step} s apart up to "
            f"{iso_time(t[-1])}), found {n_empty} frame(s) with no data at all: {listed}"
        )
    return frames


def check_input(rate: xr.DataArray, config: Config) -> None:
    """Raise InputError unless ``rate`` fits the model of ``config``: dims, channel count, time step."""
    src = source_name(rate)
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
        Lead times to forecast; more or fewer than trained is fine. None: the next hour
        (``leads.forecast_steps``; ``config.data.out_frames`` for frame-numbered input or a minmax model).
    at
        Reference time (ISO text, datetime64, datetime, or ns since 1970 UTC); None: the last frame.

    Returns
    -------
    xr.DataArray
        float32 mm/h, dims as ``rate``, NaN where the reference frame has no data, the full frame
        (any size). Coordinates: ``time`` (valid times), ``forecast_period(time)`` (timedelta64),
        scalar ``forecast_reference_time``, the input's grid coordinates and grid mapping, and
        ``io.STATUS`` (dims as the data, int8): why a pixel has no value (``nodata_status``).
        ``attrs``: those of ``rate`` (variable, standard_name, long_name, units, grid_mapping, ...).

    Raises
    ------
    InputError
        Wrong channel count for the model, a step other than the model's, no frame at ``at``, too few
        frames, a gap, or a needed frame without any data.
    """
    frames, idx = input_frames(rate, config, at)
    return forecast_frames(frames, int(times_ns(rate)[idx[-1]]), rate, model, config, steps, device, precision)


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


def forecast_coords(t_ref: int, steps: int, time_step: int, like: xr.DataArray) -> dict[str, object]:
    """Coordinates of a forecast of ``steps`` lead times ``time_step`` s apart from ``t_ref`` (ns since
    1970): valid ``time``, ``forecast_period``, scalar ``forecast_reference_time``, and ``like``'s
    coordinates that do not depend on time (the grid, its grid mapping)."""
    lead = np.arange(1, steps + 1, dtype=np.int64) * int(time_step)
    coords: dict[str, object] = {
        "time": ("time", (t_ref + lead * NS).astype("datetime64[ns]"), {"standard_name": "time", "axis": "T"}),
        "forecast_period": (
            "time",
            lead.astype("timedelta64[s]").astype("timedelta64[ns]"),
            {"standard_name": "forecast_period"},
        ),
        "forecast_reference_time": ((), np.datetime64(t_ref, "ns"), {"standard_name": "forecast_reference_time"}),
    }
    for name, coord in like.coords.items():
        if "time" not in coord.dims and name not in coords:
            coords[str(name)] = coord.variable
    return coords


def forecast_frames(
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
    grid coordinates, name and attrs as ``like``; ``velocity`` (2, H, W): their motion, if known;
    ``steps`` None: ``leads.forecast_steps``' default."""
    d = config.data
    rate = like
    steps = forecast_steps(steps, None, d.time_step, d.out_frames, in_frames_only=counts_frames(like, config))
    started = time.perf_counter()
    disp = None
    if config.model.frame == "lagrangian":  # trajectories once, for the forecast and its status
        import torch

        from nowcast.motion.advection import displacements

        velocity = motion_field(frames) if velocity is None else velocity
        disp = displacements(torch.from_numpy(np.asarray(velocity, np.float32))[None], steps)  # (1, steps, 2, H, W)
    out = forecast_array(
        model,
        Transform.from_config(config),
        frames[None],
        steps,
        device=device,
        precision=precision,
        time_step=d.time_step,
        velocity=None if velocity is None else velocity[None],
        displacement=disp,
    )
    status = nodata_status(frames[-1], steps, velocity, None if disp is None else disp[0])  # (steps, C, H, W)
    log.debug(
        "model forward: %d x %s frames -> %d steps in %.2f s",
        frames.shape[0],
        "x".join(map(str, frames.shape[1:])),
        steps,
        time.perf_counter() - started,
    )
    out = out[0] if "channel" in rate.dims else out[0, :, 0]  # (steps, [C,] H, W)
    status = status if "channel" in rate.dims else status[:, 0]

    coords = forecast_coords(t_ref, steps, d.time_step, rate)
    coords[STATUS] = (rate.dims, status)
    result = xr.DataArray(out, dims=rate.dims, coords=coords, name=rate.name, attrs=dict(rate.attrs))
    result.attrs["time_step"] = d.time_step
    return result

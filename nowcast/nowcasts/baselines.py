"""Reference forecasts that the model must beat: persistence, optical-flow extrapolation and S-PROG.

Every method has the same signature, ``method(frames, steps) -> forecast``, and is found by name with
``get_method`` (as in pySTEPS), so adding a method is adding one function to ``_METHODS``.

- ``frames``: observed rain rates in mm/h, shape (T_in, H, W) or (T_in, C, H, W), oldest first,
  consecutive frames one time step apart; NaN = no data.
- returns: ``steps`` forecast frames, shape (steps, H, W) or (steps, C, H, W), float32 mm/h. As for the
  model, the forecast is NaN wherever the last observed frame has no data.

``extrapolation`` and ``sprog`` take their motion from ``motion.motion_field`` (pySTEPS Lucas-Kanade),
the same function the Lagrangian model uses, and run pySTEPS' own advection and S-PROG: they are the
references the torch cascade (``nowcasts.cascade``) and the model are checked against.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from types import SimpleNamespace
from typing import Callable

import numpy as np

from nowcast.errors import NowcastError
from nowcast.motion.flow import motion_field
from nowcast.nowcasts import NOISE_ADJUSTMENTS, SPROG_AR_ORDER, SPROG_LEVELS
from nowcast.units import DBR_ZERO, RAIN_THRESHOLD, dbr_to_rate, to_dbr

log = logging.getLogger(__name__)

Method = Callable[[np.ndarray, int], np.ndarray]
"""``method(frames (T_in, [C,] H, W) mm/h, steps) -> (steps, [C,] H, W) float32 mm/h``."""


def pysteps_methods() -> SimpleNamespace:
    """pySTEPS' semi-Lagrangian extrapolation and S-PROG, imported on first use (pySTEPS prints a
    banner on import; it is swallowed here)."""
    with contextlib.redirect_stdout(io.StringIO()):
        from pysteps import extrapolation as ps_extrapolation
        from pysteps import nowcasts as ps_nowcasts
    return SimpleNamespace(
        advect=ps_extrapolation.get_method("semilagrangian"),
        sprog=ps_nowcasts.get_method("sprog"),
        steps=ps_nowcasts.get_method("steps"),
    )


def _as_frames(frames: np.ndarray, steps: int) -> tuple[np.ndarray, bool]:
    """``frames`` as float32 (T, C, H, W) and whether the input had no channel axis; checks ``steps``."""
    x = np.asarray(frames, dtype=np.float32)
    if x.ndim not in (3, 4) or x.shape[0] < 1:
        raise ValueError(f"frames: expected shape (T_in, H, W) or (T_in, C, H, W), found {x.shape}")
    if int(steps) < 1:
        raise ValueError(f"steps: expected a positive number of lead times, found {steps}")
    return (x[:, None], True) if x.ndim == 3 else (x, False)


def persistence(frames: np.ndarray, steps: int) -> np.ndarray:
    """The last observed frame, repeated for every lead time (NaN where it has no data)."""
    x, squeeze = _as_frames(frames, steps)
    out = np.repeat(x[-1:], int(steps), axis=0)  # (steps, C, H, W)
    return out[:, 0] if squeeze else out


def extrapolation(frames: np.ndarray, steps: int) -> np.ndarray:
    """Lucas-Kanade motion of the last frames, then semi-Lagrangian advection of the last frame.

    Motion: ``motion.motion_field`` (pySTEPS LK on the last frames in dBR; with several channels, of
    their mean), in pixels per time step. Advection: ``pysteps.extrapolation.get_method("semilagrangian")``
    of the last frame's rain rates (mm/h, each channel along the same motion), bilinear, to every lead
    time 1..``steps``. Values are advected in mm/h, not dBR, so that a displacement of whole pixels
    reproduces the observed values exactly.

    No data: a pixel whose value comes from outside the domain or from a no-data pixel (bilinear
    interpolation touching one) is NaN, and so is every pixel where the last frame has no data.
    """
    x, squeeze = _as_frames(frames, steps)
    steps = int(steps)
    if x.shape[0] < 2:
        raise ValueError(f"frames: extrapolation needs at least 2 frames to estimate motion, found {x.shape[0]}")
    ps = pysteps_methods()
    last = x[-1]  # (C, H, W)
    out = np.full((steps, *last.shape), np.nan, dtype=np.float32)
    if not np.isfinite(last).any():
        return out[:, 0] if squeeze else out
    velocity = motion_field(x)  # (2, H, W)
    for c in range(last.shape[0]):
        if np.isfinite(last[c]).any():
            out[:, c] = ps.advect(
                last[c].astype(np.float64), velocity, steps, outval=np.nan, allow_nonfinite_values=True
            )  # (steps, H, W)
    out[:, ~np.isfinite(last)] = np.nan
    return out[:, 0] if squeeze else out


def sprog(frames: np.ndarray, steps: int, velocity: np.ndarray | None = None) -> np.ndarray:
    """pySTEPS S-PROG (Seed 2003): the deterministic cascade nowcast, the classical anchor.

    The last ``SPROG_AR_ORDER + 1`` frames in dBR (``units.to_dbr``: -15 dBR where dry or no data) are
    decomposed into ``SPROG_LEVELS`` cascade levels (FFT, Gaussian band-pass filters); each level is
    advected along ``motion.motion_field`` and damped by its AR(2) model, so small scales fade as lead
    time grows; pySTEPS matches the forecast's distribution to the last frame's (``cdf``). Rain-rate
    threshold 0.1 mm/h (-10 dBR). Back in mm/h, below 0.1 mm/h is 0. Multi-channel input: each channel
    along the motion of their mean. ``velocity``: (2, H, W) pixels per step to advect along instead of
    ``motion_field``'s (``scripts/research/skill_ceiling.py`` gives it the motion of the observed hour).

    No data: NaN where the extrapolation of the last frame is NaN (source outside the domain or no
    data), as for ``extrapolation``. Dry input gives a dry forecast.
    """
    x, squeeze = _as_frames(frames, steps)
    steps = int(steps)
    if x.shape[0] < SPROG_AR_ORDER + 1:
        raise ValueError(f"frames: S-PROG needs at least {SPROG_AR_ORDER + 1} frames, found {x.shape[0]}")
    last = x[-1]
    out = np.full((steps, *last.shape), np.nan, dtype=np.float32)
    if not np.isfinite(last).any():
        return out[:, 0] if squeeze else out
    velocity = motion_field(x) if velocity is None else velocity
    for c in range(last.shape[0]):
        out[:, c] = dbr_to_rate(sprog_dbr(x[:, c], steps, velocity))
    out[:, ~np.isfinite(last)] = np.nan
    return out[:, 0] if squeeze else out


def sprog_dbr(frames: np.ndarray, steps: int, velocity: np.ndarray) -> np.ndarray:
    """``sprog``'s forecast of one channel in dBR, before the 0.1 mm/h threshold: (steps, H, W) float64.

    frames: (T_in, H, W) mm/h, NaN = no data; velocity: (2, H, W) pixels per step. NaN where the
    extrapolation of the last frame has no data; -15 dBR everywhere when the last frame is dry.
    """
    x = np.asarray(frames, dtype=np.float32)
    need = SPROG_AR_ORDER + 1
    if x.shape[0] < need:
        raise ValueError(f"frames: S-PROG needs at least {need} frames, found {x.shape[0]}")
    ps = pysteps_methods()
    thr = 10.0 * np.log10(RAIN_THRESHOLD)
    dbr = to_dbr(x[-need:])  # (need, H, W), DBR_ZERO where dry or no data
    if not (dbr[-1] >= thr).any():
        fc = np.full((int(steps), *x.shape[1:]), DBR_ZERO, dtype=np.float64)
    else:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # pySTEPS prints its settings
            warnings.simplefilter("ignore", RuntimeWarning)
            fc = ps.sprog(
                dbr, velocity, int(steps), precip_thr=thr, n_cascade_levels=SPROG_LEVELS, ar_order=SPROG_AR_ORDER
            )
        fc = np.asarray(fc, dtype=np.float64)
    reach = ps.advect(
        np.where(np.isfinite(x[-1]), 0.0, np.nan), velocity, int(steps), outval=np.nan, allow_nonfinite_values=True
    )  # NaN where the extrapolation has no data
    fc[~np.isfinite(reach)] = np.nan
    return fc


def steps_ensemble(
    frames: np.ndarray,
    steps: int,
    members: int,
    seed: int,
    velocity: np.ndarray | None = None,
    bps: tuple[float | None, float | None] | None = None,
    noise_adjustment: str = "none",
) -> np.ndarray:
    """pySTEPS STEPS (Bowler et al. 2006, Seed et al. 2013): the ensemble reference, seeded.

    frames: (T_in >= 3, H, W) mm/h, NaN = no data; velocity: (2, H, W) px per step (default
    ``motion.motion_field``). pySTEPS' own ``nowcasts.steps`` on the last frames in dBR (as ``sprog``),
    ``SPROG_LEVELS`` levels, AR(2), nonparametric noise, ``cdf`` probability matching, and, like
    ``nowcasts.ensemble``, neither motion perturbations nor a precipitation mask (pySTEPS' defaults
    ``bps`` and ``incremental`` need the pixel size and time step, which frames alone do not carry);
    ``bps``: (km per pixel, minutes per step) to run pySTEPS' ``bps`` motion perturbations with its
    default parameters; ``noise_adjustment``: pySTEPS' ``noise_stddev_adj``, ``none`` (its default,
    None), ``auto`` or ``fixed`` (``nowcasts.NOISE_ADJUSTMENTS``).
    Returns (members, steps, H, W) float32 mm/h, 0 below 0.1 mm/h, NaN where the extrapolation of the
    last frame has no data; a dry last frame gives dry members.
    """
    x = np.asarray(frames, dtype=np.float32)
    need = SPROG_AR_ORDER + 1
    if x.ndim != 3 or x.shape[0] < need:
        raise ValueError(f"frames: STEPS needs (T_in >= {need}, H, W), found {x.shape}")
    steps, members = int(steps), int(members)
    if noise_adjustment not in NOISE_ADJUSTMENTS:  # pySTEPS has no gain: a number is ours only
        raise ValueError(
            f"noise_adjustment: the steps baseline (pySTEPS) takes one of {', '.join(NOISE_ADJUSTMENTS)}, "
            f"found {noise_adjustment!r}"
        )
    ps = pysteps_methods()
    velocity = motion_field(x) if velocity is None else velocity
    thr = 10.0 * np.log10(RAIN_THRESHOLD)
    dbr = to_dbr(x[-need:])
    if not (dbr[-1] >= thr).any():
        fc = np.full((members, steps, *x.shape[1:]), DBR_ZERO)
    else:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # pySTEPS prints its settings
            warnings.simplefilter("ignore", RuntimeWarning)
            fc = ps.steps(
                dbr,
                velocity,
                steps,
                n_ens_members=members,
                n_cascade_levels=SPROG_LEVELS,
                ar_order=SPROG_AR_ORDER,
                precip_thr=thr,
                noise_method="nonparametric",
                vel_pert_method=None if bps is None else "bps",
                kmperpixel=None if bps is None else bps[0],
                timestep=None if bps is None else bps[1],
                mask_method=None,
                noise_stddev_adj=None if noise_adjustment == "none" else noise_adjustment,
                probmatching_method="cdf",
                seed=int(seed),
                num_workers=1,
            )
    reach = ps.advect(
        np.where(np.isfinite(x[-1]), 0.0, np.nan), velocity, steps, outval=np.nan, allow_nonfinite_values=True
    )  # (steps, H, W), NaN where the extrapolation has no data
    out = dbr_to_rate(np.asarray(fc, dtype=np.float64))
    out[:, ~np.isfinite(reach)] = np.nan
    return out


_METHODS: dict[str, Method] = {"persistence": persistence, "extrapolation": extrapolation, "sprog": sprog}


def get_method(name: str) -> Method:
    """The baseline called ``name`` (persistence, extrapolation or sprog).

    Raises
    ------
    NowcastError
        If there is no such baseline (the message lists the valid names).
    """
    key = str(name).strip().lower()
    if key not in _METHODS:
        raise NowcastError(f"baseline '{name}': expected one of {', '.join(_METHODS)}, found no such method")
    return _METHODS[key]


__all__ = [
    "Method",
    "extrapolation",
    "get_method",
    "persistence",
    "pysteps_methods",
    "sprog",
    "sprog_dbr",
    "steps_ensemble",
]

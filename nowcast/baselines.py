"""Reference forecasts that the model must beat: persistence and optical-flow extrapolation.

Every method has the same signature, ``method(frames, steps) -> forecast``, and is found by name with
``get_method`` (as in pySTEPS), so adding a method is adding one function to ``_METHODS``.

- ``frames``: observed rain rates in mm/h, shape (T_in, H, W) or (T_in, C, H, W), oldest first,
  consecutive frames one time step apart; NaN = no data.
- returns: ``steps`` forecast frames, shape (steps, H, W) or (steps, C, H, W), float32 mm/h. As for the
  model, the forecast is NaN wherever the last observed frame has no data.

``extrapolation`` needs the optional ``baselines`` extra (pysteps and opencv-python-headless); asking
for it without them raises ``MissingDependencyError`` with the install command.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from types import SimpleNamespace
from typing import Callable

import numpy as np

from nowcast.errors import MissingDependencyError, NowcastError

log = logging.getLogger(__name__)

Method = Callable[[np.ndarray, int], np.ndarray]
"""``method(frames (T_in, [C,] H, W) mm/h, steps) -> (steps, [C,] H, W) float32 mm/h``."""

MOTION_FRAMES = 3
"""Frames the extrapolation's motion field is estimated from (the last ones), as in pySTEPS' examples."""
DBR_THRESHOLD = 0.1
"""Rain rate (mm/h) below which a pixel counts as dry for motion estimation."""
DBR_ZERO = -15.0
"""dBR given to dry and no-data pixels for motion estimation (pySTEPS examples: ``zerovalue=-15``)."""

_INSTALL_HINT = 'pip install "nowcast[baselines]"'


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


def _pysteps() -> SimpleNamespace:
    """pySTEPS' Lucas-Kanade motion and semi-Lagrangian extrapolation, or MissingDependencyError.

    pySTEPS prints a banner on import; it is swallowed here. OpenCV is imported too, because pySTEPS
    only complains about a missing ``cv2`` when the motion is first computed.
    """
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import cv2  # noqa: F401  (needed by pysteps' Lucas-Kanade)
            from pysteps import extrapolation as ps_extrapolation
            from pysteps import motion as ps_motion
    except ImportError as exc:
        raise MissingDependencyError(
            f"baseline 'extrapolation': expected pysteps and opencv-python-headless, found "
            f"{exc.name or 'a package'} missing ({' '.join(str(exc).split())}); install them with: {_INSTALL_HINT}"
        ) from None
    return SimpleNamespace(lk=ps_motion.get_method("LK"), advect=ps_extrapolation.get_method("semilagrangian"))


def to_dbr(rate: np.ndarray) -> np.ndarray:
    """10 log10(R) (dBR) of rain rates, ``DBR_ZERO`` below ``DBR_THRESHOLD`` mm/h and where there is no data.

    The same as ``pysteps.utils.transformation.dB_transform(R, threshold=0.1, zerovalue=-15)`` followed
    by filling no-data with the zero value, as pySTEPS' examples do before Lucas-Kanade (which needs
    finite values).
    """
    r = np.asarray(rate, dtype=np.float64)
    wet = np.isfinite(r) & (r >= DBR_THRESHOLD)
    out = np.full(r.shape, DBR_ZERO)
    out[wet] = 10.0 * np.log10(r[wet])
    return out


def extrapolation(frames: np.ndarray, steps: int) -> np.ndarray:
    """Lucas-Kanade motion of the last frames, then semi-Lagrangian advection of the last frame.

    Motion: ``pysteps.motion.get_method("LK")`` on the last ``MOTION_FRAMES`` frames in dBR (``to_dbr``;
    with several channels, of their mean), in pixels per time step; no features to track gives zero
    motion. Advection: ``pysteps.extrapolation.get_method("semilagrangian")`` of the last frame's rain
    rates (mm/h, each channel along the same motion), bilinear, to every lead time 1..``steps``. Values
    are advected in mm/h, not dBR, so that a displacement of whole pixels reproduces the observed
    values exactly (no round trip through the logarithm at a threshold).

    No data: a pixel whose value comes from outside the domain or from a no-data pixel (bilinear
    interpolation touching one) is NaN, and so is every pixel where the last frame has no data.
    """
    x, squeeze = _as_frames(frames, steps)
    steps = int(steps)
    if x.shape[0] < 2:
        raise ValueError(f"frames: extrapolation needs at least 2 frames to estimate motion, found {x.shape[0]}")
    ps = _pysteps()
    last = x[-1]  # (C, H, W)
    out = np.full((steps, *last.shape), np.nan, dtype=np.float32)
    if not np.isfinite(last).any():
        return out[:, 0] if squeeze else out
    recent = x[-MOTION_FRAMES:]  # (M, C, H, W)
    rate = recent[:, 0] if recent.shape[1] == 1 else recent.mean(axis=1)  # (M, H, W); NaN if any channel is
    with warnings.catch_warnings():  # few tracked features: numpy/pysteps warn in the outlier test; harmless
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        velocity = ps.lk(to_dbr(rate))  # (2, H, W): x and y components, pixels per step
    for c in range(last.shape[0]):
        if np.isfinite(last[c]).any():
            advected = ps.advect(
                last[c].astype(np.float64), velocity, steps, outval=np.nan, allow_nonfinite_values=True
            )  # (steps, H, W)
            out[:, c] = advected
    out[:, ~np.isfinite(last)] = np.nan
    return out[:, 0] if squeeze else out


_METHODS: dict[str, Method] = {"persistence": persistence, "extrapolation": extrapolation}
_REQUIRES: dict[str, Callable[[], object]] = {"extrapolation": _pysteps}
"""Per method, a check of its optional dependencies (raises MissingDependencyError)."""


def names() -> tuple[str, ...]:
    """Names of every baseline, whether or not its optional dependencies are installed."""
    return tuple(_METHODS)


def get_method(name: str) -> Method:
    """The baseline called ``name`` (see ``names()``).

    Raises
    ------
    NowcastError
        If there is no such baseline (the message lists the valid names).
    MissingDependencyError
        If the baseline needs an optional package that is not installed (the message says how to
        install it).
    """
    key = str(name).strip().lower()
    if key not in _METHODS:
        raise NowcastError(f"baseline '{name}': expected one of {', '.join(_METHODS)}, found no such method")
    if key in _REQUIRES:
        _REQUIRES[key]()
    return _METHODS[key]


__all__ = ["MOTION_FRAMES", "Method", "extrapolation", "get_method", "names", "persistence", "to_dbr"]

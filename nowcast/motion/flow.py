"""Optical-flow motion: the one motion estimate of the project.

``motion_field``: pySTEPS' dense Lucas-Kanade (``nowcast.motion.lucaskanade``, a port that equals it to
~1e-14 px without importing pySTEPS) on the last ``MOTION_FRAMES`` frames in dBR, in pixels per time
step of the data, as a (2, H, W) field (component 0 along x, columns; 1 along y, rows). Extrapolation,
S-PROG, the ensemble and the Lagrangian model all use it.
"""

from __future__ import annotations

import hashlib
import sys
import warnings

import numpy as np

from nowcast.units import to_dbr

MOTION_FRAMES = 3
"""Frames the motion field is estimated from (the last ones), as in pySTEPS' examples."""


def motion_field(frames: np.ndarray, workers: int | None = None) -> np.ndarray:
    """Lucas-Kanade motion of the last ``MOTION_FRAMES`` frames, (2, H, W) float32 pixels per step.

    frames: (T, H, W) or (T, C, H, W) rain rates in mm/h, oldest first, one time step apart, NaN = no
    data; with several channels their mean is tracked. At least 2 frames. No feature to track (dry
    frames) gives zero motion. ``workers``: CPU threads (default: torch's thread count once torch is
    loaded, else the CPUs this process may use). Needs no torch, so ``predict`` computes it while
    torch loads.
    """
    x = np.asarray(frames, dtype=np.float32)
    if x.ndim == 4:
        x = x[:, 0] if x.shape[1] == 1 else x.mean(axis=1)
    if x.ndim != 3 or x.shape[0] < 2:
        raise ValueError(f"frames: expected (T >= 2, [C,] H, W) to estimate motion, found {np.shape(frames)}")
    recent = np.ascontiguousarray(x[-MOTION_FRAMES:])
    key = (recent.shape, hashlib.blake2b(recent.tobytes(), digest_size=16).hexdigest())
    if key in _RECENT_MOTION:  # the same frames again (evaluate: the model, then each baseline)
        return _RECENT_MOTION[key].copy()
    from nowcast.motion.lucaskanade import dense_lucaskanade

    with warnings.catch_warnings():  # few tracked features: numpy warns in the outlier test; harmless
        warnings.simplefilter("ignore", RuntimeWarning)
        velocity = dense_lucaskanade(to_dbr(recent), workers=workers or _torch_threads())
    velocity = np.nan_to_num(np.asarray(velocity, dtype=np.float32), nan=0.0)
    _RECENT_MOTION[key] = velocity
    while len(_RECENT_MOTION) > _MOTION_CACHE_SIZE:
        _RECENT_MOTION.pop(next(iter(_RECENT_MOTION)))
    return velocity.copy()


def _torch_threads() -> int | None:
    """torch's CPU thread count when torch is already loaded (never loads it); else None."""
    torch_module = sys.modules.get("torch")
    return torch_module.get_num_threads() if torch_module is not None else None


_MOTION_CACHE_SIZE = 16
_RECENT_MOTION: dict[tuple, np.ndarray] = {}
"""Motion of the last ``_MOTION_CACHE_SIZE`` frame sets, by (shape, hash of the frames): in ``evaluate``
the model (a batch of cases) and then each baseline ask for the motion of the same frames, and
Lucas-Kanade costs about half a second on a 512 x 512 grid."""


def clear_motion_cache() -> None:
    """Forget the motion of recent frame sets (benchmarks time Lucas-Kanade itself)."""
    _RECENT_MOTION.clear()

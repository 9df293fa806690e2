"""Optical-flow motion and semi-Lagrangian advection, shared by the baselines and the Lagrangian model.

- ``motion_field``: pySTEPS' dense Lucas-Kanade (``nowcast.lucaskanade``, a port that equals it to
  ~1e-14 px without importing pySTEPS) on the last ``MOTION_FRAMES`` frames in dBR, in pixels per time
  step of the data. The one motion estimate of the project: extrapolation, S-PROG and the Lagrangian
  model all use it.
- ``displacements`` / ``warp`` / ``advect``: backward semi-Lagrangian advection in torch
  (``grid_sample``), batched, on any device. The trajectory ending at each pixel is integrated step by
  step exactly as ``pysteps.extrapolation.semilagrangian`` does with its defaults (one midpoint
  iteration per step, bilinear motion interpolation clamped at the edges, bilinear interpolation of
  the field); ``tests/test_motion.py`` holds it to pySTEPS on real radar frames.

Conventions (pySTEPS'): a velocity field is (2, H, W) or (B, 2, H, W) with component 0 along x
(columns, to the right) and 1 along y (rows, down), in pixels per step. A displacement is where the
value at a pixel comes from, relative to the pixel: ``field_k(x) = field_0(x + D_k(x))``.

No data: a warped pixel is NaN when its source lies outside the grid or bilinear interpolation gives
weight to a no-data pixel.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import sys
import warnings
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np

from nowcast.errors import MissingDependencyError

if TYPE_CHECKING:
    import torch
    from torch import Tensor

MOTION_FRAMES = 3
"""Frames the motion field is estimated from (the last ones), as in pySTEPS' examples."""
DBR_THRESHOLD = 0.1
"""Rain rate (mm/h) below which a pixel counts as dry for motion estimation."""
DBR_ZERO = -15.0
"""dBR given to dry and no-data pixels for motion estimation (pySTEPS examples: ``zerovalue=-15``)."""

_INSTALL_HINT = "pip install pysteps opencv-python-headless"


def pysteps_methods() -> SimpleNamespace:
    """pySTEPS' semi-Lagrangian extrapolation and S-PROG (the baselines), or MissingDependencyError.

    pySTEPS prints a banner on import; it is swallowed here. OpenCV is imported too: the motion the
    baselines advect along needs it.
    """
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import cv2  # noqa: F401  (needed by the Lucas-Kanade motion)
            from pysteps import extrapolation as ps_extrapolation
            from pysteps import nowcasts as ps_nowcasts
    except ImportError as exc:
        raise MissingDependencyError(
            f"optical flow: expected pysteps and opencv-python-headless, found "
            f"{exc.name or 'a package'} missing ({' '.join(str(exc).split())}); install them with: {_INSTALL_HINT}"
        ) from None
    return SimpleNamespace(
        advect=ps_extrapolation.get_method("semilagrangian"),
        sprog=ps_nowcasts.get_method("sprog"),
    )


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
    try:
        import cv2  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"optical flow: expected opencv-python-headless, found it missing ({' '.join(str(exc).split())}); "
            "install it with: pip install opencv-python-headless"
        ) from None
    from nowcast.lucaskanade import dense_lucaskanade

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


def _pixel_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(1, 2, H, W): x (column) and y (row) index of every pixel."""
    import torch

    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype), indexing="ij"
    )
    return torch.stack([xs, ys])[None]


def _normalised(coords: Tensor) -> Tensor:
    """Absolute pixel coordinates (B, 2, H, W) -> ``grid_sample`` grid (B, H, W, 2) with align_corners."""
    import torch

    h, w = coords.shape[-2:]
    gx = coords[:, 0] * (2.0 / max(w - 1, 1)) - 1.0
    gy = coords[:, 1] * (2.0 / max(h - 1, 1)) - 1.0
    return torch.stack([gx, gy], dim=-1)


def _sample_clamped(field: Tensor, coords: Tensor) -> Tensor:
    """Bilinear samples of ``field`` (B, N, H, W) at ``coords`` (B, 2, H, W), clamped at the edges."""
    import torch.nn.functional as F

    return F.grid_sample(field, _normalised(coords), mode="bilinear", padding_mode="border", align_corners=True)


def displacements(velocity: Tensor, steps: int) -> Tensor:
    """Backward trajectories of ``steps`` time steps along a constant motion field.

    velocity: (B, 2, H, W) pixels per step. Returns (B, steps, 2, H, W): for lead k, the offset from each
    pixel to where the value found there after k steps comes from. Midpoint integration, one iteration
    per step, as ``pysteps.extrapolation.semilagrangian.extrapolate`` with ``n_iter=1``.
    """
    import torch

    if velocity.dim() != 4 or velocity.shape[1] != 2:
        raise ValueError(f"velocity: expected (B, 2, H, W), found {tuple(velocity.shape)}")
    base = _pixel_grid(*velocity.shape[-2:], velocity.device, velocity.dtype)
    disp = torch.zeros_like(velocity)
    inc = velocity
    out = []
    for _ in range(int(steps)):
        inc = _sample_clamped(velocity, base + disp - inc / 2.0)
        disp = disp - inc
        inc = _sample_clamped(velocity, base + disp)
        out.append(disp)
    return torch.stack(out, 1) if out else velocity.new_zeros((velocity.shape[0], 0, *velocity.shape[1:]))


def warp(field: Tensor, displacement: Tensor) -> Tensor:
    """``field`` sampled at each pixel plus ``displacement``: (B, N, H, W), (B, 2, H, W) -> (B, N, H, W).

    Bilinear; NaN where the source lies outside the grid or interpolation touches a no-data (NaN) pixel
    of that channel.
    """
    import torch
    import torch.nn.functional as F

    h, w = field.shape[-2:]
    coords = _pixel_grid(h, w, field.device, displacement.dtype) + displacement
    grid = _normalised(coords).to(field.dtype)
    valid = torch.isfinite(field)
    filled = torch.where(valid, field, torch.zeros((), dtype=field.dtype, device=field.device))
    values = F.grid_sample(filled, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    weight = F.grid_sample(valid.to(field.dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    eps = 1e-4
    inside = (
        (coords[:, 0] >= -eps) & (coords[:, 0] <= w - 1 + eps) & (coords[:, 1] >= -eps) & (coords[:, 1] <= h - 1 + eps)
    )[:, None]  # (B, 1, H, W)
    ok = inside & (weight > 1.0 - eps)
    return torch.where(ok, values, torch.full((), float("nan"), dtype=field.dtype, device=field.device))


def advect(field: Tensor, velocity: Tensor, steps: int) -> Tensor:
    """Semi-Lagrangian extrapolation of ``field`` (B, N, H, W) along ``velocity`` (B, 2, H, W) px/step.

    Returns (B, steps, N, H, W): lead times 1..steps. The torch twin of
    ``pysteps.extrapolation.semilagrangian.extrapolate(field, velocity, steps, outval=nan)``.
    """
    import torch

    disp = displacements(velocity, steps)  # (B, steps, 2, H, W)
    return torch.stack([warp(field, d) for d in disp.unbind(1)], 1)


__all__ = [
    "DBR_THRESHOLD",
    "DBR_ZERO",
    "MOTION_FRAMES",
    "advect",
    "displacements",
    "motion_field",
    "pysteps_methods",
    "to_dbr",
    "warp",
]

"""The ensemble product of ``nowcast predict --members N``: members as a DataArray with valid times, lead
times, reference time and the input's grid, ready for ``io.ensemble_writing.write_ensemble``.

The members come from the STEPS-like ensemble (``nowcasts.ensemble``: S-PROG's cascade with stochastic
perturbations, advected along the same motion the Lagrangian model uses), and the file's deterministic
``rainfall_rate`` is their mean. With ``EnsembleProduct.centre == "model"`` the ConvLSTM runs once and its
forecast in the frame of the last observation (``forecast.forecast_and_centre``) takes S-PROG's place as
the members' centre: each member is that forecast plus its own perturbation, then probability matched.
The default is S-PROG's centre: on the cross-radar folds the shipped recipe's correction is zero, so the
learned centre is a choice for a user whose own model has learned something (docs/ensemble.md).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from nowcast.errors import InputError
from nowcast.forecast import forecast_coords
from nowcast.io import pixel_size_km
from nowcast.nowcasts import resolve_motion_perturbation
from nowcast.motion.flow import motion_field
from nowcast.nowcasts import (
    DEFAULT_INITIAL_PERTURBATION,
    DEFAULT_MOTION_PERTURBATION,
    DEFAULT_NOISE_ADJUSTMENT,
    MOTION_PERTURBATIONS,
    initial_perturbation_problem,
    noise_adjustment_problem,
)

if TYPE_CHECKING:  # torch loads when an ensemble is made, not with predict: input errors are reported first
    from nowcast.nowcasts.ensemble import EnsembleSettings

log = logging.getLogger(__name__)

CENTRES = ("sprog", "model")
"""What an ensemble's members spread around: S-PROG (STEPS), or the learned model's forecast."""
DEFAULT_PROBABILITY_THRESHOLDS = (1.0, 10.0, 30.0)
"""Exceedance thresholds (mm/h) of the probabilities written with an ensemble: a warning forecaster's."""


@dataclass(frozen=True)
class EnsembleProduct:
    """What an ensemble forecast file holds."""

    members: int
    """Ensemble members (at least 1)."""
    seed: int = 0
    """Seed of the members: the same seed and input give the same file."""
    thresholds: tuple[float, ...] = DEFAULT_PROBABILITY_THRESHOLDS
    """Rates (mm/h, increasing) whose exceedance probabilities are written."""
    motion_perturbation: str = DEFAULT_MOTION_PERTURBATION
    """``bps`` (each member along its own perturbed motion; needs x/y in m or km) or ``none``."""
    noise_adjustment: str = DEFAULT_NOISE_ADJUSTMENT
    """Per-level multipliers of the noise (``nowcasts.ensemble.EnsembleSettings.noise_adjustment``)."""
    centre: str = "sprog"
    """``sprog``: STEPS' members; ``model``: the model's forecast plus each member's perturbation."""
    initial_perturbation: str = DEFAULT_INITIAL_PERTURBATION
    """How each member starts (``nowcasts.ensemble.EnsembleSettings.initial_perturbation``)."""

    def __post_init__(self) -> None:
        if problem := initial_perturbation_problem(self.initial_perturbation):
            raise ValueError(f"initial perturbation: {problem}")
        if int(self.members) < 1:
            raise ValueError(f"members: expected at least 1, found {self.members}")
        if self.centre not in CENTRES:
            raise ValueError(f"centre: expected one of {', '.join(CENTRES)}, found {self.centre!r}")
        if problem := noise_adjustment_problem(self.noise_adjustment):
            raise ValueError(f"noise adjustment: {problem}")
        if self.motion_perturbation not in MOTION_PERTURBATIONS:
            raise ValueError(
                f"motion perturbation: expected one of {', '.join(MOTION_PERTURBATIONS)}, "
                f"found {self.motion_perturbation!r}"
            )
        t = tuple(float(x) for x in self.thresholds)
        if not t or any(b <= a for a, b in zip(t, t[1:])) or not all(np.isfinite(t)) or min(t) <= 0:
            raise ValueError(f"probabilities: expected positive, increasing thresholds in mm/h, found {list(t)}")
        object.__setattr__(self, "thresholds", t)

    def settings(self, like: xr.DataArray, time_step: int, device: str = "cpu") -> EnsembleSettings:
        """The ensemble's settings for frames on ``like``'s grid, ``time_step`` s apart, made on ``device``.

        Raises InputError when ``bps`` is asked for and the grid has no pixel size (``io.pixel_size_km``)."""
        from nowcast.nowcasts.ensemble import EnsembleSettings

        km = pixel_size_km(like)
        motion = resolve_motion_perturbation(self.motion_perturbation, km)
        if motion == "bps" and km is None:
            raise InputError(
                f"{like.attrs.get('source_file', 'input')}: --motion-perturbation bps: expected x/y coordinates "
                "in m or km or lat/lon in degrees (the pixel size), found none; use --motion-perturbation none"
            )
        return EnsembleSettings(
            members=int(self.members),
            seed=int(self.seed),
            motion_perturbation=motion,
            km_per_px=km,
            step_min=time_step / 60.0,
            noise_adjustment=self.noise_adjustment,
            initial_perturbation=self.initial_perturbation,
            device=str(device),
        )


def ensemble_members(
    frames: np.ndarray,
    t_ref: int,
    like: xr.DataArray,
    time_step: int,
    steps: int,
    product: EnsembleProduct,
    velocity: np.ndarray | None = None,
    centre: np.ndarray | None = None,
    device: str = "cpu",
) -> xr.DataArray:
    """Members of checked input ``frames`` (T, 1, H, W) mm/h whose last is at ``t_ref`` (ns), one step
    of ``time_step`` s apart: (realization, time, y, x) float32 mm/h, NaN = no data. Coordinates,
    name and attrs as ``forecast.forecast_frames`` gives a single forecast of ``like``; ``velocity``
    (2, H, W) px per step: the frames' motion, if known (else ``motion_field``); ``centre``
    (steps, H, W) dBR: the model's forecast the members spread around (``ensemble_forecast``); ``device``:
    where the members are made (``EnsembleSettings.device``)."""
    if frames.ndim != 4 or frames.shape[1] != 1 or "channel" in like.dims:
        raise ValueError(f"frames: an ensemble needs one channel (T, 1, H, W), found {frames.shape}")
    from nowcast.nowcasts.ensemble import ensemble_forecast

    x = frames[:, 0]
    velocity = motion_field(x) if velocity is None else velocity
    started = time.perf_counter()
    settings = product.settings(like, time_step, device)
    members = ensemble_forecast(x, velocity, steps, settings, centre)  # (M, steps, H, W)
    log.debug(
        "ensemble: %d members x %d steps on %s in %.2f s", product.members, steps, device, time.perf_counter() - started
    )
    coords = forecast_coords(t_ref, steps, time_step, like)
    coords["realization"] = ("realization", np.arange(product.members, dtype=np.int32))
    out = xr.DataArray(members, dims=("realization", *like.dims), coords=coords, name=like.name, attrs=dict(like.attrs))
    out.attrs["time_step"] = int(time_step)
    return out


__all__ = ["CENTRES", "DEFAULT_PROBABILITY_THRESHOLDS", "EnsembleProduct", "ensemble_members"]

"""A STEPS-like ensemble in torch: S-PROG's Lagrangian cascade with stochastic perturbations, members batched.

STEPS (Bowler, Pierce and Seed 2006; Seed, Pierce and Norman 2013) as pySTEPS ``nowcasts.steps`` runs it
with ``vel_pert_method=None``, ``mask_method=None`` and ``probmatching_method="cdf"``:

1. The last ``SPROG_AR_ORDER + 1`` frames in dBR (``units.to_dbr``) are warped into the frame of the
   last one (``motion.to_lagrangian``), no data filled with ``DBR_ZERO``.
2. A global, anisotropic noise filter is estimated from them: pySTEPS' nonparametric FFT filter
   (``noise_filter``, a port of ``pysteps.noise.fftgenerators.initialize_nonparam_2d_fft_filter``).
3. Each frame is split into cascade levels (``cascade.decompose``); each level gets an AR(2) model.
4. At every step and for every member, white noise (``torch.Generator`` per member, seeded) is filtered
   (``generate_noise_2d_fft_filter``), split into the same levels and normalised, and enters each
   level's AR(2) as its innovation, scaled by the square root of the AR(2) residual variance
   ``1 - phi1 gamma1 - phi2 gamma2`` (Pulkkinen et al. 2019, eq. 6).
5. The levels are recombined with the last frame's statistics, each member's field takes the last
   frame's distribution (``cdf`` probability matching, its wet area kept), back to mm/h, and lead k
   is advected k steps along the motion (``motion.from_lagrangian``).

The motion itself is not perturbed (pySTEPS' ``bps`` motion perturbations are left out): the spread comes
from the cascade alone. Member j's noise depends only on (seed, j), so a member is the same whatever
the number of members or the chunk size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from nowcast.motion.advection import displacements
from nowcast.motion.lagrangian import from_lagrangian, to_lagrangian
from nowcast.nowcasts import SPROG_AR_ORDER, SPROG_LEVELS
from nowcast.nowcasts.cascade import lag_correlation, match_last, ar2_parameters, decompose
from nowcast.units import DBR_ZERO, RAIN_THRESHOLD, to_dbr

log = logging.getLogger(__name__)

WET_DBR = 10.0 * float(np.log10(RAIN_THRESHOLD))
"""The rain/no-rain limit in dBR (-10 dBR for 0.1 mm/h)."""
TUKEY_ALPHA = 0.2
"""Shape of the Tukey window tapering the fields before the noise filter's FFT (pySTEPS' default)."""


@dataclass(frozen=True)
class EnsembleSettings:
    """How the ensemble is made."""

    members: int = 20
    """Ensemble members."""
    seed: int = 0
    """Seed of the noise: the same seed gives the same members."""
    levels: int = SPROG_LEVELS
    """Cascade levels."""
    chunk: int = 0
    """Members computed at once (bounds memory: about 20 fields of H x W per member); 0: all."""

    def __post_init__(self) -> None:
        problems = []
        if int(self.members) < 1:
            problems.append(f"members: expected at least 1, found {self.members}")
        if int(self.levels) < 3:
            problems.append(f"levels: expected at least 3, found {self.levels}")
        if int(self.chunk) < 0:
            problems.append(f"chunk: expected 0 (all members) or a positive number, found {self.chunk}")
        if problems:
            raise ValueError("; ".join(problems))


def tukey_window(height: int, width: int, alpha: float = TUKEY_ALPHA) -> np.ndarray:
    """pySTEPS' ``compute_window_function(height, width, "tukey", alpha)``: (H, W) weights in [0, 1],
    1 in the middle, falling to 0 at a distance 0.5 (in units of the sides) from the centre."""
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    r = np.sqrt((x / width - 0.5) ** 2 + (y / height - 0.5) ** 2)
    w = np.ones_like(r)
    edge = (r < 0.5) & (r > 0.5 * (1.0 - alpha))
    w[edge] = 0.5 * (1.0 + np.cos(np.pi * (r[edge] / (alpha * 0.5) - 1.0 / alpha + 1.0)))
    w[r >= 0.5] = 0.0
    return w


def noise_filter(fields: np.ndarray) -> np.ndarray:
    """The nonparametric FFT noise filter of ``fields`` (T, H, W) or (H, W), finite, dBR: (H, W // 2 + 1).

    Ported from pySTEPS ``initialize_nonparam_2d_fft_filter`` with its defaults (Tukey window,
    rain/no-rain discontinuity removed, no normalisation, real FFT); BSD 3-Clause, Copyright (c) 2019,
    PySteps developers (``nowcast/LICENSES/pysteps.txt``). The amplitude spectrum of the tapered fields,
    averaged over T (complex mean, then modulus), float64.
    """
    x = np.array(fields, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or not np.isfinite(x).all():
        raise ValueError(f"fields: expected finite (T, H, W) or (H, W), found shape {np.shape(fields)}")
    lowest = x.min()
    above = x > lowest
    if above.any():  # the dry value moved up to just below the lightest rain
        x[above] -= x[above].min() - lowest
    x -= x.min(axis=(1, 2))[:, None, None]
    taper = tukey_window(*x.shape[1:])
    spectrum = np.zeros((x.shape[1], x.shape[2] // 2 + 1), dtype=complex)
    for field in x:
        spectrum += np.fft.rfft2(field * taper)
    return np.abs(spectrum / x.shape[0])


def member_generators(seed: int, members: int) -> list[torch.Generator]:
    """One CPU ``torch.Generator`` per member, member j's seeded from (seed, j) alone."""
    states = np.random.SeedSequence(int(seed)).spawn(int(members))
    return [torch.Generator().manual_seed(int(s.generate_state(1, np.uint64)[0] >> np.uint64(1))) for s in states]


def correlated_noise(gens: list[torch.Generator], filt: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """One field of noise per generator with the spectrum of ``filt`` (H, W // 2 + 1): (N, H, W).

    pySTEPS ``generate_noise_2d_fft_filter`` (spatial domain) without its final standardisation, which
    the cascade's per-level normalisation makes redundant (it is affine and applied to every level)."""
    white = torch.stack([torch.randn(shape, generator=g, dtype=filt.dtype) for g in gens]).to(filt.device)
    return torch.fft.irfft2(torch.fft.rfft2(white) * filt, s=shape)


def innovation_scale(gamma1: torch.Tensor, phi1: torch.Tensor, phi2: torch.Tensor) -> torch.Tensor:
    """sqrt of the AR(2) residual variance, 1 - phi1 gamma1 - phi2 gamma2, with gamma2 the lag-2
    correlation the Yule-Walker parameters imply (phi1 gamma1 + phi2, i.e. after the stationarity
    adjustment of ``ar2_parameters``); pySTEPS ``estimate_ar_params_yw``'s last coefficient."""
    g1 = gamma1.clamp(-0.999999, 0.999999)
    g2 = phi1 * g1 + phi2
    return (1.0 - phi1 * g1 - phi2 * g2).clamp_min(0.0).sqrt()


def lagrangian_dbr(frames: np.ndarray, velocity: np.ndarray) -> torch.Tensor:
    """The last ``SPROG_AR_ORDER + 1`` frames (T, H, W) mm/h in dBR, warped into the frame of the last
    along ``velocity`` (2, H, W) px/step: (AR_ORDER + 1, H, W) float32, no data as ``DBR_ZERO``."""
    x = np.asarray(frames, dtype=np.float32)[-(SPROG_AR_ORDER + 1) :]
    dbr = np.where(np.isfinite(x), to_dbr(x), np.nan).astype(np.float32)
    lag = to_lagrangian(torch.from_numpy(dbr)[None, :, None], torch.from_numpy(np.asarray(velocity, np.float32))[None])
    return torch.nan_to_num(lag[0, :, 0], nan=DBR_ZERO)


@torch.no_grad()
def perturbed_cascade(lag: torch.Tensor, steps: int, gens: list[torch.Generator], levels: int) -> torch.Tensor:
    """Members of the perturbed AR(2) cascade of ``lag`` (3, H, W) dBR in the Lagrangian frame, probability
    matched to its last frame: (len(gens), steps, H, W) dBR, one member per generator."""
    h, w = lag.shape[-2:]
    n = len(gens)
    z, means, stds = decompose(lag, levels)  # (3, L, H, W), (3, L, 1, 1) x2
    gamma1, gamma2 = lag_correlation(z[2], z[1]), lag_correlation(z[2], z[0])  # (L,)
    phi1, phi2 = ar2_parameters(gamma1, gamma2)
    sigma = innovation_scale(gamma1, phi1, phi2)
    phi1, phi2, sigma = (v[:, None, None] for v in (phi1, phi2, sigma))  # (L, 1, 1)
    filt = torch.from_numpy(noise_filter(lag.double().numpy())).to(lag.device, lag.dtype)
    prev, cur = z[1].expand(n, -1, -1, -1), z[2].expand(n, -1, -1, -1)  # (N, L, H, W)
    out = lag.new_empty((n, steps, h, w))
    for k in range(steps):
        eps, _, _ = decompose(correlated_noise(gens, filt, (h, w)), levels)  # (N, L, H, W), normalised
        prev, cur = cur, phi1 * cur + phi2 * prev + sigma * eps
        field = (cur * stds[2] + means[2]).sum(1)  # (N, H, W)
        out[:, k] = match_last(field[None], lag[-1][None], WET_DBR)[0]  # the last frame sorted once
    return out


@torch.no_grad()
def ensemble_forecast(
    frames: np.ndarray, velocity: np.ndarray, steps: int, settings: EnsembleSettings = EnsembleSettings()
) -> np.ndarray:
    """The ensemble of ``steps`` lead times from frames (T >= 3, H, W) mm/h, NaN = no data, moving with
    ``velocity`` (2, H, W) px per step (``motion.motion_field``): (members, steps, H, W) float32 mm/h.

    NaN where the extrapolation of the last frame has no data (its source outside the grid or without
    data); a last frame without rain gives dry members. Uses torch's CPU threads as set by the caller.
    """
    x = np.asarray(frames, dtype=np.float32)
    if x.ndim != 3 or x.shape[0] < SPROG_AR_ORDER + 1:
        raise ValueError(f"frames: expected (T >= {SPROG_AR_ORDER + 1}, H, W), found {x.shape}")
    if int(steps) < 1:
        raise ValueError(f"steps: expected a positive number of lead times, found {steps}")
    s, steps = settings, int(steps)
    h, w = x.shape[1:]
    vel = torch.from_numpy(np.asarray(velocity, dtype=np.float32))[None]  # (1, 2, H, W)
    last_ok = torch.from_numpy(np.isfinite(x[-1]))
    lag = lagrangian_dbr(x, velocity)
    if not (lag[-1] >= WET_DBR).any():
        log.debug("ensemble: no rain in the last frame, dry members")
        dry = torch.where(last_ok, 0.0, float("nan")).expand(1, steps, 1, h, w)
        reach = from_lagrangian(dry.contiguous(), vel)[0, :, 0].numpy()
        return np.broadcast_to(reach, (s.members, steps, h, w)).astype(np.float32)
    gens = member_generators(s.seed, s.members)
    disp = displacements(vel, steps)  # (1, steps, 2, H, W): once for every chunk of members
    chunk = s.chunk or s.members
    out = np.empty((s.members, steps, h, w), dtype=np.float32)
    for start in range(0, s.members, chunk):
        dbr = perturbed_cascade(lag, steps, gens[start : start + chunk], s.levels)  # (n, steps, H, W)
        rate = torch.where(dbr >= WET_DBR, 10.0 ** (dbr / 10.0), 0.0)
        rate = torch.where(last_ok, rate, float("nan"))
        out[start : start + chunk] = from_lagrangian(rate.transpose(0, 1)[None], vel, disp)[0].transpose(0, 1).numpy()
    return out


__all__ = [
    "EnsembleSettings",
    "correlated_noise",
    "ensemble_forecast",
    "innovation_scale",
    "lagrangian_dbr",
    "member_generators",
    "noise_filter",
    "perturbed_cascade",
    "tukey_window",
]

"""A STEPS-like ensemble in torch: S-PROG's Lagrangian cascade with stochastic perturbations, members batched.

STEPS (Bowler, Pierce and Seed 2006; Seed, Pierce and Norman 2013) as pySTEPS ``nowcasts.steps`` runs it
with ``vel_pert_method="bps"`` or ``None`` (``EnsembleSettings.motion_perturbation``), ``mask_method=None``
and ``probmatching_method="cdf"``:

1. The last ``SPROG_AR_ORDER + 1`` frames in dBR (``units.to_dbr``) are warped into the frame of the
   last one (``motion.to_lagrangian``), no data filled with ``DBR_ZERO``.
2. A global, anisotropic noise filter is estimated from them: pySTEPS' nonparametric FFT filter
   (``noise_filter``, a port of ``pysteps.noise.fftgenerators.initialize_nonparam_2d_fft_filter``).
3. Each frame is split into cascade levels (``cascade.decompose``); each level gets an AR(2) model.
4. At every step and for every member, white noise (``torch.Generator`` per member, seeded) is filtered
   (``generate_noise_2d_fft_filter``), split into the same levels and normalised, and enters each
   level's AR(2) as its innovation, scaled by the square root of the AR(2) residual variance
   ``1 - phi1 gamma1 - phi2 gamma2`` (Pulkkinen et al. 2019, eq. 6) and by the level's noise
   adjustment (``EnsembleSettings.noise_adjustment``, pySTEPS' ``noise_stddev_adj``: 1 by default,
   ``fixed``, ``auto``, or one gain on every level: ``noise_adjustment``).
5. The levels are recombined with the last frame's statistics, each member's field takes the last
   frame's distribution (``cdf`` probability matching, its wet area kept), back to mm/h, and lead k
   is advected k steps along the motion (``motion.from_lagrangian``).

With ``motion_perturbation="bps"`` each member also moves along its own perturbed motion (pySTEPS' ``bps``,
``motion.perturbation``: parallel and perpendicular perturbations growing with lead time), advected
along its own trajectories; with ``"none"`` every member moves along the same motion and the spread
comes from the cascade alone. Member j's noise and motion draws depend only on (seed, j), so a member
is the same whatever the number of members, the chunk size or the threads, up to the float rounding of
batched operations (chunk 4 against 1 on CIRRUS: 1.3e-5 of the values differ, by at most 0.08 mm/h).

How it is computed (the method above unchanged): the cascade's levels are carried as real FFTs
(``_Cascade``: two FFTs per member and step), the matching ranks with numpy (a partition of int64
keys carrying the pixel index at the target's runs of equal values), and the members are split among
the caller's torch threads, one torch thread each (docs/probabilistic.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from nowcast.motion.advection import displacements, warp
from nowcast.motion.lagrangian import from_lagrangian, to_lagrangian
from nowcast.motion.perturbation import BPS_PARALLEL, BPS_PERPENDICULAR, PerturbedTrajectories, member_draws
from nowcast.nowcasts import (
    SPROG_AR_ORDER,
    SPROG_LEVELS,
    initial_perturbation_problem,
    noise_adjustment_problem,
    noise_gain,
)
from nowcast.nowcasts.cascade import _bandpass, ar2_parameters, decompose, lag_correlation
from nowcast.units import DBR_ZERO, RAIN_THRESHOLD, to_dbr

log = logging.getLogger(__name__)

WET_DBR = 10.0 * float(np.log10(RAIN_THRESHOLD))
"""The rain/no-rain limit in dBR (-10 dBR for 0.1 mm/h)."""
TUKEY_ALPHA = 0.2
"""Shape of the Tukey window tapering the fields before the noise filter's FFT (pySTEPS' default)."""
NOISE_ADJUSTMENT_ITERATIONS = 20
"""Noise fields averaged by the ``auto`` noise adjustment (what pySTEPS' STEPS passes as ``num_iter``)."""
DEVICE_CHUNK_VALUES = 1 << 30
"""Float32 values of cascade state a GPU holds at once (4 GiB): members per chunk on a device, about six
spectral states (L, H, W // 2 + 1, 2) per member in flight (``device_chunk``)."""
INITIAL_PERTURBATION_STREAM = 2
"""Second entropy word of the initial perturbation's seed, ``SeedSequence([seed, INITIAL_PERTURBATION_STREAM])``:
member j's from its child j, apart from its noise (``initial_generators``)."""
NOISE_ADJUSTMENT_STREAM = 1
"""Second entropy word of the ``auto`` adjustment's seed, ``SeedSequence([seed, NOISE_ADJUSTMENT_STREAM])``:
its noise is drawn apart from the members' (``SeedSequence(seed)``'s children)."""


@dataclass(frozen=True)
class EnsembleSettings:
    """How the ensemble is made."""

    members: int = 20
    """Ensemble members."""
    seed: int = 0
    """Seed of the noise: the same seed gives the same members."""
    levels: int = SPROG_LEVELS
    """Cascade levels."""
    chunk: int = 4
    """Members computed at once by each thread on the CPU (about 10 float32 fields of H x W per member in
    flight, on top of the output's ``steps`` per member); 0: all. On a GPU ``device_chunk`` decides. The
    members do not depend on it."""
    motion_perturbation: str = "none"
    """``bps``: each member along its own perturbed motion (``motion.perturbation``; needs ``km_per_px`` and
    ``step_min``); ``none``: all along the same motion. The commands, which know the grid, default to
    ``nowcasts.DEFAULT_MOTION_PERTURBATION``."""
    km_per_px: float | None = None
    """Pixel size (km): needed by ``bps``."""
    step_min: float | None = None
    """Time step of the frames and of the motion (min): needed by ``bps``."""
    bps_parallel: tuple[float, float, float] = BPS_PARALLEL
    """(a, b, c) of the parallel perturbation's scale a t**b + c (km/h, t in min)."""
    bps_perpendicular: tuple[float, float, float] = BPS_PERPENDICULAR
    """(a, b, c) of the perpendicular perturbation's scale (km/h, t in min)."""
    noise_adjustment: str = "none"
    """Per-level multipliers of the noise innovation (pySTEPS' ``noise_stddev_adj``, ``noise_adjustment``):
    ``none`` (1), ``auto`` (estimated from the last frame, seeded from ``seed``), ``fixed``, or a positive
    number as a string (that gain on every level, ``nowcasts.noise_gain``)."""
    initial_perturbation: str = "none"
    """How each member starts (``nowcasts.INITIAL_PERTURBATIONS``): ``none``, from the last observation's
    cascade; ``innovation``, from it plus one AR(2) innovation of its own (``initial_generators``)."""
    device: str = "cpu"
    """Where the members are made: ``cpu`` (members split among the caller's threads, one torch thread
    each) or a GPU (``cuda``, ``cuda:N``: ``device_chunk`` members at once, every operation batched, the
    matching by a sort on the device). The members are the same on either, up to float rounding: the
    noise is drawn on the CPU from the same generators."""

    def __post_init__(self) -> None:
        problems = []
        if self.motion_perturbation not in ("bps", "none"):  # auto is resolved by the caller, on the grid
            problems.append(f"motion_perturbation: expected bps or none, found {self.motion_perturbation!r}")
        if self.motion_perturbation == "bps":
            for name in ("km_per_px", "step_min"):
                value = getattr(self, name)
                if value is None or not (np.isfinite(value) and value > 0):
                    problems.append(f"{name}: expected a positive number for bps motion perturbations, found {value}")
        if problem := noise_adjustment_problem(self.noise_adjustment):
            problems.append(f"noise_adjustment: {problem}")
        if problem := initial_perturbation_problem(self.initial_perturbation):
            problems.append(f"initial_perturbation: {problem}")
        if any(len(p) != 3 for p in (self.bps_parallel, self.bps_perpendicular)):
            problems.append("bps_parallel, bps_perpendicular: expected (a, b, c) each")
        if int(self.members) < 1:
            problems.append(f"members: expected at least 1, found {self.members}")
        if int(self.levels) < 3:
            problems.append(f"levels: expected at least 3, found {self.levels}")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            problems.append(f"device: expected cpu, cuda or cuda:N, found {self.device!r}")
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
    return _generators(np.random.SeedSequence(int(seed)), members)


def initial_generators(seed: int, members: int) -> list[torch.Generator]:
    """One CPU ``torch.Generator`` per member for its initial perturbation: member j's from child j of
    ``SeedSequence([seed, INITIAL_PERTURBATION_STREAM])``, so the members' noise (``member_generators``) is
    the same with or without it, and member j's does not depend on the number of members."""
    return _generators(np.random.SeedSequence([int(seed), INITIAL_PERTURBATION_STREAM]), members)


def _generators(root: np.random.SeedSequence, n: int) -> list[torch.Generator]:
    """One CPU ``torch.Generator`` per child of ``root``: n of them."""
    states = root.spawn(int(n))
    return [torch.Generator().manual_seed(int(s.generate_state(1, np.uint64)[0] >> np.uint64(1))) for s in states]


def noise_spectrum(gens: list[torch.Generator], filt: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The real FFT of one field of white noise per generator, shaped by ``filt`` (H, W // 2 + 1):
    (N, H, W // 2 + 1) complex. ``irfft2`` of it is ``correlated_noise``."""
    white = torch.empty((len(gens), *shape), dtype=filt.dtype)
    for i, g in enumerate(gens):
        torch.randn(shape, generator=g, dtype=filt.dtype, out=white[i])
    return torch.fft.rfft2(white.to(filt.device)) * filt


def correlated_noise(gens: list[torch.Generator], filt: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """One field of noise per generator with the spectrum of ``filt`` (H, W // 2 + 1): (N, H, W).

    pySTEPS ``generate_noise_2d_fft_filter`` (spatial domain) without its final standardisation, which
    the cascade's per-level normalisation makes redundant (it is affine and applied to every level)."""
    return torch.fft.irfft2(noise_spectrum(gens, filt, shape), s=shape)


def innovation_scale(gamma1: torch.Tensor, phi1: torch.Tensor, phi2: torch.Tensor) -> torch.Tensor:
    """sqrt of the AR(2) residual variance, 1 - phi1 gamma1 - phi2 gamma2, with gamma2 the lag-2
    correlation the Yule-Walker parameters imply (phi1 gamma1 + phi2, i.e. after the stationarity
    adjustment of ``ar2_parameters``); pySTEPS ``estimate_ar_params_yw``'s last coefficient."""
    g1 = gamma1.clamp(-0.999999, 0.999999)
    g2 = phi1 * g1 + phi2
    return (1.0 - phi1 * g1 - phi2 * g2).clamp_min(0.0).sqrt()


def noise_adjustment(
    method: str, lag: torch.Tensor, filt: torch.Tensor, levels: int, seed: int = 0, threads: int = 1
) -> torch.Tensor:
    """The per-level multipliers of the noise innovation (pySTEPS STEPS' ``noise_stddev_adj``): (L,).

    ``none``: ones; a number G (``nowcasts.noise_gain``): G on every level; ``fixed``:
    ``1 / (0.75 + 0.09 k)`` for levels k = 1..L; ``auto``: ``auto_noise_adjustment`` of the last frame of ``lag`` (3, H, W) dBR with
    ``NOISE_ADJUSTMENT_ITERATIONS`` fields of noise shaped by ``filt`` (H, W // 2 + 1), drawn from
    ``seed`` alone (a stream apart from the members'), split among ``threads`` threads."""
    if method == "none":
        return torch.ones(levels, dtype=lag.dtype)
    if (gain := noise_gain(method)) is not None:  # one gain on every level
        return torch.full((levels,), gain, dtype=lag.dtype)
    if method == "fixed":
        return 1.0 / (0.75 + 0.09 * torch.arange(1, levels + 1, dtype=lag.dtype))
    if method != "auto":
        raise ValueError(f"noise adjustment: {noise_adjustment_problem(method) or method}")
    root = np.random.SeedSequence([int(seed), NOISE_ADJUSTMENT_STREAM])
    gens = _generators(root, NOISE_ADJUSTMENT_ITERATIONS)
    spectra = noise_spectrum(gens, filt, tuple(lag.shape[-2:]))
    return auto_noise_adjustment(lag[-1], float(lag.min()), spectra, levels, threads)


def auto_noise_adjustment(
    last: torch.Tensor, zero: float, spectra: torch.Tensor, levels: int, threads: int = 1
) -> torch.Tensor:
    """pySTEPS' ``compute_noise_stddev_adjs`` (conditional): (L,) float, each level's standard deviation
    in the wet area of ``last`` (H, W) dBR over that of masked noise.

    The wet area is ``last >= WET_DBR``; the rest is set to ``zero`` (the dry value). The noise fields
    (spectra (n, H, W // 2 + 1), one per iteration) are standardised, given the wet area's mean and
    standard deviation, set to ``zero`` outside it and split into levels like the field; the
    coefficient is the field's level std over the noise's, averaged over the n fields (pySTEPS: 20).
    Both computed over the wet pixels only. Batched over the fields, one level at a time, the fields
    split among ``threads`` threads (the result does not depend on it).

    Ported from pySTEPS ``noise.utils.compute_noise_stddev_adjs`` with ``conditional=True``; BSD
    3-Clause, Copyright (c) 2019, PySteps developers (``nowcast/LICENSES/pysteps.txt``). A level
    whose noise has no spread in the wet area (one wet pixel) gets 1 instead of pySTEPS' NaN.
    """
    h, w = last.shape[-2:]
    wet = last >= WET_DBR
    weight = wet.to(last.dtype) / wet.sum()  # (H, W): the mean over the wet pixels
    obs = torch.where(wet, last, zero)
    mu, sigma = obs[wet].mean(), obs[wet].std(unbiased=False)
    bands = torch.from_numpy(_bandpass(h, w, levels)).to(last.device, last.dtype)  # (L, H, W2)

    def wet_stds(fields: torch.Tensor) -> torch.Tensor:
        """(n, H, W) -> (n, L): each level's standard deviation over the wet pixels."""
        spec = torch.fft.rfft2(fields)
        out = fields.new_empty((fields.shape[0], levels))
        for k in range(levels):
            part = torch.fft.irfft2(spec * bands[k], s=(h, w))  # (n, H, W)
            mean = (part * weight).sum((-2, -1))
            out[:, k] = ((part.square() * weight).sum((-2, -1)) - mean.square()).clamp_min(0.0).sqrt()
        return out

    def noise_stds(spec: torch.Tensor) -> torch.Tensor:
        """(n, H, W2) noise spectra -> (n, L): the level stds of the masked noise."""
        noise = torch.fft.irfft2(spec, s=(h, w))  # (n, H, W)
        noise = noise - noise.mean((-2, -1), keepdim=True)
        noise = noise * (sigma / noise.std((-2, -1), keepdim=True, unbiased=False).clamp_min(1e-12))
        return wet_stds(torch.where(wet, noise, zero - mu))  # the wet area at mu + noise, then mu removed

    target = wet_stds((obs - mu)[None])[0]  # (L,)
    parts = spectra.tensor_split(max(1, min(int(threads), spectra.shape[0])))
    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        spread = torch.cat(list(pool.map(noise_stds, parts))).mean(0)  # (L,)
    coef = target / spread
    return torch.where(torch.isfinite(coef) & (spread > 0), coef, torch.ones_like(coef))


def lagrangian_dbr(frames: np.ndarray, velocity: np.ndarray) -> torch.Tensor:
    """The last ``SPROG_AR_ORDER + 1`` frames (T, H, W) mm/h in dBR, warped into the frame of the last
    along ``velocity`` (2, H, W) px/step: (AR_ORDER + 1, H, W) float32, no data as ``DBR_ZERO``."""
    x = np.asarray(frames, dtype=np.float32)[-(SPROG_AR_ORDER + 1) :]
    dbr = np.where(np.isfinite(x), to_dbr(x), np.nan).astype(np.float32)
    lag = to_lagrangian(torch.from_numpy(dbr)[None, :, None], torch.from_numpy(np.asarray(velocity, np.float32))[None])
    return torch.nan_to_num(lag[0, :, 0], nan=DBR_ZERO)


def spectral_multiplicity(height: int, width: int) -> torch.Tensor:
    """(H, W // 2 + 1): how often each coefficient of a real FFT stands in the full spectrum (1 for the
    first column and, W even, the last; 2 for the others), so that Parseval's sum over the half
    spectrum is ``(multiplicity * |X|^2).sum()``."""
    mult = torch.full((height, width // 2 + 1), 2.0)
    mult[:, 0] = 1.0
    if width % 2 == 0:
        mult[:, -1] = 1.0
    return mult


class _Cascade:
    """The AR(2) cascade of one Lagrangian input, kept in the spectral domain.

    Every operation of the cascade is linear per level (band-pass filters, normalisation by a scalar,
    AR(2) with scalar coefficients, recombination), so each level is carried as its real FFT and each
    step costs two FFTs per member (the white noise in, the recombined field out) instead of the
    ``levels + 3`` of the spatial form. A level's mean is its zero-frequency coefficient (only the first
    level has one) and its standard deviation follows from Parseval's identity, so the noise's levels
    are normalised exactly as ``decompose`` normalises them.
    """

    def __init__(
        self, lag: torch.Tensor, levels: int, adjustment: str = "none", seed: int = 0, threads: int = 1
    ) -> None:
        h, w = lag.shape[-2:]
        z, means, stds = decompose(lag, levels)  # (3, L, H, W), (3, L, 1, 1) x2
        gamma1, gamma2 = lag_correlation(z[2], z[1]), lag_correlation(z[2], z[0])  # (L,)
        phi1, phi2 = ar2_parameters(gamma1, gamma2)
        self.phi1, self.phi2 = (v.reshape(-1, 1, 1, 1) for v in (phi1, phi2))  # (L, 1, 1, 1): real view
        self.bands = torch.from_numpy(_bandpass(h, w, levels)).to(lag.device, lag.dtype)  # (L, H, W2)
        self.bands2 = self.bands[..., None].expand(*self.bands.shape, 2).contiguous()  # (L, H, W2, 2): real views
        power = self.bands.double() ** 2 * spectral_multiplicity(h, w).to(lag.device, torch.float64)
        self.power = (power.reshape(levels, -1).T / float(h * w) ** 2).to(lag.dtype)  # (H W2, L): Parseval
        filt = torch.from_numpy(noise_filter(lag.double().numpy())).to(lag.device, lag.dtype)
        filt[0, 0] = 0.0  # the level means are removed
        self.filt = filt
        self.adjustment = noise_adjustment(adjustment, lag, filt, levels, seed, threads)  # (L,)
        self.sigma = innovation_scale(gamma1, phi1, phi2) * self.adjustment.to(gamma1.dtype)  # (L,)
        self.spectra = torch.fft.rfft2(z[1:])  # (2, L, H, W2): the last two inputs' normalised levels
        self.scale = stds[2].reshape(1, 1, levels)  # recombination with the last frame's statistics
        self.offset = float(means[2].sum())
        self.shape = (h, w)

    def to(self, device: torch.device) -> _Cascade:
        """The cascade's tensors moved to ``device`` (in place): the members are then made there."""
        for name in ("phi1", "phi2", "bands", "bands2", "power", "filt", "adjustment", "sigma", "spectra", "scale"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def start(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(previous, current) states of n members: (n, L, H, W2, 2) each, real views of the spectra."""
        prev, cur = (torch.view_as_real(x).expand(n, -1, -1, -1, -1).clone() for x in self.spectra)
        return prev, cur

    def step(
        self, prev: torch.Tensor, cur: torch.Tensor, gens: list[torch.Generator], batched: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One AR(2) step of every member with fresh noise: (cur, next state, next field (n, H, W) dBR).

        ``batched``: every member and level in one broadcast operation (a GPU's way; the same arithmetic)
        instead of one level of one member at a time (a CPU's: each pass stays in cache)."""
        nxt = self._advance(prev, cur, gens, self.phi1, self.phi2, batched)
        return cur, nxt, self._field(nxt)

    def perturb(self, cur: torch.Tensor, gens: list[torch.Generator], batched: bool = False) -> torch.Tensor:
        """``cur`` (n, L, H, W2, 2) plus one innovation per member from ``gens``: the state a member
        starts from with ``initial_perturbation="innovation"`` (the arithmetic of ``step`` with phi1 = 1,
        phi2 = 0)."""
        one = torch.ones_like(self.phi1)
        return self._advance(cur, cur, gens, one, torch.zeros_like(self.phi2), batched)

    def _advance(
        self,
        prev: torch.Tensor,
        cur: torch.Tensor,
        gens: list[torch.Generator],
        phi1: torch.Tensor,
        phi2: torch.Tensor,
        batched: bool,
    ) -> torch.Tensor:
        """phi1 cur + phi2 prev + each member's innovation (fresh noise from ``gens``): (n, L, H, W2, 2)."""
        n = len(gens)
        spec = noise_spectrum(gens, self.filt, self.shape)  # (n, H, W2)
        re_im = torch.view_as_real(spec)  # (n, H, W2, 2)
        power = (re_im[..., 0].square() + re_im[..., 1].square()).reshape(n, -1)  # (n, H W2): |X|^2
        var = power.to(self.power.dtype) @ self.power  # (n, L): each level's variance
        coef = (self.sigma.to(var.dtype) / var.sqrt().clamp_min(1e-12)).to(self.bands.dtype)  # (n, L)
        # (n, L, H, W2, 2): the noise's levels, normalised, times innovation std x adjustment, plus the
        # AR(2) terms; one level of one member at a time (1 MB at 512 x 512: its passes stay in cache), the
        # bands carrying the real/imaginary axis (a broadcast innermost axis of 2 runs at half speed)
        if batched:
            w = self.bands2[None] * coef[:, :, None, None, None]  # (n, L, H, W2, 2)
            return (re_im[:, None] * w).addcmul_(phi1, cur).addcmul_(phi2, prev)
        nxt, w = torch.empty_like(cur), torch.empty_like(self.bands2[0])
        for j in range(n):
            for k in range(self.bands2.shape[0]):
                torch.mul(self.bands2[k], coef[j, k], out=w)
                torch.mul(re_im[j], w, out=nxt[j, k])
                nxt[j, k].addcmul_(phi1[k], cur[j, k]).addcmul_(phi2[k], prev[j, k])
        return nxt

    def _field(self, state: torch.Tensor) -> torch.Tensor:
        """The levels of ``state`` (n, L, H, W2, 2) recombined with the last frame's statistics: (n, H, W) dBR."""
        n = state.shape[0]
        mixed = torch.matmul(self.scale, state.reshape(n, self.scale.shape[-1], -1))  # (n, 1, H W2 2)
        field = torch.fft.irfft2(torch.view_as_complex(mixed.reshape(n, *state.shape[-3:])), s=self.shape)
        return field + self.offset

    def mean_path(self, steps: int) -> torch.Tensor:
        """The cascade without noise, S-PROG's field before matching: (steps, H, W) dBR, lead 1 first. The
        same arithmetic as ``step`` with a zero innovation."""
        prev, cur = (torch.view_as_real(x)[None] for x in self.spectra)  # (1, L, H, W2, 2)
        out = []
        for _ in range(steps):
            nxt = self.phi1 * cur + self.phi2 * prev
            out.append(self._field(nxt)[0])
            prev, cur = cur, nxt
        return torch.stack(out)


def _rank_keys(x: np.ndarray) -> np.ndarray:
    """Sort keys of the float32 values x (P,), P < 2**32: (P,) int64 whose ascending order is x's,
    equal values by position (-0.0 before 0.0); the pixel index is ``key & 0xFFFFFFFF``. The value's
    bits as an order-preserving int32 in the high half, the index in the low half."""
    bits = x.view(np.int32)
    keys = (bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))).astype(np.int64)
    keys <<= 32
    keys |= np.arange(x.size, dtype=np.int64)
    return keys


MATCH_PARTITION_RUNS = 1024
"""Most runs of equal values in the matching's target for which it partitions the ranks at the runs'
starts rather than sorting them (numpy's partition at k points costs about a sort at some thousand)."""


def _match_members(fields: torch.Tensor, ref: np.ndarray, n_dry: int, threads: int, rate: bool = False) -> np.ndarray:
    """``cdf`` probability matching of fields (n, H, W): the pixel of rank r gets ``ref[r]`` (the last
    frame's values, ascending, (H W,)), the ``n_dry`` lowest-ranked its minimum: (n, H, W) float32;
    ``rate``: ref in dBR and the values given in mm/h (0 below ``WET_DBR``), converted once per rank
    rather than per pixel of every member.

    The ranking is the costly part. The target is runs of equal values (the dry pixels, radar data's
    quantised rates), and the pixels whose ranks fall in one run get the same value whatever their order
    among themselves, so a partition of ``_rank_keys`` at the runs' starts gives what a full sort gives
    (the keys are distinct), in about 0.5 of its time at 100 runs; a sort past ``MATCH_PARTITION_RUNS``
    runs; float64 fields (tests) by a stable argsort. One member per thread."""
    flat = np.ascontiguousarray(fields.reshape(fields.shape[0], -1).numpy())
    target = rank_values(torch.from_numpy(np.asarray(ref, dtype=np.float32)), n_dry, rate).numpy()  # (H W,)
    starts = np.flatnonzero(target[1:] != target[:-1]) + 1  # ranks where a run of equal values starts
    out = np.empty(flat.shape, dtype=np.float32)

    def one(i: int) -> None:
        if starts.size == 0:
            out[i] = target[0]
            return
        if flat.dtype != np.float32 or flat.shape[1] >= 2**32:
            out[i, np.argsort(flat[i], kind="stable")] = target
            return
        keys = _rank_keys(flat[i])
        if starts.size <= MATCH_PARTITION_RUNS:
            keys.partition(starts)
        else:
            keys.sort()
        out[i, keys & 0xFFFFFFFF] = target

    if threads > 1 and len(flat) > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(one, range(len(flat))))
    else:
        for i in range(len(flat)):
            one(i)
    return out.reshape(fields.shape)


def rank_values(ref: torch.Tensor, n_dry: int, rate: bool = False) -> torch.Tensor:
    """What ``cdf`` matching gives the pixel of each rank: ``ref`` (H W,) dBR ascending with its ``n_dry``
    lowest set to its minimum; ``rate``: in mm/h instead (0 below ``WET_DBR``), converted once per rank."""
    target = torch.where(torch.arange(ref.numel(), device=ref.device) < n_dry, ref[0], ref)
    return torch.where(target >= WET_DBR, 10.0 ** (target / 10.0), 0.0) if rate else target


def match_target(last: torch.Tensor, rate: bool = False) -> torch.Tensor:
    """``rank_values`` of the last frame ``last`` (H, W) dBR, on its device: (H W,)."""
    ref = last.reshape(-1).sort().values
    return rank_values(ref, int((ref < WET_DBR).sum()), rate)


def match_sorted(fields: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``cdf`` probability matching of fields (n, H, W) to ``target`` (H W,) (``match_target``) by one
    stable sort on their device: (n, H, W). The pixel of rank r gets ``target[r]``, equal values ranked
    by position: what ``_match_members`` gives, batched (a GPU's way), but for signed zeros (the sort
    counts -0.0 and 0.0 equal, the partition puts -0.0 first)."""
    flat = fields.reshape(fields.shape[0], -1)
    order = torch.sort(flat, dim=1, stable=True).indices
    out = torch.empty_like(flat, dtype=target.dtype)
    out.scatter_(1, order, target.expand_as(out))
    return out.reshape(fields.shape)


def _lagrangian_members(
    cascade: _Cascade,
    last: torch.Tensor,
    steps: int,
    gens: list[torch.Generator],
    threads: int,
    rate: bool = False,
    shift: torch.Tensor | None = None,
    initial: list[torch.Generator] | None = None,
) -> Iterator[np.ndarray]:
    """The members of ``cascade`` matched to ``last`` (H, W) dBR at each lead in turn: (len(gens), H, W)
    float32 dBR (``rate``: mm/h, 0 below ``WET_DBR``), lead 1 first. ``shift`` (steps, H, W) dBR: added to
    every member's field before the matching (``ensemble_forecast``'s ``centre`` less S-PROG's field);
    ``initial``: the members' generators of an initial perturbation (``_Cascade.perturb``), or None."""
    ref = last.reshape(-1).sort().values.numpy()
    n_dry = int((last < WET_DBR).sum())
    prev, cur = cascade.start(len(gens))
    if initial is not None:
        cur = cascade.perturb(cur, initial)
    for k in range(steps):
        prev, cur, field = cascade.step(prev, cur, gens)
        if shift is not None:
            field = field + shift[k].to(field.dtype)
        yield _match_members(field, ref, n_dry, threads, rate)


@torch.no_grad()
def perturbed_cascade(lag: torch.Tensor, steps: int, gens: list[torch.Generator], levels: int) -> torch.Tensor:
    """Members of the perturbed AR(2) cascade of ``lag`` (3, H, W) dBR in the Lagrangian frame, probability
    matched to its last frame: (len(gens), steps, H, W) dBR, one member per generator."""
    members = _lagrangian_members(_Cascade(lag, levels), lag[-1], steps, gens, torch.get_num_threads())
    return torch.from_numpy(np.stack(list(members), 1))


@torch.no_grad()
def ensemble_forecast(
    frames: np.ndarray,
    velocity: np.ndarray,
    steps: int,
    settings: EnsembleSettings = EnsembleSettings(),
    centre: np.ndarray | None = None,
) -> np.ndarray:
    """The ensemble of ``steps`` lead times from frames (T >= 3, H, W) mm/h, NaN = no data, moving with
    ``velocity`` (2, H, W) px per step (``motion.motion_field``): (members, steps, H, W) float32 mm/h.

    ``centre`` (steps, H, W) dBR, finite: a learned model's forecast in the frame of the last observation
    before its matching (``forecast.forecast_and_centre``). Each member's field becomes the centre plus
    the member's perturbation (its cascade field less the cascade without noise, which is S-PROG's)
    before the probability matching: the members spread around the model's forecast instead of S-PROG's,
    by the same perturbations, and keep the last frame's distribution as the model's forecast does. With
    no noise a member is the model's forecast. None: STEPS as above.

    NaN where the extrapolation of the last frame has no data (its source outside the grid or without
    data; with ``bps``, also along each member's own motion); a last frame without rain gives dry members
    (NaN as the unperturbed extrapolation). Uses torch's CPU threads as set by the caller.
    """
    x = np.asarray(frames, dtype=np.float32)
    if x.ndim != 3 or x.shape[0] < SPROG_AR_ORDER + 1:
        raise ValueError(f"frames: expected (T >= {SPROG_AR_ORDER + 1}, H, W), found {x.shape}")
    if int(steps) < 1:
        raise ValueError(f"steps: expected a positive number of lead times, found {steps}")
    mid = None
    if centre is not None:
        mid = torch.from_numpy(np.asarray(centre, dtype=np.float32))
        finite = bool(torch.isfinite(mid).all())
        if mid.shape != (int(steps), *x.shape[1:]) or not finite:
            raise ValueError(f"centre: expected finite (steps, H, W) = {(int(steps), *x.shape[1:])} dBR, found "
                             f"{tuple(mid.shape)}{'' if finite else ' with NaN'}")  # fmt: skip
    device = torch.device(settings.device)
    if device.type != "cpu":
        chunk = device_chunk(settings.members, settings.levels, *x.shape[1:])
        return _ensemble_batched(x, velocity, int(steps), settings, device, chunk, mid)
    caller = torch.get_num_threads()
    torch.set_num_threads(1)  # small operations first, then the members split among the caller's threads
    try:
        return _ensemble(x, velocity, int(steps), settings, caller, mid)
    finally:
        torch.set_num_threads(caller)


def _extrapolation(
    x: np.ndarray, velocity: np.ndarray, steps: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What every member shares, on ``device``: the motion (1, 2, H, W) px per step, where the last
    frame x[-1] has data (H, W), the unperturbed trajectories (1, steps, 2, H, W) and where the
    extrapolation of the last frame has data at each lead (steps, H, W)."""
    h, w = x.shape[1:]
    vel = torch.from_numpy(np.asarray(velocity, dtype=np.float32))[None].to(device)
    last_ok = torch.from_numpy(np.isfinite(x[-1])).to(device)
    disp = displacements(vel, steps)  # once for every chunk of members
    coverage = torch.where(last_ok, 0.0, float("nan")).expand(1, steps, 1, h, w).contiguous()
    reach = torch.isfinite(from_lagrangian(coverage, vel, disp)[0, :, 0])
    return vel, last_ok, disp, reach


def _ensemble(
    x: np.ndarray,
    velocity: np.ndarray,
    steps: int,
    s: EnsembleSettings,
    threads: int,
    centre: torch.Tensor | None = None,
) -> np.ndarray:
    """``ensemble_forecast`` of checked frames x (T, H, W) mm/h, members split among ``threads`` threads
    of one torch thread each (no barrier per operation; a member is the same whichever thread makes it);
    ``centre`` (steps, H, W) dBR: the checked centre."""
    vel, last_ok, disp, reach = _extrapolation(x, velocity, steps, torch.device("cpu"))
    last_ok = None if bool(last_ok.all()) else last_ok  # None: no missing data, no data masks to apply
    lag = lagrangian_dbr(x, velocity)
    out = np.empty((s.members, steps, *x.shape[1:]), dtype=np.float32)
    if not (lag[-1] >= WET_DBR).any():
        log.debug("ensemble: no rain in the last frame, dry members")
        out[:] = np.where(reach.numpy(), 0.0, np.nan)
        return out
    gens = member_generators(s.seed, s.members)
    initial = initial_generators(s.seed, s.members) if s.initial_perturbation == "innovation" else None
    cascade = _Cascade(lag, s.levels, s.noise_adjustment, s.seed, threads)
    if s.noise_adjustment != "none":
        log.debug("ensemble: %s noise adjustment %s", s.noise_adjustment, cascade.adjustment.tolist())
    shift = None if centre is None else centre - cascade.mean_path(steps)  # (steps, H, W) dBR
    chunk = s.chunk or s.members
    threads = max(1, min(threads, s.members))
    per_thread = -(-s.members // threads)
    parts = [(a, min(s.members, a + per_thread)) for a in range(0, s.members, per_thread)]

    draws = member_draws(s.seed, s.members) if s.motion_perturbation == "bps" else None

    def run(part: tuple[int, int]) -> None:
        """Members part[0]..part[1] - 1, ``chunk`` at a time, on one torch thread."""
        torch.set_num_threads(1)
        for start in range(part[0], part[1], chunk):
            stop = min(part[1], start + chunk)
            paths = None if draws is None else _trajectories(vel, draws[start:stop], s)
            first = None if initial is None else initial[start:stop]
            members = _lagrangian_members(cascade, lag[-1], steps, gens[start:stop], 1, True, shift, first)
            for k, matched in enumerate(members):
                out[start:stop, k] = _advect(torch.from_numpy(matched), k, paths, last_ok, disp, reach)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(run, parts))
    return out


def _ensemble_batched(
    x: np.ndarray,
    velocity: np.ndarray,
    steps: int,
    s: EnsembleSettings,
    device: torch.device,
    chunk: int,
    centre: torch.Tensor | None = None,
) -> np.ndarray:
    """``ensemble_forecast`` on ``device``: ``chunk`` members at a time (``device_chunk``), each operation
    batched over them (``_Cascade.step(batched=True)``, ``match_sorted``); the same members as ``_ensemble``
    up to float rounding. The cascade's estimation and the noise draws stay on the CPU (the same
    generators); each lead's members come back to the CPU as they are made."""
    vel, last_ok, disp, reach = _extrapolation(x, velocity, steps, device)
    last_ok = None if bool(last_ok.all()) else last_ok  # None: no missing data, no data masks to apply
    lag = lagrangian_dbr(x, velocity)
    out = np.empty((s.members, steps, *x.shape[1:]), dtype=np.float32)
    if not (lag[-1] >= WET_DBR).any():
        log.debug("ensemble: no rain in the last frame, dry members")
        out[:] = np.where(reach.cpu().numpy(), 0.0, np.nan)
        return out
    gens = member_generators(s.seed, s.members)
    initial = initial_generators(s.seed, s.members) if s.initial_perturbation == "innovation" else None
    cascade = _Cascade(lag, s.levels, s.noise_adjustment, s.seed, torch.get_num_threads())
    shift = None if centre is None else (centre - cascade.mean_path(steps)).to(device)  # (steps, H, W) dBR
    cascade.to(device)
    target = match_target(lag[-1].to(device), rate=True)  # (H W,) mm/h by rank
    draws = member_draws(s.seed, s.members) if s.motion_perturbation == "bps" else None
    for start in range(0, s.members, chunk):
        stop = min(s.members, start + chunk)
        paths = None if draws is None else _trajectories(vel, draws[start:stop], s)
        prev, cur = cascade.start(stop - start)
        if initial is not None:
            cur = cascade.perturb(cur, initial[start:stop], batched=True)
        for k in range(steps):
            prev, cur, field = cascade.step(prev, cur, gens[start:stop], batched=True)
            if shift is not None:
                field = field + shift[k].to(field.dtype)
            out[start:stop, k] = _advect(match_sorted(field, target), k, paths, last_ok, disp, reach)
    return out


def _advect(
    rate: torch.Tensor,
    k: int,
    paths: PerturbedTrajectories | None,
    last_ok: torch.Tensor | None,
    disp: torch.Tensor,
    reach: torch.Tensor,
) -> np.ndarray:
    """Lead ``k``'s members rate (n, H, W) mm/h, matched in the frame of the last observation, moved to
    the ground: (n, H, W) float32 on the CPU, NaN where the unperturbed extrapolation has no data
    (``reach``). Along the shared trajectories ``disp`` (1, steps, 2, H, W), or with ``paths`` each member
    along its own, NaN also where its source is outside or has no data (as ``baselines.steps_ensemble``
    masks STEPS'). ``last_ok`` (H, W): where the last frame has data; None where it has data everywhere."""
    if paths is None:
        rate = rate if last_ok is None else torch.where(last_ok, rate, 0.0)  # finite
        moved = warp(rate[None], disp[:, k], finite=True)[0]
    else:
        src = rate if last_ok is None else torch.where(last_ok, rate, float("nan"))
        moved = warp(src[:, None], paths.next(), finite=last_ok is None)[:, 0]
    return torch.where(reach[k], moved, float("nan")).cpu().numpy()


def device_chunk(members: int, levels: int, height: int, width: int) -> int:
    """Members a GPU makes at once: as many as keep six cascade states of (levels, H, W // 2 + 1, 2)
    float32 values each within ``DEVICE_CHUNK_VALUES``; at least 1, at most ``members``."""
    per_member = 6 * levels * height * (width // 2 + 1) * 2
    return max(1, min(int(members), DEVICE_CHUNK_VALUES // per_member))


def _trajectories(velocity: torch.Tensor, draws: np.ndarray, s: EnsembleSettings) -> PerturbedTrajectories:
    """The perturbed trajectories of the members with ``draws`` (n, 2) along ``velocity`` (1, 2, H, W)."""
    km, step = float(s.km_per_px or 0.0), float(s.step_min or 0.0)  # both positive (EnsembleSettings checks)
    return PerturbedTrajectories(velocity, draws, km, step, s.bps_parallel, s.bps_perpendicular)


__all__ = [
    "EnsembleSettings",
    "NOISE_ADJUSTMENT_ITERATIONS",
    "auto_noise_adjustment",
    "correlated_noise",
    "device_chunk",
    "ensemble_forecast",
    "initial_generators",
    "innovation_scale",
    "lagrangian_dbr",
    "match_sorted",
    "match_target",
    "member_generators",
    "noise_adjustment",
    "noise_spectrum",
    "noise_filter",
    "perturbed_cascade",
    "rank_values",
    "spectral_multiplicity",
    "tukey_window",
]

"""S-PROG's damped cascade in torch, in a frame that is already Lagrangian: what a learned residual starts from.

Seed (2003), as pySTEPS ``nowcasts.sprog`` computes it once the input frames have been warped into the
frame of the last one (``motion.to_lagrangian``): each of the last ``AR_ORDER + 1`` frames is
split into ``LEVELS`` spatial scales by pySTEPS' Gaussian band-pass filters (FFT), each level is
normalised by its mean and standard deviation, an AR(2) model per level (Yule-Walker from the lag-1
and lag-2 correlations of the inputs, the lag-2 one adjusted for stationarity as pySTEPS does) carries
it forward, and the levels are recombined with the last frame's statistics. Small scales decorrelate
fastest, so they fade first as lead time grows. Each forecast frame then keeps the wet area of the
last frame and takes its distribution (rank matching, ``cdf``). There is no advection here: it
happens outside, in the frame the caller works in. Batched, on any device, without gradients.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from nowcast.nowcasts import SPROG_AR_ORDER as AR_ORDER
from nowcast.nowcasts import SPROG_LEVELS as LEVELS


@functools.lru_cache(maxsize=8)
def _bandpass(height: int, width: int, levels: int) -> np.ndarray:
    """pySTEPS' ``filter_gaussian`` weights for an (height, width) field: (levels, height, width // 2 + 1).

    Ported (BSD 3-Clause, Copyright (c) 2019, PySteps developers; ``nowcast/LICENSES/pysteps.txt``)
    with its defaults (Gaussian scale 0.5 in log wavenumber, normalised, the mean in level 0), so that
    the model needs no ``import pysteps`` (about 3 s). ``tests/test_cascade.py`` holds it to pySTEPS.
    """
    if levels < 3:
        raise ValueError(f"levels: expected at least 3, found {levels}")
    longest = max(width, height)
    ry = np.arange(-(height // 2), height // 2 + height % 2)
    rx = np.arange(width // 2 + 1)
    shift = height // 2 if height % 2 == 0 else height // 2 + 1
    radius = np.roll(np.sqrt(rx[None, :] ** 2 + ry[:, None] ** 2), shift, axis=0)  # wavenumber
    q = pow(0.5 * longest, 1.0 / levels)
    centres = [0.5 * (pow(q, k - 1) + pow(q, k)) for k in range(1, levels + 1)]
    log_r = np.zeros(radius.shape)
    log_r[radius > 0] = np.log(radius[radius > 0]) / np.log(q)
    weights = np.stack([np.exp(-((log_r - np.log(c) / np.log(q)) ** 2.0) / (2.0 * 0.5**2.0)) for c in centres])
    weights /= weights.sum(axis=0)
    weights[:, 0, 0] = 0.0
    weights[0, 0, 0] = 1.0
    return weights


def decompose(fields: torch.Tensor, levels: int = LEVELS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fields (..., H, W) -> (normalised levels (..., L, H, W), means (..., L, 1, 1), stds (..., L, 1, 1)).

    Computed in the fields' dtype: float64 reproduces pySTEPS exactly, float32 (the model's) halves the
    time and memory of the FFTs, which dominate S-PROG on large grids."""
    h, w = fields.shape[-2:]
    weights = torch.from_numpy(_bandpass(h, w, levels)).to(fields.device, fields.dtype)
    spectrum = torch.fft.rfft2(fields)
    parts = torch.fft.irfft2(spectrum.unsqueeze(-3) * weights, s=(h, w))  # (..., L, H, W)
    means = parts.mean((-2, -1), keepdim=True)
    stds = parts.std((-2, -1), keepdim=True, unbiased=False)
    return (parts - means) / stds.clamp_min(1e-12), means, stds


def lag_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation over the last two dims: (..., H, W) x2 -> (...)."""
    a = a - a.mean((-2, -1), keepdim=True)
    b = b - b.mean((-2, -1), keepdim=True)
    return (a * b).sum((-2, -1)) / ((a * a).sum((-2, -1)) * (b * b).sum((-2, -1))).sqrt().clamp_min(1e-24)


def ar2_parameters(gamma1: torch.Tensor, gamma2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(phi1, phi2) of AR(2) from lag-1/lag-2 correlations, gamma2 first adjusted for stationarity
    (pySTEPS ``adjust_lag2_corrcoef2``), then Yule-Walker (``estimate_ar_params_yw``)."""
    g1 = gamma1.clamp(-0.999999, 0.999999)
    g2 = torch.maximum(gamma2, 2 * g1 * gamma2 - 1)
    g2 = torch.maximum(g2, (3 * g1**2 - 2 + 2 * (1 - g1**2) ** 1.5) / g1**2)
    phi1 = g1 * (1 - g2) / (1 - g1**2)
    phi2 = (g2 - g1**2) / (1 - g1**2)
    return phi1, phi2


def match_last(forecast: torch.Tensor, last: torch.Tensor, wet_threshold: float) -> torch.Tensor:
    """Each (H, W) field of forecast (N, S, H, W) with the wet area ratio and distribution of last (N, H, W):
    the top ``war`` fraction of its pixels get the last frame's values by rank, the rest its minimum.
    The last frame is sorted once for its S forecasts, which are ranked in one batched argsort."""
    n, s, h, w = forecast.shape
    flat_fc, flat_last = forecast.reshape(n, s, -1), last.reshape(n, 1, -1)
    ref = flat_last.sort(dim=2).values.expand(n, s, -1)  # ascending
    order = flat_fc.argsort(dim=2)
    ranks = torch.empty_like(order).scatter_(
        2, order, torch.arange(h * w, device=order.device).expand(n, s, -1)
    )  # 0 = driest
    out = torch.gather(ref, 2, ranks)
    dry = ranks < (flat_last < wet_threshold).sum(2, keepdim=True)  # pySTEPS' percentile mask of the wet area
    out = torch.where(dry, ref[..., :1].expand_as(out), out)
    return out.reshape(n, s, h, w)


@torch.no_grad()
def damped_cascade(frames: torch.Tensor, steps: int, wet_threshold: float, levels: int = LEVELS) -> torch.Tensor:
    """S-PROG's forecast, without advection, of frames (N, T >= 3, H, W) already in one frame of reference -> (N, steps, H, W).

    Values in a log-like space (dBR, or the model space of a ``dbz`` transform), finite (no-data filled
    with the minimum beforehand); ``wet_threshold``: the rain/no-rain limit in those units. A field
    without rain (nothing at or above the threshold in the last frame) is forecast unchanged.
    """
    if frames.shape[1] < AR_ORDER + 1:
        raise ValueError(f"frames: S-PROG needs at least {AR_ORDER + 1} frames, found {frames.shape[1]}")
    x = frames[:, -(AR_ORDER + 1) :]
    z, means, stds = decompose(x, levels)  # (N, 3, L, H, W), (N, 3, L, 1, 1)
    phi1, phi2 = ar2_parameters(lag_correlation(z[:, 2], z[:, 1]), lag_correlation(z[:, 2], z[:, 0]))  # (N, L)
    phi1, phi2 = phi1[..., None, None], phi2[..., None, None]
    prev, cur = z[:, 1], z[:, 2]
    last = x[:, -1]
    wet = (last >= wet_threshold).flatten(1).any(1)  # (N,)
    fields = []
    for _ in range(steps):
        prev, cur = cur, phi1 * cur + phi2 * prev
        fields.append((cur * stds[:, 2] + means[:, 2]).sum(1))  # (N, H, W)
    if not fields:
        return frames.new_zeros((frames.shape[0], 0, *frames.shape[2:]))
    out = match_last(torch.stack(fields, 1), last, wet_threshold)  # (N, steps, H, W)
    return torch.where(wet[:, None, None, None], out, last[:, None]).to(frames.dtype)

"""Layers every model kind shares: padding to the stride, the time-step channel, Gaussian smoothing."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_smooth(fields: Tensor, sigma: float) -> Tensor:
    """fields (..., H, W) smoothed by a Gaussian of standard deviation ``sigma`` pixels (separable, kernel
    radius ceil(3 sigma), edges mirrored as scipy.ndimage's "mirror"; replicated where a side is shorter
    than the radius).

    Each pass is one matrix product with a banded (n, n) matrix that holds the kernel and the edge
    handling (``_smoothing_matrix``). On a 2-core CPU at sigma = 8 it is about 20 times faster than
    two 49-tap 1-channel convolutions forward and backward on a 128 x 128 training batch, and 2.5-4
    times in predict's forward pass (docs/default-model.md).
    """
    radius = max(1, math.ceil(3 * sigma))
    shape = fields.shape
    h, w = shape[-2:]
    mode = "mirror" if min(h, w) > radius else "nearest"
    rows = _smoothing_matrix(h, float(sigma), radius, mode).to(fields.device, fields.dtype)  # (H, H)
    cols = _smoothing_matrix(w, float(sigma), radius, mode).to(fields.device, fields.dtype)  # (W, W)
    return (rows @ fields.reshape(-1, h, w) @ cols.T).reshape(shape)


@functools.lru_cache(maxsize=16)
def _smoothing_matrix(n: int, sigma: float, radius: int, mode: str) -> Tensor:
    """(n, n) float64 matrix M with (M @ v)[i] = sum over d in [-radius, radius] of k[d] v[i + d], k the
    normalised Gaussian of ``sigma``, indices outside 0..n-1 mirrored (``mirror``: -1 -> 1; needs
    radius < n) or clamped (``nearest``)."""
    d = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (d / sigma) ** 2)
    kernel /= kernel.sum()
    i = np.arange(n)[:, None]
    j = i + d[None, :]  # (n, 2 radius + 1) source of each tap
    if mode == "mirror":
        j = np.abs(j)
        j = np.where(j > n - 1, 2 * (n - 1) - j, j)
    else:
        j = np.clip(j, 0, n - 1)
    m = np.zeros((n, n))
    np.add.at(m, (np.broadcast_to(i, j.shape), j), np.broadcast_to(kernel, j.shape))
    return torch.from_numpy(m)


def pad_to_multiple(frames: Tensor, stride: int) -> Tensor:
    """frames (B, T, C, H, W) padded at the bottom and right, by replicating the last row and column, to
    a height and width that are multiples of ``stride``; as they are when they already are."""
    B, T = frames.shape[:2]
    ph, pw = -frames.shape[-2] % stride, -frames.shape[-1] % stride
    if not (ph or pw):
        return frames
    return F.pad(frames.flatten(0, 1), (0, pw, 0, ph), mode="replicate").unflatten(0, (B, T))


def add_step_channel(frames: Tensor, time_step: float | Tensor | None) -> Tensor:
    """frames (B, T, C, H, W) -> (B, T, C + 1, H, W): a constant channel of the time step (minutes / 10).

    time_step: seconds between frames, a number or (B,) tensor (``model.step_input``).
    """
    if time_step is None:
        raise ValueError("time_step: expected the data's step in seconds (model.step_input), found None")
    B, T, _, H, W = frames.shape
    minutes = torch.as_tensor(time_step, dtype=frames.dtype, device=frames.device).reshape(-1) / 60.0
    plane = (minutes / 10.0).expand(B).view(B, 1, 1, 1, 1).expand(B, T, 1, H, W)
    return torch.cat([frames, plane.to(frames.dtype)], dim=2)

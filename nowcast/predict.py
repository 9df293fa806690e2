"""Forecasts: rain-rate arrays in, rain-rate arrays out (the model's part of predict, evaluate and validation)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from nowcast.runtime import autocast
from nowcast.transforms import Transform

log = logging.getLogger(__name__)


def forecast_array(
    model: torch.nn.Module,
    transform: Transform,
    frames: np.ndarray,
    steps: int,
    *,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> np.ndarray:
    """Forecast ``steps`` frames from observed rain rates.

    frames: (B, T_in, C, H, W) mm/h, NaN = no data. Returns (B, steps, C, H, W) float32 mm/h, NaN
    wherever the last input frame has no data. The model runs in inference mode on ``device``.
    """
    device = torch.device(device)
    x = np.nan_to_num(transform.forward(frames), nan=0.0)
    with torch.inference_mode(), autocast(device, precision):
        xt = torch.from_numpy(x).to(device)
        out = model(xt, steps)
    pred = transform.inverse(out.float().cpu().numpy())  # (B, steps, C, H, W)
    nodata = ~np.isfinite(frames[:, -1:])  # (B, 1, C, H, W)
    return np.where(nodata, np.float32(np.nan), pred).astype(np.float32)

"""Training losses in model space: masked MSE + MAE (optionally HKO-7 intensity-balanced) and a soft CSI."""

from __future__ import annotations

import math

import torch

HKO7_THRESHOLDS = (0.5, 2.0, 5.0, 10.0, 30.0)
"""Rain rates (mm/h) at which the HKO-7 balanced loss weight steps up."""
HKO7_WEIGHTS = (1.0, 1.0, 2.0, 5.0, 10.0, 30.0)
"""Weight below the first threshold, then above each threshold."""


def masked_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    kind: str = "mse+mae",
    level_weights: torch.Tensor | None = None,
    levels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over valid pixels of (MSE + MAE) in model space, optionally intensity-weighted.

    pred, target: (B, T, C, H, W); target is NaN where there is no data. ``levels`` are model-space
    thresholds and ``level_weights`` the weight below the first and above each (len(levels) + 1).
    """
    mask = torch.isfinite(target)
    tgt = torch.where(mask, target, torch.zeros((), dtype=target.dtype, device=target.device))
    diff = pred.float() - tgt
    err = torch.zeros_like(diff)
    if "mse" in kind:
        err = err + diff.square()
    if "mae" in kind:
        err = err + diff.abs()
    weight = mask.to(diff.dtype)
    if levels is not None and level_weights is not None:
        weight = weight * level_weights[torch.bucketize(tgt, levels, right=True)]
    return (err * weight).sum() / mask.sum().clamp(min=1)


CSI_SOFTNESS = 0.02
"""Width of the sigmoid that stands in for the threshold in ``soft_csi_loss``, in model-space units
(dbz transform: 1.2 dBZ)."""


def soft_csi_loss(pred: torch.Tensor, target: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - CSI over lead times and ``levels``, pooled over the batch and valid pixels.

    pred, target: (B, T, C, H, W) in model space; target is NaN where there is no data. ``levels``:
    (K,) model-space thresholds. A forecast pixel counts as an event with weight
    ``sigmoid((pred - level) / CSI_SOFTNESS)``, so the score is differentiable; observed events are
    ``target >= level``. Lead times and levels without any observed event are left out (they carry no
    gradient); returns 0 when none has one. Under DDP each rank pools its own share of the batch.
    Validation loss (and so ``best.pt``) leaves this term out, so it stays comparable across runs.
    """
    pred = pred.float()
    mask = torch.isfinite(target)
    tgt = torch.where(mask, target, torch.full((), -math.inf, dtype=target.dtype, device=target.device))
    lv = levels.to(pred.dtype).view(-1, 1, 1, 1, 1, 1)  # (K, 1, 1, 1, 1, 1) against (B, T, C, H, W)
    p = torch.sigmoid((pred - lv) / CSI_SOFTNESS) * mask  # (K, B, T, C, H, W)
    o = (tgt >= lv).to(p.dtype)
    dims = (1, 3, 4, 5)  # sum over batch, channel and space: one score per level and lead time
    hits = (p * o).sum(dims)
    observed = o.sum(dims)
    csi = hits / (p.sum(dims) + observed - hits).clamp(min=1e-6)  # (K, T)
    has_event = observed > 0
    if not has_event.any():
        return pred.sum() * 0.0
    return (1.0 - csi[has_event]).mean()

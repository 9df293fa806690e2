"""Backward semi-Lagrangian advection in torch (``grid_sample``), batched, on any device.

The trajectory ending at each pixel is integrated step by step exactly as
``pysteps.extrapolation.semilagrangian`` does with its defaults (one midpoint iteration per step,
bilinear motion interpolation clamped at the edges, bilinear interpolation of the field);
``tests/test_motion.py`` holds it to pySTEPS on real radar frames.

Conventions (pySTEPS'): a velocity field is (B, 2, H, W) with component 0 along x (columns, to the
right) and 1 along y (rows, down), in pixels per step. A displacement is where the value at a pixel
comes from, relative to the pixel: ``field_k(x) = field_0(x + D_k(x))``. A warped pixel is NaN when its
source lies outside the grid or bilinear interpolation gives weight to a no-data pixel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import Tensor


def _pixel_grid(h: int, w: int, device: torch.device, dtype: torch.dtype, top: int = 0, left: int = 0) -> Tensor:
    """(1, 2, h, w): x (column) and y (row) index of every pixel of an h x w window whose top-left pixel is
    (``top``, ``left``) of the grid."""
    import torch

    ys, xs = torch.meshgrid(
        torch.arange(top, top + h, device=device, dtype=dtype),
        torch.arange(left, left + w, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([xs, ys])[None]


def _normalised(coords: Tensor, h: int, w: int) -> Tensor:
    """Absolute pixel coordinates (B, 2, h', w') on an (h, w) grid -> ``grid_sample`` grid (B, h', w', 2)
    with align_corners: a permuted view (``grid_sample`` reads it at the same speed), two passes
    instead of the five of scaling each component and stacking them; the same values."""
    import torch

    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=coords.dtype, device=coords.device)
    return (coords * scale[:, None, None]).sub_(1.0).permute(0, 2, 3, 1)


def _sample_clamped(field: Tensor, coords: Tensor) -> Tensor:
    """Bilinear samples of ``field`` (B, N, H, W) at ``coords`` (B, 2, h, w), clamped at the edges."""
    import torch.nn.functional as F

    grid = _normalised(coords, *field.shape[-2:])
    return F.grid_sample(field, grid, mode="bilinear", padding_mode="border", align_corners=True)


def displacements(velocity: Tensor, steps: int, margin: int = 0) -> Tensor:
    """Backward trajectories of ``steps`` time steps along a constant motion field.

    velocity: (B, 2, H, W) pixels per step. Returns (B, steps, 2, H - 2 margin, W - 2 margin): for lead k,
    the offset from each pixel (of the field without its ``margin``) to where the value found there after
    k steps comes from; trajectories may leave the inner window and use the motion of the margin. Midpoint
    integration, one iteration per step, as ``pysteps.extrapolation.semilagrangian.extrapolate`` with
    ``n_iter=1``; each pixel's trajectory is the same whatever the margin.
    """
    import torch

    if velocity.dim() != 4 or velocity.shape[1] != 2:
        raise ValueError(f"velocity: expected (B, 2, H, W), found {tuple(velocity.shape)}")
    m = int(margin)
    H, W = velocity.shape[-2:]
    base = _pixel_grid(H - 2 * m, W - 2 * m, velocity.device, velocity.dtype, m, m)
    inc = velocity[..., m : H - m, m : W - m]
    disp = torch.zeros_like(inc)
    out = []
    for _ in range(int(steps)):
        inc = _sample_clamped(velocity, base + disp - inc / 2.0)
        disp = disp - inc
        inc = _sample_clamped(velocity, base + disp)
        out.append(disp)
    return torch.stack(out, 1) if out else disp.new_zeros((disp.shape[0], 0, *disp.shape[1:]))


def advance(velocity: Tensor, displacement: Tensor | None) -> Tensor:
    """The backward trajectories one step further along ``velocity`` (B, 2, H, W) px per step, this step's
    motion: (B, 2, H, W). ``displacement``: (B, 2, H, W) so far, None at the start.

    One step of ``pysteps.extrapolation.semilagrangian.extrapolate`` given ``displacement_prev`` (one
    midpoint iteration), as pySTEPS' STEPS moves members whose motion changes from step to step;
    ``displacements`` of a constant motion equals ``advance`` repeated.
    """
    import torch

    base = _pixel_grid(*velocity.shape[-2:], velocity.device, velocity.dtype)
    if displacement is None:
        displacement = torch.zeros_like(velocity)
        inc = velocity
    else:
        inc = _sample_clamped(velocity, base + displacement)
    inc = _sample_clamped(velocity, base + displacement - inc / 2.0)
    return displacement - inc


def _inside(coords: Tensor, h: int, w: int, eps: float = 1e-4) -> Tensor:
    """(B, H, W): whether absolute pixel coordinates (B, 2, H, W) lie on an ``h`` x ``w`` grid."""
    x, y = coords[:, 0], coords[:, 1]
    return (x >= -eps) & (x <= w - 1 + eps) & (y >= -eps) & (y <= h - 1 + eps)


def outside(displacement: Tensor) -> Tensor:
    """(B, H, W): pixels whose source (the pixel plus ``displacement``, (B, 2, H, W)) lies outside the
    grid, where ``warp`` gives NaN whatever the field."""
    h, w = displacement.shape[-2:]
    return ~_inside(_pixel_grid(h, w, displacement.device, displacement.dtype) + displacement, h, w)


def warp(field: Tensor, displacement: Tensor, margin: int = 0, finite: bool = False) -> Tensor:
    """``field`` (B, N, H, W) sampled at each pixel of its inner window (without ``margin``) plus
    ``displacement`` (B, 2, H - 2 margin, W - 2 margin): (B, N, H - 2 margin, W - 2 margin).

    Bilinear; NaN where the source lies outside the grid or interpolation touches a no-data (NaN) pixel
    of that channel. ``finite``: the caller knows ``field`` has no NaN, and the second interpolation
    (of the data mask) is skipped: half the work, the same result.
    """
    import torch
    import torch.nn.functional as F

    H, W = field.shape[-2:]
    h, w = displacement.shape[-2:]
    coords = _pixel_grid(h, w, field.device, displacement.dtype, margin, margin) + displacement
    grid = _normalised(coords, H, W).to(field.dtype)
    nan = torch.full((), float("nan"), dtype=field.dtype, device=field.device)
    if finite:
        values = F.grid_sample(field, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return torch.where(_inside(coords, H, W)[:, None], values, nan)
    valid = torch.isfinite(field)
    filled = torch.where(valid, field, torch.zeros((), dtype=field.dtype, device=field.device))
    values = F.grid_sample(filled, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    weight = F.grid_sample(valid.to(field.dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    eps = 1e-4
    ok = _inside(coords, H, W)[:, None] & (weight > 1.0 - eps)  # (B, 1, h, w)
    return torch.where(ok, values, nan)

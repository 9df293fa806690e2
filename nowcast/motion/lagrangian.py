"""The Lagrangian frame: frames moved into the frame of the last observation, and forecasts moved out.

One transform for training and inference. ``to_lagrangian`` warps a window (inputs, and in training the
targets too) into the frame of its last input frame; ``from_lagrangian`` advects a forecast made there
back to the ground. Both are batched torch on any device, built on ``motion.advection``. Motion is a
(B, 2, H, W) field in pixels per step of the data (``motion.flow.motion_field``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nowcast.motion.advection import displacements, warp

if TYPE_CHECKING:
    from torch import Tensor


def to_lagrangian(
    frames: Tensor,
    velocity: Tensor,
    in_frames: int | None = None,
    margin: int = 0,
    displacement: Tensor | None = None,
) -> Tensor:
    """Frames (B, T, C, H, W) in the frame of frame ``in_frames - 1`` (default: the last), without
    ``margin`` pixels on each side: (B, T, C, H - 2 margin, W - 2 margin).

    Input frame ``in_frames - 1 - j`` is advected j steps forward along ``velocity`` (B, 2, H, W) px per
    step; a later frame ``in_frames - 1 + k`` (a training target) is advected k steps backward, so a
    forecast advected k steps forward (``from_lagrangian``) lands on it. NaN where the source lies
    outside the grid or has no data. The margin (training crops) is where rain moving into the window
    comes from: each inner pixel gets exactly what a warp of the whole field gives it.
    ``displacement`` (B, >= in_frames - 1, 2, H, W): ``displacements(velocity, n)`` when the caller has
    them (a forecast's trajectories; their first steps are these, bit for bit), without a margin.
    """
    import torch

    n_in = frames.shape[1] if in_frames is None else int(in_frames)
    n_out = frames.shape[1] - n_in
    m = int(margin)
    H, W = frames.shape[-2:]
    velocity = velocity.to(frames.dtype)
    out = [frames[:, n_in - 1, ..., m : H - m, m : W - m]]
    if n_in > 1:
        reuse = displacement is not None and m == 0 and displacement.shape[1] >= n_in - 1
        back = displacement if reuse else displacements(velocity, n_in - 1, m)  # (B, >= n_in - 1, 2, h, w)
        out = [warp(frames[:, n_in - 1 - j], back[:, j - 1], m) for j in range(n_in - 1, 0, -1)] + out
    if n_out > 0:
        ahead = displacements(-velocity, n_out, m)  # (B, n_out, 2, h, w)
        out += [warp(frames[:, n_in - 1 + k], ahead[:, k - 1], m) for k in range(1, n_out + 1)]
    return torch.stack(out, 1)


def from_lagrangian(
    forecast: Tensor, velocity: Tensor, displacement: Tensor | None = None, finite: bool = False
) -> Tensor:
    """A forecast (B, steps, C, H, W) made in the frame of the last observation, frame k advected k steps
    forward along ``velocity`` (B, 2, H, W) px per step: the forecast on the ground, same shape.
    ``displacement``: ``displacements(velocity, steps)`` when the caller already has them; ``finite``:
    the forecast has no NaN (``warp``'s shortcut)."""
    import torch

    steps = forecast.shape[1]
    disp = displacements(velocity.float(), steps) if displacement is None else displacement
    disp = disp.to(forecast.device)  # (B, steps, 2, H, W)
    return torch.stack([warp(forecast[:, k], disp[:, k], finite=finite) for k in range(steps)], 1)


def persistence_frames(frames: Tensor, velocity: Tensor, steps: int, margin: int = 0, history: int = 1) -> Tensor:
    """The last frame of ``frames`` (B, T, C, H, W) as persistence would forecast it on the ground, in the
    Lagrangian frame of each lead: (B, steps, C, H - 2 margin, W - 2 margin), lead k = the last frame
    advected k steps backward along ``velocity`` (B, 2, H, W) px per step, as ``to_lagrangian`` moves a
    target observed k steps later. Where rain stays on the ground, this is where the forecast made in the
    Lagrangian frame must put it. NaN where the source lies outside the grid or has no data.

    ``history`` > 1: the last ``history`` frames, each moved the same way, stacked along channels, the
    last first: (B, steps, history * C, h, w). Rain fixed to the ground lands on the same pixels in all
    of them; moving rain is shifted by the motion from one to the next."""
    B, _, C, H, W = frames.shape
    last = frames[:, -history:].flip(1).reshape(B, 1, history * C, H, W)  # the last first
    held = last.expand(B, steps + 1, history * C, H, W)  # seen again at every lead
    return to_lagrangian(held, velocity, 1, margin)[:, 1:]

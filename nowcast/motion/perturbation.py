"""Motion perturbations of ensemble members: pySTEPS' ``bps`` method (Bowler, Pierce and Seed 2006), batched.

Each member j draws two numbers once, ``eps_par`` and ``eps_perp`` (Laplace, scale 1/sqrt(2): unit
variance), and at lead time t (minutes) moves along the velocity V plus

    P_j(t) = (f_par(t) eps_par V / |V| + f_perp(t) eps_perp V_perp / |V|) / vsf,   f(t) = a t**b + c (km/h),

with V_perp = (-V_y, V_x) and vsf = 60 km_per_px / step_min the factor from pixels per step to km/h
(zero where |V| = 0). The parameters (a, b, c) default to Bowler et al.'s, as pySTEPS'
``get_default_params_bps_par`` / ``_perp``. As in pySTEPS' STEPS, lead k's trajectory continues lead
k - 1's by one semi-Lagrangian step along V + P_j(k step_min) (``advection.advance``), so the displacement
spreads faster than linearly with lead time. pySTEPS leaves out Bowler et al.'s bias adjustment; so does
this.

Ported from pySTEPS ``noise.motion.initialize_bps`` / ``generate_bps`` and the trajectory update of
``nowcasts.utils.nowcast_main_loop``; BSD 3-Clause, Copyright (c) 2019, PySteps developers
(``nowcast/LICENSES/pysteps.txt``). Differences: torch, members batched; each member's draws come from
its own seed (``member_draws``), so they do not depend on the number of members.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from nowcast.motion.advection import advance

if TYPE_CHECKING:
    from torch import Tensor

BPS_PARALLEL = (10.88, 0.23, -7.68)
"""(a, b, c) of the parallel perturbation's standard deviation a t**b + c (km/h, t in min): Bowler et al. 2006."""
BPS_PERPENDICULAR = (5.76, 0.31, -2.72)
"""(a, b, c) of the perpendicular perturbation's standard deviation (km/h, t in min): Bowler et al. 2006."""
LAPLACE_SCALE = 1.0 / math.sqrt(2.0)
"""Scale of the Laplace draws: unit variance, mean absolute value 1/sqrt(2)."""


def bps_std(params: tuple[float, float, float], lead_min: float) -> float:
    """``a t**b + c`` of ``params`` (a, b, c) at lead ``lead_min`` (min): the perturbation's scale in km/h."""
    a, b, c = (float(p) for p in params)
    return a * float(lead_min) ** b + c


def member_draws(seed: int, members: int) -> np.ndarray:
    """(members, 2) float64: (eps_par, eps_perp) of each member, Laplace of scale ``LAPLACE_SCALE``; member
    j's from ``SeedSequence(seed, spawn_key=(j, 0))``, a child of the sequence its noise comes from
    (``nowcasts.ensemble.member_generators``), so the noise is the same with or without perturbation."""
    out = np.empty((int(members), 2))
    for j in range(int(members)):
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(j, 0)))
        out[j] = rng.laplace(scale=LAPLACE_SCALE, size=2)
    return out


def unit_vectors(velocity: Tensor) -> tuple[Tensor, Tensor]:
    """(parallel, perpendicular) unit vectors of ``velocity`` (B, 2, H, W): each (B, 2, H, W), zero where
    |V| <= 1e-12; perpendicular = (-y, x) of parallel."""
    import torch

    norm = torch.linalg.vector_norm(velocity, dim=1, keepdim=True)  # (B, 1, H, W)
    par = torch.where(norm > 1e-12, velocity / norm.clamp_min(1e-12), torch.zeros((), dtype=velocity.dtype))
    return par, torch.stack([-par[:, 1], par[:, 0]], 1)


class PerturbedTrajectories:
    """The backward trajectories of n members, each along its own perturbed motion, one lead at a time.

    velocity: (1, 2, H, W) px per step; draws: (n, 2) (eps_par, eps_perp); km_per_px, step_min: the grid's
    pixel size (km) and time step (min); par, perp: (a, b, c) of ``bps_std``. ``next()`` returns the
    displacements (n, 2, H, W) of the next lead (1, 2, ...) as ``advection.displacements`` gives them for
    an unperturbed motion (equal to them when the draws or the parameters are zero).
    """

    def __init__(
        self,
        velocity: Tensor,
        draws: np.ndarray,
        km_per_px: float,
        step_min: float,
        par: tuple[float, float, float] = BPS_PARALLEL,
        perp: tuple[float, float, float] = BPS_PERPENDICULAR,
    ) -> None:
        import torch

        if velocity.dim() != 4 or velocity.shape[:2] != (1, 2):
            raise ValueError(f"velocity: expected (1, 2, H, W), found {tuple(velocity.shape)}")
        self.velocity = velocity
        self.par_dir, self.perp_dir = unit_vectors(velocity)  # (1, 2, H, W) each
        eps = torch.as_tensor(np.asarray(draws, dtype=np.float64), dtype=velocity.dtype, device=velocity.device)
        self.eps_par, self.eps_perp = eps[:, 0, None, None, None], eps[:, 1, None, None, None]  # (n, 1, 1, 1)
        self.vsf = 60.0 * float(km_per_px) / float(step_min)  # px/step -> km/h
        self.step_min = float(step_min)
        self.par, self.perp = par, perp
        self.lead = 0
        self.disp: Tensor | None = None

    def velocity_at(self, lead: int, members: slice = slice(None)) -> Tensor:
        """(n, 2, H, W) px per step: every member's perturbed motion at lead ``lead`` (steps); ``members``:
        those members only."""
        t = lead * self.step_min
        g_par, g_perp = bps_std(self.par, t) / self.vsf, bps_std(self.perp, t) / self.vsf
        eps_par, eps_perp = self.eps_par[members], self.eps_perp[members]
        return self.velocity + (g_par * eps_par) * self.par_dir + (g_perp * eps_perp) * self.perp_dir

    def next(self) -> Tensor:
        """The displacements (n, 2, H, W) of the next lead time, one member at a time (its fields stay
        in cache: 0.9 of the time of the batch, the same values)."""
        import torch

        self.lead += 1
        parts = []
        for j in range(self.eps_par.shape[0]):
            one = slice(j, j + 1)
            parts.append(advance(self.velocity_at(self.lead, one), None if self.disp is None else self.disp[one]))
        self.disp = torch.cat(parts)
        return self.disp


__all__ = [
    "BPS_PARALLEL",
    "BPS_PERPENDICULAR",
    "LAPLACE_SCALE",
    "PerturbedTrajectories",
    "bps_std",
    "member_draws",
    "unit_vectors",
]

"""Ensembles in the rolling verification (``nowcast evaluate --members N``, DESIGN section 8).

With an ``EnsembleEvaluation``, every case also runs the ensemble methods on the same input frames:

- ``ENSEMBLE`` ("ensemble"): ours, ``nowcasts.ensemble.ensemble_forecast`` (always);
- ``STEPS`` ("steps"): pySTEPS' STEPS, ``nowcasts.baselines.steps_ensemble`` (when ``steps`` is among
  the baselines), with the same members, seed and motion (``motion.motion_field``, cached per frame set);
- ``<model>_ensemble`` (``centred_name``): ours centred on a verified model's forecast (``predict --centre
  model``), for every model that can centre one (``forecast.centre_problem``): the same members' noise,
  so its difference from ``ensemble`` is what the learned part adds.

Each ensemble method gets a ``probscores.ProbScores`` under its name in ``Evaluation.prob``, and its
ensemble mean is scored as a deterministic method ``<name>_mean`` (``mean_name``) through ``metrics``, in
the same tables as the model and the baselines. The seed of a case comes from ``--seed`` and the case's
(segment, window start) alone (``case_seed``), so a torchrun share scores its cases exactly as one
process over every case does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nowcast.errors import NowcastError
from nowcast.nowcasts import (
    DEFAULT_INITIAL_PERTURBATION,
    DEFAULT_MOTION_PERTURBATION,
    DEFAULT_NOISE_ADJUSTMENT,
    MOTION_PERTURBATIONS,
    initial_perturbation_problem,
    initial_perturbation_words,
    noise_adjustment_problem,
    noise_adjustment_words,
    noise_gain,
)
from nowcast.verification import probscores

log = logging.getLogger(__name__)

ENSEMBLE = "ensemble"
"""Method name of our STEPS-like ensemble (``nowcasts.ensemble``)."""
STEPS = "steps"
"""Method name (and ``--baselines`` entry) of pySTEPS' STEPS (``baselines.steps_ensemble``)."""
MEAN_SUFFIX = "_mean"
"""An ensemble method's mean is scored as the deterministic method ``<name>_mean``."""
CENTRED_SUFFIX = "_ensemble"
"""Our ensemble centred on the verified model ``<model>`` is the method ``<model>_ensemble``."""


@dataclass(frozen=True)
class EnsembleEvaluation:
    """How ``evaluate`` runs the ensembles: ``members`` per method, ``seed`` (>= 0) of the whole evaluation."""

    members: int
    seed: int = 0
    motion_perturbation: str = DEFAULT_MOTION_PERTURBATION
    """``bps`` or ``none`` (``nowcasts.ensemble.EnsembleSettings``), for both ensembles; ``bps`` needs the
    grid's pixel size (``io.pixel_size_km``)."""
    noise_adjustment: str = DEFAULT_NOISE_ADJUSTMENT
    """``none``, ``auto`` or ``fixed``: per-level multipliers of the noise, for both ensembles (pySTEPS'
    ``noise_stddev_adj``; ``nowcasts.ensemble.EnsembleSettings``); or a gain on every level, ours only."""
    initial_perturbation: str = DEFAULT_INITIAL_PERTURBATION
    """How our members start (``nowcasts.ensemble.EnsembleSettings``); pySTEPS' STEPS has no such setting."""

    def __post_init__(self) -> None:
        problems = []
        if problem := initial_perturbation_problem(self.initial_perturbation):
            problems.append(f"initial perturbation: {problem}")
        if problem := noise_adjustment_problem(self.noise_adjustment):
            problems.append(f"noise adjustment: {problem}")
        if self.motion_perturbation not in MOTION_PERTURBATIONS:
            problems.append(
                f"motion perturbation: expected one of {', '.join(MOTION_PERTURBATIONS)}, "
                f"found {self.motion_perturbation!r}"
            )
        if int(self.members) < 1:
            problems.append(f"members: expected at least 1, found {self.members}")
        if int(self.seed) < 0:
            problems.append(f"seed: expected 0 or a positive integer, found {self.seed}")
        if problems:
            raise ValueError("; ".join(problems))


def mean_name(method: str) -> str:
    """The deterministic method name of an ensemble method's mean: ``ensemble`` -> ``ensemble_mean``."""
    return method + MEAN_SUFFIX


def centred_name(model: str) -> str:
    """The method name of our ensemble centred on the model ``model``: ``model`` -> ``model_ensemble``."""
    return model + CENTRED_SUFFIX


def split_baselines(baselines: Sequence[str], ensemble: EnsembleEvaluation | None) -> tuple[list[str], list[str]]:
    """``--baselines`` as (deterministic baselines, ensemble methods), names stripped and lower case.

    The ensemble methods are ``ENSEMBLE`` and, if asked for, ``STEPS``; none without ``ensemble``.
    Raises NowcastError for ``steps`` without ``ensemble`` (it needs a number of members) or with a noise gain.
    """
    names = [str(b).strip().lower() for b in baselines]
    if STEPS in names and ensemble is None:
        raise NowcastError("--baselines steps: expected --members N with it (STEPS is an ensemble), found no --members")
    if ensemble is None:
        return names, []
    if STEPS in names and noise_gain(ensemble.noise_adjustment) is not None:
        raise NowcastError(
            f"--baselines steps: expected --noise-adjustment none, auto or fixed (pySTEPS' noise_stddev_adj), "
            f"found the gain {ensemble.noise_adjustment}, which is ours only"
        )
    return [n for n in names if n != STEPS], [ENSEMBLE] + ([STEPS] if STEPS in names else [])


def case_seed(seed: int, segment: int, start: int) -> int:
    """The seed (0 <= value < 2**32) of the case at window ``start`` of ``segment``, from ``seed`` alone."""
    return int(np.random.SeedSequence([int(seed), int(segment), int(start)]).generate_state(1)[0])


def case_members(
    method: str,
    frames: np.ndarray,
    steps: int,
    members: int,
    seed: int,
    motion_perturbation: str = "none",
    km_per_px: float | None = None,
    step_min: float | None = None,
    noise_adjustment: str = "none",
    centre: np.ndarray | None = None,
    device: str = "cpu",
    initial_perturbation: str = "none",
) -> np.ndarray:
    """Members of ``method`` (``ENSEMBLE`` or ``STEPS``) from input frames (T, 1, H, W) mm/h, NaN = no
    data: (members, steps, 1, H, W) float32 mm/h, NaN where the extrapolation has no data. With
    ``motion_perturbation="bps"``, each member's motion is perturbed (pixel size ``km_per_px`` km, time
    step ``step_min`` min); ``noise_adjustment``: the per-level multipliers of the noise, for either method;
    ``centre`` (steps, H, W) dBR: ours centred on a model's forecast (``forecast.forecast_and_centre``);
    ``device``: where ours is made (``EnsembleSettings.device``; pySTEPS' STEPS runs on the CPU);
    ``initial_perturbation``: how our members start (``EnsembleSettings``; STEPS has no such setting)."""
    from nowcast.motion.flow import motion_field

    x = np.asarray(frames, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 1:
        raise NowcastError(f"--members: expected one-channel radar frames for an ensemble, found shape {x.shape[1:]}")
    velocity = motion_field(x[:, 0])  # (2, H, W) px per step; cached, so both methods share one estimate
    if method == ENSEMBLE:
        from nowcast.nowcasts.ensemble import EnsembleSettings, ensemble_forecast

        settings = EnsembleSettings(
            members=members,
            seed=seed,
            motion_perturbation=motion_perturbation,
            km_per_px=km_per_px,
            step_min=step_min,
            noise_adjustment=noise_adjustment,
            initial_perturbation=initial_perturbation,
            device=device,
        )
        out = ensemble_forecast(x[:, 0], velocity, steps, settings, centre)
    elif centre is not None:
        raise ValueError(f"centre: only our ensemble ({ENSEMBLE!r}) is centred on a model, found {method!r}")
    elif method == STEPS:
        from nowcast.nowcasts.baselines import steps_ensemble

        grid = (km_per_px, step_min) if motion_perturbation == "bps" else None
        out = steps_ensemble(x[:, 0], steps, members, seed, velocity, bps=grid, noise_adjustment=noise_adjustment)
    else:
        raise ValueError(f"method: expected {ENSEMBLE!r} or {STEPS!r}, found {method!r}")
    return np.asarray(out, dtype=np.float32)[:, :, None]


def ensemble_mean(members: np.ndarray) -> np.ndarray:
    """The mean of members (M, steps, ...) over M: (steps, ...) float32, NaN where any member has no data."""
    return np.asarray(members, dtype=np.float32).mean(axis=0)


def common_observed(observed: np.ndarray, forecasts: dict[str, np.ndarray]) -> np.ndarray:
    """``observed`` (steps, C, H, W) mm/h with NaN wherever it or any forecast has no data."""
    valid = np.isfinite(observed)
    for f in forecasts.values():
        valid &= np.isfinite(f)
    return np.where(valid, observed, np.float32(np.nan))


def score_members(
    prob: dict[str, probscores.ProbScores],
    members: dict[str, np.ndarray],
    observed: np.ndarray,
    forecasts: dict[str, np.ndarray],
    common_mask: bool,
) -> None:
    """Add one case's members (method -> (M, steps, 1, H, W)) against ``observed`` (steps, 1, H, W)
    mm/h to ``prob``; with ``common_mask`` only where every deterministic forecast (the ensemble means
    among them) has data, as ``evaluate.score_case`` scores them."""
    if common_mask:
        observed = common_observed(observed, forecasts)
    for name, m in members.items():
        probscores.accumulate(prob[name], m, observed)


def init_prob(
    methods: Sequence[str], steps: int, thresholds: Sequence[float], members: int, comparison: str
) -> dict[str, probscores.ProbScores]:
    """An empty ``probscores`` accumulator per ensemble method, for ``steps`` leads and ``thresholds`` (mm/h)."""
    return {m: probscores.init_probscores(steps, thresholds, members, comparison) for m in methods}


def ensemble_settings(
    ensemble: EnsembleEvaluation | None, methods: Sequence[str], used: Sequence[str] = ()
) -> dict[str, Any] | None:
    """What ``summary.json`` says of the ensembles (None without). ``used``: the motion perturbations the
    files got (``auto`` resolved per file: ``nowcasts.resolve_motion_perturbation``); default: as asked."""
    if ensemble is None:
        return None
    used = sorted(set(used)) or [ensemble.motion_perturbation]
    motion = {
        ("bps",): "bps motion perturbations",
        ("none",): "no motion perturbation",
        ("bps", "none"): "bps motion perturbations on grids with a pixel size, none on the others",
    }.get(tuple(used), f"motion perturbation {ensemble.motion_perturbation}")
    motion += noise_adjustment_words(ensemble.noise_adjustment)
    ours = (
        "nowcast.nowcasts.ensemble: STEPS-like, S-PROG's cascade with pySTEPS' nonparametric noise, "
        f"AR(2), cdf probability matching, {motion}{initial_perturbation_words(ensemble.initial_perturbation)}"
    )
    about = {
        ENSEMBLE: ours,
        STEPS: "pysteps STEPS in dBR on the same motion, 6 cascade levels, AR(2), nonparametric noise, "
        f"cdf probability matching, {motion}, no mask",
    }
    return {
        "members": int(ensemble.members),
        "seed": int(ensemble.seed),
        "motion_perturbation": "/".join(used),
        "motion_perturbation_asked": ensemble.motion_perturbation,
        "noise_adjustment": ensemble.noise_adjustment,
        "initial_perturbation": ensemble.initial_perturbation,
        "case_seed": "numpy SeedSequence([seed, segment, window start]), the same for every method",
        "methods": {
            m: about.get(
                m, f"{ours}; each member the model {m[: -len(CENTRED_SUFFIX)]}'s forecast plus its perturbation"
            )
            for m in methods
        },
        "means": [mean_name(m) for m in methods],
    }


__all__ = [
    "CENTRED_SUFFIX",
    "ENSEMBLE",
    "MEAN_SUFFIX",
    "STEPS",
    "EnsembleEvaluation",
    "case_members",
    "case_seed",
    "centred_name",
    "common_observed",
    "ensemble_mean",
    "ensemble_settings",
    "init_prob",
    "mean_name",
    "score_members",
    "split_baselines",
]

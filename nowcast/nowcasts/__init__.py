"""Nowcasting methods that learn nothing: persistence, pySTEPS extrapolation and S-PROG (``baselines``,
the references), S-PROG's damped cascade in torch (``cascade``, what the Lagrangian model starts from) and
probability matching (``probmatch``).

The facts of S-PROG live here, once: both the pySTEPS reference and the torch cascade use them.
"""

import math

SPROG_LEVELS = 6
"""Cascade levels of S-PROG (pySTEPS' default)."""
SPROG_AR_ORDER = 2
"""Order of the autoregressive model of each cascade level; a forecast needs ``SPROG_AR_ORDER + 1`` frames."""
MOTION_PERTURBATIONS = ("auto", "bps", "none")
"""Motion perturbations of an ensemble's members: ``bps`` (pySTEPS', ``motion.perturbation``: each member
along its own perturbed motion; needs the pixel size in km), ``none`` (all along the same motion) or
``auto`` (``bps`` where the grid gives a pixel size, ``none`` on grids without one: image sequences)."""
DEFAULT_MOTION_PERTURBATION = "auto"
"""The motion perturbation of ``predict --members`` and ``evaluate --members`` unless asked otherwise: kept
by the rule on the cross-radar folds (docs/probabilistic.md)."""
NOISE_ADJUSTMENTS = ("none", "auto", "fixed")
"""Per-level multipliers of an ensemble's noise innovation, pySTEPS STEPS' ``noise_stddev_adj``: ``none``
(1), ``auto`` (from the last frame's wet area and masked noise: ``compute_noise_stddev_adjs``) or ``fixed``
(``1 / (0.75 + 0.09 k)`` for level k = 1..L)."""
DEFAULT_NOISE_ADJUSTMENT = "none"
"""The noise adjustment of ``predict --members`` and ``evaluate --members`` unless asked otherwise:
pySTEPS' default; another needs the rule on the cross-radar folds (docs/probabilistic.md)."""

INITIAL_PERTURBATIONS = ("none", "innovation")
"""How an ensemble's members start: ``none`` (from the last observation's cascade as it is, as pySTEPS'
STEPS) or ``innovation`` (each member from it plus one innovation of the AR(2): the observation
uncertain by one step's unpredictable part; docs/probabilistic.md)."""
DEFAULT_INITIAL_PERTURBATION = "none"
"""The initial perturbation of ``predict --members`` and ``evaluate --members`` unless asked otherwise;
another needs the rule on the cross-radar folds (docs/probabilistic.md)."""


def noise_gain(name: str) -> float | None:
    """The number of a noise adjustment given as one (a gain on every level's noise, e.g. ``"1.3"``),
    or None for a named one (``NOISE_ADJUSTMENTS``) or anything else."""
    try:
        value = float(name)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def noise_adjustment_problem(name: str) -> str | None:
    """Why ``name`` is not a noise adjustment (one of ``NOISE_ADJUSTMENTS`` or a positive gain), or None."""
    if name in NOISE_ADJUSTMENTS or noise_gain(name) is not None:
        return None
    return f"expected one of {', '.join(NOISE_ADJUSTMENTS)} or a positive gain, found {name!r}"


def noise_adjustment_words(name: str) -> str:
    """How a file's attributes and ``summary.json`` say the noise adjustment: empty for ``none``."""
    if name == "none":
        return ""
    if (gain := noise_gain(name)) is not None:
        return f", noise gain {gain:g} on every level"
    return f", {name} noise adjustment (pySTEPS noise_stddev_adj)"


def initial_perturbation_words(name: str) -> str:
    """How a file's attributes and ``summary.json`` say the initial perturbation: empty for ``none``."""
    return "" if name == "none" else ", each member starting from the last observation plus one AR(2) innovation"


def initial_perturbation_problem(name: str) -> str | None:
    """Why ``name`` is not an initial perturbation (one of ``INITIAL_PERTURBATIONS``), or None."""
    if name in INITIAL_PERTURBATIONS:
        return None
    return f"expected one of {', '.join(INITIAL_PERTURBATIONS)}, found {name!r}"


def resolve_motion_perturbation(name: str, km_per_px: float | None) -> str:
    """``bps`` or ``none`` for ``name`` on a grid of ``km_per_px`` (None: no pixel size): ``auto`` is ``bps``
    where the pixel size is known. ``bps`` without a pixel size is returned as asked (the caller refuses it)."""
    if name == "auto":
        return "bps" if km_per_px is not None else "none"
    return name

"""Nowcasting methods that learn nothing: persistence, pySTEPS extrapolation and S-PROG (``baselines``,
the references), S-PROG's damped cascade in torch (``cascade``, what the Lagrangian model starts from) and
probability matching (``probmatch``).

The facts of S-PROG live here, once: both the pySTEPS reference and the torch cascade use them.
"""

SPROG_LEVELS = 6
"""Cascade levels of S-PROG (pySTEPS' default)."""
SPROG_AR_ORDER = 2
"""Order of the autoregressive model of each cascade level; a forecast needs ``SPROG_AR_ORDER + 1`` frames."""
MOTION_PERTURBATIONS = ("bps", "none")
"""Motion perturbations of an ensemble's members: ``bps`` (pySTEPS', ``motion.perturbation``: each member
along its own perturbed motion) or ``none`` (all along the same motion)."""
DEFAULT_MOTION_PERTURBATION = "bps"
"""The motion perturbation of ``predict --members`` and ``evaluate --members`` unless asked otherwise: kept
by the rule on the cross-radar folds (docs/probabilistic.md)."""

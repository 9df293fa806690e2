"""What a verification produces: pooled scores per method, the example case, and how shares merge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from nowcast.verification import metrics, probscores


@dataclass
class Example:
    """The case with the most rain at t0, kept for the example figure."""

    t0: str
    """Forecast reference time (last input frame), ISO 8601 UTC."""
    source_file: str
    rain: float
    """Sum of the rain rates (mm/h) over the valid pixels of the frame at t0; the case with the largest is kept."""
    leads: list[int]
    """Lead-time indices (0-based) of the stored frames."""
    observed: np.ndarray
    """(len(leads), H, W) mm/h; channel 0 of multi-channel data."""
    forecasts: dict[str, np.ndarray]
    """Method -> (len(leads), H, W) mm/h."""
    grid: dict[str, Any] = field(default_factory=dict)
    """The 1-D ``x`` and ``y`` coordinates (``xr.Variable`` with units) of the frames, when the file has them."""


@dataclass
class Evaluation:
    """Pooled scores of every method, plus what is needed to report them."""

    methods: list[str]
    """Method names in report order: the model first (if any), then the baselines."""
    scores: dict[str, metrics.Scores]
    """Per method: counts and sums for every lead time and threshold."""
    fss: dict[str, metrics.Scores]
    """Per method: FSS sums at ``settings['fss_scales']`` for ``settings['fss_thresholds']`` (empty: no FSS)."""
    lead_min: list[float]
    """Lead times in minutes."""
    settings: dict[str, Any]
    files: list[str]
    skipped: list[tuple[str, str]]
    n_cases: int = 0
    first_t0: str | None = None
    last_t0: str | None = None
    wall_s: dict[str, float] = field(default_factory=dict)
    """Wall-clock seconds spent per method (forecasts only), and in ``read`` and ``scoring``."""
    cpu_s: dict[str, float] = field(default_factory=dict)
    """CPU seconds of this process (all threads) for the same parts: less sensitive to other load."""
    example: Example | None = None
    prob: dict[str, probscores.ProbScores] = field(default_factory=dict)
    """Per ensemble method (``verification.ensembles``): its probabilistic scores (empty: no ensemble)."""

    def rows(self) -> list[dict[str, Any]]:
        """Tidy rows for ``metrics.csv`` (``metrics.ROW_FIELDS``), methods in report order."""
        out: list[dict[str, Any]] = []
        for m in self.methods:
            out += metrics.to_rows(self.scores[m], m, self.lead_min)
            if m in self.fss:
                out += [r for r in metrics.to_rows(self.fss[m], m, self.lead_min) if r["score"].startswith("FSS_")]
        for m, s in self.prob.items():  # the ensembles' probabilistic rows after every deterministic one
            out += probscores.to_rows(s, m, self.lead_min)
        return out


def merge_evaluations(parts: Sequence[Evaluation]) -> Evaluation:
    """One evaluation from the shares of several ranks, given in rank order (``rank_share``).

    Counts and sums add (``metrics.merge``, ``probscores.merge``); cases and times add (wall and CPU seconds are summed over
    ranks); the period runs from the first share's first forecast time to the last share's last; the
    example is the rainiest case, the earliest on a tie: all as one process over every case would give.
    """
    first = parts[0]
    ev = Evaluation(
        first.methods,
        dict(first.scores),
        dict(first.fss),
        first.lead_min,
        first.settings,
        first.files,
        first.skipped,
        first.n_cases,
        first.first_t0,
        first.last_t0,
        dict(first.wall_s),
        dict(first.cpu_s),
        first.example,
        dict(first.prob),
    )
    for part in parts[1:]:
        ev.scores = {m: metrics.merge(ev.scores[m], part.scores[m]) for m in ev.methods}
        ev.fss = {m: metrics.merge(ev.fss[m], part.fss[m]) for m in ev.fss}
        ev.prob = {m: probscores.merge(ev.prob[m], part.prob[m]) for m in ev.prob}
        ev.n_cases += part.n_cases
        ev.first_t0 = ev.first_t0 or part.first_t0
        ev.last_t0 = part.last_t0 or ev.last_t0
        for mine, theirs in ((ev.wall_s, part.wall_s), (ev.cpu_s, part.cpu_s)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0.0) + v
        if part.example is not None and (ev.example is None or part.example.rain > ev.example.rain):
            ev.example = part.example
    return ev

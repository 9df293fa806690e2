"""Probabilistic verification of ensembles: CRPS, Brier, reliability, ROC, rank histogram, spread-skill.

Built like ``metrics`` (and pySTEPS' ``*_init / accum / merge / compute``): ``init_probscores`` makes an
accumulator, ``accumulate`` adds one case (or a batch), ``merge`` adds two accumulators (workers,
ranks), ``compute`` turns totals into scores and ``to_rows`` into tidy rows (``metrics.ROW_FIELDS``).
Pure numpy.

Conventions
-----------
- Fields are rain rates in mm/h; NaN (or any non-finite value) is "no data". A pixel counts only where
  the observation *and every member* are finite (as pySTEPS' ``CRPS_accum`` and ``rankhist_accum``);
  scores are pooled over all cases and valid pixels.
- Event: ``value >= threshold`` (default, as ``metrics``; pySTEPS' ``excprob`` and ``reldiag`` too) or
  ``value > threshold``. The forecast probability of a pixel is k / M, k of the M members in the event.
- Probabilities are accumulated as counts of (k, observed yes/no) per lead and threshold, from which
  every probability score follows exactly:

      BS  = mean (p - o)^2                              Brier score
      BSS = 1 - BS / (obar (1 - obar))                  Brier skill score against the climatology of the
                                                        sample: obar is the observed event frequency over
                                                        the same pixels, cases and lead (NaN if 0 or 1)
      reliability: per bin of p (pySTEPS' edges, linspace(-1e-6, 1 + 1e-6, n_bins + 1), p in (lo, hi]),
                   the mean forecast probability, the observed frequency and the count
      ROC_AUC: the area under (POFD, POD) of the M + 1 decisions "p >= k / M", k = 0..M, closed at (0, 0)
               by trapezoids (pySTEPS' ``ROC_curve_compute`` with ``n_prob_thrs = M + 1``)

- CRPS (mm/h) of the ensemble's empirical distribution, as pySTEPS' ``probscores.CRPS`` (Hersbach 2000)
  computes it: mean |x_i - y| - sum_ij |x_i - x_j| / (2 M^2).
- Rank histogram: the rank of the observation among the members (0..M); pairs where the observation and
  every member are below ``rank_min`` are left out and values below it tie (pySTEPS ``rankhist`` with
  ``X_min``). A tie is shared equally among the ranks it spans (pySTEPS draws one of them at random),
  so counts can be fractional and the result is deterministic.
- SPREAD_SKILL = SPREAD / RMSE_MEAN, with SPREAD = sqrt((M + 1) / M * mean of the members' variance
  (ddof 1)) and RMSE_MEAN the RMSE of the ensemble mean (mm/h): 1 for a reliable ensemble (Fortin et
  al. 2014); NaN for one member.

Rows of ``to_rows``: ``CRPS``, ``SPREAD``, ``RMSE_MEAN``, ``SPREAD_SKILL`` (threshold NaN);
``BS``, ``BSS``, ``ROC_AUC`` per threshold; ``REL_{b:02d}_PROB``, ``REL_{b:02d}_FREQ``, ``REL_{b:02d}_N``
per threshold for reliability bin b (0 = lowest probabilities); ``RANK_{r:02d}`` (count of rank r,
threshold = ``rank_min``). Undefined values are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nowcast.units import RAIN_THRESHOLD
from nowcast.verification.metrics import COMPARISONS, COUNTS, safe_ratio

PER_LEAD = ("CRPS", "SPREAD", "RMSE_MEAN", "SPREAD_SKILL")
"""Scores per lead, in the order ``to_rows`` writes them."""
PER_THRESHOLD = ("BS", "BSS", "ROC_AUC")
"""Scores per (lead, threshold), in the order ``to_rows`` writes them."""
SUMS = ("n", "crps_sum", "var_sum", "sq_err_mean")
"""Sums per lead, float64 (leads,): valid pixels, CRPS, members' variance (ddof 1), (mean - obs)^2."""
ADDITIVE = (*SUMS, "event_yes", "event_no", "rank")
"""Every array field of ``ProbScores``; each is merged by addition."""


def _array() -> Any:
    return field(default=None, repr=False)


@dataclass
class ProbScores:
    """Accumulated totals for the probabilistic scores of an ensemble of ``members`` members."""

    thresholds: tuple[float, ...]
    """Event thresholds in mm/h."""
    leads: int
    """Number of lead times."""
    members: int
    """Ensemble members M."""
    comparison: str = ">="
    """Event definition: ">=" or ">"."""
    n_bins: int = 10
    """Reliability bins of forecast probability."""
    rank_min: float | None = RAIN_THRESHOLD
    """Rank histogram: pairs below this everywhere are left out, values below it tie; None: no threshold."""
    n: np.ndarray = _array()
    crps_sum: np.ndarray = _array()
    var_sum: np.ndarray = _array()
    sq_err_mean: np.ndarray = _array()
    event_yes: np.ndarray = _array()
    """Pixels observed in the event with k members in it: int64 (leads, n_thresholds, M + 1)."""
    event_no: np.ndarray = _array()
    """Pixels observed out of the event with k members in it: int64 (leads, n_thresholds, M + 1)."""
    rank: np.ndarray = _array()
    """Rank histogram counts: float64 (leads, M + 1)."""

    def __post_init__(self) -> None:
        self.thresholds = tuple(float(t) for t in self.thresholds)
        self.leads, self.members, self.n_bins = int(self.leads), int(self.members), int(self.n_bins)
        problems = []
        if self.comparison not in COMPARISONS:
            problems.append(f"comparison: expected one of {', '.join(COMPARISONS)}, found {self.comparison!r}")
        for name in ("leads", "members", "n_bins"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: expected a positive integer, found {getattr(self, name)}")
        if not all(math.isfinite(t) for t in self.thresholds):
            problems.append(f"thresholds: expected finite values in mm/h, found {list(self.thresholds)}")
        if problems:
            raise ValueError("; ".join(problems))
        m1, t = self.members + 1, len(self.thresholds)
        shapes = {
            **{k: ((self.leads,), np.float64) for k in SUMS},
            "event_yes": ((self.leads, t, m1), np.int64),
            "event_no": ((self.leads, t, m1), np.int64),
            "rank": ((self.leads, m1), np.float64),
        }
        for name, (shape, dtype) in shapes.items():
            value = getattr(self, name)
            if value is not None and np.shape(value) != shape:
                raise ValueError(f"{name}: expected shape {shape}, found {np.shape(value)}")
            setattr(self, name, np.zeros(shape, dtype) if value is None else np.array(value, dtype))


def init_probscores(
    leads: int,
    thresholds: Sequence[float],
    members: int,
    comparison: str = ">=",
    n_bins: int = 10,
    rank_min: float | None = RAIN_THRESHOLD,
) -> ProbScores:
    """An empty accumulator for ``leads`` lead times, ``thresholds`` (mm/h) and ``members`` members."""
    return ProbScores(tuple(thresholds), leads, members, comparison, n_bins, rank_min)


def _lead_first(s: ProbScores, ensemble: np.ndarray, observed: np.ndarray, batched: bool) -> tuple:
    """(members, leads, pixels) and (leads, pixels) views of one case or a batch, after shape checks."""
    f, o = np.asarray(ensemble), np.asarray(observed)
    if batched:  # (B, M, L, ...), (B, L, ...) -> members and leads first, the batch among the pixels
        if f.ndim < 3 or f.shape[0] != o.shape[0]:
            raise ValueError(
                f"ensemble and observed: expected (B, M, L, ...) and (B, L, ...), found {f.shape}, {o.shape}"
            )
        f, o = np.moveaxis(f, 0, 2), np.moveaxis(o, 0, 1)
    if f.shape[:2] != (s.members, s.leads) or f.shape[1:] != o.shape:
        raise ValueError(
            f"ensemble and observed: expected ({s.members} members, {s.leads} leads, ...) and ({s.leads} leads, ...), "
            f"found {f.shape} and {o.shape}"
        )
    return f.reshape(s.members, s.leads, -1), o.reshape(s.leads, -1)


def accumulate(scores: ProbScores, ensemble: np.ndarray, observed: np.ndarray, *, batched: bool = False) -> None:
    """Add one case (ensemble (M, leads, ...), observed (leads, ...)) or, ``batched``, a batch of cases
    ((B, M, leads, ...), (B, leads, ...)) to ``scores``, in place. mm/h; NaN = no data."""
    f_all, o_all = _lead_first(scores, ensemble, observed, batched)
    for lead in range(scores.leads):
        f, o = f_all[:, lead], o_all[lead]  # (M, P), (P,)
        valid = np.isfinite(o) & np.isfinite(f).all(0)
        f = np.sort(f[:, valid].astype(np.float64), axis=0)  # (M, n) ascending
        o = o[valid].astype(np.float64)
        if o.size == 0:
            continue
        _add_continuous(scores, lead, f, o)
        _add_events(scores, lead, f, o)
        _add_ranks(scores, lead, f, o)


def _add_continuous(s: ProbScores, lead: int, f: np.ndarray, o: np.ndarray) -> None:
    """CRPS and spread-skill sums of sorted members f (M, n) and observations o (n,)."""
    m = f.shape[0]
    weights = (2.0 * np.arange(1, m + 1) - m - 1.0) / m**2  # sum_ij |x_i - x_j| / (2 M^2) = w . sorted x
    crps = np.abs(f - o).mean(0) - weights @ f
    mean = f.mean(0)
    s.n[lead] += o.size
    s.crps_sum[lead] += crps.sum()
    s.sq_err_mean[lead] += ((mean - o) ** 2).sum()
    if m > 1:
        s.var_sum[lead] += f.var(0, ddof=1).sum()


def _add_events(s: ProbScores, lead: int, f: np.ndarray, o: np.ndarray) -> None:
    """Counts of (members in the event, observed yes/no) for every threshold."""
    event = np.greater_equal if s.comparison == ">=" else np.greater
    m1 = s.members + 1
    for t, thr in enumerate(s.thresholds):
        k = event(f, thr).sum(0)  # (n,) members in the event
        yes = event(o, thr)
        s.event_yes[lead, t] += np.bincount(k[yes], minlength=m1)
        s.event_no[lead, t] += np.bincount(k[~yes], minlength=m1)


def _add_ranks(s: ProbScores, lead: int, f: np.ndarray, o: np.ndarray) -> None:
    """Rank histogram counts; a tie over ranks lo..lo+e adds 1 / (e + 1) to each."""
    if s.rank_min is not None:
        keep = (o >= s.rank_min) | (f >= s.rank_min).any(0)
        f, o = f[:, keep], o[keep]
        low = s.rank_min - 1.0
        f, o = np.where(f < s.rank_min, low, f), np.where(o < s.rank_min, low, o)
    lo = (f < o).sum(0)
    ties = (f == o).sum(0)
    share = 1.0 / (ties + 1.0)
    edges = np.zeros(s.members + 2)
    np.add.at(edges, lo, share)
    np.add.at(edges, lo + ties + 1, -share)
    s.rank[lead] += np.cumsum(edges)[:-1]


def merge(a: ProbScores, b: ProbScores) -> ProbScores:
    """A new accumulator with the totals of ``a`` and ``b`` (same leads, thresholds, members, settings)."""
    for name in ("leads", "thresholds", "members", "comparison", "n_bins", "rank_min"):
        if getattr(a, name) != getattr(b, name):
            raise ValueError(f"merge: expected the same {name}, found {getattr(a, name)} and {getattr(b, name)}")
    totals = {k: getattr(a, k) + getattr(b, k) for k in ADDITIVE}
    return ProbScores(a.thresholds, a.leads, a.members, a.comparison, a.n_bins, a.rank_min, **totals)


def reliability(s: ProbScores) -> dict[str, np.ndarray]:
    """Reliability diagram: ``prob`` (mean forecast probability), ``freq`` (observed frequency) and
    ``count`` per bin, each (leads, n_thresholds, n_bins); NaN in empty bins."""
    p = np.arange(s.members + 1) / s.members
    edges = np.linspace(-1e-6, 1 + 1e-6, s.n_bins + 1)
    bins = np.digitize(p, edges, right=True) - 1  # (M + 1,) the bin of each probability k / M
    onehot = (bins[:, None] == np.arange(s.n_bins)).astype(np.float64)  # (M + 1, n_bins)
    total = (s.event_yes + s.event_no).astype(np.float64)
    count = total @ onehot
    return {
        "prob": safe_ratio((total * p) @ onehot, count),
        "freq": safe_ratio(s.event_yes.astype(np.float64) @ onehot, count),
        "count": count,
    }


def _roc_area(s: ProbScores) -> np.ndarray:
    """Area under the ROC curve of the decisions p >= k / M: (leads, n_thresholds)."""
    hits = np.cumsum(s.event_yes[..., ::-1], -1)[..., ::-1].astype(np.float64)  # k..M members: p >= k / M
    false = np.cumsum(s.event_no[..., ::-1], -1)[..., ::-1].astype(np.float64)
    pod = safe_ratio(hits, hits[..., :1])  # k = 0: everything, POD = POFD = 1
    pofd = safe_ratio(false, false[..., :1])
    zero = np.zeros((*pod.shape[:-1], 1))
    pod, pofd = np.concatenate([pod, zero], -1), np.concatenate([pofd, zero], -1)
    return ((pofd[..., :-1] - pofd[..., 1:]) * (pod[..., :-1] + pod[..., 1:]) / 2.0).sum(-1)


def compute(s: ProbScores) -> dict[str, np.ndarray]:
    """Scores from the totals: ``CRPS SPREAD RMSE_MEAN SPREAD_SKILL n`` (leads,); ``BS BSS ROC_AUC``
    (leads, n_thresholds); ``REL_PROB REL_FREQ REL_COUNT`` (leads, n_thresholds, n_bins); ``RANK``
    (leads, M + 1). Empty denominators give NaN."""
    yes, no = s.event_yes.astype(np.float64), s.event_no.astype(np.float64)
    p = np.arange(s.members + 1) / s.members
    n_events = (yes + no).sum(-1)
    bs = safe_ratio((yes * (p - 1.0) ** 2 + no * p**2).sum(-1), n_events)
    obar = safe_ratio(yes.sum(-1), n_events)
    rmse = np.sqrt(safe_ratio(s.sq_err_mean, s.n))
    factor = (s.members + 1) / s.members if s.members > 1 else math.nan
    spread = np.sqrt(factor * safe_ratio(s.var_sum, s.n))
    rel = reliability(s)
    return {
        "CRPS": safe_ratio(s.crps_sum, s.n),
        "SPREAD": spread,
        "RMSE_MEAN": rmse,
        "SPREAD_SKILL": safe_ratio(spread, rmse),
        "n": s.n.copy(),
        "BS": bs,
        "BSS": 1.0 - safe_ratio(bs, obar * (1.0 - obar)),
        "ROC_AUC": _roc_area(s),
        "REL_PROB": rel["prob"],
        "REL_FREQ": rel["freq"],
        "REL_COUNT": rel["count"],
        "RANK": s.rank.copy(),
    }


def to_rows(s: ProbScores, method: str, lead_minutes: Sequence[float]) -> list[dict]:
    """Tidy rows (keys ``metrics.ROW_FIELDS``, counts None) for ``metrics.csv``; names in the module doc."""
    if len(lead_minutes) != s.leads:
        raise ValueError(f"lead_minutes: expected {s.leads} values, found {len(lead_minutes)}")
    res = compute(s)
    rows: list[dict] = []
    none = dict.fromkeys(COUNTS)

    def row(i: int, thr: float, score: str, value: float) -> None:
        rows.append(
            {
                "method": method,
                "lead_min": float(lead_minutes[i]),
                "threshold": thr,
                "score": score,
                "value": float(value),
                **none,
            }
        )

    for i in range(s.leads):
        for name in PER_LEAD:
            row(i, math.nan, name, res[name][i])
        for t, thr in enumerate(s.thresholds):
            for name in PER_THRESHOLD:
                row(i, thr, name, res[name][i, t])
            for b in range(s.n_bins):
                for name, key in (("PROB", "REL_PROB"), ("FREQ", "REL_FREQ"), ("N", "REL_COUNT")):
                    row(i, thr, f"REL_{b:02d}_{name}", res[key][i, t, b])
        rank_thr = math.nan if s.rank_min is None else float(s.rank_min)
        for r in range(s.members + 1):
            row(i, rank_thr, f"RANK_{r:02d}", res["RANK"][i, r])
    return rows


__all__ = [
    "ADDITIVE",
    "PER_LEAD",
    "PER_THRESHOLD",
    "ProbScores",
    "accumulate",
    "compute",
    "init_probscores",
    "merge",
    "reliability",
    "to_rows",
]

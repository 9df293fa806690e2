"""Verification scores: the project's only implementation (DESIGN section 8). Pure numpy and scipy.

Built like pySTEPS' ``det_cat_fct_init / accum / merge / compute``, but for every (lead time,
threshold) at once and streaming over cases: ``init_scores`` makes an accumulator of counts and sums,
``accumulate`` adds one case (or a batch), ``merge`` adds two accumulators (other workers, other
ranks), ``compute`` turns the totals into scores and ``to_rows`` into tidy rows for ``metrics.csv``.

Conventions
-----------
- Fields are rain rates in mm/h; NaN (or any non-finite value) is "no data". A pixel with no data in
  the forecast *or* the observation is excluded from every score (counts, sums and FSS sums).
- Event: ``value >= threshold`` (default; HKO-7, SEVIR) or ``value > threshold`` (pySTEPS).
- With a = hits, b = false alarms, c = misses, d = correct negatives and n = a + b + c + d::

      POD = a / (a + c)              FAR  = b / (a + b)         CSI = a / (a + b + c)
      BIAS = (a + b) / (a + c)       HSS  = 2 (ad - bc) / ((a + c)(c + d) + (a + b)(b + d))
      ETS = (a - ar) / (a + b + c - ar),  ar = (a + b)(a + c) / n

  Continuous, per lead over valid pixels: MSE, MAE, ME = mean(forecast - observed), CORR (Pearson).
  A score whose denominator is zero is NaN, never 0 or 1.
- FSS (Roberts and Lean 2008) at square windows of ``s`` pixels, for every threshold, if
  ``fss_scales`` is given. Fractions are ``scipy.ndimage.uniform_filter`` of the binary event fields
  with zero padding outside the domain (as in ``pysteps.verification.spatialscores.fss``). No-data
  pixels (in either field) count as "no event" in *both* binary fields, and the windows centred on
  them are left out of the sums. Without missing data this equals pySTEPS' FSS exactly; near the edge
  of radar coverage fractions are diluted by the no-data pixels, as they are at the domain border.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

import numpy as np
from scipy.ndimage import uniform_filter

from nowcast.config import Comparison

COMPARISONS: tuple[str, ...] = get_args(Comparison)
"""The event definitions, as ``EvalConfig.comparison`` declares them."""
CATEGORICAL = ("CSI", "POD", "FAR", "HSS", "ETS", "BIAS")
"""Categorical scores per (lead, threshold), in the order ``to_rows`` writes them."""
CONTINUOUS = ("MSE", "MAE", "ME", "CORR")
"""Continuous scores per lead (mm/h based), in the order ``to_rows`` writes them."""
COUNTS = ("hits", "misses", "false_alarms", "correct_negatives")
"""Contingency counts, int64 arrays of shape (leads, n_thresholds)."""
SUMS = ("n", "sum_err", "sum_abs_err", "sum_sq_err", "sum_obs", "sum_fc", "sum_obs2", "sum_fc2", "sum_obs_fc")
"""Continuous sums, float64 arrays of shape (leads,); ``n`` is the number of valid pixels."""
FSS_SUMS = ("fss_sq_diff", "fss_sq_ref")
"""FSS sums of (Pf - Po)^2 and Pf^2 + Po^2, float64 arrays of shape (leads, n_thresholds, n_scales)."""
ADDITIVE = COUNTS + SUMS + FSS_SUMS
"""Every array field of ``Scores``; each is merged by addition (e.g. an all-reduce sum across ranks)."""
ROW_FIELDS = ("method", "lead_min", "threshold", "score", "value", *COUNTS)
"""Keys of every row from ``to_rows``, in column order."""


def _array() -> Any:
    """Field default of the ``Scores`` arrays: None, replaced by zeros of the right shape."""
    return field(default=None, repr=False)


@dataclass
class Scores:
    """Accumulated contingency counts and continuous sums for many lead times and thresholds.

    Make one with ``init_scores``; every array field is additive (see ``ADDITIVE``).
    """

    thresholds: tuple[float, ...]
    """Event thresholds in mm/h."""
    leads: int
    """Number of lead times (the lead axis length of the fields passed to ``accumulate``)."""
    comparison: Comparison = ">="
    """Event definition: ">=" (value >= threshold) or ">" (value > threshold)."""
    fss_scales: tuple[int, ...] = ()
    """FSS window sizes in pixels; empty: no FSS (it costs two filters per threshold and scale)."""
    hits: np.ndarray = _array()
    misses: np.ndarray = _array()
    false_alarms: np.ndarray = _array()
    correct_negatives: np.ndarray = _array()
    n: np.ndarray = _array()
    sum_err: np.ndarray = _array()
    sum_abs_err: np.ndarray = _array()
    sum_sq_err: np.ndarray = _array()
    sum_obs: np.ndarray = _array()
    sum_fc: np.ndarray = _array()
    sum_obs2: np.ndarray = _array()
    sum_fc2: np.ndarray = _array()
    sum_obs_fc: np.ndarray = _array()
    fss_sq_diff: np.ndarray = _array()
    fss_sq_ref: np.ndarray = _array()

    def __post_init__(self) -> None:
        self.thresholds = tuple(float(t) for t in self.thresholds)
        self.fss_scales = tuple(int(s) for s in self.fss_scales)
        if self.comparison not in COMPARISONS:
            raise ValueError(f"comparison: expected one of {', '.join(COMPARISONS)}, found {self.comparison!r}")
        if int(self.leads) < 1:
            raise ValueError(f"leads: expected a positive integer, found {self.leads}")
        self.leads = int(self.leads)
        if not all(math.isfinite(t) for t in self.thresholds):
            raise ValueError(f"thresholds: expected finite values in mm/h, found {list(self.thresholds)}")
        if any(s < 1 for s in self.fss_scales):
            raise ValueError(f"fss_scales: expected window sizes >= 1 pixel, found {list(self.fss_scales)}")
        shapes = {
            **{k: ((self.leads, len(self.thresholds)), np.int64) for k in COUNTS},
            **{k: ((self.leads,), np.float64) for k in SUMS},
            **{k: ((self.leads, len(self.thresholds), len(self.fss_scales)), np.float64) for k in FSS_SUMS},
        }
        for name, (shape, dtype) in shapes.items():
            value = getattr(self, name)
            if value is None:
                setattr(self, name, np.zeros(shape, dtype))
            elif np.shape(value) != shape:
                raise ValueError(f"{name}: expected shape {shape}, found {np.shape(value)}")
            else:
                setattr(self, name, np.array(value, dtype))


def init_scores(
    leads: int, thresholds: Sequence[float], comparison: str = ">=", fss_scales: Sequence[int] = ()
) -> Scores:
    """An empty accumulator for ``leads`` lead times and ``thresholds`` (mm/h).

    ``comparison`` is ">=" (default) or ">"; ``fss_scales`` are FSS window sizes in pixels (none: no FSS).
    """
    return Scores(tuple(thresholds), leads, comparison, tuple(fss_scales))


def _lead_first(scores: Scores, forecast: np.ndarray, observed: np.ndarray, batched: bool | None) -> tuple:
    """Both fields as arrays of shape (leads, batch, *spatial), after checking their shapes."""
    f, o = np.asarray(forecast), np.asarray(observed)
    if f.shape != o.shape:
        raise ValueError(f"forecast and observed: expected the same shape, found {f.shape} and {o.shape}")
    L = scores.leads
    if batched is None:
        batched = f.ndim >= 4 and f.shape[1] == L
    if batched:
        if f.ndim < 2 or f.shape[1] != L:
            raise ValueError(f"fields: expected shape (batch, {L} leads, ...), found {f.shape}")
        return np.moveaxis(f, 1, 0), np.moveaxis(o, 1, 0)
    if f.ndim < 1 or f.shape[0] != L:
        raise ValueError(f"fields: expected shape ({L} leads, ...) or (batch, {L} leads, ...), found {f.shape}")
    return f[:, None], o[:, None]


def accumulate(scores: Scores, forecast: np.ndarray, observed: np.ndarray, *, batched: bool | None = None) -> None:
    """Add one case (or a batch of cases) to ``scores``, in place.

    Parameters
    ----------
    forecast, observed : np.ndarray
        Rain rates in mm/h, shape (leads, ...) or (batch, leads, ...); NaN or inf = no data. FSS needs
        the last two axes to be (y, x).
    batched : bool, optional
        Whether axis 0 is a batch axis. None: batched when the fields have 4 or more dimensions and
        axis 1 has ``scores.leads`` entries, otherwise (leads, ...). Pass it when shapes are ambiguous.

    Raises
    ------
    ValueError
        If the shapes differ or have no lead axis of length ``scores.leads``.
    """
    f_all, o_all = _lead_first(scores, forecast, observed, batched)
    if scores.fss_scales and f_all.ndim < 4:
        raise ValueError(f"FSS: expected fields with (y, x) as the last two axes, found shape {np.shape(forecast)}")
    event = np.greater_equal if scores.comparison == ">=" else np.greater
    for lead in range(scores.leads):
        f, o = f_all[lead], o_all[lead]  # (batch, *spatial)
        valid = np.isfinite(f) & np.isfinite(o)
        fv = f[valid].astype(np.float64, copy=False)  # (n,) valid pixels only
        ov = o[valid].astype(np.float64, copy=False)
        n = fv.size
        if n:
            err = fv - ov
            scores.n[lead] += n
            scores.sum_err[lead] += err.sum()
            scores.sum_abs_err[lead] += np.abs(err).sum()
            scores.sum_sq_err[lead] += err @ err
            scores.sum_obs[lead] += ov.sum()
            scores.sum_fc[lead] += fv.sum()
            scores.sum_obs2[lead] += ov @ ov
            scores.sum_fc2[lead] += fv @ fv
            scores.sum_obs_fc[lead] += fv @ ov
        for k, thr in enumerate(scores.thresholds):
            fy, oy = event(fv, thr), event(ov, thr)
            a = np.count_nonzero(fy & oy)
            fc_yes, obs_yes = np.count_nonzero(fy), np.count_nonzero(oy)
            scores.hits[lead, k] += a
            scores.false_alarms[lead, k] += fc_yes - a
            scores.misses[lead, k] += obs_yes - a
            scores.correct_negatives[lead, k] += n - fc_yes - obs_yes + a
        if scores.fss_scales:
            _accumulate_fss(scores, lead, f, o, valid, event)


def _accumulate_fss(scores: Scores, lead: int, f: np.ndarray, o: np.ndarray, valid: np.ndarray, event) -> None:
    """Add FSS sums of one lead; ``f``, ``o``, ``valid`` have shape (batch, ..., y, x)."""
    for k, thr in enumerate(scores.thresholds):
        fb = (event(f, thr) & valid).astype(np.float64)  # no data: no event, in both fields
        ob = (event(o, thr) & valid).astype(np.float64)
        for j, s in enumerate(scores.fss_scales):
            size = (1,) * (f.ndim - 2) + (s, s)  # filter only along (y, x)
            pf = uniform_filter(fb, size=size, mode="constant", cval=0.0) if s > 1 else fb
            po = uniform_filter(ob, size=size, mode="constant", cval=0.0) if s > 1 else ob
            pf, po = pf[valid], po[valid]  # windows centred on no-data pixels are left out
            d = pf - po
            scores.fss_sq_diff[lead, k, j] += d @ d
            scores.fss_sq_ref[lead, k, j] += pf @ pf + po @ po


def merge(a: Scores, b: Scores) -> Scores:
    """A new accumulator holding the totals of ``a`` and ``b`` (same leads, thresholds, comparison, scales)."""
    for name in ("leads", "thresholds", "comparison", "fss_scales"):
        if getattr(a, name) != getattr(b, name):
            raise ValueError(f"merge: expected the same {name}, found {getattr(a, name)} and {getattr(b, name)}")
    return Scores(
        a.thresholds, a.leads, a.comparison, a.fss_scales, **{k: getattr(a, k) + getattr(b, k) for k in ADDITIVE}
    )


def safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den as float64, NaN where den is zero."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def compute(scores: Scores) -> dict[str, np.ndarray]:
    """Scores from the accumulated totals.

    Returns
    -------
    dict[str, np.ndarray]
        ``CSI POD FAR HSS ETS BIAS`` and the counts ``hits misses false_alarms correct_negatives``:
        shape (leads, n_thresholds). ``MSE`` (mm²/h²), ``MAE``, ``ME`` (mm/h), ``CORR`` and ``n`` (valid
        pixels): shape (leads,). ``FSS``: shape (leads, n_thresholds, n_scales), only with ``fss_scales``.
        Empty denominators give NaN.
    """
    a = scores.hits.astype(np.float64)
    b = scores.false_alarms.astype(np.float64)
    c = scores.misses.astype(np.float64)
    d = scores.correct_negatives.astype(np.float64)
    n = a + b + c + d
    ar = safe_ratio((a + b) * (a + c), n)
    out = {
        "CSI": safe_ratio(a, a + b + c),
        "POD": safe_ratio(a, a + c),
        "FAR": safe_ratio(b, a + b),
        "HSS": safe_ratio(2.0 * (a * d - b * c), (a + c) * (c + d) + (a + b) * (b + d)),
        "ETS": safe_ratio(a - ar, a + b + c - ar),
        "BIAS": safe_ratio(a + b, a + c),
    }
    out.update({k: getattr(scores, k).copy() for k in COUNTS})
    m = scores.n
    out["MSE"] = safe_ratio(scores.sum_sq_err, m)
    out["MAE"] = safe_ratio(scores.sum_abs_err, m)
    out["ME"] = safe_ratio(scores.sum_err, m)
    cov = m * scores.sum_obs_fc - scores.sum_fc * scores.sum_obs
    var_f = np.maximum(m * scores.sum_fc2 - scores.sum_fc**2, 0.0)
    var_o = np.maximum(m * scores.sum_obs2 - scores.sum_obs**2, 0.0)
    out["CORR"] = np.clip(safe_ratio(cov, np.sqrt(var_f * var_o)), -1.0, 1.0)
    out["n"] = m.copy()
    if scores.fss_scales:
        out["FSS"] = 1.0 - safe_ratio(scores.fss_sq_diff, scores.fss_sq_ref)
    return out


def to_rows(scores: Scores, method: str, lead_minutes: Sequence[float]) -> list[dict]:
    """Tidy rows (keys ``ROW_FIELDS``) for ``metrics.csv``: one per method, lead, threshold and score.

    Categorical rows carry their contingency counts; continuous rows have threshold NaN and counts
    None; FSS rows are named ``FSS_{s}px`` (window of s pixels) and have counts None. Values are
    Python floats (NaN where undefined).
    """
    if len(lead_minutes) != scores.leads:
        raise ValueError(f"lead_minutes: expected {scores.leads} values, found {len(lead_minutes)}")
    res = compute(scores)
    rows: list[dict] = []
    none = dict.fromkeys(COUNTS)
    for i, lead in enumerate(lead_minutes):
        base = {"method": method, "lead_min": float(lead)}
        for k, thr in enumerate(scores.thresholds):
            counts = {c: int(res[c][i, k]) for c in COUNTS}
            for name in CATEGORICAL:
                rows.append({**base, "threshold": thr, "score": name, "value": float(res[name][i, k]), **counts})
        for name in CONTINUOUS:
            rows.append({**base, "threshold": math.nan, "score": name, "value": float(res[name][i]), **none})
        for k, thr in enumerate(scores.thresholds):
            for j, s in enumerate(scores.fss_scales):
                value = float(res["FSS"][i, k, j])
                rows.append({**base, "threshold": thr, "score": f"FSS_{s}px", "value": value, **none})
    return rows


__all__ = [
    "ADDITIVE",
    "CATEGORICAL",
    "CONTINUOUS",
    "COUNTS",
    "ROW_FIELDS",
    "Scores",
    "accumulate",
    "compute",
    "init_scores",
    "merge",
    "to_rows",
]

"""Probability matching: give a forecast field the distribution of an observed one, keep its pattern.

Where a forecast is right about *where* rain will be but wrong about *how much* (a learned model grows
intense rain or lets it fade), quantile mapping keeps the forecast's rank order and replaces its values
with those of the last observation, as pySTEPS' S-PROG does at every lead time (``cdf`` probability
matching, Seed 2003). Pure numpy.
"""

from __future__ import annotations

import numpy as np


def match_cdf(field: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``field`` with the empirical distribution of ``reference``'s valid values, its ranks kept.

    field: (H, W) forecast, NaN = no data; reference: (H', W') observation in the same units, NaN =
    no data (sizes may differ, e.g. when the forecast's coverage has shrunk). The k-th smallest of the
    n valid forecast values gets the reference's quantile (k + 0.5) / n. Pixels of ``field`` at or below
    0 stay 0 (a dry forecast pixel stays dry); when the forecast is drier than the reference, its wet
    pixels get the reference's wettest values (pySTEPS ``nonparam_match_empirical_cdf``, which it
    equals when both fields are the same size and complete). NaN stays NaN. A field or reference with
    no valid value is returned unchanged. Returns float32.
    """
    return _match_sorted(field, _sorted_valid(reference))


def _sorted_valid(reference: np.ndarray) -> np.ndarray:
    """The valid (finite) values of ``reference``, float32, ascending: (n,)."""
    return np.sort(np.asarray(reference, dtype=np.float32)[np.isfinite(reference)])


def _match_sorted(field: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``match_cdf`` against the reference's sorted valid values ``ref`` (from ``_sorted_valid``)."""
    out = np.array(field, dtype=np.float32)
    ok = np.isfinite(out)
    n = int(ok.sum())
    if n == 0 or ref.size == 0:
        return out
    values = out[ok]
    order = np.argsort(values, kind="stable")
    quantile_index = np.minimum(((np.arange(n) + 0.5) * (ref.size / n)).astype(np.int64), ref.size - 1)
    matched = np.empty(n, dtype=np.float32)
    matched[order] = ref[quantile_index]
    matched[values <= 0] = 0.0
    out[ok] = matched
    return out


def match_forecast(forecast: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Every lead time and channel of ``forecast`` matched to the last observed frame (``match_cdf``).

    forecast: (B, steps, C, H, W); last: (B, C, H, W), same units, NaN = no data. Returns float32, same
    shape as ``forecast``.
    """
    out = np.empty(forecast.shape, dtype=np.float32)
    for b in range(forecast.shape[0]):
        for c in range(forecast.shape[2]):
            ref = _sorted_valid(last[b, c])  # once for all lead times
            for k in range(forecast.shape[1]):
                out[b, k, c] = _match_sorted(forecast[b, k, c], ref)
    return out

"""Verification scores: hand-computed golden values, masking, streaming, and pySTEPS cross-checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nowcast.verification import metrics


def _table_fields(a: int, b: int, c: int, d: int, thr: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """One-lead fields (1, a+b+c+d) giving exactly a hits, b false alarms, c misses, d correct negatives."""
    yes, no = thr + 1.0, thr - 0.5
    fc = [yes] * a + [yes] * b + [no] * c + [no] * d
    ob = [yes] * a + [no] * b + [yes] * c + [no] * d
    return np.array([fc]), np.array([ob])


def test_worked_example_golden_values():
    # The WWRP/WGNE (and pySTEPS) worked example: 82 hits, 38 false alarms, 23 misses, 222 correct negatives.
    fc, ob = _table_fields(82, 38, 23, 222)
    s = metrics.init_scores(1, [1.0])
    metrics.accumulate(s, fc, ob)
    r = metrics.compute(s)
    assert (r["hits"][0, 0], r["false_alarms"][0, 0], r["misses"][0, 0], r["correct_negatives"][0, 0]) == (
        82,
        38,
        23,
        222,
    )
    assert r["hits"].dtype == np.int64
    assert r["CSI"][0, 0] == pytest.approx(0.5734, abs=1e-4)  # the literature value
    # Exact values worked out by hand: n = 365, a+c = 105, a+b = 120, c+d = 245, b+d = 260.
    expected = {
        "CSI": 82 / 143,
        "POD": 82 / 105,
        "FAR": 38 / 120,
        "BIAS": 120 / 105,
        "HSS": 34660 / 56925,  # 2 (82*222 - 38*23) / (105*245 + 120*260)
        "ETS": 3466 / 7919,  # ar = 120*105/365 = 2520/73; (82 - ar) / (143 - ar)
    }
    for name, value in expected.items():
        assert r[name][0, 0] == pytest.approx(value, rel=1e-12, abs=1e-12), name
    # The rounded values published with the example.
    for name, value in {"POD": 0.78, "FAR": 0.32, "BIAS": 1.14, "HSS": 0.61, "ETS": 0.44}.items():
        assert round(float(r[name][0, 0]), 2) == value, name


def test_many_leads_and_thresholds_at_once():
    # lead 0: forecast exact; lead 1: forecast everywhere 0. Values 0, 0.5, 2, 7 mm/h.
    ob = np.array([0.0, 0.5, 2.0, 7.0])
    fc = np.stack([ob, np.zeros(4)])  # (2 leads, 4 pixels)
    s = metrics.init_scores(2, [0.1, 1.0, 5.0])
    metrics.accumulate(s, fc, np.stack([ob, ob]))
    r = metrics.compute(s)
    np.testing.assert_array_equal(r["hits"], [[3, 2, 1], [0, 0, 0]])
    np.testing.assert_array_equal(r["misses"], [[0, 0, 0], [3, 2, 1]])
    np.testing.assert_array_equal(r["correct_negatives"], [[1, 2, 3], [1, 2, 3]])
    np.testing.assert_array_equal(r["CSI"], [[1, 1, 1], [0, 0, 0]])
    assert np.isnan(r["FAR"][1]).all()  # no forecast events: FAR undefined, not 0
    np.testing.assert_allclose(r["MSE"], [0.0, (0.25 + 4 + 49) / 4])
    np.testing.assert_allclose(r["MAE"], [0.0, 9.5 / 4])
    np.testing.assert_allclose(r["ME"], [0.0, -9.5 / 4])
    assert r["CORR"][0] == pytest.approx(1.0)
    assert np.isnan(r["CORR"][1])  # constant forecast: correlation undefined


def test_nan_pixels_are_excluded_everywhere():
    fc = np.array([[2.0, 2.0, np.nan, 0.0, 3.0, np.inf]])
    ob = np.array([[2.0, 0.0, 5.0, np.nan, 1.0, 4.0]])
    s = metrics.init_scores(1, [1.0])
    metrics.accumulate(s, fc, ob)
    r = metrics.compute(s)
    # Valid pixels: (2, 2), (2, 0), (3, 1): 2 hits, 1 false alarm.
    assert (r["hits"][0, 0], r["false_alarms"][0, 0], r["misses"][0, 0], r["correct_negatives"][0, 0]) == (2, 1, 0, 0)
    assert r["n"][0] == 3
    assert r["MSE"][0] == pytest.approx((0 + 4 + 4) / 3)
    assert r["MAE"][0] == pytest.approx(4 / 3)
    assert r["ME"][0] == pytest.approx(4 / 3)
    # Same as giving only the valid pixels.
    clean = metrics.init_scores(1, [1.0])
    metrics.accumulate(clean, np.array([[2.0, 2.0, 3.0]]), np.array([[2.0, 0.0, 1.0]]))
    for key, value in metrics.compute(clean).items():
        np.testing.assert_array_equal(value, r[key], err_msg=key)


def test_empty_denominators_are_nan():
    # No events at all: every categorical score is undefined; continuous scores are fine.
    s = metrics.init_scores(1, [1.0])
    metrics.accumulate(s, np.zeros((1, 10)), np.zeros((1, 10)))
    r = metrics.compute(s)
    for name in metrics.CATEGORICAL:
        assert np.isnan(r[name][0, 0]), name
    assert r["correct_negatives"][0, 0] == 10 and r["MSE"][0] == 0.0
    # Nothing valid at all: everything NaN, counts zero.
    s = metrics.init_scores(2, [0.1, 1.0])
    metrics.accumulate(s, np.full((2, 5), np.nan), np.ones((2, 5)))
    r = metrics.compute(s)
    for name in metrics.CATEGORICAL + metrics.CONTINUOUS:
        assert np.isnan(r[name]).all(), name
    assert r["hits"].sum() == 0 and r["n"].sum() == 0
    # Observed events but no forecast events: POD 0 (defined), FAR NaN, BIAS 0.
    fc, ob = _table_fields(0, 0, 4, 6)
    s = metrics.init_scores(1, [1.0])
    metrics.accumulate(s, fc, ob)
    r = metrics.compute(s)
    assert r["POD"][0, 0] == 0.0 and r["CSI"][0, 0] == 0.0 and r["BIAS"][0, 0] == 0.0
    assert np.isnan(r["FAR"][0, 0])


def test_comparison_at_the_threshold():
    fc = np.array([[1.0, 1.0, 0.0]])
    ob = np.array([[1.0, 0.0, 1.0]])
    ge = metrics.init_scores(1, [1.0])
    gt = metrics.init_scores(1, [1.0], comparison=">")
    metrics.accumulate(ge, fc, ob)
    metrics.accumulate(gt, fc, ob)
    assert (ge.hits[0, 0], ge.false_alarms[0, 0], ge.misses[0, 0], ge.correct_negatives[0, 0]) == (1, 1, 1, 0)
    assert (gt.hits[0, 0], gt.false_alarms[0, 0], gt.misses[0, 0], gt.correct_negatives[0, 0]) == (0, 0, 0, 3)
    with pytest.raises(ValueError, match="comparison"):
        metrics.init_scores(1, [1.0], comparison="=>")


def _random_fields(rng: np.random.Generator, shape: tuple[int, ...], nan_fraction: float = 0.1):
    """Gamma-distributed rain (many zeros) with NaN holes in both fields."""
    fc = rng.gamma(0.4, 3.0, shape) * (rng.random(shape) < 0.6)
    ob = np.clip(fc + rng.normal(0.0, 1.5, shape), 0.0, None) * (rng.random(shape) < 0.8)
    fc[rng.random(shape) < nan_fraction] = np.nan
    ob[rng.random(shape) < nan_fraction] = np.nan
    return fc, ob


def _assert_scores_equal(a: metrics.Scores, b: metrics.Scores) -> None:
    for name in metrics.COUNTS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in metrics.SUMS + metrics.FSS_SUMS:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12, err_msg=name)


def test_merge_equals_streaming_and_batching():
    rng = np.random.default_rng(1)
    fa, oa = _random_fields(rng, (2, 3, 16, 20))  # (batch, leads, y, x)
    fb, ob = _random_fields(rng, (3, 16, 20))  # (leads, y, x)
    args = (3, [0.1, 1.0, 5.0], ">=", (1, 3))
    a, b, stream = metrics.init_scores(*args), metrics.init_scores(*args), metrics.init_scores(*args)
    metrics.accumulate(a, fa, oa)
    metrics.accumulate(b, fb, ob)
    for f, o in [(fa[0], oa[0]), (fa[1], oa[1]), (fb, ob)]:
        metrics.accumulate(stream, f, o)
    merged = metrics.merge(a, b)
    _assert_scores_equal(merged, stream)
    assert merged.hits.sum() > 0
    # merge returns a new accumulator and leaves its inputs alone.
    assert merged.hits is not a.hits and a.hits.sum() < merged.hits.sum()
    with pytest.raises(ValueError, match="thresholds"):
        metrics.merge(a, metrics.init_scores(3, [0.1]))


def test_shape_errors():
    s = metrics.init_scores(3, [1.0])
    with pytest.raises(ValueError, match="same shape"):
        metrics.accumulate(s, np.zeros((3, 4, 4)), np.zeros((3, 4, 5)))
    with pytest.raises(ValueError, match="3 leads"):
        metrics.accumulate(s, np.zeros((2, 4, 4)), np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="3 leads"):
        metrics.accumulate(s, np.zeros((2, 4, 4, 4)), np.zeros((2, 4, 4, 4)), batched=True)
    with pytest.raises(ValueError, match="lead_minutes"):
        metrics.to_rows(s, "persistence", [5, 10])


def test_to_rows_is_tidy():
    rng = np.random.default_rng(2)
    f, o = _random_fields(rng, (2, 12, 12))
    s = metrics.init_scores(2, [0.1, 1.0], fss_scales=(3,))
    metrics.accumulate(s, f, o)
    rows = metrics.to_rows(s, "persistence", [5, 10])
    # per lead: 2 thresholds x 6 categorical + 4 continuous + 2 thresholds x 1 FSS scale
    assert len(rows) == 2 * (12 + 4 + 2)
    assert all(tuple(row) == metrics.ROW_FIELDS for row in rows)
    csi = [r for r in rows if r["score"] == "CSI" and r["lead_min"] == 10.0 and r["threshold"] == 1.0]
    assert len(csi) == 1 and csi[0]["value"] == pytest.approx(metrics.compute(s)["CSI"][1, 1])
    assert csi[0]["hits"] == s.hits[1, 1] and isinstance(csi[0]["hits"], int)
    mse = [r for r in rows if r["score"] == "MSE"]
    assert len(mse) == 2 and all(math.isnan(r["threshold"]) and r["hits"] is None for r in mse)
    assert {r["score"] for r in rows if r["score"].startswith("FSS")} == {"FSS_3px"}


def test_fss_limits_and_nan_mask():
    ob = np.zeros((1, 20, 20))
    ob[0, 5:9, 5:9] = 3.0
    shifted = np.roll(ob, 2, axis=-1)
    s = metrics.init_scores(1, [1.0], fss_scales=(1, 5, 41))
    metrics.accumulate(s, ob, ob)
    np.testing.assert_array_equal(metrics.compute(s)["FSS"], 1.0)  # perfect forecast
    s = metrics.init_scores(1, [1.0], fss_scales=(1, 5, 41))
    metrics.accumulate(s, shifted, ob)
    fss = metrics.compute(s)["FSS"][0, 0]
    assert fss[0] < fss[1] < fss[2]  # skill grows with the scale
    assert fss[2] == pytest.approx(1.0)  # a window covering everything sees equal fractions
    # No events anywhere: FSS undefined.
    s = metrics.init_scores(1, [1.0], fss_scales=(3,))
    metrics.accumulate(s, np.zeros((1, 8, 8)), np.zeros((1, 8, 8)))
    assert np.isnan(metrics.compute(s)["FSS"]).all()
    # No data in the observation hides a forecast event there: it is neither penalised nor counted.
    fc = ob.copy()
    fc[0, 15, 15] = 9.0
    ob_masked = ob.copy()
    ob_masked[0, 15, 15] = np.nan
    s = metrics.init_scores(1, [1.0], fss_scales=(1, 3))
    metrics.accumulate(s, fc, ob_masked)
    np.testing.assert_allclose(metrics.compute(s)["FSS"], 1.0)
    with pytest.raises(ValueError, match="FSS"):
        metrics.accumulate(metrics.init_scores(2, [1.0], fss_scales=(3,)), np.zeros((2, 5)), np.zeros((2, 5)))


# ---- cross-checks against pySTEPS (optional dependency) ----


@pytest.fixture(scope="module")
def pysteps_verification():
    pytest.importorskip("pysteps")
    from pysteps import verification

    return verification


def test_categorical_matches_pysteps(pysteps_verification):
    rng = np.random.default_rng(3)
    f, o = _random_fields(rng, (2, 40, 50))
    thresholds = [0.1, 1.0, 5.0]
    s = metrics.init_scores(2, thresholds, comparison=">")
    metrics.accumulate(s, f, o)
    r = metrics.compute(s)
    names = {"CSI": "CSI", "POD": "POD", "FAR": "FAR", "HSS": "HSS", "ETS": "ETS", "BIAS": "BIAS"}
    for lead in range(2):
        valid = np.isfinite(f[lead]) & np.isfinite(o[lead])  # pySTEPS counts NaN as "no event"
        for k, thr in enumerate(thresholds):
            ref = pysteps_verification.det_cat_fct(f[lead][valid], o[lead][valid], thr, scores=list(names.values()))
            for ours, theirs in names.items():
                assert r[ours][lead, k] == pytest.approx(ref[theirs], rel=1e-9, abs=1e-12), (lead, thr, ours)


def test_continuous_matches_pysteps(pysteps_verification):
    rng = np.random.default_rng(4)
    f, o = _random_fields(rng, (3, 30, 30))
    s = metrics.init_scores(3, [1.0])
    metrics.accumulate(s, f, o)
    r = metrics.compute(s)
    for lead in range(3):
        # pySTEPS takes the means and variances of each field over its own finite pixels, not the
        # pixels valid in both, so give it only the jointly valid ones (as our scores use).
        valid = np.isfinite(f[lead]) & np.isfinite(o[lead])
        ref = pysteps_verification.det_cont_fct(f[lead][valid], o[lead][valid], scores=["MSE", "MAE", "ME", "corr_p"])
        for ours, theirs in {"MSE": "MSE", "MAE": "MAE", "ME": "ME", "CORR": "corr_p"}.items():
            assert r[ours][lead] == pytest.approx(ref[theirs], rel=1e-9, abs=1e-12), (lead, ours)


def test_fss_matches_pysteps(pysteps_verification):
    rng = np.random.default_rng(5)
    f, o = _random_fields(rng, (2, 48, 40), nan_fraction=0.0)
    scales = (1, 2, 5, 16)
    s = metrics.init_scores(2, [0.5, 3.0], fss_scales=scales)
    metrics.accumulate(s, f, o)
    fss = metrics.compute(s)["FSS"]
    for lead in range(2):
        for k, thr in enumerate(s.thresholds):
            for j, scale in enumerate(scales):
                ref = pysteps_verification.spatialscores.fss(f[lead], o[lead], thr, scale)
                assert fss[lead, k, j] == pytest.approx(ref, rel=1e-9), (lead, thr, scale)

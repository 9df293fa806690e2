"""Probabilistic scores (``nowcast.verification.probscores``) against pySTEPS' and hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from nowcast.verification import probscores as ps
from nowcast.verification.metrics import ROW_FIELDS


def _ensemble(seed: int = 0, members: int = 4, leads: int = 2, shape=(30, 40), nan: bool = True):
    """Rain-like members (M, L, H, W) and observations (L, H, W) in mm/h: many zeros, NaN here and there."""
    rng = np.random.default_rng(seed)
    truth = rng.gamma(0.7, 3.0, (leads, *shape)) * (rng.random((leads, *shape)) < 0.6)
    ens = truth * rng.lognormal(0.0, 0.5, (members, leads, *shape)) * (rng.random((members, leads, *shape)) < 0.8)
    obs = truth * rng.lognormal(0.0, 0.5, (leads, *shape))
    if nan:
        obs[:, :3] = np.nan  # no observation
        ens[1, :, -2:] = np.nan  # one member without data
    return ens, obs


def _pysteps(name: str):
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        from pysteps.verification import ensscores, probscores
    return {"probscores": probscores, "ensscores": ensscores}[name]


def test_crps_equals_pysteps(pysteps_installed) -> None:
    ens, obs = _ensemble()
    s = ps.init_probscores(2, [1.0], 4)
    ps.accumulate(s, ens, obs)
    crps = ps.compute(s)["CRPS"]
    ref = _pysteps("probscores")
    for k in range(2):
        assert crps[k] == pytest.approx(ref.CRPS(ens[:, k], obs[k]), rel=1e-12)
    valid = np.isfinite(obs[0]) & np.isfinite(ens[:, 0]).all(0)
    assert ps.compute(s)["n"][0] == valid.sum()  # pixels with NaN in any member or the observation left out


def test_brier_reliability_and_roc_equal_pysteps(pysteps_installed) -> None:
    from pysteps.postprocessing.ensemblestats import excprob

    ens, obs = _ensemble(seed=1, members=4)
    s = ps.init_probscores(2, [0.5, 2.0], 4, n_bins=5)
    ps.accumulate(s, ens, obs)
    res = ps.compute(s)
    ref = _pysteps("probscores")
    for k in range(2):
        valid = np.isfinite(obs[k]) & np.isfinite(ens[:, k]).all(0)
        for t, thr in enumerate((0.5, 2.0)):
            prob = excprob(ens[:, k], thr)  # pySTEPS' probability of value >= thr
            prob[~valid] = np.nan
            o = (obs[k] >= thr).astype(float)
            assert res["BS"][k, t] == pytest.approx(np.nanmean((prob - o) ** 2), rel=1e-12)
            obar = o[valid].mean()
            assert res["BSS"][k, t] == pytest.approx(1 - np.nanmean((prob - o) ** 2) / (obar * (1 - obar)), rel=1e-12)
            r, f = ref.reldiag(prob, obs[k], thr, n_bins=5, min_count=0)
            np.testing.assert_allclose(res["REL_PROB"][k, t], r, rtol=1e-12)
            np.testing.assert_allclose(res["REL_FREQ"][k, t], f, rtol=1e-12)
            _, _, area = ref.ROC_curve(prob, obs[k], thr, n_prob_thrs=5, compute_area=True)  # p = 0, 1/4, .., 1
            assert res["ROC_AUC"][k, t] == pytest.approx(area, rel=1e-12)


def test_rank_histogram_equals_pysteps(pysteps_installed) -> None:
    ens_scores = _pysteps("ensscores")
    rng = np.random.default_rng(3)
    ens, obs = rng.gamma(1.0, 2.0, (5, 1, 50, 60)), rng.gamma(1.0, 2.0, (1, 50, 60))  # no ties
    obs[0, :4] = np.nan
    s = ps.init_probscores(1, [], 5, rank_min=None)
    ps.accumulate(s, ens, obs)
    np.testing.assert_array_equal(ps.compute(s)["RANK"][0], ens_scores.rankhist(ens[:, 0], obs[0], normalize=False))

    ens, obs = _ensemble(seed=4, members=5, leads=1, shape=(200, 200), nan=False)  # ties among dry values
    s = ps.init_probscores(1, [], 5)  # rank_min 0.1 mm/h, as pySTEPS' X_min
    ps.accumulate(s, ens, obs)
    np.random.seed(0)  # pySTEPS breaks ties at random; the shares are its expectation
    ref = ens_scores.rankhist(ens[:, 0], obs[0], X_min=0.1, normalize=False)
    ours = ps.compute(s)["RANK"][0]
    assert ours.sum() == pytest.approx(ref.sum())
    np.testing.assert_allclose(ours / ours.sum(), ref / ref.sum(), atol=0.01)


def test_brier_and_roc_by_hand() -> None:
    # 2 members, threshold 1 mm/h, 4 pixels: members in the event 2, 1, 0, 1 -> p = 1, .5, 0, .5;
    # observed yes, yes, no, no. BS = (0 + .25 + 0 + .25) / 4 = 0.125; obar = .5, BSS = 1 - .125 / .25 = .5.
    # ROC: p >= 0 -> (POFD, POD) = (1, 1); p >= .5 -> (1/2, 1); p >= 1 -> (0, 1/2); then (0, 0).
    # Area: (1 - .5)(1 + 1)/2 + (.5 - 0)(1 + .5)/2 + 0 = .5 + .375 = .875.
    ens = np.array([[[3.0, 2.0, 0.0, 0.5]], [[1.0, 0.2, 0.0, 1.5]]])  # (M=2, L=1, 4)
    obs = np.array([[2.0, 1.0, 0.0, 0.9]])
    s = ps.init_probscores(1, [1.0], 2, n_bins=3)
    ps.accumulate(s, ens, obs)
    res = ps.compute(s)
    assert res["BS"][0, 0] == pytest.approx(0.125)
    assert res["BSS"][0, 0] == pytest.approx(0.5)
    assert res["ROC_AUC"][0, 0] == pytest.approx(0.875)
    # reliability, bins of thirds: p 0 (no), p .5 twice (one yes), p 1 (yes)
    np.testing.assert_allclose(res["REL_COUNT"][0, 0], [1, 2, 1])
    np.testing.assert_allclose(res["REL_FREQ"][0, 0], [0, 0.5, 1])
    np.testing.assert_allclose(res["REL_PROB"][0, 0], [0, 0.5, 1])
    # CRPS of pixel 1 (members 3 and 1, obs 2): mean|x - y| = 1, sum|xi - xj| / (2 M^2) = 4 / 8 -> 0.5
    one = ps.init_probscores(1, [], 2)
    ps.accumulate(one, ens[:, :, :1], obs[:, :1])
    assert ps.compute(one)["CRPS"][0] == pytest.approx(0.5)


def test_strict_event_and_undefined_scores_are_nan() -> None:
    ens, obs = np.ones((3, 1, 5)), np.ones((1, 5))
    s = ps.init_probscores(1, [1.0], 3, comparison=">")
    ps.accumulate(s, ens, obs)
    res = ps.compute(s)
    assert res["BS"][0, 0] == 0.0  # nobody in the event with ">", nobody observed
    assert math.isnan(res["BSS"][0, 0]) and math.isnan(res["ROC_AUC"][0, 0])  # no observed event
    assert math.isnan(res["SPREAD_SKILL"][0])  # a perfect, spread-free ensemble: 0 / 0


def test_spread_skill_of_a_reliable_ensemble_is_one() -> None:
    rng = np.random.default_rng(5)
    centre = rng.normal(0, 3, (1, 200_000))
    ens = centre + rng.normal(0, 1, (10, 1, 200_000))  # members and observation: the same distribution
    obs = centre + rng.normal(0, 1, (1, 200_000))
    s = ps.init_probscores(1, [], 10)
    ps.accumulate(s, ens, obs)
    assert ps.compute(s)["SPREAD_SKILL"][0] == pytest.approx(1.0, abs=0.01)


def test_merge_of_two_halves_equals_one_pass_and_batches() -> None:
    ens, obs = _ensemble(seed=6, members=3, leads=2)
    whole = ps.init_probscores(2, [0.5, 3.0], 3)
    ps.accumulate(whole, ens, obs)
    a, b = ps.init_probscores(2, [0.5, 3.0], 3), ps.init_probscores(2, [0.5, 3.0], 3)
    ps.accumulate(a, ens[..., :15, :], obs[:, :15])
    ps.accumulate(b, ens[..., 15:, :], obs[:, 15:])
    merged = ps.merge(a, b)
    batch = ps.init_probscores(2, [0.5, 3.0], 3)
    halves = np.stack([ens[..., :15, :], ens[..., 15:, :]]), np.stack([obs[:, :15], obs[:, 15:]])
    ps.accumulate(batch, *halves, batched=True)
    for other in (merged, batch):
        for name in ps.ADDITIVE:
            np.testing.assert_allclose(getattr(other, name), getattr(whole, name), rtol=1e-12)
    with pytest.raises(ValueError, match="same members"):
        ps.merge(whole, ps.init_probscores(2, [0.5, 3.0], 4))


def test_rows_are_tidy() -> None:
    ens, obs = _ensemble(members=4)
    s = ps.init_probscores(2, [1.0], 4, n_bins=2)
    ps.accumulate(s, ens, obs)
    rows = ps.to_rows(s, "ensemble", [5.0, 10.0])
    assert all(tuple(r) == ROW_FIELDS for r in rows)
    names = {r["score"] for r in rows}
    assert {"CRPS", "BS", "BSS", "ROC_AUC", "SPREAD_SKILL", "REL_01_FREQ", "RANK_04"} <= names
    per_lead = 4 + 3 + 2 * 3 + 5  # per lead, per threshold, reliability, ranks
    assert len(rows) == 2 * per_lead
    with pytest.raises(ValueError, match="4 members, 2 leads"):
        ps.accumulate(s, ens[:3], obs)


def test_reliability_figure_says_when_a_threshold_has_no_event(tmp_path, monkeypatch) -> None:
    """A column whose threshold nobody forecast or observed says so instead of an empty diagram, and the
    pixel counts are labelled at powers of ten only (one bin of 10^5 pixels used to crowd the axis)."""
    from nowcast import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, dpi=100: figures.append(fig) or Path(path))
    bins = 11
    prob = np.tile(np.linspace(0.0, 1.0, bins), (2, 2, 1))  # (leads, thresholds, bins)
    freq = prob.copy()
    count = np.full((2, 2, bins), 50.0)
    freq[:, 1], count[:, 1] = 0.0, 0.0
    count[:, 1, 0] = 1.2e5  # every pixel in the zero-probability bin, none observed
    rel = {"prob": prob, "freq": freq, "count": count}
    plots.plot_reliability({"ensemble": rel}, [5.0, 10.0], [0, 1], [1.0, 30.0], tmp_path / "r.png")
    texts = [t.get_text() for ax in figures[0].axes for t in ax.texts]
    assert texts == ["no rain ≥ 30 mm/h\nforecast or observed"]  # the 1 mm/h column has events: no note
    counts = figures[0].axes[3]  # the second column's pixel counts
    labels = [t.get_text() for t in counts.yaxis.get_minorticklabels() if t.get_text()]
    assert labels == []

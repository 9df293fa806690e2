"""``scripts/research/skill_ceiling.py``: the oracles that bound what S-PROG could gain from growth, decay and motion."""

from __future__ import annotations


import numpy as np
import pytest

from tests.conftest import moving_rain


@pytest.fixture
def ceiling():
    """``scripts/research/skill_ceiling.py``."""
    from scripts.research import skill_ceiling

    return skill_ceiling


def test_observed_amounts_keep_the_forecast_ranks_and_take_the_observed_values(ceiling) -> None:
    rng = np.random.default_rng(3)
    dbr = rng.normal(-5.0, 6.0, (2, 20, 24))  # S-PROG in dBR: every pixel ranked, most below 0.1 mm/h
    dbr[:, :3, :3] = np.nan  # no forecast there
    observed = np.where(rng.random((2, 20, 24)) < 0.4, rng.gamma(1.0, 3.0, (2, 20, 24)), 0.0).astype(np.float32)
    observed[:, -2:, :] = np.nan  # no observation there
    out = ceiling._obs_amounts(dbr, observed)
    both = np.isfinite(dbr) & np.isfinite(observed)
    assert np.array_equal(np.isfinite(out), both)  # no data where either has none
    for k in range(2):
        # the observed values exactly, wet area included (it may grow beyond S-PROG's 0.1 mm/h area)
        np.testing.assert_array_equal(np.sort(out[k][both[k]]), np.sort(observed[k][both[k]]))
        f, o = dbr[k][both[k]], out[k][both[k]]
        wetter = np.argsort(f, kind="stable")
        assert (np.diff(o[wetter]) >= 0).all()  # a pixel S-PROG ranks higher never gets less rain


def test_hour_motion_is_the_motion_of_the_observed_frames(ceiling, pysteps_installed) -> None:
    seq = moving_rain(8, size=(64, 64), shift=(1, 2))  # 1 row down, 2 columns right per step
    v = ceiling._hour_motion(seq[0], seq[1:])
    assert v.shape == (2, 64, 64)
    np.testing.assert_allclose(np.median(v[0]), 2.0, atol=0.1)  # x component: columns per step
    np.testing.assert_allclose(np.median(v[1]), 1.0, atol=0.1)  # y component: rows per step


def test_wide_amounts_forecast_a_quarter_more_area_above_every_rate(ceiling) -> None:
    rng = np.random.default_rng(5)
    dbr = rng.normal(-5.0, 6.0, (1, 40, 40))
    observed = np.where(rng.random((1, 40, 40)) < 0.3, rng.gamma(1.0, 3.0, (1, 40, 40)), 0.0).astype(np.float32)
    out = ceiling._obs_amounts(dbr, observed, area=1.25)
    for t in (0.5, 1.0, 5.0):
        bias = (out >= t).sum() / (observed >= t).sum()  # observed areas of 40-300 pixels: within one pixel
        assert abs(bias - 1.25) <= 1.0 / (observed >= t).sum()
    wettest_first = np.argsort(-dbr[0].ravel(), kind="stable")
    assert (np.diff(out[0].ravel()[wettest_first]) <= 0).all()  # S-PROG's order kept

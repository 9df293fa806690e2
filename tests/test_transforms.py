"""Model-space transforms: hand-computed values, round trips, NaN and the zero floor."""

from __future__ import annotations

import numpy as np
import pytest

from nowcast.transforms import Transform
from nowcast.units import dbz_to_rate, rate_to_dbz


def test_marshall_palmer_values() -> None:
    # Z = 200 R^1.6: R = 1 mm/h -> Z = 200 -> 23.0103 dBZ; R = 10 -> Z = 200 * 10^1.6 = 7962.1 -> 39.0103 dBZ
    assert rate_to_dbz(np.array([1.0]))[0] == pytest.approx(23.0103, abs=1e-4)
    assert rate_to_dbz(np.array([10.0]))[0] == pytest.approx(39.0103, abs=1e-4)
    assert dbz_to_rate(np.array([39.0103]))[0] == pytest.approx(10.0, rel=1e-4)


@pytest.mark.parametrize("kind", ["dbz", "log", "linear"])
def test_round_trip_and_nan(kind: str) -> None:
    t = Transform(kind=kind)
    rates = np.array([0.0, np.nan, 0.1, 0.5, 1.0, 5.0, 20.0, 80.0], dtype=np.float32)
    back = t.inverse(t.forward(rates))
    assert np.isnan(back[1]) and np.isnan(t.forward(rates)[1])
    ok = ~np.isnan(rates)
    np.testing.assert_allclose(back[ok], rates[ok], rtol=1e-4, atol=1e-6)


def test_dbz_scaling_and_floor() -> None:
    t = Transform(kind="dbz", dbz_min=0.0, dbz_max=60.0)
    # 1 mm/h is 23.0103 dBZ -> 23.0103 / 60 in model space
    assert t.forward(np.array([1.0]))[0] == pytest.approx(23.0103 / 60, abs=1e-5)
    # below 0 dBZ (R < (1/200)^(1/1.6) = 0.0365 mm/h) everything maps to 0 and back to 0 mm/h
    assert t.min_rate == pytest.approx((1 / 200) ** (1 / 1.6), rel=1e-6)
    assert t.forward(np.array([0.0, 0.01]))[1] == 0.0
    assert t.inverse(np.array([0.0, -0.2]))[0] == 0.0 and t.inverse(np.array([-0.2]))[0] == 0.0
    # above the top of the range values clip to 1
    assert t.forward(np.array([1000.0]))[0] == 1.0


def test_inverse_never_negative() -> None:
    for kind in ("dbz", "log", "linear"):
        x = np.linspace(-3, 3, 101)
        assert (Transform(kind=kind).inverse(x) >= 0).all()

"""Baselines: persistence and pySTEPS extrapolation, their shapes, no-data convention and registry."""

from __future__ import annotations


import numpy as np
import pytest

from nowcast.nowcasts import baselines
from nowcast.units import to_dbr
from nowcast.verification import metrics
from nowcast.errors import NowcastError
from tests.conftest import moving_rain


def test_persistence_repeats_the_last_frame_with_its_no_data() -> None:
    x = moving_rain(4)
    x[-1, :3, :5] = np.nan
    out = baselines.persistence(x, 5)
    assert out.shape == (5, *x.shape[1:]) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.broadcast_to(x[-1].astype(np.float32), out.shape))
    multi = baselines.persistence(np.stack([x] * 3, axis=1), 2)  # (T, C, H, W)
    assert multi.shape == (2, 3, *x.shape[1:])


def test_persistence_of_an_unchanging_sequence_scores_csi_one_at_every_lead() -> None:
    x = np.repeat(moving_rain(1), 6, axis=0).astype(np.float32)  # float32 like the radar reader
    scores = metrics.init_scores(4, (0.1, 1.0, 5.0))
    metrics.accumulate(scores, baselines.get_method("persistence")(x[:2], 4), x[2:6])
    res = metrics.compute(scores)
    np.testing.assert_array_equal(res["CSI"], 1.0)
    np.testing.assert_array_equal(res["MSE"], 0.0)


def test_extrapolation_beats_persistence_on_rain_moving_one_pixel_per_step(pysteps_installed: None) -> None:
    x = moving_rain(10, shift=(1, 1))
    steps = 6
    inputs, observed = x[:4], x[4 : 4 + steps]
    csi = {}
    for name in ("persistence", "extrapolation"):
        scores = metrics.init_scores(steps, (1.0,))
        forecast = baselines.get_method(name)(inputs, steps)
        assert forecast.shape == observed.shape
        valid = np.isfinite(forecast)  # both methods on the same pixels
        metrics.accumulate(scores, forecast, np.where(valid, observed, np.nan))
        csi[name] = metrics.compute(scores)["CSI"][:, 0]
    assert csi["extrapolation"][0] >= csi["persistence"][0]
    assert np.all(csi["extrapolation"][1:] > csi["persistence"][1:]), csi
    assert np.all(csi["extrapolation"] > 0.8), csi  # a pure translation is almost reproduced


def test_extrapolation_no_data_from_outside_the_domain_and_where_the_last_frame_has_none(
    pysteps_installed: None,
) -> None:
    x = moving_rain(5, shift=(0, 2))  # moving right by 2 pixels per step
    x[:, 10:14, 20:24] = np.nan  # a no-data hole in every frame
    out = baselines.extrapolation(x, 3)
    assert out.shape == (3, *x.shape[1:]) and out.dtype == np.float32
    assert np.isnan(out[:, 10:14, 20:24]).all()
    # the left columns come from outside the domain: about 2 columns per lead time
    for k in range(3):
        assert np.isnan(out[k, 5:35, : 2 * (k + 1) - 1]).all()
        assert np.isfinite(out[k, 5:35, 2 * (k + 1) + 2 : 18]).all()
    assert np.nanmin(out) >= 0.0


def test_extrapolation_multichannel_and_degenerate_inputs(pysteps_installed: None) -> None:
    x = moving_rain(4)
    multi = np.stack([x, 2 * x], axis=1)  # (T, 2, H, W)
    out = baselines.extrapolation(multi, 2)
    assert out.shape == (2, 2, *x.shape[1:])
    np.testing.assert_allclose(out[:, 1], 2 * out[:, 0], rtol=1e-5, equal_nan=True)  # one motion for all channels
    dry = baselines.extrapolation(np.zeros((3, 16, 16)), 2)  # nothing to track: zero motion, zero rain
    np.testing.assert_array_equal(dry, 0.0)
    gone = baselines.extrapolation(np.full((3, 16, 16), np.nan), 2)
    assert np.isnan(gone).all()
    with pytest.raises(ValueError, match="at least 2 frames"):
        baselines.extrapolation(x[:1], 2)


def test_to_dbr_follows_pysteps_db_transform(pysteps_installed: None) -> None:
    from pysteps.utils.transformation import dB_transform

    r = np.array([[0.0, 0.05, 0.1, 1.0], [10.0, 55.5, np.nan, 0.2]])
    expected, _ = dB_transform(
        r.copy(), {"transform": None, "threshold": 0.1, "zerovalue": 0.0}, threshold=0.1, zerovalue=-15.0
    )
    expected[~np.isfinite(expected)] = -15.0
    np.testing.assert_allclose(to_dbr(r), expected)


def test_get_method_lists_the_valid_names_for_an_unknown_one() -> None:
    assert baselines.get_method(" Persistence ") is baselines.persistence
    with pytest.raises(NowcastError, match="expected one of persistence, extrapolation, sprog"):
        baselines.get_method("optical-flow")


def test_sprog_follows_the_motion_and_smooths_small_scales_with_lead_time(pysteps_installed) -> None:
    seq = moving_rain(10, size=(64, 64), shift=(0, 2))
    x, truth = seq[:4].copy(), seq[4:]  # the same cells 1..6 steps later
    x[-1, :4, :4] = np.nan
    out = baselines.sprog(x, 6)
    assert out.shape == (6, 64, 64) and out.dtype == np.float32
    assert np.isnan(out[:, :4, :4]).all()  # no data in the last frame: none in the forecast
    assert np.isnan(out[:, :, :2]).all()  # the upwind edge: its source lies outside the domain
    scores = metrics.init_scores(6, (1.0,))
    metrics.accumulate(scores, out[None, :, None], truth[None, :, None])
    csi = metrics.compute(scores)["CSI"][:, 0]
    assert csi[0] > 0.8  # it moves the rain with the motion

    def roughness(f: np.ndarray) -> float:  # mean absolute difference of horizontal neighbours, mm/h
        a, b = f[:, :-1], f[:, 1:]
        ok = np.isfinite(a) & np.isfinite(b)
        return float(np.mean(np.abs(a - b)[ok]))

    rough = [roughness(out[k]) for k in range(6)]
    assert all(later < earlier for earlier, later in zip(rough, rough[1:]))  # small scales damped with lead
    assert rough[-1] < 0.7 * roughness(x[-1])


def test_sprog_of_dry_frames_is_dry_and_needs_three_frames(pysteps_installed) -> None:
    dry = baselines.sprog(np.zeros((3, 16, 16), np.float32), 2)
    assert dry.shape == (2, 16, 16) and np.nanmax(dry) == 0.0
    with pytest.raises(ValueError, match="at least 3 frames"):
        baselines.sprog(moving_rain(2), 2)


def test_sprog_along_a_given_motion(pysteps_installed) -> None:
    seq = moving_rain(10, size=(64, 64), shift=(0, 2))
    x, truth = seq[:4], seq[4:]

    def csi1(forecast: np.ndarray) -> np.ndarray:
        scores = metrics.init_scores(6, (1.0,))
        metrics.accumulate(
            scores, forecast[None, :, None], np.where(np.isfinite(forecast), truth, np.nan)[None, :, None]
        )
        return metrics.compute(scores)["CSI"][:, 0]

    right = np.zeros((2, 64, 64), np.float32)
    right[0] = 2.0  # 2 pixels per step along x (columns): the true motion
    along = baselines.sprog(x, 6, velocity=right)
    still = baselines.sprog(x, 6, velocity=np.zeros_like(right))
    assert np.isnan(along[:, :, :2]).all() and np.isfinite(still).all()  # only the moving one loses the upwind edge
    good, bad = csi1(along), csi1(still)
    assert good[0] > 0.9 and (good > bad).all() and good[-1] > bad[-1] + 0.5  # still rain falls behind
    # the dBR forecast it thresholds: the same rain above 0.1 mm/h, NaN where there is no data
    dbr = baselines.sprog_dbr(x, 6, right)
    np.testing.assert_array_equal(np.isnan(dbr), np.isnan(along))
    np.testing.assert_allclose(
        np.where(dbr >= -10.0, 10.0 ** (dbr / 10.0), 0.0)[np.isfinite(dbr)], along[np.isfinite(along)], rtol=1e-6
    )

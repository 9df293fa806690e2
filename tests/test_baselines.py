"""Baselines: persistence and pySTEPS extrapolation, their shapes, no-data convention and registry."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from nowcast import baselines, metrics
from nowcast.errors import MissingDependencyError, NowcastError


def moving_rain(frames: int, size: tuple[int, int] = (40, 48), shift: tuple[int, int] = (0, 1), seed: int = 0) -> np.ndarray:
    """(frames, H, W) mm/h: Gaussian rain cells moving ``shift`` = (rows, cols) pixels per frame.

    Frame t is a window of a larger fixed field, moved by ``t * shift`` (no wrap-around: rain enters
    from outside the domain on the upwind side). About a tenth of the pixels have >= 1 mm/h.
    """
    h, w = size
    dy, dx = shift
    pad = frames * max(abs(dy), abs(dx)) + 8
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0 : h + 2 * pad, 0 : w + 2 * pad]
    big = np.zeros(rows.shape)
    n_cells = max(4, big.size // 500)
    for r, c, sigma, peak in zip(
        rng.uniform(0, rows.shape[0], n_cells), rng.uniform(0, cols.shape[1], n_cells),
        rng.uniform(1.5, 3.5, n_cells), rng.uniform(2.0, 30.0, n_cells),
    ):  # fmt: skip
        big += peak * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * sigma**2))
    big = np.round(np.where(big < 0.05, 0.0, big), 2)
    return np.stack([big[pad - t * dy : pad - t * dy + h, pad - t * dx : pad - t * dx + w] for t in range(frames)])


@pytest.fixture
def pysteps_installed() -> None:
    """Skip when the ``baselines`` extra is missing (imports pysteps without its stdout banner)."""
    try:
        baselines.get_method("extrapolation")
    except MissingDependencyError as exc:
        pytest.skip(str(exc))


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


def test_extrapolation_no_data_from_outside_the_domain_and_where_the_last_frame_has_none(pysteps_installed: None) -> None:
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
    expected, _ = dB_transform(r.copy(), {"transform": None, "threshold": 0.1, "zerovalue": 0.0}, threshold=0.1, zerovalue=-15.0)
    expected[~np.isfinite(expected)] = -15.0
    np.testing.assert_allclose(baselines.to_dbr(r), expected)


def test_get_method_lists_the_valid_names_for_an_unknown_one() -> None:
    assert baselines.names() == ("persistence", "extrapolation")
    assert baselines.get_method(" Persistence ") is baselines.persistence
    with pytest.raises(NowcastError, match="expected one of persistence, extrapolation"):
        baselines.get_method("optical-flow")


def test_missing_pysteps_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pysteps", None)  # "import pysteps" now raises ImportError
    with pytest.raises(MissingDependencyError, match=r'pip install "nowcast\[baselines\]"'):
        baselines.get_method("extrapolation")
    assert baselines.get_method("persistence") is baselines.persistence  # always available

"""The port of pySTEPS' dense Lucas-Kanade: each part and the whole against pySTEPS itself."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from nowcast.motion import lucaskanade as lk
from nowcast.units import to_dbr
from tests.conftest import moving_rain


@pytest.fixture
def ps(pysteps_installed) -> object:
    """pySTEPS' own functions (imported without its banner by the ``pysteps_installed`` fixture)."""
    from types import SimpleNamespace

    from pysteps.motion.lucaskanade import dense_lucaskanade
    from pysteps.utils.cleansing import decluster, detect_outliers
    from pysteps.utils.interpolate import idwinterp2d

    return SimpleNamespace(dense=dense_lucaskanade, decluster=decluster, outliers=detect_outliers, idw=idwinterp2d)


def _pysteps_dense(ps, dbr: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ps.dense(dbr)


def test_motion_of_moving_cells_equals_pysteps(ps) -> None:
    """Cells moving 1 row down and 2 columns right per step, and a second case with a dry band and
    a wet first row (pySTEPS' feature scaling ignores the first row: the port must too)."""
    x = to_dbr(moving_rain(3, size=(96, 120), shift=(1, 2)))
    ours = lk.dense_lucaskanade(x, workers=1)
    assert ours.shape == (2, 96, 120) and ours.dtype == np.float64
    np.testing.assert_allclose(ours, _pysteps_dense(ps, x), rtol=0, atol=1e-10)
    assert np.median(ours[0]) == pytest.approx(2.0, abs=0.25) and np.median(ours[1]) == pytest.approx(1.0, abs=0.25)

    y = to_dbr(moving_rain(3, size=(80, 80), shift=(0, -1), seed=5))
    y[:, 30:40] = -15.0
    y[:, 0] = 20.0
    np.testing.assert_allclose(lk.dense_lucaskanade(y, workers=2), _pysteps_dense(ps, y), rtol=0, atol=1e-10)


def test_dry_frames_give_no_motion(ps) -> None:
    dry = np.full((3, 40, 50), -15.0)
    assert not np.any(lk.dense_lucaskanade(dry)) and not np.any(_pysteps_dense(ps, dry))


def test_idw_equals_pysteps_including_its_uniform_cases(ps) -> None:
    rng = np.random.default_rng(1)
    xg, yg = np.arange(53), np.arange(37)
    xy = rng.uniform(0, 50, size=(40, 2))
    uv = rng.normal(size=(40, 2))
    np.testing.assert_allclose(lk.idw(xy, uv, (37, 53)), ps.idw(xy, uv, xg, yg), rtol=0, atol=1e-12)
    few = xy[:7]  # fewer vectors than the 20 neighbours
    np.testing.assert_allclose(lk.idw(few, uv[:7], (37, 53)), ps.idw(few, uv[:7], xg, yg), rtol=0, atol=1e-12)
    one = lk.idw(xy[:1], np.array([[1.5, -2.0]]), (37, 53))
    assert np.all(one[0] == 1.5) and np.all(one[1] == -2.0)
    same = np.full((5, 2), 0.25)  # all equal: pySTEPS' uniform field
    np.testing.assert_array_equal(lk.idw(xy[:5], same, (37, 53)), ps.idw(xy[:5], same, xg, yg))


def test_outliers_and_declustering_equal_pysteps(ps) -> None:
    rng = np.random.default_rng(2)
    xy = np.round(rng.uniform(0, 200, size=(300, 2)))
    xy[150:160] = xy[:10]  # duplicate positions, as corners of two frame pairs give
    uv = rng.normal(loc=(3.0, -1.0), scale=0.3, size=(300, 2))
    uv[[5, 77, 210]] += (6.0, -5.0)  # three wild vectors
    found = lk.outliers(uv, xy)
    np.testing.assert_array_equal(found, ps.outliers(uv, 3, xy, 30))
    assert found[[5, 77, 210]].all() and found.sum() < 10
    dxy, duv = lk.decluster(xy, uv)
    pxy, puv = ps.decluster(xy, uv, 20, 1)
    np.testing.assert_array_equal(dxy, pxy)
    np.testing.assert_array_equal(duv, puv)


def test_bad_frames_are_refused() -> None:
    with pytest.raises(ValueError, match=r"finite \(T >= 2, H, W\)"):
        lk.dense_lucaskanade(np.zeros((1, 10, 10)))
    with pytest.raises(ValueError, match="finite"):
        lk.dense_lucaskanade(np.full((3, 10, 10), np.nan))


def test_predict_with_the_default_model_needs_no_pysteps(
    cli_runner, radar_file, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped Lagrangian model forecasts with ``import pysteps`` failing: only the baselines need it."""
    from nowcast.cli import app

    from nowcast.motion import flow
    from nowcast.nowcasts import cascade

    data = radar_file("r.nc", frames=8, size=(64, 72))
    for name in [m for m in sys.modules if m.startswith("pysteps.")]:  # no submodule cached from other tests
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pysteps", None)  # "import pysteps" now raises ImportError
    cascade._bandpass.cache_clear()  # nor weights or motion cached
    monkeypatch.setattr(flow, "_RECENT_MOTION", {})
    result = cli_runner.invoke(app, ["predict", str(data), "-o", str(tmp_path / "f.nc"), "--steps", "3"])
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "f.nc").is_file()


def test_real_radar_motion_equals_pysteps(ps, real_data: Path) -> None:
    """Three real events of different networks and grids: the same field to 1e-10 px per step
    (measured on all eight shared events: at most 2e-14, the order of the IDW sums)."""
    import xarray as xr

    for name, t0 in (
        ("knmi_netherlands_20100826.nc", 46),
        ("bom_brisbane_20201031.nc", 72),
        ("mrms_conus_20190610.nc", 18),
    ):
        with xr.open_dataset(real_data / name) as ds:
            x = to_dbr(ds["rainfall_rate"].values[t0 - 3 : t0].astype(np.float32))
        np.testing.assert_allclose(lk.dense_lucaskanade(x), _pysteps_dense(ps, x), rtol=0, atol=1e-10, err_msg=name)

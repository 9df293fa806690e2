"""scripts/data/rescale_event.py: extra 5-minute training events made from events at other steps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nowcast.io import open_radar
from tests.conftest import REPO_ROOT


@pytest.fixture
def rescale():
    """``scripts/data/rescale_event.py``."""
    from scripts.data import rescale_event

    return rescale_event


def test_area_mean_of_valid_pixels_and_half_cover_rule(rescale) -> None:
    rate = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    rate[0, 0, 0] = np.nan  # top-left 2x2: 3 of 4 valid -> mean of 1, 4, 5
    rate[0, 2:, 2:] = np.nan  # bottom-right 2x2: none valid -> no data
    rate[0, 2, 0] = rate[0, 3, 0] = np.nan  # bottom-left: exactly half valid -> kept: mean of 9, 13
    out = rescale.area_mean(rate, (2, 2))
    np.testing.assert_allclose(out[0, 0], [(1 + 4 + 5) / 3, (2 + 3 + 6 + 7) / 4], rtol=1e-6)
    assert out[0, 1, 0] == pytest.approx((9 + 13) / 2)
    assert np.isnan(out[0, 1, 1])


def test_centres_span_the_same_extent(rescale) -> None:
    y = np.array([3500.0, 2500.0, 1500.0, 500.0])  # 1 km pixels, decreasing
    np.testing.assert_allclose(rescale.centres(y, 2), [3000.0, 1000.0])


@pytest.mark.slow
def test_rescaled_event_reads_as_5_minutes_on_the_matched_grid(radar_file, tmp_path: Path) -> None:
    # a 10-minute event on 500 m pixels: per-step displacement matches 5 min at 1 km on 2 km pixels
    src = radar_file(frames=20, size=(64, 48), step=600, global_attrs={"pixel_size_x_m": 500.0})
    before = src.read_bytes()
    dst = tmp_path / "rescaled.nc"
    subprocess.run(
        [sys.executable, "-m", "scripts.data.rescale_event", str(src), str(dst)],
        check=True,
        capture_output=True,
        cwd=REPO_ROOT,
    )
    assert src.read_bytes() == before
    source, out = open_radar(src, time_step=600), open_radar(dst, time_step=300)
    assert out.sizes == {"time": 20, "y": 16, "x": 12}
    steps = np.diff(out["time"].values).astype("timedelta64[s]").astype(int)
    assert set(steps) == {300}
    coarse = source.values.reshape(20, 16, 4, 12, 4).mean(axis=(2, 4))  # 4x4 blocks, all valid here
    np.testing.assert_allclose(out.values, coarse, atol=0.006)  # int16 packing: 0.01 mm/h steps


@pytest.mark.slow
def test_refuses_to_invent_detail(radar_file, tmp_path: Path) -> None:
    src = radar_file(frames=5, step=120, global_attrs={"pixel_size_x_m": 1000.0})
    run = subprocess.run(
        [sys.executable, "-m", "scripts.data.rescale_event", str(src), str(tmp_path / "o.nc")],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert run.returncode != 0 and "coarsening factor >= 1" in run.stderr
    assert not (tmp_path / "o.nc").exists()

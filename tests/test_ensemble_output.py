"""The ensemble product: members on ``realization``, IMPROVER-style exceedance probabilities, the mean as
``rainfall_rate``, packed, atomic and CF-1.11 clean (``nowcast.io.ensemble_writing``,
``nowcast.ensemble_forecast``)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import xarray as xr

from nowcast.ensemble_forecast import EnsembleProduct, ensemble_members
from nowcast.io import NS, open_radar, times_ns
from nowcast.io.ensemble_writing import (
    MEMBERS_VARIABLE,
    PROBABILITY_VARIABLE,
    ensemble_dataset,
    exceedance_probability,
    write_ensemble,
)
from tests.conftest import moving_rain

CHECKER = shutil.which("compliance-checker")


@pytest.fixture
def members(radar_file) -> xr.DataArray:
    """Five members, three lead times, from a synthetic radar file with no data along one edge."""
    values = moving_rain(4, size=(32, 40), shift=(0, 1), seed=2)
    nan_mask = np.zeros((32, 40), bool)
    nan_mask[:, :3] = True
    rate = open_radar(radar_file(frames=4, size=(32, 40), values=values, nan_mask=nan_mask), time_step=300)
    frames = np.asarray(rate.values, np.float32)[:, None]
    return ensemble_members(frames, int(times_ns(rate)[-1]), rate, 300, 3, EnsembleProduct(members=5, seed=3))


def test_members_carry_times_and_grid(members) -> None:
    assert members.dims == ("realization", "time", "y", "x") and members.shape == (5, 3, 32, 40)
    t_ref = members["forecast_reference_time"].values.astype("datetime64[ns]").astype(np.int64)
    np.testing.assert_array_equal(times_ns(members) - t_ref, np.array([1, 2, 3]) * 300 * NS)
    assert np.isnan(members.values[:, :, :, :3]).all()  # no data where the input has none
    assert "crs" in members.coords and members.attrs["units"] == "mm h-1"


def test_exceedance_probability_by_hand() -> None:
    m = np.array([[0.5, 2.0, np.nan], [1.0, 0.0, 1.0], [3.0, 1.0, 1.0], [0.0, 0.9, 1.0]])  # (4 members, 3 pixels)
    p = exceedance_probability(m, [1.0, 2.5])
    np.testing.assert_array_equal(p[:, :2], [[0.5, 0.5], [0.25, 0.0]])
    assert np.isnan(p[:, 2]).all()  # a member without data: no probability


def test_dataset_layout_and_packing(members, tmp_path) -> None:
    path = write_ensemble(members, [1.0, 10.0], tmp_path / "ens.nc", global_attrs={"history": "test"})
    assert not list(tmp_path.glob(".*"))  # no temporary left behind
    with xr.open_dataset(path) as ds:
        ens, prob, mean = ds[MEMBERS_VARIABLE], ds[PROBABILITY_VARIABLE], ds["rainfall_rate"]
        assert ens.dims == ("realization", "time", "y", "x") and prob.dims == ("threshold", "time", "y", "x")
        assert ds["realization"].attrs["standard_name"] == "realization" and ds["realization"].dtype.kind == "i"
        thr = ds["threshold"]
        assert thr.attrs["standard_name"] == "rainfall_rate" and thr.attrs["units"] == "mm h-1"
        assert thr.attrs["spp__relative_to_threshold"] == "greater_than_or_equal_to"
        assert prob.attrs["units"] == "1"
        np.testing.assert_allclose(ens.values, np.round(members.values, 2), atol=0.006, equal_nan=True)
        want = exceedance_probability(members.values, [1.0, 10.0])  # from the unpacked members
        np.testing.assert_allclose(prob.values, want, atol=1e-4, equal_nan=True)  # k / 5 within the 1e-4 packing
        np.testing.assert_allclose(mean.values, members.values.mean(0), atol=0.006, equal_nan=True)
        assert mean.attrs["long_name"].endswith("ensemble mean")
    with xr.open_dataset(path, mask_and_scale=False) as raw:
        assert raw[PROBABILITY_VARIABLE].dtype == np.int16 and raw[MEMBERS_VARIABLE].dtype == np.int16
        assert raw[PROBABILITY_VARIABLE].attrs["scale_factor"] == pytest.approx(1e-4)


def test_bad_thresholds_and_dims_are_refused(members) -> None:
    with pytest.raises(ValueError, match="increasing"):
        ensemble_dataset(members, [10.0, 1.0])
    with pytest.raises(ValueError, match="realization, time, y, x"):
        ensemble_dataset(members.isel(realization=0), [1.0])
    with pytest.raises(ValueError, match="positive, increasing"):
        EnsembleProduct(members=3, thresholds=(0.0, 1.0))


@pytest.mark.skipif(CHECKER is None, reason="compliance-checker is not installed")
@pytest.mark.parametrize("packed", [True, False])
def test_ensemble_file_passes_cf_1_11(members, tmp_path, packed) -> None:
    path = write_ensemble(members, [1.0, 10.0, 30.0], tmp_path / "ens.nc", packed=packed)
    proc = subprocess.run(
        [CHECKER, "--test=cf:1.11", "--format=text", str(path)], capture_output=True, text=True, timeout=300
    )
    assert "All tests passed!" in proc.stdout, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def synth_and_model(tmp_path_factory):
    from tests.conftest import make_tiny_checkpoint

    from nowcast.cli import app
    from typer.testing import CliRunner

    folder = tmp_path_factory.mktemp("ens_cli")
    src = folder / "synth.nc"
    result = CliRunner().invoke(app, ["synth", str(src), "--frames", "6", "--size", "64", "64"])
    assert result.exit_code == 0, result.output
    return src, make_tiny_checkpoint(folder / "tiny.pt", "data.time_step=300")


def test_predict_members_writes_a_reproducible_ensemble(cli_runner, synth_and_model, tmp_path) -> None:
    from nowcast.cli import app

    src, ckpt = synth_and_model
    common = ["predict", str(src), "--model", str(ckpt), "--steps", "3", "--members", "4", "--probabilities", "1,10"]
    outs = []
    for name, seed in (("a.nc", "7"), ("b.nc", "7"), ("c.nc", "8")):
        result = cli_runner.invoke(app, [*common, "--seed", seed, "-o", str(tmp_path / name)])
        assert result.exit_code == 0, result.stderr
        with xr.open_dataset(tmp_path / name) as ds:
            outs.append(ds[MEMBERS_VARIABLE].values)
            assert ds.sizes["realization"] == 4 and ds.sizes["threshold"] == 2 and ds.sizes["time"] == 3
            assert "ensemble" in ds.attrs["source"]
            # the default (auto) resolved on this grid of x/y in metres: bps, and the file says so
            assert "bps motion perturbations" in ds.attrs["source"], ds.attrs["source"]
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2], equal_nan=True)
    if CHECKER is not None:
        proc = subprocess.run(
            [CHECKER, "--test=cf:1.11", "--format=text", str(tmp_path / "a.nc")], capture_output=True, text=True
        )
        assert "All tests passed!" in proc.stdout, proc.stdout


def test_predict_refuses_bad_probabilities(cli_runner, synth_and_model, tmp_path) -> None:
    from nowcast.cli import app

    src, ckpt = synth_and_model
    base = ["predict", str(src), "--model", str(ckpt), "-o", str(tmp_path / "x.nc")]
    result = cli_runner.invoke(app, [*base, "--members", "3", "--probabilities", "10,1"])
    assert result.exit_code == 2 and "increasing" in result.stderr
    result = cli_runner.invoke(app, [*base, "--members", "-1"])
    assert result.exit_code == 2 and "--members" in result.stderr
    assert not (tmp_path / "x.nc").exists()


def test_predict_members_plot_is_the_probability_map(cli_runner, synth_and_model, tmp_path) -> None:
    """``--plot`` with ``--members``: the observed frame and the ensemble mean, then one row of exceedance
    probabilities per threshold (the first two asked): a taller figure than a deterministic plot."""
    from matplotlib.image import imread

    from nowcast.cli import app

    src, ckpt = synth_and_model
    base = ["predict", str(src), "--model", str(ckpt), "--steps", "3"]
    result = cli_runner.invoke(app, [*base, "-o", str(tmp_path / "d.nc"), "--plot", str(tmp_path / "d.png")])
    assert result.exit_code == 0, result.stderr
    result = cli_runner.invoke(
        app,
        [
            *base,
            "--members",
            "4",
            "--probabilities",
            "1,10,30",
            "-o",
            str(tmp_path / "e.nc"),
            "--plot",
            str(tmp_path / "e.png"),
        ],
    )
    assert result.exit_code == 0, result.stderr
    deterministic, ensemble = imread(tmp_path / "d.png"), imread(tmp_path / "e.png")
    rows = ensemble.shape[0] / ensemble.shape[1] / (deterministic.shape[0] / deterministic.shape[1])
    assert 2.4 < rows < 3.6  # three rows of panels (rain, >= 1, >= 10) against one

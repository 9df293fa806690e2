"""Motion perturbations of ensemble members (pySTEPS' ``bps``): the formula, the trajectories, the members."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import xarray as xr

from nowcast.cli import app
from nowcast.io import pixel_size_km
from nowcast.motion.advection import advance, displacements
from nowcast.motion.flow import motion_field
from nowcast.motion.perturbation import (
    BPS_PARALLEL,
    BPS_PERPENDICULAR,
    LAPLACE_SCALE,
    PerturbedTrajectories,
    bps_std,
    member_draws,
)
from nowcast.nowcasts.ensemble import EnsembleSettings, ensemble_forecast

from tests.conftest import moving_rain

SIZE = (40, 48)


def _swirl(h: int = 24, w: int = 28) -> torch.Tensor:
    """(1, 2, H, W) px/step: a motion that turns and changes speed across the grid, zero at one pixel."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    vel = torch.stack([1.2 + 0.04 * (ys - h / 2), 0.5 - 0.03 * (xs - w / 2)])[None]
    vel[..., 3, 4] = 0.0
    return vel


def _frames() -> np.ndarray:
    x = moving_rain(4, SIZE, shift=(1, 1), seed=3).astype(np.float32)
    x[:, :2, :3] = np.nan  # a corner without coverage
    return x


def test_advance_repeated_is_displacements_of_a_constant_motion() -> None:
    vel = _swirl()
    want = displacements(vel, 5)  # (1, 5, 2, H, W)
    disp = None
    for k in range(5):
        disp = advance(vel, disp)
        torch.testing.assert_close(disp, want[:, k], rtol=0, atol=1e-5)


def test_perturbed_motion_is_pysteps_generate_bps(pysteps_installed) -> None:
    """For the same draws, each member's motion at lead k is V + pySTEPS' ``generate_bps`` at k step_min."""
    from pysteps.noise.motion import generate_bps, initialize_bps

    vel = _swirl().double()
    draws = np.array([[0.7, -1.3], [-0.2, 0.4]])
    km, step = 0.5, 6.0
    paths = PerturbedTrajectories(vel, draws, km, step)
    for j, (e_par, e_perp) in enumerate(draws):
        ref = initialize_bps(vel[0].numpy(), 1.0 / km, step, seed=1)
        ref["eps_par"], ref["eps_perp"] = e_par, e_perp
        for k in (1, 4, 12):
            want = vel[0].numpy() + generate_bps(ref, k * step)
            np.testing.assert_allclose(paths.velocity_at(k)[j].numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("km", "step"), [(1.0, 5.0), (0.5, 6.0), (2.0, 15.0)])
def test_perturbation_statistics_follow_the_bps_formula(km: float, step: float) -> None:
    """Over many members, the mean parallel and perpendicular magnitudes at lead t equal
    |a t**b + c| E|eps| / vsf with E|eps| = 1/sqrt(2) (Laplace, unit variance), vsf = 60 km / step."""
    n = 20000
    vel = _swirl()
    paths = PerturbedTrajectories(vel, member_draws(11, n), km, step)
    par_dir, perp_dir = paths.par_dir, paths.perp_dir
    vsf = 60.0 * km / step
    for k in (1, 3, 12):
        pert = paths.velocity_at(k) - vel  # (n, 2, H, W)
        par = (pert * par_dir).sum(1)[:, 0, 0]  # one pixel: every pixel gets the same magnitude
        perp = (pert * perp_dir).sum(1)[:, 0, 0]
        t = k * step
        for got, params in ((par, BPS_PARALLEL), (perp, BPS_PERPENDICULAR)):
            want = abs(bps_std(params, t)) * LAPLACE_SCALE / vsf
            assert float(got.abs().mean()) == pytest.approx(want, rel=0.03)
            assert float(got.mean()) == pytest.approx(0.0, abs=0.03 * want)
            assert float(got.std()) == pytest.approx(abs(bps_std(params, t)) / vsf, rel=0.05)  # unit variance
    assert torch.all(paths.velocity_at(7)[:, :, 3, 4] == 0.0)  # no motion: nothing to perturb


def test_member_draws_depend_on_seed_and_member_alone() -> None:
    a = member_draws(5, 6)
    np.testing.assert_array_equal(member_draws(5, 3), a[:3])
    assert not np.allclose(member_draws(6, 6), a)
    assert len({tuple(r) for r in a}) == 6


def _bps(**kw) -> EnsembleSettings:
    return EnsembleSettings(members=5, seed=2, chunk=2, motion_perturbation="bps", km_per_px=1.0, step_min=5.0, **kw)


def test_same_seed_same_members_and_zero_perturbation_is_the_unperturbed_ensemble() -> None:
    x = _frames()
    v = motion_field(x)
    plain = ensemble_forecast(x, v, 6, EnsembleSettings(members=5, seed=2, chunk=2))
    zero = ensemble_forecast(x, v, 6, _bps(bps_parallel=(0.0, 0.0, 0.0), bps_perpendicular=(0.0, 0.0, 0.0)))
    np.testing.assert_array_equal(zero, plain)  # NaN in the same places, the same values
    a = ensemble_forecast(x, v, 6, _bps())
    b = ensemble_forecast(x, v, 6, _bps())
    np.testing.assert_array_equal(a, b)
    other = ensemble_forecast(x, v, 6, dataclass_replace(_bps(), seed=3))
    assert not np.array_equal(a, other)
    # perturbed: each member elsewhere, and further apart at lead 6 than at lead 1
    moved = np.nanmean(np.abs(a - plain), axis=(0, 2, 3))
    assert moved[0] > 0 and moved[-1] > moved[0]


def dataclass_replace(s: EnsembleSettings, **kw) -> EnsembleSettings:
    import dataclasses

    return dataclasses.replace(s, **kw)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        (dict(motion_perturbation="wind"), "motion_perturbation"),
        (dict(motion_perturbation="bps", step_min=5.0), "km_per_px"),
        (dict(motion_perturbation="bps", km_per_px=1.0, step_min=0.0), "step_min"),
    ],
)
def test_settings_refuse_bps_without_the_grid(kw: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        EnsembleSettings(members=2, **kw)


def test_pixel_size_from_projected_coordinates() -> None:
    def grid(dx: float, dy: float, units: str = "m") -> xr.DataArray:
        x = xr.DataArray(np.arange(4) * dx, dims="x", attrs={"units": units})
        y = xr.DataArray(np.arange(3) * dy, dims="y", attrs={"units": units})
        return xr.DataArray(np.zeros((3, 4)), dims=("y", "x"), coords={"x": x, "y": y})

    assert pixel_size_km(grid(1000.0, -1000.0)) == pytest.approx(1.0)
    assert pixel_size_km(grid(2.0, 2.0, "km")) == pytest.approx(2.0)
    assert pixel_size_km(grid(780.2, -1112.0)) == pytest.approx(math.sqrt(0.7802 * 1.112))  # MRMS
    assert pixel_size_km(xr.DataArray(np.zeros((3, 4)), dims=("y", "x"))) is None


def test_pixel_size_on_a_latitude_longitude_grid() -> None:
    km_per_degree = 2 * math.pi * 6371.0 / 360  # 111.19 km along a meridian
    lat = xr.DataArray(60.0 + np.arange(3) * 0.01, dims="lat", attrs={"units": "degrees_north"})
    lon = xr.DataArray(10.0 + np.arange(4) * 0.02, dims="lon", attrs={"units": "degrees_east"})
    da = xr.DataArray(np.zeros((3, 4)), dims=("lat", "lon"), coords={"lat": lat, "lon": lon})
    dx, dy = 0.02 * km_per_degree * math.cos(math.radians(60.01)), 0.01 * km_per_degree  # 1.109 km, 1.112 km
    assert pixel_size_km(da) == pytest.approx(math.sqrt(dx * dy), rel=1e-9)


def test_cli_bps_in_evaluate_and_predict(
    cli_runner, radar_file: Callable[..., Path], tmp_path: Path, pysteps_installed
) -> None:
    path = radar_file("ens.nc", frames=6, size=SIZE, values=moving_rain(6, SIZE, shift=(1, 1), seed=3))
    args = ["evaluate", str(path), "--no-model", "--baselines", "steps", "--steps", "3", "--members", "3"]
    args += ["--threads", "1", "--seed", "4"]
    runs = {}
    for motion in ("bps", "none"):
        out = tmp_path / motion
        result = cli_runner.invoke(app, [*args, "--motion-perturbation", motion, "--out", str(out)])
        assert result.exit_code == 0, result.output
        summary = json.loads((out / "summary.json").read_text())
        assert summary["settings"]["ensemble"]["motion_perturbation"] == motion
        runs[motion] = summary["scores_mean_over_leads"]
    for method in ("ensemble", "steps"):
        assert runs["bps"][method]["CRPS"] != runs["none"][method]["CRPS"]

    bad = cli_runner.invoke(app, [*args, "--motion-perturbation", "wind", "--out", str(tmp_path / "w")])
    assert bad.exit_code == 2 and "--motion-perturbation" in bad.stderr and "bps, none" in bad.stderr

    fc = tmp_path / "fc.nc"
    result = cli_runner.invoke(
        app, ["predict", str(path), "--members", "3", "--motion-perturbation", "bps", "--steps", "2", "-o", str(fc)]
    )
    assert result.exit_code == 0, result.output
    with xr.open_dataset(fc) as ds:
        assert ds["rainfall_rate_ensemble"].sizes["realization"] == 3


def test_cli_bps_on_lat_lon_and_auto_without_a_pixel_size(
    cli_runner, radar_file: Callable[..., Path], tmp_path: Path
) -> None:
    args = ["evaluate", "--no-model", "--baselines", "persistence", "--steps", "3", "--members", "2"]
    latlon = radar_file("latlon.nc", frames=6, size=SIZE, dims=("time", "lat", "lon"))
    result = cli_runner.invoke(app, [*args, str(latlon), "--motion-perturbation", "bps", "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output  # degrees give the pixel size
    pixels = tmp_path / "pixels.nc"  # a grid with no coordinates, as an image sequence's
    with xr.open_dataset(latlon) as ds:
        values = ds["rainfall_rate"].values
        times = ds["time"].values
    xr.Dataset(
        {"rainfall_rate": (("time", "y", "x"), values, {"units": "mm h-1", "standard_name": "rainfall_rate"})},
        coords={"time": times},
    ).to_netcdf(pixels)
    result = cli_runner.invoke(app, [*args, str(pixels), "--motion-perturbation", "bps", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2, result.output  # asked for bps explicitly, on a grid with no size
    assert "pixel size" in result.stderr and "--motion-perturbation none" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = cli_runner.invoke(app, [*args, str(pixels), "--out", str(tmp_path / "c")])  # default: auto
    assert result.exit_code == 0, result.output
    said = json.loads((tmp_path / "c" / "summary.json").read_text())["settings"]["ensemble"]
    assert (said["motion_perturbation"], said["motion_perturbation_asked"]) == ("none", "auto")
    assert "no motion perturbation" in said["methods"]["ensemble"]

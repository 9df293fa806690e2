"""The STEPS-like ensemble in torch (``nowcast.nowcasts.ensemble``) and pySTEPS' STEPS as its reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nowcast.motion.flow import motion_field
from nowcast.nowcasts import baselines
from nowcast.nowcasts.ensemble import (
    EnsembleSettings,
    _match_members,
    correlated_noise,
    ensemble_forecast,
    WET_DBR,
    innovation_scale,
    lagrangian_dbr,
    member_generators,
    noise_filter,
    perturbed_cascade,
    tukey_window,
)
from nowcast.motion.advection import warp
from nowcast.nowcasts.cascade import ar2_parameters, decompose, lag_correlation, match_last
from nowcast.units import to_dbr
from tests.conftest import moving_rain

STEPS = 8


@pytest.fixture(scope="module")
def case() -> tuple[np.ndarray, np.ndarray]:
    """Four frames of rain moving (1, 2) px per step on 64 x 80, and their motion."""
    torch.set_num_threads(1)
    frames = moving_rain(4, size=(64, 80), shift=(1, 2), seed=3).astype(np.float32)
    return frames, motion_field(frames)


@pytest.fixture(scope="module")
def ours(case) -> np.ndarray:
    frames, velocity = case
    return ensemble_forecast(frames, velocity, STEPS, EnsembleSettings(members=40, seed=1))


def _dbr_field() -> np.ndarray:
    """Three dBR frames with dry (-15 dBR) areas and small-scale texture."""
    rain = moving_rain(3, size=(48, 61), shift=(1, 1), seed=5)
    noise = np.random.default_rng(2).normal(0.0, 1.0, rain.shape) * (rain >= 0.1)
    return to_dbr(rain) + noise


def test_noise_filter_equals_pysteps(pysteps_installed) -> None:
    from pysteps.noise.fftgenerators import initialize_nonparam_2d_fft_filter
    from pysteps.utils.tapering import compute_window_function

    fields = _dbr_field()
    np.testing.assert_array_equal(tukey_window(48, 61), compute_window_function(48, 61, "tukey"))
    for x in (fields, fields[-1]):  # several frames (averaged spectrum) and one
        ref = initialize_nonparam_2d_fft_filter(x.copy())["field"]
        np.testing.assert_allclose(noise_filter(x), ref, rtol=1e-12, atol=1e-9)
    with pytest.raises(ValueError, match="finite"):
        noise_filter(np.full((8, 8), np.nan))


def test_correlated_noise_is_pysteps_noise_of_the_same_white_noise(pysteps_installed) -> None:
    from pysteps.noise.fftgenerators import generate_noise_2d_fft_filter, initialize_nonparam_2d_fft_filter

    fields = _dbr_field()
    gens = member_generators(7, 2)
    white = torch.randn((48, 61), generator=member_generators(7, 2)[1], dtype=torch.float64).numpy()

    class Replay:  # a numpy RandomState look-alike that hands pySTEPS member 1's white noise
        def randn(self, *shape: int) -> np.ndarray:
            assert shape == white.shape
            return white

    ref = generate_noise_2d_fft_filter(initialize_nonparam_2d_fft_filter(fields.copy()), randstate=Replay())
    filt = torch.from_numpy(noise_filter(fields))
    ours = correlated_noise(gens, filt, (48, 61))[1].numpy()
    np.testing.assert_allclose((ours - ours.mean()) / ours.std(), ref, atol=1e-10)  # pySTEPS standardises


def test_innovation_scale_is_pysteps_residual_coefficient(pysteps_installed) -> None:
    from pysteps.timeseries.autoregression import adjust_lag2_corrcoef2, estimate_ar_params_yw

    for g1, g2 in ((0.8, 0.5), (0.5, 0.2), (0.95, 0.85), (0.3, -0.1)):
        phi = estimate_ar_params_yw([g1, adjust_lag2_corrcoef2(g1, g2)])  # phi1, phi2, residual scale
        t1, t2 = torch.tensor([g1], dtype=torch.float64), torch.tensor([g2], dtype=torch.float64)
        p1, p2 = ar2_parameters(t1, t2)
        assert innovation_scale(t1, p1, p2).item() == pytest.approx(phi[2], abs=1e-12)


def test_same_seed_same_members_other_seed_other_members(case, ours) -> None:
    frames, velocity = case
    again = ensemble_forecast(frames, velocity, STEPS, EnsembleSettings(members=40, seed=1, chunk=7))
    np.testing.assert_array_equal(again, ours)  # chunked or not: the same members
    fewer = ensemble_forecast(frames, velocity, STEPS, EnsembleSettings(members=3, seed=1))
    np.testing.assert_array_equal(fewer, ours[:3])  # member j depends on (seed, j) alone
    other = ensemble_forecast(frames, velocity, STEPS, EnsembleSettings(members=3, seed=2))
    ok = np.isfinite(other)
    assert np.abs(other - ours[:3])[ok].mean() > 0.1
    assert np.abs(ours[0] - ours[1])[np.isfinite(ours[0])].mean() > 0.1  # members differ from each other


def test_ensemble_mean_is_close_to_sprog(case, ours) -> None:
    frames, velocity = case
    sprog = baselines.sprog(frames, STEPS, velocity=velocity)
    mean = ours.mean(0)
    np.testing.assert_array_equal(np.isfinite(mean), np.isfinite(sprog))  # the same coverage
    for k in range(STEPS):
        ok = np.isfinite(sprog[k])
        # the noise has zero mean: 40 members average to S-PROG's damped forecast, up to matching and sampling
        assert np.corrcoef(mean[k][ok], sprog[k][ok])[0, 1] > 0.9
        assert mean[k][ok].mean() == pytest.approx(sprog[k][ok].mean(), rel=0.15)


def test_spread_grows_with_lead_time(ours) -> None:
    spread = np.array([np.nanmean(ours[:, k].std(0)) for k in range(STEPS)])  # mm/h
    assert np.all(np.diff(spread) > -0.02 * spread[:-1])  # non-decreasing, up to sampling
    assert spread[-1] > 1.5 * spread[0] > 0


def test_spread_and_mean_as_pysteps_steps(case, ours, pysteps_installed) -> None:
    frames, velocity = case
    ref = baselines.steps_ensemble(frames, STEPS, 40, 1, velocity=velocity)
    assert ref.shape == ours.shape
    np.testing.assert_array_equal(np.isfinite(ref), np.isfinite(ours))
    for k in range(STEPS):
        ok = np.isfinite(ours[0, k])
        spread, ref_spread = ours[:, k].std(0)[ok].mean(), ref[:, k].std(0)[ok].mean()
        assert spread == pytest.approx(ref_spread, rel=0.15)
        assert np.corrcoef(ours[:, k].mean(0)[ok], ref[:, k].mean(0)[ok])[0, 1] > 0.97


def test_dry_input_gives_dry_members(case, pysteps_installed) -> None:
    frames, velocity = case
    dry = np.zeros_like(frames)
    dry[:, :5] = np.nan  # no data along the left edge
    out = ensemble_forecast(dry, velocity, 3, EnsembleSettings(members=4))
    advect = baselines.pysteps_methods().advect  # pySTEPS' extrapolation of the coverage along the same motion
    reach = advect(np.where(np.isfinite(dry[-1]), 0.0, np.nan), velocity, 3, outval=np.nan, allow_nonfinite_values=True)
    np.testing.assert_array_equal(np.isfinite(out), np.broadcast_to(np.isfinite(reach), out.shape))
    assert np.all(out[np.isfinite(out)] == 0.0)


def test_settings_are_checked(case) -> None:
    with pytest.raises(ValueError, match="members: expected at least 1.*levels: expected at least 3"):
        EnsembleSettings(members=0, levels=2)
    with pytest.raises(ValueError, match="T >= 3"):
        ensemble_forecast(case[0][:2], case[1], 3)


def test_steps_baseline_is_seeded_and_dry_stays_dry(case, pysteps_installed) -> None:
    frames, velocity = case
    a = baselines.steps_ensemble(frames[:, :32, :40], 2, 3, seed=5)
    b = baselines.steps_ensemble(frames[:, :32, :40], 2, 3, seed=5)
    c = baselines.steps_ensemble(frames[:, :32, :40], 2, 3, seed=6)
    assert a.shape == (3, 2, 32, 40) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c, equal_nan=True)
    dry = baselines.steps_ensemble(np.zeros((3, 16, 16), np.float32), 2, 2, seed=0, velocity=np.zeros((2, 16, 16)))
    np.testing.assert_array_equal(dry, 0.0)


def _spatial_cascade(lag: torch.Tensor, steps: int, gens: list[torch.Generator], levels: int) -> torch.Tensor:
    """The perturbed cascade written in the spatial domain, as pySTEPS runs it: the noise filtered,
    decomposed into levels, normalised per level, injected through each level's AR(2); (N, steps, H, W) dBR,
    before probability matching."""
    z, means, stds = decompose(lag, levels)
    gamma1, gamma2 = lag_correlation(z[2], z[1]), lag_correlation(z[2], z[0])
    phi1, phi2 = ar2_parameters(gamma1, gamma2)
    sigma = innovation_scale(gamma1, phi1, phi2)
    phi1, phi2, sigma = (v[:, None, None] for v in (phi1, phi2, sigma))
    filt = torch.from_numpy(noise_filter(lag.numpy()))
    prev, cur = z[1].expand(len(gens), -1, -1, -1), z[2].expand(len(gens), -1, -1, -1)
    out = []
    for _ in range(steps):
        eps, _, _ = decompose(correlated_noise(gens, filt, lag.shape[-2:]), levels)
        prev, cur = cur, phi1 * cur + phi2 * prev + sigma * eps
        out.append((cur * stds[2] + means[2]).sum(1))
    return torch.stack(out, 1)


@pytest.mark.parametrize("width", [80, 61])  # the real FFT's last column: Nyquist (even) or not (odd)
def test_spectral_cascade_is_the_spatial_cascade(case, width) -> None:
    frames, velocity = case
    lag = lagrangian_dbr(frames[..., :width], velocity[..., :width]).double()
    ours = perturbed_cascade(lag, 4, member_generators(3, 5), 6).numpy()  # (5, 4, H, W), matched
    ref = _spatial_cascade(lag, 4, member_generators(3, 5), 6)
    matched = match_last(ref, lag[-1].expand(5, -1, -1), WET_DBR).numpy()
    close = np.isclose(ours, matched, atol=1e-6)
    assert close.mean() > 0.999  # equal but for rank swaps of near-equal values


def test_finite_warp_equals_warp() -> None:
    field = torch.rand(1, 3, 20, 24)
    disp = torch.randn(1, 2, 20, 24) * 3
    np.testing.assert_array_equal(warp(field, disp, finite=True).numpy(), warp(field, disp).numpy())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matching_partition_is_a_stable_sort(dtype, monkeypatch) -> None:
    """``_match_members``: the pixel of rank r (equal values ranked by position) gets the target's r-th
    value, the dry ranks its minimum; the partition at the target's runs gives what a sort gives."""
    import nowcast.nowcasts.ensemble as ensemble

    rng = np.random.default_rng(4)
    fields = torch.from_numpy(np.round(rng.normal(size=(3, 17, 23)), 1) + 0.5).to(dtype)  # ties
    ref = np.sort(np.round(rng.normal(size=17 * 23), 1)).astype(np.float32)  # runs of equal values
    for n_dry in (0, 40, 17 * 23):
        target = np.where(np.arange(ref.size) < n_dry, ref[0], ref)
        want = np.empty((3, 17 * 23), np.float32)
        for i, x in enumerate(fields.reshape(3, -1).numpy()):
            want[i, np.argsort(x, kind="stable")] = target
        got = _match_members(fields, ref, n_dry, 2)
        np.testing.assert_array_equal(got.reshape(3, -1), want)
        monkeypatch.setattr(ensemble, "MATCH_PARTITION_RUNS", 0)  # the sort past many runs
        np.testing.assert_array_equal(_match_members(fields, ref, n_dry, 1), got)
        monkeypatch.undo()

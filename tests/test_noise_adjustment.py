"""The per-level noise adjustment of the ensemble (pySTEPS STEPS' ``noise_stddev_adj``): none, fixed, auto."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest
import torch
import xarray as xr

from nowcast.cli import app
from nowcast.motion.flow import motion_field
from nowcast.nowcasts import SPROG_LEVELS, baselines
from nowcast.nowcasts.ensemble import (
    NOISE_ADJUSTMENT_ITERATIONS,
    WET_DBR,
    EnsembleSettings,
    _Cascade,
    _generators,
    auto_noise_adjustment,
    ensemble_forecast,
    lagrangian_dbr,
    noise_adjustment,
    noise_filter,
    noise_spectrum,
)
from nowcast.verification.ensembles import STEPS, case_members

from tests.conftest import moving_rain

SIZE = (64, 80)
FIXED_6 = [1 / 0.84, 1 / 0.93, 1 / 1.02, 1 / 1.11, 1 / 1.20, 1 / 1.29]
"""1 / (0.75 + 0.09 k) for k = 1..6, worked out by hand: 1.1905, 1.0753, 0.9804, 0.9009, 0.8333, 0.7752."""


@pytest.fixture(scope="module")
def case() -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Four frames of rain moving (1, 2) px per step on 64 x 80, their motion and Lagrangian dBR."""
    torch.set_num_threads(1)
    frames = moving_rain(4, size=SIZE, shift=(1, 2), seed=3).astype(np.float32)
    velocity = motion_field(frames)
    return frames, velocity, lagrangian_dbr(frames, velocity)


def _filter(lag: torch.Tensor) -> torch.Tensor:
    """The noise filter as ``_Cascade`` uses it (no mean)."""
    filt = torch.from_numpy(noise_filter(lag.double().numpy()))
    filt[0, 0] = 0.0
    return filt


def _pysteps_coefficients(lag: torch.Tensor, seed: int, generator=None) -> np.ndarray:
    """pySTEPS' ``compute_noise_stddev_adjs`` as its STEPS calls it (conditional, 20 fields, precip_thr
    and the minimum of the inputs), on the last frame of ``lag``; its own noise unless ``generator``."""
    from pysteps.cascade.bandpass_filters import filter_gaussian
    from pysteps.cascade.decomposition import decomposition_fft
    from pysteps.noise.fftgenerators import generate_noise_2d_fft_filter, initialize_nonparam_2d_fft_filter
    from pysteps.noise.utils import compute_noise_stddev_adjs

    x = lag.double().numpy()
    return np.asarray(
        compute_noise_stddev_adjs(
            x[-1],
            WET_DBR,
            x.min(),
            filter_gaussian(x.shape[1:], SPROG_LEVELS),
            decomposition_fft,
            initialize_nonparam_2d_fft_filter(x.copy()),
            generator or generate_noise_2d_fft_filter,
            NOISE_ADJUSTMENT_ITERATIONS,
            conditional=True,
            seed=seed,
        )
    )


def test_fixed_is_pysteps_formula(case, pysteps_installed) -> None:
    lag = case[2]
    ours = noise_adjustment("fixed", lag, _filter(lag), SPROG_LEVELS).numpy()
    np.testing.assert_allclose(ours, FIXED_6, rtol=1e-6)
    np.testing.assert_array_equal(noise_adjustment("none", lag, _filter(lag), SPROG_LEVELS).numpy(), np.ones(6))
    # pySTEPS' STEPS prints the coefficients it uses: the same
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        baselines.pysteps_methods().steps(
            lag.double().numpy(),
            case[1],
            1,
            n_ens_members=1,
            n_cascade_levels=SPROG_LEVELS,
            precip_thr=WET_DBR,
            noise_stddev_adj="fixed",
            mask_method=None,
            vel_pert_method=None,
            seed=1,
        )
    said = re.search(r"noise std. dev. coeffs:\s*\[([^\]]*)\]", printed.getvalue())
    assert said is not None, printed.getvalue()
    np.testing.assert_allclose([float(v) for v in said.group(1).replace(",", " ").split()], FIXED_6, rtol=1e-6)


def test_auto_is_pysteps_on_the_same_noise(case, pysteps_installed) -> None:
    """The port step for step: pySTEPS fed our noise fields gives our coefficients."""
    lag = case[2].double()
    spectra = noise_spectrum(_generators(np.random.SeedSequence(9), 20), _filter(lag), SIZE)  # complex128
    fields = iter(torch.fft.irfft2(spectra, s=SIZE).numpy())
    ref = _pysteps_coefficients(lag, 0, generator=lambda filt, randstate=None: next(fields))
    ours = auto_noise_adjustment(lag[-1], float(lag.min()), spectra, SPROG_LEVELS, threads=2).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-9)
    assert np.ptp(ours) > 0.1  # the levels differ: a real test of the per-level arithmetic


def test_auto_agrees_with_pysteps_within_sampling_error(case, pysteps_installed) -> None:
    """Our seeded ``auto`` against pySTEPS' own (its noise, its seed): both are a level's spread over the
    mean of 20 noise fields' spreads. The tolerance is 4 standard errors of the difference of two such
    means, sqrt(2) * cv / sqrt(20), with cv the coefficient of variation of one field's spread per level
    (measured from 20 single-field coefficients: a field's spread is proportional to 1 / its coefficient)."""
    lag = case[2]
    filt = _filter(lag)
    ours = noise_adjustment("auto", lag, filt, SPROG_LEVELS, seed=4).numpy()
    ref = _pysteps_coefficients(lag, seed=4)
    spectra = noise_spectrum(_generators(np.random.SeedSequence(11), 20), filt, SIZE)
    single = np.stack(
        [auto_noise_adjustment(lag[-1], float(lag.min()), s[None], SPROG_LEVELS).numpy() for s in spectra]
    )
    spread = 1.0 / single  # (20, L), up to each level's constant
    cv = spread.std(0, ddof=1) / spread.mean(0)
    tolerance = 4.0 * np.sqrt(2.0) * cv / np.sqrt(NOISE_ADJUSTMENT_ITERATIONS)
    assert np.all(np.abs(ours / ref - 1.0) < tolerance), (ours, ref, tolerance)
    assert np.all(tolerance < 0.25)  # a tolerance that still tells the levels apart


def test_auto_is_seeded_and_set_apart_from_the_members(case) -> None:
    lag = case[2]
    a, b = (noise_adjustment("auto", lag, _filter(lag), SPROG_LEVELS, seed=5, threads=t) for t in (1, 2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # the threads do not change it
    assert not torch.equal(a, noise_adjustment("auto", lag, _filter(lag), SPROG_LEVELS, seed=6))


def _spread(members: np.ndarray) -> float:
    """Mean over pixels of the members' standard deviation at lead 1 (mm/h)."""
    return float(np.nanmean(members[:, 0].std(0)))


@pytest.mark.parametrize("method", ["fixed", "auto"])
def test_members_seeded_and_spread_moves_as_the_coefficients(case, method) -> None:
    """The same seed, the same members; and against ``none`` (the same white noise: the members' noise
    generators do not depend on the adjustment) the lead-1 spread moves the way the coefficients move
    the innovation's variance, sum over levels of (level std x innovation std x coefficient)^2."""
    frames, velocity, lag = case

    def run(name: str) -> np.ndarray:
        return ensemble_forecast(frames, velocity, 2, EnsembleSettings(members=12, seed=3, noise_adjustment=name))

    first, again, none = run(method), run(method), run("none")
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, none)
    plain, adjusted = _Cascade(lag, SPROG_LEVELS), _Cascade(lag, SPROG_LEVELS, method, 3)
    assert not torch.allclose(adjusted.adjustment, torch.ones(SPROG_LEVELS))

    def variance(c: _Cascade) -> float:  # of the lead-1 innovation, summed over levels
        return float(((c.scale.flatten() * c.sigma) ** 2).sum())

    ratio = variance(adjusted) / variance(plain)
    assert abs(ratio - 1.0) > 0.05, ratio  # a change large enough to show through the matching
    assert (_spread(first) > _spread(none)) == (ratio > 1.0), (ratio, _spread(first), _spread(none))


def test_a_gain_multiplies_every_level_and_1_is_none(case) -> None:
    """``--noise-adjustment 1.5``: every level's noise times 1.5, so more spread at lead 1 than with none on
    the same white noise; a gain of 1 is none, bit for bit."""
    frames, velocity, lag = case
    np.testing.assert_array_equal(noise_adjustment("1.5", lag, _filter(lag), 6), np.full(6, 1.5, np.float32))

    def run(name: str) -> np.ndarray:
        return ensemble_forecast(frames, velocity, 1, EnsembleSettings(members=12, seed=3, noise_adjustment=name))

    none = run("none")
    np.testing.assert_array_equal(run("1"), none)
    assert _spread(run("1.5")) > 1.1 * _spread(none)


@pytest.mark.parametrize("bad", ["half", "0", "-1", "nan", "inf"])
def test_settings_checked(bad: str) -> None:
    with pytest.raises(
        ValueError, match=f"noise_adjustment: expected one of none, auto, fixed or a positive gain, found '{bad}'"
    ):
        EnsembleSettings(noise_adjustment=bad)


def test_steps_baseline_gets_the_same_setting(case, monkeypatch, pysteps_installed) -> None:
    real = baselines.pysteps_methods()
    seen: list[object] = []

    def steps(*args, **kwargs):
        seen.append(kwargs["noise_stddev_adj"])
        return real.steps(*args, **kwargs)

    monkeypatch.setattr(baselines, "pysteps_methods", lambda: SimpleNamespace(advect=real.advect, steps=steps))
    frames = case[0][:, None, :32, :40]
    for name, expected in (("none", None), ("fixed", "fixed"), ("auto", "auto")):
        out = case_members(STEPS, frames, 1, 2, 5, noise_adjustment=name)
        assert out.shape == (2, 1, 1, 32, 40) and seen[-1] == expected


def test_cli_option_recorded_and_bad_value_is_exit_2(
    cli_runner, radar_file: Callable[..., Path], tmp_path: Path
) -> None:
    path = radar_file("ens.nc", frames=6, size=(40, 48), values=moving_rain(6, (40, 48), shift=(1, 1), seed=3))
    args = ["evaluate", str(path), "--no-model", "--baselines", "persistence", "--steps", "2", "--members", "2"]
    args += ["--threads", "1", "--motion-perturbation", "none"]
    result = cli_runner.invoke(app, [*args, "--noise-adjustment", "auto", "--out", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    said = json.loads((tmp_path / "e" / "summary.json").read_text())["settings"]["ensemble"]
    assert said["noise_adjustment"] == "auto" and "auto noise adjustment" in said["methods"]["ensemble"]

    fc = tmp_path / "fc.nc"
    predict = ["predict", str(path), "--members", "2", "--steps", "2", "--motion-perturbation", "none"]
    result = cli_runner.invoke(app, [*predict, "--noise-adjustment", "fixed", "-o", str(fc)])
    assert result.exit_code == 0, result.output
    with xr.open_dataset(fc) as ds:
        assert "fixed noise adjustment" in ds.attrs["source"]

    for command in (args + ["--out", str(tmp_path / "w")], predict + ["-o", str(tmp_path / "w.nc")]):
        bad = cli_runner.invoke(app, [*command, "--noise-adjustment", "half"])
        assert bad.exit_code == 2, bad.output
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert "--noise-adjustment" in bad.stderr and "none, auto, fixed" in bad.stderr and "half" in bad.stderr

    gain = cli_runner.invoke(app, [*args, "--noise-adjustment", "1.3", "--out", str(tmp_path / "g")])
    assert gain.exit_code == 0, gain.output
    said = json.loads((tmp_path / "g" / "summary.json").read_text())["settings"]["ensemble"]
    assert said["noise_adjustment"] == "1.3" and "noise gain 1.3 on every level" in said["methods"]["ensemble"]
    steps = [x if x != "persistence" else "persistence,steps" for x in args]  # pySTEPS has no gain
    bad = cli_runner.invoke(app, [*steps, "--noise-adjustment", "1.3", "--out", str(tmp_path / "s")])
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.output
    assert "--baselines steps" in bad.stderr and "1.3" in bad.stderr

"""S-PROG in the Lagrangian frame (``nowcast.nowcasts.cascade``) and the model that learns a correction of it."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

from nowcast.nowcasts import baselines
from nowcast.nowcasts.cascade import ar2_parameters, damped_cascade
from nowcast.config import ConfigError, load_config
from nowcast.models.registry import build_model
from nowcast.units import to_dbr
from nowcast.forecast import forecast_array
from nowcast.transforms import Transform
from tests.conftest import REPO_ROOT, moving_rain

SPROG_BASE = (
    "model.frame=lagrangian",
    "model.residual=true",
    "model.step_input=true",
    "data.time_step=0",
    "model.base=sprog",
)


def test_bandpass_weights_equal_pysteps_filter_gaussian(pysteps_installed) -> None:
    from pysteps.cascade.bandpass_filters import filter_gaussian

    from nowcast.nowcasts.cascade import _bandpass

    for shape in ((64, 64), (65, 64), (37, 53), (765, 700)):  # odd and even sides
        np.testing.assert_array_equal(_bandpass(*shape, 6), filter_gaussian(shape, 6)["weights_2d"])
    np.testing.assert_array_equal(_bandpass(40, 41, 3), filter_gaussian((40, 41), 3)["weights_2d"])
    weights = _bandpass(64, 64, 6)
    assert np.allclose(weights.sum(0), 1.0)  # the levels add up to the whole field
    with pytest.raises(ValueError, match="at least 3"):
        _bandpass(64, 64, 2)


def test_ar2_parameters_by_hand() -> None:
    # gamma1 = 0.8, gamma2 = 0.5: the stationarity bound (3 g1^2 - 2 + 2 (1 - g1^2)^1.5) / g1^2 = 0.55
    # lifts gamma2 to 0.55; Yule-Walker: phi1 = g1 (1 - g2) / (1 - g1^2) = 0.36 / 0.36 = 1,
    # phi2 = (g2 - g1^2) / (1 - g1^2) = -0.09 / 0.36 = -0.25; (0.5, 0.2): the bound is 0.196, gamma2 stays
    phi1, phi2 = ar2_parameters(torch.tensor([0.8], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64))
    assert phi1.item() == pytest.approx(1.0) and phi2.item() == pytest.approx(-0.25)
    phi1, phi2 = ar2_parameters(
        torch.tensor([0.5], dtype=torch.float64), torch.tensor([0.2], dtype=torch.float64)
    )  # inside the bounds: unchanged
    assert phi1.item() == pytest.approx(0.5 * 0.8 / 0.75) and phi2.item() == pytest.approx(-0.05 / 0.75)


def test_equals_pysteps_sprog_without_motion(pysteps_installed) -> None:
    from pysteps.nowcasts import sprog as pysteps_sprog

    frames = to_dbr(moving_rain(3, size=(64, 80), shift=(0, 0), seed=4) * np.linspace(0.7, 1.3, 3)[:, None, None])
    frames = frames + np.random.default_rng(1).normal(0, 0.5, frames.shape) * (frames > -15)  # decorrelate the scales
    with contextlib.redirect_stdout(io.StringIO()):
        ref = pysteps_sprog.forecast(frames, np.zeros((2, 64, 80)), 5, precip_thr=-10.0, n_cascade_levels=6, ar_order=2)
    ours = damped_cascade(torch.from_numpy(frames)[None], 5, -10.0)[0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    assert np.abs(ours[-1] - frames[-1]).max() > 1.0  # it forecast something other than the last frame


def test_dry_input_stays_as_it_is() -> None:
    frames = torch.zeros(2, 3, 16, 16, dtype=torch.float64)
    np.testing.assert_array_equal(damped_cascade(frames, 4, 1e-6).numpy(), 0.0)


def test_untrained_model_on_sprog_base_is_pysteps_sprog(pysteps_installed) -> None:
    cfg = load_config(REPO_ROOT / "configs" / "tiny.yaml", list(SPROG_BASE))
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    frames = moving_rain(4, size=(48, 64), shift=(1, 2)).astype(np.float32)
    ours = forecast_array(model, Transform.from_config(cfg), frames[None, :, None], 5, time_step=300)[0, :, 0]
    ref = baselines.sprog(frames, 5)
    np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(ref))
    ok = np.isfinite(ref)
    for k in range(5):  # model space (dBZ above 0 dBZ) against dBR above -15: the same forecast, not the same bits
        assert np.corrcoef(ours[k][ok[k]], ref[k][ok[k]])[0, 1] > 0.999
        assert ((ours[k] >= 1) == (ref[k] >= 1))[ok[k]].mean() > 0.995


def test_sprog_base_needs_a_lagrangian_residual_model() -> None:
    with pytest.raises(ConfigError, match="model.base: expected sprog only with model.residual=true"):
        load_config(REPO_ROOT / "configs" / "tiny.yaml", ["model.base=sprog"])
    with pytest.raises(ConfigError, match="transform.kind=log"):
        load_config(REPO_ROOT / "configs" / "tiny.yaml", [*SPROG_BASE, "transform.kind=log"])


def test_residual_smoothing_is_scipys_gaussian_and_removes_the_patch_lattice() -> None:
    from scipy.ndimage import gaussian_filter

    from nowcast.models.layers import gaussian_smooth

    x = torch.from_numpy(np.random.default_rng(0).random((2, 3, 40, 37)))
    ref = np.stack(
        [[gaussian_filter(x[i, j].numpy(), 4.0, mode="mirror", truncate=3.0) for j in range(3)] for i in range(2)]
    )
    np.testing.assert_allclose(gaussian_smooth(x, 4.0).numpy(), ref, atol=1e-12)
    small = torch.from_numpy(np.random.default_rng(1).random((20, 30)))  # a side shorter than the radius (24)
    ref = gaussian_filter(small.numpy(), 8.0, mode="nearest", truncate=3.0)
    np.testing.assert_allclose(gaussian_smooth(small, 8.0).numpy(), ref, atol=1e-12)
    # a lattice of 8-pixel period (the patch 4 x downsample 2 grid) keeps exp(-2 pi^2 sigma^2 / 64) of
    # its amplitude: 7e-12 at sigma = 8 (away from the mirrored edges), and a constant field is unchanged
    yy, xx = np.mgrid[0:96, 0:96]
    lattice = torch.from_numpy(np.cos(2 * np.pi * xx / 8) * np.cos(2 * np.pi * yy / 8))
    assert gaussian_smooth(lattice, 8.0)[24:-24, 24:-24].abs().max().item() < 1e-6
    np.testing.assert_allclose(gaussian_smooth(torch.full((20, 30), 2.5, dtype=torch.float64), 8.0).numpy(), 2.5)


def test_residual_smoothing_changes_only_the_networks_part() -> None:
    cfg = load_config(REPO_ROOT / "configs" / "tiny.yaml", [*SPROG_BASE, "model.residual_smoothing=8"])
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    frames = torch.from_numpy(np.log1p(moving_rain(4, size=(32, 48), shift=(1, 2))).astype(np.float32))[None, :, None]
    with torch.no_grad():
        for p in model.head.parameters():  # an untrained head is zero: give it a visible output
            p.add_(0.05 * torch.randn_like(p))
        smoothed = model(frames, 3, 300.0)
        base = model.base_forecast(frames, 3)
        model.residual_smoothing = 0.0
        raw = model(frames, 3, 300.0)
    from nowcast.models.layers import gaussian_smooth

    torch.testing.assert_close(smoothed - base, gaussian_smooth(raw - base, 8.0), atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="model.residual_smoothing"):
        load_config(REPO_ROOT / "configs" / "tiny.yaml", ["model.residual_smoothing=8"])  # not a residual model

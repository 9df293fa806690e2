"""Probability matching: the forecast keeps its pattern and takes the last observation's distribution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nowcast.config import ConfigError, load_config
from nowcast.models.registry import build_model
from nowcast.forecast import forecast_array
from nowcast.nowcasts.probmatch import match_cdf
from nowcast.transforms import Transform
from tests.conftest import REPO_ROOT, moving_rain


def test_ranks_kept_values_taken_from_the_reference() -> None:
    # field sorted: 0 (dry, stays 0), 1, 3, 5 -> the reference's quantiles 1/8, 3/8, 5/8, 7/8 = 2, 4, 6, 8
    out = match_cdf(np.array([[0.0, 1.0], [5.0, 3.0]]), np.array([[8.0, 2.0], [6.0, 4.0]]))
    np.testing.assert_array_equal(out, [[0.0, 4.0], [8.0, 6.0]])


def test_no_data_stays_and_sizes_may_differ() -> None:
    # 2 valid forecast values among a reference of 4: quantiles 1/4 and 3/4 -> indices 1 and 3
    out = match_cdf(np.array([2.0, np.nan, 1.0]), np.array([40.0, 10.0, np.nan, 30.0, 20.0]))
    np.testing.assert_array_equal(out, [40.0, np.nan, 20.0])
    dry_ref = match_cdf(np.array([1.0, 2.0]), np.array([np.nan, np.nan]))
    np.testing.assert_array_equal(dry_ref, [1.0, 2.0])  # nothing to match to: unchanged


def test_equals_pysteps_on_complete_fields(pysteps_installed) -> None:
    from pysteps.postprocessing.probmatching import nonparam_match_empirical_cdf

    rng = np.random.default_rng(3)
    field = rng.gamma(0.5, 2.0, (30, 40))
    field[field < 0.8] = 0.0  # dry pixels stay dry
    for cut in (0.3, 3.0):  # reference wetter, then drier than the forecast
        ref = rng.gamma(0.7, 3.0, (30, 40))
        ref[ref < cut] = 0.0
        np.testing.assert_allclose(match_cdf(field, ref), nonparam_match_empirical_cdf(field, ref), atol=1e-5)


def test_a_cdf_model_forecasts_the_last_frame_s_values(pysteps_installed) -> None:
    cfg = load_config(REPO_ROOT / "configs" / "tiny.yaml", ["model.probmatching=cdf"])
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    frames = moving_rain(4, size=(32, 32)).astype(np.float32)[None, :, None]
    out = forecast_array(model, Transform.from_config(cfg), frames, 3)
    last = frames[0, -1, 0]
    for k in range(3):
        wet = out[0, k, 0][out[0, k, 0] > 0]
        assert wet.size > 0 and np.isin(wet, last).all()  # every value is one the radar observed
        assert wet.max() == last.max()  # the strongest rain survives: no growth, no fading
    plain_cfg = load_config(REPO_ROOT / "configs" / "tiny.yaml")
    plain_model = build_model(plain_cfg.model).eval()
    plain_model.load_state_dict(model.state_dict())  # the same network without matching
    plain = forecast_array(plain_model, Transform.from_config(plain_cfg), frames, 3)
    assert not np.isin(plain[0, 0, 0][plain[0, 0, 0] > 0], last).all()  # untrained values are not the radar's
    for k in range(3):  # the pattern: ordered by the network's values, the matched values never decrease
        p, o = plain[0, k, 0].ravel(), out[0, k, 0].ravel()
        assert (np.diff(o[np.argsort(p, kind="stable")]) >= 0).all()
        assert (o > 0).sum() == min((p > 0).sum(), (last > 0).sum())  # wet area: the drier of the two


def test_unknown_probmatching_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="model.probmatching: expected one of none, cdf"):
        load_config(REPO_ROOT / "configs" / "tiny.yaml", ["model.probmatching=mean"])


LAGRANGIAN_RESIDUAL = ["model.frame=lagrangian", "model.residual=true"]


def test_matching_before_advection_leaves_an_extrapolation_unchanged(pysteps_installed) -> None:
    # An untrained Lagrangian residual model forecasts the last frame itself in the frame of the last
    # observation (its head starts at zero): matched there to the last frame, nothing changes, and the
    # advected forecast is the plain one. Matched after the advection instead (cdf), the rain that left
    # the domain is pressed into what remains of it, so the values change.
    frames = moving_rain(4, size=(40, 48), shift=(2, 3), seed=3).astype(np.float32)[None, :, None]
    out = {}
    for mode in ("none", "cdf_lagrangian", "cdf"):
        cfg = load_config(REPO_ROOT / "configs" / "tiny.yaml", [*LAGRANGIAN_RESIDUAL, f"model.probmatching={mode}"])
        torch.manual_seed(0)
        model = build_model(cfg.model).eval()
        out[mode] = forecast_array(model, Transform.from_config(cfg), frames, 4)
    np.testing.assert_allclose(out["cdf_lagrangian"], out["none"], rtol=0, atol=1e-5)
    ok = np.isfinite(out["none"])
    assert np.isfinite(out["none"][:, -1]).sum() < np.isfinite(frames[:, -1]).sum()  # coverage shrank
    assert np.abs(out["cdf"][ok] - out["none"][ok]).max() > 0.1


def test_matching_before_advection_gives_the_radar_s_values(pysteps_installed) -> None:
    # Rain that does not move (zero motion: the advection is the identity) and a network whose output
    # is not zero: matched in the frame of the last observation, every wet value is one the radar saw.
    frames = moving_rain(4, size=(32, 32), shift=(0, 0), seed=5).astype(np.float32)[None, :, None]
    cfg = load_config(REPO_ROOT / "configs" / "tiny.yaml", [*LAGRANGIAN_RESIDUAL, "model.probmatching=cdf_lagrangian"])
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = forecast_array(model, Transform.from_config(cfg), frames, 3)[0, :, 0]
    seen = np.unique(frames[0, -1, 0])
    for k in range(3):  # to 1e-3: Lucas-Kanade finds a motion of a hundredth of a pixel, not exactly none
        wet = out[k][out[k] > 0]
        assert wet.size > 0 and (np.abs(wet[:, None] - seen[None]).min(1) <= 1e-3 * np.maximum(wet, 1)).all()
    plain_cfg = load_config(REPO_ROOT / "configs" / "tiny.yaml", LAGRANGIAN_RESIDUAL)
    plain_model = build_model(plain_cfg.model).eval()
    plain_model.load_state_dict(model.state_dict())  # the same network without matching: other values
    plain = forecast_array(plain_model, Transform.from_config(plain_cfg), frames, 3)[0, -1, 0]
    wet = plain[plain > 0]
    assert not (np.abs(wet[:, None] - seen[None]).min(1) <= 1e-3 * np.maximum(wet, 1)).all()


def test_matching_before_advection_needs_a_lagrangian_model() -> None:
    with pytest.raises(
        ConfigError, match="model.probmatching: expected cdf_lagrangian only with model.frame=lagrangian"
    ):
        load_config(REPO_ROOT / "configs" / "tiny.yaml", ["model.probmatching=cdf_lagrangian"])

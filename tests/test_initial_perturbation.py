"""``--initial-perturbation innovation``: each member starts from the last observation's cascade plus one
AR(2) innovation from a stream of its own (``nowcasts.ensemble``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nowcast.cli import app
from nowcast.motion.flow import motion_field
from nowcast.nowcasts.ensemble import (
    EnsembleSettings,
    _Cascade,
    _ensemble_batched,
    ensemble_forecast,
    initial_generators,
    lagrangian_dbr,
    member_generators,
)
from tests.conftest import moving_rain

STEPS = 4


@pytest.fixture(scope="module")
def case() -> tuple[np.ndarray, np.ndarray]:
    torch.set_num_threads(1)
    frames = moving_rain(4, size=(48, 64), shift=(1, 1), seed=4).astype(np.float32)
    return frames, motion_field(frames)


def test_perturbation_is_one_innovation(case) -> None:
    """From a zero state, ``perturb`` gives exactly what one AR(2) step gives from zero states with the
    same noise: the innovation alone; from the observed state, that innovation added to it."""
    frames, velocity = case
    cascade = _Cascade(lagrangian_dbr(frames, velocity), 5)
    prev, cur = cascade.start(3)
    zero = torch.zeros_like(cur)
    innovation = cascade.step(zero, zero, member_generators(7, 3))[1]
    assert innovation.abs().max() > 0
    torch.testing.assert_close(cascade.perturb(zero, member_generators(7, 3)), innovation, rtol=0, atol=0)
    torch.testing.assert_close(cascade.perturb(cur, member_generators(7, 3)), cur + innovation, rtol=0, atol=1e-5)
    batched = cascade.perturb(cur, member_generators(7, 3), batched=True)
    torch.testing.assert_close(batched, cur + innovation, rtol=0, atol=1e-5)


def test_initial_noise_has_its_own_stream_per_member() -> None:
    def first(gens: list[torch.Generator]) -> list[float]:
        return [float(torch.randn(1, generator=g)) for g in gens]

    own = first(initial_generators(3, 4))
    assert own[:2] == first(initial_generators(3, 2))  # member j's does not depend on the number of members
    assert not set(own) & set(first(member_generators(3, 4)))  # apart from the members' noise
    assert own != first(initial_generators(4, 4))


def test_innovation_start_spreads_the_first_lead_and_is_reproducible(case) -> None:
    frames, velocity = case
    plain = ensemble_forecast(frames, velocity, STEPS, EnsembleSettings(members=12, seed=5))
    s = EnsembleSettings(members=12, seed=5, initial_perturbation="innovation")
    started = ensemble_forecast(frames, velocity, STEPS, s)
    np.testing.assert_array_equal(started, ensemble_forecast(frames, velocity, STEPS, s))  # the same seed

    def spread(m: np.ndarray) -> float:  # at lead 1, mm/h, over the pixels with data
        lead1 = m[:, 0][:, np.isfinite(m[:, 0]).all(0)]
        return float(lead1.std(0).mean())

    assert spread(started) > 1.1 * spread(plain)
    # the means stay close: the perturbation has no mean
    rain = plain.mean(0)[0] >= 1.0
    assert abs(float(np.mean(started.mean(0)[0][rain])) / float(np.mean(plain.mean(0)[0][rain])) - 1.0) < 0.1
    # the batched (GPU) path makes the same members
    batched = _ensemble_batched(frames, velocity, STEPS, s, torch.device("cpu"), chunk=5)
    np.testing.assert_allclose(batched, started, rtol=0, atol=1e-5, equal_nan=True)


def test_bad_initial_perturbation_is_refused(capsys) -> None:
    with pytest.raises(ValueError, match="initial_perturbation: expected one of none, innovation, found 'all'"):
        EnsembleSettings(initial_perturbation="all")
    with pytest.raises(SystemExit) as exc:
        app(["predict", "x.nc", "--members", "3", "--initial-perturbation", "all"])
    assert exc.value.code == 2
    assert "--initial-perturbation: expected one of none, innovation, found 'all'" in capsys.readouterr().err

"""The ensemble made on a device (``EnsembleSettings.device``): every member of a chunk at once, matched by a
sort; the same members as the CPU's threaded path. The batched path runs here on the CPU; on a GPU the
last test runs it there."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nowcast.motion.flow import motion_field
from nowcast.nowcasts.ensemble import (
    EnsembleSettings,
    WET_DBR,
    _ensemble_batched,
    _match_members,
    device_chunk,
    ensemble_forecast,
    match_sorted,
    match_target,
)
from tests.conftest import moving_rain

STEPS = 5


@pytest.fixture(scope="module")
def case() -> tuple[np.ndarray, np.ndarray]:
    """Four frames of rain moving (1, 2) px per step on 56 x 72 with a band of no data, and their motion."""
    torch.set_num_threads(1)
    frames = moving_rain(4, size=(56, 72), shift=(1, 2), seed=7).astype(np.float32)
    velocity = motion_field(frames)
    frames[:, :, :6] = np.nan  # a strip the radar does not see, in every frame
    return frames, velocity


@pytest.mark.parametrize("motion", ["none", "bps"])
@pytest.mark.parametrize("centred", [False, True])
def test_batched_members_are_the_threaded_members(case, motion: str, centred: bool) -> None:
    frames, velocity = case
    s = EnsembleSettings(members=5, seed=11, motion_perturbation=motion, km_per_px=1.0, step_min=5.0)
    centre = None
    if centred:  # a model's forecast in dBR: any finite field, here a bump on the last frame's wet area
        centre = np.broadcast_to(np.where(frames[-1] > 1.0, 5.0, -10.0), (STEPS, *frames.shape[1:]))
        centre = np.ascontiguousarray(centre, dtype=np.float32)
    want = ensemble_forecast(frames, velocity, STEPS, s, centre)
    got = _ensemble_batched(
        frames, velocity, STEPS, s, torch.device("cpu"), chunk=2,  # chunks of 2, 2 and 1 members
        centre=None if centre is None else torch.from_numpy(centre),
    )  # fmt: skip
    assert got.shape == want.shape == (5, STEPS, *frames.shape[1:])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[:, :, :, :6]).all() and np.isfinite(got).any()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, equal_nan=True)
    assert len({got[j].tobytes() for j in range(5)}) == 5  # the members differ from one another


def test_device_setting_chooses_the_path_and_is_checked(case, monkeypatch) -> None:
    import nowcast.nowcasts.ensemble as ensemble

    frames, velocity = case
    seen: list[tuple[str, int]] = []

    def spy(x, v, steps, s, device, chunk, centre=None):  # noqa: ANN001, ANN202
        seen.append((str(device), chunk))
        return np.zeros((s.members, steps, *x.shape[1:]), np.float32)

    monkeypatch.setattr(ensemble, "_ensemble_batched", spy)
    ensemble_forecast(frames, velocity, STEPS, EnsembleSettings(members=3))  # the CPU: the threaded path
    assert seen == []
    ensemble_forecast(frames, velocity, STEPS, EnsembleSettings(members=3, device="cuda:1"))
    assert seen == [("cuda:1", 3)]
    with pytest.raises(ValueError, match="device: expected cpu, cuda or cuda:N, found 'gpu0'"):
        EnsembleSettings(device="gpu0")


@pytest.mark.parametrize("rate", [False, True])
def test_sorted_matching_is_the_cpu_matching(rate: bool) -> None:
    """Ties in the fields and runs of equal values (and dry pixels) in the last frame: the same values
    pixel for pixel as ``_match_members``' partition."""
    rng = np.random.default_rng(5)
    fields = np.round(rng.normal(size=(4, 19, 21)), 1) * 8 + 0.0  # dBR, ties; + 0.0: no -0.0 (see match_sorted)
    fields = torch.from_numpy(fields.astype(np.float32))
    last = np.round(rng.normal(0.0, 8.0, size=(19, 21)), 0).astype(np.float32)  # dBR, runs; below -10: dry
    assert (last < WET_DBR).any() and (last >= WET_DBR).any()
    ref = np.sort(last.ravel())
    want = _match_members(fields, ref, int((last < WET_DBR).sum()), 1, rate)
    got = match_sorted(fields, match_target(torch.from_numpy(last), rate))
    np.testing.assert_array_equal(got.numpy(), want)
    if rate:  # mm/h: 0 where dry, 10 ** (dBR / 10) where wet
        assert got.min() == 0.0 and np.isclose(got.max(), 10.0 ** (last.max() / 10.0))


def test_device_chunk_keeps_the_states_within_the_budget() -> None:
    # 765 x 700, 6 levels: 6 states x 6 levels x 765 x 351 x 2 = 19,333,080 values a member; 2**30 of them: 55
    assert device_chunk(100, 6, 765, 700) == 55
    assert device_chunk(20, 6, 765, 700) == 20  # all of them fit
    assert device_chunk(10, 6, 20_000, 20_000) == 1  # never fewer than one


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_members_on_a_gpu_are_the_cpu_members(case) -> None:
    frames, velocity = case
    cpu = ensemble_forecast(frames, velocity, STEPS, EnsembleSettings(members=6, seed=2))
    gpu = ensemble_forecast(frames, velocity, STEPS, EnsembleSettings(members=6, seed=2, device="cuda"))
    np.testing.assert_array_equal(np.isnan(gpu), np.isnan(cpu))
    both = np.isfinite(cpu)
    # float rounding of other kernels (FFTs, bilinear sampling) may swap neighbouring ranks: a few values
    assert np.mean(np.abs(gpu[both] - cpu[both]) > 0.05) < 1e-3

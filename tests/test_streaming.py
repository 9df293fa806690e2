"""Streaming training data: samples read on demand equal those of the archive held in memory, the motion
cache survives corrupt entries, concurrent writers and a full disk, and a streamed Lagrangian run resumes
exactly, with DataLoader workers."""

from __future__ import annotations

import errno
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch

from nowcast.config import load_config
from nowcast.io import open_archive
from nowcast.models.checkpoint import load_checkpoint
from nowcast.training.loop import run_training
from nowcast.training.motion_cache import MotionCache, motion_key
from nowcast.training.windows import FrameSource, SampleSettings, StepSampler, TrainWindows, all_windows
from nowcast.transforms import Transform
from tests.conftest import REPO_ROOT, moving_rain

SIZE = (48, 56)


def _archive(radar_file) -> list:
    a = radar_file("a.nc", frames=20, size=SIZE, values=moving_rain(20, SIZE, shift=(1, 1), seed=2))
    b = radar_file("b.nc", frames=16, size=SIZE, step=600, values=moving_rain(16, SIZE, shift=(0, 2), seed=3))
    return open_archive([a, b], time_step=None, scan=False).segments


@pytest.mark.parametrize("lagrangian", [False, True])
def test_streamed_samples_equal_those_of_the_archive_in_memory(radar_file, lagrangian: bool) -> None:
    segments = _archive(radar_file)
    windows = all_windows([s.sizes["time"] for s in segments], 9)
    st = SampleSettings(
        in_frames=6, out_frames=3, crop=24, margin=8 if lagrangian else 0, min_rain=0.05, lagrangian=lagrangian
    )
    lazy = TrainWindows(FrameSource(segments), windows, st, Transform())
    held = TrainWindows(FrameSource(segments, preload=True), windows, st, Transform())
    assert lazy.source.loaded is None and held.source.loaded is not None
    sampler = StepSampler(len(windows), 4, 3, seed=5)
    steps = set()
    for batch in sampler:
        for spec in batch:
            a, b = lazy[spec], held[spec]
            for x, y in zip(a, b):
                torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True)
            steps.add(float(a[2]))
            assert a[0].shape == (9, 1, 24 + 2 * st.margin, 24 + 2 * st.margin)
            assert a[1].shape == ((2, 40, 40) if lagrangian else (0,))
    assert steps == {300.0, 600.0}  # windows of both files, each at its own step


def test_a_window_drier_than_min_rain_is_redrawn(radar_file) -> None:
    values = moving_rain(12, SIZE, seed=1)
    values[:8] = 0.0  # the first windows' last input frames are dry
    path = radar_file("d.nc", frames=12, size=SIZE, values=values)
    source = FrameSource(open_archive([path], time_step=None, scan=False).segments)
    windows = all_windows([12], 5)  # starts 0..7; window s has its last input frame at s + 3
    st = SampleSettings(in_frames=4, out_frames=1, crop=16, min_rain=0.05, augment=False)
    ds = TrainWindows(source, windows, st, Transform())
    for seed in range(5):
        win, last = ds._draw(0, np.random.default_rng(seed))
        assert win.start + 3 >= 8 and (last[np.isfinite(last)] > 0).mean() >= 0.05
    dry = TrainWindows(source, windows, SampleSettings(4, 1, 16, augment=False), Transform())
    assert dry._draw(0, np.random.default_rng(0))[0].start == 0  # min_rain 0: the window drawn is kept


def _field(shape: tuple[int, int] = (6, 7)) -> np.ndarray:
    return np.stack([np.full(shape, 1.25, np.float32), np.arange(np.prod(shape), dtype=np.float32).reshape(shape)])


def test_motion_cache_computes_once_and_recomputes_a_corrupt_or_foreign_entry(tmp_path: Path, caplog) -> None:
    key = motion_key("file|1|2", 10**18, 300, (6, 7))
    cache = MotionCache(tmp_path)
    first = cache.get(key, (6, 7), _field)
    assert cache.computed == 1 and cache.path(key).is_file()
    again = MotionCache(tmp_path)  # a later run: read from disk, not computed
    np.testing.assert_array_equal(again.get(key, (6, 7), lambda: pytest.fail("computed again")), first)
    np.testing.assert_array_equal(first, _field())  # these values are exact in float16

    path = cache.path(key)
    path.write_bytes(path.read_bytes()[:50])  # truncated
    fresh = MotionCache(tmp_path)
    np.testing.assert_array_equal(fresh.get(key, (6, 7), _field), _field())
    assert fresh.computed == 1 and "unreadable" in caplog.text
    assert MotionCache(tmp_path).get(key, (6, 7), lambda: pytest.fail("not rewritten")).shape == (2, 6, 7)

    other = motion_key("file|1|2", 10**18 + 1, 300, (6, 7))  # another forecast time's entry under this name
    cache.path(other).write_bytes(path.read_bytes())
    foreign = MotionCache(tmp_path)
    foreign.get(other, (6, 7), _field)
    assert foreign.computed == 1 and "does not hold the expected field" in caplog.text


def _write_many(directory: str, key: str, value: float, rounds: int) -> None:
    for _ in range(rounds):
        cache = MotionCache(directory)
        cache._write(key, np.full((2, 64, 64), value, np.float32))


def test_concurrent_writers_and_a_killed_one_leave_a_valid_entry(tmp_path: Path) -> None:
    key = motion_key("f", 1, 300, (64, 64))
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_many, args=(str(tmp_path), key, float(v), 30)) for v in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    (tmp_path / f".{MotionCache(tmp_path).path(key).stem}.killed.tmp").write_bytes(b"half a file")
    field = MotionCache(tmp_path).get(key, (64, 64), lambda: pytest.fail("a complete entry was there"))
    assert np.unique(field).tolist() in ([1.0], [2.0])  # one writer's whole field, never a mix
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".npz"] == [MotionCache(tmp_path).path(key).name]


def test_a_full_disk_is_logged_once_and_training_goes_on(tmp_path: Path, monkeypatch, caplog) -> None:
    calls = []

    def full(*args, **kwargs):
        calls.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    cache = MotionCache(tmp_path)
    for t in range(3):
        np.testing.assert_array_equal(cache.get(motion_key("f", t, 300, (6, 7)), (6, 7), _field), _field())
    assert len(calls) == 1 and caplog.text.count("No space left") == 1
    assert not [p for p in tmp_path.iterdir()]  # no temporary left behind


def test_streamed_lagrangian_run_with_workers_resumes_exactly(radar_file, tmp_path: Path) -> None:
    values = moving_rain(30, SIZE, shift=(1, 1), seed=6)
    path = radar_file("r.nc", frames=30, size=SIZE, values=values)
    common = [
        "model.frame=lagrangian",
        "model.residual=true",
        "data.time_step=0",
        f"data.files=[{path}]",
        "data.crop=16",
        "data.margin=8",
        "data.workers=1",
        f"data.cache_dir={tmp_path / 'motion'}",
        "train.threads=1",
        "train.warmup_steps=0",
        "train.min_lr_ratio=1.0",
        "train.val_every=1000",
        "train.ckpt_every=1000",
        "train.log_every=2",
    ]
    tiny = REPO_ROOT / "configs" / "tiny.yaml"
    straight = run_training(load_config(tiny, common + ["train.steps=6"]), run_dir=tmp_path / "a")
    half = run_training(load_config(tiny, common + ["train.steps=3"]), run_dir=tmp_path / "b")
    resumed = run_training(load_config(half / "config.yaml", ["train.steps=6"]), resume=half)
    a = load_checkpoint(straight / "model.pt")["state_dict"]
    b = load_checkpoint(resumed / "model.pt")["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert any((tmp_path / "motion").glob("*.npz"))

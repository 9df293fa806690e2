"""``nowcast watch`` (issue 14): new files arriving, a corrupt file in between, a restart, late frames,
settling, and SIGTERM mid-forecast.

Most tests drive ``Watcher.poll_once`` in this process with a tiny random checkpoint (4 frames in, 4
out, 300 s) on 64 x 80 grids, one or a few frames per file, as a radar feed delivers them. The
forecasts are checked against ``nowcast predict --at`` on the same files: the watcher must write what
the command writes. The subprocess tests (real signals) are marked slow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from nowcast.cli import app
from nowcast.errors import NowcastError
from nowcast.models.checkpoint import load_model
from nowcast.predict import PredictSettings
from nowcast.watch import Watcher, default_state_path, read_state
from tests.conftest import next_slowed_write, slowed_nowcast

SIZE = (64, 80)
T0 = np.datetime64("2021-06-01T12:00:00", "ns")
FC = "fc_{reference_time:%Y%m%d%H%M}.nc"


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint):
    return load_model(tiny_checkpoint)


@pytest.fixture
def feed(tmp_path, radar_file):
    """``feed(name, first, frames=1)``: a radar file in ``tmp_path/in`` whose frames start ``first``
    steps of 5 minutes after 12:00 (different seeds, so every frame differs)."""
    (tmp_path / "in").mkdir(exist_ok=True)

    def make(name: str, first: int, frames: int = 1) -> Path:
        start = str((T0 + np.timedelta64(first * 300, "s")).astype("datetime64[s]"))
        return radar_file(f"in/{name}", frames=frames, size=SIZE, start=start, seed=first)

    return make


def _watcher(tmp_path: Path, loaded, **options) -> Watcher:
    options.setdefault("settle_s", 0.0)
    options.setdefault("state_path", tmp_path / "state.json")
    settings = PredictSettings(output=str(tmp_path / "fc" / FC))
    return Watcher(str(tmp_path / "in" / "*.nc"), loaded, settings, **options)


def _ref(path: Path) -> np.datetime64:
    with xr.open_dataset(path) as ds:
        return ds["forecast_reference_time"].values


def _same_as_predict(runner, out: Path, inputs: list[Path], at: str, ckpt: Path, tmp_path: Path) -> None:
    """``out`` holds what ``nowcast predict INPUTS --at AT`` writes (data, times, grid)."""
    check = tmp_path / "check" / out.name
    result = runner.invoke(app, ["predict", *map(str, inputs), "--model", str(ckpt), "--at", at, "-o", str(check)])
    assert result.exit_code == 0, result.stderr
    with xr.open_dataset(out) as a, xr.open_dataset(check) as b:
        xr.testing.assert_identical(a["rainfall_rate"], b["rainfall_rate"])


def _outputs(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "fc").iterdir()) if (tmp_path / "fc").is_dir() else []


# ---------------------------------------------------------------------------------------------------
# new frames, bad files, restarts


def test_each_new_frame_is_forecast_once_from_frames_across_files(tmp_path, feed, loaded, tiny_checkpoint, cli_runner):
    first = feed("a.nc", 0, frames=4)  # 12:00 to 12:15
    w = _watcher(tmp_path, loaded)

    out = w.poll_once()
    assert out == tmp_path / "fc" / "fc_202106011215.nc" and _ref(out) == T0 + np.timedelta64(15, "m")
    assert w.poll_once() is None  # nothing new: nothing done

    second = feed("b.nc", 4)  # 12:20 arrives: its window spans both files
    out = w.poll_once()
    assert out == tmp_path / "fc" / "fc_202106011220.nc"
    _same_as_predict(cli_runner, out, [first, second], "2021-06-01T12:20", tiny_checkpoint, tmp_path)
    assert w.poll_once() is None
    assert _outputs(tmp_path) == [".nowcast.lock", "fc_202106011215.nc", "fc_202106011220.nc"]
    assert read_state(tmp_path / "state.json") == int((T0 + np.timedelta64(20, "m")).astype(np.int64))


def test_a_corrupt_file_is_logged_once_and_skipped(tmp_path, feed, loaded, caplog):
    caplog.set_level(logging.INFO, logger="nowcast")
    feed("a.nc", 0, frames=4)
    w = _watcher(tmp_path, loaded)
    assert w.poll_once() is not None
    bad = tmp_path / "in" / "b.nc"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))  # a NetCDF-4 header, then nothing: cut short
    caplog.clear()

    assert w.poll_once() is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(bad) in warnings[0].getMessage() and "\n" not in warnings[0].getMessage()
    assert w.poll_once() is None and len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1

    feed("c.nc", 4)  # the next good frame is forecast, the bad file left out of its inputs
    out = w.poll_once()
    assert out is not None and _ref(out) == T0 + np.timedelta64(20, "m")
    with xr.open_dataset(out) as ds:
        assert "b.nc" not in ds.attrs["input_files"] and "c.nc" in ds.attrs["input_files"]


def test_a_restart_does_not_forecast_the_same_reference_time_again(tmp_path, feed, loaded, caplog):
    feed("a.nc", 0, frames=4)
    assert _watcher(tmp_path, loaded).poll_once() is not None
    first = tmp_path / "fc" / "fc_202106011215.nc"
    stamp = first.stat().st_mtime_ns

    restarted = _watcher(tmp_path, loaded)  # the same state file
    assert restarted.last_done == int((T0 + np.timedelta64(15, "m")).astype(np.int64))
    assert restarted.poll_once() is None
    assert first.stat().st_mtime_ns == stamp and _outputs(tmp_path) == [".nowcast.lock", first.name]

    feed("b.nc", 4)
    assert restarted.poll_once() == tmp_path / "fc" / "fc_202106011220.nc"


def test_a_late_frame_completes_the_newest_forecast(tmp_path, feed, loaded, caplog):
    """12:25 arrives before 12:20: no forecast (a gap), one line; when 12:20 arrives the newest frame,
    12:25, is forecast (latest wins: 12:20 itself is not)."""
    caplog.set_level(logging.INFO, logger="nowcast")
    feed("a.nc", 0, frames=4)
    w = _watcher(tmp_path, loaded)
    w.poll_once()
    caplog.clear()

    feed("c.nc", 5)
    assert w.poll_once() is None
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "no forecast from 2021-06-01T12:25:00Z" in line and "2021-06-01T12:20:00Z" in line  # names the gap

    feed("b.nc", 4)
    out = w.poll_once()
    assert out == tmp_path / "fc" / "fc_202106011225.nc"
    assert _outputs(tmp_path) == [".nowcast.lock", "fc_202106011215.nc", "fc_202106011225.nc"]


def test_a_complete_file_is_taken_at_first_sight_however_young(tmp_path, feed, loaded):
    """A file renamed into place is complete: no settle wait, even when its mtime is a moment ago."""
    path = feed("a.nc", 0, frames=4)
    mtime = path.stat().st_mtime_ns / 1e9
    w = _watcher(tmp_path, loaded, settle_s=5.0, clock=lambda: mtime + 0.1)
    assert w.poll_once() == tmp_path / "fc" / "fc_202106011215.nc"


def test_a_file_still_being_written_is_waited_for_silently_then_taken(tmp_path, feed, loaded, caplog):
    caplog.set_level(logging.INFO, logger="nowcast")
    feed("a.nc", 0, frames=4)
    w = _watcher(tmp_path, loaded, settle_s=5.0)
    assert w.poll_once() is not None
    whole = feed("b.nc", 4).read_bytes()
    partial = tmp_path / "in" / "b.nc"
    partial.write_bytes(whole[: len(whole) // 2])  # a writer half way through, in place
    caplog.clear()

    assert w.poll_once() is None and str(partial) not in w.seen
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # not an error yet
    partial.write_bytes(whole)  # finished
    assert w.poll_once() == tmp_path / "fc" / "fc_202106011220.nc"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_broken_file_is_reported_once_it_is_older_than_settle(tmp_path, feed, loaded, caplog):
    caplog.set_level(logging.INFO, logger="nowcast")
    path = feed("a.nc", 0, frames=4)
    path.write_bytes(path.read_bytes()[:300])
    mtime = path.stat().st_mtime_ns / 1e9
    now = [mtime + 1.0]
    w = _watcher(tmp_path, loaded, settle_s=5.0, clock=lambda: now[0])
    assert w.poll_once() is None and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    now[0] = mtime + 5.5
    assert w.poll_once() is None
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert line.startswith("skipped") and str(path) in line and "\n" not in line


def test_a_frame_from_the_future_is_logged_once_and_forecast(tmp_path, feed, loaded, caplog):
    """An mtime ahead of the clock (a skewed feed server): one WARNING line, and the frame is forecast."""
    caplog.set_level(logging.INFO, logger="nowcast")
    path = feed("a.nc", 0, frames=4)
    ahead = time.time() + 3600
    os.utime(path, (ahead, ahead))
    w = _watcher(tmp_path, loaded, settle_s=5.0)
    assert w.poll_once() == tmp_path / "fc" / "fc_202106011215.nc"
    feed("b.nc", 4)
    os.utime(tmp_path / "in" / "b.nc", (ahead, ahead))
    assert w.poll_once() == tmp_path / "fc" / "fc_202106011220.nc"
    future = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(future) == 2 and all("in the future" in line and "\n" not in line for line in future)
    assert w.poll_once() is None and len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 2


# ---------------------------------------------------------------------------------------------------
# what the resident process keeps between cycles


def test_each_cycle_reads_only_the_new_file_and_equals_predict(
    tmp_path, feed, loaded, tiny_checkpoint, cli_runner, monkeypatch
):
    """The frames of earlier cycles stay in memory: a new cycle opens only the new file, and its forecast
    is what ``nowcast predict --at`` writes from the files (bit for bit)."""
    import nowcast.predict
    import nowcast.watch

    opened: list[str] = []
    real_open = nowcast.watch.open_radar
    monkeypatch.setattr(nowcast.watch, "open_radar", lambda path, **kw: opened.append(path) or real_open(path, **kw))

    def no_archive(*args, **kwargs):
        raise AssertionError("predict opened the files again")

    monkeypatch.setattr(nowcast.predict, "open_archive", no_archive)
    files = [feed("a.nc", 0, frames=4)]
    w = _watcher(tmp_path, loaded)
    assert w.poll_once() is not None
    for k in range(3):
        files.append(feed(f"n{k}.nc", 4 + k))
        opened.clear()
        out = w.poll_once()
        assert opened == [str(files[-1])]  # the new file, once
        at = str((T0 + np.timedelta64((4 + k) * 5, "m")).astype("datetime64[m]"))
        monkeypatch.undo()
        _same_as_predict(cli_runner, out, files, at, tiny_checkpoint, tmp_path)
        monkeypatch.setattr(
            nowcast.watch, "open_radar", lambda path, **kw: opened.append(path) or real_open(path, **kw)
        )
        monkeypatch.setattr(nowcast.predict, "open_archive", no_archive)


def test_a_file_rewritten_in_the_window_is_read_again(tmp_path, feed, loaded, tiny_checkpoint, cli_runner, radar_file):
    """A file whose size or mtime changed is read again, so the cache never forecasts from stale frames."""
    first = feed("a.nc", 0, frames=4)
    w = _watcher(tmp_path, loaded)
    assert w.poll_once() is not None
    radar_file("in/a.nc", frames=4, size=SIZE, start="2021-06-01T12:00:00", seed=99)  # corrected in place
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))
    second = feed("b.nc", 4)
    out = w.poll_once()
    _same_as_predict(cli_runner, out, [first, second], "2021-06-01T12:20", tiny_checkpoint, tmp_path)


def test_frames_outside_the_window_are_let_go(tmp_path, feed, loaded):
    """Memory is bounded by the input window, not by the files in the folder."""
    feed("a.nc", 0, frames=4)
    w = _watcher(tmp_path, loaded)
    w.poll_once()
    for k in range(4):
        feed(f"n{k}.nc", 4 + k)
        assert w.poll_once() is not None
    kept = sorted(Path(p).name for p, s in w.seen.items() if s.rate is not None)
    assert kept == ["n0.nc", "n1.nc", "n2.nc", "n3.nc"]  # the 4 frames of the last window


# ---------------------------------------------------------------------------------------------------
# forecasts that cannot be written


def _no_space(monkeypatch):
    """Writing a forecast fails as on a full disk (the kernel's ENOSPC through the real writer's error)."""
    import errno

    import nowcast.predict
    from nowcast.io import write_error

    def full(fc, path, **kwargs):
        raise write_error(Path(path), OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.setattr(nowcast.predict, "write_forecast", full)


def _read_only(monkeypatch):
    """The output directory is read-only (root ignores permission bits, so the check itself says so)."""
    import nowcast.predict
    from nowcast.errors import OutputError

    def refuse(path):
        raise OutputError(f"{path}: expected a writable output directory, found {Path(path).parent} read-only")

    monkeypatch.setattr(nowcast.predict, "check_writable", refuse)


def _locked(monkeypatch):
    """Another run holds the directory's lock for longer than --lock-timeout."""
    import nowcast.predict
    from nowcast.errors import OutputError

    @contextlib.contextmanager
    def held(path, timeout_s=60.0):
        raise OutputError(f"{path}: expected to lock it for writing, found it held by another run for {timeout_s:g} s")
        yield

    monkeypatch.setattr(nowcast.predict, "output_lock", held)


@pytest.mark.parametrize("fault", [_no_space, _read_only, _locked], ids=["full", "read-only", "locked"])
def test_a_forecast_that_could_not_be_written_is_written_when_the_directory_recovers(
    tmp_path, feed, loaded, caplog, monkeypatch, fault
):
    caplog.set_level(logging.INFO, logger="nowcast")
    feed("a.nc", 0, frames=4)
    w = _watcher(tmp_path, loaded, retry_s=0.0)
    with monkeypatch.context() as m:
        fault(m)
        assert w.poll_once() is None
        assert w.poll_once() is None  # tried again, still failing: no new line
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "2021-06-01T12:15:00Z" in warnings[0] and "\n" not in warnings[0]
        assert w.last_done is None and not (tmp_path / "state.json").exists()  # not marked done
        assert not (tmp_path / "fc" / "fc_202106011215.nc").exists()
    out = w.poll_once()  # the directory recovered: written, with no new frame
    assert out == tmp_path / "fc" / "fc_202106011215.nc" and out.is_file()
    assert read_state(tmp_path / "state.json") == int((T0 + np.timedelta64(15, "m")).astype(np.int64))
    assert w.poll_once() is None and w.pending is None


def test_a_newer_frame_supersedes_a_forecast_not_written(tmp_path, feed, loaded, caplog, monkeypatch):
    """Latest wins here too: one pending forecast at most, the newest; the one given up is said so."""
    caplog.set_level(logging.INFO, logger="nowcast")
    feed("a.nc", 0, frames=4)
    w = _watcher(tmp_path, loaded, retry_s=0.0)
    with monkeypatch.context() as m:
        _no_space(m)
        assert w.poll_once() is None
        feed("b.nc", 4)
        assert w.poll_once() is None
    assert any(
        "12:15:00Z never written: superseded by the one from 2021-06-01T12:20:00Z" in r.getMessage()
        for r in caplog.records
    )
    assert w.poll_once() == tmp_path / "fc" / "fc_202106011220.nc"
    assert _outputs(tmp_path) == [".nowcast.lock", "fc_202106011220.nc"]
    assert read_state(tmp_path / "state.json") == int((T0 + np.timedelta64(20, "m")).astype(np.int64))


def test_a_pending_write_waits_retry_seconds(tmp_path, feed, loaded, monkeypatch):
    feed("a.nc", 0, frames=4)
    now = [time.time()]
    w = _watcher(tmp_path, loaded, retry_s=30.0, clock=lambda: now[0])
    with monkeypatch.context() as m:
        _no_space(m)
        assert w.poll_once() is None
    assert w.poll_once() is None  # recovered, but not yet time to try
    now[0] += 31
    assert w.poll_once() == tmp_path / "fc" / "fc_202106011215.nc"


def test_stem_is_the_file_of_the_newest_frame(tmp_path, feed, loaded):
    feed("radar_1200.nc", 0, frames=4)
    feed("radar_1220.nc", 4)
    w = Watcher(
        str(tmp_path / "in" / "*.nc"),
        loaded,
        PredictSettings(output=str(tmp_path / "fc" / "{stem}.nc")),
        settle_s=0,
        state_path=tmp_path / "s.json",
    )
    assert w.poll_once() == tmp_path / "fc" / "radar_1220.nc"


def test_a_damaged_state_file_is_an_error_naming_it(tmp_path, loaded):
    state = tmp_path / "state.json"
    state.write_text("{not json")
    (tmp_path / "in").mkdir()
    with pytest.raises(NowcastError, match="state.json: expected a nowcast watch state"):
        _watcher(tmp_path, loaded)


def test_default_state_path_is_in_the_output_directory_per_pattern_and_output():
    a = default_state_path("in/*.nc", "/srv/fc/{reference_time:%Y}/fc_{reference_time:%H%M}.nc")
    b = default_state_path("other/*.nc", "/srv/fc/{reference_time:%Y}/fc_{reference_time:%H%M}.nc")
    assert a.parent == Path("/srv/fc") and a.name.startswith(".nowcast-watch-") and a.suffix == ".json"
    assert a != b and a.parent == b.parent


# ---------------------------------------------------------------------------------------------------
# the command


def test_watch_once_through_the_command_line(tmp_path, feed, tiny_checkpoint, cli_runner):
    feed("a.nc", 0, frames=5)
    args = [
        "watch",
        str(tmp_path / "in" / "*.nc"),
        "-o",
        str(tmp_path / "fc" / FC),
        "--model",
        str(tiny_checkpoint),
        "--once",
        "--settle",
        "0",
        "--state",
        str(tmp_path / "state.json"),
    ]
    result = cli_runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert _outputs(tmp_path) == [".nowcast.lock", "fc_202106011220.nc"]
    assert sum(" INFO forecast from 2021-06-01T12:20:00Z" in line for line in result.stderr.splitlines()) == 1
    assert json.loads((tmp_path / "state.json").read_text())["last_reference_time"] == "2021-06-01T12:20:00Z"

    again = cli_runner.invoke(app, args)  # nothing new
    assert again.exit_code == 0 and _outputs(tmp_path) == [".nowcast.lock", "fc_202106011220.nc"]


def test_watch_members_writes_the_ensemble_predict_writes(tmp_path, feed, tiny_checkpoint, cli_runner):
    """``watch --members`` makes each forecast an ensemble with probabilities: the file ``predict`` writes
    with the same options, members and all."""
    inputs = [feed("a.nc", 0, frames=5)]
    ens = ["--members", "4", "--seed", "3", "--probabilities", "0.5,2"]
    args = ["watch", str(tmp_path / "in" / "*.nc"), "-o", str(tmp_path / "fc" / FC), "--model", str(tiny_checkpoint)]
    result = cli_runner.invoke(app, [*args, "--once", "--settle", "0", "--state", str(tmp_path / "s.json"), *ens])
    assert result.exit_code == 0, result.stderr
    check = tmp_path / "check.nc"
    made = cli_runner.invoke(
        app, ["predict", *map(str, inputs), "--model", str(tiny_checkpoint), "-o", str(check), *ens]
    )
    assert made.exit_code == 0, made.stderr
    with xr.open_dataset(tmp_path / "fc" / "fc_202106011220.nc") as a, xr.open_dataset(check) as b:
        assert a.sizes["realization"] == 4 and list(a["threshold"].values) == [0.5, 2.0]
        for name in ("rainfall_rate", "probability_of_rainfall_rate_above_threshold"):
            xr.testing.assert_identical(a[name], b[name])
        np.testing.assert_array_equal(a[[v for v in a.data_vars if "realization" in a[v].dims][0]].values,
                                      b[[v for v in b.data_vars if "realization" in b[v].dims][0]].values)  # fmt: skip
    bad = cli_runner.invoke(app, [*args, "--once", "--members", "-1"])
    assert bad.exit_code == 2 and "--members" in bad.stderr


def test_watch_forecasts_the_lead_asked_for(tmp_path, feed, tiny_checkpoint, cli_runner):
    feed("a.nc", 0, frames=5)
    out = tmp_path / "fc" / FC
    args = ["watch", str(tmp_path / "in" / "*.nc"), "-o", str(out), "--model", str(tiny_checkpoint), "--once"]
    result = cli_runner.invoke(app, [*args, "--settle", "0", "--lead", "25min"])
    assert result.exit_code == 0, result.stderr
    assert "+25 min (5 steps of 5 min, beyond the 4 trained)" in result.stderr
    with xr.open_dataset(tmp_path / "fc" / "fc_202106011220.nc") as ds:
        np.testing.assert_array_equal(ds["forecast_period"].values, [5, 10, 15, 20, 25])


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["-o", "fc_{when}.nc"], "expected a path using only {reference_time:%Y%m%d%H%M} and {stem}"),
        (["-o", "fc.nc", "--model", "missing.pt"], "missing.pt: expected a nowcast checkpoint file"),
        (["-o", "fc.nc", "--poll", "0"], "expected seconds > 0"),
    ],
    ids=["bad template", "missing checkpoint", "poll 0"],
)
def test_watch_usage_errors_are_one_line_before_watching(extra, expected, tmp_path, tiny_checkpoint, cli_runner):
    (tmp_path / "in").mkdir()
    model = [] if "--model" in extra else ["--model", str(tiny_checkpoint)]
    result = cli_runner.invoke(app, ["watch", str(tmp_path / "in" / "*.nc"), *model, *extra, "--once"])
    assert result.exit_code == 2, (result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nowcast: error: ") and expected in lines[0], lines


def test_watch_a_missing_directory_is_an_error(tmp_path, cli_runner):
    result = cli_runner.invoke(app, ["watch", str(tmp_path / "nowhere" / "*.nc"), "-o", "fc.nc", "--once"])
    assert result.exit_code == 2 and "expected files in an existing directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------------
# the resident process: files arriving, SIGTERM mid-forecast


def _start(tmp_path: Path, ckpt: Path, sleep_s: float) -> subprocess.Popen:
    args = [
        "watch",
        str(tmp_path / "in" / "*.nc"),
        "-o",
        str(tmp_path / "fc" / FC),
        "--model",
        str(ckpt),
        "--poll",
        "0.1",
        "--settle",
        "0.2",
        "--state",
        str(tmp_path / "state.json"),
    ]
    return slowed_nowcast(sleep_s, args, cwd=tmp_path)


@pytest.mark.slow
def test_resident_watcher_forecasts_arrivals_and_stops_cleanly_on_sigterm(tmp_path, feed, tiny_checkpoint):
    feed("a.nc", 0, frames=4)
    proc = _start(tmp_path, tiny_checkpoint, sleep_s=1.0)
    try:
        assert next_slowed_write(proc, 600.0).parent == tmp_path / "fc"  # 12:15, at start
        feed("b.nc", 4)  # arrives while the watcher runs
        tmp = next_slowed_write(proc, 600.0)  # 12:20, mid-write: the temporary file is complete, not yet renamed
        assert tmp.is_file() and not (tmp_path / "fc" / "fc_202106011220.nc").exists()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "SIGTERM: stopping" in stderr and "stopped after 2 forecast(s)" in stderr
    assert _outputs(tmp_path) == [".nowcast.lock", "fc_202106011215.nc", "fc_202106011220.nc"]  # no temporary
    assert _ref(tmp_path / "fc" / "fc_202106011220.nc") == T0 + np.timedelta64(20, "m")
    assert json.loads((tmp_path / "state.json").read_text())["last_reference_time"] == "2021-06-01T12:20:00Z"


@pytest.mark.slow
def test_second_signal_interrupts_without_a_partial_file(tmp_path, feed, tiny_checkpoint):
    feed("a.nc", 0, frames=4)
    proc = _start(tmp_path, tiny_checkpoint, sleep_s=60.0)
    try:
        tmp = next_slowed_write(proc, 600.0)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)  # impatient: stop now
        _, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert not tmp.exists() and _outputs(tmp_path) == [".nowcast.lock"]  # no forecast, no temporary
    assert not (tmp_path / "state.json").exists()

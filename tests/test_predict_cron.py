"""Cron safety of ``nowcast predict`` with real processes: a run killed (SIGKILL) while writing leaves the
previous complete file or none, and its leftover temporary file does not trouble the next run; two
overlapping runs on one output both finish cleanly, one after the other, and leave a complete file.

A run is slowed down in a subprocess by wrapping ``xarray.Dataset.to_netcdf`` (the writer inside
``io.write_forecast``): after the temporary file is complete and before the rename it prints a line and
sleeps, so the test knows exactly when it is mid-write. No test hook lives in the library.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from nowcast.cli import app
from tests.conftest import next_slowed_write, slowed_nowcast

SIZE = (64, 80)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint: Path) -> Path:
    return tiny_checkpoint


def _slow_run(sleep_s: float, *args: str | Path) -> subprocess.Popen:
    return slowed_nowcast(sleep_s, ["predict", *args])


def _temporaries(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.*.tmp"))


def _valid(out: Path, reference: str) -> None:
    with xr.open_dataset(out) as ds:
        assert ds["forecast_reference_time"].values == np.datetime64(reference, "ns")
        assert ds.sizes["time"] == 12  # the next hour at 5 min
        assert np.isfinite(ds["rainfall_rate"].values).any()


@pytest.mark.slow
@pytest.mark.parametrize("previous", [False, True], ids=["no previous file", "previous file"])
def test_killed_while_writing_leaves_old_file_or_none(cli_runner, previous, radar_file, ckpt, tmp_path):
    src = radar_file("radar.nc", frames=5, size=SIZE)
    out = tmp_path / "fc" / "forecast.nc"
    if previous:  # the forecast of five minutes earlier
        result = cli_runner.invoke(
            app, ["predict", str(src), "--model", str(ckpt), "-o", str(out), "--at", "2021-06-01T12:15"]
        )
        assert result.exit_code == 0, result.stderr
        old = _sha(out)

    proc = _slow_run(60, src, "--model", ckpt, "-o", out)
    tmp = next_slowed_write(proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)

    assert proc.returncode == -signal.SIGKILL
    assert tmp.parent == out.parent and tmp.is_file()  # killed mid-write: its temporary file is left over
    assert _temporaries(out) == [tmp]
    if previous:
        assert _sha(out) == old  # the previous complete file, untouched
        _valid(out, "2021-06-01T12:15")
    else:
        assert not out.exists()  # never a partial file

    # the next run is not troubled by the leftover, removes it, and writes a complete file
    result = cli_runner.invoke(app, ["predict", str(src), "--model", str(ckpt), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    _valid(out, "2021-06-01T12:20")
    assert _temporaries(out) == []


@pytest.mark.slow
def test_overlapping_runs_both_finish_and_leave_a_complete_file(cli_runner, radar_file, ckpt, tmp_path):
    src = radar_file("radar.nc", frames=5, size=SIZE)
    out = tmp_path / "forecast.nc"

    first = _slow_run(3, src, "--model", ckpt, "-o", out, "--lock-timeout", 60)
    next_slowed_write(first)  # the first run holds the lock, its file not yet renamed
    started = time.monotonic()
    second = cli_runner.invoke(app, ["predict", str(src), "--model", str(ckpt), "-o", str(out), "--lock-timeout", "60"])
    waited = time.monotonic() - started
    first.wait(60)

    assert first.returncode == 0, first.stderr.read()
    assert second.exit_code == 0, second.stderr
    assert waited > 1.0  # the second run waited for the first instead of interleaving
    _valid(out, "2021-06-01T12:20")
    assert _temporaries(out) == []


def test_templated_forecasts_leave_only_their_outputs_and_one_lock(cli_runner, radar_file, ckpt, tmp_path):
    src = radar_file("radar.nc", frames=13, size=SIZE)
    out_dir = tmp_path / "fc"
    template = str(out_dir / "fc_{reference_time:%Y%m%d%H%M}.nc")
    expected = []
    for k in range(10):  # ten cron runs, five minutes apart
        ref = np.datetime64("2021-06-01T12:15") + np.timedelta64(5 * k, "m")
        result = cli_runner.invoke(app, ["predict", str(src), "--model", str(ckpt), "-o", template, "--at", str(ref)])
        assert result.exit_code == 0, result.stderr
        expected.append(f"fc_{str(ref).replace('-', '').replace('T', '').replace(':', '')}.nc")

    names = sorted(p.name for p in out_dir.iterdir())
    assert [n for n in names if not n.startswith(".")] == sorted(expected)
    assert [n for n in names if n.startswith(".")] == [".nowcast.lock"]  # one lock per directory, no litter


@pytest.mark.slow
def test_overlapping_runs_into_one_directory_serialize(cli_runner, radar_file, ckpt, tmp_path):
    src = radar_file("radar.nc", frames=6, size=SIZE)
    out_dir = tmp_path / "fc"
    template = str(out_dir / "fc_{reference_time:%Y%m%d%H%M}.nc")

    first = _slow_run(3, src, "--model", ckpt, "-o", template, "--at", "2021-06-01T12:20", "--lock-timeout", 60)
    next_slowed_write(first)  # the first run holds the directory's lock, its file not yet renamed
    started = time.monotonic()
    second = cli_runner.invoke(app, ["predict", str(src), "--model", str(ckpt), "-o", template, "--lock-timeout", "60"])
    waited = time.monotonic() - started
    first.wait(60)

    assert first.returncode == 0, first.stderr.read()
    assert second.exit_code == 0, second.stderr
    assert waited > 1.0  # another output in the same directory: the second run still waited
    _valid(out_dir / "fc_202106011220.nc", "2021-06-01T12:20")
    _valid(out_dir / "fc_202106011225.nc", "2021-06-01T12:25")
    assert sorted(p.name for p in out_dir.iterdir()) == [".nowcast.lock", "fc_202106011220.nc", "fc_202106011225.nc"]

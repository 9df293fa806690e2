"""Cron-grade failures of the commands (issue 14): a full disk while writing the forecast, checkpoint
errors in our own words, training that fails without leaving debris, and input checks before any side
effect. Every case runs through the command line and asserts exit 2 and one stderr line.

A tiny random checkpoint (configs/tiny.yaml: 4 frames in, 4 out, 300 s) and 64 x 80 grids keep it fast.
"""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from nowcast.cli import app

REPO = Path(__file__).resolve().parents[1]
SIZE = (64, 80)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nowcast: error: ") and "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint: Path) -> Path:
    return tiny_checkpoint


# ---------------------------------------------------------------------------------------------------
# a full disk while writing the forecast


def _full_disk_writer(how: str):
    """A stand-in for ``xarray.Dataset.to_netcdf`` that starts the file, then fails as a full disk does."""

    def write(self, path=None, *args, **kwargs):
        Path(path).write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(4096))  # part of the file is on disk
        if how == "errno":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise RuntimeError("NetCDF: HDF error")  # what netCDF4 raises when HDF5 cannot write

    return write


class _Usage:
    def __init__(self, free: int) -> None:
        self.total, self.used, self.free = 10**12, 10**12 - free, free


@pytest.mark.parametrize("how", ["errno", "netcdf"])
def test_disk_full_exits_2_and_keeps_the_old_forecast(cli_runner, how, radar_file, ckpt, tmp_path, monkeypatch):
    import shutil

    src = radar_file(frames=5, size=SIZE)
    out = tmp_path / "fc" / "forecast.nc"
    args = ["predict", str(src), "--model", str(ckpt), "-o", str(out)]
    result = cli_runner.invoke(app, [*args, "--at", "2021-06-01T12:15"])  # the previous forecast
    assert result.exit_code == 0, result.stderr
    old = _sha(out)

    monkeypatch.setattr(xr.Dataset, "to_netcdf", _full_disk_writer(how))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _Usage(free=0))
    line = _one_error_line(cli_runner.invoke(app, args))

    assert str(out) in line and "no space left on the device" in line
    assert "unexpected" not in line
    assert _sha(out) == old  # the old forecast untouched
    assert sorted(p.name for p in out.parent.iterdir()) == [".nowcast.lock", "forecast.nc"]  # no temporary left


def test_other_netcdf_write_failure_names_the_library_error(cli_runner, radar_file, ckpt, tmp_path, monkeypatch):
    src = radar_file(frames=5, size=SIZE)
    out = tmp_path / "forecast.nc"
    monkeypatch.setattr(xr.Dataset, "to_netcdf", _full_disk_writer("netcdf"))  # plenty of space: not a full disk
    line = _one_error_line(cli_runner.invoke(app, ["predict", str(src), "--model", str(ckpt), "-o", str(out)]))
    assert str(out) in line and "NetCDF: HDF error" in line and "no space" not in line
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [".nowcast.lock", "radar.nc"]


# ---------------------------------------------------------------------------------------------------
# checkpoint errors in our own words


def _truncated(ckpt: Path, path: Path) -> None:
    data = ckpt.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _damaged(ckpt: Path, path: Path) -> None:
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # a flipped block inside a tensor
    path.write_bytes(bytes(data))


def _foreign(ckpt: Path, path: Path) -> None:
    import collections
    import fractions

    import torch

    torch.save(
        {"format": "nowcast-checkpoint", "weights": collections.OrderedDict(), "x": fractions.Fraction(1, 3)}, path
    )


def _zip_of_other_files(ckpt: Path, path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes/readme.txt", "not a model")


def _other_shapes(ckpt: Path, path: Path) -> None:
    import torch

    payload = torch.load(ckpt, weights_only=True)
    payload["config"]["model"]["hidden"] = [12, 8]  # weights of an 8-wide first level under a 12-wide config
    torch.save(payload, path)


CHECKPOINTS = {
    "truncated": (_truncated, "found a truncated or damaged archive"),
    "damaged": (_damaged, "found a damaged archive (member"),
    "foreign object": (_foreign, "found an object of type fractions.Fraction that only running code could rebuild"),
    "zip of other files": (_zip_of_other_files, "found a zip archive of 1 other file(s)"),
    "weights of other shapes": (_other_shapes, "of another shape ("),
}


@pytest.mark.parametrize("command", ["info", "predict"])
@pytest.mark.parametrize("case", list(CHECKPOINTS))
def test_checkpoint_errors_in_our_words(cli_runner, case, command, ckpt, radar_file, tmp_path):
    make, expected = CHECKPOINTS[case]
    bad = tmp_path / "bad.pt"
    make(ckpt, bad)
    if command == "info":
        args = ["info", str(bad)]
    else:
        args = [
            "predict",
            str(radar_file(frames=5, size=SIZE)),
            "--model",
            str(bad),
            "-o",
            str(tmp_path / "fc" / "fc.nc"),
        ]

    line = _one_error_line(cli_runner.invoke(app, args))

    assert line.startswith(f"nowcast: error: {bad}: expected "), line
    assert expected in line, line
    for torch_words in ("weights_only", "torch.load", "trust", "safe_globals", "PytorchStreamReader", "enforce fail"):
        assert torch_words not in line, line  # no quote of torch, never advice to load unsafely
    assert len(line) < 300
    assert not (tmp_path / "fc").exists()


# ---------------------------------------------------------------------------------------------------
# training failures leave no debris

TINY = REPO / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def synth_file(tmp_path_factory) -> Path:
    from nowcast.synth import write_synthetic

    path = tmp_path_factory.mktemp("synth") / "s.nc"
    write_synthetic(path, frames=24, size=(64, 64), seed=1)
    return path


def _train(cli_runner, *args: str | Path):
    return cli_runner.invoke(app, ["train", *map(str, args)])


@pytest.mark.parametrize("data", ["missing", "not netcdf", "too short"])
def test_training_on_unusable_data_creates_no_run_directory(cli_runner, data, tmp_path, radar_file):
    if data == "missing":
        path = tmp_path / "missing.nc"
    elif data == "not netcdf":
        path = tmp_path / "notes.nc"
        path.write_text("not a radar file")
    else:
        path = radar_file("short.nc", frames=5)  # tiny needs windows of 8 frames
    run = tmp_path / "runs" / "r1"

    line = _one_error_line(_train(cli_runner, "--config", TINY, "--set", f"data.files=[{path}]", "--run-dir", run))

    assert str(path) in line
    assert not run.exists() and not (tmp_path / "runs").exists()


def test_resume_removes_stale_checkpoint_temporaries(cli_runner, synth_file, tmp_path):
    run = tmp_path / "run"
    common = ["--set", "train.threads=1", "--set", "train.val_every=1000", "--set", "train.ckpt_every=1000"]
    result = _train(
        cli_runner,
        "--config",
        TINY,
        "--set",
        f"data.files=[{synth_file}]",
        "--set",
        "train.steps=2",
        *common,
        "--run-dir",
        run,
    )
    assert result.exit_code == 0, result.stderr
    stale = [run / ".last.pt.abcd1234.pt", run / ".best.pt.zz_9yy8x.pt"]  # a run killed while saving
    for p in stale:
        p.write_bytes(b"PK\x03\x04 partial")
    keep = run / ".notes.abcd1234.pt"
    keep.write_bytes(b"not ours")

    result = _train(cli_runner, "--resume", run, "--set", "train.steps=3", *common)

    assert result.exit_code == 0, result.stderr
    assert not any(p.exists() for p in stale)
    assert keep.exists()
    assert sorted(p.name for p in run.glob(".*")) == [".notes.abcd1234.pt"]


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_empty_config_file_is_an_error_naming_it(cli_runner, text, tmp_path):
    config = tmp_path / "empty.yaml"
    config.write_text(text)
    run = tmp_path / "run"
    line = _one_error_line(_train(cli_runner, "--config", config, "--run-dir", run))
    assert f"{config}: expected a mapping of sections" in line and "found an empty file" in line
    assert not run.exists()


# ---------------------------------------------------------------------------------------------------
# predict checks its input before any side effect


@pytest.fixture(scope="module")
def ckpt_six(tmp_path_factory) -> Path:
    """A tiny checkpoint reading 6 frames."""
    from conftest import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt6") / "tiny6.pt", "data.in_frames=6")


def test_all_nan_input_is_refused_before_the_output_directory_or_lock(cli_runner, radar_file, ckpt_six, tmp_path):
    src = radar_file("allnan.nc", frames=8, size=SIZE, nan_mask=np.ones(SIZE, bool))
    out_dir = tmp_path / "fc" / "today"

    line = _one_error_line(
        cli_runner.invoke(
            app,
            [
                "predict",
                str(src),
                "--model",
                str(ckpt_six),
                "-o",
                str(out_dir / "fc.nc"),
                "--plot",
                str(out_dir / "fc.png"),
            ],
        )
    )

    assert str(src) in line
    assert (
        "found 6 frame(s) with no data at all: 2021-06-01T12:10:00Z, 2021-06-01T12:15:00Z, 2021-06-01T12:20:00Z and 3 more"
        in line
    )
    assert not (tmp_path / "fc").exists()  # neither the directory nor a lock
    assert sorted(p.name for p in tmp_path.iterdir()) == ["allnan.nc"]


def test_a_few_empty_frames_are_all_listed(cli_runner, radar_file, ckpt_six, tmp_path):
    empty = np.zeros((8, *SIZE), bool)
    empty[[3, 6]] = True
    src = radar_file("gaps.nc", frames=8, size=SIZE, nan_mask=empty)
    line = _one_error_line(
        cli_runner.invoke(app, ["predict", str(src), "--model", str(ckpt_six), "-o", str(tmp_path / "fc" / "fc.nc")])
    )
    assert line.endswith("found 2 frame(s) with no data at all: 2021-06-01T12:15:00Z, 2021-06-01T12:30:00Z")
    assert not (tmp_path / "fc").exists()

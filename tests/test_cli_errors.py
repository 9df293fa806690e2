"""Bad radar inputs through ``nowcast info``: exit code 2, one stderr line naming the file, no traceback."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from nowcast.cli import app


def _random_bytes(tmp_path: Path, radar_file: Callable[..., Path]) -> Path:
    path = tmp_path / "random.nc"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    return path


def _truncated(tmp_path: Path, radar_file: Callable[..., Path]) -> Path:
    good = radar_file("good.nc").read_bytes()
    path = tmp_path / "truncated.nc"
    path.write_bytes(good[: len(good) // 2])
    return path


def _directory(tmp_path: Path, radar_file: Callable[..., Path]) -> Path:
    path = tmp_path / "folder.nc"
    path.mkdir()
    return path


BAD_INPUTS: dict[str, Callable[[Path, Callable[..., Path]], Path]] = {
    "missing file": lambda tmp, make: tmp / "missing.nc",
    "directory": _directory,
    "random bytes": _random_bytes,
    "truncated NetCDF": _truncated,
    "no numeric variable": lambda tmp, make: make(
        "nonumeric.nc", variable=None, extra_vars={"label": (("time",), np.array(["a"] * 6), {})}
    ),
    "two candidates": lambda tmp, make: make(
        "two.nc", standard_name=None, extra_vars={"other": (("time", "y", "x"), np.zeros((6, 16, 20)), {})}
    ),
    "2-D": lambda tmp, make: make("twod.nc", dims=("y", "x")),
    "5-D": lambda tmp, make: make("fived.nc", dims=("time", "member", "channel", "y", "x"), channels=2),
    "units furlongs": lambda tmp, make: make("furlongs.nc", units="furlongs"),
    "decreasing times": lambda tmp, make: make("decreasing.nc", times=[0, 300, 600, 300, 900]),
    "duplicated times": lambda tmp, make: make("duplicated.nc", times=[0, 300, 300, 600]),
    "all NaN": lambda tmp, make: make("allnan.nc", nan_mask=np.ones((16, 20), bool)),
    "time axis not time": lambda tmp, make: make("notime.nc", time_units=None),
    "irregular step": lambda tmp, make: make("irregular.nc", times=[0, 300, 600, 1000]),
}

EXPECTED = {
    "missing file": "found no such file",
    "directory": "found a directory",
    "random bytes": "found data in another format",
    "truncated NetCDF": "found a damaged or truncated one",
    "no numeric variable": "found none",
    "two candidates": "several candidates: rainfall_rate (time, y, x), other (time, y, x)",
    "2-D": "found (y, x)",
    "5-D": "found (time, member, channel, y, x)",
    "units furlongs": "found 'furlongs'",
    "decreasing times": "time[3] = 2021-06-01T12:05:00Z is before time[2]",
    "duplicated times": "time[2] = 2021-06-01T12:05:00Z repeats time[1]",
    "all NaN": "found only NaN",
    "time axis not time": "found int64 values without units",
    "irregular step": "found 400 s",
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line(cli_runner, case, tmp_path, radar_file):
    path = BAD_INPUTS[case](tmp_path, radar_file)
    before = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None

    result = cli_runner.invoke(app, ["info", str(path)])

    assert result.exit_code == 2, (result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"nowcast: error: {path}: ")
    assert EXPECTED[case] in lines[0]
    assert "Traceback" not in result.stderr + result.output
    assert result.stdout == ""
    if before is not None:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_info_prints_a_good_file(cli_runner, radar_file):
    path = radar_file(frames=4)
    result = cli_runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 0, result.stderr
    assert f"file:            {path}" in result.stdout
    assert "time step:       300 s (5 min)" in result.stdout


USAGE_ERRORS = {
    "steps not a number": (["predict", "in.nc", "--steps", "abc"], "'--steps'", "'abc'"),
    "unknown option": (["predict", "in.nc", "--bogus"], "No such option: --bogus", "nowcast predict --help"),
    "thresholds not numbers": (["evaluate", "in.nc", "--thresholds", "a,b"], "--thresholds", "'a,b'"),
    "unknown command": (["forecast", "in.nc"], "No such command 'forecast'", "nowcast --help"),
    "missing argument": (["predict"], "Missing argument", "nowcast predict --help"),
    "train without config": (["train"], "--config", "--resume"),
}


@pytest.mark.parametrize("case", list(USAGE_ERRORS))
def test_usage_errors_are_one_line_exit_2(cli_runner, case):
    args, *expected = USAGE_ERRORS[case]
    result = cli_runner.invoke(app, args, prog_name="nowcast")

    assert result.exit_code == 2, (result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # no usage line, no box
    assert lines[0].startswith("nowcast: error: ")
    assert all(text in lines[0] for text in expected), lines[0]
    assert "Traceback" not in result.stderr and "╭" not in result.stderr
    assert result.stdout == ""


@pytest.mark.slow
def test_usage_error_through_python_m_is_one_line():
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "nowcast", "predict", "in.nc", "--steps", "abc"],
        capture_output=True,
        text=True,
        env=env,
        cwd=repo,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "'--steps'" in proc.stderr and "'abc'" in proc.stderr


@pytest.mark.parametrize("args", [[], ["config"]])
def test_no_arguments_prints_the_help_and_exits_0(cli_runner, args):
    result = cli_runner.invoke(app, args, prog_name="nowcast")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("Usage: nowcast") and ("predict" in result.stdout or "show" in result.stdout)
    assert result.stderr == ""


@pytest.mark.parametrize("args", [[], ["predict"], ["convert"], ["config"], ["config", "show"]])
def test_h_is_help_everywhere(cli_runner, args):
    short = cli_runner.invoke(app, [*args, "-h"], prog_name="nowcast")
    long = cli_runner.invoke(app, [*args, "--help"], prog_name="nowcast")
    assert short.exit_code == long.exit_code == 0, short.stderr
    assert short.stdout == long.stdout and short.stdout.startswith(f"Usage: nowcast {' '.join(args)}".rstrip())
    assert "-h, --help" in short.stdout


def test_version_prints_the_version_and_exits_0(cli_runner):
    from nowcast import __version__

    result = cli_runner.invoke(app, ["--version"], prog_name="nowcast")
    assert result.exit_code == 0
    assert result.stdout.strip().endswith(__version__)


def test_quiet_silences_info_lines_and_verbose_adds_debug(cli_runner, tmp_path):
    args = ["synth", "--frames", "3", "--size", "8", "8"]
    normal = cli_runner.invoke(app, [args[0], str(tmp_path / "a.nc"), *args[1:]])
    quiet = cli_runner.invoke(app, ["-q", args[0], str(tmp_path / "b.nc"), *args[1:]])
    verbose = cli_runner.invoke(app, ["-v", args[0], str(tmp_path / "c.nc"), *args[1:]])
    assert normal.exit_code == quiet.exit_code == verbose.exit_code == 0
    assert "INFO wrote" in normal.stderr and "DEBUG" not in normal.stderr
    assert quiet.stderr == ""
    assert "INFO wrote" in verbose.stderr and "DEBUG" in verbose.stderr


def test_an_unexpected_error_exits_1_with_one_line(cli_runner, tmp_path, monkeypatch):
    import nowcast.synth

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(nowcast.synth, "write_synthetic", broken)
    result = cli_runner.invoke(app, ["synth", str(tmp_path / "s.nc")])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "nowcast: unexpected error: ZeroDivisionError: a bug (rerun with --verbose for the traceback)"
    ]
    verbose = cli_runner.invoke(app, ["-v", "synth", str(tmp_path / "s.nc")])
    assert verbose.exit_code == 1 and "Traceback" in verbose.stderr

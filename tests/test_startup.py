"""Start-up cost (issue 14): the commands that need no model never import torch.

`nowcast --help`, `--version`, `config`, `info FILE.nc` and a `predict` refused for its input run in a
fresh interpreter; the test reads that interpreter's ``sys.modules``. ``checkpoint.read_config`` (the
stored config without torch) is held to the full ``torch.load`` and shown to run no code of the file.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from nowcast.models.checkpoint import checkpoint_config, load_checkpoint, read_config

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
from nowcast.cli import app
report = {"import": sorted(m for m in ("torch", "xarray", "dask", "numpy", "pandas") if m in sys.modules)}
for args in json.loads(sys.argv[1]):
    try:
        app(args, prog_name="nowcast")
    except SystemExit as exc:
        code = exc.code
    report[" ".join(args)] = [code, "torch" in sys.modules]
print(json.dumps(report))
"""
"""Runs each command line of argv[1] (JSON) in turn in one interpreter; prints, as JSON, the heavy
modules that importing the CLI loaded and, per command, its exit code and whether torch is loaded."""


def _probe(commands: list[list[str]], cwd: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(commands)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_importing_the_cli_loads_no_torch_nor_data_libraries(tmp_path):
    report = _probe([], tmp_path)
    assert report["import"] == []  # no torch, xarray, dask, numpy or pandas


def test_commands_without_a_model_never_import_torch(tmp_path, radar_file, tiny_checkpoint):
    good = radar_file("good.nc", frames=6)
    short = radar_file("short.nc", frames=2)  # the tiny model needs 4 frames
    broken = tmp_path / "broken.nc"
    broken.write_bytes(b"not a netcdf file at all")
    commands = [
        ["--version"],
        ["--help"],
        ["config", "list"],
        ["config", "show", "tiny"],
        ["info", str(good)],
        ["predict", str(broken), "-o", str(tmp_path / "a.nc")],  # shipped model: config read without torch
        ["predict", str(short), "--model", str(tiny_checkpoint), "-o", str(tmp_path / "b.nc")],
        [
            "predict",
            str(good),
            "--model",
            str(tiny_checkpoint),
            "--at",
            "2021-06-01T11:00",
            "-o",
            str(tmp_path / "c.nc"),
        ],
        # the control: a forecast that goes ahead does load torch, and the probe sees it
        ["predict", str(good), "--model", str(tiny_checkpoint), "-o", str(tmp_path / "fc.nc")],
    ]
    report = _probe(commands, tmp_path)
    results = [report[" ".join(c)] for c in commands]
    assert [code for code, _ in results] == [0, 0, 0, 0, 0, 2, 2, 2, 0], report
    assert [torch for _, torch in results] == [False] * 8 + [True], report
    assert not any((tmp_path / n).exists() for n in ("a.nc", "b.nc", "c.nc")) and (tmp_path / "fc.nc").is_file()


# ---------------------------------------------------------------------------------------------------
# the stored config without torch


def test_read_config_equals_the_full_load(tiny_checkpoint):
    assert read_config(tiny_checkpoint) == checkpoint_config(load_checkpoint(tiny_checkpoint))


def test_read_config_of_the_shipped_model():
    from nowcast.models.checkpoint import default_model_path

    if not default_model_path().is_file():
        pytest.skip("no shipped model")
    cfg = read_config(default_model_path())
    assert cfg == checkpoint_config(load_checkpoint(default_model_path()))


class _Planted:
    """Pickles as a call of ``os.system``: what a hostile checkpoint would carry."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("case", ["code", "not a zip", "empty zip", "foreign dict", "newer format"])
def test_read_config_gives_none_and_runs_nothing(case, tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "ckpt.pt"
    payloads = {
        "code": {"format": "nowcast-checkpoint", "format_version": 1, "config": {}, "x": _Planted(f"touch {marker}")},
        "foreign dict": {"weights": [1, 2, 3]},
        "newer format": {"format": "nowcast-checkpoint", "format_version": 99, "config": {}},
    }
    if case == "not a zip":
        path.write_bytes(b"PK\x03\x04 truncated")
    else:
        with zipfile.ZipFile(path, "w") as zf:
            if case != "empty zip":
                zf.writestr("ckpt/data.pkl", pickle.dumps(payloads[case], protocol=2))
    assert read_config(path) is None
    assert not marker.exists()


MOTION_PROBE = """
import json, sys
import numpy as np
from nowcast.motion import motion_field
from nowcast.runtime import cpu_threads
yy, xx = np.mgrid[0:64, 0:80]
frames = np.stack([8 * np.exp(-((yy - 30) ** 2 + (xx - 20 - 3 * t) ** 2) / 60.0) for t in range(3)])
v = motion_field(frames.astype(np.float32), cpu_threads(1))
print(json.dumps({"torch": "torch" in sys.modules, "dx": float(np.median(v[0][frames[-1] > 1]))}))
"""


def test_motion_is_estimated_without_torch(tmp_path):
    """``predict`` estimates the Lagrangian model's motion while torch loads: neither the motion nor the
    thread count may need torch (a blob moving 3 columns per step is found moving 3 columns)."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", MOTION_PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["torch"] is False
    assert report["dx"] == pytest.approx(3.0, abs=0.3)

"""``scripts/bench/gpu_check.py --device cpu``: every part runs on a small size, CUDA-only checks are skipped with a
reason, and the JSON report holds what the table shows (issue 16)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # several processes importing torch (torchrun, predict, evaluate): about a minute
def test_gpu_check_runs_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.bench.gpu_check",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--threads",
            "1",
            "--budget",
            "850",
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["passed"] is True and report["machine"]["device"] == "cpu"
    parts = report["parts"]
    assert list(parts) == ["correctness", "streaming", "ensemble", "ddp", "commands", "hko7", "speed"]
    assert all(p["status"] == "ok" for p in parts.values()), {k: p["reason"] for k, p in parts.items()}

    def row(part: str, check: str) -> dict:
        return next(r for r in parts[part]["rows"] if r["check"] == check)

    fp32 = row("correctness", "fp32")  # the CPU against itself: the same kernels, the same result
    assert fp32["ok"] is True and fp32["value"] == {"forecast": 0.0, "loss": 0.0, "gradients": 0.0}
    assert 0 < row("correctness", "bf16")["value"]["forecast"] <= 5e-2  # bf16 rounding, but close
    assert row("streaming", "train, 0 workers")["ok"] is True
    assert row("ensemble", "8 members on cpu")["value"].endswith(" s")
    assert row("ensemble", "predict --members 4 --device cpu")["ok"] is True
    assert row("ensemble", "--device cuda")["note"] == "skipped: no CUDA device"
    assert row("ddp", "the model ran under DDP")["value"] is True
    assert row("ddp", "resumed run")["ok"] is True
    assert row("commands", "--device cuda")["note"] == "skipped: no CUDA device"
    assert row("commands", "predict --device cpu")["ok"] is True
    assert row("hko7", "largest batch that fits")["note"].startswith("skipped: CUDA only")
    speed = row("speed", "shi2015 ours fp32")["value"]
    assert speed["infer speed-up"].endswith("x") and speed["train speed-up"].endswith("x")
    assert "[speed] ok" in proc.stdout and "passed in" in proc.stdout


def test_gpu_check_refuses_cuda_without_a_gpu(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.bench.gpu_check", "--device", "cuda", "--out", str(tmp_path / "r.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # one line
    assert "--device cuda: expected a CUDA GPU, found none" in proc.stderr
    assert not (tmp_path / "r.json").exists()

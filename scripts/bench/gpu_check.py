"""Check: the CUDA paths of nowcast in one command (issue 16): correctness, DDP, speed, HKO-7 shape, commands.

Made for a lent GPU with about 15 minutes of device time: one command, under 8 minutes, that prints a
table and writes a JSON report. Every part runs under its own time guard (and the whole under
``--budget``): a part that fails or runs out of time is recorded as such and the next one runs; the
JSON report is rewritten after every part, so even a killed run leaves what it measured.

Parts (``--parts``, in this order):

- ``correctness``: the shi2015-sized model (``--size``) on the device against the CPU in fp32 on the
  same weights and input: forecast, training loss and gradients after one step, as relative L2 errors
  (||device - cpu|| / ||cpu||), for fp32, bf16 autocast, channels-last (fp32 and bf16) and
  ``torch.compile`` (mode ``default``, bf16 + channels-last; on CUDA only: on a small CPU inductor's
  compile alone takes minutes).
- ``ddp``: ``torchrun --nproc_per_node 1 -m nowcast train`` (NCCL on CUDA, gloo on the CPU) on a
  synthetic file for 2 steps, then ``--resume`` to 4, checking the checkpoints and metrics; on CUDA
  also an uninterrupted 4-step run, and the relative difference of its weights from the resumed run's.
- ``streaming``: ``nowcast train --config default`` on a synthetic archive: frames per second and
  time to the first step with 0, 2 and 4 DataLoader workers (CUDA; the CPU runs 0 workers, 4 steps);
- ``ensemble``: the ensemble with 50 and 100 members at 765 x 700 on CUDA and 20 on the CPU, in process,
  the two devices' probabilities compared, and one whole ``predict --members 50 --device cuda`` (issue
  28); the CPU runs 4 and 8 members at 96 x 96.
- ``speed``: ours against the textbook ConvLSTM of ``scripts/bench/bench_train.py`` (same topology and size),
  inference and one training step, side by side and interleaved: fp32, bf16, bf16 + channels-last,
  compiled (``default``), and CUDA graphs (``torch.compile(mode="reduce-overhead")``, inference).
- ``hko7``: ``configs/hko7.yaml`` at 480 x 480, 5 in and 20 out (the HKO-7 benchmark's shape):
  seconds per sequence in inference (HKO-7's PyTorch ConvLSTM reports 0.032 s), achieved TFLOP/s
  against the measured bf16 matmul peak (on the CPU: fp32 matmul and 3x3 convolution ceilings of
  ``scripts/bench/bench_ceiling.py``), and on CUDA the largest batch that fits (inference, and training at
  the config's 256-pixel crop) with its throughput.
- ``commands``: ``nowcast predict`` and ``nowcast evaluate`` (shipped model) with ``--device cuda``
  against ``--device cpu`` on a real radar file (``--data``, default the MeteoSwiss 2015-05-15
  event of ../shared/data/radar, else synthetic rain), timed as whole commands, with the difference
  between the two forecasts and between the two CSI tables.

With ``--device cpu`` every part runs on a small size and the CUDA-only checks are skipped with the
reason, so CI and the tests exercise the script on a machine without a GPU.

    python -m scripts.bench.gpu_check --device cuda [--out gpu_check.json] [--budget 450]
    python -m scripts.bench.gpu_check --device cpu --out /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from scripts.bench.bench_ceiling import conv_ceiling, matmul_ceiling
from scripts.bench.bench_train import CONFIGS, Textbook, bf16_native
from scripts.common import RADAR_DIR, REPO

from nowcast.config import ModelConfig, load_config  # noqa: E402
from nowcast.models.registry import build_model  # noqa: E402
from nowcast.training.losses import masked_loss  # noqa: E402

REAL_FILE = RADAR_DIR / "mch_switzerland_20150515.nc"
HKO7_SEC_PER_SEQ = 0.032
"""HKO-7's PyTorch ConvLSTM (Shi et al. 2017 benchmark code), seconds per 5-in, 20-out 480 x 480 sequence."""
GUARDS = {"correctness": 100, "streaming": 130, "ensemble": 120, "ddp": 110, "commands": 110, "hko7": 100, "speed": 160}
"""Seconds each part may take at most on CUDA (parts run in this order; the budget can cut them shorter)."""
TOLERANCE = {"fp32": 5e-3, "bf16": 5e-2}
"""Largest relative error passed against the CPU fp32 result (fp32 on CUDA may use TF32 in convolutions)."""


class PartTimeout(Exception):
    """Raised inside a part by the alarm when its time guard runs out."""


@dataclasses.dataclass
class Part:
    """One part's outcome: its rows (check, value, note, ok) and how it ended."""

    name: str
    status: str = "ok"
    """ok, failed (a check did not pass), error (an exception), timeout, skipped."""
    seconds: float = 0.0
    reason: str = ""
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def add(self, check: str, value: Any, note: str = "", ok: bool | None = None) -> None:
        self.rows.append({"check": check, "value": value, "note": note, "ok": ok})
        if ok is False and self.status == "ok":
            self.status = "failed"

    def skip(self, check: str, reason: str) -> None:
        self.rows.append({"check": check, "value": None, "note": f"skipped: {reason}", "ok": None})


@contextlib.contextmanager
def time_guard(seconds: float) -> Iterator[None]:
    """Raise PartTimeout in this (main) thread after ``seconds``."""

    def alarm(signum: int, frame: Any) -> None:
        raise PartTimeout(f"time guard of {seconds:.0f} s ran out")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ----------------------------------------------------------------------------------------------------
# helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """||a - ref|| / ||ref|| in float64 on the CPU."""
    a, ref = a.detach().double().cpu(), ref.detach().double().cpu()
    return float((a - ref).norm() / ref.norm().clamp_min(1e-300))


def seconds_of(fn: Callable[[], Any], device: torch.device, repeat: int) -> float:
    """Median wall seconds of ``fn`` over ``repeat`` runs after one warm-up."""
    fn()
    sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def conv_flops(fn: Callable[[], Any]) -> int:
    """FLOPs that ``torch.utils.flop_counter`` counts (convolutions, matmuls) in one call of ``fn``."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


@dataclasses.dataclass
class Sizes:
    """Problem sizes of one run: small on the CPU, realistic on CUDA."""

    batch: int
    size: int
    t_in: int
    t_out: int
    repeat: int


def sizes_for(device: torch.device, size: int | None) -> Sizes:
    if device.type == "cuda":
        return Sizes(batch=4, size=size or 256, t_in=5, t_out=10, repeat=5)
    return Sizes(batch=1, size=size or 32, t_in=3, t_out=3, repeat=3)


def variants(device: torch.device) -> dict[str, dict[str, Any]]:
    """Variant name -> how the model runs; compiled ones only on CUDA."""
    out = {
        "fp32": dict(bf16=False, cl=False),
        "bf16": dict(bf16=True, cl=False),
        "channels-last fp32": dict(bf16=False, cl=True),
        "channels-last bf16": dict(bf16=True, cl=True),
    }
    if device.type == "cuda":
        out["compile default, channels-last bf16"] = dict(bf16=True, cl=True, compile="default")
    return out


def _command(args: list[str], env: dict[str, str], timeout: float) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``args`` in a session of its own; on a timeout (or the part's guard) kill the whole session,
    so that torchrun's workers do not outlive their agent."""
    start = time.perf_counter()
    with subprocess.Popen(
        args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as popen:
        try:
            out, err = popen.communicate(timeout=max(timeout, 1))
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.communicate()
            raise
    return time.perf_counter() - start, subprocess.CompletedProcess(args, popen.returncode, out, err)


def _failure(proc: subprocess.CompletedProcess) -> str:
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    return f"exit {proc.returncode}: {lines[-1] if lines else 'no output'}"


def _env(threads: int) -> dict[str, str]:
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS=str(threads))


# ----------------------------------------------------------------------------------------------------
# parts


def part_correctness(part: Part, device: torch.device, args: argparse.Namespace, left: Callable[[], float]) -> None:
    """Forecast, loss and gradients on the device against the CPU fp32 result on the same weights and input."""
    s = sizes_for(device, args.size)
    cfg = (
        CONFIGS["shi2015"]
        if device.type == "cuda"
        else ModelConfig(patch=4, hidden=(8, 8), kernels=(3, 3), downsample=(1, 2))
    )
    torch.manual_seed(0)
    ref_model = build_model(cfg)
    x = torch.rand(s.batch, s.t_in, 1, s.size, s.size)
    y = torch.rand(s.batch, s.t_out, 1, s.size, s.size)
    y[:, :, :, :2] = float("nan")  # a strip without data, as at the edge of radar coverage

    def run(model: torch.nn.Module, dev: torch.device, bf16: bool, fwd: Callable | None = None) -> tuple:
        fwd = fwd or model
        model.zero_grad(set_to_none=True)
        xd, yd = x.to(dev), y.to(dev)
        with torch.inference_mode(), autocast(dev, bf16):
            pred = fwd(xd, s.t_out).float()
        with autocast(dev, bf16):
            out = fwd(xd, s.t_out).float()
        loss = masked_loss(out, yd)
        loss.backward()
        grads = torch.cat([p.grad.flatten().float().cpu() for p in model.parameters()])
        return pred.cpu(), loss.detach().cpu(), grads

    ref = run(ref_model, torch.device("cpu"), False)
    part.add(
        "reference",
        f"CPU fp32, {cfg.hidden} hidden, batch {s.batch}, {s.t_in} in + {s.t_out} out, {s.size}x{s.size}",
        "",
        None,
    )
    if device.type == "cuda":
        part.add("TF32 in convolutions", torch.backends.cudnn.allow_tf32, "PyTorch default: fp32 convs may use TF32")
    for name, v in variants(device).items():
        if left() < 5:
            part.skip(name, "time guard")
            continue
        model = build_model(cfg)
        model.load_state_dict(ref_model.state_dict())
        model = model.to(device)
        if v["cl"]:
            model = model.to(memory_format=torch.channels_last)
        fwd = torch.compile(model, mode=v["compile"]) if v.get("compile") else None
        try:
            pred, loss, grads = run(model, device, v["bf16"], fwd)
        except PartTimeout:
            raise
        except Exception as exc:  # noqa: BLE001 - a failing variant is a finding, not the end of the check
            part.add(name, None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}", False)
            continue
        tol = TOLERANCE["bf16" if v["bf16"] else "fp32"]
        errs = {"forecast": rel_err(pred, ref[0]), "loss": rel_err(loss, ref[1]), "gradients": rel_err(grads, ref[2])}
        ok = all(math.isfinite(e) and e <= tol for e in errs.values())
        part.add(
            name, {k: float(f"{e:.3g}") for k, e in errs.items()}, f"relative L2 error vs CPU fp32, pass <= {tol:g}", ok
        )


def part_ddp(part: Part, device: torch.device, args: argparse.Namespace, left: Callable[[], float]) -> None:
    """The real ``nowcast train`` under torchrun with one process, a checkpoint and --resume."""
    from nowcast.models.checkpoint import load_checkpoint
    from nowcast.synth import write_synthetic

    work = Path(args.work)
    data = write_synthetic(work / "ddp_synth.nc", frames=40, size=(64, 64), seed=3)
    dev = "cuda" if device.type == "cuda" else "cpu"
    common = [
        "--config",
        "tiny",
        "--set",
        f"data.files=[{data}]",
        "--set",
        f"train.device={dev}",
        "--set",
        "train.val_every=2",
        "--set",
        "train.ckpt_every=1",
        "--set",
        "train.log_every=1",
        "--set",
        "data.workers=0",
    ]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "nowcast"]
    env = _env(args.threads)
    backend = "NCCL" if dev == "cuda" else "gloo"
    half, straight = work / "ddp_half", work / "ddp_straight"
    took, proc = _command([*torchrun, "train", *common, "--set", "train.steps=2", "--run-dir", str(half)], env, left())
    part.add(
        f"torchrun 1 process ({backend}): train 2 steps",
        f"{took:.1f} s",
        "" if proc.returncode == 0 else _failure(proc),
        proc.returncode == 0,
    )
    if proc.returncode != 0:
        return
    wrapped = f"DistributedDataParallel over 1 process(es), {backend.lower()} backend" in proc.stderr
    part.add("the model ran under DDP", wrapped, f"train's log line naming the {backend} backend", wrapped)
    ckpt = load_checkpoint(half / "last.pt")
    part.add("last.pt after 2 steps", f"step {ckpt['training']['step']}", "", ckpt["training"]["step"] == 2)
    took, proc = _command([*torchrun, "train", "--resume", str(half), "--set", "train.steps=4"], env, left())
    part.add(
        "--resume to step 4", f"{took:.1f} s", "" if proc.returncode == 0 else _failure(proc), proc.returncode == 0
    )
    if proc.returncode != 0:
        return
    resumed = load_checkpoint(half / "last.pt")
    steps = [int(line.split(",")[0]) for line in (half / "metrics.csv").read_text().splitlines()[1:]]
    part.add(
        "resumed run",
        f"last.pt step {resumed['training']['step']}, metrics.csv steps {steps}",
        "model.pt and best.pt written"
        if (half / "model.pt").is_file() and (half / "best.pt").is_file()
        else "model.pt or best.pt missing",
        resumed["training"]["step"] == 4 and steps == [1, 2, 3, 4] and (half / "model.pt").is_file(),
    )
    if dev != "cuda":
        part.skip("resumed vs uninterrupted weights", "exact on the CPU, tested by tests/test_train.py; run on CUDA")
        return
    took, proc = _command(
        [*torchrun, "train", *common, "--set", "train.steps=4", "--run-dir", str(straight)], env, left()
    )
    if proc.returncode != 0:
        part.add("uninterrupted 4 steps", f"{took:.1f} s", _failure(proc), False)
        return
    a = load_checkpoint(straight / "last.pt")["state_dict"]
    b = resumed["state_dict"]
    diff = max(rel_err(b[k].float(), a[k].float()) for k in a if a[k].is_floating_point())
    part.add(
        "resumed vs uninterrupted weights",
        f"{diff:.2e}",
        "largest relative L2 difference of a tensor (CUDA kernels are not bitwise deterministic)",
        diff < 1e-2,
    )


def _timed_variants(
    cases: dict[str, tuple[torch.nn.Module, bool, str | None]],
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    device: torch.device,
    repeat: int,
    left: Callable[[], float],
    part: Part,
    label: str,
) -> dict[str, dict[str, float]]:
    """Median inference and training seconds of each (model, bf16, compile mode) case, run one after the other."""
    out: dict[str, dict[str, float]] = {}
    for name, (model, bf16, mode) in cases.items():
        if left() < 10:
            part.skip(f"{label} {name}", "time guard")
            continue
        fwd = torch.compile(model, mode=mode) if mode else model
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def infer() -> None:
            with torch.inference_mode(), autocast(device, bf16):
                fwd(x, steps)

        def train() -> None:
            with autocast(device, bf16):
                loss = F.mse_loss(fwd(x, steps).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        try:
            out[name] = {"infer": seconds_of(infer, device, repeat)}
            if mode != "reduce-overhead":  # CUDA graphs: inference only (a second compile for training costs minutes)
                out[name]["train"] = seconds_of(train, device, repeat)
        except PartTimeout:
            raise
        except Exception as exc:  # noqa: BLE001
            part.add(f"{label} {name}", None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}", False)
    return out


def part_speed(part: Part, device: torch.device, args: argparse.Namespace, left: Callable[[], float]) -> None:
    """Ours against the textbook ConvLSTM of bench_train.py, as ratios measured side by side."""
    s = sizes_for(device, args.size)
    for config in args.speed_configs.split(","):
        cfg = CONFIGS[config]
        if device.type != "cuda":
            cfg = dataclasses.replace(cfg, hidden=tuple(max(8, h // 8) for h in cfg.hidden))
        torch.manual_seed(0)
        x = torch.rand(s.batch, s.t_in, 1, s.size, s.size, device=device)
        y = torch.rand(s.batch, s.t_out, 1, s.size, s.size, device=device)

        def ours(cl: bool = False) -> torch.nn.Module:
            m = build_model(cfg).to(device)
            return m.to(memory_format=torch.channels_last) if cl else m

        cases: dict[str, tuple[torch.nn.Module, bool, str | None]] = {
            "textbook fp32": (Textbook(cfg).to(device), False, None),
            "ours fp32": (ours(), False, None),
            "ours channels-last fp32": (ours(True), False, None),
        }
        if device.type == "cuda" or bf16_native():
            cases.update(
                {
                    "textbook bf16": (Textbook(cfg).to(device), True, None),
                    "ours bf16": (ours(), True, None),
                    "ours channels-last bf16": (ours(True), True, None),
                }
            )
        else:
            part.skip(
                f"{config} bf16 variants", "this CPU has no native bf16 (PyTorch emulates it far slower than fp32)"
            )
        if device.type == "cuda":
            cases["ours compiled (default) cl bf16"] = (ours(True), True, "default")
            cases["ours CUDA graphs (reduce-overhead) cl bf16"] = (ours(True), True, "reduce-overhead")
        else:
            part.skip(f"{config} compiled and CUDA-graph variants", "CUDA only (inductor's CPU compile takes minutes)")
        times = _timed_variants(cases, x, y, s.t_out, device, s.repeat, left, part, config)
        ref = times.get("textbook fp32")
        flops = conv_flops(lambda: cases["ours fp32"][0](x, s.t_out)) if ref else 0
        part.add(
            f"{config} problem",
            f"{cfg.hidden} hidden, batch {s.batch}, {s.t_in} in + {s.t_out} out, "
            f"{s.size}x{s.size}; ours {flops / 1e9:.3g} GFLOP per forecast",
            "speed-up = textbook fp32 time / variant time (median)",
        )
        for name, t in times.items():
            value = {k: f"{v * 1e3:.1f} ms" for k, v in t.items()}
            if ref:
                value.update({f"{k} speed-up": f"{ref[k] / v:.2f}x" for k, v in t.items() if k in ref})
            if "infer" in t and flops and name.startswith("ours"):
                value["infer TFLOP/s"] = f"{flops / t['infer'] / 1e12:.3g}"
            part.add(f"{config} {name}", value)


def part_hko7(part: Part, device: torch.device, args: argparse.Namespace, left: Callable[[], float]) -> None:
    """configs/hko7.yaml at the HKO-7 shape: seconds per sequence, TFLOP/s against the peak, largest batch."""
    cuda = device.type == "cuda"
    cfg = load_config(REPO / "configs" / "hko7.yaml").model
    size, t_in, t_out = (480, 5, 20) if cuda else (64, 5, 20)
    if not cuda:
        cfg = dataclasses.replace(cfg, hidden=(8, 16, 16), stem=8)
        part.add("CPU stand-in", f"hidden {cfg.hidden}, stem 8, {size}x{size}", "the hko7 config itself on CUDA")
    if cuda:
        peak = matmul_ceiling(device, torch.bfloat16)
        part.add("peak: bf16 matmul", f"{peak['gflops'] / 1e3:.1f} TFLOP/s", str(peak["what"]))
        conv = conv_ceiling(device, torch.bfloat16, channels_last=True)
        part.add("bf16 3x3 conv, channels-last", f"{conv['gflops'] / 1e3:.1f} TFLOP/s", str(conv["what"]))
    else:
        peak = matmul_ceiling(device, torch.float32, n=512, repeat=2)
        part.add("peak: fp32 matmul", f"{peak['gflops']:.1f} GFLOP/s", str(peak["what"]))
        conv = conv_ceiling(device, torch.float32, shape=(1, 64, 128, 16), repeat=2)
        part.add("fp32 3x3 conv", f"{conv['gflops']:.1f} GFLOP/s", str(conv["what"]))
    torch.manual_seed(0)
    x = torch.rand(1, t_in, 1, size, size, device=device)
    models = {"fp32": (build_model(cfg).to(device).eval(), False)}
    if cuda:
        models["bf16 channels-last"] = (build_model(cfg).to(device).to(memory_format=torch.channels_last).eval(), True)
    flops = conv_flops(lambda: models["fp32"][0](x, t_out))
    for name, (model, bf16) in models.items():

        def infer(m: torch.nn.Module = model, low: bool = bf16) -> None:
            with torch.inference_mode(), autocast(device, low):
                m(x, t_out)

        sec = seconds_of(infer, device, 5 if cuda else 1)
        part.add(
            f"inference {name}, batch 1",
            f"{sec:.4f} s/sequence",
            f"{flops / sec / 1e12:.3g} TFLOP/s = {flops / sec / peak['gflops'] / 1e9:.1%} of the matmul peak; "
            f"HKO-7 ConvLSTM: {HKO7_SEC_PER_SEQ} s",
        )
    part.add("forecast FLOPs", f"{flops / 1e9:.1f} GFLOP", f"{size}x{size}, {t_in} in + {t_out} out")
    if not cuda:
        part.skip("largest batch that fits", "CUDA only: the CPU has no fixed device memory to fill (it would swap)")
        return
    model = models["bf16 channels-last"][0]
    for mode, shape in (("inference", (size, t_in, t_out)), ("training", (256, t_in, t_out))):
        fits, rate, batch, stop = 0, 0.0, 1, "batch 1024 reached"
        while batch <= 1024 and left() > 15:
            step = None
            try:
                xb = torch.rand(batch, shape[1], 1, shape[0], shape[0], device=device)
                if mode == "inference":

                    def step(xb: torch.Tensor = xb) -> None:
                        with torch.inference_mode(), autocast(device, True):
                            model(xb, shape[2])
                else:
                    yb = torch.rand(batch, shape[2], 1, shape[0], shape[0], device=device)

                    def step(xb: torch.Tensor = xb, yb: torch.Tensor = yb) -> None:
                        with autocast(device, True):
                            loss = F.mse_loss(model(xb, shape[2]).float(), yb)
                        loss.backward()
                        model.zero_grad(set_to_none=True)

                sec = seconds_of(step, device, 2)
                fits, rate = batch, batch / sec
                batch *= 2
            except RuntimeError as exc:  # torch.cuda.OutOfMemoryError, or cuDNN failing to allocate
                stop = f"batch {batch}: {type(exc).__name__}: {' '.join(str(exc).split())[:120]}"
                break
            finally:
                xb = yb = step = None  # noqa: F841
                model.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
        if stop == "batch 1024 reached" and batch <= 1024:
            stop = f"the time guard, before batch {batch}"
        part.add(
            f"largest {mode} batch (powers of 2), {shape[0]}x{shape[0]}",
            fits,
            f"{rate:.1f} sequences/s, bf16 channels-last; stopped at {stop}",
            fits > 0,
        )


def _radar_input(work: Path, cuda: bool, frames: int) -> tuple[Path, str]:
    """The last ``frames`` frames of the real file (cropped to 128 x 128 on the CPU), else synthetic rain."""
    from nowcast.synth import write_synthetic

    if REAL_FILE.is_file():
        import xarray as xr

        with xr.open_dataset(REAL_FILE) as ds:
            sub = ds.isel(time=slice(-frames, None))
            if not cuda:
                sub = sub.isel(y=slice(256, 384), x=slice(256, 384))
            path = work / ("radar_sub.nc")
            sub.load().to_netcdf(path)
        return path, f"real: last {frames} frames of {REAL_FILE.name}" + ("" if cuda else ", 128x128 window")
    size = (512, 512) if cuda else (96, 96)
    return write_synthetic(work / "synth_cmd.nc", frames=frames, size=size, seed=5), f"synthetic {size}"


def part_commands(part: Part, device: torch.device, args: argparse.Namespace, left: Callable[[], float]) -> None:
    """Whole ``nowcast predict`` and ``nowcast evaluate`` commands on the device against the CPU."""
    import xarray as xr

    from nowcast.models.checkpoint import default_model_path

    cuda = device.type == "cuda"
    work = Path(args.work)
    cfg = load_config(REPO / "configs" / "default.yaml").data
    model = default_model_path()
    src, what = _radar_input(work, cuda, cfg.in_frames + cfg.out_frames + (3 if cuda else 0))
    part.add("input", what, f"model {model.name}")
    env = _env(args.threads)
    devices = ["cuda", "cpu"] if cuda else ["cpu"]
    if not cuda:
        part.skip("--device cuda", "no CUDA device")
    base = [sys.executable, "-m", "nowcast", "-q"]
    fc, csi, secs = {}, {}, {}
    for dev in devices:
        out = work / f"fc_{dev}.nc"
        took, proc = _command(
            [*base, "predict", str(src), "--model", str(model), "--device", dev, "-o", str(out)], env, left()
        )
        part.add(
            f"predict --device {dev}",
            f"{took:.2f} s",
            "" if proc.returncode == 0 else _failure(proc),
            proc.returncode == 0,
        )
        if proc.returncode == 0:
            with xr.open_dataset(out) as ds:
                fc[dev] = ds["rainfall_rate"].values.astype(np.float64)
        rep = work / f"eval_{dev}"
        took, proc = _command(
            [
                *base,
                "evaluate",
                str(src),
                "--model",
                str(model),
                "--device",
                dev,
                "--baselines",
                "persistence",
                "--thresholds",
                "1,5",
                "--out",
                str(rep),
            ],
            env,
            left(),
        )
        secs[dev] = took
        part.add(
            f"evaluate --device {dev}",
            f"{took:.2f} s",
            "" if proc.returncode == 0 else _failure(proc),
            proc.returncode == 0,
        )
        if proc.returncode == 0:
            summary = json.loads((rep / "summary.json").read_text())
            csi[dev] = summary["scores_mean_over_leads"]["model"]["CSI"]
            part.add(f"evaluate --device {dev}: model mean CSI", csi[dev], f"{summary['n_cases']} forecast times")
    if "cuda" in fc and "cpu" in fc:
        a, b = fc["cuda"], fc["cpu"]
        both = np.isfinite(a) & np.isfinite(b)
        diff = float(np.abs(a[both] - b[both]).max()) if both.any() else math.nan
        part.add(
            "predict cuda vs cpu",
            f"max |diff| {diff:.3f} mm/h",
            "bf16 on CUDA, fp32 on the CPU; output packed at 0.01 mm/h",
            bool(np.array_equal(np.isfinite(a), np.isfinite(b))),
        )
    if "cuda" in csi and "cpu" in csi:
        gap = max(abs((csi["cuda"][k] or 0) - (csi["cpu"][k] or 0)) for k in csi["cpu"])
        part.add("evaluate cuda vs cpu", f"largest CSI difference {gap:.4f}", "pass <= 0.01", gap <= 0.01)
        part.add("evaluate speed-up", f"{secs['cpu'] / secs['cuda']:.2f}x", "whole command, cpu time / cuda time")


def part_streaming(part: Part, device: torch.device, args: argparse.Namespace, left: Callable[[], float]) -> None:
    """``nowcast train --config default`` (streaming windows, lazy motion, warps on the device, bf16 on
    CUDA) on a synthetic archive: frames per second and time to the first step, by DataLoader workers."""
    from nowcast.synth import write_synthetic

    cuda = device.type == "cuda"
    work = Path(args.work) / "streaming"
    size, frames, steps = (512, 48, 40) if cuda else (96, 24, 4)
    files = [str(write_synthetic(work / f"s{i}.nc", frames=frames, size=(size, size), seed=i)) for i in range(4)]
    part.add("archive", f"{len(files)} files x {frames} frames of {size}^2", "synthetic rain")
    env = _env(args.threads)
    for workers in (0, 2, 4) if cuda else (0,):
        run = work / f"run-w{workers}"
        sets = [
            f"data.files=[{','.join(files)}]",
            f"data.workers={workers}",
            f"data.cache_dir={work / 'motion'}",
            f"train.steps={steps}",
            f"train.device={device}",
            "train.log_every=10" if cuda else "train.log_every=2",
            "train.val_every=100000",
            "train.batch_size=16" if cuda else "train.batch_size=2",
            *([] if cuda else ["data.crop=32", "data.margin=8"]),
        ]
        cmd = [sys.executable, "-m", "nowcast", "train", "--config", "default", "--run-dir", str(run)]
        took, proc = _command([*cmd, *[x for s in sets for x in ("--set", s)]], env, left())
        if proc.returncode != 0:
            part.add(f"train, {workers} workers", f"{took:.1f} s", _failure(proc), False)
            continue
        first = next(
            (ln.split("first step done ")[1] for ln in proc.stderr.splitlines() if "first step done" in ln), "?"
        )
        with open(run / "metrics.csv", newline="") as fh:
            rates = [float(r["frames_per_s"]) for r in csv.DictReader(fh) if r["frames_per_s"]]
        best = max(rates[1:] or rates)
        part.add(
            f"train, {workers} workers", f"{best:.0f} frames/s", f"first step {first}; whole run {took:.0f} s", True
        )


def part_ensemble(part: Part, device: torch.device, args: argparse.Namespace, left: Callable[[], float]) -> None:
    """The ensemble (issue 28) at 765 x 700, 12 leads, ``bps``: ``ensemble_forecast`` in process with 50 and
    100 members on the GPU and 20 on the CPU (seconds and per member, device synchronised), the exceedance
    probabilities at 1 mm/h of 20 members on both devices compared (the same seed gives the same members,
    up to float rounding that can move a pixel across the threshold), and one whole ``nowcast predict
    --members 50 --device cuda`` command (the file's writing included). On the CPU: 4 and 8 members at
    96 x 96, on the CPU."""
    import xarray as xr

    from nowcast.motion.flow import motion_field
    from nowcast.nowcasts.ensemble import EnsembleSettings, ensemble_forecast
    from nowcast.synth import write_synthetic

    cuda = device.type == "cuda"
    size, counts, compare = ((765, 700), (50, 100), 20) if cuda else ((96, 96), (4, 8), 4)
    src = write_synthetic(Path(args.work) / "ensemble_in.nc", frames=8, size=size, seed=9)
    with xr.open_dataset(src) as ds:
        x = ds["rainfall_rate"].values[-3:].astype(np.float32)  # (3, H, W) mm/h
    velocity = motion_field(x)
    part.add("input", f"synthetic {size[0]} x {size[1]}, 12 leads of 5 min", "seed 1, bps motion perturbations")

    def members(n: int, dev: torch.device) -> np.ndarray:
        s = EnsembleSettings(members=n, seed=1, motion_perturbation="bps", km_per_px=1.0, step_min=5.0, device=str(dev))
        return ensemble_forecast(x, velocity, 12, s)

    cpu = torch.device("cpu")
    runs = [(device, n) for n in counts] + ([(cpu, compare)] if cuda else [])
    for dev, n in runs:
        took = seconds_of(lambda d=dev, k=n: members(k, d), dev, 1)
        part.add(
            f"{n} members on {dev.type}", f"{took:.2f} s", f"{took / n * 1000:.0f} ms per member, in process", True
        )
    if cuda:
        a, b = (members(compare, d) >= 1.0 for d in (device, cpu))  # (M, steps, H, W) booleans
        diff = float(np.abs(a.mean(0, dtype=np.float64) - b.mean(0, dtype=np.float64)).max())
        part.add(
            f"P(rain >= 1 mm/h), {compare} members, cuda vs cpu",
            f"max |diff| {diff:.3f}",
            "pass <= 2 members' worth (float rounding may move a pixel across the threshold)",
            diff <= 2.0 / compare + 1e-9,
        )
    else:
        part.skip("--device cuda", "no CUDA device")
    n = counts[0]
    out = Path(args.work) / "ensemble_fc.nc"
    cmd = [sys.executable, "-m", "nowcast", "-q", "predict", str(src), "--steps", "12", "--seed", "1"]
    took, proc = _command(
        [*cmd, "--members", str(n), "--device", device.type, "-o", str(out)], _env(args.threads), left()
    )
    ok = proc.returncode == 0
    part.add(
        f"predict --members {n} --device {device.type}", f"{took:.1f} s", "whole command" if ok else _failure(proc), ok
    )


PARTS: dict[str, Callable[[Part, torch.device, argparse.Namespace, Callable[[], float]], None]] = {
    "correctness": part_correctness,
    "streaming": part_streaming,
    "ensemble": part_ensemble,
    "ddp": part_ddp,
    "commands": part_commands,
    "hko7": part_hko7,
    "speed": part_speed,
}


# ----------------------------------------------------------------------------------------------------
# report


def machine(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    return info


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return "" if value is None else str(value)


def format_table(parts: list[Part]) -> str:
    """One line per check: part, check, value, verdict and note."""
    lines = []
    for p in parts:
        lines.append(f"[{p.name}] {p.status} in {p.seconds:.1f} s" + (f": {p.reason}" if p.reason else ""))
        for r in p.rows:
            mark = {True: "ok", False: "FAIL", None: ""}[r["ok"]]
            note = f"  ({r['note']})" if r["note"] else ""
            lines.append(f"  {r['check']:<46} {mark:>4}  {_cell(r['value'])}{note}")
    return "\n".join(lines)


def write_report(path: Path, started: float, info: dict[str, Any], args: argparse.Namespace, parts: list[Part]) -> None:
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": info,
        "settings": {k: v for k, v in vars(args).items() if k != "work"},
        "wall_s": round(time.perf_counter() - started, 1),
        "passed": all(p.status in ("ok", "skipped") for p in parts),
        "parts": {p.name: dataclasses.asdict(p) for p in parts},
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda, cuda:N or cpu")
    ap.add_argument("--out", default="gpu_check.json", help="JSON report (rewritten after every part)")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for all parts together (CUDA)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated: {', '.join(PARTS)}")
    ap.add_argument("--size", type=int, help="frame size of correctness and speed (default 256 on CUDA, 32 on CPU)")
    ap.add_argument("--speed-configs", default="shi2015,hko7", help=f"of bench_train.py: {', '.join(CONFIGS)}")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            f"gpu_check: error: --device {args.device}: expected a CUDA GPU, found none "
            f"(torch {torch.__version__}); use --device cpu",
            file=sys.stderr,
        )
        return 2
    unknown = [p for p in args.parts.split(",") if p not in PARTS]
    if unknown:
        print(
            f"gpu_check: error: --parts: expected names among {', '.join(PARTS)}, found {', '.join(unknown)}",
            file=sys.stderr,
        )
        return 2
    args.threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    info = machine(device)
    out = Path(args.out)
    print(
        f"gpu_check on {info.get('gpu', info['cpu'])} ({device}), torch {info['torch']}, budget {args.budget:.0f} s",
        flush=True,
    )
    parts: list[Part] = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        args.work = work
        for name in args.parts.split(","):
            part = Part(name)
            parts.append(part)
            left_total = args.budget - (time.perf_counter() - started)
            guard = min(GUARDS[name] if device.type == "cuda" else args.budget, left_total)
            if guard < 10:
                part.status, part.reason = "skipped", "the budget is spent"
                write_report(out, started, info, args, parts)
                continue
            tick = time.perf_counter()
            deadline = tick + guard

            def left(end: float = deadline) -> float:
                return end - time.perf_counter()

            try:
                with time_guard(guard):
                    PARTS[name](part, device, args, left)
            except PartTimeout as exc:
                part.status, part.reason = "timeout", str(exc)
            except Exception as exc:  # noqa: BLE001 - one broken part must not sink the report
                part.status, part.reason = "error", f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                part.rows.append(
                    {"check": "traceback", "value": None, "note": traceback.format_exc()[-1500:], "ok": False}
                )
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            part.seconds = round(time.perf_counter() - tick, 1)
            write_report(out, started, info, args, parts)
            print(format_table([part]), flush=True)
    write_report(out, started, info, args, parts)
    passed = all(p.status in ("ok", "skipped") for p in parts)
    print(f"\n{'passed' if passed else 'NOT passed'} in {time.perf_counter() - started:.0f} s; report: {out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

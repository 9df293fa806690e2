"""Benchmark: our ConvLSTM encoder-forecaster against a textbook ConvLSTM of identical size.

Times one training step (forward, backward, AdamW step) and one inference forecast
(``torch.inference_mode``) for a ``shi2015``-like and an ``hko7``-like configuration and prints the
times, the speed-up (textbook time / our time), the achieved GFLOP/s and the peak memory of each
variant, side by side in one run:

- ``textbook``: same topology and parameter count as ours (patch, down/up-sampling, head, forecaster fed
  top-down), but a textbook cell: per step, concatenate input and hidden state, one convolution, split
  the gates; zero initial state; a plain per-step loop; NCHW.
- ``ours``: ``build_model`` as configured (``batched_input=True``: encoder input convolutions of all
  frames in one call per level).
- ``ours per-step``: ``batched_input=False`` (input and state convolved together step by step).
- ``ours channels-last``: ``batched_input=True`` with ``model.to(memory_format=torch.channels_last)``.
- bf16 autocast of ours and of the textbook, when the CPU computes bf16 natively (AVX512-BF16/AMX;
  ``--bf16 auto``); on other CPUs PyTorch emulates bf16 convolutions at a small fraction of fp32 speed,
  so they are skipped unless ``--bf16 on``. The relative error of the bf16 forecast against fp32 (same
  weights and input) is always printed, from a smaller problem when the bf16 timings are skipped.

Times (wall clock, or process CPU time with ``--clock cpu``) are the best of ``--repeat`` runs after
one warm-up, the variants interleaved so that a change in the machine's load hits all of them alike.
FLOPs are counted analytically from the shapes of every convolution executed
(``torch.utils.flop_counter``: forward for inference; forward and backward for a training step);
elementwise work is not counted. Ours executes fewer FLOPs than the textbook (no convolution of the
zero initial state or of the forecaster's absent top-level input): the speed-up compares times, the
GFLOP/s each variant's own FLOPs.

Peak memory: the growth of the peak resident set size (VmHWM) over its value after setup, in a fresh
subprocess per variant running one inference and then one training step, so that the high-water marks
do not mix; the training figure is the high-water mark of both. It includes one-off allocations
(oneDNN kernels and scratch buffers), which dominate at small sizes.

The load average is printed before and after: other processes on the same cores distort every figure
(a second busy process on two cores slows each 3-4x, unevenly). On a busy machine ``--threads 1
--clock cpu`` gives steadier ratios.

    python -m scripts.bench.bench_train [--batch 2] [--in-frames 5] [--out-frames 5] [--size 128] [--repeat 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from nowcast.config import ModelConfig
from nowcast.models.convlstm import down_block, up_block
from nowcast.models.registry import build_model, count_parameters

CONFIGS = {
    "shi2015": ModelConfig(patch=4, hidden=(64, 64), kernels=(3, 3), downsample=(1, 1)),
    "hko7": ModelConfig(patch=4, hidden=(64, 192, 192), kernels=(3, 3, 3), downsample=(1, 2, 2)),
}


class TextbookCell(nn.Module):
    """Per step: cat(x, h) -> one conv -> split (i, f, o, g)."""

    def __init__(self, in_channels: int, hidden: int, kernel: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.conv = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel, padding=kernel // 2)

    def forward(self, x: Tensor | None, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        z = self.conv(h if x is None else torch.cat([x, h], dim=1))
        i, f, o, g = torch.split(z, self.hidden, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class Textbook(nn.Module):
    """Same encoder-forecaster topology as ours, textbook cells, per-step loop, no batching."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        n, p = len(cfg.hidden), cfg.patch
        self.cfg = cfg
        widths = [cfg.channels * p * p, *cfg.hidden]
        self.down = nn.ModuleList(down_block(widths[k], cfg.downsample[k]) for k in range(n))
        self.enc = nn.ModuleList(TextbookCell(widths[k], cfg.hidden[k], cfg.kernels[k]) for k in range(n))
        f_in = [cfg.hidden[k + 1] for k in range(n - 1)] + [0]
        self.fc = nn.ModuleList(TextbookCell(f_in[k], cfg.hidden[k], cfg.kernels[k]) for k in range(n))
        self.up = nn.ModuleList(up_block(cfg.hidden[k], cfg.downsample[k]) for k in range(n))
        self.head = nn.Conv2d(cfg.hidden[0], cfg.channels * p * p, 1)

    def forward(self, frames: Tensor, steps: int) -> Tensor:
        B, T, C, H, W = frames.shape
        p, hid = self.cfg.patch, self.cfg.hidden
        sizes, s = [], p
        for d in self.cfg.downsample:
            s *= d
            sizes.append((H // s, W // s))
        states = [(frames.new_zeros(B, hid[k], *sizes[k]),) * 2 for k in range(len(hid))]
        for t in range(T):
            inp = F.pixel_unshuffle(frames[:, t], p)
            for k in range(len(hid)):
                states[k] = self.enc[k](self.down[k](inp), states[k])
                inp = states[k][0]
        outs = []
        for _ in range(steps):
            inp = None
            for k in reversed(range(len(hid))):
                states[k] = self.fc[k](inp, states[k])
                inp = self.up[k](states[k][0])
            outs.append(F.pixel_shuffle(self.head(inp), p))
        return torch.stack(outs, 1)


VARIANTS = {  # name: (model kind, precision)
    "textbook fp32": ("textbook", "fp32"),
    "ours fp32": ("ours", "fp32"),
    "ours per-step fp32": ("ours-perstep", "fp32"),
    "ours channels-last fp32": ("ours-cl", "fp32"),
    "textbook bf16": ("textbook", "bf16"),
    "ours bf16": ("ours", "bf16"),
}


class Case:
    """One variant ready to run: model, optimizer, inputs, and its inference and training closures."""

    def __init__(self, config: str, kind: str, precision: str, batch: int, t_in: int, t_out: int, size: int):
        torch.manual_seed(0)
        cfg = CONFIGS[config]
        if kind == "ours-perstep":
            cfg = dataclasses.replace(cfg, batched_input=False)
        self.model = Textbook(cfg) if kind == "textbook" else build_model(cfg)
        if kind == "ours-cl":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.steps = t_out
        self.bf16 = precision == "bf16"
        self.frames = torch.rand(batch, t_in, cfg.channels, size, size)
        self.target = torch.rand(batch, t_out, cfg.channels, size, size)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)

    def forecast(self) -> Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            return self.model(self.frames, self.steps)

    def infer(self) -> Tensor:
        with torch.inference_mode():
            return self.forecast()

    def train(self) -> None:
        loss = F.mse_loss(self.forecast().float(), self.target)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def flops(self) -> tuple[int, int]:
        """(inference, training step) convolution FLOPs."""
        counts = []
        for fn in (self.infer, lambda: self.forecast().float().square().mean().backward()):
            with FlopCounterMode(display=False) as counter:
                fn()
            counts.append(counter.get_total_flops())
        self.model.zero_grad(set_to_none=True)
        return counts[0], counts[1]


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB.

    VmHWM from /proc (Linux): it starts afresh at exec, whereas ``ru_maxrss`` of a child process
    inherits the parent's peak at fork. Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def memory_worker(spec: dict) -> dict:
    """Peak RSS growth of one inference, then one training step, in this fresh process."""
    torch.set_num_threads(spec["threads"])
    case = Case(spec["config"], spec["kind"], spec["precision"], *spec["sizes"])
    base = peak_rss_mb()
    case.infer()
    mem_infer = peak_rss_mb() - base
    case.train()
    return {"mem_infer": mem_infer, "mem_train": peak_rss_mb() - base}


def timed(fn: Callable[[], object], clock: Callable[[], float]) -> float:
    t0 = clock()
    fn()
    return clock() - t0


def bf16_native() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bench_config(name: str, variants: list[str], args: argparse.Namespace) -> None:
    sizes = (args.batch, args.in_frames, args.out_frames, args.size)
    cases = {v: Case(name, *VARIANTS[v], *sizes) for v in variants}
    flops = {v: c.flops() for v, c in cases.items()}
    times: dict[str, dict[str, list[float]]] = {v: {"infer": [], "train": []} for v in variants}
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    for r in range(args.repeat + 1):  # round 0: warm-up
        for v, c in cases.items():
            t_inf, t_train = timed(c.infer, clock), timed(c.train, clock)
            if r:
                times[v]["infer"].append(t_inf)
                times[v]["train"].append(t_train)
    mem = {}
    for v in variants:
        kind, precision = VARIANTS[v]
        spec = dict(config=name, kind=kind, precision=precision, sizes=sizes, threads=args.threads)
        proc = subprocess.run(
            [sys.executable, __file__, "--memory-worker", json.dumps(spec)], capture_output=True, text=True, check=True
        )
        mem[v] = json.loads(proc.stdout.strip().splitlines()[-1])

    ours, tb = cases["ours fp32"], cases["textbook fp32"]
    print(f"\n{name}: {CONFIGS[name]}")
    gflop_ours, gflop_tb = flops["ours fp32"][0] / 1e9, flops["textbook fp32"][0] / 1e9
    print(
        f"  parameters: ours {count_parameters(ours.model):,}, textbook {count_parameters(tb.model):,}; "
        f"forecast conv GFLOP: ours {gflop_ours:.1f}, textbook {gflop_tb:.1f}"
    )
    print(
        f"  {'variant':<25}{'train s':>9}{'speedup':>9}{'GFLOP/s':>9}{'infer s':>9}{'speedup':>9}{'GFLOP/s':>9}"
        f"{'peak MB infer':>15}{'peak MB train':>15}"
    )
    best = {v: {m: min(ts) for m, ts in d.items()} for v, d in times.items()}
    ref = best["textbook fp32"]
    for v in variants:
        b, (f_inf, f_train) = best[v], flops[v]
        print(
            f"  {v:<25}{b['train']:>9.3f}{ref['train'] / b['train']:>8.2f}x{f_train / b['train'] / 1e9:>9.1f}"
            f"{b['infer']:>9.3f}{ref['infer'] / b['infer']:>8.2f}x{f_inf / b['infer'] / 1e9:>9.1f}"
            f"{mem[v]['mem_infer']:>15.0f}{mem[v]['mem_train']:>15.0f}"
        )

    targets = (
        f"  targets: fp32 >= 1.0x textbook: train {ref['train'] / best['ours fp32']['train']:.2f}x, "
        f"infer {ref['infer'] / best['ours fp32']['infer']:.2f}x"
    )
    if "ours bf16" in cases:
        targets += (
            f"; bf16 >= 1.8x textbook fp32: train {ref['train'] / best['ours bf16']['train']:.2f}x, "
            f"infer {ref['infer'] / best['ours bf16']['infer']:.2f}x"
        )
    print(targets)
    if "ours bf16" in cases:
        ours_low, err_sizes = cases["ours bf16"], "the timed problem"
    else:  # emulated bf16 is slow: measure the error on a smaller problem
        small = (1, args.in_frames, args.out_frames, 64)
        ours, ours_low = (Case(name, "ours", p, *small) for p in ("fp32", "bf16"))
        err_sizes = "batch 1, 64x64 (bf16 timings skipped)"
    ref_fc, low_fc = ours.infer(), ours_low.infer().float()
    rel = ((low_fc - ref_fc).norm() / ref_fc.norm()).item()
    print(f"  ours bf16 forecast vs ours fp32: relative L2 error {rel:.2e} ({err_sizes})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--in-frames", type=int, default=5)
    ap.add_argument("--out-frames", type=int, default=5)
    ap.add_argument("--size", type=int, default=128, help="frame height and width in pixels")
    ap.add_argument("--repeat", type=int, default=3, help="timed rounds after one warm-up (best is reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: process CPU time, a steadier measure on a busy machine with --threads 1",
    )
    ap.add_argument("--configs", default="shi2015,hko7", help=f"comma-separated: {', '.join(CONFIGS)}")
    ap.add_argument(
        "--bf16",
        choices=("auto", "on", "off"),
        default="auto",
        help="time bf16 autocast variants (auto: only where the CPU computes bf16 natively)",
    )
    ap.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_worker:
        print(json.dumps(memory_worker(json.loads(args.memory_worker))))
        return
    native = bf16_native()
    with_bf16 = args.bf16 == "on" or (args.bf16 == "auto" and native)
    variants = [v for v in VARIANTS if with_bf16 or VARIANTS[v][1] == "fp32"]
    print(
        f"load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}, {args.threads} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {'yes' if native else 'no'}; "
        f"batch {args.batch}, {args.in_frames} in + {args.out_frames} out frames, {args.size}x{args.size}; "
        f"best of {args.repeat}, {args.clock} clock"
    )
    if not with_bf16:
        print(
            "bf16 timings skipped: this CPU has no native bf16 (PyTorch emulates it far slower than fp32); "
            "--bf16 on forces them"
        )
    for name in args.configs.split(","):
        bench_config(name.strip(), variants, args)
    print(f"\nload average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

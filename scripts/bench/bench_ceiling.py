"""Benchmark: this machine's convolution and matrix-multiply ceilings, the yardstick for the model's GFLOP/s.

A ConvLSTM's time is almost all 3x3 convolutions, so the useful ceiling is the throughput of one
large 3x3 convolution of the model's kind (a ConvLSTM cell of 192 hidden channels: input and hidden
state concatenated, 384 channels in, 4 x 192 gate channels out), not the CPU's nominal peak. This
prints the achieved GFLOP/s of that convolution (fp32; on CUDA also bf16 and channels-last) and of a
large square matrix multiply, best of ``--repeat`` after one warm-up. FLOPs: 2 x multiply-adds.

    python -m scripts.bench.bench_ceiling [--device cpu] [--threads 2] [--repeat 5] [--clock wall|cpu]

``conv_ceiling`` and ``matmul_ceiling`` are also used by ``scripts/bench/gpu_check.py``.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

CONV_SHAPE = {"cpu": (4, 384, 768, 32), "cuda": (32, 384, 768, 64)}
"""Device kind -> (batch, input channels, output channels, height = width) of the measured 3x3 convolution."""
MATMUL_N = {"cpu": 2048, "cuda": 8192}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
"""``cpu``: process CPU time; with one thread on a busy machine it measures the core's own speed."""


def _best_seconds(fn, device: torch.device, repeat: int, clock: str = "wall") -> float:
    tick = CLOCK["wall" if device.type == "cuda" else clock]
    fn()  # warm-up: kernel selection, allocations
    _sync(device)
    best = float("inf")
    for _ in range(repeat):
        start = tick()
        fn()
        _sync(device)
        best = min(best, tick() - start)
    return best


def conv_ceiling(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    channels_last: bool = False,
    repeat: int = 5,
    shape: tuple[int, int, int, int] | None = None,
    clock: str = "wall",
) -> dict[str, float | str]:
    """Achieved GFLOP/s of one 3x3 convolution (padding 1) of ``shape`` = (B, C_in, C_out, H=W)."""
    device = torch.device(device)
    b, cin, cout, size = shape or CONV_SHAPE["cuda" if device.type == "cuda" else "cpu"]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(b, cin, size, size, device=device, dtype=dtype).contiguous(memory_format=fmt)
    w = torch.randn(cout, cin, 3, 3, device=device, dtype=dtype).contiguous(memory_format=fmt) / (cin * 9) ** 0.5
    flops = 2.0 * b * cout * size * size * cin * 9
    with torch.inference_mode():
        seconds = _best_seconds(lambda: F.conv2d(x, w, padding=1), device, repeat, clock)
    return {
        "what": f"conv2d 3x3 {b}x{cin}x{size}x{size} -> {cout} {str(dtype).removeprefix('torch.')}"
        f"{' channels-last' if channels_last else ''}",
        "seconds": seconds,
        "gflops": flops / seconds / 1e9,
    }


def matmul_ceiling(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    repeat: int = 5,
    n: int | None = None,
    clock: str = "wall",
) -> dict[str, float | str]:
    """Achieved GFLOP/s of an n x n by n x n matrix multiply."""
    device = torch.device(device)
    n = n or MATMUL_N["cuda" if device.type == "cuda" else "cpu"]
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    with torch.inference_mode():
        seconds = _best_seconds(lambda: a @ b, device, repeat, clock)
    return {
        "what": f"matmul {n}x{n} {str(dtype).removeprefix('torch.')}",
        "seconds": seconds,
        "gflops": 2.0 * n**3 / seconds / 1e9,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--clock",
        choices=tuple(CLOCK),
        default="wall",
        help="cpu: process CPU time (steadier on a busy machine, with --threads 1)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}, {args.threads} threads, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, device {device}, {args.clock} clock"
    )
    rows = [
        conv_ceiling(device, repeat=args.repeat, clock=args.clock),
        matmul_ceiling(device, repeat=args.repeat, clock=args.clock),
    ]
    if device.type == "cuda":
        rows += [
            conv_ceiling(device, torch.bfloat16, channels_last=True, repeat=args.repeat),
            matmul_ceiling(device, torch.bfloat16, repeat=args.repeat),
        ]
    for r in rows:
        print(f"  {r['what']:<48} {r['seconds'] * 1e3:9.2f} ms {r['gflops']:10.1f} GFLOP/s")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

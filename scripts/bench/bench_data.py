"""Benchmark: streaming training data, measured side by side in one run (DESIGN section 10, issue targets).

Each figure comes from ``nowcast train --config default`` (20 steps unless ``--steps``; the Lagrangian
recipe, so motion, warps and the S-PROG base are all in it) run in a child process of its own:

- peak memory (the child's maximum resident set) on a base archive and on one 8 times longer
  (target: at most 1.15 x), and the time from the start to the first step (target: at most 1.3 x), each
  with an empty motion cache;
- training throughput (frames per second after the first logging interval, best of ``--repeat``) reading
  windows from the files against the same run with the archive held in memory (``data.preload``, the same
  samples), both with the motion already cached (target: at least 0.85 x);
- a run of ``--cap-steps`` steps (200) on an archive of distinct files whose float32 size is at least
  twice a memory cap, inside a cgroup with that cap (``memory.limit_in_bytes``, cgroup v1; skipped with a
  note where none can be made): it must finish, having read every file many times.

Motion is computed lazily for the forecast times training samples, so there is no preparation step to
scale over ranks. Prints the machine; the CPU may be shared, so compare the ratios.

    python -m scripts.bench.bench_data [--size 256] [--frames 48] [--files 2] [--steps 20] [--cap-gib 1.5] [--cap-steps 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scripts.common import REPO, cpu_summary

CGROUP = Path("/sys/fs/cgroup/memory")


def child(spec: dict) -> None:
    """Run one training in this process and print what was measured as JSON (the ``--child`` mode)."""
    import csv
    import logging

    from nowcast.config import load_config, resolve_config
    from nowcast.training.loop import run_training

    first: list[float] = []

    class FirstStep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("first step done"):
                first.append(float(record.getMessage().split()[3]))

    logging.getLogger("nowcast").addHandler(FirstStep())
    logging.getLogger("nowcast").setLevel(logging.INFO)
    started = time.perf_counter()
    cfg = load_config(resolve_config("default"), spec["sets"])
    out = run_training(cfg, run_dir=spec["run_dir"])
    with open(out / "metrics.csv", newline="") as fh:
        rates = [float(r["frames_per_s"]) for r in csv.DictReader(fh) if r["frames_per_s"]]
    print(
        json.dumps(
            {
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                "first_step_s": first[0] if first else None,
                "frames_per_s": max(rates[1:]) if len(rates) > 1 else None,
                "wall_s": time.perf_counter() - started,
            }
        )
    )


def run(sets: list[str], run_dir: Path, cgroup: Path | None = None) -> dict:
    """One training in a fresh process (in ``cgroup`` when given); what it measured."""
    spec = json.dumps({"sets": sets, "run_dir": str(run_dir)})
    env = dict(os.environ, PYTHONPATH=str(REPO))
    pre = None
    if cgroup is not None:

        def pre() -> None:  # runs in the child before exec: join the capped group
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    proc = subprocess.run(
        [sys.executable, "-m", "scripts.bench.bench_data", "--child", spec],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        preexec_fn=pre,
    )
    if proc.returncode != 0:
        return {"failed": proc.returncode, "stderr": proc.stderr[-600:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def archive(directory: Path, files: int, frames: int, size: int, first_seed: int = 0) -> list[str]:
    """``files`` synthetic radar files (one seed each)."""
    from nowcast.synth import write_synthetic

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(files):
        path = directory / f"s{first_seed + i:03d}.nc"
        if not path.exists():
            write_synthetic(path, frames=frames, size=(size, size), seed=first_seed + i)
        paths.append(str(path))
    return paths


def capped_group(cap_bytes: int) -> Path | None:
    """A cgroup v1 memory group limited to ``cap_bytes`` (swap too, where the kernel accounts it), or None."""
    group = CGROUP / f"nowcast_bench_{os.getpid()}"
    try:
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(cap_bytes))
        swap = group / "memory.memsw.limit_in_bytes"
        if swap.exists():
            swap.write_text(str(cap_bytes))
        return group
    except OSError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--files", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cap-gib", type=float, default=1.5)
    ap.add_argument("--cap-steps", type=int, default=200, help="steps of the run under the memory cap")
    ap.add_argument("--workers", type=int, default=0, help="data.workers of every run")
    ap.add_argument("--parts", default="memory,throughput,cap", help="which of memory, throughput, cap to run")
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    print(f"machine: {cpu_summary()}; torch threads {args.threads}; {args.steps} steps of configs/default.yaml")
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        root = Path(tmp)
        base = archive(root / "data", args.files, args.frames, args.size)
        long = archive(root / "data", 8 * args.files, args.frames, args.size)  # the base files and 7 x more

        def sets(files: list[str], cache: str, *extra: str) -> list[str]:
            return [
                f"data.files=[{','.join(files)}]",
                f"data.cache_dir={root / cache}",
                f"train.steps={args.steps}",
                f"train.threads={args.threads}",
                "train.log_every=5",
                "train.val_every=100000",
                "train.ckpt_every=100000",
                f"data.workers={args.workers}",
                *extra,
            ]

        gib = args.size**2 * args.frames * 4 / 2**30
        print(
            f"base archive: {len(base)} files x {args.frames} frames of {args.size}^2 ({gib * len(base):.2f} GiB as float32)"
        )
        parts = args.parts.split(",")
        if "memory" in parts:
            memory_and_first_step(sets(base, "cold-base"), sets(long, "cold-long"), root)
        if "throughput" in parts:
            throughput([sets(base, "cold-base"), sets(base, "cold-base", "data.preload=true")], root, args.repeat)
        if "cap" in parts:
            capped(
                lambda files, steps: sets(files, "cold-cap", f"train.steps={steps}"), root, args.cap_gib, args.cap_steps
            )


def memory_and_first_step(base: list[str], long: list[str], root: Path) -> None:
    """Peak memory and time to the first step on the base archive and the 8 times longer one (cold caches)."""
    small = run(base, root / "r-base")
    big = run(long, root / "r-long")
    for name, r in (("base", small), ("8x", big)):
        print(f"  {name:5} peak RSS {r['peak_rss_mb']:7.0f} MB, first step after {r['first_step_s']:5.1f} s")
    mem = big["peak_rss_mb"] / small["peak_rss_mb"]
    first = big["first_step_s"] / small["first_step_s"]
    print(f"peak memory 8x / base: {mem:.3f} (target <= 1.15: {'met' if mem <= 1.15 else 'MISSED'})")
    print(f"time to first step 8x / base: {first:.3f} (target <= 1.3: {'met' if first <= 1.3 else 'MISSED'})")


def throughput(both: list[list[str]], root: Path, repeat: int) -> None:
    """Frames per second reading windows from the files against the archive in memory (the same samples),
    interleaved, best of ``repeat``; both read the motion the memory part cached."""
    best = {"stream": 0.0, "preload": 0.0}
    for i in range(repeat):
        for mode, sets in zip(best, both):
            r = run(sets, root / f"r-{mode}-{i}")
            best[mode] = max(best[mode], r.get("frames_per_s") or 0.0)
    ratio = best["stream"] / best["preload"]
    print(f"throughput: streaming {best['stream']:.1f} frames/s, in memory {best['preload']:.1f} frames/s")
    print(f"streaming / in memory: {ratio:.3f} (target >= 0.85: {'met' if ratio >= 0.85 else 'MISSED'})")


def capped(sets, root: Path, cap_gib: float, cap_steps: int) -> None:
    """A run of ``cap_steps`` steps inside a cgroup capped at ``cap_gib`` GiB on an archive of distinct
    files at least twice that as float32: long enough to read every file many times."""
    cap = int(cap_gib * 2**30)
    group = capped_group(cap)
    if group is None:
        print(f"memory cap: no cgroup could be made here ({CGROUP}); not run")
        return
    try:
        one = archive(root / "big", 1, 96, 512, first_seed=500)[0]
        per_file = 512 * 512 * 96 * 4
        n = int(2 * cap / per_file) + 1
        copies = []
        for i in range(n):  # the same frames in n files: copies, not links, which the netCDF library
            copy = root / "big" / f"copy{i:03d}.nc"  # would open as one file with one chunk cache
            shutil.copyfile(one, copy)
            copies.append(str(copy))
        r = run(sets(copies, cap_steps), root / "r-cap", cgroup=group)
        ok = "failed" not in r
        print(
            f"under a {cap_gib:g} GiB cgroup cap, an archive of {n * per_file / 2**30:.2f} GiB as float32 "
            f"({n} files of 96 x 512^2, {cap_steps} steps): {'finished' if ok else 'FAILED'}; peak RSS {r.get('peak_rss_mb', float('nan')):.0f} MB"
        )
        if not ok:
            print(r)
    finally:
        group.rmdir()


if __name__ == "__main__":
    main()

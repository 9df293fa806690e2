"""The training loop: one process on a CPU or GPU, or several under ``torchrun`` (DDP).

A run directory holds ``config.yaml`` (resolved), ``metrics.csv``, ``last.pt`` (every
``train.ckpt_every`` steps, at the end and on Ctrl-C/SIGTERM), ``best.pt`` (lowest validation loss)
and the inference-only ``model.pt``. Every random choice is seeded by (seed, step), so ``--resume``
continues exactly.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import logging
import math
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from nowcast.forecast import forecast_array
from nowcast.models.checkpoint import load_checkpoint, save_checkpoint
from nowcast.models.registry import build_model, model_stride
from nowcast.config import FIXED_SIZE_KINDS, Config, config_to_dict, save_config
from nowcast.training.motion_cache import MotionCache
from nowcast.training.windows import (
    FrameSource,
    SampleSettings,
    StepSampler,
    TrainWindows,
    Window,
    all_windows,
    split_windows,
    training_batch,
)
from nowcast.errors import CheckpointError, ConfigError, InputError, TrainingDivergedError, first_line
from nowcast.io import Archive, open_archive, remove_stale_temporaries
from nowcast.runtime import (
    DistInfo,
    autocast,
    available_cores,
    resolve_precision,
    select_device,
    set_threads,
    setup_distributed,
)
from nowcast.training.losses import HKO7_THRESHOLDS, HKO7_WEIGHTS, masked_loss, soft_csi_loss
from nowcast.transforms import Transform
from nowcast.verification import metrics

log = logging.getLogger(__name__)


FEW_VAL_WINDOWS = 8
"""Below this many validation windows ``train.export: best`` warns that its choice is fragile: on the
cross-radar folds a run with 3 exported a step that was better on all 3 and worse on other radars
(docs/training.md)."""

# Settings that decide the validation windows and the validation loss: when any differs on resume,
# the resumed run's best validation loss is not comparable and best.pt starts afresh.
_VALIDATION_KEYS = {
    "data": (
        "files",
        "val_files",
        "variable",
        "units",
        "zr_a",
        "zr_b",
        "time_step",
        "in_frames",
        "out_frames",
        "val_fraction",
        "val_block",
        "val_stride",
    ),
    "transform": ("kind", "dbz_min", "dbz_max", "log_eps", "linear_scale"),
    "train": ("loss", "balanced", "max_val_windows"),
}


def _validation_signature(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a plain config dict (as in a checkpoint) that defines validation windows and loss."""
    return {f"{sec}.{k}": config.get(sec, {}).get(k) for sec, keys in _VALIDATION_KEYS.items() for k in keys}


def lr_at(step: int, cfg: Config) -> float:
    """Learning rate of ``step``: linear warm-up to ``train.lr``, then cosine decay to ``lr * min_lr_ratio``."""
    tr = cfg.train
    if step < tr.warmup_steps:
        return tr.lr * (step + 1) / tr.warmup_steps
    span = max(1, tr.steps - tr.warmup_steps)
    progress = min(1.0, (step - tr.warmup_steps) / span)
    return tr.lr * (tr.min_lr_ratio + (1 - tr.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _all_mean(value: float, info: DistInfo) -> float:
    if info.world == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(total)
    return float(total.item()) / info.world


ETA_AFTER = 5
"""Steps timed, after the first (warm-up) step of a run, before ``log_eta`` estimates its duration."""


def log_eta(done: int, first: int, total: int, clock: dict[str, float]) -> None:
    """Log once, ``ETA_AFTER`` steps after the first step of this run (``first`` + 1), the speed in steps/s
    and when the run of ``total`` steps should end. ``clock``: the caller's empty dict, kept between calls."""
    now = time.perf_counter()
    if done == first + 1:
        clock["start"] = now
    elif done == first + 1 + ETA_AFTER and "start" in clock:
        rate = ETA_AFTER / max(now - clock["start"], 1e-9)
        left_s = (total - done) / rate
        end = dt.datetime.now() + dt.timedelta(seconds=left_s)
        log.info(
            "%.3g steps/s (%.3g s a step): %d steps left, about %s, ending about %s",
            rate,
            1 / rate,
            total - done,
            _duration(left_s),
            end.strftime("%Y-%m-%d %H:%M"),
        )


def _duration(seconds: float) -> str:
    """'45 s', '12 min', '2 h 05 min'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between steps, so last.pt is always a complete step."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signum
        log.warning("stopping after the current step (signal %d); press Ctrl-C again to abort", signum)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class _MetricsLog:
    """metrics.csv of a run: one row per logged step; columns fixed at creation."""

    def __init__(self, path: Path, thresholds: tuple[float, ...], resume_step: int | None, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        self.columns = ["step", "epoch", "lr", "train_loss", "val_loss"]
        self.columns += [f"val_csi_{t:g}" for t in thresholds] + ["frames_per_s"]
        if not enabled:
            return
        if resume_step is not None and path.exists():
            with open(path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= resume_step]
            self._write(rows)
        elif not path.exists():
            self._write([])

    def _write(self, rows: list[dict[str, Any]]) -> None:
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, self.columns)
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, self.path)

    def append(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, self.columns).writerow({k: row.get(k, "") for k in self.columns})


def _open_data(cfg: Config) -> tuple[Archive, Archive | None]:
    """Training (and validation) archives; with ``data.time_step`` 0 each file at its own step."""
    d = cfg.data
    if not d.files:
        raise ConfigError(
            "data.files: expected at least one radar file or glob, found none (use --set data.files=[a.nc])"
        )
    n = d.in_frames + d.out_frames
    kw = dict(variable=d.variable, units=d.units, zr_a=d.zr_a, zr_b=d.zr_b, min_frames=n, scan=False)
    step = d.time_step or None  # 0: each file at its own step
    train_arc = open_archive(list(d.files), time_step=step, **kw)
    val_arc = open_archive(list(d.val_files), time_step=step, **kw) if d.val_files else None
    return train_arc, val_arc


def _data_range(arc: Archive) -> tuple[float, float]:
    """Minimum and maximum over the valid (finite, >= 0) values of every segment, streamed by dask."""
    lows, highs = [], []
    for seg in arc.segments:
        valid = seg.where(seg >= 0)
        lows.append(valid.min())
        highs.append(valid.max())
    lo, hi = dask.compute(lows, highs)
    return float(np.nanmin([float(v) for v in lo])), float(np.nanmax([float(v) for v in hi]))


def _fit_to_data(cfg: Config, arc: Archive, resumed: bool) -> Config:
    """``cfg`` with what it leaves to the data filled in from the training archive.

    From scratch, ``model.channels`` follows the data's channel count (logged when it differs from the
    config's); a resumed run must match (ConfigError naming the key). A ``minmax`` transform without a
    range gets the data's minimum and maximum.
    """
    channels = int(arc.segments[0].sizes.get("channel", 1))
    if channels != cfg.model.channels:
        if resumed:
            raise ConfigError(
                f"model.channels: expected {cfg.model.channels} channel(s) as in the resumed run, found "
                f"{channels} in {arc.files[0]}"
            )
        log.info("model.channels: %d from the data (the config said %d)", channels, cfg.model.channels)
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, channels=channels))
    tr = cfg.transform
    if tr.kind == "minmax" and (tr.value_min is None or tr.value_max is None):
        lo, hi = _data_range(arc)
        lo = lo if tr.value_min is None else tr.value_min
        hi = hi if tr.value_max is None else tr.value_max
        if not hi > lo:
            raise ConfigError(f"transform.value_min/value_max: expected a data range, found all values equal to {lo:g}")
        log.info("minmax transform range from the training data: %g to %g", lo, hi)
        cfg = dataclasses.replace(cfg, transform=dataclasses.replace(tr, value_min=lo, value_max=hi))
    return cfg


def _crop(cfg: Config) -> int:
    """Training crop in pixels: ``data.crop`` rounded down to a multiple of the model's stride (at least one)."""
    s = model_stride(cfg.model)
    return max(s, cfg.data.crop // s * s)


def _fix_frame_size(cfg: Config, arc: Archive) -> Config:
    """``cfg`` with ``model.frame_size`` set to the training crop for the kinds whose weights depend on it
    (fc_lstm, cnn_lstm): ``data.crop``, or the smaller side of the smallest frame when that is smaller,
    rounded down to the model's stride. Such a model trains on crops of exactly that size (square) and
    validates on the centre of the validation frames."""
    m = cfg.model
    if m.kind not in FIXED_SIZE_KINDS:
        return cfg
    s = model_stride(m)
    side = min(min(seg.shape[-2:]) for seg in arc.segments)
    crop = min(_crop(cfg), max(s, side // s * s))
    if not m.frame_size:
        log.info("model.frame_size: %d x %d, the training crop (model.kind %s flattens each frame)", crop, crop, m.kind)
        return dataclasses.replace(cfg, model=dataclasses.replace(m, frame_size=(crop, crop)))
    h, w = m.frame_size
    if h != w or h % model_stride(m):
        raise ConfigError(
            f"model.frame_size: expected a square size, a multiple of {model_stride(m)}, to train model.kind "
            f"{m.kind} on crops, found {h} x {w}"
        )
    return cfg


def _centre(frames: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """The central ``size`` (H, W) of frames (..., H, W); as they are when ``size`` is empty."""
    if not size or frames.ndim < 2:
        return frames
    H, W = frames.shape[-2:]
    h, w = size
    if H < h or W < w:
        raise InputError(f"validation frames of {H} x {W} pixels: expected at least model.frame_size {h} x {w}")
    top, left = (H - h) // 2, (W - w) // 2
    return frames[..., top : top + h, left : left + w]


def _validate(
    model: torch.nn.Module,
    source: FrameSource,
    windows: list[Window],
    cfg: Config,
    transform: Transform,
    device: torch.device,
    precision: str,
    info: DistInfo,
) -> tuple[float, metrics.Scores]:
    """Validation loss (model space) and pooled scores (mm/h) over this rank's share of ``windows``, each
    window's frames read from ``source`` when it is scored."""
    d = cfg.data
    scores = metrics.init_scores(d.out_frames, cfg.eval.thresholds, cfg.eval.comparison)
    total, count = 0.0, 0
    for w in windows[info.rank :: info.world]:
        frames = _centre(source.read(w.segment, w.start, w.start + d.in_frames + d.out_frames), cfg.model.frame_size)
        obs_in, obs_out = frames[None, : d.in_frames], frames[None, d.in_frames :]  # (1, T, C, H, W) mm/h
        pred = forecast_array(
            model,
            transform,
            obs_in,
            d.out_frames,
            device=device,
            precision=precision,
            time_step=source.steps[w.segment],
        )
        metrics.accumulate(scores, pred, obs_out)
        target = torch.from_numpy(transform.forward(obs_out))
        pred_model = torch.from_numpy(np.nan_to_num(transform.forward(pred), nan=0.0))
        total += float(masked_loss(pred_model, target, cfg.train.loss))
        count += 1
    if info.world > 1:
        gathered: list[Any] = [None] * info.world
        dist.all_gather_object(gathered, (total, count, scores))
        total = sum(g[0] for g in gathered)
        count = sum(g[1] for g in gathered)
        scores = gathered[0][2]
        for g in gathered[1:]:
            scores = metrics.merge(scores, g[2])
    return total / max(count, 1), scores


def _provenance(
    train_arc: Archive,
    val_arc: Archive | None,
    final: dict[str, Any],
    earlier: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Where the weights come from. ``earlier``: the provenance of the run resumed, whose training files
    and periods are kept ahead of this run's (a model resumed on new data learned from both)."""

    def union(key: str, now: list[str]) -> list[str]:
        return list(dict.fromkeys([*(earlier or {}).get(key, []), *now]))

    prov: dict[str, Any] = {
        "trained": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "train_files": union("train_files", [str(f) for f in train_arc.files]),
        "train_periods": union("train_periods", train_arc.periods()),
        "final_metrics": final,
    }
    if val_arc is not None:
        prov["val_files"] = [str(f) for f in val_arc.files]
        prov["val_periods"] = val_arc.periods()
    return prov


@dataclass
class _Data:
    """What training reads, as windows over lazily read archives (``_prepare_data``)."""

    train_arc: Archive
    val_arc: Archive | None
    train_source: FrameSource
    train_windows: list[Window]
    samples: SampleSettings
    val_source: FrameSource
    val_windows: list[Window]


def _windows(cfg: Config, train_arc: Archive, val_arc: Archive | None) -> tuple[list[Window], list[Window]]:
    """Training and validation windows: a time-block split of the training archive, or (``val_files``)
    every training window and the validation files' windows ``val_stride`` apart, at most
    ``train.max_val_windows`` of them, spread evenly."""
    d, tr = cfg.data, cfg.train
    window = d.in_frames + d.out_frames
    lengths = [s.sizes["time"] for s in train_arc.segments]
    if val_arc is None:
        train_windows, val_windows = split_windows(
            lengths, window, val_fraction=d.val_fraction, val_block=d.val_block, val_stride=d.val_stride
        )
    else:
        train_windows = split_windows(lengths, window, val_fraction=0.0, val_block=d.val_block, val_stride=1)[0]
        val_windows = all_windows([s.sizes["time"] for s in val_arc.segments], window, d.val_stride)
    if not train_windows:
        raise InputError(
            f"{', '.join(train_arc.files)}: expected at least one training window of {window} frames, found none"
        )
    if len(val_windows) > tr.max_val_windows:
        pick = np.linspace(0, len(val_windows) - 1, tr.max_val_windows).round().astype(int)
        val_windows = [val_windows[i] for i in pick]
    log.info("%d training windows, %d validation windows of %d frames", len(train_windows), len(val_windows), window)
    if not val_windows:
        log.warning(
            "no validation windows (segments too short for data.val_block=%d); best.pt will be the final weights",
            d.val_block,
        )
    elif len(val_windows) < FEW_VAL_WINDOWS and tr.export == "best":
        log.warning(
            "only %d validation windows: train.export=best chooses model.pt on them, and so few can favour weights "
            "that do not carry to other rain; more data, data.val_files or a smaller data.val_stride give a firmer "
            "choice",
            len(val_windows),
        )
    return train_windows, val_windows


def _prepare_data(cfg: Config, train_arc: Archive, val_arc: Archive | None, info: DistInfo) -> _Data:
    """Windows and frame sources of the archives ``_open_data`` opened (``cfg`` fitted to them). Reads no
    frame: samples are read, and their motion computed, when a batch needs them."""
    d = cfg.data
    train_windows, val_windows = _windows(cfg, train_arc, val_arc)
    lagrangian = cfg.model.frame == "lagrangian"
    samples = SampleSettings(
        in_frames=d.in_frames,
        out_frames=d.out_frames,
        crop=cfg.model.frame_size[0] if cfg.model.frame_size else _crop(cfg),
        margin=d.margin if lagrangian else 0,
        augment=d.augment,
        min_rain=d.min_rain_fraction,
        rain_level=Transform.from_config(cfg).threshold(d.rain_threshold),
        lagrangian=lagrangian,
        persistence=cfg.model.persistence_input,
        persistence_history=cfg.model.persistence_history,
    )
    train_source = FrameSource(train_arc.segments, preload=d.preload, zr_a=d.zr_a, zr_b=d.zr_b)
    val_source = FrameSource((val_arc or train_arc).segments, preload=False, zr_a=d.zr_a, zr_b=d.zr_b)
    return _Data(train_arc, val_arc, train_source, train_windows, samples, val_source, val_windows)


@dataclass
class _Run:
    """The state of one training run that its phases share."""

    cfg: Config
    out: Path
    info: DistInfo
    device: torch.device
    data: _Data
    model: torch.nn.Module
    """The bare model: its state_dict is what checkpoints hold (``fwd`` may wrap it in DDP or compile it)."""
    optimizer: torch.optim.Optimizer
    start_step: int = 0
    best_val: float = math.inf
    earlier: dict[str, Any] | None = None
    """Provenance of the run resumed, if any."""
    last_scores: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The latest validation's loss and CSI, for the provenance of best.pt and model.pt."""


def _run_dir(config_name: str, run_dir: str | Path | None, resume: str | Path | None) -> Path:
    """Where the run lives: the resumed one, the one asked for, or ``runs/<config>-<time>``."""
    if resume is not None:
        return Path(resume)
    if run_dir is not None:
        return Path(run_dir)
    return Path("runs") / f"{config_name}-{dt.datetime.now():%Y%m%d-%H%M%S}"


def _check_weights(model: torch.nn.Module, state: dict[str, Any], path: Path) -> None:
    """Raise CheckpointError (one line) when ``state`` does not fit ``model``: names, then shapes."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if set(own) != set(found):
        key = sorted(set(own) ^ set(found))[0]
        where = "the checkpoint" if key in found else "the configured model"
        raise CheckpointError(
            f"{path}: expected the weights of the configured model, found {key} only in {where} "
            "(resume with the run's own model settings)"
        )
    for key, shape in own.items():
        if found[key] != shape:
            raise CheckpointError(
                f"{path}: expected the weights of the configured model, found {key} of shape {list(found[key])} "
                f"where the model has {list(shape)} (resume with the run's own model settings)"
            )


def _remove_stale(out: Path) -> None:
    """Remove temporaries of checkpoints that a killed run was writing."""
    for name in ("last.pt", "best.pt", "model.pt"):
        for stale in remove_stale_temporaries(out / name, suffix=".pt", min_age_s=0.0):
            log.info("removed %s, left by an interrupted write", stale)


def _restore(run: _Run) -> None:
    """Continue ``run`` from its ``last.pt``: weights, optimizer, step, best validation loss, RNG."""
    last = run.out / "last.pt"
    ckpt = load_checkpoint(last)
    if "training" not in ckpt:
        raise CheckpointError(f"{last}: expected a resumable training checkpoint, found an inference-only one")
    _check_weights(run.model, ckpt["state_dict"], last)
    try:
        run.model.load_state_dict(ckpt["state_dict"])
        run.optimizer.load_state_dict(ckpt["training"]["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{last}: expected a checkpoint of the configured model, found {first_line(exc)}"
        ) from None
    run.start_step = int(ckpt["training"]["step"])
    run.earlier = ckpt.get("provenance") or None
    run.best_val = float(ckpt["training"].get("best_val", math.inf))
    if _validation_signature(ckpt["config"]) != _validation_signature(config_to_dict(run.cfg)):
        log.info(
            "validation data or loss differ from the resumed run's; best.pt restarts from this run's first validation"
        )
        run.best_val = math.inf
    torch.set_rng_state(ckpt["training"]["torch_rng"])
    log.info("resuming %s at step %d", run.out, run.start_step)


def _save(run: _Run, name: str, step: int | None = None) -> None:
    """Write ``name`` (last.pt, best.pt or model.pt) into the run directory; with ``step``, resumable."""
    if not run.info.main:
        return
    training = None
    if step is not None:
        training = {
            "optimizer": run.optimizer.state_dict(),
            "step": step,
            "best_val": run.best_val,
            "torch_rng": torch.get_rng_state(),
        }
    scores = {} if name == "last.pt" else run.last_scores
    provenance = _provenance(run.data.train_arc, run.data.val_arc, scores, run.earlier)
    save_checkpoint(
        run.out / name, config=run.cfg, state_dict=run.model.state_dict(), provenance=provenance, training=training
    )


def _loss_levels(transform: Transform, cfg: Config, device: torch.device) -> dict[str, torch.Tensor]:
    """Model-space thresholds of the balanced loss and the soft-CSI term, and the balanced weights."""
    return {
        "levels": torch.tensor([transform.threshold(r) for r in HKO7_THRESHOLDS], device=device),
        "level_weights": torch.tensor(HKO7_WEIGHTS, device=device),
        "csi_levels": torch.tensor([transform.threshold(r) for r in cfg.train.csi_thresholds], device=device),
    }


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader worker start: leave SIGINT and SIGTERM to the main process.

    A Ctrl-C or a service stop reaches the whole process group. Left to their defaults, the workers die
    (or end quietly on SIGINT) while the main process finishes its step, and the next batch fails with
    "DataLoader worker ... killed". Ignoring both here lets the main process stop after the step, save
    ``last.pt`` and shut the workers down itself.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _loader(run: _Run) -> DataLoader:
    """Batches of training samples (``TrainWindows`` items), read by ``data.workers`` processes, in a
    resumable order."""
    d, tr, info = run.cfg.data, run.cfg.train, run.info
    dataset = TrainWindows(
        run.data.train_source,
        run.data.train_windows,
        run.data.samples,
        Transform.from_config(run.cfg),
        MotionCache(d.cache_dir),
    )
    if tr.batch_size % info.world:
        raise ConfigError(f"train.batch_size: expected a multiple of the {info.world} DDP ranks, found {tr.batch_size}")
    sampler = StepSampler(
        len(run.data.train_windows),
        tr.batch_size,
        tr.steps,
        seed=tr.seed,
        start_step=run.start_step,
        rank=info.rank,
        world=info.world,
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=d.workers,
        pin_memory=run.device.type == "cuda",
        prefetch_factor=2 if d.workers else None,
        persistent_workers=False,
        worker_init_fn=_ignore_stop_signals if d.workers else None,
    )


def _train_step(
    run: _Run,
    fwd: torch.nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    step: int,
    loss_levels: dict[str, torch.Tensor],
    precision: str,
) -> float:
    """One optimizer step on ``batch``; the loss. A non-finite loss (on any rank) stops the run."""
    cfg, tr, device = run.cfg, run.cfg.train, run.device
    block, velocity, dts, aug = batch
    block, velocity = block.to(device, non_blocking=True), velocity.to(device, non_blocking=True)
    x, y, held = training_batch(block, velocity, aug, run.data.samples)  # (B, T, C, h, w)
    dts = dts.to(device)  # (B,) seconds
    for group in run.optimizer.param_groups:
        group["lr"] = lr_at(step, cfg)
    with autocast(device, precision):
        extra = {} if held is None else {"persistence": held}
        pred = fwd(x, cfg.data.out_frames, dts, **extra).float()  # losses in fp32 under bf16 autocast
    balanced = tr.balanced
    loss = masked_loss(
        pred,
        y,
        tr.loss,
        loss_levels["level_weights"] if balanced else None,
        loss_levels["levels"] if balanced else None,
    )
    if tr.csi_weight > 0:
        loss = loss + tr.csi_weight * soft_csi_loss(pred, y, loss_levels["csi_levels"])
    finite = torch.isfinite(loss.detach()).float()
    if run.info.world > 1:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if finite.item() == 0:
        raise TrainingDivergedError(
            f"training loss at step {step}: expected a finite value, found {loss.item()}; "
            f"stopped, the last good checkpoint {run.out / 'last.pt'} is intact (lower train.lr?)"
        )
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if tr.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), tr.grad_clip)
    run.optimizer.step()
    return float(loss.detach())


def _validation(run: _Run, done: int, row: dict[str, Any], transform: Transform, precision: str) -> None:
    """Validate at step ``done``: fill ``row``'s validation columns, log, keep the best in best.pt."""
    cfg = run.cfg
    val_loss, scores = _validate(
        run.model,
        run.data.val_source,
        run.data.val_windows,
        cfg,
        transform,
        run.device,
        precision,
        run.info,
    )
    with warnings.catch_warnings():  # a threshold never reached in validation: NaN, without a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        csi = np.nanmean(metrics.compute(scores)["CSI"], axis=0)  # mean over leads, per threshold
    row["val_loss"] = f"{val_loss:.6f}"
    for thr, c in zip(cfg.eval.thresholds, csi):
        row[f"val_csi_{thr:g}"] = f"{c:.4f}"
    run.last_scores = {"step": done, "val_loss": val_loss}
    run.last_scores.update({f"val_csi_{thr:g}": float(c) for thr, c in zip(cfg.eval.thresholds, csi)})
    log.info(
        "step %d: %s, val loss %.5f, val CSI %s",
        done,
        f"train loss {row['train_loss']}" if row["train_loss"] else "before training",
        val_loss,
        ", ".join(f"{thr:g}:{c:.3f}" for thr, c in zip(cfg.eval.thresholds, csi)),
    )
    if val_loss < run.best_val:
        run.best_val = val_loss
        _save(run, "best.pt")


def _export_best(run: _Run) -> None:
    """Write model.pt from best.pt's weights, with their validation scores as its provenance."""
    best = load_checkpoint(run.out / "best.pt")
    run.model.load_state_dict(best["state_dict"])
    scores = dict((best.get("provenance") or {}).get("final_metrics") or {})
    run.last_scores = scores
    step = scores.get("step", "?")
    _save(run, "model.pt")
    log.info("model.pt holds the weights of step %s, the lowest validation loss (train.export=best)", step)


def run_training(
    cfg: Config,
    *,
    config_name: str = "run",
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
) -> Path:
    """Train ``cfg`` and return the run directory. ``resume``: a run directory to continue exactly.

    The phases: prepare the data (``_prepare_data``), build or restore the model (``_restore``), then
    ``_train_step`` per batch, ``_validation`` every ``train.val_every`` steps and ``_save`` of last.pt,
    best.pt and model.pt.
    """
    started = time.perf_counter()
    device = select_device(cfg.train.device)
    info = setup_distributed(device)
    if device.type == "cpu":
        set_threads(cfg.train.threads or max(1, available_cores() // info.world))
    precision = resolve_precision(cfg.train.precision, device)
    out = _run_dir(config_name, run_dir, resume)
    train_arc, val_arc = _open_data(cfg)
    cfg = _fit_to_data(cfg, train_arc, resume is not None)
    cfg = _fix_frame_size(cfg, train_arc)
    data = _prepare_data(cfg, train_arc, val_arc, info)
    d, tr = cfg.data, cfg.train
    torch.manual_seed(tr.seed)
    model = build_model(cfg.model, cfg.data).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tr.lr, weight_decay=tr.weight_decay)
    run = _Run(cfg, out, info, device, data, model, optimizer)
    if resume is not None:
        _restore(run)  # refused before anything is written into the run directory
    if info.main:  # the data, the config and a resumed checkpoint fit: only now the run directory is written
        out.mkdir(parents=True, exist_ok=True)
        if resume is not None:
            _remove_stale(out)
        save_config(cfg, out / "config.yaml")
        log.info("run directory: %s", out)
    wrapped = model
    if info.distributed:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        log.info("DistributedDataParallel over %d process(es), %s backend", info.world, dist.get_backend())
    fwd = torch.compile(wrapped) if tr.compile else wrapped

    transform = Transform.from_config(cfg)
    loss_levels = _loss_levels(transform, cfg, device)
    loader = _loader(run)
    mlog = _MetricsLog(out / "metrics.csv", cfg.eval.thresholds, run.start_step if resume else None, info.main)
    window = d.in_frames + d.out_frames

    progress = None
    if info.main and sys.stderr.isatty() and log.getEffectiveLevel() <= logging.INFO:
        from nowcast.runtime import progress_bar

        progress = progress_bar(tr.steps, "step", initial=run.start_step)
    done = run.start_step
    if tr.export == "best" and done == 0 and data.val_windows:  # the start is a candidate for model.pt
        row0: dict[str, Any] = {"step": 0, "epoch": "0.000", "lr": f"{lr_at(0, cfg):.3e}", "train_loss": ""}
        wrapped.eval()
        _validation(run, 0, row0, transform, precision)
        wrapped.train()
        mlog.append(row0)
    tick, frames_done, loss_sum, loss_n = time.perf_counter(), 0, 0.0, 0
    eta_clock: dict[str, float] = {}
    try:
        with _StopFlag() as stop:
            wrapped.train()
            for step, batch in enumerate(loader, start=run.start_step):
                loss_sum += _train_step(run, fwd, batch, step, loss_levels, precision)
                if step == run.start_step:
                    log.info("first step done %.1f s after the start", time.perf_counter() - started)
                done = step + 1
                log_eta(done, run.start_step, tr.steps, eta_clock)
                loss_n += 1
                frames_done += batch[0].shape[0] * window * info.world
                if progress:
                    progress.update(1)
                    progress.set_postfix(loss=f"{loss_sum / loss_n:.4f}")
                validate_now = done % tr.val_every == 0 or done == tr.steps
                if done % tr.log_every == 0 or validate_now:
                    elapsed = time.perf_counter() - tick
                    row: dict[str, Any] = {
                        "step": done,
                        "epoch": f"{done * tr.batch_size / len(data.train_windows):.3f}",
                        "lr": f"{lr_at(step, cfg):.3e}",
                        "train_loss": f"{_all_mean(loss_sum / loss_n, info):.6f}",
                        "frames_per_s": f"{frames_done / max(elapsed, 1e-9):.1f}",
                    }
                    if validate_now and data.val_windows:
                        wrapped.eval()
                        _validation(run, done, row, transform, precision)
                        wrapped.train()
                    elif not progress:
                        log.info("step %d: train loss %s, lr %s", done, row["train_loss"], row["lr"])
                    mlog.append(row)
                    tick, frames_done, loss_sum, loss_n = time.perf_counter(), 0, 0.0, 0
                if done % tr.ckpt_every == 0 or done == tr.steps:
                    _save(run, "last.pt", done)
                if stop.signal is not None:
                    _save(run, "last.pt", done)
                    log.warning("interrupted at step %d; resume with: nowcast train --resume %s", done, out)
                    raise KeyboardInterrupt
    finally:
        if progress:
            progress.close()
    if run.start_step >= tr.steps:
        log.info("nothing to do: the run is already at step %d of %d", run.start_step, tr.steps)
    if info.main:
        _save(run, "last.pt", done)
        if not (out / "best.pt").exists():
            _save(run, "best.pt")
        if tr.export == "best":
            _export_best(run)
        else:
            _save(run, "model.pt")
        log.info(
            "done: %s is the model to use (nowcast predict FILE --model %s, the %s weights); best.pt has "
            "the lowest validation loss, last.pt resumes (--resume %s)",
            out / "model.pt",
            out / "model.pt",
            tr.export,
            out,
        )
    if info.distributed:  # leave the process group cleanly (NCCL warns at exit otherwise)
        dist.barrier()
        dist.destroy_process_group()
    return out

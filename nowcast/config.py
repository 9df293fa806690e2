"""Typed, validated configuration: frozen dataclasses loaded from YAML plus ``--set`` overrides.

Every field has its default here and only here. ``load_config`` rejects unknown keys (suggesting the
nearest valid name), checks types and ranges, and reports every problem in one ``ConfigError``.
No torch import: the CLI and ``io`` use this module too.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from nowcast.errors import ConfigError, NowcastError
from nowcast.units import RAIN_THRESHOLD, ZR_A, ZR_B


# The valid values of the string settings, said once: by their types (``config show`` lists them,
# ``load_config`` checks them).
TransformKind = Literal["dbz", "log", "linear", "minmax"]
Frame = Literal["eulerian", "lagrangian"]
ProbMatching = Literal["none", "cdf", "cdf_lagrangian"]
Export = Literal["last", "best"]
Base = Literal["last", "sprog"]
Kind = Literal["convlstm", "fc_lstm", "cnn_lstm", "unet"]
Loss = Literal["mse", "mae", "mse+mae"]
Precision = Literal["auto", "fp32", "bf16"]
Comparison = Literal[">=", ">"]
"""Event definition: value >= threshold (HKO-7, SEVIR) or value > threshold (pySTEPS)."""


@dataclass(frozen=True)
class DataConfig:
    """What the model reads: files, variable, time step, window lengths, training samples."""

    files: tuple[str, ...] = ()
    """Radar NetCDF paths or glob patterns forming one archive (training) ."""
    val_files: tuple[str, ...] = ()
    """Files used only for validation (split by files). Empty: split by time blocks of ``files``."""
    variable: str | None = None
    """Data variable to read; None: chosen by standard_name or as the only candidate."""
    units: str | None = None
    """Override of the variable's units attribute (mm h-1, kg m-2 s-1 or dBZ)."""
    zr_a: float = ZR_A
    """Z-R relation Z = a R^b, prefactor a (mm^6 m^-3 per (mm/h)^b); Marshall-Palmer by default."""
    zr_b: float = ZR_B
    """Z-R relation exponent b."""
    time_step: int = 300
    """Model time step in seconds; finer input steps that divide it are subsampled. 0: each file at its
    own step (Lagrangian models only, whose motion comes from the data: one model for 2- to 15-minute
    radars)."""
    in_frames: int = 12
    """Number of observed frames the model reads."""
    out_frames: int = 12
    """Number of frames the model is trained to forecast."""
    crop: int = 128
    """Training crop size in pixels (rounded down to a multiple of the model's total stride)."""
    augment: bool = True
    """Random flips and 90-degree rotations of training windows."""
    min_rain_fraction: float = 0.0
    """A training window whose last input frame has fewer rainy valid pixels (> rain_threshold) than this
    share is replaced by another drawn at random (up to 20 draws)."""
    rain_threshold: float = RAIN_THRESHOLD
    """Rain/no-rain threshold in mm/h used by min_rain_fraction."""
    val_fraction: float = 0.2
    """Share of each segment's time held out for validation when val_files is empty."""
    val_block: int = 48
    """Length in frames of the time blocks used for the validation split."""
    val_stride: int = 6
    """Stride in frames between validation windows."""
    workers: int = 0
    """DataLoader worker processes reading (and, Lagrangian, computing motion for) the next batches while
    the model trains; 0: the training process reads them itself."""
    cache_dir: str | None = None
    """Directory of the motion cache: the Lucas-Kanade motion of each forecast time a Lagrangian model
    trains on, computed once and shared by later runs (None: kept in memory by each process only)."""
    margin: int = 64
    """Pixels read around a Lagrangian training crop so that its warp finds the rain that moves into it
    (displacements up to this many pixels over the window are exact)."""
    preload: bool = False
    """Hold the whole training archive in memory instead of reading windows when a batch needs them
    (for benchmarks: the samples are the same)."""


@dataclass(frozen=True)
class TransformConfig:
    """Mapping of rain rate (mm/h) to the network's model space and back."""

    kind: TransformKind = "dbz"
    """dbz: Z-R relation, dBZ scaled to [0, 1] over [dbz_min, dbz_max]; log: log10(R + eps); linear: R / scale;
    minmax: values scaled to [0, 1] over [value_min, value_max], for data that are not rain (images)."""
    dbz_min: float = 0.0
    """dBZ mapped to 0 (rates below it map to 0 and back to 0 mm/h)."""
    dbz_max: float = 60.0
    """dBZ mapped to 1."""
    log_eps: float = 0.01
    """Offset of the log transform in mm/h."""
    linear_scale: float = 10.0
    """Divisor of the linear transform in mm/h."""
    value_min: float | None = None
    """Value mapped to 0 by the minmax transform; null: the training data's minimum (stored in the run's config)."""
    value_max: float | None = None
    """Value mapped to 1 by the minmax transform; null: the training data's maximum (stored in the run's config)."""


@dataclass(frozen=True)
class ModelConfig:
    """ConvLSTM encoder-forecaster architecture (DESIGN section 4), or a comparison model (``kind``)."""

    name: str = "convlstm"
    """A label stored in checkpoints and forecast metadata."""
    kind: Kind = "convlstm"
    """convlstm: the ConvLSTM encoder-forecaster (``nowcast/model.py``). Comparison models
    (``nowcast/models_extra.py``, docs/why-convlstm.md): fc_lstm (Shi et al. 2015's FC-LSTM: each frame
    after space-to-depth flattened to one vector, an encoder-forecaster of LSTM layers ``hidden``),
    cnn_lstm (strided 3x3 CNN ``conv_widths`` to one vector per frame, LSTM layers ``hidden``, transposed
    CNN back), unet (a 2-D UNet of widths ``conv_widths`` from the stacked input frames to the stacked
    output frames; more lead times by feeding its forecast back in). fc_lstm and cnn_lstm only take
    frames of ``frame_size``."""
    channels: int = 1
    """Input/output channels per frame (1 for rain rate, 3 for RGB image sequences)."""
    patch: int = 4
    """Space-to-depth factor applied to frames before the first level."""
    stem: int = 0
    """Channels of a 3x3 convolution after space-to-depth (0: none, the patch goes straight in)."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden channels of each ConvLSTM level, bottom to top."""
    kernels: tuple[int, ...] = (3, 3)
    """Odd kernel size of each level's convolutions."""
    downsample: tuple[int, ...] = (1, 1)
    """Spatial downsampling factor entering each level (strided conv; 1 = none); first entry applies after the patch."""
    conv_widths: tuple[int, ...] = (16, 32, 64)
    """cnn_lstm and unet: channels of each level of 3x3 convolutions (cnn_lstm: each level halves height
    and width; unet: levels joined by 2x max-pooling and transposed convolutions)."""
    frame_size: tuple[int, ...] = ()
    """fc_lstm and cnn_lstm: the frame height and width in pixels the model is built for (its weights
    depend on them); empty: ``train`` sets it to the training crop. Frames of another size are refused."""
    peephole: bool = False
    """Per-channel peephole terms on the cell state (Shi et al. 2015, eq. 3)."""
    batched_input: bool = True
    """Compute the input-to-state convolutions of all encoder frames in one call."""
    frame: Frame = "eulerian"
    """eulerian: the network sees the frames as observed and learns motion too (Shi et al. 2015).
    lagrangian: motion comes from optical flow (``motion.motion_field``); the input frames are warped
    into the frame of the last observation, the network forecasts there, and forecast k is advected
    forward by k steps."""
    residual: bool = False
    """Forecast the change from the last input frame (model space) instead of whole fields: an untrained
    Lagrangian residual model is optical-flow extrapolation."""
    step_input: bool = False
    """Feed the data's time step (minutes / 10) to the network as a constant extra input channel, so
    one model serves radars at different steps."""
    base: Base = "last"
    """What a ``residual`` model adds its output to. last: the last input frame (untrained: optical-flow
    extrapolation). sprog: the S-PROG forecast in the Lagrangian frame (``nowcasts.cascade.damped_cascade``; untrained:
    pySTEPS S-PROG); needs frame=lagrangian, in_frames >= 3 and transform.kind=dbz."""
    probmatching: ProbMatching = "none"
    """none: the network's values as they are. cdf: each forecast frame keeps the network's pattern
    (rank order) but takes the distribution of the last observed frame (``nowcasts.probmatch.match_cdf``), as
    pySTEPS S-PROG does; a forecast then neither grows nor loses rain overall. cdf_lagrangian
    (``frame: lagrangian`` only): the same matching, but in the frame of the last observation, before
    the forecast is advected, where both cover the same pixels; rain then leaves the domain with the
    flow instead of being squeezed into what remains of it (docs/default-model.md)."""
    residual_smoothing: float = 0.0
    """Gaussian standard deviation (pixels) of a smoothing of the network's output before a ``residual``
    model adds it to its base; 0: none. Against the dotted lattice at the patch period that a 4x4-patch
    head can leave at low rain rates (docs/default-model.md). ConvLSTM only."""
    persistence_input: bool = False
    """Give the forecaster, at each lead k, the last observation as it stands on the ground (persistence)
    moved into the forecast's Lagrangian frame (``motion.lagrangian.persistence_frames``: advected k steps
    backward), beside the level above's output at its bottom level. Rain fixed to the ground (over high
    ground) drifts backwards through the Lagrangian frame; this input shows the network where it will be
    at every lead, so that keeping it there is a local decision (docs/training.md, the orographic check).
    ConvLSTM with frame=lagrangian and downsample[0] = 1 only."""
    persistence_history: int = 1
    """With ``persistence_input``: how many of the last observations are moved into each lead's frame, the
    last first (each as persistence would put it on the ground, by the same warp). Where rain stays on
    the ground they coincide in that frame; where it moves they are shifted against each other by the
    motion, so "moving or fixed" is visible where the forecast is made (docs/training.md, the eighth
    orographic run). 1 to ``data.in_frames``."""
    persistence_gate: bool = False
    """With ``persistence_input`` and ``residual``: the forecast is ``base + w (persistence - base) +
    correction``, with a weight w in [0, 1] per pixel and lead from a second output of the head (clamped,
    smoothed as the correction). Keeping ground-fixed rain is then one number per pixel; w starts at 0,
    so the untrained model is still its base."""
    ground_field: bool = False
    """With ``persistence_input`` and ``residual``: a small convolutional branch reads the last observation
    and returns a part of it fixed to the ground, g (model space; in dBZ an additive part is a factor on
    the rain, as orographic enhancement is). The base at lead k becomes ``base - g + g_k``, g_k the same
    branch applied to the last observation moved into lead k's frame (the persistence input): the base
    moves the rain without its ground part, and the ground part stays where the ground is. Zero at the
    start, so the untrained model is still its base (docs/training.md, the ninth orographic run)."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and run control."""

    steps: int = 2000
    """Optimizer steps."""
    batch_size: int = 8
    """Global batch size (divided among DDP ranks)."""
    lr: float = 1e-3
    """Peak learning rate of AdamW."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    warmup_steps: int = 100
    """Linear warm-up steps before the cosine decay."""
    min_lr_ratio: float = 0.05
    """Final learning rate as a fraction of lr."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (0: off)."""
    loss: Loss = "mse+mae"
    """mse, mae or mse+mae, in model space, masked by valid pixels."""
    balanced: bool = False
    """Weight pixels by rain intensity (HKO-7: 1, 1, 2, 5, 10, 30 at 0.5, 2, 5, 10, 30 mm/h)."""
    csi_weight: float = 0.0
    """Weight of a soft-CSI term added to the loss (0: off): mean of 1 - CSI over lead times and
    ``csi_thresholds``, with a sigmoid in place of the forecast's threshold. Counters the blur that
    shrinks rain areas at long lead times."""
    csi_thresholds: tuple[float, ...] = (0.5, 1.0, 5.0, 10.0)
    """Rain rates (mm/h) of the soft-CSI term."""
    seed: int = 0
    """Seed of the model initialisation, data order, crops and augmentation."""
    val_every: int = 200
    """Validate every this many steps (and at the end)."""
    ckpt_every: int = 200
    """Write last.pt every this many steps (and at exit)."""
    log_every: int = 20
    """Append a training row to metrics.csv every this many steps."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    precision: Precision = "auto"
    """auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16."""
    compile: bool = False
    """Wrap the model in torch.compile."""
    threads: int = 0
    """torch CPU threads (0: all cores)."""
    max_val_windows: int = 256
    """Upper bound on validation windows per validation pass."""
    export: Export = "last"
    """Which weights model.pt holds: last (the final step's) or best (those of the lowest validation
    loss, the weights before the first step included: a run that only overfits gives back its start,
    e.g. S-PROG for a model.base=sprog recipe). best.pt is written either way."""


@dataclass(frozen=True)
class EvalConfig:
    """Verification settings shared by training validation and ``nowcast evaluate``."""

    thresholds: tuple[float, ...] = (0.1, 1.0, 5.0, 10.0)
    """Event thresholds in mm/h."""
    comparison: Comparison = ">="
    """Event definition: value >= threshold (HKO-7, SEVIR) or value > threshold (pySTEPS)."""


@dataclass(frozen=True)
class Config:
    """The whole configuration; stored resolved in run directories and checkpoints."""

    data: DataConfig = field(default_factory=DataConfig)
    transform: TransformConfig = field(default_factory=TransformConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


FIXED_SIZE_KINDS = ("fc_lstm", "cnn_lstm")
"""Model kinds whose weights depend on the frame size (``model.frame_size``)."""


MIN_GRID = 2
"""Fewest pixels along y and along x of a grid to forecast on: Lucas-Kanade and the bilinear advection
need a neighbour in each direction."""


def grid_problem(shape: tuple[int, ...]) -> str | None:
    """Why frames of ``shape`` (..., H, W) are too small for any forecast (``MIN_GRID``), or None."""
    h, w = shape[-2:]
    if min(h, w) >= MIN_GRID:
        return None
    return (
        f"expected a grid of at least {MIN_GRID} x {MIN_GRID} pixels (motion and advection need neighbours), "
        f"found {h} x {w}"
    )


def frame_size_problem(model: ModelConfig, shape: tuple[int, ...]) -> str | None:
    """Why frames of ``shape`` (..., H, W) cannot go through ``model``, or None when they can.

    Any grid smaller than ``MIN_GRID`` pixels along y or x (``grid_problem``); and fc_lstm and cnn_lstm
    have a fixed frame size: the message names the size expected and found.
    """
    small = grid_problem(shape)
    if small:
        return small
    if not model.frame_size or tuple(shape[-2:]) == tuple(model.frame_size):
        return None
    h, w = model.frame_size
    return (
        f"expected frames of {h} x {w} pixels for model '{model.name}' (model.kind {model.kind} flattens each "
        f"frame, so its weights fit that size only), found {shape[-2]} x {shape[-1]}"
    )


def _check_value(where: str, value: Any, annotation: Any, problems: list[str]) -> Any:
    """Coerce ``value`` to ``annotation`` (int -> float, list -> tuple) or record a problem."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_value(where, value, inner[0], problems)
    if origin is Literal:
        if value not in args or not isinstance(value, str):
            problems.append(f"{where}: expected one of {', '.join(args)}, found {value!r}")
        return value
    if origin is tuple:
        items = value if isinstance(value, (list, tuple)) else [value]
        if isinstance(value, str) or value is None:
            items = [] if value is None else [value]
        return tuple(_check_value(f"{where}[{i}]", v, args[0], problems) for i, v in enumerate(items))
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    name = getattr(annotation, "__name__", str(annotation))
    problems.append(f"{where}: expected {name}, found {value!r}")
    return value


def _build(cls: type, raw: Any, where: str, problems: list[str]) -> Any:
    """Build dataclass ``cls`` from a mapping, recording unknown keys and bad values in ``problems``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{where or 'config'}: expected a mapping, found {raw!r}")
        return cls()
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(names)})"
            problems.append(f"unknown key '{path}'{hint}")
            continue
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            kwargs[key] = _build(annotation, value, path, problems)
        else:
            kwargs[key] = _check_value(path, value, annotation, problems)
    try:
        return cls(**kwargs)
    except TypeError:  # a bad value already recorded above
        return cls()


def _validate(cfg: Config, problems: list[str]) -> None:
    """Cross-field and range checks that types alone cannot express."""
    d, m, tr = cfg.data, cfg.model, cfg.train
    for name in ("in_frames", "out_frames", "crop", "val_block", "val_stride"):
        if getattr(d, name) < 1:
            problems.append(f"data.{name}: expected a positive integer, found {getattr(d, name)}")
    for name in ("margin", "workers"):
        if getattr(d, name) < 0:
            problems.append(f"data.{name}: expected an integer >= 0, found {getattr(d, name)}")
    if d.time_step < 0 or (d.time_step == 0 and m.frame != "lagrangian"):
        problems.append(
            f"data.time_step: expected a positive number of seconds (0, the data's own step, needs "
            f"model.frame=lagrangian), found {d.time_step}"
        )
    if m.residual_smoothing < 0 or (m.residual_smoothing > 0 and (not m.residual or m.kind != "convlstm")):
        problems.append(
            "model.residual_smoothing: expected 0, or a positive sigma in pixels with model.residual=true and "
            f"model.kind=convlstm, found {m.residual_smoothing} (residual={m.residual}, kind={m.kind})"
        )
    if m.probmatching == "cdf_lagrangian" and m.frame != "lagrangian":
        problems.append(
            f"model.probmatching: expected cdf_lagrangian only with model.frame=lagrangian, found frame={m.frame}"
        )
    if m.base == "sprog" and m.kind != "convlstm":
        problems.append(f"model.base: expected sprog only with model.kind=convlstm, found kind={m.kind}")
    elif m.base == "sprog" and (
        not m.residual or m.frame != "lagrangian" or d.in_frames < 3 or cfg.transform.kind != "dbz"
    ):
        problems.append(
            "model.base: expected sprog only with model.residual=true, model.frame=lagrangian, data.in_frames >= 3 "
            f"and transform.kind=dbz, found residual={m.residual}, frame={m.frame}, in_frames={d.in_frames}, "
            f"transform.kind={cfg.transform.kind}"
        )
    if m.persistence_input and (m.kind != "convlstm" or m.frame != "lagrangian" or tuple(m.downsample[:1]) != (1,)):
        problems.append(
            "model.persistence_input: expected true only with model.kind=convlstm, model.frame=lagrangian and "
            f"model.downsample[0]=1, found kind={m.kind}, frame={m.frame}, downsample={list(m.downsample)}"
        )
    if m.persistence_history != 1 and not (m.persistence_input and 1 <= m.persistence_history <= d.in_frames):
        problems.append(
            f"model.persistence_history: expected 1, or 2 to data.in_frames={d.in_frames} with "
            f"model.persistence_input=true, found {m.persistence_history} "
            f"(persistence_input={m.persistence_input})"
        )
    if m.persistence_gate and not (m.persistence_input and m.residual):
        problems.append(
            "model.persistence_gate: expected true only with model.persistence_input=true and "
            f"model.residual=true, found persistence_input={m.persistence_input}, residual={m.residual}"
        )
    if m.ground_field and not (m.persistence_input and m.residual):
        problems.append(
            "model.ground_field: expected true only with model.persistence_input=true and "
            f"model.residual=true, found persistence_input={m.persistence_input}, residual={m.residual}"
        )
    if m.frame == "lagrangian" and d.in_frames < 2:
        problems.append(f"data.in_frames: expected >= 2 for a Lagrangian model (motion), found {d.in_frames}")
    if not 0 <= d.val_fraction < 1:
        problems.append(f"data.val_fraction: expected a value in [0, 1), found {d.val_fraction}")
    if d.zr_a <= 0 or d.zr_b <= 0:
        problems.append(f"data.zr_a/zr_b: expected positive numbers, found {d.zr_a}, {d.zr_b}")
    if not m.hidden:
        problems.append("model.hidden: expected at least one level, found none")
    for name in ("kernels", "downsample") if m.kind == "convlstm" else ():  # ConvLSTM levels only
        if len(getattr(m, name)) != len(m.hidden):
            problems.append(
                f"model.{name}: expected one entry per level ({len(m.hidden)}), found {len(getattr(m, name))}"
            )
    if any(k < 1 or k % 2 == 0 for k in m.kernels):
        problems.append(f"model.kernels: expected odd sizes >= 1, found {list(m.kernels)}")
    if any(s < 1 for s in m.downsample) or m.patch < 1 or m.channels < 1:
        problems.append("model.patch/channels/downsample: expected integers >= 1")
    if any(h < 1 for h in m.hidden):
        problems.append(f"model.hidden: expected positive widths, found {list(m.hidden)}")
    if m.kind in ("cnn_lstm", "unet") and (not m.conv_widths or any(w < 1 for w in m.conv_widths)):
        problems.append(
            f"model.conv_widths: expected positive widths for model.kind={m.kind}, found {list(m.conv_widths)}"
        )
    if m.frame_size and m.kind not in FIXED_SIZE_KINDS:
        problems.append(
            f"model.frame_size: expected none for model.kind={m.kind} (any frame size), found {list(m.frame_size)}"
        )
    elif m.frame_size and (len(m.frame_size) != 2 or any(n < 1 for n in m.frame_size)):
        problems.append(f"model.frame_size: expected [height, width] in pixels, found {list(m.frame_size)}")
    _validate_train(tr, problems)
    if tr.csi_weight < 0:
        problems.append(f"train.csi_weight: expected >= 0, found {tr.csi_weight}")
    if tr.csi_weight > 0 and (not tr.csi_thresholds or any(r <= 0 for r in tr.csi_thresholds)):
        problems.append(f"train.csi_thresholds: expected positive rain rates, found {list(tr.csi_thresholds)}")
    if cfg.transform.dbz_max <= cfg.transform.dbz_min:
        problems.append("transform.dbz_max: expected > transform.dbz_min")
    lo, hi = cfg.transform.value_min, cfg.transform.value_max
    if lo is not None and hi is not None and hi <= lo:
        problems.append(f"transform.value_max: expected > transform.value_min, found {hi} <= {lo}")


def _validate_train(tr: TrainConfig, problems: list[str]) -> None:
    """The ``train`` values that would fail only once training runs (optimizer, schedule, intervals)."""
    for name in ("steps", "batch_size"):
        if getattr(tr, name) < 1:
            problems.append(f"train.{name}: expected an integer >= 1, found {getattr(tr, name)}")
    if not (math.isfinite(tr.lr) and tr.lr > 0):
        problems.append(f"train.lr: expected a finite value > 0, found {tr.lr}")
    if not (math.isfinite(tr.weight_decay) and tr.weight_decay >= 0):
        problems.append(f"train.weight_decay: expected a finite value >= 0, found {tr.weight_decay}")
    if not 0 <= tr.min_lr_ratio <= 1:
        problems.append(f"train.min_lr_ratio: expected a value in [0, 1], found {tr.min_lr_ratio}")
    if not (math.isfinite(tr.grad_clip) and tr.grad_clip >= 0):
        problems.append(f"train.grad_clip: expected a finite value >= 0 (0: off), found {tr.grad_clip}")
    if not math.isfinite(tr.csi_weight):
        problems.append(f"train.csi_weight: expected a finite value, found {tr.csi_weight}")
    if tr.warmup_steps < 0:
        problems.append(f"train.warmup_steps: expected an integer >= 0, found {tr.warmup_steps}")
    for name in ("val_every", "ckpt_every", "log_every", "max_val_windows"):
        if getattr(tr, name) < 1:
            problems.append(f"train.{name}: expected an integer >= 1, found {getattr(tr, name)}")
    if tr.threads < 0:
        problems.append(f"train.threads: expected an integer >= 0 (0: all cores), found {tr.threads}")


def lead_times(steps: int | None, out_frames: int) -> int:
    """The number of lead times to forecast: ``steps`` (``--steps``), or None: the ``out_frames`` the
    model was trained for. A NowcastError (exit 2) unless it is at least 1."""
    n = out_frames if steps is None else int(steps)
    if n < 1:
        raise NowcastError(f"--steps: expected a positive number of lead times, found {n}")
    return n


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``section.key=value`` into its key path and YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value, found no '='")
    key, value = text.split("=", 1)
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def config_from_dict(raw: dict[str, Any], source: str = "config", overrides: Sequence[str] = ()) -> Config:
    """Build and validate a ``Config`` from a plain mapping; raise one ``ConfigError`` listing every problem.

    ``overrides``: the ``--set`` items applied to ``raw``; a problem with a key one of them set is
    attributed to that item, not to ``source``."""
    problems: list[str] = []
    cfg = _build(Config, raw, "", problems)
    if not problems:
        _validate(cfg, problems)
    if problems:
        raise ConfigError(_problems_text(problems, source, overrides))
    return cfg


def _problems_text(problems: list[str], source: str, overrides: Sequence[str]) -> str:
    """One line: the problems of ``source``, then each problem of a key set by a ``--set`` item, named by it."""
    set_by = {".".join(parse_override(o)[0]): o for o in overrides}
    parts, rest = [], []
    for problem in problems:
        key = re.match(r"(?:unknown key ')?([\w.]+)", problem)
        item = set_by.get(key.group(1)) if key else None
        if item:
            parts.append(f"--set {item}: {problem}")
        else:
            rest.append(problem)
    if rest:
        parts.insert(0, f"{source}: {len(rest)} problem(s): " + "; ".join(rest))
    return "; ".join(parts)


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (None: all defaults) and apply ``--set`` overrides.

    Raises ConfigError naming the file and listing every unknown key or bad value.
    """
    raw: dict[str, Any] = {}
    source = str(path) if path is not None else "config"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: expected a YAML config file, found {'a directory' if p.is_dir() else 'nothing'}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"{p}: expected YAML, found a syntax error ({first})") from None
        if loaded is None:  # an empty file (or comments only) is a mistake, not "all defaults"
            raise ConfigError(f"{p}: expected a mapping of sections (data, model, train, ...), found an empty file")
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of sections, found {type(loaded).__name__}")
        raw = loaded
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text}: '{k}' is not a section")
        node[keys[-1]] = value
    return config_from_dict(raw, source, overrides)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict (lists, not tuples) for YAML files and checkpoints."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (loadable again by ``load_config``)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


# ----------------------------------------------------------------------------------------------------
# shipped configs and self-description (``nowcast config list/show``, ``--config NAME``)

SHIPPED_CONFIGS = Path(__file__).resolve().parent / "configs"
"""Folder of the configs shipped as package data (``configs/`` of the source tree)."""


def shipped_configs() -> dict[str, Path]:
    """Shipped configs by name (file stem), sorted by name."""
    return {p.stem: p for p in sorted(SHIPPED_CONFIGS.glob("*.yaml"))}


def resolve_config(name_or_path: str | Path) -> Path:
    """Path of a config given as a file path or as the name of a shipped config (``tiny``, ``tiny.yaml``).

    An existing file wins over a shipped config of the same name. Raises ConfigError listing the
    shipped configs when neither exists.
    """
    p = Path(name_or_path)
    if p.exists():
        return p
    shipped = shipped_configs()
    stem = p.name[: -len(".yaml")] if p.name.endswith(".yaml") else p.name
    if p.parent == Path(".") and stem in shipped:
        return shipped[stem]
    raise ConfigError(
        f"{name_or_path}: expected a YAML config file or the name of a shipped config "
        f"({', '.join(shipped) or 'none found'}), found neither"
    )


def config_summary(path: Path) -> str:
    """A config file's leading comment block (its description) on one line, or ''."""
    words: list[str] = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        words += line.lstrip("#").split()
    return " ".join(words)


def field_docs(cls: type) -> dict[str, str]:
    """Docstrings of a dataclass's fields (the string literal under each field), whitespace collapsed.

    Read from the source with ``ast``, so the docstrings in this module are the only description of
    every key.
    """
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _type_name(annotation: Any) -> str:
    """Readable type of a field annotation: ``int``, ``list of float``, ``str or null``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(inner) + (" or null" if type(None) in args else "")
    if origin is tuple:
        return f"list of {_type_name(args[0])}"
    if origin is Literal:
        return f"str, one of {', '.join(args)}"
    return getattr(annotation, "__name__", str(annotation))


def describe_config(cfg: Config, title: str = "") -> str:
    """The resolved ``cfg`` as YAML that ``load_config`` reads back, every key preceded by a comment
    giving its type, its meaning (the field docstring) and, for a few keys, the valid choices."""
    lines = [f"# {title}"] if title else []
    values = config_to_dict(cfg)
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        cls = hints[section.name]
        lines.append(f"{section.name}:  # {' '.join((cls.__doc__ or '').split())}")
        docs = field_docs(cls)
        section_hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = _type_name(section_hints[f.name])
            lines.append(f"  # {f.name} ({kind}): {docs.get(f.name, '')}")
            dumped = yaml.safe_dump({f.name: values[section.name][f.name]}, default_flow_style=True, width=10**6)
            lines.append("  " + dumped.strip()[1:-1])
    return "\n".join(lines) + "\n"

"""Rolling verification of the model against the baselines over a radar archive (DESIGN section 8).

Every forecast time t0 of the archive (every ``stride`` frames of each gap-free segment, with
``in_frames`` observed frames up to t0 and ``steps`` observed frames after it) is one *case*. For each
case the model and every baseline forecast from the same input frames, and each forecast is compared
with the observed frames at t0 + k step, k = 1..steps, through ``verification.metrics`` (the same code as
training validation). Counts and sums are accumulated case by case, so memory does not grow with the
number of cases; frames are read from the files as the rolling window reaches them.

- ``run_evaluation``: the verification itself, on an opened ``io.Archive``; returns an ``Evaluation``.
- ``verification.reports``: the files and the printed table of an ``Evaluation`` (``verification.results``).
- ``evaluate_files``: all of it for the command line (open files, load the checkpoint, run, write, table).
- ``verification.ensembles``: with ``--members N``, the ensembles of each case, their probabilistic scores
  and their means as deterministic methods.

Fair comparison: by default a pixel is scored, for every method, only where the observation and *all*
forecasts have data (``common_mask``). Extrapolation has no value where rain comes from outside the
domain; without a common mask it would be excused exactly where persistence and the model are
penalised. With ``common_mask=False`` each method is scored on its own valid pixels (then the model's
scores equal training validation's on the same windows even when extrapolation runs alongside).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import xarray as xr

from nowcast.nowcasts import SPROG_AR_ORDER, SPROG_LEVELS, resolve_motion_perturbation
from nowcast.nowcasts import baselines as bl
from nowcast.verification import ensembles as ens
from nowcast.verification import metrics
from nowcast.config import EvalConfig, frame_size_problem, grid_problem, lead_times
from nowcast.errors import ConfigError, InputError, NowcastError, OutputError
from nowcast.io import Archive, data_time_step, iso_time, open_archive, pixel_size_km
from nowcast.leads import check_horizon, forecast_steps, lead_text
from nowcast.verification.reports import format_table, lead_indices, table_threshold, write_reports
from nowcast.verification.results import Evaluation, Example, merge_evaluations

if TYPE_CHECKING:
    from nowcast.runtime import DistInfo

log = logging.getLogger(__name__)

MODEL = "model"
"""Method name of the neural network in reports (the checkpoint is named in ``summary.json``)."""
EXAMPLE_LEADS = 4
"""Lead times shown in the example-case figure."""
BASELINE_FRAMES = SPROG_AR_ORDER + 1
"""Input frames of a case without a model: what the methods that learn nothing use (Lucas-Kanade's last 3
frames, AR(2)'s 3), so that a short file (13 frames) is scorable by them and the ensembles."""
_BATCH_VALUES = {"cpu": 2**25, "cuda": 2**27}
"""Values (float32) of input + observed + forecast frames per model batch: bounds memory per device."""


# ----------------------------------------------------------------------------------------------------
# the rolling verification


class SegmentFrames:
    """Frames of one segment read on demand as (C, H, W) float32, forgetting those behind the window."""

    def __init__(self, segment: xr.DataArray) -> None:
        self.segment = segment
        self.cache: dict[int, np.ndarray] = {}

    def get(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start .. stop - 1`` as (stop - start, C, H, W)."""
        for i in range(start, stop):
            if i not in self.cache:
                frame = np.asarray(self.segment.isel(time=i).values, dtype=np.float32)
                self.cache[i] = frame[None] if frame.ndim == 2 else frame
        return np.stack([self.cache[i] for i in range(start, stop)])

    def forget_before(self, index: int) -> None:
        for i in [i for i in self.cache if i < index]:
            del self.cache[i]


def _auto_batch(device: Any, frame_values: int, in_frames: int, steps: int) -> int:
    """Cases per model call so that inputs, observations and forecasts of a batch stay within budget."""
    budget = _BATCH_VALUES["cuda" if str(device).startswith("cuda") else "cpu"]
    return int(np.clip(budget // max(1, frame_values * (in_frames + 2 * steps)), 1, 16))


def score_case(ev: Evaluation, fc: dict[str, np.ndarray], observed: np.ndarray, common_mask: bool) -> None:
    """Add one case (forecasts and observations (steps, C, H, W) mm/h) to every method's scores."""
    if common_mask:  # score every method where the observation and all forecasts have data
        observed = ens.common_observed(observed, fc)
    for m in ev.methods:
        metrics.accumulate(ev.scores[m], fc[m], observed, batched=False)
        if m in ev.fss:
            metrics.accumulate(ev.fss[m], fc[m], observed, batched=False)


def _keep_example(
    ev: Evaluation,
    t0: str,
    seg: xr.DataArray,
    last: np.ndarray,
    observed: np.ndarray,
    fc: dict[str, np.ndarray],
    leads: list[int],
) -> None:
    """Keep this case as ``ev.example`` if its frame at t0 (``last``, (H, W)) has more rain than the kept one."""
    rain = float(np.nansum(last)) if np.isfinite(last).any() else -1.0
    if ev.example is not None and rain <= ev.example.rain:
        return
    ev.example = Example(
        t0=t0,
        source_file=str(seg.attrs.get("source_file", "")),
        rain=rain,
        leads=leads,
        observed=observed[leads, 0].copy(),
        forecasts={m: fc[m][leads, 0].copy() for m in ev.methods},
        grid={k: seg[k].variable for k in ("x", "y") if k in seg.coords and seg[k].ndim == 1},
    )


@dataclass(frozen=True)
class Verification:
    """What ``run_evaluation`` verifies and how: the cases, the methods beside the models, the scores."""

    in_frames: int
    """Observed frames before t0 (the last one is t0)."""
    steps: int
    """Lead times verified after t0."""
    baselines: tuple[str, ...] = ("persistence", "extrapolation")
    """Names for ``nowcasts.baselines.get_method`` (and ``steps`` with an ensemble); checked before any frame is read."""
    thresholds: tuple[float, ...] = EvalConfig.thresholds
    """Event thresholds (mm/h)."""
    comparison: str = ">="
    """Event definition: ">=" or ">"."""
    stride: int = 1
    """Frames between consecutive forecast times within a segment."""
    fss_scales: tuple[int, ...] = ()
    """FSS window sizes (pixels); none: no FSS."""
    fss_thresholds: tuple[float, ...] = (1.0,)
    """Thresholds FSS is computed for."""
    common_mask: bool = True
    """Score every method on the same pixels (where the observation and all forecasts have data)."""
    batch_size: int | None = None
    """Cases per model call; None: as many as fit a fixed memory budget (1..16)."""
    device: str = "cpu"
    """Where the models run (``runtime.select_device``)."""
    precision: str = "fp32"
    """How they run (``runtime.resolve_precision``)."""
    progress: bool = False
    """Show a tqdm bar (the caller decides: only when stderr is a terminal)."""
    rank: int = 0
    """This process's share of the cases (``rank_share``) of ``world``; ``merge_evaluations`` of the shares
    equals the evaluation of all cases."""
    world: int = 1
    ensemble: ens.EnsembleEvaluation | None = None
    """Members and seed of the ensembles (``verification.ensembles``): ours always, pySTEPS STEPS when
    ``steps`` is among the baselines; probabilistic scores in ``Evaluation.prob``, the ensemble means as
    methods ``<name>_mean``. None: no ensemble (``steps`` is then an error)."""


def run_evaluation(
    archive: Archive,
    v: Verification,
    models: dict[str, tuple[Any, Any]] | None = None,
    report: dict[str, Any] | None = None,
) -> Evaluation:
    """Verify ``models`` (method name -> (model in eval mode, its ``Transform``)) and ``v.baselines`` on every
    case of ``archive`` (gap-free segments at the models' time step, ``io.open_archive``; windows never cross
    segments), each forecasting the same cases and scored on the same pixels. ``report``: the settings
    recorded in ``summary.json``. Returns pooled scores per method, wall times, cases and the example case."""
    nets = dict(models or {})
    names, ens_methods, methods = _methods(v, nets)
    time_step = archive.time_step  # seconds; derived from the segments, so read once
    lead_min = [(k + 1) * time_step / 60.0 for k in range(v.steps)]
    scores = {m: metrics.init_scores(v.steps, v.thresholds, v.comparison) for m in methods}
    fss = (
        {m: metrics.init_scores(v.steps, v.fss_thresholds, v.comparison, v.fss_scales) for m in methods}
        if v.fss_scales
        else {}
    )
    ev = Evaluation(methods, scores, fss, lead_min, dict(report or {}), list(archive.files), list(archive.skipped))
    n_members = v.ensemble.members if v.ensemble is not None else 0
    ev.prob = ens.init_prob(ens_methods, v.steps, v.thresholds, n_members, v.comparison)
    cases, total = _cases(archive, v, methods)
    timer = _Timer(methods)
    bar = None
    if v.progress:
        from nowcast.runtime import progress_bar

        bar = progress_bar(total, "case")
    report_every = -(-total // 10) if total >= 20 else total  # log lines: every 10 % of a long run
    done = 0
    try:
        for s, starts in cases:
            for _case in _verify_segment(ev, archive, s, starts, v, nets, names, ens_methods, timer):
                done += 1
                if bar is not None:
                    bar.update(1)
                elif done % report_every == 0 or done == total:
                    log.info("verified %d of %d forecast times", done, total)
    finally:
        if bar is not None:
            bar.close()
    ev.n_cases = done
    ev.wall_s, ev.cpu_s = timer.wall, timer.cpu
    return ev


def _methods(v: Verification, nets: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """The baselines to run, the ensembles to run, and every method in report order; NowcastError for
    settings that cannot be verified."""
    if v.stride < 1:
        raise NowcastError(f"--stride: expected a positive number of frames, found {v.stride}")
    lead_times(v.steps, v.steps)  # the one --steps >= 1 check
    if not v.thresholds:
        raise NowcastError("--thresholds: expected at least one threshold in mm/h, found none")
    if not nets and not v.baselines:
        raise NowcastError("evaluate: expected a model or at least one baseline to verify, found neither")
    names = [str(b).strip().lower() for b in v.baselines]
    if len(set(names)) != len(names):
        raise NowcastError(f"--baselines: expected each method once, found {', '.join(names)}")
    names, ens_methods = ens.split_baselines(names, v.ensemble)
    ens_methods = _with_centred(ens_methods, nets)
    for name in names:
        bl.get_method(name)
    if nets and v.in_frames < 1:
        raise NowcastError(f"in_frames: expected a positive number, found {v.in_frames}")
    if "extrapolation" in names and v.in_frames < 2:
        raise NowcastError(f"extrapolation: expected at least 2 input frames, found in_frames={v.in_frames}")
    if ens_methods and v.in_frames < 3:
        raise NowcastError(f"--members: an ensemble needs at least 3 input frames, found in_frames={v.in_frames}")
    means = [ens.mean_name(m) for m in ens_methods]
    clash = [n for n in nets if n in names + means + ens_methods]
    if clash:
        raise NowcastError(f"--name: expected model names other than the baselines', found {', '.join(clash)}")
    return names, ens_methods, list(nets) + names + means


def _with_centred(ens_methods: list[str], nets: dict[str, Any]) -> list[str]:
    """``ens_methods`` and, when there are any, ours centred on each model that can centre one
    (``ensembles.centred_name``): what the model's learned part adds to the ensemble."""
    if not ens_methods:
        return ens_methods
    from nowcast.forecast import centre_problem

    return ens_methods + [ens.centred_name(n) for n, (net, tr) in nets.items() if centre_problem(net, tr) is None]


def _cases(archive: Archive, v: Verification, methods: list[str]) -> tuple[list[tuple[int, list[int]]], int]:
    """This rank's forecast times: (segment, window starts) pairs, and how many there are."""
    window = v.in_frames + v.steps
    cases = [(s, list(range(0, seg.sizes["time"] - window + 1, v.stride))) for s, seg in enumerate(archive.segments)]
    total = sum(len(starts) for _, starts in cases)
    if total == 0:
        lengths = ", ".join(str(seg.sizes["time"]) for seg in archive.segments)
        raise NowcastError(
            f"{', '.join(archive.files)}: expected a gap-free run of at least {window} frames "
            f"({v.in_frames} in + {v.steps} lead times), found segments of {lengths} frames"
        )
    log.info(
        "verifying %s on %d forecast times (%d in, %d lead times of %g min) from %d file(s)",
        ", ".join(methods),
        total,
        v.in_frames,
        v.steps,
        archive.time_step / 60,
        len(archive.files),
    )
    if v.world > 1:
        cases = rank_share(cases, v.rank, v.world)
        share = sum(len(starts) for _, starts in cases)
        log.info("rank %d of %d verifies %d of the %d forecast times", v.rank, v.world, share, total)
        total = share
    return cases, total


class _Timer:
    """Wall-clock and process CPU seconds per method (and ``read``, ``scoring``)."""

    def __init__(self, methods: list[str]) -> None:
        self.wall = {m: 0.0 for m in methods} | {"read": 0.0, "scoring": 0.0}
        self.cpu = dict.fromkeys(self.wall, 0.0)

    @contextlib.contextmanager
    def __call__(self, part: str) -> Iterator[None]:
        tick, tock = time.perf_counter(), time.process_time()
        yield
        self.wall[part] += time.perf_counter() - tick
        self.cpu[part] += time.process_time() - tock


def _verify_segment(
    ev: Evaluation,
    archive: Archive,
    s: int,
    starts: list[int],
    v: Verification,
    nets: dict[str, tuple[Any, Any]],
    names: list[str],
    ens_methods: list[str],
    timed: _Timer,
) -> Iterator[int]:
    """Verify the cases of segment ``s`` starting at ``starts``, the models a batch at a time; yields
    each case's start once it is scored."""
    from nowcast.forecast import forecast_and_centre

    seg = archive.segments[s]
    frames = SegmentFrames(seg)
    times = seg["time"].values
    window = v.in_frames + v.steps
    batch = v.batch_size or _auto_batch(v.device, int(np.prod(seg.shape[1:])), v.in_frames, v.steps)
    show = lead_indices(v.steps, EXAMPLE_LEADS)
    seed = v.ensemble.seed if v.ensemble is not None else 0
    n_members = v.ensemble.members if v.ensemble is not None else 0
    km_per_px, step_min = pixel_size_km(seg), int(seg.attrs["time_step"]) / 60.0  # for bps
    motion = resolve_motion_perturbation(v.ensemble.motion_perturbation, km_per_px) if v.ensemble else "none"
    noise_adjustment = v.ensemble.noise_adjustment if v.ensemble is not None else "none"
    initial = v.ensemble.initial_perturbation if v.ensemble is not None else "none"
    for b0 in range(0, len(starts), batch):
        chunk = starts[b0 : b0 + batch]
        frames.forget_before(chunk[0])
        with timed("read"):
            inputs = np.stack([frames.get(a, a + v.in_frames) for a in chunk])  # (B, in, C, H, W)
            observed = np.stack([frames.get(a + v.in_frames, a + window) for a in chunk])  # (B, steps, C, H, W)
        pred: dict[str, np.ndarray] = {}
        centres: dict[str, np.ndarray | None] = {}  # method -> (B, steps, H, W) dBR: the centred ensembles'
        for name, (net, tr) in nets.items():
            centred = ens.centred_name(name)
            with timed(name):
                pred[name], centres[centred] = forecast_and_centre(
                    net, tr, inputs, v.steps, device=v.device, precision=v.precision, time_step=archive.time_step,
                    centre=centred in ens_methods,
                )  # fmt: skip
        for i, a in enumerate(chunk):
            fc: dict[str, np.ndarray] = {name: p[i] for name, p in pred.items()}  # (steps, C, H, W)
            for name in names:
                with timed(name):
                    fc[name] = bl.get_method(name)(inputs[i], v.steps)
            members: dict[str, np.ndarray] = {}  # (M, steps, 1, H, W), timed as their mean's method
            for name in ens_methods:
                centre = centres[name][i] if centres.get(name) is not None else None  # None: the head is zero
                if name not in (ens.ENSEMBLE, ens.STEPS) and centre is None and ens.ENSEMBLE in members:
                    # centred on a model that adds nothing: ours, member for member (not made twice)
                    members[name] = members[ens.ENSEMBLE]
                    fc[ens.mean_name(name)] = fc[ens.mean_name(ens.ENSEMBLE)]
                    continue
                with timed(ens.mean_name(name)):
                    members[name] = ens.case_members(
                        ens.STEPS if name == ens.STEPS else ens.ENSEMBLE,
                        inputs[i],
                        v.steps,
                        n_members,
                        ens.case_seed(seed, s, a),
                        motion,
                        km_per_px,
                        step_min,
                        noise_adjustment,
                        centre,
                        v.device,
                        initial,
                    )
                    fc[ens.mean_name(name)] = ens.ensemble_mean(members[name])
            with timed("scoring"):
                score_case(ev, fc, observed[i], v.common_mask)
                ens.score_members(ev.prob, members, observed[i], fc, v.common_mask)
            t0 = iso_time(times[a + v.in_frames - 1])
            ev.first_t0, ev.last_t0 = ev.first_t0 or t0, t0
            _keep_example(ev, t0, seg, inputs[i, -1, 0], observed[i], fc, show)
            yield a


def rank_share(cases: list[tuple[int, list[int]]], rank: int, world: int) -> list[tuple[int, list[int]]]:
    """Rank ``rank``'s share of ``cases`` ((segment, window starts) pairs, in archive order).

    The flattened cases are cut into ``world`` contiguous blocks whose sizes differ by at most one, so
    each rank reads mostly its own frames and the blocks, in rank order, are the cases in order.
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank: expected 0 <= rank < {world}, found {rank}")
    flat = [(s, a) for s, starts in cases for a in starts]
    lo, hi = len(flat) * rank // world, len(flat) * (rank + 1) // world
    out: dict[int, list[int]] = {}
    for s, a in flat[lo:hi]:
        out.setdefault(s, []).append(a)
    return list(out.items())


def _gather_on_main(ev: Evaluation, info: DistInfo) -> Evaluation | None:
    """Every rank's share merged on rank 0 (``merge_evaluations``); None on the other ranks."""
    import torch.distributed as dist

    if not info.distributed:
        return ev
    parts: list[Any] = [None] * info.world
    dist.all_gather_object(parts, ev)  # as training validation does; NCCL and gloo alike
    dist.destroy_process_group()
    return merge_evaluations(parts) if info.main else None


# ----------------------------------------------------------------------------------------------------
# the command


def _method_names(paths: Sequence[str | Path | None], names: Sequence[str]) -> list[str]:
    """Method names of the checkpoints: ``names`` if given; one checkpoint: ``MODEL``; several: each
    named after its run (the checkpoint's directory, e.g. ``runs/convlstm/model.pt`` -> ``convlstm``;
    the file's stem when it has none). Raises NowcastError for a wrong count or a name used twice."""
    if names and len(names) != len(paths):
        raise NowcastError(f"--name: expected one name per --model ({len(paths)}), found {len(names)}")
    if names:
        out = [str(n).strip() for n in names]
    elif len(paths) == 1:
        out = [MODEL]
    else:
        out = [Path(p).parent.name or Path(p).stem for p in map(Path, paths)]  # several: never None
    twice = sorted({n for n in out if out.count(n) > 1 or not n})
    if twice:
        raise NowcastError(
            f"--model: expected a distinct name per checkpoint, found {', '.join(repr(n) for n in twice)} more than "
            + (
                "once; give distinct --name values"
                if names
                else "once (runs with the same directory name); give each a --name"
            )
        )
    return out


@dataclass(frozen=True)
class EvaluateSettings:
    """``nowcast evaluate``: which checkpoints and baselines, on what horizon, scored how, written where."""

    model: str | Path | tuple[str | Path, ...] | None = None
    """Checkpoint(s); None: the model shipped with nowcast."""
    names: tuple[str, ...] = ()
    """Method name of each checkpoint in the reports (default: ``model``, or each run's directory name)."""
    no_model: bool = False
    """Baselines only."""
    baselines: tuple[str, ...] = ("persistence", "extrapolation")
    thresholds: tuple[float, ...] | None = None
    """Event thresholds (mm/h); None: the (first) checkpoint's ``eval.thresholds``."""
    comparison: str = ">="
    stride: int = 1
    """Frames between forecast times."""
    steps: int | None = None
    """Lead times, counted in frames; not with ``lead_s``."""
    lead_s: int | None = None
    """Horizon in seconds (``--lead``); neither: the next hour (``leads.forecast_steps``)."""
    out_dir: str | Path = "evaluation"
    variable: str | None = None
    fss_scales: tuple[int, ...] = ()
    common_mask: bool = True
    plots: bool = True
    batch_size: int | None = None
    device: str = "auto"
    precision: str = "auto"
    threads: int = 0
    """torch CPU threads; 0: ``$OMP_NUM_THREADS``, else the free cores (shared among torchrun ranks)."""
    ensemble: ens.EnsembleEvaluation | None = None


@dataclass
class _Models:
    """The checkpoints of an evaluation, loaded: what they forecast with and what the reports say of them."""

    nets: dict[str, tuple[Any, Any]]
    """Method name -> (model on the device, transform)."""
    configs: dict[str, Any]
    facts: dict[str, dict[str, Any]]
    """Method name -> checkpoint, SHA-256, model name."""
    time_step: int | None
    device: str = "cpu"
    precision: str = "fp32"


def _check_settings(s: EvaluateSettings) -> None:
    """Raise (one line) before any work for thresholds that are not finite and > 0, or a report
    directory that is an existing file or cannot be created or written."""
    bad = [t for t in s.thresholds or () if not (math.isfinite(t) and t > 0)]
    if bad:
        raise ConfigError(f"--thresholds: expected finite rain rates > 0 (mm/h), found {', '.join(map(str, bad))}")
    out = Path(s.out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out}: expected a report directory, found an existing file")
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        what = "not a directory" if not existing.is_dir() else "a directory that cannot be written"
        raise OutputError(f"--out {out}: expected a writable report directory, found {existing} is {what}")


def evaluate_files(inputs: Sequence[str | Path], s: EvaluateSettings = EvaluateSettings()) -> str:
    """``nowcast evaluate``: verify checkpoints and baselines on radar files, write the reports into
    ``s.out_dir`` and return the printed table (empty on torchrun ranks other than 0)."""
    from nowcast.config import Config

    if not inputs:
        raise NowcastError("evaluate: expected at least one radar file, found none")
    _check_settings(s)
    check_horizon(s.steps, s.lead_s)
    deterministic, ens_methods = ens.split_baselines(s.baselines, s.ensemble)  # steps without members: an error
    for name in deterministic:  # unknown names fail before any work
        bl.get_method(name)
    import torch

    from nowcast.runtime import setup_distributed, select_device

    # the models run on --device, and so does our ensemble (with --no-model too); a baseline alone, on the CPU
    on_device = not s.no_model or s.ensemble is not None
    torch_device = select_device(s.device) if on_device else torch.device("cpu")
    info = setup_distributed(torch_device)  # under torchrun: gloo on the CPU, NCCL on CUDA
    loaded = _load_models(inputs, s, torch_device)
    first = next(iter(loaded.configs), None)
    cfg = loaded.configs[first] if first else Config()  # without a model: the default frames
    time_step = (
        loaded.time_step if first else data_time_step([str(p) for p in inputs], s.variable) or cfg.data.time_step
    )
    d = cfg.data
    in_frames = d.in_frames if first else BASELINE_FRAMES  # without a model, only the baselines' inputs
    steps = forecast_steps(s.steps, s.lead_s, time_step, d.out_frames, in_frames_only=cfg.transform.kind == "minmax")
    variable = s.variable if s.variable is not None else d.variable
    thresholds = tuple(cfg.eval.thresholds if s.thresholds is None else s.thresholds)
    archive = open_archive(
        [str(p) for p in inputs],
        time_step=time_step,
        variable=variable,
        units=d.units,
        zr_a=d.zr_a,
        zr_b=d.zr_b,
        min_frames=in_frames + steps,
        too_short=functools.partial(_too_short, in_frames=in_frames, steps=steps, time_step=time_step),
    )
    for seg in archive.segments:  # a grid too small for any method; fc_lstm, cnn_lstm: frames of their size only
        problems = [grid_problem(seg.shape)] + [frame_size_problem(c.model, seg.shape) for c in loaded.configs.values()]
        if s.ensemble is not None and s.ensemble.motion_perturbation == "bps" and pixel_size_km(seg) is None:
            problems.append(
                "--motion-perturbation bps: expected x/y coordinates in m or km or lat/lon in degrees (the pixel "
                "size), found none; "
                "use --motion-perturbation none"
            )
        problem = next((p for p in problems if p), None)
        if problem:
            raise InputError(f"{seg.attrs.get('source_file', inputs[0])}: {problem}")
    k = table_threshold(thresholds) if thresholds else 0
    v = Verification(
        in_frames=in_frames,
        steps=steps,
        baselines=tuple(s.baselines),
        thresholds=thresholds,
        comparison=s.comparison,
        stride=s.stride,
        fss_scales=tuple(s.fss_scales),
        fss_thresholds=(float(thresholds[k]),) if thresholds else (1.0,),
        common_mask=s.common_mask,
        batch_size=s.batch_size,
        device=loaded.device,
        precision=loaded.precision,
        progress=info.main and sys.stderr.isatty() and logging.getLogger("nowcast").getEffectiveLevel() <= logging.INFO,
        rank=info.rank,
        world=info.world,
        ensemble=s.ensemble,
    )
    motions = [  # the ensembles' motion perturbation per file, auto resolved on its grid
        resolve_motion_perturbation(s.ensemble.motion_perturbation, pixel_size_km(seg)) if s.ensemble else "none"
        for seg in archive.segments
    ]
    ens_methods = _with_centred(ens_methods, loaded.nets)
    report = _report_settings(v, loaded, time_step, variable, ens_methods, info.world, motions)
    threads = s.threads
    if info.world > 1 and threads <= 0:  # the free cores shared among the ranks
        from nowcast.runtime import cpu_threads

        threads = max(1, cpu_threads() // info.world)
    with _torch_threads(loaded.device if loaded.nets or ens_methods else None, threads) as n_threads:
        report["threads"] = n_threads
        ev = run_evaluation(archive, v, loaded.nets, report)
    merged = _gather_on_main(ev, info)
    if merged is None:  # not rank 0: rank 0 alone writes the reports
        return ""
    write_reports(merged, s.out_dir, plots=s.plots)
    return format_table(merged, s.out_dir)


def _load_models(inputs: Sequence[str | Path], s: EvaluateSettings, torch_device: Any) -> _Models:
    """The checkpoints of ``s`` (none with ``no_model``) on ``torch_device``, checked to forecast the same
    cases: the same input frames at the same time step."""
    if s.no_model:
        return _Models({}, {}, {}, None, str(torch_device))
    from nowcast.models.checkpoint import load_model
    from nowcast.runtime import resolve_precision
    from nowcast.transforms import Transform

    if s.model is None or isinstance(s.model, (str, Path)):
        paths: list[str | Path | None] = [s.model]  # None: the shipped model
    else:
        paths = list(s.model) or [None]
    out = _Models({}, {}, {}, None, str(torch_device), resolve_precision(s.precision, torch_device))
    steps_of: dict[str, int | None] = {}
    for name, path in zip(_method_names(paths, s.names), paths):
        loaded = load_model(path)
        c = loaded.config
        out.configs[name] = c
        out.facts[name] = {"checkpoint": str(loaded.path), "sha256": loaded.sha256, "name": c.model.name}
        out.nets[name] = (loaded.model.to(torch_device), Transform.from_config(c))
        steps_of[name] = c.data.time_step or data_time_step([str(p) for p in inputs], s.variable or c.data.variable)
    first, *others = list(out.configs)
    out.time_step = steps_of[first]
    if out.time_step is None:
        raise NowcastError(f"{inputs[0]}: expected a radar file whose time step can be read, found none")
    for name in others:
        c, ref = out.configs[name], out.configs[first]
        if c.data.in_frames != ref.data.in_frames or steps_of[name] != out.time_step:
            raise NowcastError(
                f"{out.facts[name]['checkpoint']}: expected {ref.data.in_frames} input frames at {out.time_step} s "
                f"like {out.facts[first]['checkpoint']}, so that all models forecast the same cases, found "
                f"{c.data.in_frames} frames at {steps_of[name]} s"
            )
    return out


def _report_settings(
    v: Verification,
    loaded: _Models,
    time_step: int,
    variable: str | None,
    ens_methods: list[str],
    world: int,
    motions: list[str],
) -> dict[str, Any]:
    """What ``summary.json`` records of the evaluation's settings."""
    first = next(iter(loaded.facts.values()), None)
    baselines = [b.lower() for b in v.baselines]
    return {
        "model": first,
        "models": loaded.facts or None,
        "baselines": list(v.baselines),
        "in_frames": v.in_frames,
        "steps": v.steps,
        "time_step_s": time_step,
        "stride": v.stride,
        "thresholds": [float(t) for t in v.thresholds],
        "comparison": v.comparison,
        "common_mask": v.common_mask,
        "fss_scales_px": [int(x) for x in v.fss_scales],
        "fss_thresholds": list(v.fss_thresholds) if v.fss_scales else [],
        "variable": variable,
        "device": v.device if loaded.nets or v.ensemble is not None else None,
        "precision": v.precision if loaded.nets else None,
        "extrapolation": "pysteps Lucas-Kanade on the last 3 frames in dBR, semi-Lagrangian advection of mm/h"
        if "extrapolation" in baselines
        else None,
        "sprog": f"pysteps S-PROG in dBR on the same motion, {SPROG_LEVELS} cascade levels, AR({SPROG_AR_ORDER})"
        if "sprog" in baselines
        else None,
        "ensemble": ens.ensemble_settings(v.ensemble, ens_methods, motions),
        "ranks": world,
    }


def _too_short(longest: int, *, in_frames: int, steps: int, time_step: int) -> str:
    """The error of a file whose longest run (frames) is too short for the horizon asked, with what fits."""
    asked = (
        f"expected a run of at least {in_frames + steps} frames {time_step} s apart ({in_frames} input frames + "
        f"{steps} lead times of {time_step / 60:g} min), found at most {longest}"
    )
    fit = longest - in_frames
    if fit < 1:
        return f"{asked}: too short for even one lead time, which needs {in_frames + 1} frames"
    return f"{asked}: --steps {fit} or --lead {lead_text(fit * time_step)} is the most it allows"


@contextlib.contextmanager
def _torch_threads(device: str | None, threads: int = 0) -> Iterator[int | None]:
    """On the CPU, ``threads`` torch threads (0: the free cores, ``runtime.cpu_threads``) while inside;
    the previous number is restored after (why not all cores: ``docs/performance.md``).
    """
    if device is None or not device.startswith("cpu"):
        yield None
        return
    import torch

    from nowcast.runtime import cpu_threads, set_threads

    before = torch.get_num_threads()
    try:
        yield set_threads(cpu_threads(threads))
    finally:
        torch.set_num_threads(before)


__all__ = [
    "EvaluateSettings",
    "SegmentFrames",
    "Verification",
    "evaluate_files",
    "rank_share",
    "run_evaluation",
    "score_case",
]

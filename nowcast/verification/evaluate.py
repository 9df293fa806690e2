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
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import xarray as xr

from nowcast.verification import ensembles as ens
from nowcast.verification import metrics
from nowcast.config import EvalConfig, frame_size_problem, lead_times
from nowcast.errors import InputError, NowcastError
from nowcast.io import Archive, data_time_step, iso_time, open_archive
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


def run_evaluation(
    archive: Archive,
    *,
    in_frames: int,
    steps: int,
    model: Any = None,
    transform: Any = None,
    models: dict[str, tuple[Any, Any]] | None = None,
    baselines: Sequence[str] = ("persistence", "extrapolation"),
    thresholds: Sequence[float] = EvalConfig.thresholds,
    comparison: str = ">=",
    stride: int = 1,
    fss_scales: Sequence[int] = (),
    fss_thresholds: Sequence[float] = (1.0,),
    common_mask: bool = True,
    batch_size: int | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    progress: bool = False,
    settings: dict[str, Any] | None = None,
    rank: int = 0,
    world: int = 1,
    ensemble: ens.EnsembleEvaluation | None = None,
) -> Evaluation:
    """Verify the model (if given) and ``baselines`` on every case of ``archive``.

    Parameters
    ----------
    archive
        Gap-free segments at the model's time step (``io.open_archive``); windows never cross segments.
    in_frames, steps
        Observed frames before t0 (the last one is t0) and lead times verified after it.
    model, transform
        A model in eval mode and its ``Transform`` (``models.checkpoint.model_from_checkpoint``), reported as
        ``MODEL``; None: baselines only.
    models
        More models: method name -> (model, transform), reported under their names after ``model``,
        each forecasting the same cases and scored on the same pixels.
    baselines
        Names for ``nowcasts.baselines.get_method``; checked before any frame is read.
    thresholds, comparison
        Event thresholds (mm/h) and definition (">=" or ">").
    stride
        Frames between consecutive forecast times within a segment.
    fss_scales, fss_thresholds
        FSS window sizes (pixels) and the thresholds FSS is computed for; no scales: no FSS.
    common_mask
        Score every method on the same pixels (where the observation and all forecasts have data).
    batch_size
        Cases per model call; None: as many as fit a fixed memory budget (1..16).
    device, precision
        Where and how the model runs (``runtime.select_device`` / ``resolve_precision``).
    progress
        Show a tqdm bar (the caller decides: only when stderr is a terminal).
    rank, world
        Verify only this process's share of the cases (``rank_share``); ``merge_evaluations`` of the
        ``world`` shares equals the evaluation of all cases.
    ensemble
        Members and seed of the ensembles (``verification.ensembles``): ours always, pySTEPS STEPS when
        ``steps`` is among the baselines; probabilistic scores in ``Evaluation.prob``, the ensemble
        means as methods ``<name>_mean``. None: no ensemble (``steps`` is then an error).

    Returns
    -------
    Evaluation
        Pooled scores per method, wall times, number of cases and the example case.
    """
    from nowcast.forecast import forecast_array
    from nowcast.nowcasts import baselines as bl

    if stride < 1:
        raise NowcastError(f"--stride: expected a positive number of frames, found {stride}")
    steps = lead_times(steps, steps)  # the one --steps >= 1 check
    if not thresholds:
        raise NowcastError("--thresholds: expected at least one threshold in mm/h, found none")
    nets = ({MODEL: (model, transform)} if model is not None else {}) | dict(models or {})
    if not nets and not baselines:
        raise NowcastError("evaluate: expected a model or at least one baseline to verify, found neither")
    names = [str(b).strip().lower() for b in baselines]
    if len(set(names)) != len(names):
        raise NowcastError(f"--baselines: expected each method once, found {', '.join(names)}")
    names, ens_methods = ens.split_baselines(names, ensemble)
    methods_fn: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {n: bl.get_method(n) for n in names}
    if nets and in_frames < 1:
        raise NowcastError(f"in_frames: expected a positive number, found {in_frames}")
    if names and "extrapolation" in names and in_frames < 2:
        raise NowcastError(f"extrapolation: expected at least 2 input frames, found in_frames={in_frames}")
    if ens_methods and in_frames < 3:
        raise NowcastError(f"--members: an ensemble needs at least 3 input frames, found in_frames={in_frames}")
    means = [ens.mean_name(m) for m in ens_methods]

    clash = [n for n in nets if n in names + means]
    if clash:
        raise NowcastError(f"--name: expected model names other than the baselines', found {', '.join(clash)}")
    methods = list(nets) + names + means
    time_step = archive.time_step  # seconds; derived from the segments, so read once
    lead_min = [(k + 1) * time_step / 60.0 for k in range(steps)]
    scores = {m: metrics.init_scores(steps, thresholds, comparison) for m in methods}
    fss = {m: metrics.init_scores(steps, fss_thresholds, comparison, fss_scales) for m in methods} if fss_scales else {}
    wall = {m: 0.0 for m in methods} | {"read": 0.0, "scoring": 0.0}
    cpu = dict.fromkeys(wall, 0.0)

    @contextlib.contextmanager
    def timed(part: str) -> Iterator[None]:
        tick, tock = time.perf_counter(), time.process_time()
        yield
        wall[part] += time.perf_counter() - tick
        cpu[part] += time.process_time() - tock

    ev = Evaluation(methods, scores, fss, lead_min, dict(settings or {}), list(archive.files), list(archive.skipped))
    n_members, seed = (ensemble.members, ensemble.seed) if ensemble is not None else (0, 0)
    ev.prob = ens.init_prob(ens_methods, steps, thresholds, n_members, comparison)
    window = in_frames + steps
    cases = [(s, list(range(0, seg.sizes["time"] - window + 1, stride))) for s, seg in enumerate(archive.segments)]
    total = sum(len(starts) for _, starts in cases)
    if total == 0:
        lengths = ", ".join(str(seg.sizes["time"]) for seg in archive.segments)
        raise NowcastError(
            f"{', '.join(archive.files)}: expected a gap-free run of at least {window} frames "
            f"({in_frames} in + {steps} lead times), found segments of {lengths} frames"
        )
    log.info(
        "verifying %s on %d forecast times (%d in, %d lead times of %g min) from %d file(s)",
        ", ".join(methods),
        total,
        in_frames,
        steps,
        time_step / 60,
        len(archive.files),
    )
    if world > 1:
        cases = rank_share(cases, rank, world)
        share = sum(len(starts) for _, starts in cases)
        log.info("rank %d of %d verifies %d of the %d forecast times", rank, world, share, total)
        total = share

    bar = None
    if progress:
        from nowcast.runtime import progress_bar

        bar = progress_bar(total, "case")
    show = lead_indices(steps, EXAMPLE_LEADS)
    report_every = -(-total // 10) if total >= 20 else total  # log lines: every 10 % of a long run
    done = 0
    try:
        for s, starts in cases:
            seg = archive.segments[s]
            frames = SegmentFrames(seg)
            times = seg["time"].values
            shape = seg.shape[1:]
            batch = batch_size or _auto_batch(device, int(np.prod(shape)), in_frames, steps)
            for b0 in range(0, len(starts), batch):
                chunk = starts[b0 : b0 + batch]
                frames.forget_before(chunk[0])
                with timed("read"):
                    inputs = np.stack([frames.get(a, a + in_frames) for a in chunk])  # (B, in, C, H, W)
                    observed = np.stack([frames.get(a + in_frames, a + window) for a in chunk])  # (B, steps, C, H, W)
                pred: dict[str, np.ndarray] = {}
                for name, (net, tr) in nets.items():
                    with timed(name):
                        pred[name] = forecast_array(
                            net,
                            tr,
                            inputs,
                            steps,
                            device=device,
                            precision=precision,
                            time_step=time_step,
                        )
                for i, a in enumerate(chunk):
                    fc: dict[str, np.ndarray] = {name: p[i] for name, p in pred.items()}  # (steps, C, H, W)
                    for name, fn in methods_fn.items():
                        with timed(name):
                            fc[name] = fn(inputs[i], steps)
                    members: dict[str, np.ndarray] = {}  # (M, steps, 1, H, W), timed as their mean's method
                    for name in ens_methods:
                        with timed(ens.mean_name(name)):
                            members[name] = ens.case_members(
                                name, inputs[i], steps, n_members, ens.case_seed(seed, s, a)
                            )
                            fc[ens.mean_name(name)] = ens.ensemble_mean(members[name])
                    with timed("scoring"):
                        score_case(ev, fc, observed[i], common_mask)
                        ens.score_members(ev.prob, members, observed[i], fc, common_mask)
                    t0 = iso_time(times[a + in_frames - 1])
                    ev.first_t0, ev.last_t0 = ev.first_t0 or t0, t0
                    _keep_example(ev, t0, seg, inputs[i, -1, 0], observed[i], fc, show)
                    done += 1
                    if bar is not None:
                        bar.update(1)
                    elif done % report_every == 0 or done == total:
                        log.info("verified %d of %d forecast times", done, total)
                del inputs, observed, pred
    finally:
        if bar is not None:
            bar.close()
    ev.n_cases = done
    ev.wall_s, ev.cpu_s = wall, cpu
    return ev


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


def evaluate_files(
    inputs: Sequence[str | Path],
    *,
    model: str | Path | Sequence[str | Path] | None = None,
    names: Sequence[str] = (),
    no_model: bool = False,
    baselines: Sequence[str] = ("persistence", "extrapolation"),
    thresholds: Sequence[float] | None = None,
    comparison: str = ">=",
    stride: int = 1,
    steps: int | None = None,
    lead_s: int | None = None,
    out_dir: str | Path = "evaluation",
    variable: str | None = None,
    fss_scales: Sequence[int] = (),
    common_mask: bool = True,
    plots: bool = True,
    batch_size: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    threads: int = 0,
    ensemble: ens.EnsembleEvaluation | None = None,
) -> str:
    """Verify a checkpoint (None: the shipped model; ``no_model``: baselines only) on radar files.

    ``model`` may be a list of checkpoints, scored side by side as methods named by ``_method_names``
    (``names``, else each after its run); they must share in_frames and time step, so that every method
    forecasts the same cases, and the first one's settings (frames, variable, units) are used.

    Opens ``inputs`` as one archive at the checkpoint's time step (without a model: the first file's),
    keeping only gap-free runs of at least in_frames + steps frames (a file too short says how many
    lead times it allows); runs ``run_evaluation``; writes the reports into ``out_dir`` (``write_reports``)
    and returns the table of ``format_table``. ``steps`` (``--steps``) or ``lead_s`` (``--lead``, seconds)
    set the horizon, by default the next hour (``leads.forecast_steps``); ``thresholds`` defaults to the
    checkpoint's ``eval.thresholds``;
    in_frames, variable, units and the Z-R relation come from the checkpoint (without a model: the
    ``Config`` defaults). FSS, when ``fss_scales`` are
    given, is computed at 1 mm/h (or the threshold closest to it). On the CPU the model runs on
    ``threads`` torch threads (0: as many as there are free cores, see ``runtime.cpu_threads``).
    ``ensemble``: members and seed of the ensembles scored beside (``run_evaluation``).
    """
    from nowcast.nowcasts.baselines import get_method
    from nowcast.config import Config

    if not inputs:
        raise NowcastError("evaluate: expected at least one radar file, found none")
    check_horizon(steps, lead_s)
    deterministic, ens_methods = ens.split_baselines(baselines, ensemble)  # steps without members: an error
    for name in deterministic:  # unknown names and missing optional packages fail before any work
        get_method(name)
    import torch

    from nowcast.runtime import resolve_precision, select_device, setup_distributed

    facts: dict[str, Any] = {}
    if no_model:
        paths: list[str | Path | None] = []
    elif model is None or isinstance(model, (str, Path)):
        paths = [model]  # None: the shipped model
    else:
        paths = list(model) or [None]
    method_names = _method_names(paths, names) if paths else []
    nets: dict[str, tuple[Any, Any]] = {}
    configs: dict[str, Any] = {}
    all_facts: dict[str, dict[str, Any]] = {}
    dev, prec = "cpu", "fp32"
    torch_device = select_device(device) if not no_model else torch.device("cpu")
    info = setup_distributed(torch_device)  # under torchrun: gloo on the CPU, NCCL on CUDA
    if paths:
        from nowcast.models.checkpoint import load_model
        from nowcast.transforms import Transform

        dev, prec = str(torch_device), resolve_precision(precision, torch_device)
        steps_of: dict[str, int | None] = {}
        for name, path in zip(method_names, paths):
            loaded = load_model(path)
            net, c = loaded.model, loaded.config
            configs[name] = c
            all_facts[name] = {"checkpoint": str(loaded.path), "sha256": loaded.sha256, "name": c.model.name}
            nets[name] = (net.to(torch_device), Transform.from_config(c))
            steps_of[name] = c.data.time_step or data_time_step([str(p) for p in inputs], variable or c.data.variable)
        first = method_names[0]
        cfg, facts, time_step = configs[first], all_facts[first], steps_of[first]
        if time_step is None:
            raise NowcastError(f"{inputs[0]}: expected a radar file whose time step can be read, found none")
        for name in method_names[1:]:
            c = configs[name]
            if c.data.in_frames != cfg.data.in_frames or steps_of[name] != time_step:
                raise NowcastError(
                    f"{all_facts[name]['checkpoint']}: expected {cfg.data.in_frames} input frames at {time_step} s "
                    f"like {facts['checkpoint']}, so that all models forecast the same cases, found "
                    f"{c.data.in_frames} frames at {steps_of[name]} s"
                )
    else:
        cfg = Config()  # without a model: the default frames; the data's own time step
        time_step = data_time_step([str(p) for p in inputs], variable) or cfg.data.time_step
    d = cfg.data
    steps = forecast_steps(steps, lead_s, time_step, d.out_frames, in_frames_only=cfg.transform.kind == "minmax")
    in_frames = d.in_frames
    variable = variable if variable is not None else d.variable
    thresholds = cfg.eval.thresholds if thresholds is None else thresholds
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
    for c in configs.values():  # fc_lstm, cnn_lstm: frames of their size only
        for seg in archive.segments:
            problem = frame_size_problem(c.model, seg.shape)
            if problem:
                raise InputError(f"{seg.attrs.get('source_file', inputs[0])}: {problem}")
    k = table_threshold(thresholds) if thresholds else 0
    fss_thresholds = (float(thresholds[k]),) if thresholds else (1.0,)
    settings = {
        "model": facts or None,
        "models": all_facts or None,
        "baselines": list(baselines),
        "in_frames": in_frames,
        "steps": steps,
        "time_step_s": time_step,
        "stride": stride,
        "thresholds": [float(t) for t in thresholds],
        "comparison": comparison,
        "common_mask": common_mask,
        "fss_scales_px": [int(s) for s in fss_scales],
        "fss_thresholds": list(fss_thresholds) if fss_scales else [],
        "variable": variable,
        "device": dev if nets else None,
        "precision": prec if nets else None,
        "extrapolation": "pysteps Lucas-Kanade on the last 3 frames in dBR, semi-Lagrangian advection of mm/h"
        if "extrapolation" in [b.lower() for b in baselines]
        else None,
        "sprog": "pysteps S-PROG in dBR on the same motion, 6 cascade levels, AR(2)"
        if "sprog" in [b.lower() for b in baselines]
        else None,
    }
    settings["ensemble"] = ens.ensemble_settings(ensemble, ens_methods)
    settings["ranks"] = info.world
    show_bar = info.main and sys.stderr.isatty() and logging.getLogger("nowcast").getEffectiveLevel() <= logging.INFO
    if info.world > 1 and threads <= 0:  # the free cores shared among the ranks
        from nowcast.runtime import cpu_threads

        threads = max(1, cpu_threads() // info.world)
    with _torch_threads(dev if nets or ens_methods else None, threads) as n_threads:  # the ensemble runs torch too
        settings["threads"] = n_threads
        ev = run_evaluation(
            archive,
            in_frames=in_frames,
            steps=steps,
            models=nets,
            baselines=baselines,
            thresholds=thresholds,
            comparison=comparison,
            stride=stride,
            fss_scales=fss_scales,
            fss_thresholds=fss_thresholds,
            common_mask=common_mask,
            batch_size=batch_size,
            device=dev,
            precision=prec,
            progress=show_bar,
            settings=settings,
            rank=info.rank,
            world=info.world,
            ensemble=ensemble,
        )
    merged = _gather_on_main(ev, info)
    if merged is None:  # not rank 0: rank 0 alone writes the reports
        return ""
    write_reports(merged, out_dir, plots=plots)
    return format_table(merged, out_dir)


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


__all__ = ["SegmentFrames", "evaluate_files", "rank_share", "run_evaluation", "score_case"]

"""``nowcast predict``: open the inputs as one archive, check their age, frames and step, forecast, and
write the CF NetCDF (and optionally a PNG) atomically under a lock. ``nowcast watch`` runs the same path.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import xarray as xr

from nowcast import __version__
from nowcast.config import Config
from nowcast.ensemble_forecast import EnsembleProduct, ensemble_members
from nowcast.errors import InputError, OutputError, StaleInputError
from nowcast.forecast import counts_frames, forecast_frames, input_frames, parse_time, source_name
from nowcast.io import (
    FORECAST_REFERENCES,
    Archive,
    write_ensemble,
    NS,
    data_time_step,
    fits_packing,
    iso_time,
    open_archive,
    output_lock,
    remove_stale_temporaries,
    segments,
    times_ns,
    check_writable,
    write_forecast,
)
from nowcast.io.paths import expand_template, not_an_input, output_path
from nowcast.leads import check_horizon, forecast_steps
from nowcast.models.checkpoint import LoadedModel, load_model, model_path, read_config
from nowcast.motion.flow import motion_field
from nowcast.nowcasts import SPROG_AR_ORDER, initial_perturbation_words, noise_adjustment_words

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

TRAINED_STEPS = (120, 900)
"""Seconds between frames of the radars a model for any step (``data.time_step`` 0) is trained on
(the shared events: 2 to 15 minutes); other steps work, with a warning."""


@dataclass(frozen=True)
class PredictSettings:
    """What ``nowcast predict`` and ``nowcast watch`` do with each forecast, said once for both."""

    model: str | Path | None = None
    """Checkpoint; None: the model shipped with nowcast."""
    steps: int | None = None
    """Lead times to forecast, counted in frames; not with ``lead_s``."""
    lead_s: int | None = None
    """Forecast horizon in seconds (``--lead``), the fewest steps reaching it; neither this nor ``steps``:
    ``leads.DEFAULT_LEAD_S`` (``leads.forecast_steps`` says when the trained frames are used instead)."""
    output: str | Path | None = None
    """Output path; may hold ``{reference_time:%Y%m%d%H%M}`` and ``{stem}``. An existing directory gets
    the default name; None: ``io.paths.DEFAULT_OUTPUT`` next to the first input."""
    plot: str | Path | None = None
    """Also write this PNG (same templates): the last observed frame and four lead times."""
    max_age_min: float | None = None
    """Refuse (StaleInputError) when the newest input frame is older than this many minutes."""
    variable: str | None = None
    """Input variable (default: the checkpoint's, else chosen by standard_name)."""
    lock_timeout_s: float = 60.0
    """Seconds to wait for another run writing the same output before raising OutputError."""
    history: str | None = None
    """The command line, recorded in the file's ``history``."""
    threads: int = 0
    """torch CPU threads; 0: ``$OMP_NUM_THREADS`` if set, else the free cores (``runtime.cpu_threads``)."""
    device: str = "auto"
    """``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    packed: bool | None = None
    """int16-packed output (0.01 steps, as the radar files) rather than float32; None: packed unless the
    model's values may leave the packing's range (a minmax model beyond +-327.67, e.g. 0-1000 data)."""
    ensemble: EnsembleProduct | None = None
    """Write an ensemble product instead (``ensemble_forecast``: members, exceedance probabilities, their mean)."""


def predict_to_file(
    inputs: Sequence[str | Path],
    settings: PredictSettings = PredictSettings(),
    *,
    loaded: LoadedModel | None = None,
    at: str | None = None,
    now: datetime | None = None,
    stem_of: str | Path | None = None,
) -> Path:
    """``nowcast predict``: forecast from the latest frames of ``inputs`` and write a CF NetCDF.

    ``inputs``: radar NetCDF files or glob patterns, one archive (the frames needed may span files).
    ``loaded``: the model already in memory (``nowcast watch`` loads it once), instead of
    ``settings.model``. ``at``: the reference time (default the last frame). ``now``: the current time
    for ``max_age_min`` (tests; default the clock, UTC). ``stem_of``: the input file whose name fills
    ``{stem}`` (default the first input file).

    Returns the path written. Logs exactly one INFO line (reference time, output, wall time).
    The input files are only read. The output is written atomically under ``output_lock``, taken for
    the write only: it is the previous complete file or the new complete one at every moment. The input
    is checked against the checkpoint's stored config (read without torch) before torch and the model
    are loaded, so a bad input fails in about a second.
    """
    made = make_forecast(inputs, settings, loaded=loaded, at=at, now=now, stem_of=stem_of)
    return write_forecast_files(made, settings.lock_timeout_s)


@dataclass
class MadeForecast:
    """A forecast computed and not yet written; ``write_forecast_files`` writes it (``watch`` keeps it
    and writes it again when its output directory was full or read-only)."""

    out_path: Path
    plot_path: Path | None
    forecast: xr.DataArray
    """The forecast (an ensemble's mean for an ensemble product, NaN where any member has no data)."""
    members: xr.DataArray | None
    """An ensemble's members (``settings.ensemble``), else None."""
    observed: xr.DataArray
    """The last observed frame (the plot's first panel)."""
    attrs: dict[str, object]
    """The file's global attributes beyond those the writer derives."""
    packed: bool
    thresholds: tuple[float, ...]
    """The ensemble's exceedance thresholds (mm/h); () for a deterministic forecast."""
    model_name: str
    horizon: str
    """'2024-11-26T02:00:00Z, +60 min (12 steps of 5 min)': the log line's description."""
    started: float
    """``time.perf_counter()`` when the forecast was started (the log line's wall time)."""
    parts: dict[str, float] = dataclasses.field(default_factory=dict)
    """Seconds spent per part (read, motion, network, write): the debug line of where the time went."""
    centred_on: str | None = None
    """The model an ensemble's members are centred on (``--centre model`` with a learned head), else None."""


def make_forecast(
    inputs: Sequence[str | Path],
    settings: PredictSettings = PredictSettings(),
    *,
    loaded: LoadedModel | None = None,
    at: str | None = None,
    now: datetime | None = None,
    stem_of: str | Path | None = None,
    opened: Mapping[str, xr.DataArray] | None = None,
) -> MadeForecast:
    """``predict_to_file`` up to the write: every check, then the forecast in memory.

    Arguments as ``predict_to_file``; ``opened``: input files the caller has already opened as
    ``predict`` opens them (``io.open_radar`` at the model's step, ``scan=False``; ``watch`` keeps the
    frames it has read), by path: they are used instead of opening the files again. Checks that the
    outputs could be written (``io.check_writable``: OutputError), creating nothing, before the forecast
    is computed.
    """
    s = settings
    started = time.perf_counter()
    cfg, loaded, ckpt_path = _model_config(inputs, s, loaded, opened)
    d = cfg.data
    archive = _open_inputs(inputs, cfg, s.variable, opened)
    newest_seg = max(archive.segments, key=lambda seg: int(times_ns(seg)[-1]))
    newest = int(times_ns(newest_seg)[-1])
    if s.max_age_min is not None:
        _check_age(newest, float(s.max_age_min), now, source_name(newest_seg))
    t_ref = newest if at is None else parse_time(at)
    rate = _window(archive.segments, t_ref, d.in_frames, d.time_step)
    # the one check of the input, and its one read, before creating anything
    frames, idx = input_frames(rate, _frames_config(cfg, s, rate, t_ref), t_ref)
    rate = rate.isel(time=idx)
    steps = forecast_steps(s.steps, s.lead_s, d.time_step, d.out_frames, in_frames_only=counts_frames(rate, cfg))
    named = str(stem_of) if stem_of is not None else archive.files[0]
    per_frame = int(rate.attrs.get("frame_numbers") or 0)
    out_path = output_path(s.output, t_ref, named, archive.files, per_frame)
    plot_path = None
    if s.plot is not None:
        plot_path = expand_template(str(s.plot), t_ref, Path(named).stem, "--plot", per_frame)
        not_an_input(plot_path, archive.files, "--plot")
        _plot_not_output(plot_path, out_path)
    for path in (out_path, plot_path):
        if path is not None:
            check_writable(path)
    parts = {"read": time.perf_counter() - started}

    from nowcast.runtime import cpu_threads

    n_cpu = cpu_threads(s.threads)
    lagrangian = cfg.model.frame == "lagrangian"
    with ThreadPoolExecutor(max_workers=1) as pool:
        # the Lagrangian model's motion needs no torch: it is estimated while torch and the model load
        motion = pool.submit(motion_field, frames, n_cpu) if loaded is None and lagrangian else None
        from nowcast.runtime import resolve_precision, select_device, set_threads

        if loaded is None:
            loaded = load_model(ckpt_path)
        dev = select_device(s.device)
        n_threads = set_threads(n_cpu) if dev.type == "cpu" else s.threads
        mark = time.perf_counter()
        velocity = None if motion is None else motion.result()
        if velocity is None and lagrangian and s.ensemble is None:
            velocity = motion_field(frames, n_cpu)
        parts["motion"] = time.perf_counter() - mark
    log.debug(
        "model %s (%s, sha256 %s) on %s, %s thread(s)", loaded.path, cfg.model.name, loaded.sha256[:12], dev, n_threads
    )
    mark = time.perf_counter()
    attrs = _global_attrs(rate, cfg, loaded, s.history, archive.files, t_ref)
    members = None
    thresholds: tuple[float, ...] = ()
    centred = False
    if s.ensemble is not None:
        members, attrs, centred = _ensemble(
            frames, t_ref, rate, cfg, s, steps, velocity, attrs, loaded.model.to(dev), dev
        )
        # NaN where any member has none, as the file's mean (``ensemble_dataset``); numpy's mean, not the
        # NaN-skipping one (about 1 s on 20 x 12 x 512 x 512 in a fresh process)
        fc = members.mean("realization", skipna=False).assign_attrs(members.attrs)
        thresholds = tuple(s.ensemble.thresholds)
    else:
        net = loaded.model.to(dev)
        fc = forecast_frames(frames, t_ref, rate, net, cfg, steps, dev, resolve_precision("auto", dev), velocity)
    parts["network"] = time.perf_counter() - mark
    observed = rate.isel(time=-1).copy(data=frames[-1] if "channel" in rate.dims else frames[-1, 0])
    return MadeForecast(
        out_path=out_path,
        plot_path=plot_path,
        forecast=fc,
        members=members,
        observed=observed,
        attrs=attrs,
        packed=_packed(s, cfg),
        thresholds=thresholds,
        model_name=cfg.model.name,
        horizon=_horizon_text(fc, t_ref, cfg),
        started=started,
        parts=parts,
        centred_on=cfg.model.name if centred else None,
    )


def _frames_config(cfg: Config, s: PredictSettings, rate: xr.DataArray, t_ref: int) -> Config:
    """``cfg``, or for an ensemble the model does not run in (``--members`` without ``--centre model``)
    ``cfg`` asking only for the frames ``rate`` has in a row up to ``t_ref`` (at most the model's
    ``data.in_frames``, at least the ``SPROG_AR_ORDER + 1`` the cascade needs): the ensemble then comes
    from them, its motion too."""
    d = cfg.data
    if s.ensemble is None or s.ensemble.centre != "sprog":
        return cfg
    have = set(times_ns(rate).tolist())
    run = 0
    while run < d.in_frames and t_ref - run * d.time_step * NS in have:
        run += 1
    need = max(SPROG_AR_ORDER + 1, run)
    if need < d.in_frames:
        log.info(
            "ensemble from the %d frames up to the reference time (the model's %d are not needed)", need, d.in_frames
        )
        return dataclasses.replace(cfg, data=dataclasses.replace(d, in_frames=need))
    return cfg


def write_forecast_files(made: MadeForecast, lock_timeout_s: float = 60.0) -> Path:
    """Write ``made``: its NetCDF (and PNG), each atomically under ``output_lock`` held for the write only.

    Logs ``predict``'s INFO line and, at DEBUG, where the time went. Returns the NetCDF's path. Raises
    OutputError (one line) when a file cannot be written; the previous complete file stays in place.
    """
    mark = time.perf_counter()
    with output_lock(made.out_path, lock_timeout_s):
        remove_stale_temporaries(made.out_path, min_age_s=0.0)  # under the lock: leftovers of killed runs
        if made.members is not None:
            write_ensemble(made.members, made.thresholds, made.out_path, global_attrs=made.attrs, packed=made.packed)
        else:
            write_forecast(made.forecast, made.out_path, global_attrs=made.attrs, packed=made.packed)
    if made.plot_path is not None:
        from nowcast.plots import plot_forecast, plot_probabilities

        with output_lock(made.plot_path, lock_timeout_s):
            remove_stale_temporaries(made.plot_path, min_age_s=0.0)
            if made.members is not None:
                plot_probabilities(
                    made.observed, made.members, made.thresholds[:2], made.plot_path, centred_on=made.centred_on
                )
            else:
                plot_forecast(made.observed, made.forecast, made.plot_path, model=made.model_name)
    made.parts["write"] = time.perf_counter() - mark
    elapsed = time.perf_counter() - made.started
    extra = f" and {made.plot_path}" if made.plot_path is not None else ""
    log.info("forecast from %s: wrote %s%s in %.1f s", made.horizon, made.out_path, extra, elapsed)
    log.debug("parts: %s", ", ".join(f"{k} {v:.2f} s" for k, v in made.parts.items()))
    return made.out_path


def _open_inputs(
    inputs: Sequence[str | Path], cfg: Config, variable: str | None, opened: Mapping[str, xr.DataArray] | None
) -> Archive:
    """The inputs as one archive at the model's step: ``opened``'s arrays where it holds every input at
    that step (``watch``), else the files opened now."""
    d = cfg.data
    files = [str(p) for p in inputs]
    if opened and all(f in opened and int(opened[f].attrs["time_step"]) == d.time_step for f in files):
        return Archive(segments=[seg for f in files for seg in segments(opened[f])], files=files, skipped=[])
    return open_archive(
        files,
        time_step=d.time_step,
        variable=variable or d.variable,
        units=d.units,
        zr_a=d.zr_a,
        zr_b=d.zr_b,
        scan=False,
    )


def _plot_not_output(plot_path: Path, out_path: Path) -> None:
    """Raise OutputError when the plot would overwrite the forecast file (the same resolved path)."""
    if plot_path.resolve() == out_path.resolve():
        raise OutputError(f"--plot {plot_path}: expected a path other than the forecast's (-o), found the same path")


def _ensemble(
    frames: np.ndarray,
    t_ref: int,
    rate: xr.DataArray,
    cfg: Config,
    s: PredictSettings,
    steps: int,
    velocity: np.ndarray | None,
    attrs: dict[str, object],
    net: torch.nn.Module,
    device: torch.device,
) -> tuple[xr.DataArray, dict[str, object], bool]:
    """``s.ensemble``'s members from ``frames``, the file's attributes naming the product, and whether the
    members are centred on the model's forecast; ``net`` (on ``device``) runs only for ``centre="model"``."""
    product = s.ensemble
    assert product is not None
    if "channel" in rate.dims:
        raise InputError(
            f"{source_name(rate)}: expected one channel for an ensemble (--members), found {rate.sizes['channel']}"
        )
    centre, about = None, "; the model was not run"
    if product.centre == "model":
        velocity = motion_field(frames[:, 0]) if velocity is None else velocity
        centre = _model_centre(frames, cfg, steps, velocity, net, device)
        about = (
            f"; centred on the model {cfg.model.name}'s forecast (each member: it plus the member's perturbation)"
            if centre is not None
            else f"; the model {cfg.model.name} adds nothing to S-PROG (its output head is zero)"
        )
    members = ensemble_members(frames, t_ref, rate, cfg.data.time_step, steps, product, velocity, centre, str(device))
    motion = product.settings(rate, cfg.data.time_step).motion_perturbation  # auto resolved on this grid
    attrs = dict(attrs)
    attrs["source"] = (
        f"nowcast {__version__}, STEPS-like ensemble of {product.members} members (seed {product.seed}): "
        "S-PROG cascade with pySTEPS nonparametric noise, "
        + ("bps motion perturbations" if motion == "bps" else "no motion perturbation")
        + noise_adjustment_words(product.noise_adjustment)
        + initial_perturbation_words(product.initial_perturbation)
        + about
    )
    return members, attrs, centre is not None


def _model_centre(
    frames: np.ndarray, cfg: Config, steps: int, velocity: np.ndarray, net: torch.nn.Module, device: torch.device
) -> np.ndarray | None:
    """``--centre model``: the model's forecast (steps, H, W) dBR in the last frame's frame, None when its
    head is zero (the members are then S-PROG's); InputError when the model cannot centre an ensemble."""
    from nowcast.forecast import centre_problem, forecast_and_centre
    from nowcast.runtime import resolve_precision
    from nowcast.transforms import Transform

    transform = Transform.from_config(cfg)
    if problem := centre_problem(net, transform):
        raise InputError(f"--centre model: the model {cfg.model.name}: {problem}")
    _, in_dbr = forecast_and_centre(
        net, transform, frames[None], steps, device=device, precision=resolve_precision("auto", device),
        time_step=cfg.data.time_step, velocity=velocity[None],
    )  # fmt: skip
    return None if in_dbr is None else in_dbr[0]


def _packed(s: PredictSettings, cfg: Config) -> bool:
    """``s.packed``, or by default: int16 for rain (rates above 327.67 mm/h clipped, as in the radar files)
    and for a minmax model whose range fits the packing; float32 for a wider range."""
    t = cfg.transform
    if s.packed is not None:
        return s.packed
    if t.kind == "minmax" and t.value_min is not None and t.value_max is not None:
        return fits_packing(t.value_min, t.value_max)
    return True


def _horizon_text(fc: xr.DataArray, t_ref: int, cfg: Config) -> str:
    """'2024-11-26T02:00:00Z, +60 min (12 steps of 5 min)', with 'beyond the N trained' when so; for
    frame-numbered input 'frame 15, +6 frames'."""
    steps, trained = fc.sizes["time"], cfg.data.out_frames
    per_frame = int(fc.attrs.get("frame_numbers") or 0)
    if per_frame:
        return f"frame {t_ref // (per_frame * NS)}, +{steps} frames"
    beyond = f", beyond the {trained} trained" if steps > trained else ""
    step_min = cfg.data.time_step / 60
    return f"{iso_time(t_ref)}, +{steps * step_min:g} min ({steps} steps of {step_min:g} min{beyond})"


def _model_config(
    inputs: Sequence[str | Path],
    s: PredictSettings,
    loaded: LoadedModel | None,
    opened: Mapping[str, xr.DataArray] | None = None,
) -> tuple[Config, LoadedModel | None, Path | None]:
    """The config of the model to run, read without torch when the checkpoint allows it, with the time
    step of the newest input file for a model of any step (from ``opened`` when it holds that file):
    (config, the model if it had to be loaded already, the checkpoint's path if not)."""
    ckpt_path = None
    if loaded is not None:
        cfg = loaded.config
    else:
        ckpt_path = model_path(s.model)
        stored = read_config(ckpt_path)
        loaded = load_model(ckpt_path) if stored is None else None  # unreadable without torch: its error now
        cfg = stored if stored is not None else loaded.config  # type: ignore[union-attr]
    check_horizon(s.steps, s.lead_s)  # before any file is read
    if cfg.data.time_step == 0:  # a model for any step: the newest input file's
        last = str(inputs[-1]) if inputs else ""
        if opened and last in opened:
            step = int(opened[last].attrs["time_step"])
        else:
            step = data_time_step([str(p) for p in inputs], s.variable or cfg.data.variable, newest=True)
        if step is None:  # no usable file: the archive reader names each one and why
            open_archive([str(p) for p in inputs], time_step=None, variable=s.variable or cfg.data.variable, scan=False)
            raise InputError(f"{inputs[0]}: expected a radar file whose time step can be read, found none")
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, time_step=step))
        lo, hi = TRAINED_STEPS
        if not lo <= step <= hi:
            log.warning(
                "%s: a step of %d s is outside the %d-%d s the model was trained on; expect less skill",
                inputs[0],
                step,
                lo,
                hi,
            )
    return cfg, loaded, ckpt_path


def _global_attrs(
    rate: xr.DataArray, cfg: Config, loaded: LoadedModel, history: str | None, files: list[str], t_ref: int
) -> dict[str, object]:
    """The forecast file's global attributes beyond those the writer derives from the input."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    title = f"Nowcast of {rate.attrs.get('input_title') or rate.attrs.get('long_name', 'rain rate')}"
    per_frame = int(rate.attrs.get("frame_numbers") or 0)
    reference: dict[str, object] = (
        {"forecast_reference_frame": np.int64(t_ref // (per_frame * NS))}
        if per_frame
        else {"time_step_seconds": np.int32(cfg.data.time_step), "forecast_reference_time": iso_time(t_ref)}
    )
    return {
        "title": title,
        "source": f"nowcast {__version__}, model '{cfg.model.name}', checkpoint {loaded.path.name} "
        f"(sha256 {loaded.sha256})",
        "history": f"{stamp} {history or 'nowcast.predict.predict_to_file'}",
        "references": FORECAST_REFERENCES,
        "date_created": stamp,
        "input_files": ", ".join(files),
        **reference,
    }


def _window(archive_segments: Sequence[xr.DataArray], t_ref: int, in_frames: int, time_step: int) -> xr.DataArray:
    """The frames of all segments between the first needed time and ``t_ref``, joined along time.

    Frames of several files are one archive: the latest frames may span files. A time found in several
    files is taken from the file listed last. The files must share the grid.
    """
    lo = t_ref - (in_frames - 1) * time_step * NS
    if not any(np.any(times_ns(seg) == t_ref) for seg in archive_segments):
        times = np.unique(np.concatenate([times_ns(seg) for seg in archive_segments]))
        before = times[times < t_ref]
        nearest = f"; the last frame before it is {iso_time(before[-1])}" if before.size else ""
        raise InputError(
            f"{source_name(archive_segments[-1])}: expected a frame at the reference time {iso_time(t_ref)}, found none "
            f"(the input covers {iso_time(times[0])} to {iso_time(times[-1])} at {time_step} s{nearest})"
        )
    pieces = []
    for seg in archive_segments:
        t = times_ns(seg)
        keep = np.flatnonzero((t >= lo) & (t <= t_ref))
        if keep.size:
            pieces.append(seg.isel(time=keep))
    if len(pieces) == 1:
        return pieces[0]
    base = pieces[0]
    for p in pieces[1:]:
        same = p.shape[1:] == base.shape[1:] and all(
            np.array_equal(p[c].values, base[c].values) for c in ("y", "x") if c in p.coords and c in base.coords
        )
        if not same:
            raise InputError(
                f"{source_name(p)}: expected the grid of {source_name(base)} ({' x '.join(map(str, base.shape[1:]))}, same x/y), "
                f"found {' x '.join(map(str, p.shape[1:]))}{'' if p.shape[1:] != base.shape[1:] else ' with other x/y'}"
            )
    latest: dict[int, tuple[int, int]] = {}
    for k, p in enumerate(pieces):
        for i, t in enumerate(times_ns(p)):
            latest[int(t)] = (k, i)  # a later file wins
    order = [latest[t] for t in sorted(latest)]
    frames = [pieces[k].isel(time=[i]) for k, i in order]
    joined = xr.concat(
        frames, dim="time", coords="minimal", compat="override", join="override", combine_attrs="override"
    )
    joined.attrs = dict(pieces[-1].attrs)
    files = list(dict.fromkeys(str(p.attrs.get("source_file", "?")) for p in pieces))
    joined.attrs["source_file"] = files[-1] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} more files)"
    return joined


def _check_age(newest: int, max_age_min: float, now: datetime | None, src: str) -> None:
    now_dt = now or datetime.now(timezone.utc)
    if now_dt.tzinfo is not None:
        now_dt = now_dt.astimezone(timezone.utc).replace(tzinfo=None)
    now_ns = int(np.datetime64(now_dt, "ns").astype(np.int64))
    age_min = (now_ns - newest) / NS / 60.0
    if age_min > max_age_min:
        raise StaleInputError(
            f"{src}: expected a newest frame at most {max_age_min:g} min old (--max-age), found {iso_time(newest)}, "
            f"{age_min:.1f} min before now ({iso_time(now_ns)})"
        )

"""``nowcast watch``: a resident process that forecasts each new radar frame as it arrives.

The model is loaded (and run once, to warm it) at start; then the files matching a glob pattern are
polled. A new or changed file is opened with the model's checks, and a forecast is made from the newest
frame through ``predict.make_forecast`` and ``predict.write_forecast_files`` (the same checks, lock,
atomic write, templates and log line as ``nowcast predict``), from the files that hold the frames it
needs. What the previous cycle read stays in memory: the frames of the files in the input window are
read once, so a new cycle reads only the new file.

- ``Watcher``: the state of one watch; ``poll_once()`` looks once and forecasts at most once.
- ``watch``: ``nowcast watch``: a ``Watcher`` polled until SIGTERM/SIGINT, ``--once`` or ``--max-forecasts``.

Rules:
- When a file is complete. A file that arrives by rename (written under another name, then renamed in,
  as feeds do) is complete at first sight; there is no inotify here, so the watcher cannot see the
  rename itself. It reads a new file at once, all of its frames: if that succeeds and the file's size
  and mtime are the same after the read, the file is taken, with no wait. A file that fails to read
  while it is younger than ``settle_s`` (mtime) is taken as still being written: it is looked at again
  silently on the next poll. Only a file that still fails once it is older is logged as unusable.
  (A writer that writes in place, pauses longer than a poll, and leaves a partial file that reads
  without error would be read early: such feeds must write and rename.)
- A file whose mtime lies in the future (a clock ahead of ours) is logged once (WARNING) and read
  like any other.
- A file that cannot be used is logged (one WARNING line) and skipped until it changes; the watcher
  goes on. So does a forecast that fails (a gap, too few frames): one line, then the next frame.
- A forecast that cannot be written (the output directory full, read-only, or locked for too long) is
  not marked done: it is kept in memory, logged once, and written again every ``retry_s`` seconds until
  it succeeds or a newer forecast is written.
- Latest wins: when files arrive, the newest frame of all is forecast, and only when it is newer than
  the last reference time forecast; older frames arriving late are left out (``nowcast predict --at``
  makes them). The last reference time is kept in a small JSON state file, so a restart never
  forecasts the same reference time twice.
- SIGTERM or SIGINT: a forecast under way is finished (its file is complete) and the watcher exits 0;
  a second signal interrupts it at once (the atomic write leaves no partial file).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import xarray as xr

from nowcast.errors import NowcastError, OutputError, first_line
from nowcast.io import NS, atomic_output, iso_time, open_radar
from nowcast.forecast import parse_time
from nowcast.io.paths import expand_template
from nowcast.models.checkpoint import LoadedModel
from nowcast.predict import MadeForecast, PredictSettings, make_forecast, write_forecast_files

log = logging.getLogger(__name__)

STATE_VERSION = 1
POLL_S = 0.25
"""Seconds between looks by default: a look is one glob and one stat per file, cheap beside a forecast,
and a file is taken at the first look after it lands (on average half a poll)."""


@dataclass
class _Seen:
    """What the watcher knows about one file, valid while its size and mtime stay ``key``."""

    key: tuple[int, int]
    """(size in bytes, mtime in ns) when it was opened."""
    times: np.ndarray | None
    """Frame times (ns since 1970, at the model's step) of a usable file; None if it cannot be used."""
    step: int = 0
    """Seconds between its frames as read (the model's step, or the file's own for a model of any step)."""
    rate: xr.DataArray | None = None
    """The file as opened: lazily until the end of the poll that opened it, or its frames read into
    memory (at first sight of a young file, or once they are an input), kept while they are an input."""
    read: bool = False
    """Whether ``rate``'s frames are in memory."""


@dataclass
class _Pending:
    """A forecast made but not written (its directory full, read-only or locked): written again later."""

    t_ref: int
    inputs: list[str]
    holder: str
    made: MadeForecast | None
    """The forecast in memory; None when it failed before it was computed (a directory not writable)."""
    next_try: float
    """``clock()`` time of the next attempt."""


def default_state_path(pattern: str, output: str) -> Path:
    """``.nowcast-watch-HASH.json`` in the output template's first directory without a template field;
    HASH (8 hex digits) names the (pattern, output) pair, so several watchers can share a directory."""
    static = output.split("{", 1)[0]
    directory = Path(os.path.dirname(os.path.expanduser(static)) or ".")
    digest = hashlib.sha256(f"{pattern}\n{output}".encode()).hexdigest()[:8]
    return directory / f".nowcast-watch-{digest}.json"


def read_state(path: Path) -> int | None:
    """The last reference time forecast (ns since 1970) recorded in ``path``; None when there is no file.

    Raises NowcastError (one line) for a file that is not a watch state.
    """
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
        return parse_time(str(state["last_reference_time"]))
    except (OSError, ValueError, KeyError, TypeError, NowcastError) as exc:
        why = first_line(exc) or type(exc).__name__
        raise NowcastError(
            f"{path}: expected a nowcast watch state (JSON with last_reference_time), found {why} "
            "(delete it to start afresh)"
        ) from None


def write_state(path: Path, reference_time: int, pattern: str, output: str) -> None:
    """Record ``reference_time`` (ns since 1970) as the last one forecast, atomically."""
    state = {
        "version": STATE_VERSION,
        "pattern": pattern,
        "output": output,
        "last_reference_time": iso_time(reference_time),
        "updated": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    with atomic_output(path, suffix=".tmp") as tmp:
        tmp.write_text(json.dumps(state, indent=1) + "\n")


class Watcher:
    """Forecasts from new files matching ``pattern`` with a model already loaded.

    ``poll_once`` is the whole behaviour; ``watch`` calls it in a loop. Options are those of
    ``predict_to_file``; ``settle_s``: how long (mtime) a file that fails to read may still be being
    written; ``retry_s``: seconds between attempts to write a forecast that could not be written;
    ``state_path``: the JSON state (default ``default_state_path``); ``clock``: seconds since 1970 (tests).
    """

    def __init__(
        self,
        pattern: str,
        loaded: LoadedModel,
        settings: PredictSettings,
        *,
        settle_s: float = 1.0,
        retry_s: float = 5.0,
        state_path: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if settings.output is None:
            raise NowcastError(f"{pattern}: expected an output template (-o), found none")
        self.pattern = os.path.expanduser(pattern)
        self.output = str(settings.output)
        self.loaded = loaded
        self.settings = settings
        self.settle_s = settle_s
        self.retry_s = retry_s
        self.pending: _Pending | None = None
        self.future: set[str] = set()
        self.state_path = state_path or default_state_path(pattern, self.output)
        self.clock = clock
        self.seen: dict[str, _Seen] = {}
        self.last_done = read_state(self.state_path)
        self.forecasts = 0
        for template, what in ((settings.output, "-o"), (settings.plot, "--plot")):  # malformed: fails at start
            if template is not None:
                expand_template(str(template), 0, "stem", what)

    # -- files -----------------------------------------------------------------------------------

    def _open(self, path: str, key: tuple[int, int], read: bool) -> _Seen:
        """``path`` opened as ``predict`` opens it: its frame times and step, and (``read``) its frames,
        read into memory now and kept; InputError if unusable."""
        d = self.loaded.config.data
        rate = open_radar(
            path,
            variable=self.settings.variable or d.variable,
            units=d.units,
            zr_a=d.zr_a,
            zr_b=d.zr_b,
            time_step=d.time_step or None,
            scan=False,
        )
        if read:
            rate.load()
        times = rate["time"].values.astype("datetime64[ns]").astype(np.int64)
        return _Seen(key, times, int(rate.attrs["time_step"]), rate, read)

    def _look(self) -> list[str]:
        """Open the files that are new or changed and complete; return the usable ones among them."""
        fresh: list[str] = []
        present = sorted(glob.glob(self.pattern))
        for path in present:
            try:
                st = os.stat(path)
            except OSError:  # removed meanwhile
                continue
            key = (st.st_size, st.st_mtime_ns)
            known = self.seen.get(path)
            if (known is not None and known.key == key) or st.st_size == 0:
                continue
            seen = self._take(path, key)
            if seen is None:
                continue  # still being written, or changed while being read: next time
            self.seen[path] = seen
            if seen.times is not None and seen.times.size:
                fresh.append(path)
        for gone in set(self.seen) - set(present):
            del self.seen[gone]
        self.future &= set(present)
        return fresh

    def _take(self, path: str, key: tuple[int, int]) -> _Seen | None:
        """What ``path`` (size and mtime ``key``) holds, or None to look again later: it failed to read
        while young (being written), or it changed while being read."""
        started = self.clock()
        age = started - key[1] / NS
        if age < 0 and path not in self.future:
            self.future.add(path)
            log.warning(
                "%s: modification time %s, %.0f s in the future (a clock ahead of this one?): read as it is",
                path,
                iso_time(key[1]),
                -age,
            )
        young = 0 <= age < self.settle_s
        try:
            seen = self._open(path, key, read=young)
        except Exception as exc:  # noqa: BLE001 - a resident process survives any one bad file
            if young:  # maybe still being written
                log.debug("%s: not readable yet (%s); looking again", path, first_line(exc))
                return None
            if isinstance(exc, NowcastError):
                log.warning("skipped %s", first_line(exc))
            else:
                log.warning(
                    "skipped %s: expected a readable radar file, found %s: %s",
                    path,
                    type(exc).__name__,
                    first_line(exc),
                )
                log.debug("traceback of the file skipped", exc_info=True)
            seen = _Seen(key, None)
        with contextlib.suppress(OSError):
            st = os.stat(path)
            if (st.st_size, st.st_mtime_ns) != key:
                return None
        log.debug("parts: wait %.2f s, open %.2f s (%s)", max(age, 0.0), self.clock() - started, path)
        return seen

    def _opened(self, inputs: list[str]) -> dict[str, xr.DataArray]:
        """The frames of ``inputs`` in memory, read once per file version; files no longer an input are
        let go. A file that cannot be read here is left out (``predict`` opens it and says why)."""
        opened = {}
        for path, seen in self.seen.items():
            if path not in inputs:
                seen.rate, seen.read = None, False
                continue
            try:
                if seen.rate is None:
                    seen.rate = self._open(path, seen.key, read=True).rate
                elif not seen.read:
                    seen.rate.load()
                seen.read = True
            except Exception:  # noqa: BLE001 - predict reads it again and reports it
                log.debug("%s: not read ahead", path, exc_info=True)
                seen.rate, seen.read = None, False
                continue
            opened[path] = seen.rate
        return opened

    def _let_go(self) -> None:
        """Forget the files opened lazily by this poll (their frames were not needed): only frames read
        into memory outlive a poll, so a folder of many files costs no open handles between polls."""
        for seen in self.seen.values():
            if not seen.read:
                seen.rate = None

    def _inputs(self, t_ref: int, holder: str) -> list[str]:
        """The usable files holding frames of the input window that ends at ``t_ref`` (a frame of
        ``holder``), sorted by name (where a time is in several files, ``predict`` takes the last's)."""
        d = self.loaded.config.data
        lo = t_ref - (d.in_frames - 1) * (d.time_step or self.seen[holder].step) * NS
        return [
            p
            for p, s in sorted(self.seen.items())
            if s.times is not None and np.any((s.times >= lo) & (s.times <= t_ref))
        ]

    # -- one round -------------------------------------------------------------------------------

    def poll_once(self) -> Path | None:
        """Look at the files once; when a usable file arrived or changed, forecast from the newest frame
        of all usable files if it is newer than the last reference time forecast (so a forecast that
        failed for want of a late frame is made once that frame arrives). A forecast that could not be
        written is written again first, when its time has come. Returns the last file written, or None."""
        try:
            return self._poll()
        finally:
            self._let_go()

    def _poll(self) -> Path | None:
        """``poll_once`` itself."""
        fresh = self._look()
        written = self._retry()
        if not fresh:
            return written
        t_ref, holder = max((int(s.times[-1]), p) for p, s in self.seen.items() if s.times is not None)  # type: ignore[index]
        if self.last_done is not None and t_ref <= self.last_done:
            log.info(
                "%s: newest frame %s is not newer than the last forecast (%s): not forecast",
                holder,
                iso_time(t_ref),
                iso_time(self.last_done),
            )
            return written
        return self._forecast(t_ref, holder, self._inputs(t_ref, holder)) or written

    def _forecast(self, t_ref: int, holder: str, inputs: list[str]) -> Path | None:
        """Forecast from ``t_ref`` and write it; a failure is one log line (and a pending write)."""
        try:
            made = make_forecast(
                inputs,
                self.settings,
                loaded=self.loaded,
                at=iso_time(t_ref),
                stem_of=holder,
                opened=self._opened(inputs),
            )
        except OutputError as exc:  # the output directory is not writable: try again later
            self._defer(_Pending(t_ref, inputs, holder, None, 0.0), exc)
            return None
        except NowcastError as exc:
            log.warning("no forecast from %s: %s", iso_time(t_ref), first_line(exc))
            return None
        except Exception as exc:  # noqa: BLE001 - one failed forecast does not stop the service
            log.error(
                "no forecast from %s: unexpected %s: %s",
                iso_time(t_ref),
                type(exc).__name__,
                first_line(exc),
            )
            log.debug("traceback of the failed forecast", exc_info=True)
            return None
        return self._write(_Pending(t_ref, inputs, holder, made, 0.0))

    def _write(self, job: _Pending) -> Path | None:
        """Write ``job``'s forecast; on success it is the last one done, else it is pending."""
        assert job.made is not None
        try:
            out = write_forecast_files(job.made, self.settings.lock_timeout_s)
        except OutputError as exc:
            self._defer(job, exc)
            return None
        if self.pending is not None and self.pending.t_ref <= job.t_ref:
            if self.pending.t_ref < job.t_ref:
                log.warning(
                    "forecast from %s never written: superseded by the one from %s",
                    iso_time(self.pending.t_ref),
                    iso_time(job.t_ref),
                )
            self.pending = None
        self.last_done = job.t_ref if self.last_done is None else max(self.last_done, job.t_ref)
        self.forecasts += 1
        try:
            write_state(self.state_path, self.last_done, self.pattern, self.output)
        except OutputError as exc:  # the forecast is written; only a restart could repeat it
            log.warning("state not saved: %s", first_line(exc))
        return out

    def _defer(self, job: _Pending, exc: OutputError) -> None:
        """Keep ``job`` to write again in ``retry_s`` seconds (the newest pending forecast only)."""
        if self.pending is not None and self.pending.t_ref > job.t_ref:
            log.warning("no forecast written from %s: %s", iso_time(job.t_ref), first_line(exc))
            return
        if self.pending is not None and self.pending.t_ref < job.t_ref:
            log.warning(
                "forecast from %s never written: superseded by the one from %s",
                iso_time(self.pending.t_ref),
                iso_time(job.t_ref),
            )
        again = self.pending is not None and self.pending.t_ref == job.t_ref
        (log.debug if again else log.warning)(
            "no forecast written from %s: %s; trying again every %g s",
            iso_time(job.t_ref),
            first_line(exc),
            self.retry_s,
        )
        job.next_try = self.clock() + self.retry_s
        self.pending = job

    def _retry(self) -> Path | None:
        """Write the pending forecast again when its time has come (computing it first if it never was)."""
        job = self.pending
        if job is None or self.clock() < job.next_try:
            return None
        if job.made is None:
            return self._forecast(job.t_ref, job.holder, job.inputs)
        return self._write(job)


def warm_up(loaded: LoadedModel, plot: bool = False) -> None:
    """Run the model once on a small blank input (and import the plotting code), so that the first
    real forecast does not pay for lazy initialisation."""
    from nowcast.forecast import forecast_array
    from nowcast.transforms import Transform

    cfg = loaded.config
    side = 32 * max(1, cfg.model.patch)
    frames = np.zeros((1, cfg.data.in_frames, cfg.model.channels, side, side), np.float32)
    started = time.perf_counter()
    try:
        forecast_array(loaded.model, Transform.from_config(cfg), frames, 1, time_step=cfg.data.time_step or 300)
        if plot:
            import nowcast.plots  # noqa: F401
    except Exception:  # noqa: BLE001 - warming up is an optimisation only
        log.debug("warm-up failed", exc_info=True)
    log.debug("warm-up in %.2f s", time.perf_counter() - started)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop``; a second one raises KeyboardInterrupt. Handlers restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("%s: stopping after the forecast under way, if any", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def watch(
    pattern: str,
    settings: PredictSettings,
    *,
    poll_s: float = POLL_S,
    settle_s: float = 1.0,
    retry_s: float = 5.0,
    state_path: Path | None = None,
    once: bool = False,
    max_forecasts: int = 0,
    stop: threading.Event | None = None,
) -> int:
    """``nowcast watch``: forecast each new frame of the files matching ``pattern`` until stopped.

    ``settings``: as ``predict`` (``output`` is required); ``poll_s``: seconds between looks;
    ``settle_s``, ``retry_s``, ``state_path``: as ``Watcher``;
    ``once``: look once (forecast at most once) and return; ``max_forecasts``: return after that many
    forecasts (0: no limit); ``stop``: an event that ends the loop (set by SIGTERM/SIGINT in the main
    thread). Returns the number of forecasts written. Raises NowcastError before watching for a bad
    checkpoint, a bad template, a state file that is not one, or a pattern whose directory does not exist.
    """
    from nowcast.models.checkpoint import load_model
    from nowcast.runtime import cpu_threads, set_threads

    if poll_s <= 0 or settle_s < 0:
        raise NowcastError(f"--poll {poll_s:g} --settle {settle_s:g}: expected seconds > 0 and >= 0")
    if settings.steps is not None and settings.steps < 1:
        raise NowcastError(f"--steps {settings.steps}: expected a positive number of lead times")
    if max_forecasts < 0:
        raise NowcastError(
            f"--max-forecasts {max_forecasts}: expected a number of forecasts >= 0 (0: run until stopped)"
        )
    static = os.path.expanduser(pattern.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0])
    folder = Path(os.path.dirname(static) or ".")  # the directory part before any glob character
    if not folder.is_dir():
        raise NowcastError(f"{pattern}: expected files in an existing directory, found no directory {folder}")
    loaded = load_model(settings.model)
    n_threads = set_threads(cpu_threads(settings.threads))  # once: the watcher's own load must not lower it later
    settings = dataclasses.replace(settings, threads=n_threads)
    watcher = Watcher(pattern, loaded, settings, settle_s=settle_s, retry_s=retry_s, state_path=state_path)
    warm_up(loaded, plot=settings.plot is not None)
    last = "none" if watcher.last_done is None else iso_time(watcher.last_done)
    log.info(
        "watching %s every %g s: model '%s', %d thread(s), output %s, state %s (last forecast %s)",
        pattern,
        poll_s,
        loaded.config.model.name,
        n_threads,
        watcher.output,
        watcher.state_path,
        last,
    )
    stop = stop or threading.Event()
    with _stop_on_signals(stop):
        while not stop.is_set():
            watcher.poll_once()
            if once or (max_forecasts and watcher.forecasts >= max_forecasts):
                break
            stop.wait(poll_s)
    log.info("stopped after %d forecast(s)", watcher.forecasts)
    return watcher.forecasts

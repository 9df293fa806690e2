"""Atomic output and locks: how every output file of nowcast is written. No torch, no xarray.

- ``atomic_output``: write to a temporary file in the target directory, fsync, rename onto the target.
- ``write_error``: a one-line ``OutputError`` naming why a write failed (a full disk named as such).
- ``output_lock`` / ``lock_path``: one writer per output directory at a time (overlapping cron runs).
- ``check_writable``: whether an output could be written, checked before any work is done.
- ``remove_stale_temporaries``: the temporaries a killed run left behind.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

from nowcast.errors import OutputError, first_line

log = logging.getLogger("nowcast.io")


_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _free_bytes(directory: Path) -> int | None:
    """Bytes free to an unprivileged user on ``directory``'s file system, None if unknown."""
    try:
        return int(shutil.disk_usage(directory).free)
    except OSError:
        return None


def write_error(target: Path, exc: BaseException, need_bytes: int = 1 << 20) -> OutputError:
    """A one-line ``OutputError`` for a failed write of ``target`` that names the cause.

    A full disk (or quota) is named as such: by the error number when the writer reports one, and by
    the free space left (under ``need_bytes``) when it does not, as the netCDF library, which says
    only ``NetCDF: HDF error``. Anything else is quoted.
    """
    why = first_line(exc)
    free = _free_bytes(target.parent)
    if getattr(exc, "errno", None) in _NO_SPACE or (free is not None and free < need_bytes):
        left = "" if free is None else f"{free:,} bytes free in {target.parent}"
        said = "" if "no space" in why.lower() or "quota" in why.lower() else why
        detail = "; ".join(x for x in (left, said) if x)
        return OutputError(
            f"{target}: expected room to write it, found no space left on the device"
            + (f" ({detail})" if detail else "")
            + "; the previous file, if any, is untouched"
        )
    return OutputError(f"{target}: expected a writable output file, found {why}")


@contextlib.contextmanager
def atomic_output(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path in the target's directory; on success fsync and rename it onto ``path``.

    The target is therefore either absent, the previous complete file, or the new complete file.
    On any exception the temporary file is removed and the target left as it was; an ``OSError`` for
    a full disk or quota (while writing, flushing or renaming) becomes a one-line ``OutputError``.
    Temporary names start with ``.`` and end with ``suffix`` so that globs of outputs skip them.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    except OSError as exc:
        raise write_error(target, exc, need_bytes=0) from None
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the target the usual permissions
    try:
        try:
            yield tmp
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                raise write_error(target, exc) from None
            raise
        with contextlib.suppress(OSError):  # make the rename durable where the platform allows
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        if tmp.exists():
            tmp.unlink()


_TEMP_CHARS = "[a-z0-9_]{8}"  # the random part of a ``tempfile.mkstemp`` name


def _temp_pattern(target: Path, suffix: str) -> re.Pattern[str]:
    """Names ``atomic_output(target, suffix)`` gives its temporary files, and no others."""
    return re.compile(rf"\.{re.escape(target.name)}\.{_TEMP_CHARS}{re.escape(suffix)}")


def remove_stale_temporaries(path: str | Path, *, suffix: str = ".tmp", min_age_s: float = 3600.0) -> list[Path]:
    """Delete temporary files that ``atomic_output(path, suffix)`` left behind (a killed run).

    Only files named exactly like its temporaries for this target, at least ``min_age_s`` seconds old,
    are removed. Under ``output_lock(path)`` no other nowcast run is writing ``path``, so
    ``min_age_s=0`` is safe there. Returns the removed paths; files that vanish meanwhile are skipped.
    """
    target = Path(path)
    pattern = _temp_pattern(target, suffix)
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False) and now - entry.stat(follow_symlinks=False).st_mtime >= min_age_s:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    if removed:
        log.debug(
            "removed %d stale temporary file(s) of %s: %s", len(removed), target, ", ".join(p.name for p in removed)
        )
    return removed


LOCK_NAME = ".nowcast.lock"
"""The one lock file ``output_lock`` keeps in each output directory."""


def check_writable(path: str | Path) -> None:
    """OutputError (one line) unless output ``path`` could be written: its directory, or the nearest
    existing one above it, is a writable directory. Creates nothing, so a run fails before its work and
    before any side effect."""
    target = Path(path)
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{target}: expected a writable output directory, found {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{target}: expected a writable output directory, found {parent} read-only")


def lock_path(path: str | Path) -> Path:
    """The lock file ``output_lock`` uses for ``path``: ``.nowcast.lock`` in its directory.

    One lock per directory, not per output: a templated output such as ``fc_{reference_time}.nc``
    written every 5 minutes for years then leaves one lock file in all, not one per forecast.
    """
    return Path(path).parent / LOCK_NAME


@contextlib.contextmanager
def output_lock(path: str | Path, timeout_s: float = 60.0, poll_s: float = 0.1) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on the output directory's ``.nowcast.lock`` while writing ``path``.

    Two runs writing into the same directory (overlapping cron jobs) thus never interleave: the second
    waits, polling every ``poll_s`` seconds, up to ``timeout_s`` seconds, then raises ``OutputError``.
    The kernel releases the lock when its holder exits, even on SIGKILL, so a killed run never leaves a
    stale lock. The lock file is left in place (deleting it would race with a waiting run), but there is
    only one per directory. The lock is not re-entrant: do not nest two locks on one directory.
    Yields the lock file's path. On platforms without ``fcntl`` no lock is taken.
    """
    target = Path(path)
    lock = lock_path(target)
    try:
        import fcntl
    except ImportError:  # not POSIX: atomic renames still keep the target whole
        log.debug("no fcntl on this platform: writing %s without a lock", target)
        yield lock
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise OutputError(f"{target}: expected a writable output directory, found {first_line(exc)} ({lock})") from None
    try:
        deadline = time.monotonic() + max(0.0, float(timeout_s))
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise OutputError(
                        f"{target}: expected to lock {lock} for writing, found it held by another run "
                        f"for {timeout_s:g} s (raise --lock-timeout, or look for a stuck nowcast process)"
                    ) from None
                if not waited:
                    log.debug("%s: another run holds %s; waiting up to %g s", target, lock, timeout_s)
                    waited = True
                time.sleep(poll_s)
        try:
            yield lock
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)

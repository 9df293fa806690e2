"""Motion of training windows, computed once per forecast time and kept on disk.

A Lagrangian training sample needs the Lucas-Kanade motion of its input frames (``motion.motion_field``,
the function inference uses), about 0.3-1 s of one core per 512-765 px frame. ``MotionCache`` computes it
lazily, for the forecast times training actually samples, and stores each field as one small file:

- named by a SHA-256 of what determines the field: the file (absolute path, size, modification time),
  the forecast time, the step, the number of motion frames and a format version, so a changed file or
  setting never reads a stale field;
- stored as float16 (2, H, W) pixels per step in an ``.npz`` that also holds its key: an entry whose key,
  shape or values do not check out (truncated, corrupt, foreign) is recomputed and rewritten, never used;
- written atomically (a temporary file in the same directory, then ``os.replace``): concurrent writers of
  the same entry (DataLoader workers, torchrun ranks) each write a complete file and the last rename wins;
  a writer killed mid-way leaves only a temporary, which is never read; a full disk is logged once and
  training goes on without the cache.

float16 keeps the field to 0.008 px for motions below 16 px per step (0.016 px up to 32).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from nowcast.errors import first_line
from nowcast.motion.flow import MOTION_FRAMES

log = logging.getLogger(__name__)

FORMAT = "nowcast-motion-v1"
"""Part of every key: a change of what is stored makes old entries unreachable."""


def file_identity(path: str | Path) -> str:
    """What identifies a source file's content for the cache: absolute path, size, modification time (ns)."""
    p = Path(path)
    try:
        st = p.stat()
        return f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        return f"{p.resolve()}|?|?"


def motion_key(identity: str, t_last: int, time_step: int, shape: tuple[int, ...]) -> str:
    """The cache key of the motion ending at frame time ``t_last`` (ns since 1970) of a file at ``time_step`` s."""
    return f"{FORMAT}|{identity}|{int(t_last)}|{int(time_step)}|{MOTION_FRAMES}|{'x'.join(map(str, shape))}"


class MotionCache:
    """Motion fields by key, in memory for the process and on disk under ``directory`` (None: memory only)."""

    def __init__(self, directory: str | Path | None, memory_entries: int = 64) -> None:
        self.directory = Path(directory) if directory else None
        self.memory: dict[str, np.ndarray] = {}
        self.memory_entries = memory_entries
        self.computed = 0
        """Fields this process computed (misses), for logs and tests."""
        self._write_failed = False

    def path(self, key: str) -> Path | None:
        """The file of ``key`` (None without a directory)."""
        if self.directory is None:
            return None
        return self.directory / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npz"

    def get(self, key: str, shape: tuple[int, int], compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The (2, H, W) float32 field of ``key``: from memory, else a valid disk entry, else ``compute()``
        (then stored). ``shape``: (H, W), which a valid entry must have."""
        if key in self.memory:
            return self.memory[key]
        field = self._read(key, shape)
        if field is None:
            field = np.asarray(compute(), dtype=np.float32)
            self.computed += 1
            self._write(key, field)
            field = field.astype(np.float16).astype(np.float32)  # as a later read returns it
        self.memory[key] = field
        while len(self.memory) > self.memory_entries:
            self.memory.pop(next(iter(self.memory)))
        return field

    def _read(self, key: str, shape: tuple[int, int]) -> np.ndarray | None:
        path = self.path(key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                stored_key, field = str(z["key"]), z["v"]
            ok = stored_key == key and field.shape == (2, *shape) and bool(np.isfinite(field).all())
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            log.warning("motion cache: %s unreadable (%s); computing it again", path, first_line(exc))
            return None
        if not ok:
            log.warning("motion cache: %s does not hold the expected field; computing it again", path)
            return None
        return field.astype(np.float32)

    def _write(self, key: str, field: np.ndarray) -> None:
        path = self.path(key)
        if path is None or self._write_failed:
            return
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, key=np.array(key), v=field.astype(np.float16))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            self._write_failed = True  # e.g. a full disk: train on, computing motion in memory only
            log.warning("motion cache: cannot write %s (%s); going on without it", path, first_line(exc))
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)

"""Output paths: ``-o`` and ``--plot`` templates filled with the reference time and the input's stem."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from nowcast.errors import OutputError, first_line
from nowcast.io.reading import NS

DEFAULT_OUTPUT = "{stem}_nowcast_{reference_time:%Y%m%d%H%M}.nc"
"""Output name when ``-o`` is not given, in the directory of the first input file."""


class FrameNumber(int):
    """The reference "time" of frame-numbered input (no dates): ``{reference_time:...}`` with any format
    gives ``frame000015`` rather than a date of 1970."""

    def __format__(self, spec: str) -> str:
        return f"frame{int(self):06d}"


def expand_template(template: str, reference_time: int, stem: str, what: str, frame_step: int = 0) -> Path:
    """``template`` with ``{reference_time:...}`` and ``{stem}`` filled in; OutputError if it is malformed.
    ``frame_step``: seconds per frame of frame-numbered input (0: dated), whose frame number fills it."""
    ref: object = datetime.fromtimestamp(reference_time / NS, tz=timezone.utc).replace(tzinfo=None)
    if frame_step:
        ref = FrameNumber(reference_time // (frame_step * NS))
    try:
        text = template.format(reference_time=ref, stem=stem)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
        why = f"unknown field {exc}" if isinstance(exc, (KeyError, IndexError)) else first_line(exc)
        raise OutputError(
            f"{what} {template}: expected a path using only {{reference_time:%Y%m%d%H%M}} and {{stem}}, found {why}"
        ) from None
    if not text.strip():
        raise OutputError(f"{what} {template!r}: expected a file path, found an empty one")
    return Path(os.path.expanduser(text))


def output_path(
    output: str | Path | None, reference_time: int, first_input: str, inputs: Sequence[str], frame_step: int = 0
) -> Path:
    """The forecast's path: ``-o`` expanded (a directory gets the default name), else the default name
    next to the first input. Never one of the input files. ``frame_step``: as ``expand_template``'s."""
    stem = Path(first_input).stem
    default = expand_template(DEFAULT_OUTPUT, reference_time, stem, "default output", frame_step)
    if output is None:
        path = Path(first_input).parent / default
    else:
        path = expand_template(str(output), reference_time, stem, "-o", frame_step)
        if path.is_dir():
            path = path / default
    not_an_input(path, inputs, "-o")
    return path


def not_an_input(path: Path, inputs: Sequence[str], what: str) -> None:
    for f in inputs:
        try:
            same = path.exists() and os.path.samefile(path, f)
        except OSError:
            same = False
        if same or Path(f).resolve() == path.resolve():
            raise OutputError(f"{what} {path}: expected an output path, found an input file (it is never overwritten)")

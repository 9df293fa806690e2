"""Output paths: ``-o`` and ``--plot`` templates filled with the reference time and the input's stem."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from nowcast.errors import OutputError
from nowcast.io.reading import NS

DEFAULT_OUTPUT = "{stem}_nowcast_{reference_time:%Y%m%d%H%M}.nc"
"""Output name when ``-o`` is not given, in the directory of the first input file."""


def expand_template(template: str, reference_time: int, stem: str, what: str) -> Path:
    """``template`` with ``{reference_time:...}`` and ``{stem}`` filled in; OutputError if it is malformed."""
    ref = datetime.fromtimestamp(reference_time / NS, tz=timezone.utc).replace(tzinfo=None)
    try:
        text = template.format(reference_time=ref, stem=stem)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
        why = f"unknown field {exc}" if isinstance(exc, (KeyError, IndexError)) else " ".join(str(exc).split())
        raise OutputError(
            f"{what} {template}: expected a path using only {{reference_time:%Y%m%d%H%M}} and {{stem}}, found {why}"
        ) from None
    if not text.strip():
        raise OutputError(f"{what} {template!r}: expected a file path, found an empty one")
    return Path(os.path.expanduser(text))


def output_path(output: str | Path | None, reference_time: int, first_input: str, inputs: Sequence[str]) -> Path:
    """The forecast's path: ``-o`` expanded (a directory gets the default name), else the default name
    next to the first input. Never one of the input files."""
    stem = Path(first_input).stem
    if output is None:
        path = Path(first_input).parent / expand_template(DEFAULT_OUTPUT, reference_time, stem, "default output")
    else:
        path = expand_template(str(output), reference_time, stem, "-o")
        if path.is_dir():
            path = path / expand_template(DEFAULT_OUTPUT, reference_time, stem, "default output")
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

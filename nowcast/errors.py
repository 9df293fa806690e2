"""The project's exceptions.

Library code raises these; only ``cli.py`` turns them into a one-line message and an exit code.
Every message names the file (or setting), what was expected and what was found.
"""

from __future__ import annotations


class NowcastError(Exception):
    """Base of every expected failure: bad input, bad config, bad checkpoint. Exit code 2."""

    exit_code = 2


class InputError(NowcastError):
    """A radar file or archive that cannot be used as input."""


class StaleInputError(InputError):
    """The newest input frame is older than ``--max-age`` allows."""


class ConfigError(NowcastError):
    """A configuration file or ``--set`` override with unknown keys or invalid values."""


class CheckpointError(NowcastError):
    """A checkpoint that is missing, corrupt, truncated, foreign or of a newer format."""


class OutputError(NowcastError):
    """An output that cannot be written (bad path template, lock held too long, unwritable directory)."""


class MissingDependencyError(NowcastError):
    """A package that only one input format needs (h5py, pygrib, GDAL, ...) is not installed."""


class TrainingDivergedError(NowcastError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


def first_line(exc: BaseException) -> str:
    """A short, one-line description of an exception raised by a reader or writer, for a message."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())

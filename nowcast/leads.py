"""Forecast horizons: ``--lead DURATION`` and ``--steps N`` turned into a number of lead times, said once for
``predict``, ``watch`` and ``evaluate``.

The default horizon is a duration, ``DEFAULT_LEAD_S`` (the next hour), the same on every radar whatever
its time step: 12 lead times at 5 minutes, 30 at 2 minutes, 4 at 15 minutes. ``--steps`` counts frames
instead; giving both is an error. Frame-numbered input (image sequences without dates) and models
trained on values that are not rain (``transform.kind: minmax``) forecast the model's ``out_frames``
by default: their frames have no duration worth the name.
"""

from __future__ import annotations

import math
import re

from nowcast.config import lead_times
from nowcast.errors import NowcastError

DEFAULT_LEAD_S = 3600
"""The default forecast horizon in seconds: the next hour."""

_UNIT_SECONDS = {
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
}
_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]+)\s*")


def parse_duration(text: str, option: str = "--lead") -> int:
    """Seconds (a positive whole number) of a duration such as ``60min``, ``1h``, ``90m``, ``1h30min``,
    ``45 s`` or ``1.5h``; units h/hr/hour(s), m/min/minute(s), s/sec/second(s).

    Raises NowcastError (exit 2) naming ``option`` for anything else, a bare number included (minutes or
    seconds? say which).
    """
    raw = str(text).strip().lower()
    total, pos = 0.0, 0
    while pos < len(raw):
        part = _PART.match(raw, pos)
        if part is None or part.group(2) not in _UNIT_SECONDS:
            break
        total += float(part.group(1)) * _UNIT_SECONDS[part.group(2)]
        pos = part.end()
    if raw and pos == len(raw) and total >= 1 and abs(total - round(total)) < 1e-6:
        return int(round(total))
    hint = " (a bare number: add its unit)" if re.fullmatch(r"\d+(\.\d*)?", raw) else ""
    raise NowcastError(
        f"{option}: expected a positive duration in whole seconds such as 60min, 1h, 90m or 1h30min, "
        f"found {text!r}{hint}"
    )


def check_horizon(steps: int | None, lead_s: int | None) -> None:
    """Raise NowcastError unless at most one of ``--steps`` and ``--lead`` is given and it is positive;
    before any file is read."""
    if steps is not None and lead_s is not None:
        raise NowcastError(
            "--steps/--lead: expected one of them (--steps counts lead times, --lead is a duration), found both "
            f"(--steps {steps}, --lead {lead_text(lead_s)})"
        )
    if steps is not None:
        lead_times(steps, 1)
    if lead_s is not None and lead_s <= 0:
        raise NowcastError(f"--lead: expected a positive duration, found {lead_s} s")


def forecast_steps(
    steps: int | None,
    lead_s: int | None,
    time_step: int,
    trained: int,
    *,
    in_frames_only: bool = False,
) -> int:
    """The number of lead times to forecast at ``time_step`` seconds.

    ``steps`` (``--steps``) as given; ``lead_s`` (``--lead``, seconds): the fewest steps reaching it,
    ceil(lead_s / time_step) (60 min at 7 min: 9 steps, to +63 min); neither: ``DEFAULT_LEAD_S`` the
    same way, or ``trained`` (the model's ``out_frames``) when ``in_frames_only`` (frame-numbered input
    or a model of values that are not rain), where ``lead_s`` is refused.
    """
    check_horizon(steps, lead_s)
    if steps is not None:
        return lead_times(steps, trained)
    if in_frames_only:
        if lead_s is not None:
            raise NowcastError(
                f"--lead: expected dated frames and a rain model, found frame numbers or a model of values that "
                f"are not rain (transform minmax), whose horizon is a number of frames: use --steps N "
                f"(default {trained}, as trained)"
            )
        return lead_times(None, trained)
    if time_step <= 0:
        raise NowcastError(f"--lead: expected a positive time step in seconds, found {time_step}")
    return max(1, math.ceil((DEFAULT_LEAD_S if lead_s is None else lead_s) / time_step - 1e-9))


def lead_text(seconds: float) -> str:
    """A lead time for messages and options: ``35min``, ``1h``, ``90s``."""
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    return f"{seconds / 60:g}min" if seconds % 60 == 0 else f"{seconds:g}s"


__all__ = ["DEFAULT_LEAD_S", "check_horizon", "forecast_steps", "lead_text", "parse_duration"]

"""Rain rate <-> model space: what the network sees. Pure numpy (no torch).

Model space (DESIGN section 4):
- ``dbz``: R (mm/h) -> Z = a R^b -> dBZ = 10 log10 Z, scaled to [0, 1] over [dbz_min, dbz_max] and
  clipped there. Rates whose dBZ is at or below ``dbz_min`` map to 0 and come back as 0 mm/h.
- ``log``: log10(R + eps); the inverse gives 0 below the lowest representable rate.
- ``linear``: R / scale.
- ``minmax``: (v - value_min) / (value_max - value_min), clipped to [0, 1]; for data that are not rain
  (e.g. image intensities 0-255). ``nowcast train`` takes the range from the training data when it is
  not configured and stores it in the resolved config, so checkpoints carry it.
Values above the top of a bounded model space (``dbz``: the rate at ``dbz_max``; ``minmax``:
``value_max``) are capped; ``forward`` logs one warning per transform when that happens.
NaN (no data) stays NaN in both directions; it becomes 0 in model space just before the network.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from nowcast.config import TransformConfig
from nowcast.errors import ConfigError
from nowcast.units import ZR_A, ZR_B, dbz_to_rate, rate_to_dbz

if TYPE_CHECKING:
    from nowcast.config import Config

log = logging.getLogger(__name__)


_DEFAULT = TransformConfig()
_NOTED: set[tuple[str, float, str]] = set()
"""(kind, limit, side) of the capping ``Transform.note_capped`` has reported in this process."""


@dataclass(frozen=True)
class Transform:
    """Forward (mm/h -> model space) and inverse maps of one configured model space.

    The fields are those of ``TransformConfig`` (their meaning and defaults are documented there) and
    the Z-R relation of ``DataConfig``; ``from_config`` builds one from a whole ``Config``.
    """

    kind: str = _DEFAULT.kind
    dbz_min: float = _DEFAULT.dbz_min
    dbz_max: float = _DEFAULT.dbz_max
    log_eps: float = _DEFAULT.log_eps
    linear_scale: float = _DEFAULT.linear_scale
    zr_a: float = ZR_A
    zr_b: float = ZR_B
    value_min: float | None = _DEFAULT.value_min
    value_max: float | None = _DEFAULT.value_max
    _warned: list[bool] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def from_config(cls, cfg: Config) -> Transform:
        """The transform of a full ``Config`` (Z-R constants come from its data section)."""
        t = cfg.transform
        if t.kind == "minmax" and (t.value_min is None or t.value_max is None):
            raise ConfigError(
                "transform.value_min/value_max: expected numbers for transform.kind=minmax (nowcast train "
                f"takes them from the training data), found {t.value_min}, {t.value_max}"
            )
        return cls(
            t.kind,
            t.dbz_min,
            t.dbz_max,
            t.log_eps,
            t.linear_scale,
            cfg.data.zr_a,
            cfg.data.zr_b,
            t.value_min,
            t.value_max,
        )

    @property
    def max_value(self) -> float:
        """Highest value (mm/h, or data units for ``minmax``) the model space represents; inf if unbounded."""
        if self.kind == "dbz":
            return float(dbz_to_rate(self.dbz_max, self.zr_a, self.zr_b))
        if self.kind == "minmax":
            return float(self.value_max)  # type: ignore[arg-type]
        return float("inf")

    def _beyond(self, r: np.ndarray) -> tuple[str, float, float] | None:
        """Where ``r`` leaves the representable range: ("below", lowest value, value_min) for ``minmax``,
        ("above", highest value, max_value), or None when it stays inside (NaN ignored)."""
        top = self.max_value
        if not np.isfinite(top) or r.size == 0 or not np.isfinite(r).any():
            return None
        if self.kind == "minmax":
            low = float(np.nanmin(r))
            if low < float(self.value_min) - 1e-6 * (1 + abs(float(self.value_min))):  # type: ignore[arg-type]
                return "below", low, float(self.value_min)  # type: ignore[arg-type]
        high = float(np.nanmax(r))
        return ("above", high, top) if high > top * (1 + 1e-6) + 1e-6 else None

    def _limit_text(self) -> str:
        """The configured limit, e.g. ``transform.dbz_max=60 dBZ = 205 mm/h`` or ``transform.value_max=250``."""
        if self.kind == "minmax":
            return f"transform.value_max={self.value_max:g}"
        return f"transform.dbz_max={self.dbz_max:g} dBZ = {self.max_value:.4g} mm/h"

    def _check_range(self, r: np.ndarray) -> None:
        """Training data: warn once per transform when ``r`` holds values the model space cannot represent
        (they are capped), naming the key to change."""
        beyond = None if self._warned else self._beyond(r)
        if beyond is None:
            return
        self._warned.append(True)
        side, found, limit = beyond
        if side == "below":
            log.warning(
                "data exceed the range of the minmax transform: found values down to %.4g, below "
                "transform.value_min=%g; they are capped there",
                found,
                limit,
            )
            return
        key = "transform.value_max" if self.kind == "minmax" else "transform.dbz_max"
        log.warning(
            "data exceed the range of the %s transform: found values up to %.4g, above %s; they are "
            "capped there (raise %s, or use transform.kind=minmax for data that are not rain)",
            self.kind,
            found,
            self._limit_text(),
            key,
        )

    def note_capped(self, r: np.ndarray) -> None:
        """Forecast input: say once per process (INFO) that values beyond the model's range are capped by
        its transform, without training advice (a forecast cannot change the model)."""
        beyond = self._beyond(r)
        if beyond is None or (self.kind, self.max_value, beyond[0]) in _NOTED:
            return
        _NOTED.add((self.kind, self.max_value, beyond[0]))
        side, found, limit = beyond
        unit = "" if self.kind == "minmax" else " mm/h"
        verb = "capped at" if side == "above" else "raised to"
        log.info(
            "input values %s %.4g%s (found %.4g) are %s %.4g%s by the model's %s transform",
            side,
            limit,
            unit,
            found,
            verb,
            limit,
            unit,
            self.kind,
        )

    @property
    def min_rate(self) -> float:
        """Lowest positive rate (mm/h) that the model space represents; the inverse gives 0 below it."""
        if self.kind == "dbz":
            return float(dbz_to_rate(self.dbz_min, self.zr_a, self.zr_b))
        if self.kind == "log":
            return float(self.log_eps)
        return 0.0

    def forward(self, rate: np.ndarray, check: bool = True) -> np.ndarray:
        """Model-space values (float32) of rain rates (mm/h); NaN stays NaN. ``check``: warn (once) about
        data outside the representable range (off for thresholds, which are settings, not data)."""
        r = np.asarray(rate, dtype=np.float32)
        if check:
            self._check_range(r)
        if self.kind == "dbz":
            with np.errstate(invalid="ignore"):
                dbz = rate_to_dbz(np.maximum(r, 0.0), self.zr_a, self.zr_b)
            x = (dbz - self.dbz_min) / (self.dbz_max - self.dbz_min)
            x = np.where(np.isnan(r), np.nan, np.clip(np.nan_to_num(x, neginf=0.0), 0.0, 1.0))
        elif self.kind == "log":
            x = np.log10(np.maximum(r, 0.0) + self.log_eps)
        elif self.kind == "linear":
            x = r / self.linear_scale
        elif self.kind == "minmax":
            lo, hi = float(self.value_min), float(self.value_max)  # type: ignore[arg-type]
            x = np.where(np.isnan(r), np.nan, np.clip((r - lo) / max(hi - lo, 1e-12), 0.0, 1.0))
        else:
            raise ValueError(f"transform kind: expected dbz, log, linear or minmax, found {self.kind!r}")
        return np.asarray(x, dtype=np.float32)

    def inverse(self, x: np.ndarray) -> np.ndarray:
        """Rain rates (mm/h, float32, >= 0) of model-space values; 0 below ``min_rate``; NaN stays NaN."""
        x = np.asarray(x, dtype=np.float32)
        if self.kind == "dbz":
            # R = (10^(dBZ/10) / a)^(1/b) = 10^((dBZ - 10 log10 a) / (10 b)), in float32 for speed
            dbz = self.dbz_min + np.clip(x, 0.0, 1.0) * np.float32(self.dbz_max - self.dbz_min)
            r = np.power(
                np.float32(10.0), (dbz - np.float32(10.0 * np.log10(self.zr_a))) / np.float32(10.0 * self.zr_b)
            )
            r = np.where(x <= 0.0, np.float32(0.0), r)
        elif self.kind == "log":
            r = np.power(np.float32(10.0), x) - np.float32(self.log_eps)
            r = np.where(r < self.log_eps * 1e-3, np.float32(0.0), r)
        elif self.kind == "linear":
            r = np.maximum(x * np.float32(self.linear_scale), np.float32(0.0))
        elif self.kind == "minmax":
            lo, hi = np.float32(self.value_min), np.float32(self.value_max)
            r = lo + np.clip(x, 0.0, 1.0) * (hi - lo)
        else:
            raise ValueError(f"transform kind: expected dbz, log, linear or minmax, found {self.kind!r}")
        r = np.where(np.isnan(x), np.nan, r)
        return r.astype(np.float32)

    def threshold(self, rate: float) -> float:
        """Model-space value of the rain rate ``rate`` (mm/h), e.g. for intensity-balanced loss weights."""
        return float(self.forward(np.array([rate], dtype=np.float32), check=False)[0])

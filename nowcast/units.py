"""Rain-rate units and the facts about them that the whole package shares. Pure numpy, no torch.

- The Z-R relation (Marshall-Palmer, Z = a R^b) and its two directions.
- ``RAIN_THRESHOLD``: the rain rate that separates rain from no rain for motion, S-PROG, the
  statistics of ``nowcast info`` and the synthetic generator.
- dBR (10 log10 R), the space pySTEPS runs Lucas-Kanade and S-PROG in, with its zero value.
"""

from __future__ import annotations

import numpy as np

ZR_A = 200.0
"""Marshall-Palmer Z-R relation Z = a R^b: the prefactor a (mm^6 m^-3 per (mm/h)^b), the default everywhere."""
ZR_B = 1.6
"""Marshall-Palmer Z-R relation: the exponent b."""
RAIN_THRESHOLD = 0.1
"""Rain rate (mm/h) from which a pixel counts as rainy (pySTEPS' ``threshold=0.1``)."""
DBR_ZERO = -15.0
"""dBR given to dry and no-data pixels before optical flow and S-PROG (pySTEPS examples: ``zerovalue=-15``)."""


def rate_to_dbz(rate: np.ndarray, a: float = ZR_A, b: float = ZR_B) -> np.ndarray:
    """Reflectivity (dBZ) of rain rate ``rate`` (mm/h) by Z = a R^b; 0 mm/h gives -inf."""
    rate = np.asarray(rate, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10.0 * np.log10(a) + 10.0 * b * np.log10(rate)


def dbz_to_rate(dbz: np.ndarray, a: float = ZR_A, b: float = ZR_B) -> np.ndarray:
    """Rain rate (mm/h) of reflectivity ``dbz`` by R = (Z / a)^(1/b); NaN stays NaN."""
    dbz = np.asarray(dbz, dtype=np.float64)
    return np.power(10.0 ** (dbz / 10.0) / a, 1.0 / b)


def to_dbr(rate: np.ndarray) -> np.ndarray:
    """10 log10(R) (dBR) of rain rates (any shape, mm/h), ``DBR_ZERO`` below ``RAIN_THRESHOLD`` and where no data.

    The same as ``pysteps.utils.transformation.dB_transform(R, threshold=0.1, zerovalue=-15)`` followed
    by filling no-data with the zero value, as pySTEPS' examples do before Lucas-Kanade (which needs
    finite values).
    """
    r = np.asarray(rate, dtype=np.float64)
    wet = np.isfinite(r) & (r >= RAIN_THRESHOLD)
    out = np.full(r.shape, DBR_ZERO)
    out[wet] = 10.0 * np.log10(r[wet])
    return out


def dbr_to_rate(dbr: np.ndarray) -> np.ndarray:
    """dBR (any shape), NaN = no data -> mm/h float32: 0 below ``RAIN_THRESHOLD``, NaN kept."""
    thr = 10.0 * np.log10(RAIN_THRESHOLD)
    with np.errstate(invalid="ignore"):
        rate = np.where(dbr >= thr, 10.0 ** (dbr / 10.0), 0.0)
    return np.where(np.isfinite(dbr), rate, np.nan).astype(np.float32)

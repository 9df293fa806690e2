"""Synthetic radar sequences: moving, growing and decaying rain cells, in the schema of the real files.

The rain field is a sum of anisotropic Gaussian cells of two kinds: wide, light "systems" (stratiform
rain, peaks of a few mm/h) and small, intense convective cores (peaks of 10-100 mm/h), half of them
embedded in a system. Every cell is born at a random time and place, grows to its peak intensity and
size at mid-life and decays again. Cell centres move with a smooth velocity field (a mean wind of 1-3
pixels per 5 minutes, turning slowly, plus a few long-wave perturbations that drift in time), evaluated
at each centre (midpoint rule), so the pattern is advected without deforming: exactly what an
optical-flow extrapolation can track and a ConvLSTM can learn. The summed field minus a small offset
is the rain rate: mostly light rain with a few intense cores and smooth edges. A disc of radius
0.48 * min(H, W) around the centre is the radar coverage; outside it the data are NaN.

With ``growth="orographic"`` the rain is enhanced over fixed high ground: a few hills (Gaussian,
0.08-0.16 of the domain wide, drawn from the seed) multiply the rain rate by up to 1 + ``OROGRAPHIC_GAIN``
at their tops, and a light background (``OROGRAPHIC_BACKGROUND``, moist air) gives rain of its own over
the higher ground. The enhancement stays where the hills are while the rain moves through: rain intensifies
as it moves onto the high ground and weakens as it leaves. Its growth and decay are predictable from the
frames (where the rain has been enhanced, it will be again) but not by S-PROG or any extrapolation,
which carry the enhanced rain on with the wind (``scripts/research/learnability.py``).

With ``growth="trend"`` every cell strengthens or weakens steadily through its life instead of the
symmetric rise and fall: its rain rate is its peak times exp(r (t - mid-life)), with r drawn per cell
(+-``TREND_RATE`` per hour, either sign, from its own generator), the factor bounded by
``TREND_MAX_FACTOR`` either way, fading in and out over the first and last ``TREND_FADE`` of its life.
Its size follows the fades only. The change of the next hour continues the change of the last half hour
where the cell is, in the frame moving with the rain: predictable from the frames, but not by S-PROG or
any extrapolation, which carry rain on at its present rate (``scripts/research/learnability.py``).

Everything is drawn from one ``numpy.random.Generator(seed)``: the same arguments give the same data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from nowcast import __version__
from nowcast.errors import NowcastError
from nowcast.io.atomic import atomic_output
from nowcast.io.writing import PACK_MAX, PACKING
from nowcast.units import RAIN_THRESHOLD

log = logging.getLogger(__name__)

RAIN_OFFSET = 0.1  # mm/h subtracted from the summed cells: rain edges fall smoothly to zero
COVERAGE_RADIUS = 0.48  # radar coverage disc radius as a fraction of min(H, W)

# The fictitious radar site at the projection origin (centre of the grid).
_SITE_LAT = 50.0
_SITE_LON = 10.0

_PROJ4 = "+proj=aeqd +lat_0={lat:g} +lon_0={lon:g} +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"
_WKT = (
    'PROJCRS["nowcast synthetic radar (azimuthal equidistant)",'
    'BASEGEOGCRS["unknown",DATUM["Unknown based on WGS 84 ellipsoid",'
    'ELLIPSOID["WGS 84",6378137,298.257223563,LENGTHUNIT["metre",1],ID["EPSG",7030]]],'
    'PRIMEM["Greenwich",0,ANGLEUNIT["degree",0.0174532925199433],ID["EPSG",8901]]],'
    'CONVERSION["unknown",METHOD["Azimuthal Equidistant",ID["EPSG",1125]],'
    'PARAMETER["Latitude of natural origin",{lat:g},ANGLEUNIT["degree",0.0174532925199433],ID["EPSG",8801]],'
    'PARAMETER["Longitude of natural origin",{lon:g},ANGLEUNIT["degree",0.0174532925199433],ID["EPSG",8802]],'
    'PARAMETER["False easting",0,LENGTHUNIT["metre",1],ID["EPSG",8806]],'
    'PARAMETER["False northing",0,LENGTHUNIT["metre",1],ID["EPSG",8807]]],'
    'CS[Cartesian,2],AXIS["(E)",east,ORDER[1],LENGTHUNIT["metre",1,ID["EPSG",9001]]],'
    'AXIS["(N)",north,ORDER[2],LENGTHUNIT["metre",1,ID["EPSG",9001]]]]'
)


@dataclass(frozen=True)
class _CellKind:
    """How one kind of rain cell is drawn. Sizes are Gaussian sigmas in pixels for a 256-pixel domain."""

    alive_per_mpx: float  # mean number of cells alive per million pixels of domain
    lifetime_min: tuple[float, float]  # uniform range, minutes
    peak_median: float  # mm/h, median of the lognormal peak intensity
    peak_log_sd: float  # standard deviation of log(peak)
    sigma_major: tuple[float, float]  # uniform range, pixels
    aspect: tuple[float, float]  # minor / major sigma, uniform range


_SYSTEM = _CellKind(
    alive_per_mpx=220.0,
    lifetime_min=(90.0, 300.0),
    peak_median=2.5,
    peak_log_sd=0.45,
    sigma_major=(8.0, 22.0),
    aspect=(0.35, 0.8),
)
_CORE = _CellKind(
    alive_per_mpx=400.0,
    lifetime_min=(25.0, 90.0),
    peak_median=16.0,
    peak_log_sd=0.7,
    sigma_major=(1.8, 4.5),
    aspect=(0.5, 0.9),
)
_EMBEDDED_FRACTION = 0.6  # share of convective cores born inside a living system


class _Wind:
    """A smooth, slowly varying velocity field in pixels per step: ``u`` along columns, ``v`` along rows."""

    def __init__(
        self, rng: np.random.Generator, shape: tuple[int, int], step_s: int, n_modes: int = 3, scale: float = 1.0
    ):
        steps_per_hour = 3600.0 / step_s
        self.speed = rng.uniform(1.2, 3.0) * step_s / 300.0 * scale  # 1.2-3 pixels per 5 minutes, times scale
        self.direction = rng.uniform(0.0, 2.0 * np.pi)
        self.turn = rng.normal(0.0, 0.15) / steps_per_hour  # rad per step (about 9 degrees per hour)
        extent = float(max(shape))
        wavelength = rng.uniform(1.2, 3.0, n_modes) * extent
        angle = rng.uniform(0.0, 2.0 * np.pi, n_modes)
        self.k = np.stack([np.cos(angle), np.sin(angle)], axis=1) * (2.0 * np.pi / wavelength)[:, None]  # (K, 2)
        self.omega = 2.0 * np.pi / (rng.uniform(1.0, 4.0, n_modes) * steps_per_hour)  # one period in 1-4 h
        self.phase = rng.uniform(0.0, 2.0 * np.pi, (2, n_modes))
        self.amp = rng.normal(0.0, 0.3 * self.speed / np.sqrt(n_modes), (2, n_modes))

    def __call__(self, col: np.ndarray, row: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        theta = self.direction + self.turn * t
        arg = col[:, None] * self.k[:, 0] + row[:, None] * self.k[:, 1] + self.omega * t  # (N, K)
        u = self.speed * np.cos(theta) + (self.amp[0] * np.sin(arg + self.phase[0])).sum(axis=1)
        v = self.speed * np.sin(theta) + (self.amp[1] * np.sin(arg + self.phase[1])).sum(axis=1)
        return u, v


def _draw_cells(
    rng: np.random.Generator,
    kind: _CellKind,
    shape: tuple[int, int],
    frames: int,
    step_s: int,
    scale: float,
    spin_up: int,
) -> dict[str, np.ndarray]:
    """Birth step, lifetime, peak, sizes, orientation and birth position of every cell of one kind."""
    height, width = shape
    mean_life = np.mean(kind.lifetime_min) * 60.0 / step_s  # steps
    alive = kind.alive_per_mpx * height * width / 1e6 / scale**2  # cells shrink with the domain: same look
    span = frames + spin_up
    n = max(int(round(alive / mean_life * span)), 1)
    # Births spread evenly over the span (jittered), so the number of living cells stays steady.
    birth = (np.arange(n) + rng.uniform(0.0, 1.0, n)) * (span / n) - spin_up
    lifetime = np.maximum(rng.uniform(*kind.lifetime_min, n) * 60.0 / step_s, 2.0)
    margin = 0.15 * max(height, width)
    sigma = np.maximum(rng.uniform(*kind.sigma_major, n) * scale, 1.2)
    return {
        "birth": birth,
        "life": lifetime,
        "peak": np.minimum(kind.peak_median * np.exp(kind.peak_log_sd * rng.standard_normal(n)), 150.0),
        "sa": sigma,
        "sb": np.maximum(sigma * rng.uniform(*kind.aspect, n), 1.0),
        "angle": rng.uniform(0.0, np.pi, n),
        "col": rng.uniform(-margin, width + margin, n),
        "row": rng.uniform(-margin, height + margin, n),
    }


def _embed(rng: np.random.Generator, cores: dict[str, np.ndarray], systems: dict[str, np.ndarray]) -> np.ndarray:
    """Choose a parent system alive at each core's birth (-1: none); the core starts near the parent's centre."""
    n = cores["birth"].size
    alive = (systems["birth"][None, :] <= cores["birth"][:, None]) & (
        cores["birth"][:, None] < systems["birth"][None, :] + systems["life"][None, :]
    )  # (cores, systems)
    pick = np.where(alive, rng.random(alive.shape), -1.0)
    parent = np.where(alive.any(axis=1) & (rng.random(n) < _EMBEDDED_FRACTION), pick.argmax(axis=1), -1)
    return parent


def _tracks(
    wind: _Wind, cells: dict[str, np.ndarray], parent: np.ndarray, offset: np.ndarray, t0: int, frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """Centre positions (frames, cells) of all cells, integrated from ``t0`` with the midpoint rule.

    A cell stays at its birth position until it is born; an embedded core (``parent >= 0``) is placed at
    its parent's centre plus ``offset`` at the step of its birth (parents come first in the arrays).
    """
    col, row = cells["col"].copy(), cells["row"].copy()
    birth_step = np.ceil(cells["birth"]).astype(int)
    cols = np.empty((frames, col.size))
    rows = np.empty((frames, col.size))
    embedded = np.flatnonzero(parent >= 0)
    for t in range(t0, frames):
        starting = embedded[birth_step[embedded] == t]
        col[starting] = col[parent[starting]] + offset[starting, 0]
        row[starting] = row[parent[starting]] + offset[starting, 1]
        if t >= 0:
            cols[t], rows[t] = col, row
        moving = birth_step <= t
        u, v = wind(col[moving], row[moving], t)
        uh, vh = wind(col[moving] + 0.5 * u, row[moving] + 0.5 * v, t + 0.5)
        col[moving] += uh
        row[moving] += vh
    return cols, rows


def _render(
    frame_cols: np.ndarray,
    frame_rows: np.ndarray,
    t: int,
    cells: dict[str, np.ndarray],
    shape: tuple[int, int],
    step_s: int = 300,
) -> np.ndarray:
    """Sum of the living cells' Gaussians on one frame (mm/h, before the offset), each on its own window.

    Cells carrying a ``rate`` (per hour; ``growth="trend"``) change steadily through their life; the
    others rise over the first 30 % of it and fall over the last 30 %.
    """
    height, width = shape
    out = np.zeros(shape, dtype=np.float64)
    age = (t - cells["birth"]) / cells["life"]
    living = np.flatnonzero((age > 0.0) & (age < 1.0))
    fade = TREND_FADE if "rate" in cells else 0.3
    ramp = np.clip(np.minimum(age[living], 1.0 - age[living]) / fade, 0.0, 1.0)
    envelope = ramp * ramp * (3.0 - 2.0 * ramp)  # smooth rise and fall at the ends of life
    peak = cells["peak"][living] * envelope
    if "rate" in cells:
        hours = (age[living] - 0.5) * cells["life"][living] * step_s / 3600.0  # from mid-life
        bound = np.log(TREND_MAX_FACTOR)
        peak = peak * np.exp(np.clip(cells["rate"][living] * hours, -bound, bound))
    growth = 0.55 + 0.45 * np.sqrt(envelope)  # cells are small when young and old
    sa, sb = cells["sa"][living] * growth, cells["sb"][living] * growth
    # Beyond this radius a cell adds less than 0.01 mm/h (one packing step).
    radius = np.ceil(np.maximum(sa, sb) * np.sqrt(2.0 * np.log(np.maximum(peak, 0.011) / 0.01))) + 1
    cos, sin = np.cos(cells["angle"][living]), np.sin(cells["angle"][living])
    for i, c in enumerate(living):
        c0, c1 = int(max(frame_cols[c] - radius[i], 0)), int(min(frame_cols[c] + radius[i] + 1, width))
        r0, r1 = int(max(frame_rows[c] - radius[i], 0)), int(min(frame_rows[c] + radius[i] + 1, height))
        if c0 >= c1 or r0 >= r1 or peak[i] < RAIN_OFFSET:
            continue
        dc = np.arange(c0, c1) - frame_cols[c]
        dr = (np.arange(r0, r1) - frame_rows[c])[:, None]
        along = (dc * cos[i] + dr * sin[i]) / sa[i]
        across = (dr * cos[i] - dc * sin[i]) / sb[i]
        out[r0:r1, c0:c1] += peak[i] * np.exp(-0.5 * (along * along + across * across))
    return out


OROGRAPHIC_GAIN = 4.0
"""Rain over a hilltop is this much heavier than it would be over flat ground, plus one (x5)."""
OROGRAPHIC_BACKGROUND = 0.3
"""mm/h of light rain everywhere before the enhancement (0.2 mm/h over flat ground after the offset)."""
TREND_RATE = (0.6, 1.2)
"""Per hour: a trend cell's rain rate changes by a factor exp(r) per hour, |r| uniform in this range."""
TREND_MAX_FACTOR = 4.0
"""A trend cell's rain rate stays within its peak divided and multiplied by this."""
TREND_FADE = 0.1
"""A trend cell fades in over this share of its life and out over the same share at its end."""
GROWTHS = ("none", "orographic", "trend")
"""The kinds of predictable growth and decay ``synthetic_sequence`` can add."""


def hill_heights(seed: int, shape: tuple[int, int]) -> np.ndarray:
    """Height of the high ground, 0 to 1, (H, W): three to five Gaussian hills, from their own generator
    (so the rain of a seed is the same with or without them). ``growth="orographic"`` multiplies the rain
    by 1 + ``OROGRAPHIC_GAIN`` times this; ``scripts/research/ground_field.py`` compares a model with it."""
    rng = np.random.default_rng([seed, 1])
    height, width = shape
    rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    ground = np.zeros(shape)
    for _ in range(int(rng.integers(3, 6))):
        r, c = rng.uniform(0.15, 0.85) * height, rng.uniform(0.15, 0.85) * width
        sigma = rng.uniform(0.08, 0.16) * min(shape)
        ground = np.maximum(ground, np.exp(-0.5 * ((rows - r) ** 2 + (cols - c) ** 2) / sigma**2))
    return ground


def _coverage(shape: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W): True inside the radar disc of radius 0.48 * min(H, W) centred on the grid."""
    height, width = shape
    rows = np.arange(height)[:, None] - (height - 1) / 2.0
    cols = np.arange(width)[None, :] - (width - 1) / 2.0
    return rows * rows + cols * cols <= (COVERAGE_RADIUS * min(height, width)) ** 2


def _check(frames: int, size: tuple[int, int], step_s: int, pixel_m: float, seed: int) -> tuple[int, int]:
    """Report every invalid argument at once; return (height, width)."""
    problems = []
    if int(frames) < 1:
        problems.append(f"frames must be at least 1, found {frames}")
    if len(size) != 2 or min(int(s) for s in size) < 8:
        problems.append(f"size must be (height, width) of at least 8 pixels each, found {tuple(size)}")
    if int(step_s) <= 0:
        problems.append(f"step_s must be a positive number of seconds, found {step_s}")
    if not 0 <= int(seed) < 2**63:
        problems.append(f"seed must be a non-negative integer below 2**63, found {seed}")
    if not pixel_m > 0:
        problems.append(f"pixel_m must be positive, found {pixel_m}")
    if problems:
        raise NowcastError("synthetic data: " + "; ".join(problems))
    return int(size[0]), int(size[1])


def synthetic_sequence(
    frames: int = 36,
    size: tuple[int, int] = (256, 256),
    step_s: int = 300,
    seed: int = 0,
    pixel_m: float = 1000.0,
    start: str = "2024-06-01T12:00",
    growth: str = "none",
    wind_scale: float = 1.0,
) -> xr.Dataset:
    """Make a synthetic radar rain-rate sequence in the schema of the real radar files.

    Parameters
    ----------
    frames : int
        Number of time steps.
    size : (int, int)
        Frame height and width in pixels (at least 8 each).
    step_s : int
        Time step in seconds; cell speeds (pixels per step) and lifetimes (steps) scale with it.
    seed : int
        Seed of the ``numpy.random.Generator``; the same arguments give identical data.
    pixel_m : float
        Pixel size in metres (sets the ``x``/``y`` coordinates only).
    start : str
        Time of the first frame, ISO 8601, UTC.
    growth : str
        ``none``; ``orographic``: rain enhanced over fixed hills; ``trend``: every cell strengthens or
        weakens steadily through its life (see the module's docstring).
    wind_scale : float
        Factor on the wind speed (1: 1.2-3 pixels per 5 minutes); the cells and their lives are the same.

    Returns
    -------
    xarray.Dataset
        ``rainfall_rate(time, y, x)``, float32 in mm/h, in steps of 0.01 mm/h and within [0, 327.67];
        NaN outside the coverage disc. ``time`` is datetime64, ``y`` decreases (row 0 = north), ``x``
        increases, both pixel centres in metres of an azimuthal equidistant projection centred on the
        grid; ``crs`` is the CF grid-mapping variable. Variable encodings (int16 packing, zlib, one chunk
        per frame) are set, so ``ds.to_netcdf(path)`` writes exactly the real files' schema.

    Raises
    ------
    NowcastError
        If ``frames``, ``size``, ``step_s``, ``pixel_m``, ``start`` or ``growth`` are invalid.
    """
    height, width = _check(frames, size, step_s, pixel_m, seed)
    if growth not in GROWTHS:
        raise NowcastError(f"synthetic data: growth must be one of {', '.join(GROWTHS)}, found {growth!r}")
    if not 0 < wind_scale <= 10:
        raise NowcastError(f"synthetic data: wind_scale must be in (0, 10], found {wind_scale}")
    frames, step_s = int(frames), int(step_s)
    try:
        t_start = np.datetime64(start, "s")
    except ValueError as exc:
        raise NowcastError(f"synthetic data: start must be an ISO 8601 time, found {start!r}") from exc
    shape = (height, width)
    rng = np.random.default_rng(seed)
    wind = _Wind(rng, shape, step_s, scale=wind_scale)
    scale = float(np.clip(min(shape) / 256.0, 0.3, 1.5))
    spin_up = int(np.ceil(max(_SYSTEM.lifetime_min[1], _CORE.lifetime_min[1]) * 60.0 / step_s))
    systems = _draw_cells(rng, _SYSTEM, shape, frames, step_s, scale, spin_up)
    cores = _draw_cells(rng, _CORE, shape, frames, step_s, scale, spin_up)
    parent = _embed(rng, cores, systems)
    offset = rng.standard_normal((parent.size, 2)) * np.where(parent >= 0, systems["sb"][parent] * 0.8, 0.0)[:, None]

    n_sys = systems["birth"].size
    cells = {key: np.concatenate([systems[key], cores[key]]) for key in systems}
    parent_all = np.concatenate([np.full(n_sys, -1), parent])
    offset_all = np.concatenate([np.zeros((n_sys, 2)), offset])
    # Cores' birth positions must be computed after their parents': systems come first, so one pass is enough.
    cols, rows = _tracks(wind, cells, parent_all, offset_all, -spin_up, frames)

    if growth == "trend":  # rates from their own generator: the cells, tracks and wind are the seed's
        rates = np.random.default_rng([seed, 2]).uniform(*TREND_RATE, n_sys + parent.size)
        cells["rate"] = rates * np.where(np.random.default_rng([seed, 3]).random(rates.size) < 0.5, -1.0, 1.0)
    inside = _coverage(shape)
    orographic = growth == "orographic"
    gain = 1.0 + OROGRAPHIC_GAIN * hill_heights(seed, shape) if orographic else 1.0
    background = OROGRAPHIC_BACKGROUND if orographic else 0.0
    rain = np.empty((frames,) + shape, dtype=np.float32)
    for t in range(frames):
        field = (_render(cols[t], rows[t], t, cells, shape, step_s) + background) * gain - RAIN_OFFSET
        field = np.round(np.clip(field, 0.0, PACK_MAX), 2)  # the int16 packing's resolution (PACK_STEP)
        rain[t] = np.where(inside, field, np.nan)

    valid = rain[:, inside]
    rainy = float((valid > RAIN_THRESHOLD).mean()) if valid.size else 0.0
    log.debug(
        "synthetic rain: %d systems, %d cores (%d embedded), rainy fraction %.3f, max %.1f mm/h",
        n_sys,
        parent.size,
        int((parent >= 0).sum()),
        rainy,
        float(np.nanmax(rain)) if valid.size else 0.0,
    )
    return _dataset(rain, t_start, step_s, pixel_m, seed, frames, shape)


def _dataset(
    rain: np.ndarray,
    t_start: np.datetime64,
    step_s: int,
    pixel_m: float,
    seed: int,
    frames: int,
    shape: tuple[int, int],
) -> xr.Dataset:
    """Wrap the rain array in the real files' schema: coordinates, grid mapping, attributes, encodings."""
    height, width = shape
    times = t_start + np.arange(frames) * np.timedelta64(step_s, "s")
    y = ((height - 1) / 2.0 - np.arange(height)) * pixel_m  # decreasing: row 0 is the northern edge
    x = (np.arange(width) - (width - 1) / 2.0) * pixel_m
    proj4 = _PROJ4.format(lat=_SITE_LAT, lon=_SITE_LON)
    wkt = _WKT.format(lat=_SITE_LAT, lon=_SITE_LON)
    crs = xr.DataArray(
        np.int32(0),
        attrs={
            "grid_mapping_name": "azimuthal_equidistant",
            "latitude_of_projection_origin": _SITE_LAT,
            "longitude_of_projection_origin": _SITE_LON,
            "false_easting": 0.0,
            "false_northing": 0.0,
            "semi_major_axis": 6378137.0,
            "inverse_flattening": 298.257223563,
            "reference_ellipsoid_name": "WGS 84",
            "longitude_of_prime_meridian": 0.0,
            "prime_meridian_name": "Greenwich",
            "proj4": proj4,
            "proj4_params": proj4,
            "crs_wkt": wkt,
            "spatial_ref": wkt,
        },
    )
    rate = xr.DataArray(
        rain,
        dims=("time", "y", "x"),
        attrs={
            "standard_name": "rainfall_rate",
            "long_name": "synthetic radar rainfall rate",
            "units": "mm h-1",
            "grid_mapping": "crs",
            "cell_methods": "time: point",
            "comment": "NaN/_FillValue: outside radar coverage; 0: no rain. Synthetic, instantaneous rate.",
        },
    )
    rate.encoding = {
        **PACKING,
        "zlib": True,
        "shuffle": True,
        "complevel": 4,
        "chunksizes": (1, height, width),
    }
    coords = {
        "time": (
            "time",
            times.astype("datetime64[ns]"),
            {"standard_name": "time", "long_name": "time (UTC)", "axis": "T"},
        ),
        "y": (
            "y",
            y,
            {
                "standard_name": "projection_y_coordinate",
                "long_name": "y coordinate of pixel centre (row 0 = northern edge)",
                "units": "m",
                "axis": "Y",
            },
        ),
        "x": (
            "x",
            x,
            {
                "standard_name": "projection_x_coordinate",
                "long_name": "x coordinate of pixel centre",
                "units": "m",
                "axis": "X",
            },
        ),
    }
    first, last = times[0], times[-1]
    call = (
        f"synthetic_sequence(frames={frames}, size=({height}, {width}), step_s={step_s}, seed={seed}, "
        f"pixel_m={pixel_m:g}, start='{first}')"
    )
    ds = xr.Dataset(
        {"rainfall_rate": rate, "crs": crs},
        coords=coords,
        attrs={
            "Conventions": "CF-1.10",
            "title": f"Synthetic radar rainfall rate, {frames} frames of {height} x {width} pixels, seed {seed}",
            "institution": "nowcast synthetic data",
            "source": f"nowcast {__version__} nowcast.synth: advected, growing and decaying Gaussian rain cells",
            "history": f"created by nowcast {__version__} {call}",
            "comment": "Synthetic data for demos and tests; not an observation.",
            "time_step_seconds": np.int32(step_s),
            "time_coverage_start": f"{first.astype('datetime64[s]')}Z",
            "time_coverage_end": f"{last.astype('datetime64[s]')}Z",
            "pixel_size_x_m": float(pixel_m),
            "pixel_size_y_m": float(pixel_m),
            "synthetic_seed": np.int64(seed),
        },
    )
    ds["time"].encoding = {"units": "seconds since 1970-01-01", "calendar": "standard", "dtype": "int64"}
    for name in ("x", "y"):
        ds[name].encoding = {"dtype": "float64", "_FillValue": None}
    return ds


def write_synthetic(
    path: str | Path,
    *,
    frames: int = 36,
    size: tuple[int, int] = (256, 256),
    step_s: int = 300,
    seed: int = 0,
    growth: str = "none",
    wind_scale: float = 1.0,
) -> Path:
    """Write :func:`synthetic_sequence` to a NetCDF file atomically and return its path."""
    ds = synthetic_sequence(frames=frames, size=size, step_s=step_s, seed=seed, growth=growth, wind_scale=wind_scale)
    encoding = {name: dict(ds[name].encoding) for name in ("rainfall_rate", "time", "x", "y")}
    target = Path(path)
    with atomic_output(target, suffix=".nc") as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
    log.debug("wrote synthetic sequence to %s", target)
    return target

"""Matplotlib figures of rain fields, forecasts and verification.

matplotlib is imported inside the functions (``nowcast --help`` and forecasts without ``--plot`` never
load it) and used without pyplot: each figure is a ``matplotlib.figure.Figure`` on an Agg canvas, so
nothing global (the backend, the current figure) is touched and no display is needed. PNGs are
written atomically (``io.atomic_output``).

Shared helpers for every rain map: ``rain_colour_scale`` (the discrete radar-style scale), ``draw_rain``
(one panel) and ``add_rain_colorbar`` (the scale with its no-data and no-rain keys).
"""

from __future__ import annotations


import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from nowcast.io.atomic import atomic_output

if TYPE_CHECKING:
    import xarray as xr

log = logging.getLogger(__name__)

RAIN_LEVELS: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
"""Class boundaries of the rain colour scale in mm/h (below the first: no rain)."""
RAIN_COLOURS: tuple[str, ...] = (
    "#c4e4ff",  # 0.1-0.5   light drizzle
    "#7dbcff",  # 0.5-1
    "#2f7fff",  # 1-2
    "#12a33b",  # 2-5
    "#a8d81c",  # 5-10
    "#ffd500",  # 10-20
    "#ff7b00",  # 20-50
    "#d7001a",  # >= 50
)
"""One colour per class of ``RAIN_LEVELS``; the last is for rates at or above the last level."""
NO_DATA_COLOUR = "#b4b4b4"
"""Pixels without data (outside radar coverage)."""
NO_RAIN_COLOUR = "#ffffff"
"""Background: rates below the first level."""


def rain_colour_scale() -> tuple[Any, Any]:
    """(cmap, norm) of the discrete rain scale: ``RAIN_COLOURS`` between ``RAIN_LEVELS``.

    Rates below 0.1 mm/h are transparent (the white axes show through), NaN is ``NO_DATA_COLOUR``,
    rates at or above 50 mm/h take the last colour. Use with ``imshow(..., cmap=cmap, norm=norm)``.
    """
    from matplotlib.colors import BoundaryNorm, ListedColormap

    cmap = ListedColormap(list(RAIN_COLOURS[:-1]), name="nowcast_rain")
    cmap = cmap.with_extremes(under=(1.0, 1.0, 1.0, 0.0), over=RAIN_COLOURS[-1], bad=NO_DATA_COLOUR)
    norm = BoundaryNorm(list(RAIN_LEVELS), cmap.N)
    return cmap, norm


def _extent(field: xr.DataArray) -> tuple[list[float] | None, str, str]:
    """imshow extent (km for metre coordinates), origin and axis label from 1-D x/y coordinates."""
    if "x" not in field.coords or "y" not in field.coords or field["x"].ndim != 1 or field["y"].ndim != 1:
        return None, "upper", "pixels"
    x, y = field["x"].values.astype(np.float64), field["y"].values.astype(np.float64)
    if x.size < 2 or y.size < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return None, "upper", "pixels"
    units = str(field["x"].attrs.get("units", ""))
    scale, label = (1e-3, "km") if units in ("m", "metre", "meter", "metres", "meters") else (1.0, units or "x, y")
    dx, dy = (x[-1] - x[0]) / (x.size - 1), (y[-1] - y[0]) / (y.size - 1)
    left, right = (x[0] - dx / 2) * scale, (x[-1] + dx / 2) * scale
    first, last = (y[0] - dy / 2) * scale, (y[-1] + dy / 2) * scale
    # imshow draws row 0 at the top with origin "upper": right when y decreases (row 0 = north)
    origin = "upper" if dy < 0 else "lower"
    return [left, right, min(first, last), max(first, last)], origin, label


GRATICULE_STEPS: tuple[float, ...] = (0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 15.0, 30.0)
"""Candidate spacings (degrees) of latitude/longitude lines: the finest giving at most 5 lines is used."""


def _grid_crs(field: xr.DataArray) -> Any:
    """The pyproj CRS of ``field``'s CF grid mapping (its proj4 string, CF attributes or WKT), or None."""
    name = field.attrs.get("grid_mapping")
    if not name or name not in field.coords:
        return None
    try:
        from pyproj import CRS
    except ImportError:  # pragma: no cover - a core dependency
        return None
    attrs = dict(field.coords[name].attrs)
    makers = (
        lambda: CRS.from_proj4(str(attrs.get("proj4") or attrs["proj4_params"])),
        lambda: CRS.from_cf(attrs),
        lambda: CRS.from_wkt(str(attrs["crs_wkt"])),
    )
    for make in makers:
        try:
            crs = make()
        except Exception:  # noqa: BLE001 - pyproj raises several kinds; try the next description
            continue
        if crs.is_projected:
            return crs
    return None


def _nice_levels(values: np.ndarray) -> np.ndarray:
    """Round-numbered levels (degrees) inside the range of ``values``, at most 5 of them."""
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    step = next((d for d in GRATICULE_STEPS if (hi - lo) / d <= 5), GRATICULE_STEPS[-1])
    levels = np.arange(math.ceil(lo / step) * step, hi, step)
    return np.round(levels, 6)


def draw_graticule(ax: Any, field: xr.DataArray) -> tuple[list[float], list[float]]:
    """Dotted latitude and longitude lines, labelled in degrees, over a map of ``field`` (y, x) whose
    1-D ``x``/``y`` are projected metres and whose CF grid mapping pyproj understands (offline: PROJ's
    own database, nothing downloaded). Axes in km as drawn by ``draw_rain``.

    Returns the latitudes and longitudes drawn (empty lists when the grid has no usable mapping;
    longitude lines are left out when the grid spans more than 180 degrees of longitude, e.g. a pole).
    """
    crs = _grid_crs(field)
    extent, _, label = _extent(field)
    if crs is None or extent is None or label != "km":
        return [], []
    from pyproj import Transformer

    x, y = field["x"].values.astype(np.float64), field["y"].values.astype(np.float64)
    xs, ys = x[:: max(1, x.size // 120)], y[:: max(1, y.size // 120)]  # a coarse grid is enough for lines
    gx, gy = np.meshgrid(xs, ys)
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(gx, gy)
    if not (np.isfinite(lat).all() and np.isfinite(lon).all()):
        return [], []
    drawn: list[list[float]] = []
    for values, hemispheres, skip in ((lat, "NS", False), (lon, "EW", np.ptp(lon) > 180)):
        levels = [] if skip else _nice_levels(values)
        if len(levels):
            lines = ax.contour(
                gx * 1e-3, gy * 1e-3, values, levels=levels, colors="0.3", linewidths=0.6, linestyles="dotted"
            )
            ax.clabel(lines, fmt=lambda v, h=hemispheres: f"{abs(v):g}°{h[0] if v >= 0 else h[1]}", fontsize=6)
        drawn.append([float(v) for v in levels])
    log.debug("graticule: latitudes %s, longitudes %s", drawn[0], drawn[1])
    return drawn[0], drawn[1]


def draw_rain(ax: Any, field: xr.DataArray, title: str = "") -> Any:
    """Draw one rain field (y, x) in mm/h on ``ax`` with the rain colour scale; returns the image.

    NaN is drawn as no data (grey), rates below 0.1 mm/h as the white background. Axes are in km for
    projected coordinates in metres, else in the coordinates' units or pixels; with a grid mapping,
    latitude/longitude lines are drawn over the map (``draw_graticule``).
    """
    cmap, norm = rain_colour_scale()
    extent, origin, label = _extent(field)
    ax.set_facecolor(NO_RAIN_COLOUR)
    image = ax.imshow(
        np.asarray(field.values, dtype=np.float32),
        cmap=cmap,
        norm=norm,
        extent=extent,
        origin=origin,
        interpolation="nearest",
    )
    draw_graticule(ax, field)
    ax.set_aspect("equal")
    ax.tick_params(labelsize=7)
    ax.set_xlabel(label, fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return image


def add_rain_colorbar(fig: Any, image: Any, axes: Any) -> Any:
    """The discrete rain colour bar (mm/h) next to ``axes``, plus keys for no data and no rain."""
    from matplotlib.patches import Patch

    bar = fig.colorbar(image, ax=axes, extend="max", ticks=list(RAIN_LEVELS), fraction=0.025, pad=0.01, aspect=25)
    bar.ax.set_yticklabels([f"{v:g}" for v in RAIN_LEVELS], fontsize=7)
    bar.set_label("rain rate (mm h$^{-1}$)", fontsize=8)
    keys = [
        Patch(facecolor=NO_DATA_COLOUR, edgecolor="0.4", label="no data"),
        Patch(facecolor=NO_RAIN_COLOUR, edgecolor="0.4", label=f"< {RAIN_LEVELS[0]:g} mm h$^{{-1}}$"),
    ]
    fig.legend(handles=keys, loc="outside lower center", fontsize=7, ncol=2, frameon=False)
    return bar


def _lead_minutes(forecast: xr.DataArray) -> np.ndarray:
    """Lead times of ``forecast`` in minutes (forecast_period as timedelta64 or minutes/seconds)."""
    fp = forecast["forecast_period"]
    v = fp.values
    if np.issubdtype(v.dtype, np.timedelta64):
        return v / np.timedelta64(1, "m")
    units = str(fp.attrs.get("units", "minutes")).split()[0].lower()
    return np.asarray(v, dtype=np.float64) / (60.0 if units.startswith("s") else 1.0)


def panel_titles(observed: xr.DataArray, forecast: xr.DataArray, shown: Sequence[int]) -> list[str]:
    """Titles of the observed panel and of forecast lead indices ``shown``: 'observed\\n2021-06-01 12:20 UTC',
    '+15 min\\nvalid 2021-06-01 12:35 UTC'; for frame-numbered input (``attrs["frame_numbers"]``, no dates)
    'observed\\nframe 15', '+3\\nframe 18'."""
    ref = forecast["forecast_reference_time"].values
    obs_time = observed["time"].values if "time" in observed.coords else ref
    numbered = bool(forecast.attrs.get("frame_numbers"))
    leads = [f"+{k + 1}" for k in range(forecast.sizes["time"])] if numbered else _lead_labels(forecast)
    valid = "" if numbered else "valid "
    times = forecast["time"].values
    return [f"observed\n{_time_label(forecast, obs_time)}"] + [
        f"{leads[i]}\n{valid}{_time_label(forecast, times[i])}" for i in shown
    ]


def _lead_labels(forecast: xr.DataArray) -> list[str]:
    """'+5 min', '+10 min', ... of ``forecast``'s lead times."""
    return [f"+{m:g} min" for m in _lead_minutes(forecast)]


def _time_label(forecast: xr.DataArray, t: Any) -> str:
    """'2021-06-01 12:20 UTC', or 'frame 15' for frame-numbered input (frames read ``attrs["frame_numbers"]``
    seconds apart from 1970)."""
    per_frame = int(forecast.attrs.get("frame_numbers") or 0)
    if per_frame:
        return f"frame {np.datetime64(t, 'ns').astype(np.int64) // (per_frame * 1_000_000_000)}"
    return _utc(t)


def _utc(t: Any, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return np.datetime64(t, "s").astype(object).strftime(fmt) + " UTC"


def _coverage_window(field: xr.DataArray, margin: int = 2) -> dict[str, slice]:
    """Slices of the last two dims around the finite pixels of ``field`` (all of it if none or all)."""
    valid = np.isfinite(np.asarray(field.values))
    ydim, xdim = field.dims[-2:]
    if not valid.any() or valid.all():
        return {}
    rows = np.flatnonzero(valid.any(axis=-1))
    cols = np.flatnonzero(valid.any(axis=-2))
    return {
        ydim: slice(max(int(rows[0]) - margin, 0), int(rows[-1]) + margin + 1),
        xdim: slice(max(int(cols[0]) - margin, 0), int(cols[-1]) + margin + 1),
    }


def lead_panels(n_steps: int, panels: int = 4) -> list[int]:
    """Indices of up to ``panels`` lead times spread evenly over ``n_steps``, always ending at the last.

    12 steps, 4 panels: [2, 5, 8, 11] (+15, +30, +45, +60 min at a 5-minute step).
    """
    if n_steps < 1:
        return []
    picks = {int(round(n_steps * k / panels)) - 1 for k in range(1, panels + 1)}
    return sorted(i for i in picks if 0 <= i < n_steps)


def plot_forecast(
    observed: xr.DataArray,
    forecast: xr.DataArray,
    path: str | Path,
    *,
    panels: int = 4,
    title: str | None = None,
    model: str | None = None,
    channel: int = 0,
    crop: bool = True,
) -> Path:
    """A PNG of the last observed frame and the forecast at ``panels`` lead times spread over the horizon.

    Parameters
    ----------
    observed
        The last observed frame, mm/h, dims (y, x) or (channel, y, x), with its ``time`` as a coordinate.
    forecast
        mm/h, dims (time, y, x) or (time, channel, y, x) with ``forecast_period`` and
        ``forecast_reference_time`` coordinates (as made by ``nowcast.predict.forecast``).
    path
        PNG to write, atomically.
    panels
        Number of forecast panels (lead times: see ``lead_panels``).
    title
        Figure title; default: the variable's long name, the reference time and ``model``.
    model
        Model name for the default title.
    channel
        Channel shown for multi-channel sequences.
    crop
        Show only the rectangle around the observed frame's coverage (e.g. a radar disc inside a
        mostly empty composite grid).

    Each panel's title gives the lead time and the valid time (UTC), or for frame-numbered input
    (``attrs["frame_numbers"]``) the frames ahead and the frame number; one discrete colour bar
    (``RAIN_LEVELS``) with keys for no data (grey) and no rain (white) serves all panels. A forecast of
    exactly 3 channels is an image sequence: drawn as RGB (``rgb_panels``), ``channel`` is ignored.
    """
    rgb = forecast.sizes.get("channel", 1) == 3
    if "channel" in forecast.dims and not rgb:
        forecast = forecast.isel(channel=channel)
    if "channel" in observed.dims and not rgb:
        observed = observed.isel(channel=channel)
    if crop:
        window = _coverage_window(observed.isel(channel=0) if rgb else observed)
        observed, forecast = observed.isel(window), forecast.isel(window)
    shown = lead_panels(forecast.sizes["time"], panels)
    fields = [observed, *(forecast.isel(time=i) for i in shown)]
    titles = panel_titles(observed, forecast, shown)
    if title is None:
        name = str(forecast.attrs.get("long_name", forecast.name or "rain rate"))
        chan = f", channel {channel}" if "channel" in forecast.coords and not rgb else ""
        ref = _time_label(forecast, forecast["forecast_reference_time"].values)
        title = f"nowcast of {name}{chan} from {ref}" + (f" (model '{model}')" if model else "")
    if rgb:
        return rgb_panels(fields, titles, path, title)
    return rain_panels(fields, titles, path, title)


def rgb_panels(fields: Sequence[xr.DataArray], titles: Sequence[str], path: str | Path, title: str = "") -> Path:
    """A PNG of 3-channel frames (channel, y, x) side by side as RGB images, e.g. an image sequence.

    All panels share one scale: [0, 1] when the first field's values stay within it, [0, 255] when they
    stay within that (8-bit images), else [0, its maximum]. No data (NaN) is drawn grey.
    """
    if not fields or len(fields) != len(titles):
        raise ValueError(f"rgb_panels: expected as many titles as fields (>= 1), found {len(titles)} and {len(fields)}")
    from matplotlib.colors import to_rgb

    first = np.asarray(fields[0].values, dtype=np.float32)
    high = float(np.nanmax(first)) if np.isfinite(first).any() else 1.0
    top = 1.0 if high <= 1.0 else 255.0 if high <= 255.0 else high
    ny, nx = fields[0].shape[-2:]
    panel_w = 3.2
    fig = _new_figure(panel_w * len(fields) + 0.4, panel_w * ny / nx + 0.9)
    axes = fig.subplots(1, len(fields), sharex=True, sharey=True, squeeze=False)[0]
    for k, (ax, field, text) in enumerate(zip(axes, fields, titles)):
        extent, origin, label = _extent(field)
        rgb = np.moveaxis(np.asarray(field.transpose("channel", ...).values, dtype=np.float32), 0, -1) / top
        nodata = ~np.isfinite(rgb).all(axis=-1)
        rgb = np.clip(np.nan_to_num(rgb, nan=0.0), 0.0, 1.0)
        rgb[nodata] = to_rgb(NO_DATA_COLOUR)
        ax.imshow(rgb, extent=extent, origin=origin, interpolation="nearest")
        draw_graticule(ax, field)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7, labelleft=k == 0)
        ax.set_xlabel(label, fontsize=7)
        ax.set_title(text, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def rain_panels(fields: Sequence[xr.DataArray], titles: Sequence[str], path: str | Path, title: str = "") -> Path:
    """A PNG of rain fields (y, x) side by side, one colour bar; e.g. observed vs several methods."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not fields or len(fields) != len(titles):
        raise ValueError(
            f"rain_panels: expected as many titles as fields (>= 1), found {len(titles)} and {len(fields)}"
        )
    ny, nx = fields[0].shape[-2:]
    panel_w = 3.2
    fig = Figure(figsize=(panel_w * len(fields) + 0.9, panel_w * ny / nx + 1.1), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(fields), sharex=True, sharey=True, squeeze=False)[0]
    image = None
    for k, (ax, field, text) in enumerate(zip(axes, fields, titles)):
        image = draw_rain(ax, field, text)
        if k:
            ax.tick_params(labelleft=False)
        else:
            ax.set_ylabel(ax.get_xlabel(), fontsize=7)
    add_rain_colorbar(fig, image, axes)
    if title:
        fig.suptitle(title, fontsize=10)
    target = Path(path)
    with atomic_output(target) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return target


PROBABILITY_LEVELS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
"""Classes of the probability maps: below 5 % is left white (as no rain is on the rain maps)."""


def plot_probabilities(
    observed: xr.DataArray,
    members: xr.DataArray,
    thresholds: Sequence[float],
    path: str | Path,
    *,
    panels: int = 4,
    title: str | None = None,
    centred_on: str | None = None,
) -> Path:
    """A PNG for a warning forecaster: the last observed frame and the ensemble mean at ``panels`` lead
    times (first row, rain colours), then per threshold (mm/h) the share of members at or above it at the
    same lead times (one row each, 0-1, white below 5 %, grey where there is no data).

    observed: (y, x) mm/h with its ``time``; members: (realization, time, y, x) mm/h as
    ``ensemble_forecast.ensemble_members`` makes them. Written atomically.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import BoundaryNorm
    from matplotlib.figure import Figure

    window = _coverage_window(observed)
    observed, members = observed.isel(window), members.isel(window)
    mean = members.mean("realization").assign_attrs(members.attrs)
    shown = lead_panels(mean.sizes["time"], panels)
    titles = panel_titles(observed, mean, shown)
    ny, nx = observed.shape[-2:]
    rows = 1 + len(thresholds)
    fig = Figure(figsize=(3.0 * (len(shown) + 1) + 1.2, (3.0 * ny / nx + 0.5) * rows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, len(shown) + 1, sharex=True, sharey=True, squeeze=False)
    image = draw_rain(axes[0, 0], observed, titles[0])
    for col, i in enumerate(shown, start=1):
        draw_rain(axes[0, col], mean.isel(time=i), f"mean of {members.sizes['realization']}, {titles[col]}")
    add_rain_colorbar(fig, image, axes[0])
    cmap = colormaps["YlOrRd"].with_extremes(under="white", bad=NO_DATA_COLOUR)
    norm = BoundaryNorm(list(PROBABILITY_LEVELS), cmap.N)
    valid = np.isfinite(members.values).all(axis=0)  # (time, y, x)
    for row, thr in enumerate(thresholds, start=1):
        axes[row, 0].axis("off")
        axes[row, 0].text(0.5, 0.5, f"chance of\n>= {thr:g} mm/h", ha="center", va="center", fontsize=11)
        for col, i in enumerate(shown, start=1):
            prob = np.where(valid[i], (members.values[:, i] >= thr).mean(axis=0), np.nan)
            extent, origin, label = _extent(observed)
            ax = axes[row, col]
            img = ax.imshow(prob, cmap=cmap, norm=norm, extent=extent, origin=origin, interpolation="nearest")
            draw_graticule(ax, observed)
            ax.set_aspect("equal")
            ax.tick_params(labelsize=7)
            ax.set_xlabel(label, fontsize=7)
            ax.set_title(f"P(rain >= {thr:g} mm/h), {titles[col].splitlines()[0]}", fontsize=9)
        bar = fig.colorbar(img, ax=axes[row], ticks=[0.05, 0.2, 0.4, 0.6, 0.8, 1.0], fraction=0.025, pad=0.01)
        bar.ax.set_yticklabels(["5 %", "20 %", "40 %", "60 %", "80 %", "100 %"], fontsize=7)
    fig.suptitle(
        title
        or f"ensemble nowcast from {_time_label(mean, mean['forecast_reference_time'].values)}"
        + ("" if centred_on is None else f", centred on the model {centred_on}'s forecast"),
        fontsize=11,
    )
    target = Path(path)
    with atomic_output(target) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    return target


# ----------------------------------------------------------------------------------------------------
# verification (``nowcast evaluate``)

_METHOD_STYLES: dict[str, dict[str, Any]] = {
    "model": {"color": "#1f5fbf", "linestyle": "-", "marker": "o"},
    "persistence": {"color": "#6e6e6e", "linestyle": "--", "marker": "s"},
    "extrapolation": {"color": "#e0701b", "linestyle": "-.", "marker": "^"},
    "ensemble": {"color": "#c2185b", "linestyle": "-", "marker": "D"},  # verification.ensembles' names
    "ensemble_mean": {"color": "#c2185b", "linestyle": "--", "marker": "d"},
    "steps": {"color": "#6d4c41", "linestyle": "-", "marker": "v"},
    "steps_mean": {"color": "#6d4c41", "linestyle": "--", "marker": "v"},
}
_OTHER_COLOURS = ("#2a9d3f", "#9b3fbf", "#c0392b", "#17a2b8")


def method_style(method: str, index: int = 0) -> dict[str, Any]:
    """Line colour, style and marker of a verified method, the same in every verification figure."""
    return _METHOD_STYLES.get(
        method, {"color": _OTHER_COLOURS[index % len(_OTHER_COLOURS)], "linestyle": ":", "marker": "D"}
    )


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    target = Path(path)
    with atomic_output(target, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return target


def _lead_lines(ax: Any, lead_min: Sequence[float], values: dict[str, np.ndarray]) -> None:
    """One line per method (values: method -> (leads,)), lead time in minutes on x, ticks on multiples
    of the step. A method whose score is undefined (NaN: an empty denominator, e.g. no event observed
    or forecast) at some or all leads is named in a note in the panel, so a missing line is explained."""
    from matplotlib.ticker import MultipleLocator

    notes = []
    for i, (method, v) in enumerate(values.items()):
        ax.plot(lead_min, v, label=method, markersize=4, linewidth=1.6, **method_style(method, i))
        undefined = int(np.isnan(np.asarray(v, dtype=np.float64)).sum())
        if undefined:
            where = "every lead" if undefined == len(lead_min) else f"{undefined} of {len(lead_min)} leads"
            notes.append(f"{method}: undefined at {where}")
    if notes:
        ax.text(
            0.02,
            0.02,
            "\n".join(notes) + "\n(no event in the score's denominator)",
            transform=ax.transAxes,
            fontsize=6,
            color="0.35",
            va="bottom",
            ha="left",
        )
    ax.set_xlabel("lead time (min)", fontsize=8)
    ax.grid(True, color="0.88", linewidth=0.6)
    ax.tick_params(labelsize=7)
    step = float(lead_min[1] - lead_min[0]) if len(lead_min) > 1 else float(lead_min[0])
    ax.xaxis.set_major_locator(MultipleLocator(step * max(1, math.ceil(len(lead_min) / 6))))
    ax.set_xlim(0, float(lead_min[-1]) + step / 2)


def _figure_legend(fig: Any, ax: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    ncol = len(labels) if len(labels) <= 4 else -(-len(labels) // 2)  # several models: two rows, none cut off
    fig.legend(handles, labels, loc="outside lower center", ncol=max(1, ncol), fontsize=8, frameon=False)


def _grid_shape(n: int) -> tuple[int, int]:
    cols = n if n <= 3 else -(-n // 2) if n <= 8 else 4
    return -(-n // cols), cols


_SCORE_NAMES = {
    "CSI": "critical success index (CSI)",
    "POD": "probability of detection (POD)",
    "FAR": "false alarm ratio (FAR)",
    "HSS": "Heidke skill score (HSS)",
    "ETS": "equitable threat score (ETS)",
    "BIAS": "frequency bias",
}


def plot_categorical_by_lead(
    values: dict[str, np.ndarray],
    lead_min: Sequence[float],
    thresholds: Sequence[float],
    path: str | Path,
    *,
    score: str = "CSI",
    comparison: str = ">=",
    subtitle: str = "",
) -> Path:
    """A PNG of a categorical score by lead time: one panel per threshold, one line per method.

    ``values``: method -> (leads, n_thresholds) array (NaN where undefined, drawn as a gap). CSI, POD
    and FAR share the y range [0, 1]; a perfect score is 1 (CSI, POD) or 0 (FAR).
    """
    rows, cols = _grid_shape(len(thresholds))
    fig = _new_figure(3.1 * cols + 0.4, 2.6 * rows + 0.9)
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    op = "≥" if comparison == ">=" else ">"
    for k, (ax, thr) in enumerate(zip(axes, thresholds)):
        _lead_lines(ax, lead_min, {m: np.asarray(v)[:, k] for m, v in values.items()})
        ax.set_title(f"rain {op} {thr:g} mm h$^{{-1}}$", fontsize=9)
        if score in ("CSI", "POD", "FAR", "HSS", "ETS"):
            ax.set_ylim(-0.02 if score not in ("HSS", "ETS") else None, 1.02)
        if k % cols == 0:
            ax.set_ylabel(score, fontsize=8)
    for ax in axes[len(thresholds) :]:
        ax.set_visible(False)
    _figure_legend(fig, axes[0])
    best = {"CSI": 1, "POD": 1, "FAR": 0, "HSS": 1, "ETS": 1, "BIAS": 1}.get(score)
    title = f"{_SCORE_NAMES.get(score, score)} by lead time" + (f" (perfect: {best})" if best is not None else "")
    fig.suptitle(title + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    return _save(fig, path)


_CONTINUOUS_UNITS = {"MSE": "mm$^2$ h$^{-2}$", "MAE": "mm h$^{-1}$", "ME": "mm h$^{-1}$", "CORR": ""}
_CONTINUOUS_NAMES = {
    "MSE": "mean squared error",
    "MAE": "mean absolute error",
    "ME": "mean error",
    "CORR": "correlation",
}


def plot_continuous_by_lead(
    values: dict[str, dict[str, np.ndarray]],
    lead_min: Sequence[float],
    path: str | Path,
    *,
    subtitle: str = "",
) -> Path:
    """A PNG of continuous scores by lead time: one panel per score, one line per method.

    ``values``: score (MSE, MAE, ME, CORR) -> method -> (leads,) array, in mm/h-based units.
    """
    n = len(values)
    fig = _new_figure(3.6 * n + 0.4, 3.3)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (score, per_method) in zip(axes, values.items()):
        _lead_lines(ax, lead_min, {m: np.asarray(v) for m, v in per_method.items()})
        units = _CONTINUOUS_UNITS.get(score, "")
        ax.set_ylabel(f"{score} ({units})" if units else score, fontsize=8)
        ax.set_title(_CONTINUOUS_NAMES.get(score, score), fontsize=9)
        if score in ("MSE", "MAE"):
            ax.set_ylim(bottom=0)
    _figure_legend(fig, axes[0])
    fig.suptitle("errors of the rain rate by lead time" + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    return _save(fig, path)


def plot_fss_by_lead(
    values: dict[str, np.ndarray],
    lead_min: Sequence[float],
    thresholds: Sequence[float],
    scales: Sequence[int],
    path: str | Path,
    *,
    comparison: str = ">=",
    pixel_km: float | None = None,
    subtitle: str = "",
) -> Path:
    """A PNG of the fractions skill score by lead time: one panel per (threshold, window), one line per method.

    ``values``: method -> (leads, n_thresholds, n_scales) array. Window sizes are in pixels (and km
    when ``pixel_km`` is given).
    """
    panels = [(k, j) for k in range(len(thresholds)) for j in range(len(scales))]
    rows, cols = _grid_shape(len(panels))
    fig = _new_figure(3.1 * cols + 0.4, 2.6 * rows + 0.9)
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    op = "≥" if comparison == ">=" else ">"
    for i, (ax, (k, j)) in enumerate(zip(axes, panels)):
        _lead_lines(ax, lead_min, {m: np.asarray(v)[:, k, j] for m, v in values.items()})
        size = f"{scales[j]} px" + (f" ({scales[j] * pixel_km:g} km)" if pixel_km else "")
        ax.set_title(f"rain {op} {thresholds[k]:g} mm h$^{{-1}}$, window {size}", fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        if i % cols == 0:
            ax.set_ylabel("FSS", fontsize=8)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    _figure_legend(fig, axes[0])
    fig.suptitle("fractions skill score by lead time" + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    return _save(fig, path)


def plot_example_case(
    observed: np.ndarray,
    forecasts: dict[str, np.ndarray],
    lead_min: Sequence[float],
    path: str | Path,
    *,
    t0: str = "",
    source: str = "",
    grid: dict[str, Any] | None = None,
) -> Path:
    """A PNG of one case: observed (top row) and each method's forecast (one row each) at a few lead times.

    ``observed`` and every forecast: (n_leads, H, W) mm/h for the lead times ``lead_min``. All panels
    share the discrete rain colour scale (``rain_colour_scale``) and one colour bar; no data is grey.
    ``grid``: optional 1-D ``x`` and ``y`` coordinates (DataArrays with units) for axes in km.
    """
    import xarray as xr

    rows = [("observed", np.asarray(observed))] + [(m, np.asarray(f)) for m, f in forecasts.items()]
    n_leads = len(lead_min)
    ny, nx = rows[0][1].shape[-2:]
    panel = 2.8
    fig = _new_figure(panel * n_leads + 1.2, (panel * ny / nx + 0.35) * len(rows) + 1.0)
    axes = fig.subplots(len(rows), n_leads, sharex=True, sharey=True, squeeze=False)
    coords = {k: v for k, v in (grid or {}).items() if k in ("x", "y")}
    image = None
    for r, (name, fields) in enumerate(rows):
        for c in range(n_leads):
            field = xr.DataArray(fields[c], dims=("y", "x"), coords=coords if len(coords) == 2 else None)
            title = ""
            if r == 0:
                title = f"+{lead_min[c]:g} min"
                if t0:
                    valid = np.datetime64(t0.rstrip("Z"), "s") + np.timedelta64(int(round(lead_min[c] * 60)), "s")
                    title += f"\nvalid {_utc(valid, '%H:%M')}"
            ax = axes[r, c]
            image = draw_rain(ax, field, title)
            if c == 0:
                ax.set_ylabel(f"{name}\n\n{ax.get_xlabel()}", fontsize=9)
            else:
                ax.tick_params(labelleft=False)
            if r < len(rows) - 1:
                ax.set_xlabel("")
    add_rain_colorbar(fig, image, axes)
    when = f"forecasts from t0 = {t0.replace('T', ' ').rstrip('Z')[:16]} UTC" if t0 else "forecasts"
    fig.suptitle(
        f"example case: {when} (the forecast time with the most rain)" + (f"\n{source}" if source else ""),
        fontsize=10,
    )
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------------
# ensembles (``nowcast evaluate --members``)


def _lead_colours(n: int) -> list[Any]:
    """``n`` colours from light to dark (viridis), the first lead the lightest."""
    from matplotlib import colormaps

    return [colormaps["viridis"](x) for x in np.linspace(0.75, 0.05, max(n, 1))[:n]]


def plot_reliability(
    values: dict[str, dict[str, np.ndarray]],
    lead_min: Sequence[float],
    leads: Sequence[int],
    thresholds: Sequence[float],
    path: str | Path,
    *,
    comparison: str = ">=",
    subtitle: str = "",
) -> Path:
    """A PNG of reliability diagrams: a row per method, a column per threshold, a line per lead in ``leads``.

    ``values``: method -> ``prob`` (mean forecast probability), ``freq`` (observed frequency) and
    ``count`` (pixels), each (n_leads, n_thresholds, n_bins) (``probscores.reliability``). Under each
    diagram the pixels per bin (log scale): how sharp the forecast is, and how much each point weighs.
    """
    from matplotlib.ticker import LogLocator, NullFormatter

    n_m, n_t = len(values), len(thresholds)
    fig = _new_figure(2.9 * n_t + 0.5, 3.5 * n_m + 1.0)
    grid = fig.add_gridspec(2 * n_m, n_t, height_ratios=[3.0, 1.0] * n_m)
    colours = _lead_colours(len(leads))
    op = "≥" if comparison == ">=" else ">"
    for r, (method, rel) in enumerate(values.items()):
        for c, thr in enumerate(thresholds):
            ax = fig.add_subplot(grid[2 * r, c])
            counts = fig.add_subplot(grid[2 * r + 1, c], sharex=ax)
            ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=0.9, label="perfect reliability")
            events = False  # any pixel forecast above zero probability or observed above the threshold
            for colour, i in zip(colours, leads):
                p, f, n = (np.asarray(rel[k])[i, c] for k in ("prob", "freq", "count"))
                used = n > 0  # bins without a forecast probability left out, so the line is unbroken
                events |= bool((used & (np.nan_to_num(p) > 0)).any() or (used & (np.nan_to_num(f) > 0)).any())
                style = {"color": colour, "marker": "o", "markersize": 3.5}
                ax.plot(p[used], f[used], linewidth=1.4, label=f"+{lead_min[i]:g} min", **style)
                counts.plot(p[used], n[used], linewidth=1.0, **style)
            if not events:
                ax.text(0.5, 0.55, f"no rain {op} {thr:g} mm/h\nforecast or observed", ha="center", fontsize=8,
                        color="0.35")  # fmt: skip
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.grid(True, color="0.88", linewidth=0.6)
            ax.tick_params(labelsize=7, labelbottom=False)
            counts.set_yscale("log")
            counts.set_ylim(bottom=0.8)  # from 1 pixel up: at least a decade, labelled at its powers of 10
            counts.yaxis.set_major_locator(LogLocator(base=10.0, numticks=4))
            counts.yaxis.set_minor_formatter(NullFormatter())
            counts.grid(True, color="0.88", linewidth=0.6)
            counts.tick_params(labelsize=7)
            if r == 0:
                ax.set_title(f"rain {op} {thr:g} mm h$^{{-1}}$", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{method}\nobserved frequency", fontsize=8)
                counts.set_ylabel("pixels", fontsize=8)
            if r == n_m - 1:
                counts.set_xlabel("forecast probability", fontsize=8)
    _figure_legend(fig, fig.axes[0])
    fig.suptitle("reliability diagrams" + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    return _save(fig, path)


def plot_rank_histogram(
    ranks: dict[str, np.ndarray],
    lead_min: Sequence[float],
    leads: Sequence[int],
    path: str | Path,
    *,
    rank_min: float | None = None,
    subtitle: str = "",
) -> Path:
    """A PNG of rank histograms: a panel per method, grouped bars of the relative frequency of each rank
    of the observation among the M members for the lead times ``leads``.

    ``ranks``: method -> counts (n_leads, M + 1) (``probscores.compute``'s ``RANK``). The dashed line is
    1 / (M + 1), a flat histogram: a U shape says too little spread, a dome too much, a slope a bias.
    """
    n = len(ranks)
    fig = _new_figure(4.2 * n + 0.5, 3.4)
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    colours = _lead_colours(len(leads))
    width = 0.8 / max(len(leads), 1)
    for ax, (method, counts) in zip(axes, ranks.items()):
        counts = np.asarray(counts, dtype=np.float64)
        m1 = counts.shape[-1]
        x = np.arange(m1)
        for j, (colour, i) in enumerate(zip(colours, leads)):
            total = counts[i].sum()
            freq = counts[i] / total if total > 0 else np.full(m1, np.nan)
            ax.bar(x - 0.4 + width * (j + 0.5), freq, width, color=colour, label=f"+{lead_min[i]:g} min")
        ax.axhline(1.0 / m1, color="0.3", linestyle="--", linewidth=1.0, label="flat (reliable)")
        ax.set_title(f"{method} ({m1 - 1} members)", fontsize=9)
        ax.set_xlabel("rank of the observation among the members", fontsize=8)
        ax.set_xticks(x if m1 <= 21 else x[:: -(-m1 // 20)])
        ax.tick_params(labelsize=7)
        ax.grid(True, axis="y", color="0.88", linewidth=0.6)
    axes[0].set_ylabel("relative frequency", fontsize=8)
    _figure_legend(fig, axes[0])
    note = f"; pixels where the observation and every member are below {rank_min:g} mm/h left out" if rank_min else ""
    fig.suptitle("rank histograms" + note + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    return _save(fig, path)


def plot_probabilistic_by_lead(
    crps: dict[str, np.ndarray],
    spread_skill: dict[str, np.ndarray],
    bss: dict[str, np.ndarray],
    lead_min: Sequence[float],
    path: str | Path,
    *,
    mae: dict[str, np.ndarray] | None = None,
    bss_label: str = "BSS",
    subtitle: str = "",
) -> Path:
    """A PNG of the ensembles' CRPS (mm/h), spread-skill ratio and Brier skill score by lead time.

    Every argument: method -> (leads,). ``mae``: deterministic methods' MAE (mm/h), drawn in the CRPS
    panel (the CRPS of a single forecast is its MAE), labelled ``<method> (MAE)``.
    """
    fig = _new_figure(11.2, 3.6)
    axes = fig.subplots(1, 3, squeeze=False)[0]
    lines = {m: np.asarray(v) for m, v in crps.items()}
    lines |= {f"{m} (MAE)": np.asarray(v) for m, v in (mae or {}).items()}
    _lead_lines(axes[0], lead_min, lines)
    for line, label in zip(axes[0].get_lines(), lines):  # MAE lines thin, in their method's colour
        if label.endswith(" (MAE)"):
            style = method_style(label[: -len(" (MAE)")], list(lines).index(label))
            line.set(color=style["color"], linestyle=style["linestyle"], linewidth=1.0, marker="")
    axes[0].set_ylim(bottom=0)
    axes[0].set_ylabel("CRPS, MAE (mm h$^{-1}$)", fontsize=8)
    axes[0].set_title("CRPS (lower is better)", fontsize=9)
    _lead_lines(axes[1], lead_min, {m: np.asarray(v) for m, v in spread_skill.items()})
    axes[1].axhline(1.0, color="0.5", linestyle="--", linewidth=0.9)
    top = max([1.0, *(float(np.nanmax(v)) for v in spread_skill.values() if np.isfinite(v).any())])
    axes[1].set_ylim(0, 1.15 * top)  # the reference line at 1 inside the panel, not on its edge
    axes[1].set_ylabel("spread / RMSE of the mean", fontsize=8)
    axes[1].set_title("spread-skill ratio (1: reliable spread)", fontsize=9)
    _lead_lines(axes[2], lead_min, {m: np.asarray(v) for m, v in bss.items()})
    axes[2].axhline(0.0, color="0.5", linestyle="--", linewidth=0.9)
    axes[2].set_ylim(top=1.02)
    axes[2].set_ylabel("BSS", fontsize=8)
    axes[2].set_title(f"{bss_label} (1: perfect, 0: climatology)", fontsize=9)
    _figure_legend(fig, axes[0])
    fig.suptitle("ensemble scores by lead time" + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    return _save(fig, path)

"""The reports of a verification (DESIGN section 8): ``metrics.csv``, ``summary.json``, the PNG plots
and the table ``nowcast evaluate`` prints, all from a ``verification.results.Evaluation``.

- ``summary``: the JSON-ready summary (settings, scores per lead and their means over leads).
- ``write_reports``: the three kinds of file, each written atomically into the output folder.
- ``format_table``: the compact table of the first lead, a few later ones and the mean over leads.

With ensembles (``Evaluation.prob``): their ``probscores`` rows in ``metrics.csv``, their means over leads
in ``summary.json`` (beside the deterministic methods, the ensemble means among them), a CRPS and a BSS
block in the table, and three figures (reliability, rank histogram, scores by lead).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import textwrap
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from nowcast import __version__
from nowcast.verification import metrics, probscores
from nowcast.io import atomic_output

if TYPE_CHECKING:
    from nowcast.verification.results import Evaluation

TABLE_LEADS = 4
"""Lead times (columns) of the printed table, besides the first lead and the mean over all leads."""


def lead_indices(steps: int, n: int, first: bool = False) -> list[int]:
    """Lead indices (0-based): ``n`` spread evenly and ending at the last (``plots.lead_panels``), plus
    the first lead with ``first``. 12 steps, n = 4: [2, 5, 8, 11]; with first: [0, 2, 5, 8, 11]."""
    from nowcast.plots import lead_panels

    return sorted(set(lead_panels(steps, n)) | ({0} if first else set()))


def _nanmean(x: np.ndarray, axis: int = 0) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices stay NaN
        return np.nanmean(x, axis=axis)


def _num(x: float) -> float | None:
    """A JSON-safe number: None for NaN/inf."""
    return float(x) if math.isfinite(float(x)) else None


def summary(ev: Evaluation) -> dict[str, Any]:
    """The content of ``summary.json``: settings, files, cases, per-method means over lead times, wall times."""
    per_method: dict[str, Any] = {}
    for m in ev.methods:
        res = metrics.compute(ev.scores[m])
        entry: dict[str, Any] = {}
        for name in metrics.CATEGORICAL:
            means = _nanmean(res[name], axis=0)  # (n_thresholds,)
            entry[name] = {f"{t:g}": _num(v) for t, v in zip(ev.scores[m].thresholds, means)}
        for name in metrics.CONTINUOUS:
            entry[name] = _num(_nanmean(res[name], axis=0))
        if m in ev.fss:
            f = metrics.compute(ev.fss[m])["FSS"]  # (leads, n_thr, n_scales)
            entry["FSS"] = {
                f"{t:g}": {f"{s}px": _num(_nanmean(f[:, k, j])) for j, s in enumerate(ev.fss[m].fss_scales)}
                for k, t in enumerate(ev.fss[m].thresholds)
            }
        entry["valid_pixels"] = int(res["n"].sum())
        entry["wall_time_s"] = round(ev.wall_s.get(m, 0.0), 3)
        per_method[m] = entry
    for m, s in ev.prob.items():
        per_method[m] = _prob_summary(s)
    example = None
    if ev.example is not None:
        example = {
            "t0": ev.example.t0,
            "file": ev.example.source_file,
            "rain_sum_mm_per_h": round(ev.example.rain, 2),
            "lead_min": [ev.lead_min[i] for i in ev.example.leads],
        }
    return {
        "nowcast_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "settings": ev.settings,
        "files": ev.files,
        "skipped_files": [{"file": f, "reason": r} for f, r in ev.skipped],
        "n_cases": ev.n_cases,
        "first_t0": ev.first_t0,
        "last_t0": ev.last_t0,
        "lead_min": ev.lead_min,
        "methods": ev.methods,
        "ensemble_methods": list(ev.prob),
        "scores_mean_over_leads": per_method,
        "wall_time_s": {k: round(v, 3) for k, v in ev.wall_s.items()},
        "cpu_time_s": {k: round(v, 3) for k, v in ev.cpu_s.items()},
        "example_case": example,
        "notes": [
            "Scores pool contingency counts and error sums over all cases and valid pixels, per lead time; "
            "the means here are unweighted means over lead times (NaN leads left out).",
            "Every method is scored on the pixels where the observation and all forecasts have data (common mask)."
            if ev.settings.get("common_mask", True)
            else "Each method is scored on the pixels where the observation and its own forecast have data.",
        ],
    }


def _prob_summary(s: probscores.ProbScores) -> dict[str, Any]:
    """An ensemble method's entry of ``summary.json``: members, then each score's mean over lead times
    (``probscores.PER_LEAD``; ``PER_THRESHOLD`` per threshold)."""
    res = probscores.compute(s)
    entry: dict[str, Any] = {"members": s.members}
    for name in probscores.PER_LEAD:
        entry[name] = _num(_nanmean(res[name]))
    for name in probscores.PER_THRESHOLD:
        entry[name] = {f"{t:g}": _num(v) for t, v in zip(s.thresholds, _nanmean(res[name], axis=0))}
    entry["valid_pixels"] = int(res["n"].sum())
    return entry


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    def cell(key: str, value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            if math.isnan(value):
                return "" if key == "threshold" else "nan"
            return f"{value:g}" if key in ("lead_min", "threshold") else repr(value)
        return str(value)

    with atomic_output(path, suffix=".csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(metrics.ROW_FIELDS)
            for r in rows:
                w.writerow([cell(k, r[k]) for k in metrics.ROW_FIELDS])


def write_reports(ev: Evaluation, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
    """Write ``metrics.csv``, ``summary.json`` and (with ``plots``) the PNG figures into ``out_dir``.

    Every file is written atomically. Returns the paths written.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from nowcast.errors import OutputError

        raise OutputError(f"{out}: expected a writable report directory, found {' '.join(str(exc).split())}") from None
    written = []
    _write_csv(ev.rows(), out / "metrics.csv")
    written.append(out / "metrics.csv")
    with atomic_output(out / "summary.json", suffix=".json") as tmp:
        tmp.write_text(json.dumps(summary(ev), indent=2, allow_nan=False) + "\n")
    written.append(out / "summary.json")
    if plots:
        written += _write_plots(ev, out)
    return written


def _period(ev: Evaluation) -> str:
    """'2015-05-15 16:40 to 17:55 UTC' (the date repeated only when it changes)."""
    if not ev.first_t0 or not ev.last_t0:
        return ""
    a, b = ev.first_t0.rstrip("Z").split("T"), ev.last_t0.rstrip("Z").split("T")
    end = b[1][:5] if a[0] == b[0] else f"{b[0]} {b[1][:5]}"
    return f"{a[0]} {a[1][:5]} to {end} UTC"


def _pixel_km(grid: dict[str, Any]) -> float | None:
    """Pixel size in km from 1-D x coordinates in metres, else None."""
    x = grid.get("x")
    if x is None or x.ndim != 1 or x.size < 2 or str(x.attrs.get("units", "")) not in ("m", "metre", "meter"):
        return None
    return float(abs(x.values[1] - x.values[0])) / 1000.0


def _run_label(checkpoint: str) -> str:
    """A checkpoint as its run directory and file, e.g. ``tiny-20261202/model.pt``."""
    ckpt = Path(checkpoint)
    return f"{ckpt.parent.name}/{ckpt.name}" if ckpt.parent.name else ckpt.name


def _write_plots(ev: Evaluation, out: Path) -> list[Path]:
    from nowcast import plots

    res = {m: metrics.compute(ev.scores[m]) for m in ev.methods}
    first = ev.scores[ev.methods[0]]
    thresholds, comparison = first.thresholds, first.comparison
    subtitle = f"{ev.n_cases} forecast times ({_period(ev)}) from {len(ev.files)} file(s)"
    model = ev.settings.get("model") or {}
    several = ev.settings.get("models") or {}
    if len(several) > 1:  # each method and its run, e.g. convlstm (convlstm/model.pt)
        runs = ", ".join(f"{n} ({_run_label(f['checkpoint'])})" for n, f in several.items())
        subtitle += "\n" + textwrap.fill(runs, 90)  # several lines rather than one wider than the figure
    elif model.get("checkpoint"):  # the run: its directory and file, e.g. model 'tiny' (tiny-20261202/model.pt)
        subtitle += f"\nmodel '{model.get('name', Path(model['checkpoint']).stem)}' ({_run_label(model['checkpoint'])})"
    written = []
    for score in ("CSI", "POD", "FAR"):
        values = {m: res[m][score] for m in ev.methods}
        written.append(
            plots.plot_categorical_by_lead(
                values,
                ev.lead_min,
                thresholds,
                out / f"{score.lower()}_by_lead.png",
                score=score,
                comparison=comparison,
                subtitle=subtitle,
            )
        )
    values = {s: {m: res[m][s] for m in ev.methods} for s in ("MSE", "MAE")}
    written.append(plots.plot_continuous_by_lead(values, ev.lead_min, out / "mse_mae_by_lead.png", subtitle=subtitle))
    grid = ev.example.grid if ev.example is not None else {}
    if ev.fss:
        f0 = ev.fss[ev.methods[0]]
        values = {m: metrics.compute(ev.fss[m])["FSS"] for m in ev.methods}
        written.append(
            plots.plot_fss_by_lead(
                values,
                ev.lead_min,
                f0.thresholds,
                f0.fss_scales,
                out / "fss_by_lead.png",
                comparison=comparison,
                pixel_km=_pixel_km(grid),
                subtitle=subtitle,
            )
        )
    if ev.example is not None:
        ex = ev.example
        written.append(
            plots.plot_example_case(
                ex.observed,
                ex.forecasts,
                [ev.lead_min[i] for i in ex.leads],
                out / "example_case.png",
                t0=ex.t0,
                source=Path(ex.source_file).name,
                grid=ex.grid,
            )
        )
    if ev.prob:
        written += _write_prob_plots(ev, out, res, subtitle)
    return written


def _listed(names: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _write_prob_plots(ev: Evaluation, out: Path, res: dict[str, dict[str, np.ndarray]], subtitle: str) -> list[Path]:
    """The ensembles' figures: reliability diagrams, rank histograms, CRPS / spread-skill / BSS by lead.
    ``res``: ``metrics.compute`` of every deterministic method (their MAE beside the CRPS)."""
    from nowcast import plots

    prob = {m: probscores.compute(s) for m, s in ev.prob.items()}
    first = next(iter(ev.prob.values()))
    leads = lead_indices(len(ev.lead_min), 3)
    k = table_threshold(first.thresholds)
    op = "≥" if first.comparison == ">=" else ">"
    rel = {m: {"prob": r["REL_PROB"], "freq": r["REL_FREQ"], "count": r["REL_COUNT"]} for m, r in prob.items()}
    same_pixels = ev.settings.get("common_mask", True)  # MAE and CRPS on the same pixels: comparable
    return [
        plots.plot_reliability(
            rel,
            ev.lead_min,
            leads,
            first.thresholds,
            out / "reliability.png",
            comparison=first.comparison,
            subtitle=subtitle,
        ),
        plots.plot_rank_histogram(
            {m: r["RANK"] for m, r in prob.items()},
            ev.lead_min,
            leads,
            out / "rank_histogram.png",
            rank_min=first.rank_min,
            subtitle=subtitle,
        ),
        plots.plot_probabilistic_by_lead(
            {m: r["CRPS"] for m, r in prob.items()},
            {m: r["SPREAD_SKILL"] for m, r in prob.items()},
            {m: r["BSS"][:, k] for m, r in prob.items()},
            ev.lead_min,
            out / "crps_by_lead.png",
            mae={m: res[m]["MAE"] for m in ev.methods} if same_pixels else None,
            bss_label=f"BSS, rain {op} {first.thresholds[k]:g} mm/h",
            subtitle=subtitle,
        ),
    ]


def table_threshold(thresholds: Sequence[float]) -> int:
    """Index of the threshold shown in the table: 1 mm/h, else the closest to it."""
    return int(np.argmin([abs(math.log(t / 1.0)) if t > 0 else math.inf for t in thresholds]))


def format_table(ev: Evaluation, out_dir: str | Path | None = None) -> str:
    """CSI at (about) 1 mm/h and MSE per method at a few lead times and on average, as aligned text."""
    thresholds = ev.scores[ev.methods[0]].thresholds
    comparison = ev.scores[ev.methods[0]].comparison
    k = table_threshold(thresholds)
    cols = lead_indices(len(ev.lead_min), TABLE_LEADS, first=True)
    header = [f"{ev.lead_min[i]:g} min" for i in cols] + ["mean"]
    width = max(12, max(len(m) for m in ev.methods) + 2)

    def block(title: str, values: dict[str, np.ndarray], fmt: str) -> list[str]:
        lines = [title, "method".ljust(width) + "".join(h.rjust(10) for h in header)]
        for m, v in values.items():
            cells = [format(float(v[i]), fmt) if math.isfinite(v[i]) else "nan" for i in cols]
            mean = float(_nanmean(v))
            cells.append(format(mean, fmt) if math.isfinite(mean) else "nan")
            lines.append(m.ljust(width) + "".join(c.rjust(10) for c in cells))
        return lines

    res = {m: metrics.compute(ev.scores[m]) for m in ev.methods}
    lines = [
        f"{ev.n_cases} forecast times ({_period(ev)}) from {len(ev.files)} file(s); methods: {_listed(ev.methods)}",
        "",
        *block(
            f"CSI (event: rain {comparison} {thresholds[k]:g} mm/h)",
            {m: res[m]["CSI"][:, k] for m in ev.methods},
            ".3f",
        ),
        "",
        *block("MSE (mm²/h²)", {m: res[m]["MSE"] for m in ev.methods}, ".3f"),
    ]
    if ev.prob:
        lines += ["", *_prob_blocks(ev, block, k)]
    timing = ", ".join(f"{m} {ev.wall_s.get(m, 0.0):.1f} s" for m in ev.methods)
    lines += ["", f"forecast wall time: {timing}"]
    if out_dir is not None:
        lines.append(f"reports: {Path(out_dir)}/ (metrics.csv, summary.json, *.png)")
    return "\n".join(lines)


def _prob_blocks(ev: Evaluation, block: Any, k: int) -> list[str]:
    """The table's ensemble lines: CRPS, and BSS at threshold ``k``, per ensemble method (``block``)."""
    prob = {m: probscores.compute(s) for m, s in ev.prob.items()}
    first = next(iter(ev.prob.values()))
    return [
        *block(f"CRPS (mm/h), ensembles of {first.members} members", {m: r["CRPS"] for m, r in prob.items()}, ".3f"),
        "",
        *block(
            f"BSS (event: rain {first.comparison} {first.thresholds[k]:g} mm/h)",
            {m: r["BSS"][:, k] for m, r in prob.items()},
            ".3f",
        ),
    ]

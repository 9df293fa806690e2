"""Cross-radar folds: score fold models on the events they never saw, and tabulate the folds.

The shared events are split by radar network into two folds (docs/default-model.md, "Selection rule",
written before the runs). A model trained on one fold is scored on the other fold's whole events with
``nowcast evaluate`` (model, persistence, pySTEPS extrapolation and S-PROG on the same cases and
pixels), each event at its own time step with lead times up to 60 minutes (see ``LEADS``).

    python -m scripts.research.folds evaluate --fold A --model runs/foldA-r1/model.pt --out evaluation/folds/r1
    python -m scripts.research.folds evaluate --fold B --model runs/foldB-r1/model.pt --out evaluation/folds/r1
    python -m scripts.research.folds table evaluation/folds/r1            # per event, per fold, and the targets
    python -m scripts.research.folds derive runs/foldA-r1/model.pt runs/foldA-r3a.pt --set model.probmatching=cdf
    python -m scripts.research.folds evaluate ... --baselines persistence --reuse-baselines evaluation/folds/r1
    python -m scripts.research.folds readme evaluation/folds/r3-smooth-lag --reuse-baselines evaluation/folds/r3 \
        --details docs/folds/r3-smooth-lag.md --write README.md   # the README's Skill table

``--fold A`` means "trained on fold A's training events", so it is scored on fold B's events.
"""

from __future__ import annotations

from scripts.common import RADAR_DIR

import argparse
import csv
import math
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

DATA = RADAR_DIR

FOLD_EVENTS = {
    "A": (
        "knmi_netherlands_20100826",
        "mch_switzerland_20150515",
        "mch_switzerland_20160711",
        "opera_cirrus_europe_20241126",
    ),
    "B": ("bom_brisbane_20201031", "bom_melbourne_20180616", "opera_europe_20180824", "mrms_conus_20190610"),
}
"""Training events of each fold: A = KNMI, MeteoSwiss x2, OPERA CIRRUS; B = BoM x2, OPERA, MRMS."""

LEADS = {
    "knmi_netherlands_20100826": 12,
    "mch_switzerland_20150515": 12,
    "mch_switzerland_20160711": 12,
    "opera_cirrus_europe_20241126": 7,
    "bom_brisbane_20201031": 6,
    "bom_melbourne_20180616": 10,
    "opera_europe_20180824": 4,
    "mrms_conus_20190610": 15,
}
"""Lead times scored per event, at its own step: 60 minutes, except CIRRUS (13 frames: 7 leads, one
case) and MRMS (2-minute step, 36 frames: 15 leads = 30 minutes, 6 cases; 60 minutes would allow one)."""

IN_FRAMES, STRIDE, THRESHOLDS = 6, 3, "0.5,1,5,10"
METHODS = ("model", "extrapolation", "sprog", "persistence")


def held_out(fold: str) -> tuple[str, ...]:
    """Events a model trained on ``fold`` is scored on: the other fold's."""
    other = {"A": "B", "B": "A"}[fold]
    return FOLD_EVENTS[other]


def evaluate(
    fold: str,
    model: str,
    out: Path,
    events: list[str] | None = None,
    baselines: str = "persistence,extrapolation,sprog",
) -> None:
    """``nowcast evaluate`` of ``model`` and ``baselines`` on each held-out event into ``out/EVENT``."""
    for event in events or held_out(fold):
        target = out / event
        if (target / "metrics.csv").is_file():
            print(f"{event}: already scored in {target}", file=sys.stderr)
            continue
        cmd = [
            sys.executable,
            "-m",
            "nowcast",
            "-q",
            "evaluate",
            str(DATA / f"{event}.nc"),
            "--model",
            model,
            "--baselines",
            baselines,
            "--thresholds",
            THRESHOLDS,
            "--stride",
            str(STRIDE),
            "--steps",
            str(LEADS[event]),
            "--out",
            str(target),
        ]
        print(" ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True)


def read_metrics(path: Path, reuse: Path | None = None) -> dict[tuple[str, str, str], list[tuple[float, float]]]:
    """(method, score, threshold) -> [(lead_min, value)] from an evaluate metrics.csv; with ``reuse`` (a
    folds root, ``--reuse-baselines``), methods missing there come from the same event's metrics.csv
    under it (scored on the same cases: the persistence rows of both files must agree, or this raises)."""
    table: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            thr = row["threshold"] and f"{float(row['threshold']):g}"
            table[(row["method"], row["score"], thr)].append((float(row["lead_min"]), float(row["value"])))
    if reuse is not None and (reuse / path.parent.name / "metrics.csv").is_file():
        other = read_metrics(reuse / path.parent.name / "metrics.csv")
        for key in (k for k in other if k[0] == "persistence" and k[1] == "CSI"):
            mine, theirs = sorted(table.get(key, [])), sorted(other[key])
            if mine and any(abs(a[1] - b[1]) > 2e-3 for a, b in zip(mine, theirs)):
                raise SystemExit(f"{path}: persistence {key[1]} {key[2]} differs from {reuse}: not the same cases")
        scored = {k[0] for k in table}
        for key, rows in other.items():
            if key[0] not in scored:
                table[key] = rows
    return table


def _mean(values: list[float]) -> float:
    ok = [v for v in values if not math.isnan(v)]
    return sum(ok) / len(ok) if ok else math.nan


def event_means(path: Path, reuse: Path | None = None) -> dict[str, dict[str, float]]:
    """Per method, the means over lead times of one event's metrics.csv: CSI >= 1 and >= 5 mm/h,
    POD, FAR and frequency bias at 1 mm/h, MSE."""
    t = read_metrics(path, reuse)
    out = {}
    for m in METHODS:
        out[m] = {
            "csi1": _mean([v for _, v in t[(m, "CSI", "1")]]),
            "csi5": _mean([v for _, v in t[(m, "CSI", "5")]]),
            "pod1": _mean([v for _, v in t[(m, "POD", "1")]]),
            "far1": _mean([v for _, v in t[(m, "FAR", "1")]]),
            "bias1": _mean([v for _, v in t[(m, "BIAS", "1")]]),
            "mse": _mean([v for _, v in t[(m, "MSE", "")]]),
        }
    return out


def fold_means(root: Path, fold: str, reuse: Path | None = None) -> dict[str, dict[str, float]]:
    """Per method, the mean over the events held out from ``fold`` of each event's means (``event_means``)."""
    per_event = [
        event_means(root / e / "metrics.csv", reuse) for e in held_out(fold) if (root / e / "metrics.csv").is_file()
    ]
    return (
        {m: {k: _mean([ev[m][k] for ev in per_event]) for k in per_event[0][m]} for m in METHODS} if per_event else {}
    )


def table(root: Path, reuse: Path | None = None) -> str:
    """Markdown tables: per event (CSI at 1 and 5 mm/h, POD, FAR, bias at 1 mm/h, MSE), per fold, targets."""
    lines: list[str] = []
    fold_rows: dict[str, dict[str, dict[str, list[float]]]] = {}
    for fold_trained, scored in (("A", held_out("A")), ("B", held_out("B"))):
        per_method: dict[str, dict[str, list[float]]] = {m: defaultdict(list) for m in METHODS}
        lines += [f"### Trained on fold {fold_trained}, scored on {', '.join(scored)}", ""]
        for event in scored:
            path = root / event / "metrics.csv"
            if not path.is_file():
                lines += [f"{event}: not scored yet", ""]
                continue
            t = read_metrics(path, reuse)
            leads = [lead for lead, _ in sorted(t[("model", "CSI", "1")])]
            lines += [f"**{event}** (leads {leads[0]:g}-{leads[-1]:g} min)", ""]
            lines += [
                "| method | CSI>=1 by lead | mean CSI>=1 | mean CSI>=5 | POD/FAR/bias >=1 (mean) | MSE (mean) |",
                "|---|---|---|---|---|---|",
            ]
            for m in METHODS:
                csi1 = [v for _, v in sorted(t[(m, "CSI", "1")])]
                csi5 = [v for _, v in sorted(t[(m, "CSI", "5")])]
                pod = _mean([v for _, v in t[(m, "POD", "1")]])
                far = _mean([v for _, v in t[(m, "FAR", "1")]])
                bias_by_lead = [v for _, v in sorted(t[(m, "BIAS", "1")])]
                mse = _mean([v for _, v in t[(m, "MSE", "")]])
                lines.append(
                    f"| {m} | {' '.join(f'{v:.2f}' for v in csi1)} | {_mean(csi1):.3f} | {_mean(csi5):.3f} | "
                    f"{pod:.2f}/{far:.2f}/{_mean(bias_by_lead):.2f} | {mse:.3f} |"
                )
                pm = per_method[m]
                pm["csi1"].append(_mean(csi1))
                pm["csi5"].append(_mean(csi5))
                pm["bias"].append(_mean(bias_by_lead))
                pm["bias_min"].append(min(bias_by_lead))
                pm["bias_max"].append(max(bias_by_lead))
                pm["mse"].append(mse)
                pm["csi1_by_lead"].append(csi1)  # type: ignore[arg-type]
            lines.append("")
        fold_rows[fold_trained] = per_method
    lines += ["### Fold means (mean over each fold's events of the per-event means)", ""]
    lines += [
        "| scored on events of | method | CSI>=1 | CSI>=5 | bias>=1 (min-max over leads) | MSE |",
        "|---|---|---|---|---|---|",
    ]
    verdict = []
    for fold_trained, per_method in fold_rows.items():
        other = {"A": "B", "B": "A"}[fold_trained]
        for m in METHODS:
            pm = per_method[m]
            if not pm["csi1"]:
                continue
            lines.append(
                f"| fold {other} | {m} | {_mean(pm['csi1']):.3f} | {_mean(pm['csi5']):.3f} | "
                f"{_mean(pm['bias']):.2f} ({min(pm['bias_min']):.2f}-{max(pm['bias_max']):.2f}) | {_mean(pm['mse']):.3f} |"
            )
        mod, ext, spr = per_method["model"], per_method["extrapolation"], per_method["sprog"]
        if mod["csi1"]:
            every_lead = all(
                a >= b - 1e-9
                for ms, es in zip(mod["csi1_by_lead"], ext["csi1_by_lead"])
                for a, b in zip(ms, es)  # type: ignore[arg-type]
            )
            verdict.append(
                f"- fold {other}: model/S-PROG CSI>=1 = {_mean(mod['csi1']) / _mean(spr['csi1']):.3f} (target >= 1.10); "
                f"model/extrapolation = {_mean(mod['csi1']) / _mean(ext['csi1']):.3f}; CSI >= extrapolation's at every "
                f"lead of every event: {'yes' if every_lead else 'no'}; bias at 1 mm/h in 0.8-1.25 at every lead: "
                f"{'yes' if min(mod['bias_min']) >= 0.8 and max(mod['bias_max']) <= 1.25 else 'no'}; "
                f"MSE below extrapolation's: {'yes' if _mean(mod['mse']) < _mean(ext['mse']) else 'no'}"
            )
    lines += ["", "Targets:", *verdict]
    return "\n".join(lines)


EVENT_NAMES = {
    "knmi_netherlands_20100826": "KNMI",
    "mch_switzerland_20150515": "MeteoSwiss 2015",
    "mch_switzerland_20160711": "MeteoSwiss 2016",
    "opera_cirrus_europe_20241126": "OPERA CIRRUS",
    "bom_brisbane_20201031": "BoM Brisbane",
    "bom_melbourne_20180616": "BoM Melbourne",
    "opera_europe_20180824": "OPERA 2018",
    "mrms_conus_20190610": "MRMS",
}
"""Event names as the README writes them."""

README_BEGIN, README_END = "<!-- skill-table: begin -->", "<!-- skill-table: end -->"
"""Markers around the README's Skill table; ``readme --write`` replaces what lies between them."""


def readme_block(root: Path, details: str, reuse: Path | None = None) -> str:
    """The README's Skill table from the scored folds under ``root``: per held-out fold, the mean CSI at
    1 mm/h of the model (the same recipe trained on the other fold), extrapolation, S-PROG and
    persistence, then the model's frequency bias and MSE beside extrapolation's; ``details``: the
    page with the per-event tables."""
    folds = [(held_out(f), fold_means(root, f, reuse)) for f in ("A", "B")]
    if any(not means for _, means in folds):
        raise SystemExit(f"{root}: expected both folds scored, found {[bool(m) for _, m in folds]}")
    rows = [
        "| held-out events | model (same recipe) | pySTEPS extrapolation | pySTEPS S-PROG | persistence |",
        "|---|---|---|---|---|",
    ]
    for events, means in folds:
        names = ", ".join(EVENT_NAMES[e] for e in events)
        csi = {m: means[m]["csi1"] for m in METHODS}
        rows.append(
            f"| {names} | **{csi['model']:.3f}** | {csi['extrapolation']:.3f} | {csi['sprog']:.3f} | "
            f"{csi['persistence']:.3f} |"
        )
    (_, a), (_, b) = folds
    rows += [
        "",
        f"Frequency bias at 1 mm/h {a['model']['bias1']:.2f} and {b['model']['bias1']:.2f}; MSE "
        f"{a['model']['mse']:.2f} and {b['model']['mse']:.2f} mm²/h² against extrapolation's "
        f"{a['extrapolation']['mse']:.2f} and {b['extrapolation']['mse']:.2f}. Per event and lead (CSI at 1 and "
        f"5 mm/h, POD, FAR, bias, MSE): `{details}`.",
    ]
    return "\n".join(rows)


def write_readme(readme: Path, block: str) -> None:
    """Replace the text between ``README_BEGIN`` and ``README_END`` in ``readme`` by ``block`` (atomically)."""
    text = readme.read_text(encoding="utf-8")
    if text.count(README_BEGIN) != 1 or text.count(README_END) != 1:
        raise SystemExit(f"{readme}: expected one {README_BEGIN} and one {README_END}, found neither or several")
    head, rest = text.split(README_BEGIN)
    _, tail = rest.split(README_END)
    tmp = readme.with_name(f".{readme.name}.tmp")
    tmp.write_text(f"{head}{README_BEGIN}\n{block}\n{README_END}{tail}", encoding="utf-8")
    tmp.replace(readme)


def derive(source: Path, target: Path, overrides: list[str], zero_head: bool = False) -> None:
    """Write ``target``: ``source``'s weights and provenance with its stored config changed by
    ``overrides`` (``SECTION.KEY=VALUE``, as ``nowcast train --set``), e.g. a fold model with
    probability matching, scored without retraining. ``zero_head``: the output head's weights set to
    zero, so that a residual model forecasts its base (recipe r3 restarts from S-PROG this way). A
    resumable ``last.pt`` stays resumable (its training state is kept)."""
    from nowcast.models.checkpoint import load_checkpoint, save_checkpoint
    from nowcast.config import config_from_dict, parse_override

    ckpt = load_checkpoint(source)
    raw = ckpt["config"]
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    cfg = config_from_dict(raw, f"{source} (config) with {' '.join(overrides)}")
    changes = " ".join([*overrides, *(["head zeroed"] if zero_head else [])])
    state = ckpt["state_dict"]
    if zero_head:
        state = {k: v.zero_() if k.startswith("head.") else v for k, v in state.items()}
    provenance = {**ckpt.get("provenance", {}), "derived_from": str(source), "derived_with": changes}
    save_checkpoint(target, config=cfg, state_dict=state, provenance=provenance, training=ckpt.get("training"))
    print(f"{target}: {source} with {changes}", file=sys.stderr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("evaluate", help="score a fold model on the events it never saw")
    e.add_argument("--fold", choices=("A", "B"), required=True, help="the fold the model was trained on")
    e.add_argument("--model", required=True)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--events", nargs="*", help="only these held-out events (default: all)")
    e.add_argument("--baselines", default="persistence,extrapolation,sprog", help="baselines scored beside the model")
    t = sub.add_parser("table", help="tabulate the scored folds")
    t.add_argument("root", type=Path)
    t.add_argument("--reuse-baselines", type=Path, help="take methods a run did not score from this folds root")
    r = sub.add_parser("readme", help="the README's Skill table from the scored folds")
    r.add_argument("root", type=Path)
    r.add_argument("--reuse-baselines", type=Path, help="take methods a run did not score from this folds root")
    r.add_argument("--details", required=True, help="the page with the per-event tables, named in the text")
    r.add_argument("--write", type=Path, help="replace the table between the markers of this README")
    d = sub.add_parser("derive", help="copy a checkpoint with config values changed (e.g. model.probmatching)")
    d.add_argument("source", type=Path)
    d.add_argument("target", type=Path)
    d.add_argument("--set", dest="overrides", action="append", default=[], help="SECTION.KEY=VALUE (YAML value)")
    d.add_argument("--zero-head", action="store_true", help="set the output head's weights to zero")
    a = p.parse_args()
    if a.cmd == "evaluate":
        evaluate(a.fold, a.model, a.out, a.events, a.baselines)
    elif a.cmd == "derive":
        derive(a.source, a.target, a.overrides, a.zero_head)
    elif a.cmd == "readme":
        block = readme_block(a.root, a.details, a.reuse_baselines)
        if a.write:
            write_readme(a.write, block)
        else:
            print(block)
    else:
        print(table(a.root, a.reuse_baselines))


if __name__ == "__main__":
    main()

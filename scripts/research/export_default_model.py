"""Copy a trained checkpoint into the package as the default model, with its provenance.

Usage: python -m scripts.research.export_default_model RUN_DIR/model.pt --test-files mch_switzerland_20150515.nc
       [--recipe "configs/default.yaml ..."] [--skill evaluation/summary.json]
       [--validation validation/summary.json] [--train-files FILE.nc ...] [--folds evaluation/folds/r1]

The package never imports this script. It writes an inference-only checkpoint (no optimizer state)
to nowcast/models/weights/default.pt with file names instead of local paths in its provenance.
``--train-files`` lists every file the weights learned from, when a chain of resumed runs predates
the cumulative provenance that ``nowcast train --resume`` now keeps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nowcast.models.checkpoint import checkpoint_config, default_model_path, load_checkpoint, save_checkpoint
from nowcast.io import open_archive


def skill(summary_path: Path) -> dict:
    """Mean-over-leads scores of each method in an evaluate ``summary.json`` (1 mm/h CSI/POD/FAR, MSE)."""
    summary = json.loads(summary_path.read_text())
    means = summary["scores_mean_over_leads"]  # {method: {score: {threshold: value} or value}}
    return {
        "cases": int(summary["n_cases"]),
        **{
            method: {
                "CSI_1mm_mean": float(scores["CSI"]["1"]),
                "POD_1mm_mean": float(scores["POD"]["1"]),
                "FAR_1mm_mean": float(scores["FAR"]["1"]),
                "MSE_mean": float(scores["MSE"]),
            }
            for method, scores in means.items()
        },
    }


def fold_scores(root: Path, baselines_root: Path | None = None) -> dict:
    """Per fold: its training events, the held-out events, and each method's fold means (CSI >= 1 and
    >= 5 mm/h, frequency bias at 1 mm/h, MSE) from ``scripts/research/folds.py`` evaluations under ``root``;
    extrapolation's and S-PROG's from ``baselines_root`` when given (as ``folds.py table --reuse-baselines``)."""
    from scripts.research import folds

    out = {}
    for fold in ("A", "B"):
        per = folds.fold_means(root, fold)
        if baselines_root is not None:
            reused = folds.fold_means(baselines_root, fold)
            per |= {m: reused[m] for m in ("extrapolation", "sprog") if m in reused}
        out[f"trained_on_{fold}"] = {
            "train_events": list(folds.FOLD_EVENTS[fold]),
            "scored_on": list(folds.held_out(fold)),
            **{m: {k: round(v, 4) for k, v in scores.items()} for m, scores in per.items()},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--test-files", nargs="*", default=[], help="Held-out events it was evaluated on.")
    parser.add_argument("--recipe", default="configs/default.yaml", help="How it was trained.")
    parser.add_argument("--skill", type=Path, help="summary.json of `nowcast evaluate` on the held-out events.")
    parser.add_argument("--validation", type=Path, help="summary.json of `nowcast evaluate` on the validation events.")
    parser.add_argument(
        "--train-files", nargs="*", type=Path, help="Every file trained on (replaces the checkpoint's list)."
    )
    parser.add_argument(
        "--folds", type=Path, help="Root of scripts/research/folds.py evaluations: fold scores into the provenance."
    )
    parser.add_argument(
        "--reuse-baselines", type=Path, help="With --folds: extrapolation's and S-PROG's fold scores from this root."
    )
    args = parser.parse_args()

    ckpt = load_checkpoint(args.checkpoint)
    cfg = checkpoint_config(ckpt, args.checkpoint)
    prov = dict(ckpt.get("provenance", {}))
    for key in ("train_files", "val_files"):
        if key in prov:
            prov[key] = [Path(p).name for p in prov[key]]
    if args.train_files:
        arc = open_archive(
            args.train_files, time_step=cfg.data.time_step or None, variable=cfg.data.variable, units=cfg.data.units
        )
        if arc.skipped:
            raise SystemExit(
                f"--train-files: expected every file to be usable, found {len(arc.skipped)} skipped: {arc.skipped[0][1]}"
            )
        prov["train_files"] = [Path(p).name for p in arc.files]
        prov["train_periods"] = arc.periods()
    prov["held_out_test_files"] = list(args.test_files)
    prov["recipe"] = args.recipe
    if args.skill:
        prov["held_out_skill"] = skill(args.skill)
    if args.validation:
        prov["validation_files"] = [Path(f).name for f in json.loads(args.validation.read_text())["files"]]
        prov["validation_skill"] = skill(args.validation)
    if args.folds:
        prov["folds"] = fold_scores(args.folds, args.reuse_baselines)
    out = save_checkpoint(default_model_path(), config=cfg, state_dict=ckpt["state_dict"], provenance=prov)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()

"""Score our ensemble on the eight shared events, one ``nowcast evaluate`` each, as docs/probabilistic.md ran it.

Each event at its own step with the strides and lead times of "How it was run" (10 members, seed 1,
thresholds 1, 5, 10 mm/h, 3 input frames, ``persistence`` beside it, ``--baselines steps`` with
``--steps-baseline``). ``--noise-adjustment`` takes a name or a gain, or ``cross:GA,GB``: every event
with the gain fitted on the *other* fold (GA, fold A's fit, on fold B's events; GB, fold B's, on fold
A's). Skips an event whose ``metrics.csv`` exists, so it resumes.
Tabulate and apply the rule with ``scripts.research.ensemble_folds``.

    python -m scripts.research.ensemble_events evaluation/ensemble-noise/none
    python -m scripts.research.ensemble_events evaluation/ensemble-noise/cross --noise-adjustment cross:1.624,1.056
    python -m scripts.research.ensemble_events evaluation/ensemble-seeds/2 --steps-baseline --seed 2
    python -m scripts.research.ensemble_events evaluation/ensemble-initial/innovation --initial-perturbation innovation
    python -m scripts.research.ensemble_events evaluation/ensemble-centre/r9 --models runs/foldA-r9/model.pt,runs/foldB-r9/model.pt

``--models TRAINED_ON_A,TRAINED_ON_B``: each event scored with the model of the run that did not see it
(fold A's events with the model trained on fold B, and the other way round), so that ``model_ensemble``
(ours centred on that model) is scored beside ``ensemble``; the cases then start after the model's input
frames instead of 3.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from scripts.common import RADAR_DIR
from scripts.research.folds import FOLD_EVENTS

STRIDE = {
    "knmi_netherlands_20100826": 30,
    "mch_switzerland_20150515": 11,
    "mch_switzerland_20160711": 11,
    "opera_cirrus_europe_20241126": 7,
    "bom_brisbane_20201031": 50,
    "bom_melbourne_20180616": 20,
    "opera_europe_20180824": 7,
    "mrms_conus_20190610": 7,
}
"""Frames between forecast times per event (2-3 cases each; CIRRUS one)."""
LEADS = {
    "knmi_netherlands_20100826": 12,
    "mch_switzerland_20150515": 12,
    "mch_switzerland_20160711": 12,
    "opera_cirrus_europe_20241126": 10,
    "bom_brisbane_20201031": 6,
    "bom_melbourne_20180616": 10,
    "opera_europe_20180824": 4,
    "mrms_conus_20190610": 15,
}
"""Lead times per event at its own step: 60 minutes (MRMS 30, CIRRUS 50: its 13 frames)."""


def noise_for(event: str, setting: str) -> str:
    """The ``--noise-adjustment`` of ``event``: ``setting``, or for ``cross:GA,GB`` the other fold's gain."""
    if not setting.startswith("cross:"):
        return setting
    gain_a, gain_b = setting.removeprefix("cross:").split(",")
    return gain_b if event in FOLD_EVENTS["A"] else gain_a


def model_args(event: str, trained_on: dict[str, str]) -> list[str]:
    """``evaluate``'s model arguments for ``event``: the model trained on the other fold, or ``--no-model``."""
    if not trained_on:
        return ["--no-model"]
    return ["--model", trained_on["B" if event in FOLD_EVENTS["A"] else "A"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="one folder per event is written under it")
    ap.add_argument("--noise-adjustment", default="none")
    ap.add_argument("--motion-perturbation", default="bps")
    ap.add_argument("--initial-perturbation", default="none", help="ours only: none or innovation")
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1, help="the ensembles' seed (ours and STEPS'), default 1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps-baseline", action="store_true", help="score pySTEPS STEPS beside ours")
    ap.add_argument("--folds", default="A,B", help="the folds whose events are scored (default A,B)")
    ap.add_argument(
        "--models", help="TRAINED_ON_A,TRAINED_ON_B: score ours centred on the model that did not see the event"
    )
    args = ap.parse_args()
    trained_on = dict(zip("AB", args.models.split(","))) if args.models else {}
    for event in [e for fold in args.folds.split(",") for e in FOLD_EVENTS[fold.strip()]]:
        out = args.out / event
        if (out / "metrics.csv").exists():
            continue
        print(f"{event}: --noise-adjustment {noise_for(event, args.noise_adjustment)}", flush=True)
        baselines = "persistence,steps" if args.steps_baseline else "persistence"
        subprocess.run(
            [sys.executable, "-m", "nowcast", "-q", "evaluate", str(RADAR_DIR / f"{event}.nc"),
             *model_args(event, trained_on),
             "--baselines", baselines, "--members", str(args.members), "--seed", str(args.seed), "--thresholds", "1,5,10",
             "--threads", str(args.threads), "--steps", str(LEADS[event]), "--stride", str(STRIDE[event]),
             "--motion-perturbation", args.motion_perturbation,
             "--noise-adjustment", noise_for(event, args.noise_adjustment),
             "--initial-perturbation", args.initial_perturbation, "--out", str(out)],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip


if __name__ == "__main__":
    main()

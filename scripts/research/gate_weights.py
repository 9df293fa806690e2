"""Where does a gated model use persistence? The gate's weights of ``model.persistence_gate`` by rain class.

A model built with ``model.persistence_gate`` forecasts base + w (persistence - base) + correction, with w
in [0, 1] per pixel and lead (``EncoderForecaster.forward``). This script runs one forecast from a
checkpoint at one forecast time of a file and prints, for a few leads, w's mean over the whole grid and
over four classes of pixels (read in each lead's Lagrangian frame, where w is applied): light rain in
persistence (0.5-3 mm/h), intense cells in persistence (> 5 mm/h), pixels where only the moved base has
rain (persistence < 0.1 mm/h, base > 1 mm/h), and intense rain in the base (> 5 mm/h).

    python -m scripts.research.gate_weights CKPT FILE.nc 2024-06-01T13:50 [--leads 6,12]

docs/training.md (the orographic check) reads the seventh run with it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch

from nowcast.forecast import forecast_array
from nowcast.models.checkpoint import model_from_checkpoint
from nowcast.transforms import Transform
from scripts.common import frames_at

CLASSES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "light rain (persistence 0.5-3 mm/h)": lambda p, b: (p > 0.5) & (p < 3.0),
    "intense cells (persistence > 5 mm/h)": lambda p, b: p > 5.0,
    "moved rain only (persistence < 0.1, base > 1 mm/h)": lambda p, b: (p < 0.1) & (b > 1.0),
    "intense in the base (> 5 mm/h)": lambda p, b: b > 5.0,
}


def gate_weights(ckpt: str, path: str, t0: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The gate's weights w, the base and persistence (each (steps, H, W); base and persistence in mm/h)
    of the forecast from ``t0``, 12 leads, captured from the ``torch.lerp`` that applies the gate."""
    model, cfg, _ = model_from_checkpoint(ckpt)
    if not getattr(model, "persistence_gate", False):
        raise SystemExit(f"{ckpt}: expected a model built with model.persistence_gate, found none")
    segment, i = frames_at(path, t0)  # (time, y, x) mm/h
    n = cfg.data.in_frames
    step_s = float(segment.attrs["time_step"])
    frames = segment.values[i - n + 1 : i + 1][None, :, None].astype(np.float32)  # (1, T, 1, H, W) mm/h
    caught: list[tuple[torch.Tensor, ...]] = []
    lerp = torch.lerp

    def spy(base: torch.Tensor, persistence: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        caught.append((base.detach().clone(), persistence.detach().clone(), w.detach().clone()))
        return lerp(base, persistence, w)

    transform = Transform.from_config(cfg)
    torch.lerp = spy
    try:
        forecast_array(model, transform, frames, 12, time_step=step_s)
    finally:
        torch.lerp = lerp
    base, persistence, w = (t[0, :, 0].float().numpy() for t in caught[-1])
    return w.clip(0.0, 1.0), transform.inverse(base), transform.inverse(persistence)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("file")
    ap.add_argument("t0", help="forecast time, e.g. 2024-06-01T13:50")
    ap.add_argument("--leads", default="6,12", help="lead indices, 1-based (default 6,12)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    w, base, persistence = gate_weights(a.checkpoint, a.file, a.t0)
    for k in (int(v) - 1 for v in a.leads.split(",")):
        print(f"lead {k + 1}: w mean {w[k].mean():.3f} over the grid")
        for name, select in CLASSES.items():
            m = select(persistence[k], base[k])
            mean = f"{w[k][m].mean():.3f}" if m.any() else "-"
            print(f"  {name}: w mean {mean} ({int(m.sum())} pixels)")


if __name__ == "__main__":
    main()

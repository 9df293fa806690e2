"""What did ``model.ground_field`` learn? The ground-fixed part g of one observation, beside the true hills.

A model built with ``model.ground_field`` takes a part g of the last observation as fixed to the ground
(``EncoderForecaster.ground_part``, model space) and keeps it in place while the rest moves. This script
computes g (in dB, model space times the transform's dBZ range) at one forecast time of a file and, for
a synthetic orographic file (``--hills-seed``: the seed given to ``nowcast synth --growth orographic``),
the true enhancement in dBZ, 10 b log10(1 + 4 hills) (b of the Z-R relation): it prints their
correlation over the radar disc and the mean of each where the hills are high and low, and draws the
three fields side by side (``--png``).

    python -m scripts.research.ground_field CKPT FILE.nc 2024-06-01T13:50 [--hills-seed 999] [--png out.png]

docs/training.md (the orographic check, ninth run) reads it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from nowcast.models.checkpoint import model_from_checkpoint
from nowcast.synth import OROGRAPHIC_GAIN, hill_heights
from nowcast.transforms import Transform
from scripts.common import frames_at


def ground_field(ckpt: str, path: str, t0: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(last observation (H, W) mm/h, g (H, W) dB, b of the Z-R relation) at forecast time ``t0``."""
    model, cfg, _ = model_from_checkpoint(ckpt)
    if getattr(model, "ground", None) is None:
        raise SystemExit(f"{ckpt}: expected a model built with model.ground_field, found none")
    segment, i = frames_at(path, t0)  # (time, y, x) mm/h
    last = segment.values[i].astype(np.float32)  # (H, W) mm/h, NaN = no data
    transform = Transform.from_config(cfg)
    if transform.kind != "dbz":
        raise SystemExit(f"{ckpt}: expected a model in dBZ (transform.kind=dbz), found {transform.kind}")
    x = np.nan_to_num(transform.forward(last[None, None], check=False), nan=0.0)  # (1, 1, H, W)
    with torch.no_grad():
        g = model.ground_part(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))[0, 0].numpy()
    return last, g * (transform.dbz_max - transform.dbz_min), transform.zr_b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("file")
    ap.add_argument("t0", help="forecast time, e.g. 2024-06-01T13:50")
    ap.add_argument("--hills-seed", type=int, default=None, help="the synthetic file's seed: compare with its hills")
    ap.add_argument("--png", type=Path, default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    last, g, b = ground_field(a.checkpoint, a.file, a.t0)
    inside = np.isfinite(last)
    print(
        f"g (dB) over the radar disc: mean {g[inside].mean():.2f}, 5-95 % {np.percentile(g[inside], [5, 95]).round(2)}"
    )
    panels = [("last observation (mm/h)", np.where(inside, last, np.nan)), ("learned ground part g (dB)", g)]
    if a.hills_seed is not None:
        hills = hill_heights(a.hills_seed, last.shape)
        true = 10.0 * b * np.log10(1.0 + OROGRAPHIC_GAIN * hills)  # dBZ added by the enhancement
        r = np.corrcoef(g[inside], true[inside])[0, 1]
        high, low = inside & (hills > 0.5), inside & (hills < 0.1)
        print(f"correlation with the true enhancement (dBZ): {r:.3f}")
        print(f"  hills > 0.5: g {g[high].mean():.2f} dB, true {true[high].mean():.2f} dB ({int(high.sum())} px)")
        print(f"  hills < 0.1: g {g[low].mean():.2f} dB, true {true[low].mean():.2f} dB ({int(low.sum())} px)")
        panels.append(("true enhancement (dBZ)", np.where(inside, true, np.nan)))
    if a.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import LogNorm

        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), constrained_layout=True)
        for i, (ax, (title, field)) in enumerate(zip(axes, panels)):
            norm = LogNorm(0.1, 100.0) if i == 0 else None  # rain on a log scale: light rain and cells both show
            im = ax.imshow(
                np.where(inside, np.clip(field, 0.1, None) if i == 0 else field, np.nan), cmap="viridis", norm=norm
            )
            ax.set_title(title, fontsize=10)
            ax.set_axis_off()
            fig.colorbar(im, ax=ax, shrink=0.8)
        fig.suptitle(f"{Path(a.file).name}, {a.t0}: {Path(a.checkpoint).parent.name}", fontsize=10)
        fig.savefig(a.png, dpi=90)
        print(f"wrote {a.png}")


if __name__ == "__main__":
    main()

"""An ensemble centred on the learned model (``predict --members N --centre model``): each member is the
model's forecast plus the member's own perturbation (its cascade field less the cascade without noise)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from nowcast.cli import app
from nowcast.config import load_config
from nowcast.forecast import centre_problem, forecast_and_centre, forecast_array
from nowcast.models.registry import build_model
from nowcast.nowcasts.ensemble import EnsembleSettings, _Cascade, ensemble_forecast, lagrangian_dbr, member_generators
from nowcast.transforms import Transform
from tests.conftest import REPO_ROOT, make_tiny_checkpoint, moving_rain

CENTRED = (
    "model.frame=lagrangian",
    "model.residual=true",
    "model.base=sprog",
    "model.probmatching=cdf_lagrangian",
    "data.in_frames=4",
)


def _frames() -> tuple[np.ndarray, np.ndarray]:
    """Rain moving one column per step (4, 40, 48) mm/h and its motion (2, 40, 48) px per step, given."""
    frames = moving_rain(4, size=(40, 48), shift=(0, 1)).astype(np.float32)
    velocity = np.zeros((2, 40, 48), np.float32)
    velocity[0] = 1.0  # u: one column per step
    return frames, velocity


def _trained_looking(cfg) -> torch.nn.Module:
    """The tiny centred model with a non-zero output head (as if trained), seeded."""
    torch.manual_seed(3)
    model = build_model(cfg.model).eval()
    with torch.no_grad():
        for p in model.head[-1].parameters():
            p.normal_(0.0, 0.05)
    assert not model.head_is_zero()
    return model


def test_the_cascade_without_noise_is_a_step_with_zero_innovation() -> None:
    """``_Cascade.mean_path`` (S-PROG's field before matching) is what ``step`` gives with no noise."""
    frames, velocity = _frames()
    cascade = _Cascade(lagrangian_dbr(frames, velocity), 4)
    path = cascade.mean_path(3)
    cascade.sigma = torch.zeros_like(cascade.sigma)
    prev, cur = cascade.start(2)
    for k in range(3):
        prev, cur, field = cascade.step(prev, cur, member_generators(0, 2))
        torch.testing.assert_close(field, path[k].expand_as(field), rtol=0, atol=1e-4)


def test_members_without_noise_are_the_models_forecast() -> None:
    """With the noise turned down to nothing and no motion perturbation, every member centred on the model
    is the model's own forecast (matched to the last frame's distribution in its frame, then advected),
    not S-PROG's: the centre is the forecast, and only the perturbations come from the ensemble."""
    cfg = load_config(REPO_ROOT / "configs" / "tiny.yaml", list(CENTRED))
    model, transform = _trained_looking(cfg), Transform.from_config(cfg)
    frames, velocity = _frames()
    pred, centre = forecast_and_centre(
        model, transform, frames[None, :, None], 3, time_step=300, velocity=velocity[None]
    )
    assert centre is not None and centre.shape == (1, 3, 40, 48) and np.isfinite(centre).all()
    np.testing.assert_array_equal(pred, forecast_array(model, transform, frames[None, :, None], 3, time_step=300,
                                                       velocity=velocity[None]))  # fmt: skip
    quiet = EnsembleSettings(members=2, seed=1, motion_perturbation="none", noise_adjustment="1e-6")
    members = ensemble_forecast(frames, velocity, 3, quiet, centre[0])
    plain = ensemble_forecast(frames, velocity, 3, quiet)
    model_fc = pred[0, :, 0]  # (3, H, W) mm/h
    np.testing.assert_array_equal(np.isnan(members[0]), np.isnan(model_fc))
    both = np.isfinite(model_fc)

    def rain(
        x: np.ndarray,
    ) -> np.ndarray:  # the members' matching calls rates below 0.1 mm/h dry, the model's keeps them
        return np.where(x[both] < 0.1, 0.0, x[both])

    for m in members:  # the same ranks: equal but at a few edge pixels, by at most a neighbouring rate
        diff = np.abs(rain(m) - rain(model_fc))
        assert (diff <= 0.01).mean() > 0.97 and diff.max() < 0.2
    diff = np.abs(rain(plain[0]) - rain(model_fc))
    assert (diff <= 0.01).mean() < 0.8 and diff.max() > 1.0  # S-PROG's members are not the model's forecast


def test_a_model_that_adds_nothing_gives_no_centre_and_the_cli_says_so(cli_runner, radar_file, tmp_path) -> None:
    """An untrained model (a zero head) has no centre of its own: ``--centre model`` writes S-PROG's
    members bit for bit, and the file's ``source`` says that the model adds nothing."""
    cfg = load_config(REPO_ROOT / "configs" / "tiny.yaml", list(CENTRED))
    model = build_model(cfg.model).eval()
    frames, velocity = _frames()
    _, centre = forecast_and_centre(model, Transform.from_config(cfg), frames[None, :, None], 3, time_step=300,
                                    velocity=velocity[None])  # fmt: skip
    assert centre is None
    ckpt = make_tiny_checkpoint(tmp_path / "zero.pt", *CENTRED)
    data = radar_file(frames=6)
    out = {}
    for centre_name in ("sprog", "model"):
        path = tmp_path / f"{centre_name}.nc"
        args = ["predict", str(data), "--model", str(ckpt), "--members", "3", "--seed", "2", "-o", str(path)]
        result = cli_runner.invoke(app, [*args, "--centre", centre_name, "--motion-perturbation", "none"])
        assert result.exit_code == 0, result.output
        with xr.open_dataset(path) as ds:
            out[centre_name] = (ds["rainfall_rate_ensemble"].values, ds.attrs["source"])
    np.testing.assert_array_equal(out["model"][0], out["sprog"][0])
    assert "adds nothing to S-PROG" in out["model"][1] and "the model was not run" in out["sprog"][1]


def test_centre_model_needs_an_ensemble_and_a_lagrangian_residual_model(cli_runner, radar_file, tmp_path) -> None:
    """``--centre model`` of a model that cannot centre (Eulerian), without ``--members``, or an unknown
    centre: a one-line error, exit 2, no file."""
    eulerian = make_tiny_checkpoint(tmp_path / "eulerian.pt")
    assert "model.frame=eulerian" in centre_problem(
        build_model(load_config(REPO_ROOT / "configs" / "tiny.yaml").model), Transform()
    )
    data, out = radar_file(frames=6), tmp_path / "out.nc"
    cases = {
        "expected a Lagrangian residual model": ["--model", str(eulerian), "--members", "2", "--centre", "model"],
        "expected --members N with --centre model": ["--model", str(eulerian), "--centre", "model"],
        "expected one of sprog, model": ["--model", str(eulerian), "--members", "2", "--centre", "persistence"],
    }
    for message, extra in cases.items():
        result = cli_runner.invoke(app, ["predict", str(data), "-o", str(out), *extra])
        assert result.exit_code == 2, result.output
        text = result.output + (result.stderr if result.stderr_bytes is not None else "")
        assert message in " ".join(text.split()), text
        assert not out.exists()


def _csv(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_evaluate_makes_the_members_once_for_a_model_that_adds_nothing(
    cli_runner, radar_file, tmp_path, monkeypatch
) -> None:
    """With a zero head ``model_ensemble`` is ``ensemble`` member for member, so evaluate makes the members
    once per forecast time, not twice; a learned head gets its own."""
    import nowcast.verification.ensembles as ens
    from nowcast.models.checkpoint import load_model, save_checkpoint

    made: list[bool] = []  # per call: centred on a model's forecast
    real = ens.case_members
    monkeypatch.setattr(ens, "case_members", lambda *a, **k: made.append(a[9] is not None) or real(*a, **k))
    data = radar_file(frames=8, size=(40, 48), values=moving_rain(8, size=(40, 48), shift=(0, 1)))
    zero = make_tiny_checkpoint(tmp_path / "zero.pt", *CENTRED)
    learned = save_checkpoint(tmp_path / "learned.pt", config=load_model(zero).config,
                              state_dict=_trained_looking(load_model(zero).config).state_dict(), provenance={})  # fmt: skip
    args = ["evaluate", str(data), "--members", "2", "--steps", "3", "--threads", "1", "--motion-perturbation", "none"]
    for ckpt, calls in ((zero, [False]), (learned, [False, True])):
        made.clear()
        result = cli_runner.invoke(app, [*args, "--model", str(ckpt), "--out", str(tmp_path / ckpt.stem)])
        assert result.exit_code == 0, result.output
        cases = json.loads((tmp_path / ckpt.stem / "summary.json").read_text())["n_cases"]
        assert made == calls * cases


def test_evaluate_scores_the_ensemble_centred_on_each_model_beside_ours(cli_runner, radar_file, tmp_path) -> None:
    """``evaluate --model M --members N``: the method ``model_ensemble`` (ours centred on the model) is
    scored beside ``ensemble`` with the same noise. A model that adds nothing gives the same rows bit for
    bit (what the learned part adds is exactly zero); a model with a learned head gives other members."""
    import json

    from nowcast.models.checkpoint import load_model, save_checkpoint

    data = radar_file(frames=8, size=(40, 48), values=moving_rain(8, size=(40, 48), shift=(0, 1)))
    zero = make_tiny_checkpoint(tmp_path / "zero.pt", *CENTRED)
    loaded = load_model(zero)
    learned = _trained_looking(loaded.config)
    learned_ckpt = save_checkpoint(tmp_path / "learned.pt", config=loaded.config, state_dict=learned.state_dict(),
                                   provenance={"note": "random test weights, non-zero head"})  # fmt: skip
    rows = {}
    for name, ckpt in (("zero", zero), ("learned", learned_ckpt)):
        out = tmp_path / name
        args = ["evaluate", str(data), "--model", str(ckpt), "--members", "3", "--steps", "3", "--threads", "1"]
        result = cli_runner.invoke(app, [*args, "--motion-perturbation", "none", "--out", str(out)])
        assert result.exit_code == 0, result.output
        summary = json.loads((out / "summary.json").read_text())
        assert summary["ensemble_methods"] == ["ensemble", "model_ensemble"]
        assert (
            "the model model's forecast plus its perturbation"
            in summary["settings"]["ensemble"]["methods"]["model_ensemble"]
        )
        table = _csv(out / "metrics.csv")
        rows[name] = {
            m: [(r["lead_min"], r["score"], r["threshold"], r["value"]) for r in table if r["method"] == m]
            for m in ("ensemble", "model_ensemble", "ensemble_mean", "model_ensemble_mean")
        }
        assert any(score == "CRPS" for _, score, _, _ in rows[name]["model_ensemble"])
    assert rows["zero"]["model_ensemble"] == rows["zero"]["ensemble"]
    assert rows["zero"]["model_ensemble_mean"] == rows["zero"]["ensemble_mean"]
    assert rows["learned"]["ensemble"] == rows["zero"]["ensemble"]  # ours does not depend on the model
    assert rows["learned"]["model_ensemble"] != rows["learned"]["ensemble"]

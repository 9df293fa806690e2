"""The Lagrangian model: shapes and no-data masks at any grid size and step, and the any-step workflow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from nowcast.nowcasts import baselines
from nowcast.config import ConfigError, load_config
from nowcast.models.registry import build_model
from nowcast.forecast import forecast_array
from nowcast.transforms import Transform
from tests.conftest import REPO_ROOT, moving_rain

LAGRANGIAN = ("model.frame=lagrangian", "model.residual=true", "model.step_input=true", "data.time_step=0")


def _tiny(*extra: str):
    return load_config(REPO_ROOT / "configs" / "tiny.yaml", [*LAGRANGIAN, *extra])


def test_untrained_residual_model_is_extrapolation_at_odd_sizes_and_any_step(pysteps_installed) -> None:
    """A residual head starts at zero: the forecast is the last frame advected, i.e. pySTEPS extrapolation."""
    cfg = _tiny()
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    seq = moving_rain(9, size=(37, 53), shift=(1, 2)).astype(np.float32)
    frames = seq[:4].copy()
    frames[:, :3, 40:] = np.nan  # a corner without data in every frame
    for step in (120.0, 900.0):
        out = forecast_array(model, Transform.from_config(cfg), frames[None, :, None], 5, time_step=step)
        assert out.shape == (1, 5, 1, 37, 53) and out.dtype == np.float32
        ref = baselines.extrapolation(frames, 5)  # (5, H, W)
        ours = out[0, :, 0]
        assert (np.isfinite(ours) != np.isfinite(ref)).mean() < 1e-3  # same no-data: outside, upwind
        assert np.isnan(ours[:, :3, 40:]).all()
        both = np.isfinite(ours) & np.isfinite(ref) & (ref >= 0.05)
        np.testing.assert_allclose(ours[both], ref[both], rtol=1e-3, atol=0.01)
    with pytest.raises(ValueError, match="time_step"):
        model(torch.zeros(1, 4, 1, 16, 16), 2)  # a step-aware model needs the step


def test_trained_step_input_changes_the_forecast_with_the_step(pysteps_installed) -> None:
    cfg = _tiny()
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    with torch.no_grad():
        for p in model.head.parameters():  # as after training: a non-zero change from the last frame
            p.normal_(0, 0.05)
    frames = moving_rain(4, size=(32, 32)).astype(np.float32)[None, :, None]
    tr = Transform.from_config(cfg)
    a = forecast_array(model, tr, frames, 3, time_step=120)
    b = forecast_array(model, tr, frames, 3, time_step=900)
    assert np.nanmax(np.abs(a - b)) > 1e-3


def test_native_step_needs_a_lagrangian_model() -> None:
    with pytest.raises(ConfigError, match="data.time_step.*model.frame=lagrangian"):
        load_config(REPO_ROOT / "configs" / "tiny.yaml", ["data.time_step=0"])
    with pytest.raises(ConfigError, match="model.frame: expected one of eulerian, lagrangian"):
        load_config(REPO_ROOT / "configs" / "tiny.yaml", ["model.frame=polar"])
    assert _tiny().model.frame == "lagrangian"


@pytest.mark.slow
def test_one_model_trains_and_forecasts_at_each_file_s_own_step(
    cli_runner, radar_file, tmp_path: Path, pysteps_installed
) -> None:
    """Files at 5 and 10 minutes train one model; predict and evaluate then run at each file's step."""

    from nowcast.cli import app

    vals5 = moving_rain(30, size=(48, 48), shift=(0, 1))
    vals10 = moving_rain(30, size=(48, 48), shift=(1, 0), seed=1)
    f5 = radar_file("five.nc", frames=30, size=(48, 48), step=300, values=vals5)
    f10 = radar_file("ten.nc", frames=30, size=(48, 48), step=600, values=vals10)
    runner = cli_runner
    run = tmp_path / "run"
    args = ["train", "--config", str(REPO_ROOT / "configs" / "tiny.yaml"), "--run-dir", str(run)]
    args += [x for s in LAGRANGIAN for x in ("--set", s)]
    args += [
        "--set",
        f"data.files=[{f5},{f10}]",
        "--set",
        "train.steps=6",
        "--set",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "cache").glob("*.npz"))) > 0  # the motion of the forecast times it trained on
    for f, step in ((f5, 300), (f10, 600)):
        out = tmp_path / f"fc_{step}.nc"
        res = runner.invoke(app, ["predict", str(f), "--model", str(run / "model.pt"), "-o", str(out)])
        assert res.exit_code == 0, res.output
        with xr.open_dataset(out, decode_timedelta=True) as ds:
            lead_s = ds["forecast_period"].values.astype("timedelta64[s]").astype(int)
            np.testing.assert_array_equal(lead_s, np.arange(step, 3601, step))  # the next hour at its own step
            assert int(ds.attrs["time_step_seconds"]) == step
    res = runner.invoke(
        app,
        [
            "evaluate",
            str(f10),
            "--model",
            str(run / "model.pt"),
            "--baselines",
            "extrapolation,sprog",
            "--out",
            str(tmp_path / "ev"),
            "--stride",
            "8",
            "--steps",
            "3",
        ],
    )
    assert res.exit_code == 0, res.output
    import json

    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["settings"]["time_step_s"] == 600
    assert summary["methods"] == ["model", "extrapolation", "sprog"]
    assert summary["lead_min"] == [10.0, 20.0, 30.0]


def _streamed(radar_file, size, crop, margin, seed=7):
    """A Lagrangian training sample of a synthetic file, as training streams it: the dataset's item, the
    batch on the device, and the crop origin and frames it came from."""
    import torch

    from nowcast.io import open_archive
    from nowcast.training.windows import FrameSource, SampleSettings, TrainWindows, Window, training_batch

    values = moving_rain(9, size=size, shift=(1, 2), seed=4)
    values[:, :3, :5] = np.nan
    path = radar_file("w.nc", frames=9, size=size, values=values)
    source = FrameSource(open_archive([path], time_step=None, scan=False).segments)
    st = SampleSettings(in_frames=6, out_frames=3, crop=crop, margin=margin, augment=False, lagrangian=True)
    ds = TrainWindows(source, [Window(0, 0)], st, Transform())
    block, velocity, _, aug = ds[(0, seed)]
    x, y, _ = training_batch(block[None], velocity[None], aug[None], st)
    rng = np.random.default_rng(seed)
    _, last = ds._draw(0, rng)
    origin = ds._crop_origin(last, rng)
    return x[0].numpy(), y[0].numpy(), origin, source.read(0, 0, 9), torch


def test_training_and_inference_warp_a_whole_frame_the_same_way(radar_file) -> None:
    """Training's streamed Lagrangian sample of a whole frame is what inference feeds the network (its
    inputs, warped by ``forecast_array``'s transform) and what a forecast advected out must land on,
    given the same motion: training's comes from the motion cache, stored as float16 (within 1/128 px
    of inference's below 16 px per step)."""
    from nowcast.motion import motion_field, to_lagrangian

    x, y, _, frames, torch = _streamed(radar_file, (48, 56), crop=64, margin=0)
    transform = Transform()
    exact = motion_field(frames[:6])
    cached = exact.astype(np.float16).astype(np.float32)
    assert np.abs(cached - exact).max() <= 2.0**-7 and np.abs(exact).max() > 1.0
    velocity = torch.from_numpy(cached)[None]
    inputs = to_lagrangian(torch.from_numpy(transform.forward(frames[:6]))[None], velocity)[0]
    np.testing.assert_array_equal(x, torch.nan_to_num(inputs, nan=0.0).numpy())
    whole = to_lagrangian(torch.from_numpy(transform.forward(frames))[None], velocity, 6)[0].numpy()
    np.testing.assert_array_equal(y, whole[6:])
    assert np.isfinite(y).mean() > 0.5 and not np.array_equal(x[0], x[5])


def test_a_streamed_crop_with_its_margin_equals_the_crop_of_the_whole_frame_warp(radar_file) -> None:
    """Rain moves 2.2 px per step here; over 5 steps back and 3 ahead that is less than the 16 px read
    around the crop, so the crop warped on its own equals the same crop of the whole frame warped (to
    float32 rounding of the interpolation weights)."""
    from nowcast.motion import motion_field, to_lagrangian

    x, y, (oy, ox), frames, torch = _streamed(radar_file, (64, 72), crop=24, margin=16)
    transform = Transform()
    velocity = torch.from_numpy(motion_field(frames[:6]).astype(np.float16).astype(np.float32))[None]
    whole = to_lagrangian(torch.from_numpy(transform.forward(frames))[None], velocity, 6)[0].numpy()
    crop = whole[:, :, oy : oy + 24, ox : ox + 24]
    np.testing.assert_allclose(y, crop[6:], atol=1e-5, equal_nan=True)
    np.testing.assert_allclose(x, np.nan_to_num(crop[:6], nan=0.0), atol=1e-5)


def test_persistence_frames_are_the_last_frame_moved_back_k_steps_and_advect_out_to_persistence() -> None:
    """Rain moving 1 px per step to the right (u = 1): the last frame as persistence forecasts it on the
    ground at lead k sits k px to the left in the Lagrangian frame (lag[x] = last[x + k], written out by
    slicing here), and advected out again (``from_lagrangian``) it is the last frame, unmoved."""
    from nowcast.motion.lagrangian import from_lagrangian, persistence_frames

    rng = np.random.default_rng(3)
    frames = torch.from_numpy(rng.gamma(2.0, 1.0, (1, 3, 1, 12, 16)).astype(np.float32))
    velocity = torch.zeros(1, 2, 12, 16)
    velocity[:, 0] = 1.0  # u: +1 px per step along x
    held = persistence_frames(frames, velocity, 3)
    assert held.shape == (1, 3, 1, 12, 16)
    last = frames[0, -1, 0].numpy()
    for k in (1, 2, 3):
        lag = held[0, k - 1, 0].numpy()
        np.testing.assert_allclose(lag[:, : 16 - k], last[:, k:], rtol=0, atol=1e-5)
        assert np.isnan(lag[:, 16 - k :]).all()  # its source lies outside the grid
    out = from_lagrangian(torch.nan_to_num(held, nan=0.0), velocity)[0, :, 0].numpy()
    for k in range(3):
        np.testing.assert_allclose(out[k][:, k + 1 :], last[:, k + 1 :], rtol=0, atol=1e-5)


def test_training_gives_the_persistence_frames_inference_gives_turned_with_its_window() -> None:
    """With ``persistence_input`` a training batch carries ``persistence_frames`` of its inputs (no data
    as 0), the function ``forecast_array`` calls; turned and flipped with the rest of the sample."""
    from nowcast.motion.lagrangian import persistence_frames
    from nowcast.training.windows import SampleSettings, training_batch

    rng = np.random.default_rng(5)
    block = torch.from_numpy(rng.gamma(2.0, 5.0, (2, 9, 1, 24, 24)).astype(np.float32))
    velocity = torch.from_numpy(rng.uniform(-1.5, 1.5, (2, 2, 24, 24)).astype(np.float32))
    st = SampleSettings(in_frames=6, out_frames=3, crop=16, margin=4, lagrangian=True, persistence=True)
    plain = torch.zeros(2, 2, dtype=torch.int64)
    x, y, held = training_batch(block, velocity, plain, st)
    expected = torch.nan_to_num(persistence_frames(block[:, :6], velocity, 3, 4), nan=0.0)
    assert held.shape == y.shape == (2, 3, 1, 16, 16)
    torch.testing.assert_close(held, expected, rtol=0, atol=0)
    assert float(held.abs().sum()) > 0
    turned = torch.tensor([[1, 1], [3, 0]])
    xt, yt, held_t = training_batch(block, velocity, turned, st)
    for b, (k, flip) in enumerate(turned.tolist()):
        same = torch.rot90(held[b], k, dims=(-2, -1))
        same = torch.flip(same, dims=(-1,)) if flip else same
        torch.testing.assert_close(held_t[b], same, rtol=0, atol=0)
    x_off, y_off, none = training_batch(block, velocity, plain, SampleSettings(6, 3, 16, 4, lagrangian=True))
    assert none is None
    torch.testing.assert_close(x_off, x, rtol=0, atol=0)


def test_persistence_input_model_reads_the_frames_and_trains_and_forecasts(
    cli_runner, radar_file, tmp_path: Path, pysteps_installed
) -> None:
    """A model built with ``persistence_input`` refuses to run without the frames, its forecast depends on
    them once its head is not zero, and ``train`` then ``predict`` run with it end to end; the option
    needs a Lagrangian ConvLSTM (a one-line config error otherwise)."""
    from nowcast.cli import app

    cfg = _tiny("model.persistence_input=true")
    model = build_model(cfg.model).eval()
    x = torch.rand(1, 4, 1, 20, 24)
    with pytest.raises(ValueError, match="persistence: expected"):
        model(x, 3, 300.0)
    torch.nn.init.normal_(model.head[-1].weight, std=0.1)
    with torch.no_grad():
        a = model(x, 3, 300.0, persistence=torch.rand(1, 3, 1, 20, 24))
        b = model(x, 3, 300.0, persistence=torch.zeros(1, 3, 1, 20, 24))
    assert float((a - b).abs().max()) > 1e-4
    with pytest.raises(ConfigError, match="model.persistence_input: expected true only with"):
        load_config(REPO_ROOT / "configs" / "tiny.yaml", ["model.persistence_input=true"])

    f = radar_file("p.nc", frames=30, size=(48, 48), step=300, values=moving_rain(30, size=(48, 48), shift=(0, 1)))
    run = tmp_path / "run"
    sets = [*LAGRANGIAN, "model.persistence_input=true", f"data.files=[{f}]", "train.steps=4"]
    sets += [f"data.cache_dir={tmp_path / 'cache'}"]
    args = ["train", "--config", str(REPO_ROOT / "configs" / "tiny.yaml"), "--run-dir", str(run)]
    res = cli_runner.invoke(app, args + [x for s in sets for x in ("--set", s)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "fc.nc"
    res = cli_runner.invoke(app, ["predict", str(f), "--model", str(run / "last.pt"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    with xr.open_dataset(out) as ds:
        assert np.isfinite(ds["rainfall_rate"].values).mean() > 0.5


def test_persistence_gate_blends_the_base_toward_persistence_by_a_learned_weight() -> None:
    """``persistence_gate``: forecast = base + w (persistence - base) + correction, w clamped to [0, 1].
    A zero head is the base; a head whose gate outputs are a constant 5 (w = 1) and correction 0 gives
    persistence exactly; a gate of 0.25 gives a quarter of the way; a gate of -3 is clamped to the base."""
    cfg = _tiny("model.persistence_input=true", "model.persistence_gate=true", "model.base=sprog")
    model = build_model(cfg.model).eval()
    x = torch.rand(2, 4, 1, 20, 24)
    held = torch.rand(2, 3, 1, 20, 24)
    last = model.head[-1]
    folded = last.out_channels // 2
    with torch.no_grad():
        base = model.base_forecast(x, 3)
        torch.testing.assert_close(model(x, 3, 300.0, persistence=held), base, rtol=0, atol=0)
        for g, expected in ((5.0, held), (0.25, base + 0.25 * (held - base)), (-3.0, base)):
            last.bias[folded:] = g  # weights stay zero: a constant gate, no correction
            torch.testing.assert_close(model(x, 3, 300.0, persistence=held), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="model.persistence_gate: expected true only with"):
        load_config(REPO_ROOT / "configs" / "tiny.yaml", [*LAGRANGIAN, "model.persistence_gate=true"])


def test_persistence_history_moves_each_of_the_last_frames_the_same_way_last_first() -> None:
    """``history=3``: the last three frames, each moved as the last one is (lead k: k px to the left under
    u = 1, written out by slicing), stacked along channels with the last first. Rain that stays on the
    ground coincides in all three; rain moving with the motion is shifted by one pixel from one to the next."""
    from nowcast.motion.lagrangian import persistence_frames

    rng = np.random.default_rng(4)
    frames = torch.from_numpy(rng.gamma(2.0, 1.0, (1, 4, 2, 10, 16)).astype(np.float32))  # two channels
    velocity = torch.zeros(1, 2, 10, 16)
    velocity[:, 0] = 1.0
    held = persistence_frames(frames, velocity, 3, history=3)
    assert held.shape == (1, 3, 6, 10, 16)
    torch.testing.assert_close(held[:, :, :2], persistence_frames(frames, velocity, 3), rtol=0, atol=0, equal_nan=True)
    for j in range(3):  # channel block j: frame t_last - j
        src = frames[0, -1 - j].numpy()  # (C, H, W)
        for k in (1, 3):
            lag = held[0, k - 1, 2 * j : 2 * j + 2].numpy()
            np.testing.assert_allclose(lag[..., : 16 - k], src[..., k:], rtol=0, atol=1e-5)

    fixed = frames[:, -1:].expand(1, 4, 2, 10, 16)  # the same field at every time: rain on the ground
    same = persistence_frames(fixed, velocity, 2, history=3)
    torch.testing.assert_close(same[:, :, 2:4], same[:, :, :2], rtol=0, atol=0, equal_nan=True)
    moving = torch.stack([torch.roll(frames[:, -1], t - 3, dims=-1) for t in range(4)], 1)  # u = 1
    shifted = persistence_frames(moving, velocity, 2, history=2)[0, 0].numpy()  # lead 1
    np.testing.assert_allclose(shifted[2:4, :, 1:14], shifted[0:2, :, 2:15], rtol=0, atol=1e-5)
    assert np.nanmax(np.abs(shifted[2:4] - shifted[0:2])) > 0.1


def test_persistence_history_in_training_inference_and_the_model() -> None:
    """Training's batch carries what ``persistence_frames(..., history=3)`` gives, (B, out, 3 C, h, w),
    turned with its window; the model reads 3 frames per lead, its gate weighs the last one only; a
    history without ``persistence_input`` or longer than the inputs is a one-line config error."""
    from nowcast.motion.lagrangian import persistence_frames
    from nowcast.training.windows import SampleSettings, training_batch

    rng = np.random.default_rng(6)
    block = torch.from_numpy(rng.gamma(2.0, 5.0, (2, 9, 1, 24, 24)).astype(np.float32))
    velocity = torch.from_numpy(rng.uniform(-1.5, 1.5, (2, 2, 24, 24)).astype(np.float32))
    st = SampleSettings(6, 3, 16, 4, lagrangian=True, persistence=True, persistence_history=3)
    plain = torch.zeros(2, 2, dtype=torch.int64)
    x, y, held = training_batch(block, velocity, plain, st)
    expected = torch.nan_to_num(persistence_frames(block[:, :6], velocity, 3, 4, history=3), nan=0.0)
    assert held.shape == (2, 3, 3, 16, 16)
    torch.testing.assert_close(held, expected, rtol=0, atol=0)
    turned = torch.tensor([[1, 1], [2, 0]])
    _, _, held_t = training_batch(block, velocity, turned, st)
    for b, (k, flip) in enumerate(turned.tolist()):
        same = torch.rot90(held[b], k, dims=(-2, -1))
        torch.testing.assert_close(held_t[b], torch.flip(same, dims=(-1,)) if flip else same, rtol=0, atol=0)

    sets = ("model.persistence_input=true", "model.persistence_gate=true", "model.base=sprog")
    model = build_model(_tiny(*sets, "model.persistence_history=3").model).eval()
    x = torch.rand(1, 4, 1, 20, 24)
    frames3 = torch.rand(1, 3, 3, 20, 24)
    with pytest.raises(ValueError, match=r"persistence: expected \(1, 3, 3, 20, 24\)"):
        model(x, 3, 300.0, persistence=frames3[:, :, :1])
    last = model.head[-1]
    with torch.no_grad():
        last.bias[last.out_channels // 2 :] = 5.0  # w = 1: persistence of the last frame, exactly
        torch.testing.assert_close(model(x, 3, 300.0, persistence=frames3), frames3[:, :, :1], rtol=1e-5, atol=1e-5)
        torch.nn.init.normal_(last.weight, std=0.1)
        a = model(x, 3, 300.0, persistence=frames3)
        b = model(x, 3, 300.0, persistence=torch.cat([frames3[:, :, :1], torch.zeros(1, 3, 2, 20, 24)], 2))
    assert float((a - b).abs().max()) > 1e-4  # the older frames are read
    with pytest.raises(ConfigError, match="model.persistence_history: expected 1, or 2 to data.in_frames"):
        load_config(REPO_ROOT / "configs" / "tiny.yaml", [*LAGRANGIAN, "model.persistence_history=2"])
    with pytest.raises(ConfigError, match="model.persistence_history: expected 1, or 2 to data.in_frames"):
        load_config(REPO_ROOT / "configs" / "tiny.yaml", [*LAGRANGIAN, *sets[:1], "model.persistence_history=99"])


def test_ground_field_takes_the_ground_part_off_the_base_and_puts_it_back_on_the_ground() -> None:
    """``ground_field``: base at lead k = base - g + g_k, g the branch on the last observation, g_k the
    branch on that observation moved into lead k's frame (the persistence input). Zero at the start (the
    forecast is the base, bit for bit); a branch g = 2 x field gives base + 2 (held_k - last) exactly; a
    constant ground part cancels; the option needs persistence_input (a one-line config error)."""
    cfg = _tiny("model.persistence_input=true", "model.ground_field=true", "model.base=sprog")
    model = build_model(cfg.model).eval()
    assert model.head_is_zero()
    x = torch.rand(2, 4, 1, 20, 24)
    held = torch.rand(2, 3, 1, 20, 24)
    with torch.no_grad():
        base = model.base_forecast(x, 3)
        torch.testing.assert_close(model(x, 3, 300.0, persistence=held), base, rtol=0, atol=0)
        folded = model.ground[-1].out_channels
        double = torch.nn.Conv2d(folded, folded, 1)
        double.weight.copy_(2.0 * torch.eye(folded)[:, :, None, None])
        double.bias.zero_()
        model.ground = torch.nn.Sequential(double)
        assert not model.head_is_zero()
        expected = base + 2.0 * (held - x[:, -1:])
        torch.testing.assert_close(model(x, 3, 300.0, persistence=held), expected, rtol=1e-5, atol=1e-5)
        double.weight.zero_()
        double.bias.fill_(0.7)  # the same ground part everywhere and at every lead: nothing moves
        torch.testing.assert_close(model(x, 3, 300.0, persistence=held), base, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="model.ground_field: expected true only with"):
        load_config(REPO_ROOT / "configs" / "tiny.yaml", [*LAGRANGIAN, "model.ground_field=true"])


def test_ground_field_model_trains_and_predicts_end_to_end(
    cli_runner, radar_file, tmp_path: Path, pysteps_installed
) -> None:
    """``train`` then ``predict`` with ``model.ground_field``: the branch learns (its last layer leaves
    zero) and the forecast is written, finite where the input has data; ``info`` says what the model does."""
    from nowcast.cli import app

    f = radar_file("g.nc", frames=30, size=(48, 48), step=300, values=moving_rain(30, size=(48, 48), shift=(0, 1)))
    run = tmp_path / "run"
    sets = [*LAGRANGIAN, "model.persistence_input=true", "model.ground_field=true", "model.base=sprog"]
    sets += [f"data.files=[{f}]", "train.steps=4", f"data.cache_dir={tmp_path / 'cache'}"]
    args = ["train", "--config", str(REPO_ROOT / "configs" / "tiny.yaml"), "--run-dir", str(run)]
    res = cli_runner.invoke(app, args + [x for s in sets for x in ("--set", s)])
    assert res.exit_code == 0, res.output
    state = torch.load(run / "last.pt", weights_only=True)["state_dict"]
    assert float(state["ground.6.weight"].abs().sum()) > 0
    res = cli_runner.invoke(app, ["info", str(run / "last.pt")])
    assert res.exit_code == 0 and "ground-fixed part" in res.output, res.output
    out = tmp_path / "fc.nc"
    res = cli_runner.invoke(app, ["predict", str(f), "--model", str(run / "last.pt"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    with xr.open_dataset(out) as ds:
        assert np.isfinite(ds["rainfall_rate"].values).mean() > 0.5

"""ConvLSTM cell against Shi et al. 2015 eq. 3, encoder-forecaster shapes, paths, gradients, precision."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from nowcast.config import ModelConfig
from nowcast.models.convlstm import ConvLSTMCell
from nowcast.models.registry import build_model, count_parameters

TINY = ModelConfig(channels=1, patch=2, hidden=(6, 8), kernels=(3, 3), downsample=(1, 2))


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state (one torch thread comes from conftest)."""
    torch.manual_seed(0)


def eq3_reference(cell: ConvLSTMCell, x, h, c):
    """Shi et al. 2015 eq. 3 written out gate by gate with F.conv2d on the cell's own weights."""
    n, k = cell.hidden, cell.kernel
    wx, bx, wh = cell.conv_x.weight, cell.conv_x.bias, cell.conv_h.weight
    pad = k // 2

    def pre(gate: int):  # gate order in the stacked weights: i, f, o, g
        sl = slice(gate * n, (gate + 1) * n)
        return F.conv2d(x, wx[sl], bx[sl], padding=pad) + F.conv2d(h, wh[sl], None, padding=pad)

    if cell.peephole:
        w_ci, w_cf, w_co = cell.w_ci, cell.w_cf, cell.w_co
    else:
        w_ci = w_cf = w_co = torch.zeros(1, n, 1, 1)
    i = torch.sigmoid(pre(0) + w_ci * c)
    f = torch.sigmoid(pre(1) + w_cf * c)
    c_new = f * c + i * torch.tanh(pre(3))
    o = torch.sigmoid(pre(2) + w_co * c_new)
    return o * torch.tanh(c_new), c_new


@pytest.mark.parametrize("peephole", [False, True])
@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_cell_matches_equation_3(peephole, kernel):
    cell = ConvLSTMCell(3, 5, kernel, peephole=peephole).double()
    if peephole:  # non-zero peepholes, else the terms would vanish
        for w in (cell.w_ci, cell.w_cf, cell.w_co):
            torch.nn.init.normal_(w)
    x = torch.randn(2, 3, 7, 9, dtype=torch.double)
    h = torch.randn(2, 5, 7, 9, dtype=torch.double)
    c = torch.randn(2, 5, 7, 9, dtype=torch.double)
    h_ref, c_ref = eq3_reference(cell, x, h, c)
    # both forms: input and state convolved together, and precomputed input gates + state conv
    for h1, c1 in (cell(x, (h, c)), cell.step(cell.input_gates(x), (h, c))):
        assert h1.shape == c1.shape == (2, 5, 7, 9)
        torch.testing.assert_close(h1, h_ref, atol=1e-6, rtol=0)
        torch.testing.assert_close(c1, c_ref, atol=1e-6, rtol=0)
    # the zero state (None) is the same as explicit zeros
    z = torch.zeros_like(h)
    torch.testing.assert_close(cell(x, None), eq3_reference(cell, x, z, z), atol=1e-6, rtol=0)


def test_cell_without_input_is_zero_input():
    cell = ConvLSTMCell(0, 4, 3)
    ref = ConvLSTMCell(2, 4, 3)
    ref.conv_h.weight.data.copy_(cell.conv_h.weight)
    with torch.no_grad():
        ref.conv_x.bias.copy_(torch.randn(16))
        cell.bias.copy_(ref.conv_x.bias)
    h, c = torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(cell(None, (h, c)), ref(torch.zeros(1, 2, 5, 5), (h, c)))


def test_forget_bias_and_peephole_shapes():
    cell = ConvLSTMCell(2, 4, 3, peephole=True)
    assert cell.conv_x.bias.tolist() == [0.0] * 4 + [1.0] * 4 + [0.0] * 8
    assert cell.w_ci.shape == (1, 4, 1, 1)
    assert cell.conv_h.bias is None and cell.conv_h.padding == (1, 1)


@pytest.mark.parametrize("peephole", [False, True])
def test_batched_input_equals_per_step(peephole):
    cfg = dataclasses.replace(
        TINY, hidden=(4, 6, 6), kernels=(3, 5, 3), downsample=(1, 2, 2), peephole=peephole, stem=5
    )
    model = build_model(cfg)
    per_step = build_model(dataclasses.replace(cfg, batched_input=False))
    per_step.load_state_dict(model.state_dict())
    x = torch.rand(2, 4, 1, 16, 24)
    torch.testing.assert_close(model(x, 3), per_step(x, 3), atol=1e-5, rtol=0)


def test_batched_input_argument_chooses_the_encoder_path(monkeypatch):
    model = build_model(TINY)  # configured batched
    convolve = model.encoder[0].input_gates
    frames_per_call = []

    def spy(x):
        frames_per_call.append(x.shape[0])
        return convolve(x)

    monkeypatch.setattr(model.encoder[0], "input_gates", spy)
    x = torch.rand(1, 3, 1, 8, 8)  # 1 sample of 3 frames
    with torch.inference_mode():
        model(x, 2)  # as configured: the input convolutions of all 3 frames in one call
        assert frames_per_call == [3]
        frames_per_call.clear()
        model(x, 2, batched_input=False)  # per step: only the first frame alone, the rest fused with the state
        assert frames_per_call == [1]
    assert model.batched_input is True


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(channels=1, patch=1, hidden=(4,), kernels=(3,), downsample=(1,)),
        ModelConfig(channels=3, patch=2, hidden=(4, 6), kernels=(3, 3), downsample=(1, 2)),
        ModelConfig(channels=1, patch=4, hidden=(4, 6, 6), kernels=(3, 3, 1), downsample=(1, 2, 2), stem=8),
        ModelConfig(channels=3, patch=4, hidden=(4, 4), kernels=(5, 3), downsample=(2, 3), peephole=True),
    ],
    ids=["1level-p1", "2levels-ds2-rgb", "3levels-p4-stem", "ds-first-ds3-rgb"],
)
@pytest.mark.parametrize("size", [(37, 53), (24, 24)])
def test_output_shape_any_frame_size(cfg, size):
    model = build_model(cfg)
    x = torch.rand(2, 3, cfg.channels, *size)
    with torch.inference_mode():
        y = model(x, 2)
    assert y.shape == (2, 2, cfg.channels, *size)
    assert torch.isfinite(y).all()
    assert model.total_stride == cfg.patch * torch.tensor(cfg.downsample).prod().item()


def test_frame_shape_errors():
    model = build_model(TINY)
    with pytest.raises(ValueError, match=r"frames: expected \(B, T, 1, H, W\), found \(1, 3, 2, 8, 8\)"):
        model(torch.rand(1, 3, 2, 8, 8), 1)
    with pytest.raises(ValueError, match="steps: expected a positive number, found 0"):
        model(torch.rand(1, 3, 1, 8, 8), 0)


def test_gradients_reach_every_parameter():
    cfg = dataclasses.replace(TINY, hidden=(4, 6, 6), kernels=(3, 3, 3), downsample=(1, 2, 2), peephole=True, stem=4)
    model = build_model(cfg)
    x, target = torch.rand(2, 3, 1, 16, 16), torch.rand(2, 2, 1, 16, 16)
    F.mse_loss(model(x, 2), target).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("batched", [True, False])
def test_longer_unroll_is_causal(batched):
    model = build_model(dataclasses.replace(TINY, batched_input=batched))
    x = torch.rand(1, 4, 1, 12, 20)
    with torch.inference_mode():
        short, long = model(x, 3), model(x, 7)
    assert long.shape == (1, 7, 1, 12, 20)
    torch.testing.assert_close(long[:, :3], short, atol=0, rtol=0)


@pytest.mark.parametrize("batched", [True, False])
def test_bf16_autocast_close_to_fp32(batched):
    model = build_model(dataclasses.replace(TINY, peephole=True, batched_input=batched))
    x = torch.rand(2, 4, 1, 16, 16)
    with torch.inference_mode():
        ref = model(x, 3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, 3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            states = model.encode(x)
    assert low.dtype == torch.bfloat16
    assert all(h.dtype == c.dtype == torch.bfloat16 for h, c in states)
    assert ((low.float() - ref).norm() / ref.norm()).item() < 0.02


def test_channels_last_same_forecast():
    model = build_model(TINY)
    x = torch.rand(1, 3, 1, 16, 16)
    with torch.inference_mode():
        ref = model(x, 2)
        model = model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(model(x, 2), ref, atol=1e-5, rtol=0)


def test_levels_follow_the_config():
    model = build_model(TINY)  # patch 2, levels of 6 and 8 channels, 3x3 kernels, downsampling 2 into level 2
    assert [cell.conv_h.out_channels for cell in model.encoder] == [4 * 6, 4 * 8]  # gates i, f, o, g
    assert [cell.conv_h.kernel_size for cell in model.encoder] == [(3, 3), (3, 3)]
    assert [cell.conv_h.padding for cell in model.encoder] == [(1, 1), (1, 1)]
    assert model.total_stride == 4  # 2 (patch) x 2 (downsampling)


@pytest.mark.parametrize("base", ["last", "sprog"])
def test_zero_head_forecast_is_the_base_bit_for_bit(base):
    """A residual model whose head is still zero (untrained, or exported at its start by train.export
    best) skips the network in inference: the forecast equals the full computation exactly."""
    model = build_model(dataclasses.replace(TINY, residual=True, base=base, residual_smoothing=2.0))
    x = torch.rand(2, 4, 1, 16, 20)
    assert model.head_is_zero()
    full = model(x, 3).detach()  # grad enabled: the network runs (training must reach the head)
    calls = []
    model.encode = lambda *a, **k: calls.append(1)  # the network must not run under no_grad
    with torch.no_grad():
        fast = model(x, 3)
    assert not calls
    assert fast.shape == full.shape == (2, 3, 1, 16, 20)
    assert torch.equal(fast, full)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        assert model(x, 3).dtype == torch.bfloat16  # as the head's output would be


def test_trained_head_runs_the_network():
    model = build_model(dataclasses.replace(TINY, residual=True))
    with torch.no_grad():
        model.head[-1].bias.fill_(0.5)
        x = torch.rand(1, 4, 1, 16, 16)
        out = model(x, 2)
    assert not model.head_is_zero()
    assert torch.allclose(out, x[:, -1:] + 0.5)  # every pixel: the last frame plus the bias

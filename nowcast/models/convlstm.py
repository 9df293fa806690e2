"""ConvLSTM encoder-forecaster (Shi et al. 2015; topology of Shi et al. 2017, HKO-7).

Frames ``(B, T, C, H, W)`` in model space are padded to a multiple of ``total_stride``, folded by
space-to-depth (``patch``), optionally widened by a 3x3 ``stem`` convolution, and read by a stack of
ConvLSTM levels, each optionally downsampled by a strided convolution. The forecaster mirrors the stack
top-down: each level starts from the final ``(h, c)`` of its encoder level, the top level gets no input,
lower levels get the upsampled hidden state of the level above, and a head maps the bottom level back to
``channels * patch**2`` and depth-to-space to full resolution. The forecaster unrolls any number of steps.

Everything is configuration (``ModelConfig``); nothing depends on the frame size, so a model trained on
crops forecasts full frames.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nowcast.config import ModelConfig
from nowcast.models.layers import add_step_channel, gaussian_smooth, pad_to_multiple
from nowcast.nowcasts.cascade import damped_cascade

State = tuple[Tensor, Tensor]  # (h, c), each (B, hidden, H, W)
SPROG_WET = 1e-6
"""Rain/no-rain limit of ``model.base: sprog`` in model space: a ``dbz`` transform maps everything at or
below its ``dbz_min`` to 0, so anything above 0 is rain."""


class ConvLSTMCell(nn.Module):
    """ConvLSTM cell, Shi et al. 2015 eq. 3, with optional per-channel peepholes.

    i  = sigmoid(W_xi*X + W_hi*H + w_ci o C + b_i)
    f  = sigmoid(W_xf*X + W_hf*H + w_cf o C + b_f)
    C' = f o C + i o tanh(W_xg*X + W_hg*H + b_g)
    o  = sigmoid(W_xo*X + W_ho*H + w_co o C' + b_o)
    H' = o o tanh(C')

    ``conv_x`` (input to state, with the bias) and ``conv_h`` (state to state, no bias) each produce the
    four gates stacked along channels in the order (i, f, o, g). Keeping them apart lets a caller compute
    ``conv_x`` for a whole sequence in one call (``input_gates``) and then ``step`` through time.
    A cell built with ``in_channels=0`` has no input at all (``conv_x`` is None) and keeps its bias
    in ``bias``: the top forecaster level, whose input would be zero.

    Peephole weights are per channel, shape (1, hidden, 1, 1), so the cell works at any frame size.
    Padding is ``kernel // 2``: the state keeps the input's height and width.
    """

    def __init__(self, in_channels: int, hidden: int, kernel: int = 3, peephole: bool = False) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel: expected an odd size >= 1, found {kernel}")
        self.in_channels = in_channels
        self.hidden = hidden
        self.kernel = kernel
        pad = kernel // 2
        self.conv_x = nn.Conv2d(in_channels, 4 * hidden, kernel, padding=pad, bias=True) if in_channels else None
        self.bias = None if in_channels else nn.Parameter(torch.zeros(4 * hidden))
        self.conv_h = nn.Conv2d(hidden, 4 * hidden, kernel, padding=pad, bias=False)
        if peephole:
            self.w_ci = nn.Parameter(torch.zeros(1, hidden, 1, 1))
            self.w_cf = nn.Parameter(torch.zeros(1, hidden, 1, 1))
            self.w_co = nn.Parameter(torch.zeros(1, hidden, 1, 1))
        else:
            self.w_ci = self.w_cf = self.w_co = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Default conv init; forget-gate bias 1 so that the cell remembers from the start."""
        bias = self.conv_x.bias if self.conv_x is not None else self.bias
        with torch.no_grad():
            bias.zero_()
            bias[self.hidden : 2 * self.hidden].fill_(1.0)

    @property
    def peephole(self) -> bool:
        return self.w_ci is not None

    def input_gates(self, x: Tensor) -> Tensor:
        """Input-to-state pre-activations ``W_x*X + b``: (N, in_channels, H, W) -> (N, 4*hidden, H, W).

        N may be batch x time: the convolution of a whole sequence in one call.
        """
        return self.conv_x(x)

    def step(self, xg: Tensor | None, state: State | None) -> State:
        """One time step from precomputed input pre-activations.

        xg: (B, 4*hidden, H, W) from ``input_gates``, or None for a cell without input.
        state: (h, c), each (B, hidden, H, W), or None for the zero state (skips ``conv_h``).
        Returns the new (h, c) in the activations' dtype (bf16 under autocast).
        """
        if state is None:
            if xg is None:
                raise ValueError("a cell without input needs a state")
            return self._update(xg, None)  # H = C = 0: the gates are the input's alone
        h, c = state
        gates = self.conv_h(h)  # (B, 4h, H, W)
        gates = gates + (xg if xg is not None else self.bias.to(gates.dtype).view(1, -1, 1, 1))
        return self._update(gates, c)

    def fused_weight(self) -> Tensor:
        """``conv_x`` and ``conv_h`` weights side by side, (4*hidden, in_channels + hidden, k, k).

        Under autocast already in the autocast dtype. Build it once per sequence and pass it to every
        ``forward`` step: concatenating (and casting) the weights at every step costs more than the
        convolution itself for wide levels on small grids.
        """
        w = torch.cat([self.conv_x.weight, self.conv_h.weight], dim=1)
        device = w.device.type
        if torch.is_autocast_enabled(device):
            w = w.to(torch.get_autocast_dtype(device))
        return w

    def forward(self, x: Tensor | None, state: State | None = None, weight: Tensor | None = None) -> State:
        """One time step from the input itself: x (B, in_channels, H, W) or None (cell without input).

        With both an input and a state, input and hidden state are concatenated and convolved in one
        call with ``weight`` (``fused_weight()``, built here if not given): on the CPU the fastest
        per-step form (one kernel with long reductions instead of two and an addition).
        """
        if x is None or state is None:
            return self.step(None if x is None else self.input_gates(x), state)
        h, c = state
        if weight is None:
            weight = self.fused_weight()
        gates = F.conv2d(torch.cat([x, h], dim=1), weight, self.conv_x.bias, padding=self.kernel // 2)
        return self._update(gates, c)  # gates (B, 4h, H, W)

    def _update(self, gates: Tensor, c: Tensor | None) -> State:
        """Gate non-linearities and the state update of eq. 3; c None: zero cell state."""
        if self.w_ci is None:
            sig, g = gates.split([3 * self.hidden, self.hidden], dim=1)
            i, f, o = torch.sigmoid(sig).chunk(3, dim=1)
            g = torch.tanh(g)
            c_new = i * g if c is None else torch.addcmul(f * c, i, g)
        else:
            a_i, a_f, a_o, g = gates.chunk(4, dim=1)
            dt = gates.dtype
            g = torch.tanh(g)
            if c is None:
                c_new = torch.sigmoid(a_i) * g
            else:
                i = torch.sigmoid(torch.addcmul(a_i, self.w_ci.to(dt), c))
                f = torch.sigmoid(torch.addcmul(a_f, self.w_cf.to(dt), c))
                c_new = torch.addcmul(f * c, i, g)
            o = torch.sigmoid(torch.addcmul(a_o, self.w_co.to(dt), c_new))
        h_new = o * torch.tanh(c_new)
        return h_new, c_new


def down_block(channels: int, factor: int) -> nn.Module:
    """Strided conv by ``factor`` (kernel 2f-1, padding f-1: 3x3 stride 2 for f=2), LeakyReLU; identity for 1."""
    if factor == 1:
        return nn.Identity()
    conv = nn.Conv2d(channels, channels, 2 * factor - 1, stride=factor, padding=factor - 1)
    return nn.Sequential(conv, nn.LeakyReLU(0.2))


def up_block(channels: int, factor: int) -> nn.Module:
    """Transposed conv by ``factor`` (kernel 2f, exact size: 4x4 stride 2 for f=2), LeakyReLU; identity for 1."""
    if factor == 1:
        return nn.Identity()
    pad = (factor + 1) // 2
    conv = nn.ConvTranspose2d(
        channels, channels, 2 * factor, stride=factor, padding=pad, output_padding=2 * pad - factor
    )
    return nn.Sequential(conv, nn.LeakyReLU(0.2))


GROUND_WIDTH = 32
"""Channels of ``model.ground_field``'s branch."""


def ground_branch(folded: int, width: int) -> nn.Sequential:
    """``model.ground_field``'s branch on folded frames (N, folded, H/p, W/p) -> (N, folded, H/p, W/p).

    Four convolutions at the patch scale (3x3, 5x5 dilated 2, 5x5, 3x3; a reach of 17 patches, 68 pixels
    at patch 4: hills and the light rain over them are smooth), the last zero at the start."""
    layers = [
        nn.Conv2d(folded, width, 3, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(width, width, 5, padding=4, dilation=2),
        nn.LeakyReLU(0.2),
        nn.Conv2d(width, width, 5, padding=2),
        nn.LeakyReLU(0.2),
        nn.Conv2d(width, folded, 3, padding=1),
    ]
    nn.init.zeros_(layers[-1].weight)
    nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


class EncoderForecaster(nn.Module):
    """ConvLSTM encoder-forecaster built from a ``ModelConfig``.

    Level k (bottom k=0 to top) has ``hidden[k]`` channels and ``kernels[k]``; ``downsample[k]`` is the
    strided conv entering encoder level k (level 0: after patch and stem), mirrored by a transposed conv
    leaving forecaster level k. Encoder level k reads the hidden sequence of level k-1; forecaster level k
    starts from encoder level k's final (h, c) and reads the upsampled output of forecaster level k+1
    (the top level reads nothing). The head is a 3x3 conv + LeakyReLU to ``stem`` channels when a stem is
    configured, then a 1x1 conv to ``channels * patch**2``, and depth-to-space.

    ``batched_input=True``: the encoder runs level by level and computes the input-to-state convolution of
    all T frames of a level in one call (long convolutions off the sequential chain; good on GPUs). It
    keeps T gate pre-activations (4*hidden channels) and the level's hidden sequence alive at once: in
    inference that is several times the peak memory of the per-step path. ``batched_input=False``: the
    encoder runs time step by time step through all levels and keeps only the current state (memory
    independent of T). Both give the same forecast with the same weights.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        n = len(cfg.hidden)
        if not n or len(cfg.kernels) != n or len(cfg.downsample) != n:
            raise ValueError(
                f"hidden/kernels/downsample: expected one entry per level, found "
                f"{len(cfg.hidden)}/{len(cfg.kernels)}/{len(cfg.downsample)}"
            )
        self.cfg = cfg
        self.patch = cfg.patch
        self.channels = cfg.channels
        self.batched_input = cfg.batched_input
        self.residual = cfg.residual
        self.base = cfg.base
        self.residual_smoothing = float(cfg.residual_smoothing)
        self.step_input = cfg.step_input
        folded = cfg.channels * cfg.patch**2
        folded_in = (cfg.channels + int(cfg.step_input)) * cfg.patch**2
        self.stem = nn.Sequential(nn.Conv2d(folded_in, cfg.stem, 3, padding=1), nn.LeakyReLU(0.2)) if cfg.stem else None
        widths = [cfg.stem or folded_in, *cfg.hidden]  # input channels of level k: widths[k]
        self.down = nn.ModuleList(down_block(widths[k], cfg.downsample[k]) for k in range(n))
        self.encoder = nn.ModuleList(
            ConvLSTMCell(widths[k], cfg.hidden[k], cfg.kernels[k], cfg.peephole) for k in range(n)
        )
        f_in = [cfg.hidden[k + 1] for k in range(n - 1)] + [0]  # forecaster level k reads level k+1
        self.persistence_input = cfg.persistence_input
        self.persistence_history = cfg.persistence_history
        if cfg.persistence_input:  # ... and level 0 the folded persistence frame(s) of each lead too
            f_in[0] += folded * cfg.persistence_history
        self.forecaster = nn.ModuleList(
            ConvLSTMCell(f_in[k], cfg.hidden[k], cfg.kernels[k], cfg.peephole) for k in range(n)
        )
        self.up = nn.ModuleList(up_block(cfg.hidden[k], cfg.downsample[k]) for k in range(n))
        head: list[nn.Module] = []
        if cfg.stem:
            head += [nn.Conv2d(cfg.hidden[0], cfg.stem, 3, padding=1), nn.LeakyReLU(0.2)]
        self.persistence_gate = cfg.persistence_gate
        outputs = 2 * folded if cfg.persistence_gate else folded  # the gate's weights after the correction
        head.append(nn.Conv2d(cfg.stem or cfg.hidden[0], outputs, 1))
        self.head = nn.Sequential(*head)
        if cfg.residual:  # start as "no change": the untrained forecast is the last frame
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)
        self.ground = ground_branch(folded, GROUND_WIDTH) if cfg.ground_field else None

    @staticmethod
    def stride(cfg: ModelConfig) -> int:
        """Frame height and width are padded to a multiple of this (patch x product of downsample)."""
        return cfg.patch * math.prod(cfg.downsample)

    @property
    def total_stride(self) -> int:
        """``stride`` of this model's config."""
        return self.stride(self.cfg)

    def _memory_format(self) -> torch.memory_format:
        """Channels-last when the model was converted with ``.to(memory_format=torch.channels_last)``.

        Judged on the first weight with a spatial extent (a 1x1 weight looks the same in both formats).
        """
        for p in self.parameters():
            if p.dim() == 4 and p.shape[-1] * p.shape[-2] > 1:
                if p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous():
                    return torch.channels_last
                break
        return torch.contiguous_format

    def _space_to_depth(self, x: Tensor) -> Tensor:
        """(N, C, H, W) frames -> (N, C*patch^2, Hp/patch, Wp/patch): padded to the stride, folded, in the
        weights' memory format (what the forecaster's bottom level and the ground branch read)."""
        x = pad_to_multiple(x, self.total_stride)
        x = F.pixel_unshuffle(x, self.patch) if self.patch > 1 else x
        return x.contiguous(memory_format=self._memory_format())

    def _fold(self, x: Tensor, memory_format: torch.memory_format) -> Tensor:
        """(N, C, Hp, Wp) frames -> (N, widths[0], Hp/patch, Wp/patch): space-to-depth and stem."""
        x = F.pixel_unshuffle(x, self.patch) if self.patch > 1 else x
        x = x.contiguous(memory_format=memory_format)
        return self.stem(x) if self.stem is not None else x

    def encode(self, x: Tensor, batched_input: bool | None = None) -> list[State]:
        """Padded frames (B, T, C, Hp, Wp) -> final (h, c) of each encoder level, bottom to top.

        ``batched_input``: the input-to-state convolutions of all frames in one call (None: as configured).
        """
        B, T = x.shape[:2]
        fmt = self._memory_format()
        if self.batched_input if batched_input is None else batched_input:
            seq = self._fold(x.flatten(0, 1), fmt)  # (B*T, C0, H0, W0)
            states: list[State] = []
            for k, (down, cell) in enumerate(zip(self.down, self.encoder)):
                xg = cell.input_gates(down(seq))  # (B*T, 4h, Hk, Wk)
                state = None
                hs = []
                for xg_t in xg.unflatten(0, (B, T)).unbind(1):  # (B, 4h, Hk, Wk)
                    state = cell.step(xg_t, state)
                    hs.append(state[0])
                states.append(state)
                if k + 1 < len(self.encoder):
                    seq = torch.stack(hs, 1).flatten(0, 1)  # (B*T, hk, Hk, Wk)
                del xg, hs
            return states
        weights = [cell.fused_weight() for cell in self.encoder]
        states_t: list[State | None] = [None] * len(self.encoder)
        for frame in x.unbind(1):  # (B, C, Hp, Wp)
            inp = self._fold(frame, fmt)  # (B, C0, H0, W0)
            for k, (down, cell) in enumerate(zip(self.down, self.encoder)):
                states_t[k] = cell(down(inp), states_t[k], weights[k])
                inp = states_t[k][0]  # (B, hk, Hk, Wk)
        return states_t  # type: ignore[return-value]

    def forecast(self, states: list[State], steps: int, extra: Tensor | None = None) -> list[Tensor]:
        """Unroll the forecaster ``steps`` times from the encoder states; each output (B, C*patch^2, H0, W0).

        ``extra`` (B, steps, C*patch^2, H0, W0): a folded frame per lead that the bottom level reads beside
        the level above's output (``persistence_input``)."""
        states = list(states)
        cells = self.forecaster
        weights = [cell.fused_weight() if cell.conv_x is not None else None for cell in cells]
        outs = []
        for t in range(steps):
            inp = None
            for k in reversed(range(len(cells))):
                if k == 0 and extra is not None:
                    inp = extra[:, t] if inp is None else torch.cat([inp, extra[:, t].to(inp.dtype)], dim=1)
                states[k] = cells[k](inp, states[k], weights[k])
                inp = self.up[k](states[k][0])  # (B, hk, H_{k-1}, W_{k-1})
            outs.append(self.head(inp))
        return outs

    def forward(
        self,
        frames: Tensor,
        steps: int,
        time_step: float | Tensor | None = None,
        batched_input: bool | None = None,
        persistence: Tensor | None = None,
    ) -> Tensor:
        """frames (B, T_in, C, H, W) in model space -> forecast (B, steps, C, H, W), any H and W.

        time_step: seconds between frames, a number or (B,) tensor; needed when the model was built
        with ``step_input`` (it enters as a constant channel of value minutes / 10).
        batched_input: how the encoder runs (``encode``); None: as configured (``model.batched_input``).
        With ``residual`` the network's output is added to ``base_forecast`` (the last input frame, or
        S-PROG in the frame of the inputs).
        persistence: (B, steps, history * C, H, W) model space, no data as 0, for a model built with
        ``persistence_input``: the last ``persistence_history`` frames moved into each lead's Lagrangian
        frame, the last first (``motion.lagrangian.persistence_frames``).
        """
        if frames.dim() != 5 or frames.shape[2] != self.channels:
            raise ValueError(f"frames: expected (B, T, {self.channels}, H, W), found {tuple(frames.shape)}")
        if steps < 1:
            raise ValueError(f"steps: expected a positive number, found {steps}")
        B, T, C, H, W = frames.shape
        held = (B, steps, self.persistence_history * C, H, W)
        if self.persistence_input and (persistence is None or persistence.shape != held):
            found = None if persistence is None else tuple(persistence.shape)
            raise ValueError(f"persistence: expected {held} for this model, found {found}")
        if self.residual and not torch.is_grad_enabled() and self.head_is_zero():
            # The network's output would be exactly zero: the forecast is the base, bit for bit.
            base = self.base_forecast(frames, steps).to(self._output_dtype(frames.device))
            return base.expand(B, steps, C, H, W)
        x = add_step_channel(frames, time_step) if self.step_input else frames
        x = pad_to_multiple(x, self.total_stride)  # cropped off the forecast below
        states = self.encode(x, batched_input)  # per level (B, hk, Hk, Wk)
        extra = None
        if self.persistence_input:
            extra = self._space_to_depth(persistence.to(frames.dtype).flatten(0, 1)).unflatten(0, (B, steps))
        out = torch.stack(self.forecast(states, steps, extra), 1).flatten(0, 1)  # (B*steps, C*p*p, H0, W0)
        out = F.pixel_shuffle(out, self.patch) if self.patch > 1 else out  # (B*steps, C, Hp, Wp)
        out = out.unflatten(0, (B, steps))  # (B, steps, C or 2C, Hp, Wp)
        out = out[..., :H, :W]
        if self.residual:
            if self.residual_smoothing > 0:
                out = gaussian_smooth(out, self.residual_smoothing)
            base = self.base_forecast(frames, steps).to(out.dtype)
            if self.ground is not None:  # the ground part taken off where the base moved it, put back on the ground
                base = base + self.ground_change(frames[:, -1], persistence[:, :, :C])
            if self.persistence_gate:  # base + w (persistence - base) + correction, w in [0, 1]
                out, gate = out.split(C, dim=2)
                last = persistence[:, :, :C].to(out.dtype)  # the last observation's frame
                base = torch.lerp(base.expand_as(out), last, gate.clamp(0.0, 1.0))
            out = out + base
        return out

    def ground_part(self, fields: Tensor) -> Tensor:
        """``model.ground_field``'s branch: fields (N, C, H, W) model space, no data as 0 -> the part of
        them fixed to the ground, g (N, C, H, W) model space (smoothed as the correction)."""
        H, W = fields.shape[-2:]
        g = self.ground(self._space_to_depth(fields))
        g = F.pixel_shuffle(g, self.patch) if self.patch > 1 else g
        g = g[..., :H, :W]
        return gaussian_smooth(g, self.residual_smoothing) if self.residual_smoothing > 0 else g

    def ground_change(self, last: Tensor, held: Tensor) -> Tensor:
        """``model.ground_field``: g_k - g, (B, steps, C, H, W) model space, to add to the base.

        last (B, C, H, W): the last observation (no data as 0), in the frame the base moves with the rain;
        held (B, steps, C, H, W): the same observation moved into each lead's frame as persistence would
        keep it on the ground (``persistence_frames``). g = ``ground_part`` of ``last``, g_k = ``ground_part``
        of ``held[:, k]``: the branch is local, so applying it after the warp is (to the warp's
        interpolation) the ground part moved with the ground.
        """
        B, steps = held.shape[:2]
        fields = torch.cat([last[:, None], held.to(last.dtype)], 1).flatten(0, 1)  # (B*(steps+1), C, H, W)
        g = self.ground_part(fields).unflatten(0, (B, steps + 1))  # (B, steps+1, C, H, W)
        return g[:, 1:] - g[:, :1]

    def head_is_zero(self) -> bool:
        """Whether the output head's last convolution (and the ground branch's, if any) is all zeros (an
        untrained residual model, or one exported at its start by ``train.export: best``): then the
        network adds nothing to the base."""
        lasts = [self.head[-1]] + ([self.ground[-1]] if self.ground is not None else [])
        return all(not bool(p.any()) for last in lasts for p in last.parameters())

    def _output_dtype(self, device: torch.device) -> torch.dtype:
        """The dtype of the head's output: the autocast dtype when autocast is on, else the weights'."""
        if torch.is_autocast_enabled(device.type):
            return torch.get_autocast_dtype(device.type)
        return self.head[-1].weight.dtype

    def base_forecast(self, frames: Tensor, steps: int) -> Tensor:
        """What the residual is added to (``model.base``): the last frame (B, 1, C, H, W), or the S-PROG
        forecast of the frames (B, steps, C, H, W; in model space, dry = 0)."""
        if self.base == "last":
            return frames[:, -1:]
        fc = damped_cascade(
            frames.detach().float().transpose(1, 2).flatten(0, 1), steps, SPROG_WET
        )  # (B*C, steps, H, W)
        return fc.unflatten(0, (frames.shape[0], frames.shape[2])).transpose(1, 2)

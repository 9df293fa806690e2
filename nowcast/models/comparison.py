"""Comparison models for ``model.kind`` (docs/why-convlstm.md): FC-LSTM, CNN-LSTM and a 2-D UNet.

Each maps frames (B, T_in, C, H, W) in model space to a forecast (B, steps, C, H, W), with the
signature of ``models.convlstm.EncoderForecaster`` (``model(frames, steps, time_step)``), so training,
checkpoints, ``predict`` and ``evaluate`` treat every kind alike. ``_FrameModel`` holds what they
share with the ConvLSTM: space-to-depth by ``patch``, the time-step channel (``step_input``) and the
residual head (``residual``). Lagrangian frames need nothing here: the frames are warped before the
network and its forecast after it (``motion.lagrangian``).

- ``FCLSTM``: Shi et al. 2015's FC-LSTM baseline. Each folded frame is flattened to one vector; an
  encoder of LSTM layers (``hidden``), a forecaster mirroring it from the encoder's final states, and a
  linear head back to the frame. Its weights depend on the frame size (``frame_size``).
- ``CNNLSTM``: strided 3x3 convolutions (``conv_widths``, each halving H and W) to one flat vector per
  frame, the same LSTM encoder-forecaster, transposed convolutions back. Also fixed to ``frame_size``.
- ``UNet``: the folded input frames stacked along channels, a plain UNet (two 3x3 convolutions and
  ReLU per level, max-pooling down, transposed convolutions up, skips concatenated) to ``out_frames``
  frames stacked; more lead times by feeding its forecast back in as input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nowcast.config import FIXED_SIZE_KINDS, DataConfig, ModelConfig, frame_size_problem
from nowcast.models.layers import add_step_channel, pad_to_multiple

LSTMState = tuple[Tensor, Tensor]  # (h, c), each (B, hidden)


def stride_of(cfg: ModelConfig) -> int:
    """Frame height and width must be a multiple of this (padded for unet, required for the others)."""
    if cfg.kind == "fc_lstm":
        return cfg.patch
    if cfg.kind == "cnn_lstm":
        return cfg.patch * 2 ** len(cfg.conv_widths)
    if cfg.kind == "unet":
        return cfg.patch * 2 ** (len(cfg.conv_widths) - 1)
    raise ValueError(f"model.kind: expected fc_lstm, cnn_lstm or unet, found {cfg.kind!r}")


class _FrameModel(nn.Module):
    """What every comparison model shares: checks, time-step channel, padding, space-to-depth, residual.

    Subclasses set ``head_out`` (the module whose weights start at zero for ``residual``) and implement
    ``_forecast``: folded frames (B, T, Cin * patch^2, h, w) -> (B, n, C * patch^2, h, w).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch = cfg.patch
        self.channels = cfg.channels
        self.residual = cfg.residual
        self.step_input = cfg.step_input
        self.folded_in = (cfg.channels + int(cfg.step_input)) * cfg.patch**2  # channels of a folded input frame
        self.folded_out = cfg.channels * cfg.patch**2
        self.total_stride = stride_of(cfg)

    def _zero_head(self, layer: nn.Module) -> None:
        """With ``residual``, start as "no change": the untrained forecast is the last frame."""
        if self.residual:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _forecast(self, x: Tensor, steps: int) -> Tensor:
        raise NotImplementedError

    def forward(
        self, frames: Tensor, steps: int, time_step: float | Tensor | None = None, batched_input: bool | None = None
    ) -> Tensor:
        """frames (B, T_in, C, H, W) in model space -> forecast (B, n, C, H, W).

        n = steps, except for ``UNet._forecast`` (its out_frames; ``UNet.forward`` loops to ``steps``).
        time_step: seconds between frames (used with ``step_input``). ``batched_input`` is accepted for the
        ConvLSTM's signature and has no effect here.
        """
        if frames.dim() != 5 or frames.shape[2] != self.channels:
            raise ValueError(f"frames: expected (B, T, {self.channels}, H, W), found {tuple(frames.shape)}")
        if steps < 1:
            raise ValueError(f"steps: expected a positive number, found {steps}")
        problem = frame_size_problem(self.cfg, tuple(frames.shape))
        if problem:
            raise ValueError(problem)
        B, T, C, H, W = frames.shape
        x = add_step_channel(frames, time_step) if self.step_input else frames
        x = pad_to_multiple(x, self.total_stride)  # cropped off the forecast below
        x = F.pixel_unshuffle(x.flatten(0, 1), self.patch).unflatten(0, (B, T))  # (B, T, Cin*p^2, h, w)
        out = self._forecast(x, steps)  # (B, n, C*p^2, h, w)
        n = out.shape[1]
        out = F.pixel_shuffle(out.flatten(0, 1), self.patch).unflatten(0, (B, n))  # (B, n, C, Hp, Wp)
        out = out[..., :H, :W]
        if self.residual:
            out = out + frames[:, -1:].to(out.dtype)
        return out


class _LSTMStack(nn.Module):
    """Encoder-forecaster of LSTM layers over vectors: (B, T, in_dim) -> (B, steps, out_dim).

    Encoder layer k reads layer k-1's hidden state (layer 0 the input vector). The forecaster mirrors
    the stack top-down, like the ConvLSTM's: layer k starts from encoder layer k's final (h, c) and reads
    the hidden state of forecaster layer k+1; the top layer reads a constant zero (an ``LSTMCell`` needs
    an input; with zero input it runs on its state and bias alone). A linear head maps the bottom
    layer's hidden state to ``out_dim``.
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...], out_dim: int) -> None:
        super().__init__()
        n = len(hidden)
        widths = [in_dim, *hidden]
        self.encoder = nn.ModuleList(nn.LSTMCell(widths[k], hidden[k]) for k in range(n))
        f_in = [hidden[k + 1] for k in range(n - 1)] + [1]
        self.forecaster = nn.ModuleList(nn.LSTMCell(f_in[k], hidden[k]) for k in range(n))
        self.head = nn.Linear(hidden[0], out_dim)

    def forward(self, seq: Tensor, steps: int) -> Tensor:
        states: list[LSTMState | None] = [None] * len(self.encoder)
        for v in seq.unbind(1):  # (B, in_dim)
            for k, cell in enumerate(self.encoder):
                states[k] = cell(v, states[k])
                v = states[k][0]  # (B, hidden[k])
        zero = seq.new_zeros(seq.shape[0], 1)
        outs = []
        for _ in range(steps):
            v = zero
            for k in reversed(range(len(self.forecaster))):
                states[k] = self.forecaster[k](v, states[k])
                v = states[k][0]
            outs.append(self.head(v))  # (B, out_dim)
        return torch.stack(outs, 1)


class FCLSTM(_FrameModel):
    """FC-LSTM (Shi et al. 2015's baseline): one vector per frame, LSTM encoder-forecaster, linear head.

    A folded frame of ``frame_size`` (H, W) is a vector of Cin * H * W values (space-to-depth only
    reorders them); the input-to-state weights alone are 4 * hidden[0] * Cin * H * W.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        h, w = (n // cfg.patch for n in cfg.frame_size)
        self.grid = (h, w)
        self.lstm = _LSTMStack(self.folded_in * h * w, cfg.hidden, self.folded_out * h * w)
        self._zero_head(self.lstm.head)

    def _forecast(self, x: Tensor, steps: int) -> Tensor:
        out = self.lstm(x.flatten(2), steps)  # (B, steps, C*p^2*h*w)
        return out.unflatten(2, (self.folded_out, *self.grid))


def _conv_block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.LeakyReLU(0.2))


class CNNLSTM(_FrameModel):
    """Strided CNN -> flat vector -> LSTM encoder-forecaster -> transposed CNN, as the accepted answer describes.

    Level k of the encoder is a 3x3 convolution with stride 2 to ``conv_widths[k]`` channels; the
    decoder mirrors it with 4x4 transposed convolutions of stride 2 and ends in a 1x1 convolution to
    C * patch^2 channels. Frames of ``frame_size`` only (the flat vector's length depends on it).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        widths = list(cfg.conv_widths)
        self.cnn = nn.Sequential(*(_conv_block(c, w, 2) for c, w in zip([self.folded_in, *widths], widths)))
        h, w = (n // self.total_stride for n in cfg.frame_size)
        self.code = (widths[-1], h, w)  # (channels, rows, cols) of the flat vector
        size = widths[-1] * h * w
        self.lstm = _LSTMStack(size, cfg.hidden, size)
        ups: list[nn.Module] = []
        for c_in, c_out in zip(widths[::-1], [*widths[-2::-1], widths[0]]):
            ups += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        self.decoder = nn.Sequential(*ups)
        self.head = nn.Conv2d(widths[0], self.folded_out, 1)
        self._zero_head(self.head)

    def _forecast(self, x: Tensor, steps: int) -> Tensor:
        B, T = x.shape[:2]
        codes = self.cnn(x.flatten(0, 1)).flatten(1).unflatten(0, (B, T))  # (B, T, c*h*w)
        out = self.lstm(codes, steps).flatten(0, 1).unflatten(1, self.code)  # (B*steps, c, h, w)
        return self.head(self.decoder(out)).unflatten(0, (B, steps))  # (B, steps, C*p^2, H/p, W/p)


class UNet(_FrameModel):
    """A plain 2-D UNet from ``in_frames`` stacked folded frames to ``out_frames`` stacked frames.

    Level k: two 3x3 convolutions with ReLU to ``conv_widths[k]`` channels; 2x max-pooling between
    levels going down, a 2x2 transposed convolution going up, the skip of the same level concatenated
    before the level's two convolutions; a 1x1 head. Any frame size (padded to the total stride).
    """

    def __init__(self, cfg: ModelConfig, in_frames: int, out_frames: int) -> None:
        super().__init__(cfg)
        self.in_frames, self.out_frames = in_frames, out_frames
        widths = list(cfg.conv_widths)

        def double(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU()
            )

        self.down = nn.ModuleList(double(c, w) for c, w in zip([in_frames * self.folded_in, *widths], widths))
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[k + 1], widths[k], 2, stride=2) for k in range(len(widths) - 1)
        )
        self.merge = nn.ModuleList(double(2 * widths[k], widths[k]) for k in range(len(widths) - 1))
        self.head = nn.Conv2d(widths[0], out_frames * self.folded_out, 1)
        self._zero_head(self.head)

    def _forecast(self, x: Tensor, steps: int) -> Tensor:
        y = x.flatten(1, 2)  # (B, T*Cin*p^2, h, w)
        skips = []
        for k, level in enumerate(self.down):
            y = level(y if k == 0 else F.max_pool2d(y, 2))
            skips.append(y)
        for k in reversed(range(len(self.up))):
            y = self.merge[k](torch.cat([self.up[k](y), skips[k]], 1))
        return self.head(y).unflatten(1, (self.out_frames, self.folded_out))  # (B, out_frames, C*p^2, h, w)

    def forward(
        self, frames: Tensor, steps: int, time_step: float | Tensor | None = None, batched_input: bool | None = None
    ) -> Tensor:
        """frames (B, in_frames, C, H, W) -> (B, steps, C, H, W); beyond out_frames the forecast is fed back."""
        if frames.dim() == 5 and frames.shape[1] != self.in_frames:
            raise ValueError(f"frames: expected {self.in_frames} input frames for this UNet, found {frames.shape[1]}")
        outs: list[Tensor] = []
        done = 0
        while done < steps:
            y = super().forward(frames, steps, time_step)  # (B, out_frames, C, H, W)
            outs.append(y)
            done += y.shape[1]
            if done < steps:
                frames = torch.cat([frames, y.to(frames.dtype)], 1)[:, -self.in_frames :]
        return torch.cat(outs, 1)[:, :steps]


def build_comparison(cfg: ModelConfig, data: DataConfig | None = None) -> nn.Module:
    """The comparison model of ``cfg.kind`` (fc_lstm, cnn_lstm, unet), weights freshly initialised.

    fc_lstm and cnn_lstm need ``cfg.frame_size`` (a multiple of ``stride_of(cfg)``); unet needs
    ``data`` for its numbers of input and output frames.
    """
    if cfg.kind in FIXED_SIZE_KINDS:
        s = stride_of(cfg)
        if len(cfg.frame_size) != 2 or any(n % s for n in cfg.frame_size):
            raise ValueError(
                f"model.frame_size: expected [height, width], multiples of {s}, for model.kind={cfg.kind}, "
                f"found {list(cfg.frame_size)}"
            )
        return FCLSTM(cfg) if cfg.kind == "fc_lstm" else CNNLSTM(cfg)
    if cfg.kind == "unet":
        if data is None:
            raise ValueError("model.kind=unet: expected the data config (in_frames, out_frames), found None")
        return UNet(cfg, data.in_frames, data.out_frames)
    raise ValueError(f"model.kind: expected fc_lstm, cnn_lstm or unet, found {cfg.kind!r}")

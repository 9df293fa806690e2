"""Model kinds by name: build one from its config, its stride (what frame sizes it takes), its size."""

from __future__ import annotations

from torch import nn

from nowcast.config import DataConfig, ModelConfig
from nowcast.models.comparison import build_comparison, stride_of
from nowcast.models.convlstm import EncoderForecaster


def model_stride(cfg: ModelConfig) -> int:
    """Height and width of frames are padded (or, for a fixed frame size, rounded) to a multiple of this."""
    if cfg.kind == "convlstm":
        return EncoderForecaster.stride(cfg)
    return stride_of(cfg)


def build_model(cfg: ModelConfig, data: DataConfig | None = None) -> nn.Module:
    """The model described by ``cfg`` (weights freshly initialised).

    ``data``: the frames in and out, needed by ``kind: unet`` (its weights depend on them).
    """
    if cfg.kind == "convlstm":
        return EncoderForecaster(cfg)
    return build_comparison(cfg, data)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

"""nowcast: precipitation nowcasting from weather-radar sequences with a ConvLSTM encoder-forecaster."""

from __future__ import annotations

__version__ = "0.1.0"

"""Files in and out, one module per job, in the manner of pySTEPS' ``io/importers`` / ``io/exporters``.

No module here imports torch at import time.

- ``nowcast.io.reading``: radar NetCDF files -> rain rate (``open_radar``, ``segments``, ``open_archive``,
  ``Archive``, ``data_time_step``, ``pixel_size_km``; ``frame_reader``: a segment's frames read straight
  from its file, without dask, for training; times as int64
  nanoseconds: ``NS``, ``times_ns``, ``iso_time``).
- ``nowcast.io.writing``: a forecast -> a CF-1.11 NetCDF (``forecast_dataset``, ``write_forecast``,
  ``complete_grid_mapping``).
- ``nowcast.io.ensemble_writing``: an ensemble -> members, exceedance probabilities and mean in one
  CF-1.11 NetCDF (``ensemble_dataset``, ``write_ensemble``).
- ``nowcast.io.atomic``: how every output file is written (``atomic_output``, ``output_lock``,
  ``remove_stale_temporaries``, ``write_error``).
- ``nowcast.io.info``: what ``nowcast info`` prints for radar files (``describe_radar``).
- ``nowcast.io.paths``: output path templates (``expand_template``, ``output_path``, ``DEFAULT_OUTPUT``).
- ``nowcast.io.convert``: operational radar formats read by pySTEPS' importers -> one radar NetCDF
  in the input schema (``convert_files``, ``ConvertSettings``, ``FORMATS``, ``file_time``, ``frame_grid``,
  ``to_rain_rate``).

The names below are importable from ``nowcast.io`` itself. Each is loaded from its module on first use,
so that e.g. ``nowcast.models.checkpoint``, which needs only ``atomic_output``, does not import xarray.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULE_OF = {
    "NS": "reading",
    "RAIN_STANDARD_NAMES": "reading",
    "Archive": "reading",
    "FrameReader": "reading",
    "frame_reader": "reading",
    "data_time_step": "reading",
    "iso_time": "reading",
    "open_archive": "reading",
    "open_radar": "reading",
    "pixel_size_km": "reading",
    "segments": "reading",
    "times_ns": "reading",
    "FORECAST_REFERENCES": "writing",
    "PACKING": "writing",
    "PACK_MAX": "writing",
    "PACK_STEP": "writing",
    "STATUS": "writing",
    "STATUS_FLAGS": "writing",
    "STATUS_FORECAST": "writing",
    "STATUS_NO_DATA": "writing",
    "STATUS_OUTSIDE": "writing",
    "complete_grid_mapping": "writing",
    "fits_packing": "writing",
    "forecast_dataset": "writing",
    "write_forecast": "writing",
    "ensemble_dataset": "ensemble_writing",
    "write_ensemble": "ensemble_writing",
    "LOCK_NAME": "atomic",
    "atomic_output": "atomic",
    "lock_path": "atomic",
    "output_lock": "atomic",
    "remove_stale_temporaries": "atomic",
    "check_writable": "atomic",
    "write_error": "atomic",
    "describe_radar": "info",
    "DEFAULT_OUTPUT": "paths",
    "expand_template": "paths",
    "output_path": "paths",
    "FORMATS": "convert",
    "ConvertSettings": "convert",
    "convert_files": "convert",
    "file_time": "convert",
    "frame_grid": "convert",
    "to_rain_rate": "convert",
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'nowcast.io' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"nowcast.io.{module}"), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

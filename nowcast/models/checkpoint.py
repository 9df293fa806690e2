"""Checkpoints: one self-describing ``.pt`` file (DESIGN section 6): save, load, rebuild the model, describe.

Written atomically; read only with ``torch.load(..., weights_only=True)`` (plain dicts, lists, numbers,
strings and tensors), so a checkpoint can never run code. A checkpoint alone is enough to predict.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nowcast import __version__
from nowcast.config import Config, config_from_dict, config_to_dict
from nowcast.errors import CheckpointError, ConfigError
from nowcast.io.atomic import atomic_output

if TYPE_CHECKING:  # torch is imported where a checkpoint is written or loaded, not with this module
    import torch

log = logging.getLogger(__name__)

FORMAT = "nowcast-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
"""File endings ``nowcast info`` reads as a checkpoint rather than a radar file."""


def default_model_path() -> Path:
    """The model shipped inside the package."""
    return Path(__file__).resolve().parent / "weights" / "default.pt"


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(
    path: str | Path,
    *,
    config: Config,
    state_dict: dict[str, torch.Tensor],
    provenance: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically. ``training`` (optimizer, step, RNG) only in resumable checkpoints.

    OutputError (one line) when it cannot be written, a full disk named as such; the previous file stays.
    """
    import torch

    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "nowcast_version": __version__,
        "config": config_to_dict(config),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
        "provenance": provenance or {},
    }
    if training is not None:
        payload["training"] = training
    with atomic_output(path, suffix=".pt") as tmp, open(tmp, "wb") as fh:
        torch.save(
            payload, fh
        )  # through a Python file: a full disk is an OSError (OutputError), not torch's RuntimeError
    return Path(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint; raise ``CheckpointError`` (one line) for anything unusable."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: expected a nowcast checkpoint file, found nothing at that path")
    if p.is_dir():
        raise CheckpointError(f"{p}: expected a nowcast checkpoint file, found a directory")
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04":  # torch.save writes a zip archive
        found = "an empty file" if not magic else "another kind of file"
        raise CheckpointError(f"{p}: expected a nowcast checkpoint (a torch zip archive), found {found}")
    _check_archive(p)
    import torch

    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused an object; torch's text advises unsafe loading
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"an object of type {found.group(1)}" if found else "an object"
        raise CheckpointError(
            f"{p}: expected a nowcast checkpoint of plain dicts, lists, numbers, strings and tensors, found "
            f"{what} that only running code could rebuild (not a nowcast checkpoint; it is not loaded)"
        ) from None
    except Exception:  # noqa: BLE001 - torch raises RuntimeError, OSError, EOFError, ValueError, ... here
        raise CheckpointError(
            f"{p}: expected a nowcast checkpoint, found a torch archive whose contents cannot be read "
            "(corrupt, or written by an incompatible program)"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format", "no 'format' key") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{p}: expected format '{FORMAT}', found {found!r} (not a nowcast checkpoint)")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{p}: expected checkpoint format_version <= {FORMAT_VERSION}, found {version!r} "
            f"(written by nowcast {ckpt.get('nowcast_version', '?')}; upgrade nowcast)"
        )
    for key in ("config", "state_dict"):
        if not isinstance(ckpt.get(key), dict):
            raise CheckpointError(
                f"{p}: expected a '{key}' mapping in the checkpoint, found {type(ckpt.get(key)).__name__}"
            )
    return ckpt


def _check_archive(p: Path) -> None:
    """Raise CheckpointError unless ``p`` is a whole zip archive as ``torch.save`` writes (checksums read)."""
    try:
        with zipfile.ZipFile(p) as archive:
            names = archive.namelist()
            if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
                raise CheckpointError(
                    f"{p}: expected a nowcast checkpoint (a torch archive holding data.pkl), found a zip archive "
                    f"of {len(names)} other file(s)"
                )
            damaged = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError):
        raise CheckpointError(
            f"{p}: expected a nowcast checkpoint, found a truncated or damaged archive ({p.stat().st_size:,} bytes "
            "without a readable zip directory; was the copy cut short?)"
        ) from None
    if damaged is not None:
        raise CheckpointError(
            f"{p}: expected a nowcast checkpoint, found a damaged archive (member {damaged.split('/', 1)[-1]!r} "
            "fails its checksum)"
        )


def _mismatch(expected: dict[str, torch.Tensor], found: dict[str, Any]) -> str:
    """What differs between a model's state_dict and a checkpoint's, in a few words."""
    import torch

    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    shapes = [
        f"{k}: expected {tuple(v.shape)}, found {tuple(found[k].shape)}"
        for k, v in expected.items()
        if k in found and isinstance(found[k], torch.Tensor) and tuple(found[k].shape) != tuple(v.shape)
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", extra), ("of another shape", shapes)):
        if items:
            more = f" and {len(items) - 2} more" if len(items) > 2 else ""
            parts.append(f"{len(items)} {label} ({', '.join(items[:2])}{more})")
    return "; ".join(parts) or "tensors that do not load"


def checkpoint_config(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> Config:
    """The resolved ``Config`` stored in a checkpoint."""
    try:
        return config_from_dict(ckpt["config"], f"{path} (config)")
    except ConfigError as exc:
        raise CheckpointError(f"{path}: expected a valid stored config, found: {exc}") from None


class _Opaque:
    """Stands in for a tensor or storage while ``read_config`` unpickles a checkpoint: built from any
    arguments, holding none of them, so no code of the file's choosing runs."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass


class _ConfigUnpickler(pickle.Unpickler):
    """Unpickles a ``torch.save`` archive's ``data.pkl`` without torch: torch's tensor rebuilders and
    storage types become ``_Opaque``, ``OrderedDict`` is allowed, anything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" or module.startswith("torch."):
            return _Opaque
        if (module, name) == ("collections", "OrderedDict"):
            import collections

            return collections.OrderedDict
        raise pickle.UnpicklingError(f"GLOBAL {module}.{name} is not allowed")

    def persistent_load(self, pid: Any) -> Any:  # the tensors' storages, which are not read
        return None


def read_config(path: str | Path) -> Config | None:
    """The ``Config`` stored in the checkpoint at ``path``, read without importing torch (milliseconds
    instead of seconds), so that ``predict`` can check its input before it loads the model.

    Returns None when the file cannot be read this way (missing, damaged, foreign, newer format):
    ``load_checkpoint`` then names the problem. The tensors are not read; nothing in the file is run.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl"))
            with archive.open(name) as fh:
                ckpt = _ConfigUnpickler(fh).load()
    except Exception:  # noqa: BLE001 - any failure: the full load reports it in its own words
        return None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or not isinstance(ckpt.get("config"), dict):
        return None
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        return None
    try:
        return checkpoint_config(ckpt, path)
    except CheckpointError:
        return None


def model_from_checkpoint(path: str | Path) -> tuple[torch.nn.Module, Config, dict[str, Any]]:
    """Rebuild the model of a checkpoint in eval mode: (model, config, checkpoint dict)."""
    from nowcast.models.registry import build_model

    ckpt = load_checkpoint(path)
    cfg = checkpoint_config(ckpt, path)
    model = build_model(cfg.model, cfg.data)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError:
        raise CheckpointError(
            f"{path}: expected the {len(model.state_dict())} weight tensors of its stored model config "
            f"('{cfg.model.name}'), found {_mismatch(model.state_dict(), ckpt['state_dict'])}"
        ) from None
    model.eval()
    return model, cfg, ckpt


@dataclass(frozen=True)
class LoadedModel:
    """A model rebuilt from a checkpoint, in eval mode, with what a forecast file records about it."""

    model: torch.nn.Module
    config: Config
    path: Path
    sha256: str


def model_path(path: str | Path | None = None) -> Path:
    """The checkpoint to use: ``path``, or (None) the model shipped in the package, which must exist."""
    if path is not None:
        return Path(path)
    shipped = default_model_path()
    if not shipped.is_file():
        raise CheckpointError(
            f"{shipped}: expected the default model shipped with nowcast, found no file "
            "(this installation has none); pass a checkpoint with --model CKPT (evaluate: or --no-model)"
        )
    return shipped


def load_model(path: str | Path | None = None) -> LoadedModel:
    """The checkpoint at ``path`` (None: the model shipped in the package) as a ``LoadedModel``.

    Raises CheckpointError (one line) for a missing, corrupt, truncated, foreign or newer-format file.
    """
    path = model_path(path)
    model, cfg, _ = model_from_checkpoint(path)
    return LoadedModel(model=model, config=cfg, path=path, sha256=sha256_file(path))


def describe_checkpoint(path: str | Path) -> list[str]:
    """Lines describing a checkpoint for ``nowcast info``: config, provenance, metrics, size, SHA-256."""
    model, cfg, ckpt = model_from_checkpoint(path)
    n_params = sum(p.numel() for p in model.parameters())
    m, d = cfg.model, cfg.data
    prov = ckpt.get("provenance", {})
    step = f"{d.time_step} s" if d.time_step else "the data's own"
    lines = [
        f"checkpoint: {path}",
        f"  format: {ckpt['format']} v{ckpt['format_version']}, written by nowcast {ckpt.get('nowcast_version', '?')}",
        f"  sha256: {sha256_file(path)}",
        f"  kind: {'training (resumable)' if 'training' in ckpt else 'inference'}",
        (
            f"  model: {m.name}, patch {m.patch}, levels {list(m.hidden)}, kernels {list(m.kernels)}, "
            f"downsample {list(m.downsample)}, peephole {m.peephole}, {n_params:,} parameters"
            if m.kind == "convlstm"
            else f"  model: {m.name}, kind {m.kind}, patch {m.patch}, LSTM widths {list(m.hidden)}, "
            f"conv widths {list(m.conv_widths)}"
            + (f", frames of {m.frame_size[0]} x {m.frame_size[1]} only" if m.frame_size else "")
            + f", {n_params:,} parameters"
        ),
        f"  frame: {m.frame}"
        + (
            (
                ", forecasts the change from S-PROG"
                if m.base == "sprog"
                else ", forecasts the change from the last frame"
            )
            if m.residual
            else ""
        )
        + (", sees the time step" if m.step_input else "")
        + (", sees persistence in each lead's frame" if m.persistence_input else "")
        + (f" (the last {m.persistence_history} observations)" if m.persistence_history > 1 else "")
        + (" and weighs it against the base" if m.persistence_gate else "")
        + (", keeps a learned ground-fixed part of the rain in place" if m.ground_field else "")
        + (", probability-matched to the last frame" if m.probmatching == "cdf" else "")
        + (
            "; its output head is all zeros, so the forecast is the base alone (the network is skipped)"
            if m.residual and getattr(model, "head_is_zero", lambda: False)()
            else ""
        ),
        f"  input: {m.channels} channel(s), {d.in_frames} frames in, {d.out_frames} out, time step "
        f"{step}, variable {d.variable or '(auto)'}, "
        f"units {d.units or '(from file)'}",
        f"  transform: {cfg.transform.kind}",
    ]
    if "training" in ckpt:
        lines.append(f"  step: {ckpt['training'].get('step')}")
    for key, value in prov.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k}={_short(v)}" for k, v in value.items())
            lines.append(f"  {key}: {inner}")
        elif isinstance(value, list):
            lines.append(f"  {key}: {len(value)} item(s)")
            lines.extend(f"    {_short(v)}" for v in value[:20])
        else:
            lines.append(f"  {key}: {_short(value)}")
    return lines


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_short(x)}" for k, x in v.items()) + "}"
    return str(v)

"""Training and validation samples: windows inside segments, a time-block split, crops and augmentation.

Never opens files itself: it receives the segments of an ``io.Archive``. Training frames are held in
model space as float16 (NaN = no data), about a quarter of the float32 rain rates' footprint in memory.
Every random choice of a training step (which windows, which crops, which flips) is drawn from a
generator seeded by ``(seed, step)``, so a resumed run and a run of several DDP ranks see exactly the
data an uninterrupted single-process run sees.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import xarray as xr
from torch.utils.data import Dataset, Sampler

from nowcast.motion.flow import motion_field
from nowcast.motion.lagrangian import to_lagrangian
from nowcast.transforms import Transform

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """One sample: the frames of segment ``segment`` from index ``start`` on; how many (in_frames +
    out_frames) is for the caller to say."""

    segment: int
    """Index into the list of segments (or, for Lagrangian training, of prepared windows)."""
    start: int
    """Index of the window's first frame within its segment."""


def segment_frames(segment: xr.DataArray) -> np.ndarray:
    """Rain rates (mm/h, float32) of a segment as (T, C, H, W), read frame by frame."""
    frames = [np.asarray(segment.isel(time=t).values, dtype=np.float32) for t in range(segment.sizes["time"])]
    arr = np.stack(frames)
    return arr[:, None] if arr.ndim == 3 else arr


def split_windows(
    lengths: Sequence[int], window: int, *, val_fraction: float, val_block: int, val_stride: int
) -> tuple[list[Window], list[Window]]:
    """Training and validation windows of ``window`` frames in segments of the given lengths.

    Each segment's frames are cut into blocks of ``val_block`` frames; a share ``val_fraction`` of the
    blocks, spread evenly (the second block first when the share is 1/4), is for validation. A window belongs to a split only if all its frames do,
    so no training window overlaps a validation window. Training windows start at every frame,
    validation windows every ``val_stride`` frames.
    """
    train: list[Window] = []
    val: list[Window] = []
    for s, n in enumerate(lengths):
        blocks = np.arange(n) // val_block
        is_val = np.floor((blocks + 1) * val_fraction + 0.5) > np.floor(blocks * val_fraction + 0.5)
        n_val = 0
        for start in range(0, n - window + 1):
            part = is_val[start : start + window]
            if not part.any():
                train.append(Window(s, start))
            elif part.all():
                if n_val % val_stride == 0:
                    val.append(Window(s, start))
                n_val += 1
    return train, val


def all_windows(lengths: Sequence[int], window: int, stride: int = 1) -> list[Window]:
    """Every window of ``window`` frames, ``stride`` frames apart, in segments of the given lengths."""
    return [Window(s, t) for s, n in enumerate(lengths) for t in range(0, n - window + 1, stride)]


class TrainWindows(Dataset):
    """Random crops of training windows in model space.

    Items are addressed by a spec ``(window_index, item_seed)`` from ``StepSampler``; each returns
    ``x`` (in_frames, C, h, w) float32 with no-data filled by 0, ``y`` (out_frames, C, h, w)
    float32 with NaN where there is no data, and the time step in seconds (0-d float32 tensor; 0 when
    ``time_steps`` is not given).
    """

    def __init__(
        self,
        frames: list[np.ndarray],
        windows: list[Window],
        in_frames: int,
        out_frames: int,
        crop: int,
        *,
        augment: bool = True,
        min_rain: float = 0.0,
        rain_level: float = 0.0,
        time_steps: Sequence[float] | None = None,
    ) -> None:
        self.frames = frames  # each (T, C, H, W) float16, model space, NaN = no data
        self.time_steps = time_steps  # seconds between the frames of each entry of ``frames``
        self.windows = windows
        self.in_frames, self.out_frames = in_frames, out_frames
        self.crop = crop
        self.augment = augment
        self.min_rain = min_rain
        self.rain_level = rain_level  # model-space value of the rain threshold

    def __len__(self) -> int:
        return len(self.windows)

    def _crop_origin(self, seg: np.ndarray, t_last: int, rng: np.random.Generator) -> tuple[int, int]:
        """Top-left corner of a crop, preferring crops with data and rain in the last input frame."""
        _, _, h, w = seg.shape
        ch, cw = min(self.crop, h), min(self.crop, w)
        best, best_score = (0, 0), -1.0
        for _ in range(8):
            oy, ox = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            patch = seg[t_last, :, oy : oy + ch, ox : ox + cw]
            finite = np.isfinite(patch)
            valid = finite.mean()
            rain = (patch[finite] > self.rain_level).mean() if finite.any() else 0.0
            score = float(rain) if valid > 0.5 else -1.0 + float(valid)
            if valid > 0.5 and rain >= max(self.min_rain, 1e-9):
                return oy, ox
            if score > best_score:
                best, best_score = (oy, ox), score
        return best

    def __getitem__(self, spec: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index, seed = spec
        rng = np.random.default_rng(seed)
        win = self.windows[index]
        seg = self.frames[win.segment]
        n = self.in_frames + self.out_frames
        oy, ox = self._crop_origin(seg, win.start + self.in_frames - 1, rng)
        ch, cw = min(self.crop, seg.shape[2]), min(self.crop, seg.shape[3])
        block = np.asarray(seg[win.start : win.start + n, :, oy : oy + ch, ox : ox + cw], dtype=np.float32)
        if self.augment:
            k = int(rng.integers(0, 4))
            block = np.rot90(block, k, axes=(2, 3))
            if rng.integers(0, 2):
                block = block[..., ::-1]
        block = np.ascontiguousarray(block)
        x = np.nan_to_num(block[: self.in_frames], nan=0.0)
        y = block[self.in_frames :]
        step = float(self.time_steps[win.segment]) if self.time_steps is not None else 0.0
        return torch.from_numpy(x), torch.from_numpy(y), torch.tensor(step, dtype=torch.float32)


class StepSampler(Sampler[list[tuple[int, int]]]):
    """Batches of item specs for steps ``start_step .. total_steps - 1``; this rank's share only.

    The global batch of step ``s`` is drawn from ``default_rng([seed, s])``; rank ``r`` of ``world``
    takes items ``r, r + world, ...``. Windows are drawn with probability ``weights`` (uniform if None).
    """

    def __init__(
        self,
        n_windows: int,
        batch_size: int,
        total_steps: int,
        *,
        seed: int = 0,
        start_step: int = 0,
        rank: int = 0,
        world: int = 1,
        weights: np.ndarray | None = None,
    ) -> None:
        self.n_windows, self.batch_size = n_windows, batch_size
        self.total_steps, self.start_step = total_steps, start_step
        self.seed, self.rank, self.world = seed, rank, world
        self.p = None if weights is None else weights / weights.sum()

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)

    def batch_for_step(self, step: int) -> list[tuple[int, int]]:
        """This rank's item specs of the global batch of ``step``."""
        rng = np.random.default_rng([self.seed, step])
        idx = rng.choice(self.n_windows, size=self.batch_size, replace=self.n_windows < self.batch_size, p=self.p)
        seeds = rng.integers(0, 2**31 - 1, size=self.batch_size)
        specs = [(int(i), int(s)) for i, s in zip(idx, seeds)]
        return specs[self.rank :: self.world]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.total_steps):
            yield self.batch_for_step(step)


def window_rain_fraction(frames: list[np.ndarray], windows: list[Window], length: int, level: float) -> np.ndarray:
    """Share of valid pixels above ``level`` (model space) over each window's frames, shape (n_windows,)."""
    per_frame = []
    for seg in frames:
        fr = []
        for t in range(seg.shape[0]):
            f = seg[t]
            finite = np.isfinite(f)
            fr.append(float((f[finite] > level).mean()) if finite.any() else 0.0)
        per_frame.append(np.array(fr))
    return np.array([per_frame[w.segment][w.start : w.start + length].mean() for w in windows])


def to_model_space(segments: list[xr.DataArray], transform: Transform) -> list[np.ndarray]:
    """Each segment as (T, C, H, W) float16 model-space values (NaN = no data), converted frame by frame."""
    out = []
    for seg in segments:
        t = seg.sizes["time"]
        first = np.asarray(seg.isel(time=0).values)
        shape = (t,) + ((1,) + first.shape if first.ndim == 2 else first.shape)
        arr = np.empty(shape, dtype=np.float16)
        for i in range(t):
            frame = np.asarray(seg.isel(time=i).values, dtype=np.float32)
            arr[i] = transform.forward(frame).reshape(shape[1:])
        out.append(arr)
    return out


def lagrangian_window(frames: np.ndarray, in_frames: int, transform: Transform) -> np.ndarray:
    """One window in the frame of its last input frame: (T, C, H, W) mm/h -> (T, C, H, W) float16 model space.

    Motion: ``motion.motion_field`` of the input frames (what the model will see at inference). Input
    frame ``in_frames - 1 - j`` is advected j steps forward; target frame ``in_frames - 1 + k`` is
    advected k steps backward (along the reversed motion), so a forecast advected k steps forward
    lands on it. NaN where the source lies outside the data or has none.
    """
    x = torch.from_numpy(np.ascontiguousarray(transform.forward(frames), dtype=np.float32))  # (T, C, H, W)
    velocity = torch.from_numpy(motion_field(frames[:in_frames]))[None]  # (1, 2, H, W)
    out = to_lagrangian(x[None], velocity, in_frames)[0]
    return out.numpy().astype(np.float16)


def lagrangian_windows(
    segments: list[np.ndarray],
    windows: list[Window],
    in_frames: int,
    out_frames: int,
    transform: Transform,
    *,
    keys: Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> list[np.ndarray]:
    """``lagrangian_window`` of every window, one (in + out, C, H, W) float16 array each.

    segments: (T, C, H, W) float32 mm/h. With ``cache_dir``, each window is stored there as ``.npy``
    under a name hashed from ``keys[window.segment]`` (what identifies the segment: file, first time),
    its start, the frame counts and the transform, and read back by later runs (the motion costs about
    a second per window on a CPU).
    """
    n = in_frames + out_frames
    cache = Path(cache_dir) if cache_dir else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    it: Sequence[Window] | Iterator[Window] = windows
    if progress:
        from tqdm import tqdm

        it = tqdm(windows, desc="motion", unit="window", leave=False)
    out = []
    for w in it:
        path = None
        if cache is not None and keys is not None:
            ident = f"{keys[w.segment]}|{w.start}|{in_frames}|{out_frames}|{transform!r}|v1"
            path = cache / f"lag-{hashlib.sha256(ident.encode()).hexdigest()[:24]}.npy"
            if path.is_file():
                try:
                    arr = np.load(path)
                    if arr.shape[0] == n:
                        out.append(arr)
                        continue
                except (OSError, ValueError):
                    pass
        arr = lagrangian_window(segments[w.segment][w.start : w.start + n], in_frames, transform)
        if path is not None:
            tmp = path.with_suffix(f".{np.random.randint(1 << 30)}.tmp.npy")
            np.save(tmp, arr)
            tmp.replace(path)
        out.append(arr)
    return out

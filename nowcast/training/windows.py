"""Training and validation samples, streamed: windows inside segments, a time-block split, crops, motion,
augmentation.

It receives the lazy segments of an ``io.Archive`` (``FrameSource``) and reads a sample's frames when a
batch needs them, straight from the files (``io.reading.FrameReader``): the last input frame (to choose a
rainy crop) and the window's frames within the crop, plus a margin for a Lagrangian model. Memory is
bounded by batch x window x crop, whatever the archive's length. A Lagrangian sample carries the motion of its input frames
(``training.motion_cache``, computed lazily once per forecast time) and is warped on the training device,
per batch, by ``motion.to_lagrangian``, the function inference uses (``training_batch``).

Every random choice of a training step (which windows, which crops, which flips) is drawn from a generator
seeded by ``(seed, step)``, so a resumed run and a run of several DDP ranks see exactly the data an
uninterrupted single-process run sees.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator, Sequence

import dask
import numpy as np
import torch
import xarray as xr
from torch.utils.data import Dataset, Sampler

from nowcast.io import times_ns
from nowcast.io.reading import frame_reader
from nowcast.motion.flow import MOTION_FRAMES, motion_field
from nowcast.motion.lagrangian import persistence_frames, to_lagrangian
from nowcast.training.motion_cache import MotionCache, file_identity, motion_key
from nowcast.transforms import Transform
from nowcast.units import ZR_A, ZR_B

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """One sample: the frames of segment ``segment`` from index ``start`` on; how many (in_frames +
    out_frames) is for the caller to say."""

    segment: int
    """Index into the archive's list of segments."""
    start: int
    """Index of the window's first frame within its segment."""


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


class FrameSource:
    """Rain rates (mm/h, float32, NaN = no data) of an archive's segments, read when asked for.

    Each segment is read straight from its file by an ``io.reading.FrameReader`` (the segment's own
    values, in half the time of its dask array), or through its dask array where no reader can
    be made. ``zr_a``, ``zr_b``: the Z-R parameters the archive was opened with (files in dBZ).
    ``preload``: hold every segment in memory instead (the comparison run of ``scripts/bench/bench_data.py``
    and tests; the samples are the same). Picklable, for DataLoader workers: each reopens the files.
    """

    def __init__(
        self, segments: Sequence[xr.DataArray], preload: bool = False, zr_a: float = ZR_A, zr_b: float = ZR_B
    ) -> None:
        self.segments = list(segments)
        self.steps = [int(seg.attrs["time_step"]) for seg in self.segments]
        self.identities = [file_identity(str(seg.attrs.get("source_file", "?"))) for seg in self.segments]
        self.times = [times_ns(seg) for seg in self.segments]
        self.readers = [frame_reader(seg, zr_a, zr_b) for seg in self.segments]
        slow = [str(seg.attrs.get("source_file", "?")) for seg, r in zip(self.segments, self.readers) if r is None]
        if slow:
            log.info(
                "%d of %d segments read through dask, more slowly (e.g. %s)", len(slow), len(self.segments), slow[0]
            )
        self.loaded = [self._read(s, 0, seg.sizes["time"]) for s, seg in enumerate(self.segments)] if preload else None

    def frame_shape(self, s: int) -> tuple[int, int]:
        """(H, W) of segment ``s``."""
        return tuple(self.segments[s].shape[-2:])  # type: ignore[return-value]

    def read(self, s: int, t0: int, t1: int, ys: slice = slice(None), xs: slice = slice(None)) -> np.ndarray:
        """Frames ``t0 .. t1 - 1`` of segment ``s`` within rows ``ys`` and columns ``xs``: (T, C, h, w)."""
        if self.loaded is not None:
            return self.loaded[s][t0:t1, :, ys, xs]
        return self._read(s, t0, t1, ys, xs)

    def _read(self, s: int, t0: int, t1: int, ys: slice = slice(None), xs: slice = slice(None)) -> np.ndarray:
        reader = self.readers[s]
        if reader is not None:
            arr = reader.read(t0, t1, ys, xs)
        else:
            part = self.segments[s].isel(time=slice(t0, t1), y=ys, x=xs)
            with dask.config.set(scheduler="synchronous"):  # a worker reads on its own; no thread pool per read
                arr = np.asarray(part.values, dtype=np.float32)
        return arr[:, None] if arr.ndim == 3 else arr


@dataclass(frozen=True)
class SampleSettings:
    """How a training sample is cut from a window."""

    in_frames: int
    out_frames: int
    crop: int
    """Crop side in pixels (smaller where a frame is smaller)."""
    margin: int = 0
    """Pixels read around the crop for a Lagrangian model: warped pixels whose source lies further out
    are no data (excluded from the loss), where a warp of the whole frame would have found them."""
    augment: bool = True
    min_rain: float = 0.0
    """Windows whose last input frame has fewer rainy valid pixels than this share are redrawn."""
    rain_level: float = 0.0
    """``data.rain_threshold`` in model space."""
    lagrangian: bool = False
    persistence: bool = False
    """Also give the network the last input frame moved into each lead's Lagrangian frame
    (``model.persistence_input``; Lagrangian only)."""
    persistence_history: int = 1
    """How many of the last input frames are moved so (``model.persistence_history``)."""


MAX_DRAWS = 20
"""Windows drawn for one sample before a dry one is taken anyway (``min_rain``)."""
CROP_TRIES = 8
"""Crop positions tried for one with data and rain in the last input frame."""


class TrainWindows(Dataset):
    """Random crops of training windows, read on demand, in model space.

    Items are addressed by a spec ``(window_index, item_seed)`` from ``StepSampler``. Each is a tuple of
    ``block`` (in_frames + out_frames, C, S, S) float32 model space, NaN = no data, the crop at
    ``[margin, margin + crop)`` in both directions (S = crop + 2 margin; outside the frame: NaN);
    ``velocity`` (2, S, S) pixels per step (Lagrangian; else shape (0,)); the time step in seconds
    (0-d float32); ``aug`` (2,) int64: quarter turns and a left-right flip, applied by ``training_batch``.
    """

    def __init__(
        self,
        source: FrameSource,
        windows: list[Window],
        settings: SampleSettings,
        transform: Transform,
        motion: MotionCache | None = None,
    ) -> None:
        self.source, self.windows, self.settings, self.transform = source, windows, settings, transform
        self.motion = motion if motion is not None else MotionCache(None)

    def __len__(self) -> int:
        return len(self.windows)

    def _draw(self, index: int, rng: np.random.Generator) -> tuple[Window, np.ndarray]:
        """The window to use and its last input frame (C, H, W) in model space: ``index``, or windows drawn
        from ``rng`` while the last input frame is drier than ``min_rain``."""
        st = self.settings
        for attempt in range(MAX_DRAWS):
            win = self.windows[index]
            t_last = win.start + st.in_frames - 1
            last = self.transform.forward(self.source.read(win.segment, t_last, t_last + 1)[0])
            finite = np.isfinite(last)
            rain = float((last[finite] > st.rain_level).mean()) if finite.any() else 0.0
            if st.min_rain <= 0 or rain >= st.min_rain or attempt == MAX_DRAWS - 1:
                return win, last
            index = int(rng.integers(0, len(self.windows)))
        raise AssertionError("unreachable")

    def _crop_origin(self, last: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
        """Top-left corner of a crop, preferring crops with data and rain in the last input frame (C, H, W)."""
        st = self.settings
        _, h, w = last.shape
        ch, cw = min(st.crop, h), min(st.crop, w)
        best, best_score = (0, 0), -1.0
        for _ in range(CROP_TRIES):
            oy, ox = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            patch = last[:, oy : oy + ch, ox : ox + cw]
            finite = np.isfinite(patch)
            valid = finite.mean()
            rain = (patch[finite] > st.rain_level).mean() if finite.any() else 0.0
            score = float(rain) if valid > 0.5 else -1.0 + float(valid)
            if valid > 0.5 and rain >= max(st.min_rain, 1e-9):
                return oy, ox
            if score > best_score:
                best, best_score = (oy, ox), score
        return best

    def _velocity(self, win: Window) -> np.ndarray:
        """Motion (2, H, W) of the window's input frames, px per step: ``motion_field`` of its last
        ``MOTION_FRAMES`` input frames, through the cache."""
        st, s = self.settings, win.segment
        t_last = win.start + st.in_frames - 1
        shape = self.source.frame_shape(s)
        key = motion_key(self.source.identities[s], int(self.source.times[s][t_last]), self.source.steps[s], shape)
        first = max(win.start, t_last - MOTION_FRAMES + 1)
        return self.motion.get(key, shape, lambda: motion_field(self.source.read(s, first, t_last + 1)))

    def __getitem__(self, spec: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        index, seed = spec
        rng = np.random.default_rng(seed)
        st = self.settings
        win, last = self._draw(index, rng)
        oy, ox = self._crop_origin(last, rng)
        h, w = last.shape[-2:]
        ch, cw = min(st.crop, h), min(st.crop, w)
        m = st.margin
        ys, xs = slice(max(0, oy - m), min(h, oy + ch + m)), slice(max(0, ox - m), min(w, ox + cw + m))
        pads = ((oy - ys.start, ys.stop - oy - ch), (ox - xs.start, xs.stop - ox - cw))
        pads = ((m - pads[0][0], m - pads[0][1]), (m - pads[1][0], m - pads[1][1]))  # what lies outside the frame
        n = st.in_frames + st.out_frames
        rates = self.source.read(win.segment, win.start, win.start + n, ys, xs)
        block = np.pad(self.transform.forward(rates), ((0, 0), (0, 0), *pads), constant_values=np.nan)
        velocity = np.zeros((0,), np.float32)
        if st.lagrangian:
            velocity = np.pad(self._velocity(win)[:, ys, xs], ((0, 0), *pads), mode="edge")
        k = int(rng.integers(0, 4)) if st.augment else 0
        flip = int(rng.integers(0, 2)) if st.augment else 0
        if ch != cw:
            k = k // 2 * 2  # only half turns keep a non-square crop's shape
        step = float(self.source.steps[win.segment])
        return (
            torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(velocity, dtype=np.float32)),
            torch.tensor(step, dtype=torch.float32),
            torch.tensor([k, flip], dtype=torch.int64),
        )


def training_batch(
    block: torch.Tensor, velocity: torch.Tensor, aug: torch.Tensor, settings: SampleSettings
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A batch of ``TrainWindows`` items, on the training device, as the network's input and target.

    block (B, T, C, S, S), velocity (B, 2, S, S) or (B, 0), aug (B, 2). A Lagrangian batch is warped into
    the frame of each window's last input frame (``motion.to_lagrangian``: inputs forward, targets
    backward), then the margin is cut off and each sample turned and flipped. Returns ``x`` (B, in, C, h, w)
    with no data as 0, ``y`` (B, out, C, h, w) with NaN where there is no data, and with
    ``settings.persistence`` the last input frame in each lead's frame (``motion.persistence_frames``,
    as inference makes it), (B, out, history * C, h, w) with no data as 0; else None.
    """
    st = settings
    m = st.margin
    n = st.in_frames + st.out_frames
    if st.lagrangian:
        held = None
        if st.persistence:  # (B, out, history * C, h, w), as (B, out * history, C, h, w) beside the window
            held = persistence_frames(block[:, : st.in_frames], velocity, st.out_frames, m, st.persistence_history)
            held = held.unflatten(2, (st.persistence_history, -1)).flatten(1, 2)
        block = to_lagrangian(block, velocity, st.in_frames, m)  # the inner window only: 4x less work at m = crop / 2
        if held is not None:
            block = torch.cat([block, held], 1)  # turned and flipped with the window
    elif m:
        block = block[..., m : block.shape[-2] - m, m : block.shape[-1] - m]
    turned = []
    for b in range(block.shape[0]):
        sample = torch.rot90(block[b], int(aug[b, 0]), dims=(-2, -1))
        turned.append(torch.flip(sample, dims=(-1,)) if int(aug[b, 1]) else sample)
    block = torch.stack(turned)
    held = None
    if block.shape[1] > n:  # back to (B, out, history * C, h, w)
        held = torch.nan_to_num(block[:, n:], nan=0.0).unflatten(1, (st.out_frames, -1)).flatten(2, 3)
    return torch.nan_to_num(block[:, : st.in_frames], nan=0.0), block[:, st.in_frames : n], held


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

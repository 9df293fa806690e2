"""Training reads an archive's frames straight from the files (``io.reading.FrameReader``): every layout,
unit and subsampling ``open_radar`` accepts gives exactly the values of the segment's own lazy array."""

from __future__ import annotations

import multiprocessing
import pickle

import dask
import numpy as np
import pytest

from nowcast.io import open_archive
from nowcast.io import reading
from nowcast.io.reading import FrameReader, frame_reader
from nowcast.training.windows import FrameSource

ROWS, COLS = slice(1, 6), slice(2, 9)


def _dask_values(segment, t0: int, t1: int, ys=slice(None), xs=slice(None)) -> np.ndarray:
    with dask.config.set(scheduler="synchronous"):
        return np.asarray(segment.isel(time=slice(t0, t1), y=ys, x=xs).values)


def _rain(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Rain in mm/h with dry pixels, negatives (no data) and NaN."""
    rng = np.random.default_rng(seed)
    values = rng.gamma(0.6, 3.0, shape).round(2)
    values[rng.random(shape) < 0.3] = 0.0
    values[rng.random(shape) < 0.05] = -1.0  # negatives: no data
    values[rng.random(shape) < 0.05] = np.nan
    return values


CASES = {
    "packed mm/h": dict(values=_rain((10, 8, 11))),
    "float mm/h": dict(values=_rain((10, 8, 11), 1), packed=False),
    "flux": dict(values=_rain((10, 8, 11), 2) / 3600, units="kg m-2 s-1", standard_name=None, packed=False),
    "dBZ": dict(
        values=_rain((10, 8, 11), 3) * 8, units="dBZ", standard_name="equivalent_reflectivity_factor", packed=False
    ),  # fmt: skip
    "lat/lon": dict(values=_rain((10, 8, 11), 4), dims=("time", "lat", "lon")),
    "channels": dict(values=_rain((10, 3, 8, 11), 5), dims=("time", "channel", "y", "x")),
    "channel last": dict(values=_rain((10, 8, 11, 3), 6), dims=("time", "y", "x", "band")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_reader_gives_the_segments_own_values(radar_file, case: str) -> None:
    path = radar_file(frames=10, size=(8, 11), **CASES[case])
    zr = (300.0, 1.4) if case == "dBZ" else (200.0, 1.6)
    (segment,) = open_archive([path], time_step=None, scan=False, zr_a=zr[0], zr_b=zr[1]).segments
    reader = frame_reader(segment, *zr)
    assert reader is not None
    for t0, t1, ys, xs in [(0, 10, slice(None), slice(None)), (3, 7, ROWS, COLS), (9, 10, slice(0, 1), slice(10, 11))]:
        got, want = reader.read(t0, t1, ys, xs), _dask_values(segment, t0, t1, ys, xs)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)  # NaN where NaN, bit for bit elsewhere
    assert np.isnan(reader.read(0, 10)).any()  # the negatives and NaN are no data


def test_reader_of_a_subsampled_file_with_a_gap(radar_file) -> None:
    # 150 s frames with a gap, read at 300 s: segments [0, 300, 600] and [1200, 1500] of every other frame
    times = [0, 150, 300, 450, 600, 1200, 1350, 1500]
    path = radar_file(times=times, size=(8, 11), values=_rain((8, 8, 11), 7))
    segments = open_archive([path], time_step=300, scan=False).segments
    assert [s.sizes["time"] for s in segments] == [3, 2]
    for segment in segments:
        reader = frame_reader(segment)
        assert reader is not None and reader.stride == 2
        n = segment.sizes["time"]
        np.testing.assert_array_equal(reader.read(0, n, ROWS, COLS), _dask_values(segment, 0, n, ROWS, COLS))
        np.testing.assert_array_equal(reader.read(1, n), _dask_values(segment, 1, n))


def test_frame_source_falls_back_to_dask_where_no_reader_can_be_made(radar_file, caplog) -> None:
    path = radar_file(frames=8, size=(8, 11), values=_rain((8, 8, 11), 8))
    (segment,) = open_archive([path], time_step=None, scan=False).segments
    lost = segment.copy()
    lost.attrs = {k: v for k, v in segment.attrs.items() if k != "source_file"}
    shifted = segment.assign_coords(time=segment["time"] + np.timedelta64(1, "s"))  # times not in the file
    assert frame_reader(lost) is None and frame_reader(shifted) is None
    with caplog.at_level("INFO", logger="nowcast"):
        source = FrameSource([lost, segment])
    assert source.readers[0] is None and isinstance(source.readers[1], FrameReader)
    assert "1 of 2 segments read through dask" in caplog.text
    np.testing.assert_array_equal(source.read(0, 2, 6, ROWS, COLS), source.read(1, 2, 6, ROWS, COLS))


def _read_in_child(reader: FrameReader, queue) -> None:
    queue.put(reader.read(0, 8))


def test_a_forked_process_reads_through_its_own_file_handle(radar_file) -> None:
    """A DataLoader worker is forked after the parent opened the file: it opens its own and reads the same."""
    path = radar_file(frames=8, size=(8, 11), values=_rain((8, 8, 11), 9))
    (segment,) = open_archive([path], time_step=None, scan=False).segments
    reader = frame_reader(segment)
    first = reader.read(0, 8)  # opens the file in this process
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(pickle.loads(pickle.dumps(reader)), queue))
    child.start()
    got = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    np.testing.assert_array_equal(got, first)
    np.testing.assert_array_equal(reader.read(0, 8), first)  # the parent's handle still reads


def test_at_most_the_open_limit_of_files_stay_open_and_none_keeps_frames(radar_file, monkeypatch) -> None:
    """Memory does not grow with the files read: a few stay open, none with a chunk cache (the netCDF
    library's default, 64 MB per open file, held the frames read), and the library's default is left as
    it was for other code."""
    import netCDF4

    default = netCDF4.get_chunk_cache()
    monkeypatch.setattr(reading, "_OPEN_LIMIT", 2)
    monkeypatch.setattr(reading, "_open_files", {})
    paths = [radar_file(f"r{i}.nc", frames=8, size=(8, 11), values=_rain((8, 8, 11), 10 + i)) for i in range(3)]
    segments = open_archive(paths, time_step=None, scan=False).segments
    source = FrameSource(segments)
    for _ in range(2):
        for s, segment in enumerate(segments):
            np.testing.assert_array_equal(
                source.read(s, 1, 7, ROWS, COLS)[:, 0], _dask_values(segment, 1, 7, ROWS, COLS)
            )
            assert len(reading._open_files) <= 2
    for ds in reading._open_files.values():
        assert ds.isopen() and ds["rainfall_rate"].get_var_chunk_cache()[0] == 0
    assert netCDF4.get_chunk_cache() == default

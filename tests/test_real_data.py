"""The eight real radar events of ``shared/data/radar``: ``nowcast info`` matches the README's table, and a
5-minute archive keeps the 5-minute files and skips the others, and training's reader gives every file's
values. Skipped when the folder is absent."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from nowcast.cli import app
from nowcast.io import open_archive

from tests.conftest import REAL_DATA  # noqa: E402


def _readme_table(folder: Path) -> dict[str, dict[str, str]]:
    """Rows of the README's file table: {file: {column: text}}."""
    rows: dict[str, dict[str, str]] = {}
    header: list[str] | None = None
    for line in (folder / "README.md").read_text().splitlines():
        if not line.startswith("|"):
            header = None if rows else header
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "file" and "time step" in cells:
            header = cells
        elif header and cells[0].startswith("`") and len(cells) == len(header):
            rows[cells[0].strip("`")] = dict(zip(header, cells))
    return rows


TABLE = _readme_table(REAL_DATA) if (REAL_DATA / "README.md").is_file() else {}


@pytest.mark.parametrize("name", sorted(TABLE) or ["(no real data)"])
def test_info_matches_readme(cli_runner, real_data, name):
    row = TABLE[name]
    result = cli_runner.invoke(app, ["info", str(real_data / name)])
    assert result.exit_code == 0, result.output
    out = result.stdout

    step = int(row["time step"].split()[0])
    shape = " x ".join(re.findall(r"\d+", row["shape (t, y, x)"]))
    assert f"time step:       {step} s" in out
    assert f"shape (t, y, x): {shape}" in out
    rainy = float(re.search(r"rainy fraction:\s+([\d.]+)", out).group(1))
    nan = float(re.search(r"NaN fraction:\s+([\d.]+)", out).group(1))
    vmax = float(re.search(r"maximum:\s+([\d.]+) mm/h", out).group(1))
    assert rainy == pytest.approx(float(row["rainy fraction"]), abs=0.0011)
    assert nan == pytest.approx(float(row["NaN"]), abs=0.0011)
    assert vmax == pytest.approx(float(row["max (mm/h)"].split()[0]), abs=0.011)


def test_readme_table_was_parsed(real_data):
    assert len(TABLE) == 8


def test_five_minute_archive_skips_other_steps(real_data, caplog):
    with caplog.at_level(logging.WARNING, logger="nowcast.io"):
        arc = open_archive([str(real_data / "*.nc")], time_step=300)
    used = [Path(f).name for f in arc.files]
    assert used == [
        "knmi_netherlands_20100826.nc",
        "mch_switzerland_20150515.nc",
        "mch_switzerland_20160711.nc",
        "opera_cirrus_europe_20241126.nc",
    ]
    assert [s.sizes["time"] for s in arc.segments] == [92, 40, 40, 13]
    skipped = {Path(f).name: reason for f, reason in arc.skipped}
    expected = {
        "bom_brisbane_20201031.nc": 600,
        "bom_melbourne_20180616.nc": 360,
        "mrms_conus_20190610.nc": 120,
        "opera_europe_20180824.nc": 900,
    }
    assert set(skipped) == set(expected)
    for name, step in expected.items():
        assert f"300 s, found {step} s" in skipped[name]
    warnings = [r.getMessage() for r in caplog.records if r.name == "nowcast.io" and r.levelno >= logging.WARNING]
    for name in expected:
        assert sum(name in w for w in warnings) == 1
    assert len(warnings) == 4
    knmi = arc.segments[0]
    assert knmi.dims == ("time", "y", "x") and knmi.attrs["time_step"] == 300
    assert knmi["crs"].attrs["crs_wkt"]


@pytest.mark.parametrize("time_step", [None, 600])
def test_training_reads_every_file_straight_and_as_open_radar_does(real_data, time_step):
    """Training's reader (``FrameReader``) gives each real file's values bit for bit, at its own step and
    subsampled to 10 minutes (the 2- and 5-minute files), on a crop of the middle frames."""
    import dask
    import numpy as np

    from nowcast.io.reading import frame_reader

    arc = open_archive([str(real_data / "*.nc")], time_step=time_step, scan=False)
    assert len(arc.segments) == (8 if time_step is None else 6)  # 360 s and 900 s do not divide 600 s
    for seg in arc.segments:
        reader = frame_reader(seg)
        assert reader is not None, seg.attrs["source_file"]
        n = seg.sizes["time"]
        t0, t1, ys, xs = n // 2 - 1, n // 2 + 2, slice(100, 260), slice(50, 300)
        with dask.config.set(scheduler="synchronous"):
            want = seg.isel(time=slice(t0, t1), y=ys, x=xs).values
        np.testing.assert_array_equal(reader.read(t0, t1, ys, xs), want)

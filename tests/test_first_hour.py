"""A new user's first hour (issue 15), through the command line: shipped configs, help, global options
after the command, completion, --threads, progress and logs, image sequences, info on mixed steps."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from nowcast.models.checkpoint import load_checkpoint
from nowcast.cli import app
from nowcast.config import Config, config_from_dict, field_docs, load_config, shipped_configs
from nowcast.synth import write_synthetic

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("synth", "info", "train", "predict", "evaluate", "config", "config list", "config show")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="module")
def synth_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("synth") / "s.nc"
    write_synthetic(path, frames=24, size=(32, 32), seed=1)
    return path


def _image_file(path: Path, frames: int = 16, size: int = 32, colour: int = 1) -> Path:
    """An RGB sequence 0-255 with a frame-index time axis (0, 1, 2, ...) and no units: a bright square in
    channel ``colour`` moving right by 2 pixels a frame, the other channels dark."""
    data = np.full((frames, 3, size, size), 10.0, np.float32)
    for t in range(frames):
        data[t, colour, 8:20, 2 + t : 14 + t] = 250.0
    ds = xr.Dataset({"frames": (("time", "channel", "y", "x"), data)}, coords={"time": np.arange(frames)})
    ds.to_netcdf(path)
    return path


# ----------------------------------------------------------------------------------------------------
# configs


def test_config_list_names_every_shipped_config(cli_runner) -> None:
    result = cli_runner.invoke(app, ["config", "list"])
    assert result.exit_code == 0, result.output
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))
    assert {"tiny", "shi2015", "hko7", "default", "images"} <= set(names)
    assert "Tiny model for tests and demos" in result.stdout


def test_config_show_prints_every_key_with_type_and_meaning_and_reads_back(cli_runner) -> None:
    result = cli_runner.invoke(app, ["config", "show", "tiny", "--set", "train.steps=3"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    resolved = config_from_dict(yaml.safe_load(text))
    assert resolved == load_config(ROOT / "configs" / "tiny.yaml", ["train.steps=3"])
    for section in dataclasses.fields(Config):
        cls = type(getattr(Config(), section.name))
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            assert docs.get(f.name), f"{section.name}.{f.name} has no docstring"
            assert f"  # {f.name} (" in text and docs[f.name] in text
    assert "# hidden (list of int): Hidden channels of each ConvLSTM level" in text
    assert "# kind (str, one of dbz, log, linear, minmax):" in text
    assert "# variable (str or null):" in text


def test_train_config_by_name_from_any_directory(
    cli_runner, synth_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/ folder here: the name must resolve to the shipped file
    args = [
        "train",
        "--config",
        "tiny",
        "--set",
        f"data.files=[{synth_file}]",
        "--set",
        "train.steps=2",
        "--set",
        "train.val_every=100",
        "--run-dir",
        "run",
        "--threads",
        "1",
    ]
    result = cli_runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["name"] == "tiny" and saved["train"]["threads"] == 1
    # logs: the run directory first, then which file to use
    err = result.stderr
    assert "run directory: run" in err
    assert err.index("run directory: run") < err.index("model.pt is the model to use")

    bad = cli_runner.invoke(app, ["train", "--config", "tinny", "--run-dir", "bad"])
    assert bad.exit_code == 2
    assert len(bad.stderr.strip().splitlines()) == 1
    assert "tinny: expected a YAML config file or the name of a shipped config (default, hko7" in bad.stderr
    assert not (tmp_path / "bad").exists()


# import name -> distribution name, where they differ
_DISTRIBUTIONS = {"cv2": "opencv-python-headless", "yaml": "pyyaml", "netCDF4": "netcdf4"}


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].strip().lower() for r in requirements}


def test_every_import_is_declared() -> None:
    """Third-party modules imported at module level need a core dependency; those imported inside a
    function (optional features) at least an extra. A core-only install must never die of an import."""
    import ast

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = _requirement_names(project["dependencies"])
    extras = set().union(*(_requirement_names(v) for v in project.get("optional-dependencies", {}).values()))
    stdlib = set(sys.stdlib_module_names)
    missing = []
    for path in sorted((ROOT / "nowcast").glob("*.py")):
        tree = ast.parse(path.read_text())
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                root = name.split(".")[0]
                if root in stdlib or root == "nowcast":
                    continue
                dist = _DISTRIBUTIONS.get(root, root).lower()
                allowed = core if id(node) in top_level else core | extras
                if dist not in allowed:
                    missing.append(f"{path.name}: {name} ({dist})")
    assert not missing, missing
    assert "scipy" in core  # metrics.py imports it at module level


def test_shipped_configs_are_package_data() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"configs/*.yaml"' in pyproject
    assert (ROOT / "nowcast" / "configs").resolve() == (ROOT / "configs").resolve()
    assert set(shipped_configs()) == {p.stem for p in (ROOT / "configs").glob("*.yaml")}


# ----------------------------------------------------------------------------------------------------
# help, global options, completion, --threads


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_no_value_placeholder_on_flags(cli_runner, command: str) -> None:
    result = cli_runner.invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.stdout
    assert re.search(r"--help\s+Show this message and exit", result.stdout)


def test_help_names_values_like_a_mature_cli(cli_runner) -> None:
    text = cli_runner.invoke(app, ["predict", "--help"]).stdout
    assert "--model CKPT" in text and "--steps N" in text and "-o, --output OUT.nc" in text and "--threads N" in text
    assert "-v/--verbose and -q/--quiet may also follow the command" in text


def test_global_options_after_the_command(cli_runner, tmp_path: Path) -> None:
    loud = cli_runner.invoke(app, ["synth", str(tmp_path / "a.nc"), "--frames", "3", "--size", "8", "8"])
    quiet = cli_runner.invoke(app, ["synth", str(tmp_path / "b.nc"), "--frames", "3", "--size", "8", "8", "-q"])
    assert loud.exit_code == quiet.exit_code == 0
    assert "wrote" in loud.stderr and "wrote" not in quiet.stderr
    missing = tmp_path / "missing.nc"
    plain = cli_runner.invoke(app, ["info", str(missing)])
    verbose = cli_runner.invoke(app, ["info", str(missing), "--verbose"])
    assert plain.exit_code == verbose.exit_code == 2
    assert "Traceback" not in plain.stderr and "Traceback" in verbose.stderr
    # after "--" a "-v" is an argument, not an option
    literal = cli_runner.invoke(app, ["info", "--", "-v"])
    assert literal.exit_code == 2 and "-v" in literal.stderr and "Traceback" not in literal.stderr


@pytest.mark.slow
def test_shell_completion_is_offered(cli_runner) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nowcast", "--show-completion", "bash"],
        env={**_env(), "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"},  # the shell named, not detected
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "_NOWCAST_COMPLETE" in result.stdout and "complete " in result.stdout
    assert "--install-completion" in cli_runner.invoke(app, ["--help"]).stdout


def test_threads_option_reaches_torch(cli_runner, synth_file: Path, tmp_path: Path) -> None:
    result = cli_runner.invoke(app, ["predict", str(synth_file), "-o", str(tmp_path / "fc.nc"), "--threads", "1", "-v"])
    assert result.exit_code == 0, result.output
    assert "1 thread(s)" in result.stderr
    bad = cli_runner.invoke(app, ["evaluate", str(synth_file), "--threads", "many"])
    assert bad.exit_code == 2 and "--threads" in bad.stderr


# ----------------------------------------------------------------------------------------------------
# progress bar and logs


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a pseudo-terminal")
def test_log_lines_never_land_on_the_progress_bar(synth_file: Path, tmp_path: Path) -> None:
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a 160-column terminal
    args = [
        sys.executable,
        "-m",
        "nowcast",
        "train",
        "--config",
        "tiny",
        "--set",
        f"data.files=[{synth_file}]",
        "--set",
        "train.steps=4",
        "--set",
        "train.val_every=2",
        "--set",
        "data.val_block=8",
        "--set",
        "data.val_fraction=0.5",
        "--run-dir",
        str(tmp_path / "run"),
    ]
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=_env(), cwd=tmp_path)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=300) == 0
    text = b"".join(chunks).decode(errors="replace")
    assert "step/s" in text or "s/step" in text  # the bar was shown
    stamps = [m.start() for m in re.finditer(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d (INFO|WARNING)", text)]
    assert len(stamps) >= 4
    for at in stamps:  # every log line starts a line: never glued to the bar's text
        assert at == 0 or text[at - 1] in "\r\n", repr(text[max(0, at - 60) : at + 40])
    assert any("val CSI" in text[at : at + 200] for at in stamps)  # logged while the bar was open


# ----------------------------------------------------------------------------------------------------
# image sequences


def test_image_sequence_trains_with_a_one_channel_config_and_plots_rgb(cli_runner, tmp_path: Path) -> None:
    images = _image_file(tmp_path / "frames.nc")
    run = tmp_path / "run"
    common = [
        "--set",
        f"data.files=[{images}]",
        "--set",
        "data.units=mm h-1",
        "--set",
        "train.steps=2",
        "--set",
        "train.val_every=100",
        "--threads",
        "1",
    ]
    # tiny: 1 channel, dbz transform: channels follow the data; 0-255 exceeds the dbz range (205 mm/h)
    result = cli_runner.invoke(app, ["train", "--config", "tiny", *common, "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    assert "model.channels: 3 from the data (the config said 1)" in result.stderr
    assert "data exceed the range of the dbz transform: found values up to 250" in result.stderr
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["channels"] == 3

    # resumed with a config of another channel count: one line naming the key, exit 2
    again = cli_runner.invoke(
        app,
        [
            "train",
            "--resume",
            str(run),
            "--config",
            "tiny",
            "--set",
            f"data.files=[{images}]",
            "--set",
            "data.units=mm h-1",
            "--set",
            "train.steps=4",
        ],
    )
    assert again.exit_code == 2 and len(again.stderr.strip().splitlines()) == 1
    assert "model.channels: expected 1 channel(s) as in the resumed run, found 3" in again.stderr

    # the shipped image config: minmax range from the data, stored in the checkpoint; no range warning
    mm = tmp_path / "mm"
    small = [
        "--set",
        "data.in_frames=4",
        "--set",
        "data.out_frames=4",
        "--set",
        "data.crop=32",
        "--set",
        "model.hidden=[8,8]",
        "--set",
        "data.val_block=8",
    ]
    result = cli_runner.invoke(app, ["train", "--config", "images", *common, *small, "--run-dir", str(mm)])
    assert result.exit_code == 0, result.output
    assert "exceed" not in result.stderr
    cfg = load_checkpoint(mm / "model.pt")["config"]
    assert (cfg["transform"]["kind"], cfg["transform"]["value_min"], cfg["transform"]["value_max"]) == (
        "minmax",
        10.0,
        250.0,
    )
    assert cfg["model"]["channels"] == 3

    # a forecast from the frame-numbered file at the model's step; brighter data than trained on: a warning
    brighter = tmp_path / "brighter.nc"
    ds = xr.open_dataset(images).load()
    ds["frames"] = ds["frames"] * 1.02
    ds.to_netcdf(brighter)
    png = tmp_path / "fc.png"
    result = cli_runner.invoke(
        app,
        ["predict", str(brighter), "--model", str(mm / "model.pt"), "-o", str(tmp_path / "fc.nc"), "--plot", str(png)],
    )
    assert result.exit_code == 0, result.output
    # at predict time: what the model does with them, once, without advice for train
    assert "INFO input values above 250 (found 255) are capped at 250 by the model's minmax transform" in result.stderr
    assert "transform.value_max" not in result.stderr
    fc = xr.open_dataset(tmp_path / "fc.nc")
    assert fc["frames"].sizes["channel"] == 3
    np.testing.assert_array_equal(fc["frame"].values, [16, 17, 18, 19])  # numbered like the input, no dates
    darker = tmp_path / "darker.nc"
    ds["frames"] = ds["frames"] / 1.02 * 0.5  # 5 to 125: below the trained range's 10
    ds.to_netcdf(darker)
    result = cli_runner.invoke(
        app, ["predict", str(darker), "--model", str(mm / "model.pt"), "-o", str(tmp_path / "d.nc")]
    )
    assert result.exit_code == 0, result.output
    assert "input values below 10 (found 5) are raised to 10 by the model's minmax transform" in result.stderr
    # --plot draws RGB: the green square is green (the old plot showed channel 0 on a rain scale: white)
    import matplotlib.image

    rgb = matplotlib.image.imread(png)[..., :3]
    green = (rgb[..., 1] > 0.8) & (rgb[..., 0] < 0.3) & (rgb[..., 2] < 0.3)
    assert green.sum() > 100


def test_frame_index_is_described_by_info_without_a_step(cli_runner, tmp_path: Path) -> None:
    images = _image_file(tmp_path / "frames.nc")
    result = cli_runner.invoke(app, ["info", str(images)])
    assert result.exit_code == 0, result.output
    assert "frames:          0 to 15 (numbered, no dates)" in result.stdout
    assert "time step:       1 frame" in result.stdout


# ----------------------------------------------------------------------------------------------------
# info on files at different steps


def test_info_on_mixed_steps_warns_like_the_archive_reader(cli_runner, radar_file, tmp_path: Path) -> None:
    a = radar_file("a.nc", frames=6, step=300)
    b = radar_file("b.nc", frames=6, step=300, start="2021-06-02T12:00:00")
    c = radar_file("c.nc", frames=6, step=420)
    result = cli_runner.invoke(app, ["info", str(a), str(b), str(c)])
    assert result.exit_code == 0, result.output
    assert f"skipped {c}: expected a time step that divides the archive's time step of 300 s" in result.stderr
    assert "found 420 s" in result.stderr
    assert "archive:         2 files at 300 s, 12 frames" in result.stdout
    assert f"left out:        1 file(s) at another time step: {c}" in result.stdout
    same = cli_runner.invoke(app, ["info", str(a), str(b)])
    assert "skipped" not in same.stderr and "left out" not in same.stdout


# ----------------------------------------------------------------------------------------------------
# maps


def test_forecast_plot_draws_latitude_longitude_lines(cli_runner, synth_file: Path, tmp_path: Path) -> None:
    """The synthetic grid is azimuthal equidistant about 50N 10E (its grid mapping), so the lines through
    the grid's centre (x = y = 0) must be 50N and 10E."""
    result = cli_runner.invoke(
        app, ["predict", str(synth_file), "-o", str(tmp_path / "fc.nc"), "--plot", str(tmp_path / "fc.png"), "-v"]
    )
    assert result.exit_code == 0, result.output
    found = re.findall(r"graticule: latitudes \[([^\]]*)\], longitudes \[([^\]]*)\]", result.stderr)
    assert len(found) == 5  # the observed frame and four lead times
    lats = [float(v) for v in found[0][0].split(",")]
    lons = [float(v) for v in found[0][1].split(",")]
    assert 50.0 in lats and 10.0 in lons
    assert all(49.5 < v < 50.5 for v in lats) and all(9.5 < v < 10.5 for v in lons)
    assert (tmp_path / "fc.png").stat().st_size > 0


def test_evaluation_plots_name_the_run_explain_missing_lines_and_tick_on_the_step(
    cli_runner, synth_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nowcast import plots

    figures: dict[str, object] = {}
    save = plots._save

    def keep(fig: object, path: str | Path, dpi: int = 100) -> Path:
        figures[Path(path).name] = fig
        return save(fig, path, dpi)

    monkeypatch.setattr(plots, "_save", keep)
    synth_file = write_synthetic(tmp_path / "rainy.nc", frames=16, size=(64, 64), seed=0)  # rain >= 1 mm/h
    run = tmp_path / "tiny-run"
    trained = cli_runner.invoke(
        app,
        [
            "train",
            "--config",
            "tiny",
            "--set",
            f"data.files=[{synth_file}]",
            "--set",
            "train.steps=1",
            "--set",
            "train.val_every=100",
            "--run-dir",
            str(run),
        ],
    )
    assert trained.exit_code == 0, trained.output
    result = cli_runner.invoke(
        app,
        [
            "evaluate",
            str(synth_file),
            "--model",
            str(run / "model.pt"),
            "--baselines",
            "persistence",
            "--thresholds",
            "1,500",
            "--steps",
            "4",
            "--out",
            str(tmp_path / "ev"),
        ],
    )
    assert result.exit_code == 0, result.output
    csi = figures["csi_by_lead.png"]
    assert "model 'tiny' (tiny-run/model.pt)" in csi._suptitle.get_text()  # the run, not "model model.pt"
    panel_1, panel_500 = csi.axes[0], csi.axes[1]
    notes = " ".join(t.get_text() for t in panel_500.texts)
    assert "model: undefined at every lead" in notes and "persistence: undefined at every lead" in notes
    assert not any("undefined" in t.get_text() for t in panel_1.texts), [t.get_text() for t in panel_1.texts]
    ticks = [t for t in panel_1.get_xticks() if 0 < t <= 20]
    assert ticks and all(t % 5 == 0 for t in ticks)  # the step is 5 min (4 leads: a tick on every step)
    assert ticks == [5.0, 10.0, 15.0, 20.0]


def test_distribution_name_is_free_of_the_unrelated_nowcast_package() -> None:
    """`pip install nowcast` installs an unrelated project: ours is `nowcast-convlstm`, with the
    `nowcast` command and import package."""
    import importlib.metadata as md

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    from tests.conftest import REPO_ROOT

    name = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["name"]
    assert name == "nowcast-convlstm"
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        pytest.skip(f"{name} is not installed (run from a source tree)")
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts == {"nowcast": "nowcast.cli:main"}

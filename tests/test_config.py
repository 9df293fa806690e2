"""Config loading: defaults, YAML, --set overrides, unknown keys with suggestions, all problems at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nowcast.config import Config, config_to_dict, load_config, save_config
from nowcast.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["tiny", "shi2015", "hko7", "default"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert len(cfg.model.hidden) == len(cfg.model.kernels) == len(cfg.model.downsample)


def test_shi2015_recipe_is_the_paper_s_model() -> None:
    """DESIGN section 4: shi2015 is 4x4 patches and two ConvLSTM levels of 64 channels with 3x3 kernels."""
    m = load_config(CONFIGS / "shi2015.yaml").model
    assert (m.patch, m.hidden, m.kernels, m.downsample, m.frame) == (4, (64, 64), (3, 3), (1, 1), "eulerian")


def test_hko7_recipe_is_the_benchmark_s_model() -> None:
    """DESIGN section 4: hko7 has three levels of 64, 192 and 192 channels, downsampling between them."""
    m = load_config(CONFIGS / "hko7.yaml").model
    assert m.hidden == (64, 192, 192)
    assert m.downsample[0] == 1 and all(s > 1 for s in m.downsample[1:])


def test_defaults_without_file() -> None:
    assert load_config(None) == Config()


def test_overrides_parse_yaml_values(tmp_path: Path) -> None:
    cfg = load_config(
        CONFIGS / "tiny.yaml",
        [
            "data.files=[a.nc, b.nc]",
            "train.lr=0.01",
            "model.hidden=[4, 6]",
            "model.kernels=[3,5]",
            "data.variable=precip",
        ],
    )
    assert cfg.data.files == ("a.nc", "b.nc")
    assert cfg.train.lr == 0.01
    assert cfg.model.hidden == (4, 6) and cfg.model.kernels == (3, 5)
    assert cfg.data.variable == "precip"


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "hko7.yaml", ["data.files=[x.nc]"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert yaml.safe_load((tmp_path / "c.yaml").read_text()) == config_to_dict(cfg)


def test_every_problem_reported_at_once_with_suggestions(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  hiden: [8]\n  patch: four\ntrain:\n  lr: 0.1\n  stepz: 3\nbogus: {}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "4 problem(s)" in msg
    assert "model.hiden" in msg and "did you mean 'hidden'" in msg
    assert "train.stepz" in msg and "did you mean 'steps'" in msg
    assert "model.patch: expected int, found 'four'" in msg
    assert "unknown key 'bogus'" in msg
    assert "\n" not in msg


def test_cross_field_checks() -> None:
    with pytest.raises(ConfigError, match="model.kernels: expected one entry per level"):
        load_config(None, ["model.hidden=[8, 8, 8]"])
    with pytest.raises(ConfigError, match="expected odd sizes"):
        load_config(None, ["model.kernels=[2, 3]"])
    with pytest.raises(ConfigError, match="transform.kind: expected one of dbz, log, linear, minmax, found 'sqrt'"):
        load_config(None, ["transform.kind=sqrt"])


def test_bad_override_and_bad_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(None, ["train.lr"])
    with pytest.raises(ConfigError, match="found nothing"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="expected YAML"):
        load_config(tmp_path / "broken.yaml")

"""pyproject.toml lists its packages explicitly (configs/ is mapped onto grm_jax.configs): every package folder of
the source tree must be in that list, or `pip install .` would silently leave it out."""
from __future__ import annotations

import tomllib
from pathlib import Path

from grm_jax import config

REPO = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts)
               for root in ("grm_jax", "data_pipeline") for p in (REPO / root).rglob("__init__.py")}
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - on_disk == {"grm_jax.configs"}
    assert setuptools["package-dir"]["grm_jax.configs"] == "configs"


def test_experiment_configs_are_found_in_the_top_level_configs_folder():
    assert config.CONFIG_DIR == REPO / "configs"
    names = {p.stem for p in config.CONFIG_DIR.glob("*.yaml")}
    assert {"vitb_256_ep300", "vitl_320_ep300", "demo_tiny", "tiny_test"} <= names
    assert config.load_config("tiny_test").MODEL.BACKBONE.TYPE

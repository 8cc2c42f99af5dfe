import os
from pathlib import Path

# Tests run on the CPU with exact fp32 matmuls so parity tolerances mean what they say.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

jax.config.update("jax_default_matmul_precision", "highest")

PARITY_BUNDLE = REPO / "tests" / "fixtures" / "parity"


@pytest.fixture(scope="session")
def parity_bundle() -> Path:
    return PARITY_BUNDLE


def pytest_addoption(parser):
    parser.addoption("--tiny-config", default=None,
                     help="YAML of the tiny model for tests/multi_device_train_step.py (given by test_train_step.py)")


@pytest.fixture(scope="session")
def tiny_cfg():
    """The tiny_test experiment (the parity bundle's architecture); shared, so tests must not change it."""
    from grm_jax.config import load_config

    return load_config("tiny_test")


@pytest.fixture(scope="session")
def synthetic_benchmark(tmp_path_factory):
    """`make(name, **write_dataset_args) -> (root, sequences)`: a generated benchmark in the official layout of
    `name` (data_pipeline.synthetic.write_dataset) and its sequences as the evaluation loader reads them
    (`only_existing`: the sequences whose folders exist)."""
    from data_pipeline.synthetic import write_dataset
    from grm_jax.evaluation.datasets import load_eval_dataset

    def make(name: str, *, only_existing: bool = False, **write_args):
        root = tmp_path_factory.mktemp(name) / name
        write_dataset(name, root, **write_args)
        return root, load_eval_dataset(name, root, only_existing=only_existing)
    return make


@pytest.fixture(scope="session")
def save_tiny_checkpoint():
    """`save(path, variables) -> path`: the variables of a tiny model as our checkpoint folder, with the extras
    a converted official checkpoint carries."""
    import numpy as np

    from grm_jax.checkpoint import save_variables

    def save(path: Path, variables) -> Path:
        embed_dim = variables["params"]["backbone"]["pos_embed_x"].shape[-1]
        return save_variables(path, variables, {"backbone.cls_token": np.zeros((1, 1, embed_dim), np.float32)})
    return save

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

import functools
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

    from grm_jax.checkpoints.converted import save_variables

    def save(path: Path, variables) -> Path:
        embed_dim = variables["params"]["backbone"]["pos_embed_x"].shape[-1]
        return save_variables(path, variables, {"backbone.cls_token": np.zeros((1, 1, embed_dim), np.float32)})
    return save


TINY_TRAINING_YAML = """\
MODEL:
  PRETRAIN_FILE: ""
  BACKBONE: {{TYPE: vit_base, EMBED_DIM: 32, DEPTH: 2, NUM_HEADS: 2}}
  HEAD: {{NUM_CHANNELS: 16}}
TRAIN: {{LR: 0.001, BATCH_SIZE: {batch_size}, BACKBONE_MULTIPLIER: 1.0, GRAD_CLIP_NORM: 1.0, DROP_PATH_RATE: 0.1,
        LOG_EVERY_STEPS: 1, CKPT_EVERY_STEPS: {ckpt_every}, KEEP_CHECKPOINTS: {keep}, SEED: 3}}
DATA:
  PIPELINE: {pipeline}
  MAX_SAMPLE_INTERVAL: 10
  TRAIN: {{DATASETS_NAME: [GOT10K_train], DATASETS_RATIO: [1], SAMPLE_PER_EPOCH: 800}}
  SEARCH: {{SIZE: 64, FACTOR: 4.0, CENTER_JITTER: 3, SCALE_JITTER: 0.25}}
  TEMPLATE: {{SIZE: 32, FACTOR: 2.0}}
  ROOTS: {{GOT10K: {root}}}
TEST: {{TEMPLATE_SIZE: 32, SEARCH_SIZE: 64, SEARCH_FACTOR: 4.0}}
"""


@pytest.fixture(scope="session")
def tiny_training_yaml():
    """`write(path, got10k_root, *, ckpt_every, batch_size=4, keep=2, pipeline="graph") -> path`: the config of
    the training-loop tests (a 2-block width-32 model on a GOT-10k-format folder) written to `path`."""
    def write(path: Path, root: Path, *, ckpt_every: int, batch_size: int = 4, keep: int = 2,
              pipeline: str = "graph") -> Path:
        path = Path(path)
        path.write_text(TINY_TRAINING_YAML.format(root=root, ckpt_every=ckpt_every, batch_size=batch_size,
                                                  keep=keep, pipeline=pipeline))
        return path
    return write


# the URL schemes gs_in_memory serves, and the tf.io.gfile calls whose path arguments it maps (glob's results are
# mapped back)
BUCKET_SCHEMES = ("gs", "s3")
GFILE_CALLS = ("GFile", "exists", "isdir", "listdir", "glob", "makedirs", "mkdir", "remove", "rename", "rmtree",
               "stat", "walk", "copy")


def _to_ram(path):
    """gs://BUCKET/x -> ram://gs/BUCKET/x (s3:// alike): where the in-memory bucket keeps it."""
    for scheme in BUCKET_SCHEMES:
        if isinstance(path, str) and path.startswith(f"{scheme}://"):
            return f"ram://{scheme}/" + path[len(f"{scheme}://"):]
    return path


def _from_ram(path):
    if isinstance(path, str) and path.startswith("ram://"):
        scheme, _, rest = path[len("ram://"):].partition("/")
        return f"{scheme}://{rest}"
    return path


@pytest.fixture(scope="module")
def gs_in_memory():
    """Buckets in memory: every tf.io.gfile call (what etils.epath, the GFile logs and the bucket check use) sees
    gs://BUCKET/... and s3://BUCKET/... in TensorFlow's in-memory file system ram:// (no network). Gives the
    ram:// URL of a bucket URL, for readers that do not go through tf.io.gfile (TF's C++ record reader)."""
    import tensorflow as tf

    gfile = tf.io.gfile
    originals = {name: getattr(gfile, name) for name in GFILE_CALLS}

    def mapped(name, call):
        @functools.wraps(call)
        def wrapper(*args, **kwargs):
            args = [_to_ram(a) for a in args]
            if name == "GFile" and str(kwargs.get("mode", args[1] if len(args) > 1 else "r")).startswith("w") \
                    and originals["exists"](args[0]):
                originals["remove"](args[0])   # ram:// appends on "w"; a bucket object is replaced
            out = call(*args, **kwargs)
            return [_from_ram(p) for p in out] if name == "glob" else out
        return wrapper
    for name, call in originals.items():
        setattr(gfile, name, mapped(name, call))
    yield _to_ram
    for name, call in originals.items():
        setattr(gfile, name, call)

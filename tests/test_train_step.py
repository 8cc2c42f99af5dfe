"""The train step: parity with the official training step (train_step.npz), and on 3 simulated CPU devices the
sharded step equals the per-shard computation done one shard at a time with averaged gradients (DDP)
(tests/multi_device_train_step.py; grm-train on 2 and 3 devices: tests/test_checkpoint_topology.py)."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from grm_jax.parity import run_checks

REPO = Path(__file__).resolve().parents[1]


def test_train_step_parity_with_official(parity_bundle):
    results = {r.name: r for r in run_checks(parity_bundle, ["train_step"])}
    for part in ("total", "giou", "l1", "focal", "iou"):
        r = results[f"train_step/loss_{part}"]
        assert r.ok and r.detail["max_rel_err"] <= 1e-5, r
    grads = results["train_step/grads"]
    assert grads.ok, grads.detail
    assert grads.detail["tensors"] == 126 and not grads.detail["missing"] and not grads.detail["unexpected"]
    assert results["train_step/bn_running_stats"].ok and results["train_step/bn_running_stats"].max_abs_err <= 1e-5
    assert results["train_step/interact_frac"].ok


def test_losses_parity_check_registered(parity_bundle):
    results = run_checks(parity_bundle, ["losses"])
    assert {r.name for r in results} >= {"losses/focal", "losses/focal_nopos", "losses/giou", "losses/iou",
                                         "losses/l1"}
    assert all(r.ok for r in results), [r for r in results if not r.ok]


# not a power of two: the global batch and the gradient mean over an odd number of shards
DDP_DEVICES = 3


@pytest.mark.slow
def test_several_devices_equal_sequential_ddp(tmp_path):
    """tests/multi_device_train_step.py in a process that sees DDP_DEVICES CPU devices."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(textwrap.dedent("""\
        MODEL:
          PRETRAIN_FILE: ""
          BACKBONE: {TYPE: vit_base, EMBED_DIM: 32, DEPTH: 2, NUM_HEADS: 2}
          HEAD: {NUM_CHANNELS: 16}
        TRAIN: {LR: 0.001, BATCH_SIZE: 2}
        DATA:
          SEARCH: {SIZE: 64, FACTOR: 4.0}
          TEMPLATE: {SIZE: 32, FACTOR: 2.0}
        TEST: {TEMPLATE_SIZE: 32, SEARCH_SIZE: 64, SEARCH_FACTOR: 4.0}
        """))
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={DDP_DEVICES}",
               TF_CPP_MIN_LOG_LEVEL="2")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp",
                          str(tmp_path / "inner"), "tests/multi_device_train_step.py", "--tiny-config", str(cfg)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "1 passed" in res.stdout, res.stdout[-3000:]

"""The train step: parity with the official training step (train_step.npz), and on 8 simulated CPU devices the
sharded step equals the per-shard computation done one shard at a time with averaged gradients (DDP), and
grm-train runs there."""
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


MULTI_DEVICE = textwrap.dedent("""
    import os, sys
    import jax, jax.numpy as jnp, numpy as np
    assert jax.device_count() == 8, jax.devices()
    from grm_jax.config import load_config
    from grm_jax.models import build_model
    from grm_jax.train.loop import init_variables
    from grm_jax.train.losses import loss_weights
    from grm_jax.train.optim import make_optimizer
    from grm_jax.train.step import (apply_gradients, create_train_state, global_batch, loss_and_grads, make_key,
                                    make_mesh, make_train_step, replicate, step_rngs)

    cfg = load_config(sys.argv[1], ["TRAIN.BATCH_SIZE=2", "TRAIN.DROP_PATH_RATE=0.1"])
    model = build_model(cfg)
    variables = init_variables(cfg, model, make_key(0))
    mesh = make_mesh()
    n, per = 8, 2
    tx = make_optimizer(cfg, variables["params"], n * per)
    state = create_train_state(variables, tx, 7)
    rng = np.random.default_rng(0)
    B, t, s, f = n * per, cfg.DATA.TEMPLATE.SIZE, cfg.DATA.SEARCH.SIZE, cfg.DATA.SEARCH.SIZE // 16
    heat = rng.uniform(0, 0.5, (B, f, f)).astype(np.float32); heat[np.arange(B), rng.integers(0, f, B), 1] = 1.0
    batch = {"template": rng.normal(size=(B, t, t, 3)).astype(np.float32),
             "search": rng.normal(size=(B, s, s, 3)).astype(np.float32),
             "template_mask": np.ones((B, (t // 16) ** 2), np.float32),
             "search_anno": np.tile(np.array([[0.3, 0.35, 0.3, 0.25]], np.float32), (B, 1)),
             "heatmap": heat}
    # reference first (the sharded step donates its state argument)
    kw = loss_weights(cfg)
    # same XLA options as the sharded step: this compares sharding, not two CPU matmul libraries
    from grm_jax.runtime import xla_compiler_options
    opts = xla_compiler_options()
    one = jax.jit(lambda p, bs, b, r: loss_and_grads(model, kw, p, bs, b, rngs=r), compiler_options=opts)
    outs = [one(state["params"], state["batch_stats"], {k: v[i * per:(i + 1) * per] for k, v in batch.items()},
                step_rngs(state["rng"], 0, i)) for i in range(n)]
    mean = lambda trees: jax.tree_util.tree_map(lambda *x: sum(x) / len(x), *trees)
    ref = jax.jit(lambda st, g, bs: apply_gradients(tx, st, g, bs), compiler_options=opts)(
        state, mean([o[0] for o in outs]), mean([o[2] for o in outs]))
    ref = jax.device_get(ref)
    ref_total = float(np.mean([float(o[1]["total"]) for o in outs]))

    init_params = jax.tree_util.tree_map(np.array, jax.device_get(variables["params"]))  # copies: state is donated
    step = make_train_step(model, tx, mesh, kw)
    new, metrics = step(replicate(state, mesh), global_batch(batch, mesh))
    new = jax.device_get(new)
    errs = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda a, b: float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))),
        new["params"], ref["params"]))
    bn = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda a, b: float(np.max(np.abs(a - b))), new["batch_stats"], ref["batch_stats"]))
    moved = max(jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda a, b: float(np.max(np.abs(a - b))), new["params"], init_params)))
    print("RESULT", max(errs), max(bn), moved, float(metrics["total"]), ref_total, int(new["step"]))

    from grm_jax.cli import train as T
    rc = T.main(["--config", sys.argv[1], "--workdir", sys.argv[2], "--max-steps", "2", "--no-progress",
                 "--set", "TRAIN.BATCH_SIZE=1"])
    print("TRAIN_RC", rc)
""")


def test_eight_devices_equal_sequential_ddp_and_train_script_runs(tmp_path):
    from data_pipeline.synthetic import write_dataset

    write_dataset("got10k", tmp_path / "got10k", 4, num_frames=20, image_size=(160, 120), seed=1, split="train")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        MODEL:
          PRETRAIN_FILE: ""
          BACKBONE: {{TYPE: vit_base, EMBED_DIM: 32, DEPTH: 2, NUM_HEADS: 2}}
          HEAD: {{NUM_CHANNELS: 16}}
        TRAIN: {{LR: 0.001, BATCH_SIZE: 2, LOG_EVERY_STEPS: 1, CKPT_EVERY_STEPS: 2}}
        DATA:
          TRAIN: {{DATASETS_NAME: [GOT10K_train], DATASETS_RATIO: [1], SAMPLE_PER_EPOCH: 160}}
          SEARCH: {{SIZE: 64, FACTOR: 4.0}}
          TEMPLATE: {{SIZE: 32, FACTOR: 2.0}}
          ROOTS: {{GOT10K: {tmp_path / 'got10k'}}}
        TEST: {{TEMPLATE_SIZE: 32, SEARCH_SIZE: 64, SEARCH_FACTOR: 4.0}}
        """))
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8",
               TF_CPP_MIN_LOG_LEVEL="2")
    res = subprocess.run([sys.executable, "-c", MULTI_DEVICE, str(cfg), str(tmp_path / "work")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("RESULT"))
    param_err, bn_err, moved, total, ref_total, step = line.split()[1:]
    assert float(param_err) <= 1e-6 and float(bn_err) <= 1e-6, line
    assert float(moved) > 1e-5, line                     # the step really changed the params
    assert float(total) == pytest.approx(float(ref_total), rel=1e-5) and int(step) == 1
    assert "TRAIN_RC 0" in res.stdout, res.stdout[-3000:] + res.stderr[-3000:]
    assert "devices 8 (cpu)" in res.stdout and "global batch 8" in res.stdout
    assert "step 2/2" in res.stdout

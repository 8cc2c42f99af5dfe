"""Run by tests/test_train_step.py in a process with several simulated CPU devices (XLA_FLAGS), as
`python -m pytest tests/multi_device_train_step.py --tiny-config CFG`: the sharded train step equals the per-shard
computation done one shard at a time with averaged gradients (DDP). (grm-train itself on 2 and 3 devices:
tests/test_checkpoint_topology.py, whose checkpoints come from it.)
The file name does not match `test_*.py`, so the one-device test session does not collect it."""
import jax
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(jax.device_count() < 2, reason="needs several devices (XLA_FLAGS host device count)")


@pytest.fixture(scope="module")
def tiny_config(request):
    return request.config.getoption("--tiny-config")


def _max_abs_diff(a_tree, b_tree):
    return max(jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda a, b: float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))), a_tree, b_tree)))


def test_sharded_step_equals_sequential_ddp(tiny_config):
    from grm_jax.config import load_config
    from grm_jax.specs import build_model, optimizer_spec
    from grm_jax.runtime import xla_compiler_options
    from grm_jax.train.loop import init_variables
    from grm_jax.train.losses import loss_weights
    from grm_jax.train.optim import OptimizerSpec, make_optimizer
    from grm_jax.train.step import (apply_gradients, create_train_state, global_batch, loss_and_grads, make_key,
                                    make_mesh, make_train_step, replicate, step_rngs)

    cfg = load_config(tiny_config, ["TRAIN.BATCH_SIZE=2", "TRAIN.DROP_PATH_RATE=0.1"])
    model = build_model(cfg)
    variables = init_variables(cfg, model, make_key(0))
    mesh = make_mesh()
    n, per = jax.device_count(), 2
    tx = make_optimizer(OptimizerSpec(**optimizer_spec(cfg, n * per)), variables["params"])
    state = create_train_state(variables, tx, make_key(7))
    rng = np.random.default_rng(0)
    B, t, s, f = n * per, cfg.DATA.TEMPLATE.SIZE, cfg.DATA.SEARCH.SIZE, cfg.DATA.SEARCH.SIZE // 16
    heat = rng.uniform(0, 0.5, (B, f, f)).astype(np.float32)
    heat[np.arange(B), rng.integers(0, f, B), 1] = 1.0
    batch = {"template": rng.normal(size=(B, t, t, 3)).astype(np.float32),
             "search": rng.normal(size=(B, s, s, 3)).astype(np.float32),
             "template_mask": np.ones((B, (t // 16) ** 2), np.float32),
             "search_anno": np.tile(np.array([[0.3, 0.35, 0.3, 0.25]], np.float32), (B, 1)),
             "heatmap": heat}
    # reference first (the sharded step donates its state argument)
    kw = loss_weights(cfg)
    # same XLA options as the sharded step: this compares sharding, not two CPU matmul libraries
    opts = xla_compiler_options()
    one = jax.jit(lambda p, bs, b, r: loss_and_grads(model, kw, p, bs, b, rngs=r), compiler_options=opts)
    outs = [one(state["params"], state["batch_stats"], {k: v[i * per:(i + 1) * per] for k, v in batch.items()},
                step_rngs(state["rng"], 0, i)) for i in range(n)]
    mean = lambda trees: jax.tree_util.tree_map(lambda *x: sum(x) / len(x), *trees)  # noqa: E731
    ref = jax.jit(lambda st, g, bs: apply_gradients(tx, st, g, bs), compiler_options=opts)(
        state, mean([o[0] for o in outs]), mean([o[2] for o in outs]))
    ref = jax.device_get(ref)
    ref_total = float(np.mean([float(o[1]["total"]) for o in outs]))

    init_params = jax.tree_util.tree_map(np.array, jax.device_get(variables["params"]))  # copies: state is donated
    step = make_train_step(model, tx, mesh, kw)
    new, metrics = step(replicate(state, mesh), global_batch(batch, mesh))
    new = jax.device_get(new)
    assert _max_abs_diff(new["params"], ref["params"]) <= 1e-6
    assert _max_abs_diff(new["batch_stats"], ref["batch_stats"]) <= 1e-6
    assert _max_abs_diff(new["params"], init_params) > 1e-5          # the step really changed the params
    assert float(metrics["total"]) == pytest.approx(ref_total, rel=1e-5)
    assert int(new["step"]) == 1


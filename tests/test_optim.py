"""Optimiser: AdamW update against torch's formula written in numpy, groups, StepLR, clipping."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from grm_jax.config import ConfigError, load_config
from grm_jax.specs import optimizer_spec
from grm_jax.train.optim import (OptimizerSpec, clip_by_global_norm_torch, group_labels, learning_rates,
                                 learning_rates_from_state, lr_schedule, make_optimizer, param_group)

LR, WD, MULT, CLIP = 4e-4, 1e-4, 0.1, 0.1


def _cfg(**extra):
    sets = [f"TRAIN.LR={LR}", f"TRAIN.WEIGHT_DECAY={WD}", f"TRAIN.BACKBONE_MULTIPLIER={MULT}",
            f"TRAIN.GRAD_CLIP_NORM={CLIP}", "TRAIN.BATCH_SIZE=4", "DATA.TRAIN.SAMPLE_PER_EPOCH=12",
            "TRAIN.LR_DROP_EPOCH=2", "TRAIN.EPOCH=4"]
    sets += [f"{k}={v}" for k, v in extra.items()]
    return load_config("tiny_test", sets)


def _spec(cfg, global_batch):
    return OptimizerSpec(**optimizer_spec(cfg, global_batch))


def _tree(rng):
    return {
        "backbone": {"blocks_1": {"attn": {"qkv": {"kernel": rng.normal(size=(3, 6)), "bias": rng.normal(size=6)},
                                           "divide_predict_0": {"kernel": rng.normal(size=(4, 2))}}},
                     "pos_embed_x": rng.normal(size=(1, 2, 3))},
        "box_head": {"conv1_ctr": {"bn": {"scale": rng.normal(size=3)}}},
    }


def _torch_adamw(params, grads_seq, lrs_seq, groups):
    """torch.optim.AdamW (amsgrad False) with clip_grad_norm_ before each step, numpy float64."""
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    p = {k: x.copy() for k, x in params.items()}
    for t, (grads, base_lr) in enumerate(zip(grads_seq, lrs_seq), start=1):
        norm = np.sqrt(sum(np.sum(g ** 2) for g in grads.values()))
        coef = min(1.0, CLIP / (norm + 1e-6))
        for k in p:
            g = grads[k] * coef
            lr = base_lr * (MULT if groups[k] == "backbone" else 1.0)
            p[k] = p[k] * (1 - lr * WD)
            m[k] = 0.9 * m[k] + 0.1 * g
            v[k] = 0.999 * v[k] + 0.001 * g * g
            step_size = lr / (1 - 0.9 ** t)
            denom = np.sqrt(v[k]) / np.sqrt(1 - 0.999 ** t) + 1e-8
            p[k] = p[k] - step_size * m[k] / denom
    return p


def _flat(tree):
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_param_groups_by_path():
    tree = _tree(np.random.default_rng(0))
    labels = _flat(group_labels(tree))
    assert labels["['backbone']['blocks_1']['attn']['qkv']['kernel']"] == "backbone"
    assert labels["['backbone']['pos_embed_x']"] == "backbone"
    assert labels["['backbone']['blocks_1']['attn']['divide_predict_0']['kernel']"] == "division"
    assert labels["['box_head']['conv1_ctr']['bn']['scale']"] == "head"
    assert param_group(("backbone", "blocks_3", "attn", "divide_global_transform", "bias")) == "division"


def test_adamw_matches_torch_formula_over_an_lr_drop():
    cfg = _cfg()
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), _tree(rng))
    tx = make_optimizer(_spec(cfg, 4), params)   # 3 steps/epoch, LR x0.1 from epoch 3 (step 6)
    state = tx.init(params)
    n_steps = 8
    grads_seq = [jax.tree_util.tree_map(lambda x: jnp.asarray(rng.normal(size=x.shape) * s, jnp.float32), params)
                 for s in np.linspace(0.01, 3.0, n_steps)]   # some under, some over the clip norm
    p = params
    for g in grads_seq:
        updates, state = tx.update(g, state, p)
        p = optax.apply_updates(p, updates)
    lrs = [LR] * 6 + [LR * 0.1] * 2
    flat0 = {k: v.astype(np.float64) for k, v in _flat(params).items()}
    groups = _flat(group_labels(params))
    ref = _torch_adamw(flat0, [{k: v.astype(np.float64) for k, v in _flat(g).items()} for g in grads_seq], lrs,
                       groups)
    ours = _flat(p)
    for k in ref:
        np.testing.assert_allclose(ours[k], ref[k], rtol=1e-6, atol=1e-7, err_msg=k)
        assert not np.allclose(ours[k], flat0[k])


def test_step_lr_is_applied_after_each_lr_drop_epoch():
    cfg = _cfg()
    spec = _spec(cfg, 4)
    sched = lr_schedule(spec)   # 12 samples / 4 = 3 steps per epoch, drop every 2 epochs
    got = [float(sched(s)) for s in range(13)]
    expect = [LR] * 6 + [LR * 0.1] * 6 + [LR * 0.01]
    np.testing.assert_allclose(got, expect, rtol=1e-6)
    lrs = learning_rates(spec, sched, 0)
    assert lrs == pytest.approx({"head": LR, "backbone": LR * MULT, "division": LR})


def test_official_epoch_boundaries():
    cfg = load_config("vitb_256_ep300")
    sched = lr_schedule(_spec(cfg, 320))     # 187 steps per epoch, x0.1 from epoch 241
    assert float(sched(187 * 240 - 1)) == pytest.approx(4e-4)
    assert float(sched(187 * 240)) == pytest.approx(4e-5)


def test_clip_scales_whole_tree_like_torch():
    clip = clip_by_global_norm_torch(CLIP)
    grads = {"box_head": {"w": jnp.array([3.0, 4.0, 0.0])}, "backbone": {"x": jnp.array([0.0])}}
    clipped, _ = clip.update(grads, clip.init(grads))
    np.testing.assert_allclose(np.asarray(clipped["box_head"]["w"]), np.array([3.0, 4.0, 0.0]) * CLIP / (5 + 1e-6),
                               rtol=1e-6)
    small = {"box_head": {"w": jnp.array([0.03, 0.04, 0.0])}}
    same, _ = clip.update(small, clip.init(small))
    np.testing.assert_array_equal(np.asarray(same["box_head"]["w"]), np.asarray(small["box_head"]["w"]))


def test_learning_rates_are_read_from_the_optimiser_state():
    cfg = _cfg()
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), _tree(np.random.default_rng(0)))
    spec = _spec(cfg, 4)
    schedule = lr_schedule(spec)
    tx = make_optimizer(spec, params, schedule)   # 3 steps/epoch, LR x0.1 from step 6
    state = tx.init(params)
    update = jax.jit(tx.update)
    seen = []
    for step in range(8):
        grads = jax.tree_util.tree_map(jnp.ones_like, params)
        _, state = update(grads, state, params)
        got = {g: float(v) for g, v in learning_rates_from_state(state).items()}
        assert got == pytest.approx(learning_rates(spec, schedule, step), rel=1e-6), step
        seen.append(got["backbone"])
    assert seen[5] == pytest.approx(LR * MULT, rel=1e-6) and seen[6] == pytest.approx(LR * MULT * 0.1, rel=1e-6)
    with pytest.raises(ValueError, match="multi_transform"):
        learning_rates_from_state((optax.EmptyState(),))


@pytest.mark.parametrize("override, global_batch, message", [
    ("TRAIN.OPTIMIZER=SGD", 4, "TRAIN.OPTIMIZER='SGD': only ADAMW is supported"),
    ("TRAIN.SCHEDULER.TYPE=cosine", 4, "TRAIN.SCHEDULER.TYPE='cosine': only 'step' is supported"),
    ("TRAIN.BATCH_SIZE=4", 16, "DATA.TRAIN.SAMPLE_PER_EPOCH=12 is smaller than the global batch 16"),
])
def test_the_boundary_refuses_an_optimiser_it_cannot_build(override, global_batch, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        optimizer_spec(_cfg(**dict([override.split("=")])), global_batch)


def test_the_spec_holds_the_recipe():
    spec = _spec(_cfg(), 4)
    assert spec == OptimizerSpec(learning_rate=LR, decay_rate=0.1, decay_every_steps=6, weight_decay=WD,
                                 group_multipliers={"head": 1.0, "backbone": MULT, "division": 1.0}, clip_norm=CLIP)

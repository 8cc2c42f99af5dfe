"""The data-parallel train step: jax.jit over a Mesh of all devices, batch sharded on 'data', state replicated.

DDP semantics of the official run, per device (shard_map over the 'data' axis):
  * forward/backward on the device's shard of the batch; BatchNorm normalises with that shard's statistics;
  * losses are computed per shard (the focal loss's positive count is the shard's), gradients are averaged
    over devices (pmean) before clipping and AdamW, so every device applies the same update;
  * the stored BatchNorm running statistics are the mean over devices of the per-device updated statistics.
    (Official DDP broadcasts rank 0's buffers before every forward, so it keeps rank 0's chain; the mean
    has the same expectation with less noise. With one device both are identical.)
Gumbel noise and drop-path masks come from fold_in(fold_in(base_key, step), device_index), so a run is a
pure function of (seed, step, device count) and resumes exactly.
A step whose loss or gradient norm is not finite leaves the state unchanged and reports `finite = False`.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ..geometry import IMAGENET_MEAN, IMAGENET_STD, normalize_image
from ..runtime import xla_compiler_options
from .losses import grm_losses

DATA_AXIS = "data"
BATCH_KEYS = ("template", "search", "template_mask", "search_anno", "heatmap", "template_lut", "search_lut")
OPTIONAL_BATCH_KEYS = ("template_mask", "template_lut", "search_lut")
# XLA:CPU compiles every threefry draw slowly (a model init draws once per parameter); the RngBitGenerator
# based implementation compiles much faster and is just as deterministic for a given key.
PRNG_IMPL = "rbg"


def make_mesh(devices=None) -> Mesh:
    devices = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devices.reshape(-1), (DATA_AXIS,))


def create_train_state(variables: dict, tx: optax.GradientTransformation, rng: jax.Array) -> dict:
    """The whole training state as a plain pytree (what the checkpoints hold); `rng` (a key of `make_key`) is the
    base key every step's random draws are folded from."""
    params = variables["params"]
    return {
        "params": params,
        "batch_stats": variables.get("batch_stats", {}),
        "opt_state": tx.init(params),
        "step": jnp.zeros((), jnp.int32),
        "rng": jax.random.key_data(rng),
    }


def make_key(seed: int):
    return jax.random.key(int(seed), impl=PRNG_IMPL)


def wrap_key(key_data):
    """The typed key of raw key data stored in the train state (orbax stores plain uint32 arrays)."""
    return jax.random.wrap_key_data(key_data, impl=PRNG_IMPL)


def device_images(x, lut=None, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Network input from a batch's images: float32 is taken as already normalised; uint8 crops (what the input
    pipeline ships, smaller than float32 ones) are looked up in their per-sample level tables `lut` (B, 256, 3)
    (`geometry.brightness_table`: brightness, clamp and Normalize, exact float32), or without tables
    normalised by `geometry.normalize_image` (the tracker's arithmetic)."""
    if x.dtype != jnp.uint8:
        return x.astype(jnp.float32)
    if lut is None:
        return normalize_image(x, mean, std, xp=jnp)
    channel = jnp.arange(x.shape[-1])
    return jax.vmap(lambda image, table: table[image.astype(jnp.int32), channel])(x, lut.astype(jnp.float32))


def loss_and_grads(model, loss_kwargs: dict, params, batch_stats, batch: dict, rngs: Optional[dict] = None,
                   gumbel_noise=None, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD):
    """One device's forward + losses + backward on its batch.

    Returns (grads, parts, new_batch_stats, interact_frac (L_div,) mean over the batch).
    """
    def loss_fn(p):
        out, new_state = model.apply(
            {"params": p, "batch_stats": batch_stats},
            device_images(batch["template"], batch.get("template_lut"), image_mean, image_std),
            device_images(batch["search"], batch.get("search_lut"), image_mean, image_std),
            batch.get("template_mask"), train=True, gumbel_noise=gumbel_noise, rngs=rngs or {},
            mutable=["batch_stats"])
        total, parts = grm_losses(out, batch["search_anno"], batch["heatmap"], **loss_kwargs)
        return total, (parts, new_state["batch_stats"], jnp.mean(out["interact_frac"], axis=0))

    (_, (parts, new_bs, frac)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return grads, parts, new_bs, frac


def step_rngs(base_key, step, device_index) -> dict:
    key = jax.random.fold_in(jax.random.fold_in(wrap_key(base_key), step), device_index)
    gumbel, dropout = jax.random.split(key)
    return {"gumbel": gumbel, "dropout": dropout}


def apply_gradients(tx, state: dict, grads, batch_stats) -> dict:
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "batch_stats": batch_stats,
            "opt_state": opt_state, "step": state["step"] + 1, "rng": state["rng"]}


def make_train_step(model, tx: optax.GradientTransformation, mesh: Mesh, loss_kwargs: dict,
                    image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD) -> Callable:
    """jit-compiled `train_step(state, batch) -> (state, metrics)`; the state argument is donated.

    batch: dict of global arrays with the BATCH_KEYS (leading axis = global batch, sharded over 'data').
    metrics: loss parts (total, giou, l1, focal, iou[, entropy]) averaged over devices, grad_norm (before
    clipping), interact_frac (L_div,), finite (bool).
    """
    def per_device(state, batch):
        rngs = step_rngs(state["rng"], state["step"], jax.lax.axis_index(DATA_AXIS))
        grads, parts, new_bs, frac = loss_and_grads(model, loss_kwargs, state["params"], state["batch_stats"],
                                                    batch, rngs, image_mean=image_mean, image_std=image_std)
        grads = jax.lax.pmean(grads, DATA_AXIS)
        parts = jax.lax.pmean(parts, DATA_AXIS)
        new_bs = jax.lax.pmean(new_bs, DATA_AXIS)
        frac = jax.lax.pmean(frac, DATA_AXIS)
        grad_norm = optax.global_norm(grads)
        new_state = apply_gradients(tx, state, grads, new_bs)
        finite = jnp.isfinite(parts["total"]) & jnp.isfinite(grad_norm)
        new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old), new_state, state)
        metrics = dict(parts, grad_norm=grad_norm, interact_frac=frac, finite=finite)
        return new_state, metrics

    sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(DATA_AXIS)), out_specs=(P(), P()),
                            check_vma=False)
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P(DATA_AXIS))
    return jax.jit(sharded, in_shardings=(replicated, batch_sharding), out_shardings=(replicated, replicated),
                   donate_argnums=(0,), compiler_options=xla_compiler_options(mesh.devices.flat[0].platform))


def select_batch(batch: dict) -> dict:
    missing = [k for k in BATCH_KEYS if k not in batch and k not in OPTIONAL_BATCH_KEYS]
    if missing:
        raise KeyError(f"training batch lacks {missing} (has {sorted(batch)})")
    return {k: batch[k] for k in BATCH_KEYS if k in batch}


def global_batch(batch: dict, mesh: Mesh) -> dict:
    """Host-local numpy batch -> global jax arrays sharded over 'data' (every process passes its own part)."""
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    n = mesh.devices.size
    out = {}
    for k, v in select_batch(batch).items():
        v = np.asarray(v)
        if jax.process_count() == 1 and v.shape[0] % n:
            raise ValueError(f"batch '{k}' has {v.shape[0]} samples, not a multiple of the {n} devices")
        out[k] = jax.make_array_from_process_local_data(sharding, v)
    return out


def replicate(tree: Any, mesh: Mesh) -> Any:
    sharding = NamedSharding(mesh, P())
    return jax.tree_util.tree_map(lambda x: jax.device_put(x, sharding), tree)

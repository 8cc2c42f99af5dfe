"""Optimiser of the official recipe (`lib/train/base_functions.py: get_optimizer_scheduler`) with optax.

AdamW (betas 0.9/0.999, eps 1e-8) with decoupled weight decay on every parameter, three learning-rate groups
chosen by parameter path, a step decay after every LR_DROP_EPOCH epochs, and global-norm clipping with torch's
formula. The update is

    g <- g * min(1, max_norm / (||g|| + 1e-6))
    p <- p - lr_group(step) * (adam(g) + wd * p)

which is torch's `p *= 1 - lr*wd; p -= lr * m_hat / (sqrt(v_hat) + eps)`. In optax terms: the clipping, then
`multi_transform` over the groups of one `inject_hyperparams(adamw)` each, whose learning rate is the
`exponential_decay(..., staircase=True)` schedule times the group's multiplier; the learning rates of the last
update are in the optimiser state (`learning_rates_from_state`).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from ..config import ConfigError

ADAM_B1 = 0.9
ADAM_B2 = 0.999
ADAM_EPS = 1e-8
CLIP_EPS = 1e-6
GROUPS = ("head", "backbone", "division")


def param_group(path: tuple[str, ...]) -> str:
    """Group of a parameter from its path in the param tree (see docs/INTERFACES.md)."""
    names = [str(getattr(p, "key", p)) for p in path]
    if not names or names[0] != "backbone":
        return "head"
    if any("divide" in n for n in names):
        return "division"
    return "backbone"


def group_labels(params) -> Any:
    return jax.tree_util.tree_map_with_path(lambda path, _: param_group(path), params)


def steps_per_epoch(cfg, global_batch: int | None = None) -> int:
    batch = int(global_batch if global_batch is not None else cfg.TRAIN.BATCH_SIZE)
    n = int(cfg.DATA.TRAIN.SAMPLE_PER_EPOCH) // batch
    if n < 1:
        raise ConfigError(f"DATA.TRAIN.SAMPLE_PER_EPOCH={cfg.DATA.TRAIN.SAMPLE_PER_EPOCH} is smaller than the "
                          f"global batch {batch}: an epoch would have no step")
    return n


def lr_schedule(cfg, global_batch: int | None = None) -> Callable[[jax.Array], jax.Array]:
    """Base learning rate at optimiser step `count` (0-based): torch StepLR stepped after each epoch, i.e.
    LR * DECAY_RATE ** (count // (steps per epoch * LR_DROP_EPOCH))."""
    kind = str(cfg.TRAIN.SCHEDULER.TYPE).lower()
    if kind != "step":
        raise ConfigError(f"TRAIN.SCHEDULER.TYPE={cfg.TRAIN.SCHEDULER.TYPE!r}: only 'step' is supported")
    gamma = float(cfg.TRAIN.SCHEDULER.DECAY_RATE)
    if not gamma > 0:
        raise ConfigError(f"TRAIN.SCHEDULER.DECAY_RATE={gamma} must be > 0")
    drop = int(cfg.TRAIN.LR_DROP_EPOCH)
    if drop < 1:
        raise ConfigError(f"TRAIN.LR_DROP_EPOCH={drop} must be >= 1")
    return optax.exponential_decay(float(cfg.TRAIN.LR), transition_steps=steps_per_epoch(cfg, global_batch) * drop,
                                   decay_rate=gamma, staircase=True)


def group_multipliers(cfg) -> dict[str, float]:
    return {"head": 1.0, "backbone": float(cfg.TRAIN.BACKBONE_MULTIPLIER), "division": 1.0}


def clip_by_global_norm_torch(max_norm: float) -> optax.GradientTransformation:
    """torch.nn.utils.clip_grad_norm_: scale by min(1, max_norm / (norm + 1e-6)) (always multiplied)."""
    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        norm = optax.global_norm(updates)
        factor = jnp.minimum(1.0, max_norm / (norm + CLIP_EPS))
        return jax.tree_util.tree_map(lambda g: g * factor.astype(g.dtype), updates), state
    return optax.GradientTransformation(init, update)


def _group_adamw(schedule, multiplier: float, weight_decay: float) -> optax.GradientTransformation:
    # The constants stay Python numbers (static_args): as traced hyperparameters `1 - b1` and friends would be
    # computed in float32 and the update would differ from torch's in the last bits.
    return optax.inject_hyperparams(optax.adamw, static_args=("b1", "b2", "eps", "weight_decay"),
                                    hyperparam_dtype=jnp.float32)(
        learning_rate=lambda count: schedule(count) * multiplier, b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS,
        weight_decay=weight_decay)


def make_optimizer(cfg, params, global_batch: int | None = None) -> optax.GradientTransformation:
    """The official AdamW + groups + StepLR + clipping for `params` (a param tree, arrays or shapes)."""
    if str(cfg.TRAIN.OPTIMIZER).upper() != "ADAMW":
        raise ConfigError(f"TRAIN.OPTIMIZER={cfg.TRAIN.OPTIMIZER!r}: only ADAMW is supported")
    schedule = lr_schedule(cfg, global_batch)
    weight_decay = float(cfg.TRAIN.WEIGHT_DECAY)
    groups = optax.multi_transform(
        {g: _group_adamw(schedule, m, weight_decay) for g, m in group_multipliers(cfg).items()}, group_labels(params))
    clip = cfg.TRAIN.GRAD_CLIP_NORM
    if clip is not None and float(clip) > 0:
        return optax.chain(clip_by_global_norm_torch(float(clip)), groups)
    return optax.chain(groups)


def learning_rates_from_state(opt_state) -> dict[str, jax.Array]:
    """Per-group learning rate of the last update, read from the state of `make_optimizer`'s optimiser (on the
    device; before the first update: the rate the first update will use)."""
    for part in opt_state:
        if isinstance(part, optax.MultiTransformState):
            return {g: getattr(s, "inner_state", s).hyperparams["learning_rate"] for g, s in part.inner_states.items()}
    raise ValueError("not the state of make_optimizer's optimiser (no multi_transform state)")


def learning_rates(cfg, step, global_batch: int | None = None) -> dict[str, float]:
    """Per-group learning rate used by the update at 0-based step `step`, computed from the config."""
    base = float(lr_schedule(cfg, global_batch)(step))
    return {g: base * m for g, m in group_multipliers(cfg).items()}


def drop_path_rates(cfg) -> list[float]:
    """Per-block stochastic-depth rates: linspace(0, DROP_PATH_RATE, depth) in float32 as torch (the model
    applies them; listed here for logging)."""
    import numpy as np

    from ..config import backbone_dims
    depth = backbone_dims(cfg)[1]
    return np.linspace(0.0, float(cfg.TRAIN.DROP_PATH_RATE), depth, dtype=np.float32).tolist()

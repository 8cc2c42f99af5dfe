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

from dataclasses import dataclass, field
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax

ADAM_B1 = 0.9
ADAM_B2 = 0.999
ADAM_EPS = 1e-8
CLIP_EPS = 1e-6
GROUPS = ("head", "backbone", "division")


@dataclass(frozen=True)
class OptimizerSpec:
    """The optimiser's settings as plain numbers (grm_jax.specs.optimizer_spec reads them from a config).

    learning_rate: base rate (TRAIN.LR); decay_rate, decay_every_steps: StepLR's gamma and its period in optimiser
    steps (TRAIN.SCHEDULER.DECAY_RATE, steps per epoch x TRAIN.LR_DROP_EPOCH); weight_decay: AdamW's decoupled
    decay; group_multipliers: the learning-rate factor of each of GROUPS; clip_norm: global-norm clipping
    threshold, None or 0 for none.
    """
    learning_rate: float
    decay_rate: float
    decay_every_steps: int
    weight_decay: float
    group_multipliers: dict = field(default_factory=lambda: {g: 1.0 for g in GROUPS})
    clip_norm: Optional[float] = None


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


def lr_schedule(spec: OptimizerSpec) -> optax.Schedule:
    """Base learning rate at optimiser step `count` (0-based): torch StepLR stepped after each epoch, i.e.
    learning_rate * decay_rate ** (count // decay_every_steps)."""
    return optax.exponential_decay(spec.learning_rate, transition_steps=spec.decay_every_steps,
                                   decay_rate=spec.decay_rate, staircase=True)


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


def make_optimizer(spec: OptimizerSpec, params,
                   schedule: Optional[optax.Schedule] = None) -> optax.GradientTransformation:
    """The official AdamW + groups + StepLR + clipping for `params` (a param tree, arrays or shapes). `schedule`:
    the base learning rate, `lr_schedule(spec)` unless given (the trainer passes the one it logs)."""
    schedule = lr_schedule(spec) if schedule is None else schedule
    groups = optax.multi_transform(
        {g: _group_adamw(schedule, m, spec.weight_decay) for g, m in spec.group_multipliers.items()},
        group_labels(params))
    if spec.clip_norm is not None and spec.clip_norm > 0:
        return optax.chain(clip_by_global_norm_torch(spec.clip_norm), groups)
    return optax.chain(groups)


def learning_rates_from_state(opt_state) -> dict[str, jax.Array]:
    """Per-group learning rate of the last update, read from the state of `make_optimizer`'s optimiser (on the
    device; before the first update: the rate the first update will use)."""
    for part in opt_state:
        if isinstance(part, optax.MultiTransformState):
            return {g: getattr(s, "inner_state", s).hyperparams["learning_rate"] for g, s in part.inner_states.items()}
    raise ValueError("not the state of make_optimizer's optimiser (no multi_transform state)")


def learning_rates(spec: OptimizerSpec, schedule: optax.Schedule, step) -> dict[str, float]:
    """Per-group learning rate used by the update at 0-based step `step` of the optimiser made with `schedule`."""
    base = float(schedule(step))
    return {g: base * m for g, m in spec.group_multipliers.items()}

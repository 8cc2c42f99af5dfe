"""Generalized relation modeling: the adaptive token division at the heart of GRM (CVPR 2023, sec. 3).

In every dividing block, each search token is classified from the block's normalised input:
  class 0 ("search-only", group S): it may only exchange information with other search tokens;
  class 1 ("interacting", group A): it may exchange information with every token, template included.
Template tokens form group T. The classification is
  1. `target_representation`: pool the template tokens into one vector (allmax / allavg / roimax / roiavg);
  2. `division_logprob`: an MLP on [search token ; target vector] gives log-probabilities of the two classes;
  3. `select_tokens`: hard Gumbel-softmax with a straight-through gradient in training; argmax, a probability
     threshold, or a ratio at inference;
  4. `policy_pair_mask`: the decisions become a policy P (B, N, 3) and the (query, key) mask M is built from
     the seven products of the policy columns, so the straight-through gradient reaches the predictor;
  5. `masked_softmax`: the attention softmax restricted by M, stabilised exactly as the official code does.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from .choices import OTHER_LAYERS, ROI_TGT_TYPES, TGT_TYPES
from .layers import gelu

DIVIDE_HIDDEN = (384, 192)      # fixed in the official predictor
MASKED_SOFTMAX_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class DivisionSpec:
    """Where and how the backbone divides tokens; handed to every module (grm_jax.specs.division_spec makes it
    from MODEL.DIVISION.* and MODEL.TGT_TYPE).

    layers: block indices that carry a division predictor (official: every block but the first);
    tgt_type: template pooling of `target_representation`; early: the official predictor on the concatenated
    [search ; target] (False: the paper's late variant); ratio: at inference, the share of search tokens forced
    to interact; other_layers: how blocks without a predictor attend ('full' jointly, 'separate' template and
    search apart).
    """
    layers: tuple[int, ...] = ()
    tgt_type: str = "allmax"
    early: bool = True
    ratio: float = 0.0
    other_layers: str = "full"

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(sorted(set(int(i) for i in self.layers))))
        if self.tgt_type not in TGT_TYPES:
            raise ValueError(f"unknown tgt_type {self.tgt_type!r}, expected one of {TGT_TYPES}")
        if self.other_layers not in OTHER_LAYERS:
            raise ValueError(f"unknown other_layers {self.other_layers!r}, expected one of {OTHER_LAYERS}")


def target_representation(template_tokens: jax.Array, tgt_type: str,
                          template_mask: Optional[jax.Array] = None) -> jax.Array:
    """(B, Nz, C) normalised template tokens -> (B, 1, C).

    The ROI variants zero the tokens outside the target box first; the zeros still take part in the pooling
    (the mean divides by Nz, the max is >= 0 whenever a token is masked out), as in the official code.
    """
    if tgt_type in ROI_TGT_TYPES:
        if template_mask is None:
            raise ValueError(f"tgt_type {tgt_type!r} needs template_mask (B, Nz)")
        template_tokens = template_tokens * template_mask[..., None].astype(template_tokens.dtype)
    if tgt_type in ("allmax", "roimax"):
        return jnp.max(template_tokens, axis=1, keepdims=True)
    if tgt_type in ("allavg", "roiavg"):
        return jnp.mean(template_tokens, axis=1, keepdims=True)
    raise ValueError(f"unknown tgt_type {tgt_type!r}, expected one of {TGT_TYPES}")


class TargetConditionedDense(nn.Module):
    """`divide_predict_0`: Dense over [search token ; target vector] without building the concatenation.

    [s ; t] @ W + b = s @ W[:C] + (t @ W[C:] + b): the target half is computed once per image instead of once per
    search token, half of this layer's multiply-adds. Parameters are those of
    nn.Dense on the concatenation (kernel (2C, F), bias (F,)), so checkpoints and conversion are unchanged.
    """
    features: int
    dtype: object = jnp.float32
    kernel_init: object = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, search_tokens, tgt_rep):
        c = search_tokens.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (2 * c, self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        search_tokens, tgt_rep, kernel, bias = nn.dtypes.promote_dtype(search_tokens, tgt_rep, kernel, bias,
                                                                       dtype=self.dtype)
        per_image = tgt_rep @ kernel[c:] + bias                      # (B, 1, F)
        return search_tokens @ kernel[:c] + per_image


def division_logprob(search_tokens: jax.Array, tgt_rep: jax.Array, *, early: bool = True,
                     dtype=jnp.float32, kernel_init=None) -> jax.Array:
    """Log-probabilities (B, Nx, 2) of [search-only, interacting] per search token.

    Must be called inside a compact module (the attention of a dividing block): the layers are created
    there, so their parameters sit under `attn/divide_predict_{0,2,4}` like the official
    `attn.divide_predict.{0,2,4}`. `early=False` is the paper's alternative: separate Linear(C->384)
    transforms of the search token and of the target vector, summed, replace `divide_predict.0`.
    """
    dense = dict(dtype=dtype, param_dtype=jnp.float32)
    if kernel_init is not None:
        dense["kernel_init"] = kernel_init
    if early:
        h = TargetConditionedDense(features=DIVIDE_HIDDEN[0], dtype=dtype, name="divide_predict_0",
                                   **({"kernel_init": kernel_init} if kernel_init is not None else {}))(
            search_tokens, tgt_rep)
    else:
        h = (nn.Dense(features=DIVIDE_HIDDEN[0], name="divide_local_transform", **dense)(search_tokens)
             + nn.Dense(features=DIVIDE_HIDDEN[0], name="divide_global_transform", **dense)(tgt_rep))
    h = gelu(h)
    h = gelu(nn.Dense(features=DIVIDE_HIDDEN[1], name="divide_predict_2", **dense)(h))
    logits = nn.Dense(features=2, name="divide_predict_4", **dense)(h)
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


def gumbel_straight_through(logprob: jax.Array, gumbel_noise: jax.Array) -> jax.Array:
    """Hard Gumbel-softmax (tau 1): forward value one-hot, gradient that of the soft sample."""
    y_soft = jax.nn.softmax(logprob + gumbel_noise, axis=-1)
    y_hard = jax.nn.one_hot(jnp.argmax(y_soft, axis=-1), 2, dtype=y_soft.dtype)
    return y_hard - jax.lax.stop_gradient(y_soft) + y_soft


def sample_gumbel(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """Gumbel(0, 1) samples as -log(Exponential(1)), the way torch draws them."""
    return gumbel_from_exponential(jax.random.exponential(key, shape, dtype))


def gumbel_from_exponential(exponential: jax.Array) -> jax.Array:
    # jax.random.exponential returns exactly 0 when its uniform draw is 0, which a long training run does meet:
    # -log(0) = inf would turn the soft sample, and then every parameter, into NaN.
    # torch's exponential_ never returns 0, so flooring at the smallest normal float keeps its distribution.
    return -jnp.log(jnp.maximum(exponential, jnp.finfo(exponential.dtype).tiny))


def select_tokens(logprob: jax.Array, *, threshold=0.0, ratio: float = 0.0) -> jax.Array:
    """Inference decisions (B, Nx, 2) one-hot float: [1, 0] search-only, [0, 1] interacting.

    threshold 0 -> argmax of the log-probabilities (ties -> class 0);
    threshold t > 0 -> interacting iff p(search-only) < t. `threshold` may be a traced scalar.
    ratio r > 0 -> afterwards, the int(Nx * r) tokens with the largest interacting log-prob are forced in.
    """
    by_argmax = jnp.argmax(logprob, axis=-1)
    p_search_only = jax.nn.softmax(logprob, axis=-1)[..., 0]
    threshold = jnp.asarray(threshold, jnp.float32)
    by_threshold = (p_search_only < threshold).astype(by_argmax.dtype)
    cls = jnp.where(threshold != 0, by_threshold, by_argmax)
    num_forced = int(logprob.shape[1] * ratio)
    if num_forced > 0:
        _, top = jax.lax.top_k(logprob[..., 1], num_forced)
        forced = jnp.zeros(cls.shape, bool).at[jnp.arange(cls.shape[0])[:, None], top].set(True)
        cls = jnp.where(forced, 1, cls)
    return jax.nn.one_hot(cls, 2, dtype=jnp.float32)


def policy_from_decisions(decisions: jax.Array, num_template: int) -> jax.Array:
    """(B, Nx, 2) decisions -> policy (B, Nz + Nx, 3): columns T, S (search-only), A (interacting)."""
    b = decisions.shape[0]
    template_rows = jnp.broadcast_to(jnp.array([1.0, 0.0, 0.0], decisions.dtype), (b, num_template, 3))
    search_rows = jnp.concatenate([jnp.zeros(decisions.shape[:2] + (1,), decisions.dtype), decisions], -1)
    return jnp.concatenate([template_rows, search_rows], axis=1)


def policy_pair_mask(policy: jax.Array) -> jax.Array:
    """Policy (B, N, 3) -> allowed (query, key) weights (B, 1, N, N).

    Built from the seven products in this order and in float (not as a boolean, nor as the algebraically
    equal 1 - T_i S_j - S_i T_j): during training the policy carries the straight-through gradient and the
    form decides what reaches the predictor. The diagonal is then forced to 1.
    """
    t, s, a = policy[..., 0], policy[..., 1], policy[..., 2]

    def outer(u, v):
        return u[:, :, None] * v[:, None, :]

    same_group = outer(t, t) + outer(s, s)
    with_interacting = outer(t, a) + outer(s, a) + outer(a, a) + outer(a, t) + outer(a, s)
    mask = same_group + with_interacting
    eye = jnp.eye(policy.shape[1], dtype=mask.dtype)
    mask = mask + (1.0 - mask) * eye
    return mask[:, None]


def masked_softmax(logits: jax.Array, pair_mask: jax.Array, eps: float = MASKED_SOFTMAX_EPS) -> jax.Array:
    """Softmax over keys restricted by pair_mask, stabilised as the official code does.

    The max is taken over all keys (masked ones too); exp and the masked sum run in float32; masked pairs keep
    the tiny weight (eps/N)/(sum + eps), so every row still sums to one.
    """
    n = logits.shape[-1]
    shifted = logits - jnp.max(logits, axis=-1, keepdims=True)
    e = jnp.exp(shifted.astype(jnp.float32)) * pair_mask.astype(jnp.float32)
    attn = (e + eps / n) / (jnp.sum(e, axis=-1, keepdims=True) + eps)
    return attn.astype(logits.dtype)

"""ViT backbone of GRM (timm-style pre-norm blocks), NHWC, with per-block token division.

Tokens are ordered [template (Nz) ; search (Nx)], row-major within each image, as in the official code.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange

from . import division as div
from .initializers import torch_default_bias, torch_default_kernel, trunc_normal_02
from .layers import Mlp, dense

# What the backward pass keeps of each backbone block in training (config TRAIN.REMAT), everything else being
# recomputed from the block's input during the backward (`jax.checkpoint` per block):
#   "none"   keep every intermediate (no recomputation);
#   "dots"   keep the outputs of the token-wise matrix products (qkv, proj, fc1, fc2, division predictor) and
#            recompute the attention itself (the (B, heads, N, N) logits, masked softmax and policy mask, the
#            largest tensors of a block) and the elementwise ops: little extra compute for most of the memory;
#   "blocks" keep only each block's input and recompute the whole block (a second forward of the backbone).
# Recomputation repeats the same operations on the same inputs (random keys included), so results are those
# of "none".
REMAT_POLICIES = {
    "none": None,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "blocks": jax.checkpoint_policies.nothing_saveable,
}

LN_EPS = 1e-6
MLP_RATIO = 4


def layer_norm(*, name: str, dtype) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LN_EPS, use_fast_variance=False, dtype=dtype, param_dtype=jnp.float32, name=name)


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Per-block stochastic-depth rates linspace(0, rate, depth), in float32 as torch.linspace computes them
    (`lib/models/grm/vit.py: VisionTransformer`, `dpr`)."""
    return np.linspace(0.0, rate, depth, dtype=np.float32).tolist()


def drop_path(x, rate, key):
    """Stochastic depth: drop the whole residual branch per sample, rescaling the kept ones.

    `key` None = inference (identity). `rate` may be traced (a scanned run of blocks has one rate per block).
    """
    if key is None or (isinstance(rate, (int, float)) and rate == 0.0):
        return x
    keep = 1.0 - jnp.asarray(rate, jnp.float32)
    mask = jax.random.bernoulli(key, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep.astype(x.dtype), jnp.zeros_like(x))


def _attend(q, k, v, scale):
    """Plain softmax attention; q (B, Nq, H, D), k/v (B, Nk, H, D) -> (B, Nq, H, D)."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
    attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", attn, v)


class Attention(nn.Module):
    """Multi-head self-attention; in a dividing block the softmax is restricted by GRM's token division.

    Non-dividing blocks attend jointly (`division.other_layers='full'`, official) or within template and search
    separately (`'separate'`, a two-stream backbone).
    """
    num_heads: int
    num_search: int
    divide: bool = False
    division: div.DivisionSpec = div.DivisionSpec()
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, u, template_mask=None, *, train: bool = False, threshold=0.0, gumbel_noise=None,
                 gumbel_key=None):
        c = u.shape[-1]
        scale = (c // self.num_heads) ** -0.5
        nz = u.shape[1] - self.num_search
        q, k, v = rearrange(dense(features=3 * c, name="qkv", dtype=self.dtype)(u), "b n (qkv h d) -> qkv b n h d",
                            qkv=3, h=self.num_heads)
        spec = self.division

        logprob = decisions = None
        if self.divide:
            tgt_rep = div.target_representation(u[:, :nz], tgt_type=spec.tgt_type, template_mask=template_mask)
            logprob = div.division_logprob(u[:, nz:], tgt_rep, early=spec.early, dtype=self.dtype,
                                           kernel_init=trunc_normal_02)
            if train:
                if gumbel_noise is None:
                    if gumbel_key is None:
                        raise ValueError("a dividing block in training needs gumbel_noise or a 'gumbel' rng")
                    gumbel_noise = div.sample_gumbel(gumbel_key, logprob.shape)
                decisions = div.gumbel_straight_through(logprob, gumbel_noise.astype(logprob.dtype))
            else:
                decisions = div.select_tokens(logprob, threshold=threshold, ratio=spec.ratio)
            pair_mask = div.policy_pair_mask(div.policy_from_decisions(decisions, num_template=nz))
            logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
            attn = div.masked_softmax(logits, pair_mask).astype(v.dtype)
            out = jnp.einsum("bhqk,bkhd->bqhd", attn, v)
        elif spec.other_layers == "separate":
            out = jnp.concatenate([_attend(q[:, :nz], k[:, :nz], v[:, :nz], scale),
                                   _attend(q[:, nz:], k[:, nz:], v[:, nz:], scale)], axis=1)
        else:
            out = _attend(q, k, v, scale)
        out = dense(features=c, name="proj", dtype=self.dtype)(rearrange(out, "b n h d -> b n (h d)"))
        return out, logprob, decisions


class Block(nn.Module):
    """Pre-norm ViT block. The drop-path rate and the random keys are call arguments, not attributes, so that
    a run of blocks can be one `lax.scan` (see `VisionTransformer.scan_blocks`)."""
    num_heads: int
    num_search: int
    divide: bool = False
    division: div.DivisionSpec = div.DivisionSpec()
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, template_mask=None, *, train=False, threshold=0.0, gumbel_noise=None,
                 drop_rate=0.0, dropout_key=None, gumbel_key=None):
        attn_out, logprob, decisions = Attention(
            num_heads=self.num_heads, num_search=self.num_search, divide=self.divide, division=self.division,
            dtype=self.dtype, name="attn")(
            layer_norm(name="norm1", dtype=self.dtype)(x), template_mask, train=train, threshold=threshold,
            gumbel_noise=gumbel_noise, gumbel_key=gumbel_key)
        attn_key = mlp_key = None
        if train and dropout_key is not None:
            attn_key, mlp_key = jax.random.split(dropout_key)
        x = x + drop_path(attn_out, drop_rate, attn_key)
        mlp_out = Mlp(hidden=x.shape[-1] * MLP_RATIO, dtype=self.dtype, name="mlp")(
            layer_norm(name="norm2", dtype=self.dtype)(x))
        x = x + drop_path(mlp_out, drop_rate, mlp_key)
        return x, logprob, decisions


class VisionTransformer(nn.Module):
    """Patch embedding + separate template/search position embeddings + blocks + final LayerNorm."""
    embed_dim: int
    depth: int
    num_heads: int
    template_size: int
    search_size: int
    patch_size: int = 16
    division: div.DivisionSpec = div.DivisionSpec()
    drop_path_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32
    # In training, run each stretch of consecutive blocks of the same kind (dividing or not) as one lax.scan
    # over their stacked parameters (stored per block all the same, `blocks_{i}` as in the official layout).
    # Unrolled, XLA fuses the residual stream's gradient through every later block into each weight-gradient
    # transpose; scanned, the gradient runs and compiles markedly faster on CPU (docs/PERFORMANCE.md).
    # Inference stays unrolled: the forward alone gains nothing from the scan and
    # would pay for stacking the weights on every call.
    scan_blocks: bool = False
    remat: str = "none"             # see REMAT_POLICIES (training only)

    @property
    def num_template(self) -> int:
        return (self.template_size // self.patch_size) ** 2

    @property
    def num_search(self) -> int:
        return (self.search_size // self.patch_size) ** 2

    @nn.compact
    def __call__(self, template, search, template_mask=None, *, train=False, threshold=0.0,
                 gumbel_noise=None):
        c, p = self.embed_dim, self.patch_size
        patch_embed = nn.Conv(features=c, kernel_size=(p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                              param_dtype=jnp.float32, kernel_init=torch_default_kernel,
                              bias_init=torch_default_bias(fan_in=3 * p * p), name="patch_embed")
        pos_z = self.param("pos_embed_z", trunc_normal_02, (1, self.num_template, c))
        pos_x = self.param("pos_embed_x", trunc_normal_02, (1, self.num_search, c))
        z = _tokens(patch_embed(template.astype(self.dtype)))
        x = _tokens(patch_embed(search.astype(self.dtype)))
        if z.shape[1] != self.num_template or x.shape[1] != self.num_search:
            raise ValueError(f"inputs give {z.shape[1]} template / {x.shape[1]} search tokens; the model was "
                             f"built for {self.template_size}px / {self.search_size}px "
                             f"({self.num_template} / {self.num_search} tokens)")
        tokens = jnp.concatenate([z + pos_z.astype(self.dtype), x + pos_x.astype(self.dtype)], axis=1)

        dividing = set(self.division.layers)
        rates = drop_path_rates(self.drop_path_rate, self.depth)
        dropout_keys = gumbel_keys = None
        if train and self.drop_path_rate > 0.0:
            dropout_keys = jax.random.split(self.make_rng("dropout"), self.depth)
        if train and gumbel_noise is None and dividing:
            gumbel_keys = jax.random.split(self.make_rng("gumbel"), self.depth)
        noise = [None] * self.depth
        if gumbel_noise is not None:
            for k, i in enumerate(sorted(dividing)):
                noise[i] = gumbel_noise[k]

        def block(i, **name_or_parent):
            return Block(num_heads=self.num_heads, num_search=self.num_search, divide=i in dividing,
                         division=self.division, dtype=self.dtype, **name_or_parent)

        def per_layer(i):
            return dict(drop_rate=rates[i], gumbel_noise=noise[i],
                        dropout_key=None if dropout_keys is None else dropout_keys[i],
                        gumbel_key=None if gumbel_keys is None else gumbel_keys[i])

        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat {self.remat!r}: expected one of {sorted(REMAT_POLICIES)}")
        keep_outputs = self.is_mutable_collection("intermediates")
        # the functional path (block.apply on this module's parameters) serves the scan and recomputation;
        # initialisation and inference call the bound blocks
        functional = train and not self.is_initializing() and (self.scan_blocks or self.remat != "none")
        runs = (_runs_of_same_kind(self.depth, dividing=dividing) if self.scan_blocks and functional
                else [[i] for i in range(self.depth)])
        logprobs, decisions = [], []
        for run in runs:
            if functional:
                tokens, (outs, lps, decs) = _apply_blocks(
                    block(run[0], parent=None), params=[self.variables["params"][f"blocks_{i}"] for i in run],
                    per_layer=[per_layer(i) for i in run], tokens=tokens, template_mask=template_mask, train=train,
                    threshold=threshold, keep_outputs=keep_outputs, policy=REMAT_POLICIES[self.remat],
                    remat=self.remat != "none")
            else:
                i = run[0]
                tokens, lp, dec = block(i, name=f"blocks_{i}")(tokens, template_mask, train=train,
                                                               threshold=threshold, **per_layer(i))
                outs, lps, decs = [tokens], [lp], [dec]
            if keep_outputs:
                for out in outs:
                    self.sow("intermediates", "block_outputs", out)
            if run[0] in dividing:
                logprobs.extend(lps)
                decisions.extend(decs)
        tokens = layer_norm(name="norm", dtype=self.dtype)(tokens)
        b = tokens.shape[0]
        if logprobs:
            logprob = jnp.stack(logprobs)
            decision = jnp.stack(decisions)
        else:
            logprob = decision = jnp.zeros((0, b, self.num_search, 2), jnp.float32)
        return tokens, logprob, decision


def _runs_of_same_kind(depth: int, dividing) -> list[list[int]]:
    runs = []
    for i in range(depth):
        if runs and (i in dividing) == (runs[-1][-1] in dividing):
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _apply_blocks(block: Block, *, params: list, per_layer: list[dict], tokens, template_mask, train, threshold,
                  keep_outputs: bool, policy, remat: bool):
    """Apply `block` (unbound) once per entry of `params`, as one lax.scan when there are several (their
    parameters stacked), each application under `jax.checkpoint(policy=policy)` when `remat`; returns the final
    tokens and the per-block (outputs or None, logprobs, decisions) as lists."""
    # a lone block keeps its python-number arguments (a drop-path rate of 0.0 then skips the random draw)
    fixed = ({k: v for k, v in per_layer[0].items() if v is None or isinstance(v, (int, float))}
             if len(params) == 1 else {})

    def body(carry, x):
        args = {k: v for k, v in x.items() if k != "params"}
        out, lp, dec = block.apply({"params": x["params"]}, carry, template_mask, train=train,
                                   threshold=threshold, **args, **fixed)
        return out, (out if keep_outputs else None, lp, dec)

    if remat:
        # inside a scan the loop already keeps XLA from merging the recomputation with the forward
        body = jax.checkpoint(body, policy=policy, prevent_cse=len(params) == 1)
    if len(params) == 1:
        arrays = {k: v for k, v in per_layer[0].items() if k not in fixed}
        tokens, (out, lp, dec) = body(tokens, dict(arrays, params=params[0]))
        return tokens, ([out], [lp], [dec])

    def stack(*leaves):
        return None if leaves[0] is None else jnp.stack([jnp.asarray(v) for v in leaves])
    xs = {"params": jax.tree_util.tree_map(stack, *params)}
    for name in per_layer[0]:
        xs[name] = stack(*[layer[name] for layer in per_layer])
    tokens, (outs, lps, decs) = jax.lax.scan(body, tokens, xs)
    n = len(params)
    split = (lambda a: [None] * n if a is None else [a[i] for i in range(n)])
    return tokens, (split(outs), split(lps), split(decs))


def _tokens(feature_map):
    return rearrange(feature_map, "b h w c -> b (h w) c")


"""ViT backbone of GRM (timm-style pre-norm blocks), NHWC, with per-block token division.

Tokens are ordered [template (Nz) ; search (Nx)], row-major within each image, as in the official code.
"""
from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from . import division as div

LN_EPS = 1e-6
MLP_RATIO = 4
# timm's trunc_normal_(std=.02) truncates at +-2 in absolute units, i.e. at 100 std: a plain N(0, 0.02).
# (flax's truncated_normal truncates at +-2 std, a narrower distribution.)
trunc_normal_02 = nn.initializers.normal(stddev=0.02)
# PyTorch's default Conv2d init (kaiming_uniform with a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_default_kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def layer_norm(name: str, dtype) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LN_EPS, use_fast_variance=False, dtype=dtype, param_dtype=jnp.float32, name=name)


def dense(features: int, name: str, dtype) -> nn.Dense:
    return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, kernel_init=trunc_normal_02,
                    bias_init=nn.initializers.zeros, name=name)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample, rescaling the kept ones (rng 'dropout')."""
    rate: float

    @nn.compact
    def __call__(self, x, train: bool):
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


class Mlp(nn.Module):
    hidden: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = div.gelu(dense(self.hidden, "fc1", self.dtype)(x))
        return dense(x.shape[-1], "fc2", self.dtype)(h)


def _attend(q, k, v, scale):
    """Plain softmax attention; q (B, Nq, H, D), k/v (B, Nk, H, D) -> (B, Nq, H, D)."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
    attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", attn, v)


class Attention(nn.Module):
    """Multi-head self-attention; in a dividing block the softmax is restricted by GRM's token division.

    Non-dividing blocks attend jointly (`other_layers='full'`, official) or within template and search
    separately (`'separate'`, a two-stream backbone).
    """
    num_heads: int
    num_search: int
    divide: bool = False
    tgt_type: str = "allmax"
    early: bool = True
    ratio: float = 0.0
    other_layers: str = "full"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, u, template_mask=None, *, train: bool = False, threshold=0.0, gumbel_noise=None):
        b, n, c = u.shape
        h = self.num_heads
        d = c // h
        scale = d ** -0.5
        nz = n - self.num_search
        qkv = dense(3 * c, "qkv", self.dtype)(u).reshape(b, n, 3, h, d)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]

        logprob = decisions = None
        if self.divide:
            tgt_rep = div.target_representation(u[:, :nz], self.tgt_type, template_mask)
            logprob = div.division_logprob(u[:, nz:], tgt_rep, early=self.early, dtype=self.dtype,
                                           kernel_init=trunc_normal_02)
            if train:
                if gumbel_noise is None:
                    gumbel_noise = div.sample_gumbel(self.make_rng("gumbel"), logprob.shape)
                decisions = div.gumbel_straight_through(logprob, gumbel_noise.astype(logprob.dtype))
            else:
                decisions = div.select_tokens(logprob, threshold=threshold, ratio=self.ratio)
            pair_mask = div.policy_pair_mask(div.policy_from_decisions(decisions, nz))
            logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
            attn = div.masked_softmax(logits, pair_mask).astype(v.dtype)
            out = jnp.einsum("bhqk,bkhd->bqhd", attn, v)
        elif self.other_layers == "separate":
            out = jnp.concatenate([_attend(q[:, :nz], k[:, :nz], v[:, :nz], scale),
                                   _attend(q[:, nz:], k[:, nz:], v[:, nz:], scale)], axis=1)
        else:
            out = _attend(q, k, v, scale)
        out = dense(c, "proj", self.dtype)(out.reshape(b, n, c))
        return out, logprob, decisions


class Block(nn.Module):
    num_heads: int
    num_search: int
    drop_path: float = 0.0
    divide: bool = False
    tgt_type: str = "allmax"
    early: bool = True
    ratio: float = 0.0
    other_layers: str = "full"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, template_mask=None, *, train=False, threshold=0.0, gumbel_noise=None):
        attn_out, logprob, decisions = Attention(
            self.num_heads, self.num_search, self.divide, self.tgt_type, self.early, self.ratio,
            self.other_layers, self.dtype, name="attn")(
            layer_norm("norm1", self.dtype)(x), template_mask, train=train, threshold=threshold,
            gumbel_noise=gumbel_noise)
        x = x + DropPath(self.drop_path)(attn_out, train)
        mlp_out = Mlp(x.shape[-1] * MLP_RATIO, self.dtype, name="mlp")(layer_norm("norm2", self.dtype)(x))
        x = x + DropPath(self.drop_path)(mlp_out, train)
        return x, logprob, decisions


class VisionTransformer(nn.Module):
    """Patch embedding + separate template/search position embeddings + blocks + final LayerNorm."""
    embed_dim: int
    depth: int
    num_heads: int
    template_size: int
    search_size: int
    patch_size: int = 16
    division_layers: Sequence[int] = ()
    tgt_type: str = "allmax"
    early: bool = True
    ratio: float = 0.0
    other_layers: str = "full"
    drop_path_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32

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
        patch_embed = nn.Conv(c, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                              param_dtype=jnp.float32, kernel_init=torch_default_kernel,
                              bias_init=_torch_default_conv_bias(3 * p * p), name="patch_embed")
        pos_z = self.param("pos_embed_z", trunc_normal_02, (1, self.num_template, c))
        pos_x = self.param("pos_embed_x", trunc_normal_02, (1, self.num_search, c))
        z = _tokens(patch_embed(template.astype(self.dtype)))
        x = _tokens(patch_embed(search.astype(self.dtype)))
        if z.shape[1] != self.num_template or x.shape[1] != self.num_search:
            raise ValueError(f"inputs give {z.shape[1]} template / {x.shape[1]} search tokens; the model was "
                             f"built for {self.template_size}px / {self.search_size}px "
                             f"({self.num_template} / {self.num_search} tokens)")
        tokens = jnp.concatenate([z + pos_z.astype(self.dtype), x + pos_x.astype(self.dtype)], axis=1)

        dividing = set(self.division_layers)
        # torch.linspace runs in float32; keep its rounding of the per-block rates.
        rates = np.linspace(0.0, self.drop_path_rate, self.depth, dtype=np.float32).tolist()
        logprobs, decisions = [], []
        for i in range(self.depth):
            noise_i = None
            if gumbel_noise is not None and i in dividing:
                noise_i = gumbel_noise[len(logprobs)]
            tokens, lp, dec = Block(self.num_heads, self.num_search, rates[i], i in dividing, self.tgt_type,
                                    self.early, self.ratio, self.other_layers, self.dtype,
                                    name=f"blocks_{i}")(tokens, template_mask, train=train,
                                                        threshold=threshold, gumbel_noise=noise_i)
            self.sow("intermediates", "block_outputs", tokens)
            if lp is not None:
                logprobs.append(lp)
                decisions.append(dec)
        tokens = layer_norm("norm", self.dtype)(tokens)
        b = tokens.shape[0]
        if logprobs:
            logprob = jnp.stack(logprobs)
            decision = jnp.stack(decisions)
        else:
            logprob = decision = jnp.zeros((0, b, self.num_search, 2), jnp.float32)
        return tokens, logprob, decision


def _tokens(feature_map):
    b, hh, ww, c = feature_map.shape
    return feature_map.reshape(b, hh * ww, c)


def _torch_default_conv_bias(fan_in: int):
    bound = 1.0 / np.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init

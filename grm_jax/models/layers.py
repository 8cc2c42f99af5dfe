"""Layers shared by the backbone blocks and the division predictor: timm's exact GELU and MLP
(`timm/layers/mlp.py: Mlp`), Dense layers initialised as the official ViT's."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from .initializers import trunc_normal_02


def gelu(x):
    """Exact (erf) GELU in torch's form x * 0.5 * (1 + erf(x / sqrt 2)) (used by every MLP of the model);
    jax.nn.gelu(approximate=False) goes through erfc, which is slower on CPU."""
    return x * 0.5 * (1.0 + jax.lax.erf(x * jnp.asarray(0.7071067811865476, x.dtype)))


def dense(*, features: int, name: str, dtype) -> nn.Dense:
    return nn.Dense(features=features, dtype=dtype, param_dtype=jnp.float32, kernel_init=trunc_normal_02,
                    bias_init=nn.initializers.zeros, name=name)


class Mlp(nn.Module):
    hidden: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = gelu(dense(features=self.hidden, name="fc1", dtype=self.dtype)(x))
        return dense(features=x.shape[-1], name="fc2", dtype=self.dtype)(h)

"""Parameter initialisers that draw from the distributions of the official (PyTorch / timm) initialisation."""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

# timm's trunc_normal_(std=.02) truncates at +-2 in absolute units, i.e. at 100 std: a plain N(0, 0.02).
# (flax's truncated_normal truncates at +-2 std, a narrower distribution.)
trunc_normal_02 = nn.initializers.normal(stddev=0.02)
# PyTorch's default Conv2d init (kaiming_uniform with a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_default_kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias(fan_in: int):
    """PyTorch's default Conv2d / Linear bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def xavier_uniform_conv():
    # torch xavier_uniform_ on (O, I, kh, kw): fan_in = I*kh*kw, fan_out = O*kh*kw, same as flax's HWIO view.
    return nn.initializers.xavier_uniform(in_axis=(0, 1, 2), out_axis=3)

"""Center head (official `CenterPredictor`), box decoding and the tracker's Hann window, NHWC."""
from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .initializers import torch_default_bias, xavier_uniform_conv

BN_EPS = 1e-5
BN_MOMENTUM = 0.1          # PyTorch convention: running = (1 - m) * running + m * batch
SCORE_CLAMP = 1e-4


class BatchNorm(nn.Module):
    """BatchNorm2d with PyTorch semantics over NHWC.

    Training normalises with the biased batch variance but updates the running variance with the unbiased
    one, as torch does (flax's BatchNorm uses the biased one for both). Statistics run in float32.
    """
    eps: float = BN_EPS
    momentum: float = BN_MOMENTUM

    @nn.compact
    def __call__(self, x, train: bool):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        running_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        running_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        xf = x.astype(jnp.float32)
        if train:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(xf, axis=axes)
            var = jnp.mean(jnp.square(xf - mean), axis=axes)
            if not self.is_initializing():
                count = math.prod(x.shape[:-1])
                unbiased = var * (count / max(count - 1, 1))
                running_mean.value = (1 - self.momentum) * running_mean.value + self.momentum * mean
                running_var.value = (1 - self.momentum) * running_var.value + self.momentum * unbiased
        else:
            mean, var = running_mean.value, running_var.value
        y = (xf - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias
        return y.astype(x.dtype)


class ConvBNReLU(nn.Module):
    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(features=self.features, kernel_size=(3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                    param_dtype=jnp.float32, kernel_init=xavier_uniform_conv(),
                    bias_init=torch_default_bias(fan_in=9 * x.shape[-1]), name="conv")(x)
        return nn.relu(BatchNorm(name="bn")(x, train=train))


class CenterPredictor(nn.Module):
    """Three conv branches (centre score, offset, size): C -> ch -> ch/2 -> ch/4 -> ch/8 -> {1, 2, 2}."""
    channels: int = 256
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, feat, train: bool = False):
        widths = [self.channels // 2 ** i for i in range(4)]
        outputs = {}
        for branch, out in (("ctr", 1), ("offset", 2), ("size", 2)):
            x = feat
            for i, w in enumerate(widths):
                x = ConvBNReLU(features=w, dtype=self.dtype, name=f"conv{i + 1}_{branch}")(x, train=train)
            x = nn.Conv(features=out, kernel_size=(1, 1), dtype=self.dtype, param_dtype=jnp.float32,
                        kernel_init=xavier_uniform_conv(), bias_init=torch_default_bias(fan_in=x.shape[-1]),
                        name=f"conv5_{branch}")(x)
            outputs[branch] = x.astype(jnp.float32)
        score = jnp.clip(jax.nn.sigmoid(outputs["ctr"]), SCORE_CLAMP, 1 - SCORE_CLAMP)
        size = jnp.clip(jax.nn.sigmoid(outputs["size"]), SCORE_CLAMP, 1 - SCORE_CLAMP)
        return score, size, outputs["offset"]


def true_divide(numerator, divisor: int | float):
    """`numerator / divisor` correctly rounded, as torch divides, for a divisor known at trace time.

    XLA's algebraic simplifier turns a division by a constant or by a broadcast scalar into a multiplication by
    the rounded reciprocal, one ulp off for some inputs whenever the divisor is not a power of two (a 10x10
    feature map at search size 160). A full-shape divisor behind an optimization barrier is opaque to it, so a
    true division runs at every size."""
    numerator = jnp.asarray(numerator)
    return numerator / jax.lax.optimization_barrier(jnp.full(numerator.shape, divisor, numerator.dtype))


def cal_bbox(score_map, size_map, offset_map, return_score: bool = False):
    """Decode (B, F, F, 1) score, (B, F, F, 2) size (w, h), (B, F, F, 2) offset (x, y) -> (B, 4) cx, cy, w, h.

    The peak is the first maximum in row-major order; the centre is the peak cell's top-left corner plus the
    offset (no +0.5), normalised by F, like the official `lib/models/layers/head.py: CenterPredictor.cal_bbox`.
    """
    b, f = score_map.shape[0], score_map.shape[1]
    flat = score_map.reshape(b, f * f)
    idx = jnp.argmax(flat, axis=1)
    size = size_map.reshape(b, f * f, 2)[jnp.arange(b), idx]
    offset = offset_map.reshape(b, f * f, 2)[jnp.arange(b), idx]
    iy = (idx // f).astype(jnp.float32)
    ix = (idx % f).astype(jnp.float32)
    centre = jnp.stack([ix + offset[:, 0], iy + offset[:, 1]], axis=1)
    box = jnp.concatenate([true_divide(centre, f), size], axis=1)
    if return_score:
        return box, flat[jnp.arange(b), idx][:, None]
    return box


@functools.lru_cache(maxsize=None)
def hann1d(n: int) -> np.ndarray:
    """(n,) float32 0.5 * (1 - cos(2 pi k / (n + 1))), k = 1..n: a float32 step times a float32 ramp, then a
    float32 cos, as the official torch code computes it.

    Always evaluated eagerly on the CPU backend, also under a trace and when the default device is a GPU: the
    float32 cos of XLA:GPU differs from XLA:CPU's in the last bit for some k, and the window is a constant, so
    one host evaluation keeps tracking identical on every platform."""
    with jax.ensure_compile_time_eval(), jax.default_device(jax.local_devices(backend="cpu")[0]):
        k = jnp.arange(1, n + 1, dtype=jnp.float32)
        w = 0.5 * (1.0 - jnp.cos(np.float32(2 * math.pi / (n + 1)) * k))
        w = np.array(w, np.float32)
    w.setflags(write=False)  # cached and shared
    return w


def hann2d(f: int) -> np.ndarray:
    """(F, F) float32 cosine window: the outer product of hann1d(F) with itself (a host constant)."""
    w = hann1d(f)
    return w[:, None] * w[None, :]

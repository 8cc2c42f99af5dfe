"""Model initialisation: random (:func:`random_variables`), then optionally the backbone from a MAE / DeiT /
distilled-DeiT ViT checkpoint ('model' dict, :func:`init_from_pretrained`).

Mirrors the official order: the ViT encoder weights are copied, ``pos_embed_z`` / ``pos_embed_x`` are the
torch-exact bicubic resize of the checkpoint's 14x14 ``pos_embed`` grid (cls / dist rows dropped), and the
division predictors and the box head keep the fresh model initialisation.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from .errors import CheckpointError, ConversionError, PretrainedFileError
from .layout import LINEAR, CONV, COPY, plain_tree, to_flax
from .torch_io import extract_state_dict, read_torch_checkpoint

BICUBIC_A = -0.75  # PyTorch's cubic convolution coefficient (jax.image.resize uses -0.5 and antialiases)


def _cubic_near(x: np.ndarray) -> np.ndarray:   # |x| <= 1
    a = BICUBIC_A
    return ((a + 2) * x - (a + 3)) * x * x + 1


def _cubic_far(x: np.ndarray) -> np.ndarray:    # 1 < |x| < 2
    a = BICUBIC_A
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a


def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) weights of torch ``interpolate(mode='bicubic', align_corners=False)`` along one axis.

    No antialiasing; the four taps are clamped to the border (edge replicate), as in PyTorch.
    """
    scale = in_size / out_size
    src = scale * (np.arange(out_size, dtype=np.float64) + 0.5) - 0.5   # not clamped at 0 for cubic
    base = np.floor(src)
    t = src - base
    weights = np.stack([_cubic_far(t + 1), _cubic_near(t), _cubic_near(1 - t), _cubic_far(2 - t)], axis=1)
    taps = base[:, None].astype(np.int64) + np.arange(-1, 3)[None, :]
    taps = np.clip(taps, 0, in_size - 1)
    mat = np.zeros((out_size, in_size), dtype=np.float64)
    for k in range(4):
        np.add.at(mat, (np.arange(out_size), taps[:, k]), weights[:, k])
    return mat


def resize_pos_embed(pos_embed: np.ndarray, num_prefix_tokens: int, out_grid: tuple[int, int]) -> np.ndarray:
    """(1, prefix + H*W, C) position table -> (1, out_h*out_w, C) for a new token grid (row-major)."""
    pe = np.asarray(pos_embed, dtype=np.float32)
    if pe.ndim != 3 or pe.shape[0] != 1:
        raise CheckpointError(f"pos_embed must be (1, N, C), got {list(pe.shape)}")
    grid_tokens = pe.shape[1] - num_prefix_tokens
    side = math.isqrt(grid_tokens)
    if side * side != grid_tokens:
        raise CheckpointError(f"pos_embed has {pe.shape[1]} rows; after dropping {num_prefix_tokens} prefix "
                              f"row(s) {grid_tokens} is not a square grid")
    grid = pe[0, num_prefix_tokens:].reshape(side, side, -1).astype(np.float64)
    wh = bicubic_matrix(side, out_grid[0])
    ww = bicubic_matrix(side, out_grid[1])
    out = np.einsum("ah,hwc,bw->abc", wh, grid, ww)
    return out.reshape(1, out_grid[0] * out_grid[1], -1).astype(np.float32)


# ViT encoder tensors of a MAE / DeiT 'model' dict -> our backbone path (blocks filled in per index).
_BLOCK_PARTS = (
    ("norm1.weight", ("norm1", "scale"), COPY), ("norm1.bias", ("norm1", "bias"), COPY),
    ("attn.qkv.weight", ("attn", "qkv", "kernel"), LINEAR), ("attn.qkv.bias", ("attn", "qkv", "bias"), COPY),
    ("attn.proj.weight", ("attn", "proj", "kernel"), LINEAR), ("attn.proj.bias", ("attn", "proj", "bias"), COPY),
    ("norm2.weight", ("norm2", "scale"), COPY), ("norm2.bias", ("norm2", "bias"), COPY),
    ("mlp.fc1.weight", ("mlp", "fc1", "kernel"), LINEAR), ("mlp.fc1.bias", ("mlp", "fc1", "bias"), COPY),
    ("mlp.fc2.weight", ("mlp", "fc2", "kernel"), LINEAR), ("mlp.fc2.bias", ("mlp", "fc2", "bias"), COPY),
)
# Classifier / distillation / MAE-decoder tensors that a tracker backbone ignores (official: strict=False).
_IGNORED = re.compile(r"^(head|head_dist|dist_token|fc_norm|pre_logits|decoder_.*|mask_token)(\.|$)")


class _Transform:  # minimal stand-in for layout.Entry (only .transform is read by to_flax)
    def __init__(self, transform):
        self.transform = transform


def pretrained_layout(depth: int) -> list[tuple[str, tuple[str, ...], str]]:
    """(key, backbone-relative Flax path, transform) for every encoder tensor a pretrained ViT provides."""
    rows = [("patch_embed.proj.weight", ("patch_embed", "kernel"), CONV),
            ("patch_embed.proj.bias", ("patch_embed", "bias"), COPY)]
    for i in range(depth):
        rows += [(f"blocks.{i}.{k}", (f"blocks_{i}",) + p, t) for k, p, t in _BLOCK_PARTS]
    rows += [("norm.weight", ("norm", "scale"), COPY), ("norm.bias", ("norm", "bias"), COPY)]
    return rows


def read_pretrained_state_dict(path_or_state_dict, source: str | None = None) -> tuple[dict, str]:
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        source = str(path_or_state_dict)
        ckpt = read_torch_checkpoint(path_or_state_dict)
        return extract_state_dict(ckpt, source=source, keys=("model", "state_dict", "net")), source
    sd = dict(path_or_state_dict)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd, source or "pretrained state_dict"


def pretrained_backbone_params(state_dict: Mapping[str, Any], backbone_params: Mapping, *,
                               source: str = "pretrained state_dict") -> tuple[dict, dict]:
    """Backbone params with the pretrained encoder copied in; -> (new backbone params, report).

    ``backbone_params`` is the fresh backbone subtree (its shapes define what must match). The report lists
    ``ignored`` keys (classifier heads, dist_token, ...), ``kept_init`` (division predictors),
    ``patch_start_index`` and ``extras`` (cls_token / pos_embed under their GRM state_dict names).
    """
    sd = {k: np.asarray(v) for k, v in state_dict.items()}
    if any(k.startswith("backbone.") for k in sd):
        raise CheckpointError(f"{source}: keys start with 'backbone.': this is a trained GRM state_dict ('net'); "
                              "convert it with official_to_flax / `convert_checkpoint.py official->flax`")
    bb = traverse_util.flatten_dict(plain_tree(backbone_params), keep_empty_nodes=True)   # a copy, by path
    depth = len({path[0] for path in bb if re.fullmatch(r"blocks_\d+", path[0])})
    problems: list[str] = []
    used = set()
    for key, path, transform in pretrained_layout(depth):
        target = bb.get(path)
        if key not in sd:
            problems.append(f"missing {key}")
            continue
        used.add(key)
        value = to_flax(_Transform(transform), sd[key].astype(np.float32))
        if target is None or tuple(value.shape) != tuple(np.shape(target)):
            want = None if target is None else list(np.shape(target))
            problems.append(f"mis-shaped {key}: gives Flax shape {list(value.shape)}, model expects {want}")
            continue
        bb[path] = value

    if "pos_embed" not in sd:
        problems.append("missing pos_embed")
        patch_start_index = None
    else:
        used.add("pos_embed")
        patch_start_index = 2 if "dist_token" in sd or pos_embed_prefix_rows(sd["pos_embed"]) == 2 else 1
        c_model = np.shape(bb[("pos_embed_x",)])[-1]
        if np.shape(sd["pos_embed"])[-1] != c_model:
            problems.append(f"mis-shaped pos_embed: width {np.shape(sd['pos_embed'])[-1]}, model has {c_model}")
        else:
            for name in ("pos_embed_z", "pos_embed_x"):
                n = np.shape(bb[(name,)])[1]
                side = math.isqrt(n)
                bb[(name,)] = resize_pos_embed(sd["pos_embed"], patch_start_index, (side, side))
    # cls_token / pos_embed are not model params; they travel as extras so an export is complete.
    extras = {f"backbone.{k}": sd[k] for k in ("cls_token", "pos_embed") if k in sd}
    used.update(k for k in ("cls_token",) if k in sd)
    unexpected = [k for k in sd if k not in used and not _IGNORED.match(k)]
    # An encoder block the model does not have is a depth mismatch, not a harmless extra.
    problems += [f"unexpected {k} (shape {list(sd[k].shape)})" for k in unexpected]
    if problems:
        raise ConversionError(source, problems,
                              hint=f"model backbone: depth {depth}, width {np.shape(bb[('pos_embed_x',)])[-1]}")
    report = {
        "source": source,
        "extras": extras,
        "patch_start_index": patch_start_index,
        "ignored": sorted(k for k in sd if k not in used),
        "kept_init": sorted({f"{path[0]}/attn/{path[2]}" for path in bb
                             if len(path) > 2 and path[1] == "attn" and path[2].startswith("divide")}),
    }
    return traverse_util.unflatten_dict(bb), report


def init_from_pretrained(path_or_state_dict, variables: Mapping, *, with_extras: bool = False):
    """``variables`` (a fresh GRM init, e.g. :func:`random_variables`) with the backbone taken from a MAE / DeiT
    checkpoint.

    Returns ``{'params', 'batch_stats'}`` as numpy arrays (and the extras + report when ``with_extras``); the
    division predictors and the head keep their fresh init.
    """
    sd, source = read_pretrained_state_dict(path_or_state_dict)
    variables = jax.tree_util.tree_map(np.asarray, plain_tree(variables))
    variables = traverse_util.unflatten_dict(traverse_util.flatten_dict(variables, keep_empty_nodes=True))
    bb, report = pretrained_backbone_params(sd, variables["params"]["backbone"], source=source)
    variables["params"]["backbone"] = bb
    if with_extras:
        extras = dict(report.pop("extras"))
        return variables, extras, report
    return variables


def random_variables(model, template_size: int, search_size: int, rng) -> dict:
    """The model's random initialisation, ``model.init`` on zero images (jitted: the trainer's initial parameters
    are those of this compiled function): ``{'params', 'batch_stats'}`` as device arrays."""
    template = jnp.zeros((1, template_size, template_size, 3), jnp.float32)
    search = jnp.zeros((1, search_size, search_size, 3), jnp.float32)
    variables = jax.jit(lambda r: model.init(r, template, search))(rng)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def resolve_pretrained(path_str: str) -> Path:
    """MODEL.PRETRAIN_FILE as given, or under ./pretrained_models/ (the official layout), or under
    $GRM_JAX_PRETRAINED_DIR."""
    p = Path(path_str).expanduser()
    candidates = [p] if p.is_absolute() else [p, Path("pretrained_models") / p]
    if not p.is_absolute() and os.environ.get("GRM_JAX_PRETRAINED_DIR"):
        candidates.append(Path(os.environ["GRM_JAX_PRETRAINED_DIR"]) / p)
    for c in candidates:
        if c.is_file():
            return c
    raise PretrainedFileError(f"MODEL.PRETRAIN_FILE={path_str!r}: not found (looked at "
                              f"{[str(c) for c in candidates]}); set it to the MAE/DeiT checkpoint, or to \"\" to "
                              "start from a random init")


def pos_embed_prefix_rows(pos_embed) -> int:
    """Rows in front of the square grid of a (1, N, C) pos_embed: 1 (cls; MAE, DeiT) or 2 (cls + dist; distilled
    DeiT)."""
    n = np.shape(pos_embed)[1]
    for prefix in (1, 2, 0):
        if math.isqrt(n - prefix) ** 2 == n - prefix:
            return prefix
    return 1


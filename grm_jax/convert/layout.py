"""The one table that maps the official GRM state_dict onto our Flax variables, and back.

``official_layout(arch)`` lists every official tensor in state_dict order with its shape, dtype and where it
lives on our side (a Flax path in ``params`` / ``batch_stats``, or an ``extras`` entry for tensors the Flax
model does not own) and the layout transform. Both directions and every shape check are driven by it.
"""
from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np
from flax import traverse_util

from ..models.division import DIVIDE_HIDDEN
from ..models.choices import BACKBONE_DIMS
from ..models.vit import MLP_RATIO
from .errors import ConversionError

# Layout transforms between a PyTorch tensor and its Flax counterpart.
COPY = "copy"            # same array (biases, LayerNorm/BatchNorm vectors, position embeddings)
LINEAR = "linear"        # nn.Linear weight (out, in)      <-> Dense kernel (in, out)
CONV = "conv"            # nn.Conv2d weight (O, I, kh, kw) <-> Conv kernel (kh, kw, I, O)
EXTRA = "extra"          # kept next to the variables (cls_token, pos_embed, num_batches_tracked)

HEAD_BRANCHES = ("ctr", "offset", "size")
HEAD_OUT = {"ctr": 1, "offset": 2, "size": 2}
DIVIDE_LINEARS = (0, 2, 4)
# Heads of the standard ViT widths (timm's tiny, small and huge, and the backbones of models.choices.BACKBONE_DIMS): a
# state_dict does not show them.
STANDARD_NUM_HEADS = {192: 3, 384: 6, 1280: 16, **{width: heads for width, _, heads in BACKBONE_DIMS.values()}}
# Length of the ImageNet position embedding the official backbone keeps unused: 14 x 14 patches + cls token.
IMAGENET_POS_EMBED_LEN = 197
# Width of the box head's first convolution when neither the checkpoint nor the caller says (official
# MODEL.HEAD.NUM_CHANNELS default).
DEFAULT_HEAD_CHANNELS = 256
# Fields of ModelArchitecture that must equal the checkpoint's inferred architecture, in report order.
_CHECKED_FIELDS = ("template_size", "search_size", "head_channels", "patch_size", "embed_dim", "depth")


@dataclass(frozen=True)
class ModelArchitecture:
    """The architecture a model is built with, as plain values: what a checkpoint must match.

    A field left None is not checked. ``division_layers`` None means every block but the first (official
    default). ``settings`` maps a field to the setting it came from, with its value (e.g.
    ``{"search_size": "DATA.SEARCH.SIZE=256"}``): a disagreement with the checkpoint names it.
    """
    embed_dim: Optional[int] = None
    depth: Optional[int] = None
    num_heads: Optional[int] = None
    patch_size: Optional[int] = None
    template_size: Optional[int] = None
    search_size: Optional[int] = None
    head_channels: Optional[int] = None
    division_layers: Optional[tuple[int, ...]] = None
    settings: Mapping[str, str] = field(default_factory=dict, hash=False)

    def setting(self, name: str) -> str:
        return self.settings.get(name, f"{name}={getattr(self, name)}")


@dataclass(frozen=True)
class Entry:
    key: str                      # official state_dict key
    shape: tuple[int, ...]        # official (PyTorch) shape
    dtype: str                    # official dtype
    collection: str | None        # 'params' | 'batch_stats' | None (extras)
    path: tuple[str, ...]         # Flax path inside the collection (empty for extras)
    transform: str

    @property
    def flax_shape(self) -> tuple[int, ...]:
        if self.transform == LINEAR:
            return (self.shape[1], self.shape[0])
        if self.transform == CONV:
            o, i, kh, kw = self.shape
            return (kh, kw, i, o)
        return self.shape


# Transforms return numpy views (no copy): a ViT-L checkpoint is 1.3 GB, and shape-only checks can then
# run on zero-stride arrays. Whoever needs contiguous memory (torch.save, orbax) copies at that point.
def to_flax(entry: Entry, value: np.ndarray) -> np.ndarray:
    if entry.transform == LINEAR:
        return value.T
    if entry.transform == CONV:
        return value.transpose(2, 3, 1, 0)
    return value


def to_torch(entry: Entry, value: np.ndarray) -> np.ndarray:
    if entry.transform == LINEAR:
        return value.T
    if entry.transform == CONV:
        return value.transpose(3, 2, 0, 1)
    return value


def _grid_side(tokens: int, key: str) -> int:
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ConversionError(key, [f"{key}: {tokens} tokens is not a square grid"])
    return side


def infer_architecture(state_dict: Mapping[str, Any], num_heads: int | None = None,
                       prefix: str = "backbone.") -> dict:
    """Architecture of an official GRM state_dict from its tensor shapes alone.

    Returns embed_dim, depth, mlp_dim, patch_size, in_chans, division_layers (block indices with a
    predictor), divide_hidden, template_size / search_size (pixels) and their token counts,
    pos_embed_len, head_channels (width of conv1) and num_heads (given, or the standard one for the width,
    or None). Heads and tgt_type cannot be read from shapes; they come from the config.
    """
    shapes = {k: tuple(np.shape(v)) for k, v in state_dict.items()}
    need = [f"{prefix}patch_embed.proj.weight", f"{prefix}pos_embed_x", f"{prefix}pos_embed_z"]
    missing = [k for k in need if k not in shapes]
    if missing:
        raise ConversionError("state_dict", [f"missing {k}" for k in missing],
                              hint="not an official GRM state_dict (for MAE/DeiT 'model' dicts use "
                                   "init_from_pretrained)")
    embed_dim, in_chans, ph, pw = shapes[f"{prefix}patch_embed.proj.weight"]
    block_ids = sorted({int(m.group(1)) for k in shapes
                        if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k))})
    depth = (block_ids[-1] + 1) if block_ids else 0
    division = sorted({int(m.group(1)) for k in shapes
                       if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.attn\.divide_predict\.0\.weight$", k))})
    divide_hidden = DIVIDE_HIDDEN
    if division:
        b = division[0]
        second = shapes.get(f"{prefix}blocks.{b}.attn.divide_predict.2.weight")
        divide_hidden = (shapes[f"{prefix}blocks.{b}.attn.divide_predict.0.weight"][0],
                         second[0] if second else divide_hidden[1])
    mlp_key = f"{prefix}blocks.0.mlp.fc1.weight"
    mlp_dim = shapes[mlp_key][0] if mlp_key in shapes else MLP_RATIO * embed_dim
    nz = shapes[f"{prefix}pos_embed_z"][1]
    nx = shapes[f"{prefix}pos_embed_x"][1]
    # conv1 of any branch has head_channels outputs; conv2 has them as inputs (one missing tensor must not hide
    # the width, or the layout could not list every other problem)
    head_channels = next((shapes[f"box_head.conv{n}_{branch}.0.weight"][axis]
                          for n, axis in ((1, 0), (2, 1)) for branch in ("ctr", "offset", "size")
                          if f"box_head.conv{n}_{branch}.0.weight" in shapes), None)
    pos_key = f"{prefix}pos_embed"
    heads = num_heads if num_heads is not None else STANDARD_NUM_HEADS.get(embed_dim)
    return {
        "embed_dim": int(embed_dim),
        "depth": int(depth),
        "num_heads": heads,
        "mlp_dim": int(mlp_dim),
        "patch_size": int(ph),
        "in_chans": int(in_chans),
        "division_layers": division,
        "divide_hidden": [int(d) for d in divide_hidden],
        "num_template_tokens": int(nz),
        "num_search_tokens": int(nx),
        "template_size": _grid_side(nz, f"{prefix}pos_embed_z") * int(ph),
        "search_size": _grid_side(nx, f"{prefix}pos_embed_x") * int(ph),
        "pos_embed_len": int(shapes[pos_key][1]) if pos_key in shapes else IMAGENET_POS_EMBED_LEN,
        "head_channels": int(head_channels) if head_channels is not None else None,
    }


def official_layout(arch: Mapping[str, Any]) -> list[Entry]:
    """Every tensor of the official GRM state_dict for ``arch``, in the official registration order."""
    C = arch["embed_dim"]
    P = arch["patch_size"]
    cin = arch.get("in_chans", 3)
    mlp = arch.get("mlp_dim", MLP_RATIO * C)
    h1, h2 = arch.get("divide_hidden", DIVIDE_HIDDEN)
    division = set(arch["division_layers"])
    f32 = "float32"
    out: list[Entry] = []

    def add(key, shape, collection, path, transform, dtype=f32):
        out.append(Entry(key, tuple(int(s) for s in shape), dtype, collection, tuple(path), transform))

    bb = ("backbone",)
    add("backbone.cls_token", (1, 1, C), None, (), EXTRA)
    add("backbone.pos_embed", (1, arch.get("pos_embed_len", IMAGENET_POS_EMBED_LEN), C), None, (), EXTRA)
    add("backbone.pos_embed_x", (1, arch["num_search_tokens"], C), "params", bb + ("pos_embed_x",), COPY)
    add("backbone.pos_embed_z", (1, arch["num_template_tokens"], C), "params", bb + ("pos_embed_z",), COPY)
    add("backbone.patch_embed.proj.weight", (C, cin, P, P), "params", bb + ("patch_embed", "kernel"), CONV)
    add("backbone.patch_embed.proj.bias", (C,), "params", bb + ("patch_embed", "bias"), COPY)

    def linear(key, path, n_out, n_in):
        add(f"{key}.weight", (n_out, n_in), "params", path + ("kernel",), LINEAR)
        add(f"{key}.bias", (n_out,), "params", path + ("bias",), COPY)

    def layernorm(key, path, n):
        add(f"{key}.weight", (n,), "params", path + ("scale",), COPY)
        add(f"{key}.bias", (n,), "params", path + ("bias",), COPY)

    for i in range(arch["depth"]):
        k = f"backbone.blocks.{i}"
        p = bb + (f"blocks_{i}",)
        layernorm(f"{k}.norm1", p + ("norm1",), C)
        linear(f"{k}.attn.qkv", p + ("attn", "qkv"), 3 * C, C)
        linear(f"{k}.attn.proj", p + ("attn", "proj"), C, C)
        if i in division:
            for j, (n_out, n_in) in zip(DIVIDE_LINEARS, ((h1, 2 * C), (h2, h1), (2, h2))):
                linear(f"{k}.attn.divide_predict.{j}", p + ("attn", f"divide_predict_{j}"), n_out, n_in)
        layernorm(f"{k}.norm2", p + ("norm2",), C)
        linear(f"{k}.mlp.fc1", p + ("mlp", "fc1"), mlp, C)
        linear(f"{k}.mlp.fc2", p + ("mlp", "fc2"), C, mlp)
    layernorm("backbone.norm", bb + ("norm",), C)

    ch = arch["head_channels"]
    widths = [C, ch, ch // 2, ch // 4, ch // 8]
    for br in HEAD_BRANCHES:
        for n in range(1, 5):
            k = f"box_head.conv{n}_{br}"
            p = ("box_head", f"conv{n}_{br}")
            cin_, cout = widths[n - 1], widths[n]
            add(f"{k}.0.weight", (cout, cin_, 3, 3), "params", p + ("conv", "kernel"), CONV)
            add(f"{k}.0.bias", (cout,), "params", p + ("conv", "bias"), COPY)
            add(f"{k}.1.weight", (cout,), "params", p + ("bn", "scale"), COPY)
            add(f"{k}.1.bias", (cout,), "params", p + ("bn", "bias"), COPY)
            add(f"{k}.1.running_mean", (cout,), "batch_stats", p + ("bn", "mean"), COPY)
            add(f"{k}.1.running_var", (cout,), "batch_stats", p + ("bn", "var"), COPY)
            add(f"{k}.1.num_batches_tracked", (), None, (), EXTRA, dtype="int64")
        k = f"box_head.conv5_{br}"
        p = ("box_head", f"conv5_{br}")
        add(f"{k}.weight", (HEAD_OUT[br], widths[4], 1, 1), "params", p + ("kernel",), CONV)
        add(f"{k}.bias", (HEAD_OUT[br],), "params", p + ("bias",), COPY)
    return out


def official_to_flax(state_dict: Mapping[str, Any], expected: ModelArchitecture | None = None, *,
                     source: str = "state_dict", num_heads: int | None = None) -> tuple[dict, dict]:
    """Official GRM state_dict (numpy arrays) -> (Flax ``{'params', 'batch_stats'}``, ``extras``).

    ``expected`` is the architecture of the model the variables are for (``grm_jax.specs.conversion_architecture``
    builds it from a config); every field of it the checkpoint disagrees with is reported. ``extras`` maps
    official keys to the tensors the Flax model does not own (``backbone.cls_token``, ``backbone.pos_embed``,
    ``*.num_batches_tracked``) plus ``'__arch__'``: the inferred architecture. Any missing, unexpected or
    mis-shaped tensor raises one :class:`ConversionError` listing all of them.
    """
    if num_heads is None and expected is not None:
        num_heads = expected.num_heads
    try:
        arch = infer_architecture(state_dict, num_heads=num_heads)
    except ConversionError:
        if expected is None or not any(str(k).startswith("backbone.blocks.") for k in state_dict):
            raise
        # a GRM state_dict that lacks a tensor the shapes are read from: take the expected architecture, so the
        # report below lists every missing / mis-shaped tensor at once
        arch = _layout_arch(expected)
        if "backbone.pos_embed" in state_dict and np.ndim(state_dict["backbone.pos_embed"]) == 3:
            arch["pos_embed_len"] = int(np.shape(state_dict["backbone.pos_embed"])[1])
        arch_origin = "architecture from the config"
    else:
        arch_origin = "inferred architecture"
    if arch["head_channels"] is None:
        known = expected.head_channels if expected is not None else None
        arch["head_channels"] = int(known) if known is not None else DEFAULT_HEAD_CHANNELS
    layout = official_layout(arch)
    problems = []
    official_keys = {e.key for e in layout}
    for e in layout:
        if e.key not in state_dict:
            problems.append(f"missing {e.key} (expected shape {list(e.shape)})")
            continue
        got = tuple(np.shape(state_dict[e.key]))
        if got != e.shape:
            problems.append(f"mis-shaped {e.key}: got {list(got)}, expected {list(e.shape)}")
    for k in state_dict:
        if k not in official_keys:
            problems.append(f"unexpected {k} (shape {list(np.shape(state_dict[k]))})")
    if expected is not None:
        problems += _mismatches(arch, expected)
    if problems:
        raise ConversionError(source, problems, hint=f"{arch_origin}: {_arch_summary(arch)}")

    flat: dict = {}
    extras: dict = {}
    for e in layout:
        value = np.asarray(state_dict[e.key])
        if e.collection is None:
            extras[e.key] = value
            continue
        if value.dtype != np.float32:
            value = value.astype(np.float32)
        flat[(e.collection,) + e.path] = to_flax(e, value)
    variables: dict = {"params": {}, "batch_stats": {}}
    variables.update(traverse_util.unflatten_dict(flat))
    extras["__arch__"] = arch
    return variables, extras


def flax_to_official(variables: Mapping, extras: Mapping | None = None,
                     arch: Mapping | None = None) -> "OrderedDict[str, np.ndarray]":
    """Flax variables (+ extras) -> the official state_dict: every key, shape, dtype, in official order.

    ``cls_token`` / ``pos_embed`` come from ``extras`` when present, else zeros of the official shape;
    ``num_batches_tracked`` from extras, else int64 zeros. The architecture comes from ``arch``,
    ``extras['__arch__']`` or the variables' shapes.
    """
    extras = dict(extras or {})
    if arch is None:
        arch = extras.get("__arch__") or arch_from_variables(variables, extras)
    layout = official_layout(arch)
    flat = traverse_util.flatten_dict({"params": plain_tree(variables["params"]),
                                       "batch_stats": plain_tree(variables.get("batch_stats", {}))})
    used = set()
    problems = []
    out: "OrderedDict[str, np.ndarray]" = OrderedDict()
    for e in layout:
        if e.collection is None:
            value = extras.get(e.key)
            if value is None:
                value = np.zeros(e.shape, dtype=e.dtype)
            value = np.asarray(value)
        else:
            full = (e.collection,) + e.path
            if full not in flat:
                problems.append(f"missing {'/'.join(full)} (for {e.key}, Flax shape {list(e.flax_shape)})")
                continue
            used.add(full)
            value = np.asarray(flat[full])
            if tuple(value.shape) != e.flax_shape:
                problems.append(f"mis-shaped {'/'.join(full)}: got {list(value.shape)}, expected "
                                f"{list(e.flax_shape)} (for {e.key})")
                continue
            value = to_torch(e, value)
        if tuple(value.shape) != e.shape:
            problems.append(f"mis-shaped extra {e.key}: got {list(value.shape)}, expected {list(e.shape)}")
            continue
        out[e.key] = np.asarray(value, dtype=e.dtype)
    for full in flat:
        if full not in used:
            problems.append(f"unexpected {'/'.join(full)} (no official tensor maps to it)")
    if problems:
        raise ConversionError("flax variables", problems, hint=f"architecture: {_arch_summary(arch)}")
    return out


def arch_from_variables(variables: Mapping, extras: Mapping | None = None) -> dict:
    """Architecture from Flax variable shapes (the inverse view of :func:`infer_architecture`)."""
    params = plain_tree(variables["params"])
    bb = params["backbone"]
    kh, kw, cin, C = np.shape(bb["patch_embed"]["kernel"])
    blocks = sorted(int(k.split("_")[1]) for k in bb if re.fullmatch(r"blocks_\d+", k))
    division = [i for i in blocks if "divide_predict_0" in bb[f"blocks_{i}"]["attn"]]
    hidden = DIVIDE_HIDDEN
    if division:
        a = bb[f"blocks_{division[0]}"]["attn"]
        hidden = (np.shape(a["divide_predict_0"]["kernel"])[1], np.shape(a["divide_predict_2"]["kernel"])[1])
    nz = np.shape(bb["pos_embed_z"])[1]
    nx = np.shape(bb["pos_embed_x"])[1]
    pos_len = IMAGENET_POS_EMBED_LEN
    if extras and extras.get("backbone.pos_embed") is not None:
        pos_len = np.shape(extras["backbone.pos_embed"])[1]
    return {
        "embed_dim": int(C), "depth": len(blocks), "num_heads": STANDARD_NUM_HEADS.get(int(C)),
        "mlp_dim": int(np.shape(bb["blocks_0"]["mlp"]["fc1"]["kernel"])[1]) if blocks else MLP_RATIO * int(C),
        "patch_size": int(kh), "in_chans": int(cin), "division_layers": division,
        "divide_hidden": [int(h) for h in hidden],
        "num_template_tokens": int(nz), "num_search_tokens": int(nx),
        "template_size": _grid_side(nz, "pos_embed_z") * int(kh),
        "search_size": _grid_side(nx, "pos_embed_x") * int(kh),
        "pos_embed_len": int(pos_len),
        "head_channels": int(np.shape(params["box_head"]["conv1_ctr"]["conv"]["kernel"])[3]),
    }


def plain_tree(tree):
    """FrozenDict / flax state -> nested plain dicts (values untouched)."""
    if hasattr(tree, "unfreeze"):
        tree = tree.unfreeze()
    if isinstance(tree, Mapping):
        return {k: plain_tree(v) for k, v in tree.items()}
    return tree


def _layout_arch(expected: ModelArchitecture) -> dict:
    """The architecture `official_layout` needs, from the expected one (what the model is built with)."""
    embed_dim, patch = int(expected.embed_dim), int(expected.patch_size)
    depth = int(expected.depth)
    layers = expected.division_layers
    return {"embed_dim": embed_dim, "depth": depth, "num_heads": expected.num_heads,
            "mlp_dim": MLP_RATIO * embed_dim, "patch_size": patch, "in_chans": 3,
            "division_layers": sorted(set(layers)) if layers is not None else list(range(1, depth)),
            "divide_hidden": list(DIVIDE_HIDDEN),
            "num_template_tokens": (int(expected.template_size) // patch) ** 2,
            "num_search_tokens": (int(expected.search_size) // patch) ** 2,
            "template_size": int(expected.template_size), "search_size": int(expected.search_size),
            "pos_embed_len": IMAGENET_POS_EMBED_LEN, "head_channels": int(expected.head_channels)}


def _mismatches(arch: Mapping, expected: ModelArchitecture) -> list[str]:
    """Disagreements between the checkpoint's shapes and the architecture the model is built with."""
    problems = []
    for name in _CHECKED_FIELDS:
        want, got = getattr(expected, name), arch[name]
        if want is not None and got is not None and int(want) != int(got):
            problems.append(f"config {expected.setting(name)} but the checkpoint has {got}")
    layers = expected.division_layers
    if layers is None:
        layers = range(1, arch["depth"])  # official default: every block but the first
    if sorted(int(i) for i in layers) != list(arch["division_layers"]):
        problems.append(f"config {expected.setting('division_layers')} but the checkpoint has division "
                        f"predictors in blocks {arch['division_layers']}")
    return problems


def _arch_summary(arch: Mapping) -> str:
    return ", ".join(f"{k}={v}" for k, v in arch.items())

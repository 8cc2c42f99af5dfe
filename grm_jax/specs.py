"""The config boundary: the one module above `models/` where an experiment `Config` becomes plain specs.

`models/`, `convert/` and `train/optim.py` never read a Config: the model is `GRM(**model_spec(cfg))`, the optimiser is made
from `OptimizerSpec(**optimizer_spec(cfg, global_batch))`, as big_vision's `train.py` builds
`Model(**config.model)`. The optimiser's spec comes as keywords too: the trainer (`train/loop.py`) imports this
module, so this module imports nothing from `train/`. Settings that are only valid together (the optimiser's
kind, its schedule, the epoch against the global batch) are checked here, with a ConfigError naming the key.

    model = build_model(load_config("vitb_256_ep300"))
"""
from __future__ import annotations

from typing import Optional

import jax.numpy as jnp

from .config import Config, ConfigError, backbone_dims, division_layers
from .convert.layout import ModelArchitecture
from .models.grm import GRM
from .models.division import DivisionSpec

# ------------------------------------------------------------------------------------------------ model


def division_spec(cfg: Config) -> DivisionSpec:
    """MODEL.DIVISION.* and MODEL.TGT_TYPE."""
    d = cfg.MODEL.DIVISION
    return DivisionSpec(layers=division_layers(cfg), tgt_type=str(cfg.MODEL.TGT_TYPE), early=bool(d.EARLY),
                        ratio=float(d.RATIO), other_layers=str(d.OTHER_LAYERS))


def model_spec(cfg: Config, dtype: Optional[str | jnp.dtype] = None) -> dict:
    """The keyword arguments of the GRM `cfg` describes (MODEL.*, DATA.TEMPLATE/SEARCH.SIZE,
    TRAIN.DROP_PATH_RATE / SCAN_BLOCKS / REMAT); `dtype` overrides MODEL.DTYPE."""
    embed_dim, depth, num_heads = backbone_dims(cfg)
    m = cfg.MODEL
    return dict(
        embed_dim=embed_dim, depth=depth, num_heads=num_heads,
        template_size=cfg.DATA.TEMPLATE.SIZE, search_size=cfg.DATA.SEARCH.SIZE,
        patch_size=m.BACKBONE.STRIDE, head_channels=m.HEAD.NUM_CHANNELS,
        division=division_spec(cfg),
        drop_path_rate=float(cfg.TRAIN.DROP_PATH_RATE), scan_blocks=bool(cfg.TRAIN.SCAN_BLOCKS),
        remat=str(cfg.TRAIN.REMAT),
        dtype=jnp.dtype(dtype if dtype is not None else m.DTYPE))


def build_model(cfg: Config, dtype: Optional[str | jnp.dtype] = None) -> GRM:
    """The GRM described by `cfg` (see `model_spec`)."""
    return GRM(**model_spec(cfg, dtype))


# -------------------------------------------------------------------------------------------- optimiser


def steps_per_epoch(cfg: Config, global_batch: Optional[int] = None) -> int:
    """Optimiser steps of one epoch: DATA.TRAIN.SAMPLE_PER_EPOCH // global batch (TRAIN.BATCH_SIZE if not
    given); an epoch without a step is a ConfigError."""
    batch = int(global_batch if global_batch is not None else cfg.TRAIN.BATCH_SIZE)
    n = int(cfg.DATA.TRAIN.SAMPLE_PER_EPOCH) // batch
    if n < 1:
        raise ConfigError(f"DATA.TRAIN.SAMPLE_PER_EPOCH={cfg.DATA.TRAIN.SAMPLE_PER_EPOCH} is smaller than the "
                          f"global batch {batch}: an epoch would have no step")
    return n


def optimizer_spec(cfg: Config, global_batch: Optional[int] = None) -> dict:
    """The keyword arguments of `train.optim.OptimizerSpec` for the official recipe of `cfg` (TRAIN.OPTIMIZER,
    LR, SCHEDULER.*, LR_DROP_EPOCH, WEIGHT_DECAY, BACKBONE_MULTIPLIER, GRAD_CLIP_NORM) at `global_batch`
    samples per optimiser step (TRAIN.BATCH_SIZE if not given)."""
    t = cfg.TRAIN
    if str(t.OPTIMIZER).upper() != "ADAMW":
        raise ConfigError(f"TRAIN.OPTIMIZER={t.OPTIMIZER!r}: only ADAMW is supported")
    if str(t.SCHEDULER.TYPE).lower() != "step":
        raise ConfigError(f"TRAIN.SCHEDULER.TYPE={t.SCHEDULER.TYPE!r}: only 'step' is supported")
    gamma = float(t.SCHEDULER.DECAY_RATE)
    if not gamma > 0:
        raise ConfigError(f"TRAIN.SCHEDULER.DECAY_RATE={gamma} must be > 0")
    drop = int(t.LR_DROP_EPOCH)
    if drop < 1:
        raise ConfigError(f"TRAIN.LR_DROP_EPOCH={drop} must be >= 1")
    clip = t.GRAD_CLIP_NORM
    return dict(
        learning_rate=float(t.LR), decay_rate=gamma, decay_every_steps=steps_per_epoch(cfg, global_batch) * drop,
        weight_decay=float(t.WEIGHT_DECAY),
        group_multipliers={"head": 1.0, "backbone": float(t.BACKBONE_MULTIPLIER), "division": 1.0},
        clip_norm=float(clip) if clip is not None else None)


# ------------------------------------------------------------------------------------------------- conversion

# ModelArchitecture field -> the config key it is read from
_ARCHITECTURE_KEYS = {
    "template_size": "DATA.TEMPLATE.SIZE",
    "search_size": "DATA.SEARCH.SIZE",
    "head_channels": "MODEL.HEAD.NUM_CHANNELS",
    "patch_size": "MODEL.BACKBONE.STRIDE",
    "embed_dim": "MODEL.BACKBONE.EMBED_DIM",
    "depth": "MODEL.BACKBONE.DEPTH",
}


def conversion_architecture(cfg: Config) -> ModelArchitecture:
    """The architecture ``build_model(cfg)`` builds, as a checkpoint must match it; each field names the config
    setting it comes from, for the report of a disagreement."""
    embed_dim, depth, num_heads = backbone_dims(cfg)
    backbone = cfg.MODEL.BACKBONE
    layers = cfg.MODEL.DIVISION.LAYERS
    settings = {name: f"{key}={cfg.get_path(key)}" for name, key in _ARCHITECTURE_KEYS.items()}
    if backbone.EMBED_DIM is None:
        settings["embed_dim"] = f"MODEL.BACKBONE.TYPE={backbone.TYPE} (no EMBED_DIM set) means embed_dim {embed_dim}"
    if backbone.DEPTH is None:
        settings["depth"] = f"MODEL.BACKBONE.TYPE={backbone.TYPE} (no DEPTH set) means depth {depth}"
    settings["division_layers"] = (f"MODEL.DIVISION.LAYERS={list(layers)}" if layers is not None else
                                   "MODEL.DIVISION.LAYERS=null (every block but the first)")
    return ModelArchitecture(
        embed_dim=embed_dim, depth=depth, num_heads=num_heads, patch_size=int(backbone.STRIDE),
        template_size=int(cfg.DATA.TEMPLATE.SIZE), search_size=int(cfg.DATA.SEARCH.SIZE),
        head_channels=int(cfg.MODEL.HEAD.NUM_CHANNELS),
        division_layers=tuple(int(i) for i in layers) if layers is not None else None,
        settings=settings)

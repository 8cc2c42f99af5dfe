"""Parity bundles: golden data written by the official PyTorch code.

A bundle is a directory laid out like tests/fixtures/parity (config.json, checkpoint.pth.tar, *.npz). Every
dimension is read from config.json and the arrays, so the same checks run on bundles of other sizes.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Mapping

from ..config import Config, ConfigError, default_config, merge_into, validate
from ..convert import extract_state_dict, infer_architecture, official_to_flax, read_torch_checkpoint
from ..specs import build_model, conversion_architecture


def read_bundle_json(bundle: Path) -> dict:
    path = Path(bundle) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{bundle}: no config.json (not a parity bundle)")
    return json.loads(path.read_text())


def _known_keys_only(update: Mapping, base: Mapping) -> dict:
    # Bundles may be made with another version of the official config; keys we do not model are dropped.
    out = {}
    for k, v in update.items():
        if k not in base:
            continue
        if isinstance(base[k], Mapping):
            if isinstance(v, Mapping):
                out[k] = _known_keys_only(v, base[k])
        else:
            out[k] = v
    return out


def config_from_bundle(cfg_json: Mapping, source: str = "config.json") -> Config:
    """A Config for the bundle's model: the official cfg it records, then its model dimensions."""
    cfg = default_config()
    merge_into(cfg, _known_keys_only(cfg_json.get("official_cfg_used", {}), cfg), source)
    model = cfg_json.get("model", {})
    fixed = cfg_json.get("fixed_in_official_code", {})
    try:
        patch = int(model.get("patch_size", cfg.MODEL.BACKBONE.STRIDE))
        update = {
            "MODEL": {
                "TGT_TYPE": model.get("tgt_type", cfg.MODEL.TGT_TYPE),
                "BACKBONE": {"STRIDE": patch, "EMBED_DIM": int(model["embed_dim"]), "DEPTH": int(model["depth"]),
                             "NUM_HEADS": int(model["num_heads"])},
                "HEAD": {"NUM_CHANNELS": int(model.get("head_channels", cfg.MODEL.HEAD.NUM_CHANNELS))},
                "DIVISION": {"EARLY": bool(fixed.get("divide_early", True))},
            },
            "DATA": {"TEMPLATE": {"SIZE": int(model["template_size"])},
                     "SEARCH": {"SIZE": int(model["search_size"])}},
            "TEST": {"TEMPLATE_SIZE": int(model["template_size"]), "SEARCH_SIZE": int(model["search_size"])},
            "TRAIN": {"DROP_PATH_RATE": float(fixed.get("drop_path_rate", cfg.TRAIN.DROP_PATH_RATE))},
        }
    except KeyError as err:
        raise ConfigError(f"{source}: 'model' lacks {err.args[0]!r}") from None
    layers = fixed.get("division_layers", model.get("division_layers"))
    if isinstance(layers, list):
        update["MODEL"]["DIVISION"]["LAYERS"] = [int(i) for i in layers]
    merge_into(cfg, update, source)
    validate(cfg, source)
    return cfg


@functools.lru_cache(maxsize=4)
def _load_bundle_model(bundle: str, dtype: str = "float32"):
    cfg_json = read_bundle_json(Path(bundle))
    cfg = config_from_bundle(cfg_json, str(Path(bundle) / "config.json"))
    ckpt = Path(bundle) / "checkpoint.pth.tar"
    if not ckpt.is_file():
        raise FileNotFoundError(f"{bundle}: no checkpoint.pth.tar")
    state_dict = extract_state_dict(read_torch_checkpoint(ckpt), source=str(ckpt), keys=("net", "state_dict"))
    if cfg.MODEL.DIVISION.LAYERS is None:
        # which blocks divide is visible in the checkpoint; config.json usually states it only in words
        arch = infer_architecture(state_dict, num_heads=cfg.MODEL.BACKBONE.NUM_HEADS)
        cfg.MODEL.DIVISION.LAYERS = list(arch["division_layers"])
    variables, _ = official_to_flax(state_dict, conversion_architecture(cfg), source=str(ckpt))
    return cfg, build_model(cfg, dtype=dtype), variables


def load_bundle_model(bundle: Path, dtype: str = "float32"):
    """(cfg, model, variables) for the bundle's checkpoint, converted with grm_jax.convert (cached).
    `dtype` is the compute dtype (params stay fp32); the golden data is fp32, so only the forward check
    accepts bfloat16, against its own budget."""
    return _load_bundle_model(str(Path(bundle).resolve()), str(dtype))

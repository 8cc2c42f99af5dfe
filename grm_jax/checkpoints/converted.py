"""Converted checkpoints: the official state_dict's tensors as Flax variables, written and read with orbax.

A converted checkpoint is an orbax composite directory with three items:
``variables`` ({'params', 'batch_stats'}), ``extras`` (tensors of the official state_dict the Flax model does
not own: cls_token, pos_embed, num_batches_tracked; nested by the dots of their official keys) and ``meta``
(JSON: inferred architecture, source file, format version, and `digests`: a `tree_digest` of each array item,
checked on load so a damaged file is an error, never different weights).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Mapping

import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from ..workdir import absolute_path, checkpoint_location, workdir_path
from .digests import tree_digest
from .reading import CheckpointLoadError, jsonable, read_json_item, restore_item, to_host, unreadable

FORMAT = "grm_jax.converted/1"
ITEMS = ("variables", "extras", "meta")


def save_variables(directory: str | os.PathLike, variables: Mapping, extras: Mapping | None = None,
                   meta: Mapping | None = None, *, force: bool = False) -> Path:
    """Write ``variables`` (+ extras + JSON meta) as an orbax checkpoint directory."""
    directory = Path(directory).absolute()
    if directory.exists() and any(directory.iterdir()):
        if not force:
            raise FileExistsError(f"{directory} exists and is not empty (pass force=True / --force to replace it)")
        shutil.rmtree(directory)
    extras = dict(extras or {})
    meta = dict(meta or {})
    if "__arch__" in extras and "architecture" not in meta:
        meta["architecture"] = extras["__arch__"]
    meta["format"] = FORMAT
    host_vars = to_host({"params": variables["params"], "batch_stats": variables.get("batch_stats", {})})
    items = {"variables": ocp.args.StandardSave(host_vars)}
    # official dotted keys nest as a tree (orbax items are trees); '__arch__' travels in meta
    nested_extras = traverse_util.unflatten_dict(
        {k: np.asarray(v) for k, v in extras.items() if not k.startswith("__")}, sep=".")
    if nested_extras:   # orbax refuses an empty tree, so a checkpoint without extras simply has no such item
        items["extras"] = ocp.args.StandardSave(nested_extras)
    meta["digests"] = {"variables": tree_digest(host_vars), **({"extras": tree_digest(nested_extras)}
                                                                 if nested_extras else {})}
    items["meta"] = ocp.args.JsonSave(jsonable(meta))
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        ckptr.save(directory, ocp.args.Composite(**items))
    return directory


def is_converted_dir(path: str | os.PathLike) -> bool:
    """Whether `path` (local or a URL) holds a checkpoint written by :func:`save_variables`."""
    path = workdir_path(path)
    return path.is_dir() and (path / "meta").is_dir() and (path / "variables").is_dir()


def load_variables(directory: str | os.PathLike) -> tuple[dict, dict, dict]:
    """-> (variables, extras, meta) from a directory (local or gs://) written by :func:`save_variables`, as host
    numpy arrays whatever devices wrote it."""
    directory = absolute_path(directory)
    if not is_converted_dir(directory):
        raise CheckpointLoadError(f"{directory}: not a converted checkpoint (expected items {list(ITEMS)})")
    arrays = ("variables", "extras") if (directory / "extras").is_dir() else ("variables",)
    try:
        restored = {item: restore_item(checkpoint_location(directory / item)) for item in arrays}
        restored["meta"] = read_json_item(checkpoint_location(directory / "meta"))
    except Exception as exc:  # noqa: BLE001 - a damaged file surfaces as any of several orbax/tensorstore errors
        raise unreadable(directory, "the converted checkpoint", exc,
                         "convert the official checkpoint again") from None
    meta = dict(restored["meta"] or {})
    stored = meta.get("digests") or {}
    for item in ("variables", "extras"):
        if item in stored and item in restored and tree_digest(to_host(restored[item])) != stored[item]:
            raise CheckpointLoadError(f"{directory}: the arrays of '{item}' differ from the digest written with "
                                      "them (a damaged file); convert the official checkpoint again")
    variables = to_host(restored["variables"])
    variables.setdefault("batch_stats", {})
    extras = {}
    if "extras" in restored:
        flat = traverse_util.flatten_dict(restored.get("extras") or {}, sep=".")
        extras = {k: np.asarray(v) for k, v in flat.items()}
    if "architecture" in meta:
        extras["__arch__"] = meta["architecture"]
    return variables, extras, meta

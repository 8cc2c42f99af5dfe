"""Saving and loading converted variables with orbax, and one loader for inference.

A converted checkpoint is an orbax composite directory with three items:
``variables`` ({'params', 'batch_stats'}), ``extras`` (tensors of the official state_dict the Flax model does
not own: cls_token, pos_embed, num_batches_tracked; nested by the dots of their official keys) and ``meta``
(JSON: inferred architecture, source file, format version).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np
from flax import traverse_util

from .convert.layout import plain_tree

FORMAT = "grm_jax.converted/1"
_ITEMS = ("variables", "extras", "meta")
_OFFICIAL_SUFFIXES = (".pth", ".pth.tar", ".pt", ".tar", ".bin")


class CheckpointLoadError(ValueError):
    """A checkpoint path that is none of the formats :func:`load_for_inference` accepts."""


def _ocp():
    import orbax.checkpoint as ocp

    return ocp


def _to_host(tree):
    import jax

    return jax.tree_util.tree_map(lambda x: np.array(x, order="C"), plain_tree(tree))


def _jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def save_variables(directory: str | os.PathLike, variables: Mapping, extras: Mapping | None = None,
                   meta: Mapping | None = None, *, force: bool = False) -> Path:
    """Write ``variables`` (+ extras + JSON meta) as an orbax checkpoint directory."""
    ocp = _ocp()
    directory = Path(directory).absolute()
    if directory.exists() and any(directory.iterdir()):
        if not force:
            raise FileExistsError(f"{directory} exists and is not empty (pass force=True / --force to replace it)")
        import shutil

        shutil.rmtree(directory)
    extras = dict(extras or {})
    meta = dict(meta or {})
    if "__arch__" in extras and "architecture" not in meta:
        meta["architecture"] = extras["__arch__"]
    meta["format"] = FORMAT
    host_vars = _to_host({"params": variables["params"], "batch_stats": variables.get("batch_stats", {})})
    items = {"variables": ocp.args.StandardSave(host_vars), "meta": ocp.args.JsonSave(_jsonable(meta))}
    # official dotted keys nest as a tree (orbax items are trees); '__arch__' travels in meta
    nested_extras = traverse_util.unflatten_dict(
        {k: np.asarray(v) for k, v in extras.items() if not k.startswith("__")}, sep=".")
    if nested_extras:   # orbax refuses an empty tree, so a checkpoint without extras simply has no such item
        items["extras"] = ocp.args.StandardSave(nested_extras)
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        ckptr.save(directory, ocp.args.Composite(**items))
    return directory


def is_converted_dir(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "meta").is_dir() and (path / "variables").is_dir()


def load_variables(directory: str | os.PathLike) -> tuple[dict, dict, dict]:
    """-> (variables, extras, meta) from a directory written by :func:`save_variables` (host numpy arrays)."""
    ocp = _ocp()
    directory = Path(directory).absolute()
    if not is_converted_dir(directory):
        raise CheckpointLoadError(f"{directory}: not a converted checkpoint (expected items {list(_ITEMS)})")
    items = {"variables": ocp.args.StandardRestore(), "meta": ocp.args.JsonRestore()}
    if (directory / "extras").is_dir():
        items["extras"] = ocp.args.StandardRestore()
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        restored = ckptr.restore(directory, ocp.args.Composite(**items))
    variables = _to_host(restored["variables"])
    variables.setdefault("batch_stats", {})
    extras = {}
    if "extras" in items:
        flat = traverse_util.flatten_dict(restored.get("extras") or {}, sep=".")
        extras = {k: np.asarray(v) for k, v in flat.items()}
    meta = dict(restored["meta"] or {})
    if "architecture" in meta:
        extras["__arch__"] = meta["architecture"]
    return variables, extras, meta


def _find_variables(tree) -> dict | None:
    """The {'params', 'batch_stats'} pair inside a restored training state, wherever it sits."""
    if not isinstance(tree, Mapping):
        return None
    params = tree.get("params")
    if isinstance(params, Mapping):
        inner = _find_variables(params)
        if inner is not None and "backbone" not in params:
            return inner  # params held the whole variables dict
        if "backbone" in params or "box_head" in params:
            stats = tree.get("batch_stats", {})
            return {"params": params, "batch_stats": stats if isinstance(stats, Mapping) else {}}
    for value in tree.values():
        found = _find_variables(value)
        if found is not None:
            return found
    return None


def _manager_dirs(path: Path) -> list[Path]:
    return [p for p in (path, path / "checkpoints", path / "ckpt", path / "checkpoint") if p.is_dir()]


def latest_training_step(path: str | os.PathLike) -> tuple[Path, int] | None:
    """(CheckpointManager directory, latest step) for a training workdir, or None."""
    ocp = _ocp()
    for d in _manager_dirs(Path(path).absolute()):
        steps = [int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit()]
        if not steps:
            continue
        with ocp.CheckpointManager(d) as mngr:
            step = mngr.latest_step()
        if step is not None:
            return d, int(step)
    return None


def load_training_variables(path: str | os.PathLike, step: int | None = None) -> tuple[dict, int]:
    """Variables from a training workdir written by an orbax CheckpointManager (latest step by default)."""
    ocp = _ocp()
    found = latest_training_step(path)
    if found is None:
        raise CheckpointLoadError(f"{path}: no orbax CheckpointManager steps found (looked in "
                                  f"{[str(d) for d in _manager_dirs(Path(path))] or [str(path)]})")
    manager_dir, latest = found
    step = latest if step is None else int(step)
    step_dir = manager_dir / str(step)
    if not step_dir.is_dir():
        raise CheckpointLoadError(f"{manager_dir}: no step {step} (latest is {latest})")
    # Each item of the step (e.g. 'state', 'default') is a PyTree checkpoint; restore them as raw trees.
    candidates = [p for p in sorted(step_dir.iterdir()) if p.is_dir() and not p.name.startswith(("_", "."))]
    if (step_dir / "_METADATA").is_file() or (step_dir / "manifest.ocdbt").is_file():
        candidates.insert(0, step_dir)
    errors = []
    for item in candidates:
        try:
            with ocp.PyTreeCheckpointer() as ckptr:
                tree = ckptr.restore(item)
        except Exception as exc:  # not a pytree item (json, metrics, ...): try the next one
            errors.append(f"{item.name}: {type(exc).__name__}")
            continue
        variables = _find_variables(tree)
        if variables is not None:
            return _to_host(variables), step
    raise CheckpointLoadError(f"{step_dir}: no item holds 'params' with a 'backbone' subtree "
                              f"(items tried: {[p.name for p in candidates]}; {errors})")


def _looks_official(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith(_OFFICIAL_SUFFIXES)


def load_for_inference(path: str | os.PathLike, cfg=None, *, return_info: bool = False):
    """Variables for the tracker/evaluation from any of: a converted orbax directory, a training workdir
    (latest CheckpointManager step), or an official .pth/.pth.tar (converted on the fly; needs torch).

    Returns ``{'params', 'batch_stats'}`` (host numpy arrays); with ``return_info`` also a dict saying which
    format was read, the step or source, and the architecture when known. With ``cfg`` the official path
    also checks the checkpoint against the config.
    """
    variables, info = _load_any(path, cfg)
    return (variables, info) if return_info else variables


def _load_any(path, cfg):
    path = Path(path)
    if not path.exists():
        raise CheckpointLoadError(f"{path}: no such file or directory")
    if path.is_file():
        if not _looks_official(path):
            raise CheckpointLoadError(f"{path}: a file, but not a PyTorch checkpoint (.pth/.pth.tar/.pt); "
                                      "converted checkpoints are directories")
        from grm_jax.convert import load_official_checkpoint

        variables, extras = load_official_checkpoint(path, cfg)
        return variables, {"format": "official", "source": str(path), "architecture": extras.get("__arch__")}
    if is_converted_dir(path):
        variables, extras, meta = load_variables(path)
        return variables, {"format": "converted", "source": meta.get("source", str(path)),
                           "architecture": meta.get("architecture")}
    variables, step = load_training_variables(path)
    return variables, {"format": "training", "source": str(path), "step": step}

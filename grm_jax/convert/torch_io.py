"""Reading and writing PyTorch checkpoint files. torch is imported lazily, only here."""
from __future__ import annotations

import os
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import CheckpointError
from . import safe_pickle


def _import_torch():
    try:
        # torch is an optional dependency, needed only to read or write .pth files
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise CheckpointError(
            "reading/writing PyTorch checkpoints needs torch (pip install torch==2.13.0, CPU build)") from exc
    return torch


def _tensor_to_numpy(t) -> np.ndarray:
    torch = _import_torch()
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        # numpy has no bfloat16; the value set fits float32 exactly.
        t = t.to(torch.float32)
    return t.numpy().copy()


def _to_numpy_tree(obj):
    torch = _import_torch()
    if isinstance(obj, torch.Tensor):
        return _tensor_to_numpy(obj)
    if isinstance(obj, OrderedDict):
        return OrderedDict((k, _to_numpy_tree(v)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _to_numpy_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_numpy_tree(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_numpy_tree(v) for v in obj)
    return obj


def read_torch_checkpoint(path: str | os.PathLike, *, as_numpy: bool = True) -> dict:
    """Load a .pth / .pth.tar file without executing code from it.

    Tensors, plain containers, numbers and strings come back as they were saved (tensors as numpy arrays
    when ``as_numpy``); any other pickled object (e.g. the official trainer's ``Settings``) becomes an inert
    :class:`~grm_jax.convert.safe_pickle.ForeignObject`. The names of such objects are listed under the
    returned dict's attribute-free key ``'__foreign__'`` only if the top level is a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        # torch.load hands TorchScript archives to torch.jit.load, which would run the archive's code.
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            raise CheckpointError(f"{path}: this is a TorchScript archive, not a state_dict checkpoint; refusing "
                                  "to load it (it would execute code from the file)")
        if not any(n.endswith("data.pkl") for n in names):
            raise CheckpointError(f"{path}: zip file without a data.pkl record: not a torch.save checkpoint")
    torch = _import_torch()
    safe_pickle.foreign_objects(reset=True)
    try:
        obj = torch.load(path, map_location="cpu", pickle_module=safe_pickle, weights_only=False, mmap=False)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read as a torch checkpoint: {type(exc).__name__}: {exc}") from exc
    foreign = safe_pickle.foreign_objects(reset=True)
    if as_numpy:
        obj = _to_numpy_tree(obj)
    if isinstance(obj, dict) and foreign:
        obj = type(obj)(obj)
        obj["__foreign__"] = foreign
    return obj


def extract_state_dict(checkpoint: Mapping[str, Any], source: str = "checkpoint",
                       keys: tuple[str, ...] = ("net", "model", "state_dict")) -> "OrderedDict[str, np.ndarray]":
    """The tensor dict inside a checkpoint: ``'net'`` (GRM trainer), ``'model'`` (MAE/DeiT) or a bare dict."""
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{source}: top level is a {type(checkpoint).__name__}, expected a dict")
    for key in keys:
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            sd = checkpoint[key]
            break
    else:
        if checkpoint and all(isinstance(v, np.ndarray) for k, v in checkpoint.items() if k != "__foreign__"):
            sd = {k: v for k, v in checkpoint.items() if k != "__foreign__"}
        else:
            raise CheckpointError(f"{source}: no tensor dict under any of {list(keys)}; top-level keys are "
                                  f"{sorted(str(k) for k in checkpoint)}")
    bad = [f"{k} ({type(v).__name__})" for k, v in sd.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise CheckpointError(f"{source}: state_dict entries that are not tensors: {bad}")
    # DDP / DataParallel wrappers prefix every key with 'module.'.
    if sd and all(k.startswith("module.") for k in sd):
        sd = OrderedDict((k[len("module."):], v) for k, v in sd.items())
    return OrderedDict(sd)


def _c_contiguous(value) -> np.ndarray:
    value = np.asarray(value)
    # copy() rather than np.ascontiguousarray, which turns 0-d arrays (num_batches_tracked) into shape (1,)
    return value if value.flags.c_contiguous and value.flags.writeable else value.copy(order="C")


def save_official_checkpoint(path: str | os.PathLike, state_dict: Mapping[str, np.ndarray], *,
                             epoch: int = 0) -> Path:
    """Write ``state_dict`` as the official trainer does: a torch.save'd dict whose ``'net'`` holds tensors.

    The trainer's ``settings`` object is stored as None (it would make the file need the official repo's
    classes to load); the tracker only reads ``['net']``.
    """
    torch = _import_torch()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = OrderedDict((k, torch.from_numpy(_c_contiguous(v))) for k, v in state_dict.items())
    payload = {
        "epoch": int(epoch),
        "actor_type": "GRMActor",
        "net_type": "GRM",
        "net": net,
        "net_info": None,
        "constructor": None,
        "optimizer": None,
        "stats": None,
        "settings": None,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path

"""Loading variables for the tracker, evaluation and export: `load_for_inference` is the one entry, whatever the
checkpoint is (a converted directory, a training workdir, an official .pth)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np
from flax import traverse_util

from ..convert import load_official_checkpoint
from ..convert.layout import plain_tree
from ..specs import conversion_architecture
from ..workdir import is_url
from .converted import is_converted_dir, load_variables
from .reading import CheckpointLoadError
from .training import load_training_variables

OFFICIAL_SUFFIXES = (".pth", ".pth.tar", ".pt", ".tar", ".bin")


def _looks_official(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith(OFFICIAL_SUFFIXES)


def load_for_inference(path: str | os.PathLike, cfg=None, *, return_info: bool = False):
    """The one entry for loading variables for inference (tracker, evaluation, export), from any of: a converted
    orbax directory, a training workdir (latest CheckpointManager step), or an official .pth/.pth.tar (converted
    on the fly; needs torch).

    Returns ``{'params', 'batch_stats'}`` (host numpy arrays); with ``return_info`` also a dict saying which
    format was read, the step or source, and the architecture when known. With ``cfg`` the official path
    also checks the checkpoint against the config.
    """
    variables, info = _load_any(path, cfg)
    refuse_non_finite(variables, path)
    return (variables, info) if return_info else variables


def refuse_non_finite(variables: Mapping, source: str | os.PathLike) -> None:
    """Raise CheckpointLoadError naming every tensor of `variables` that holds NaN or inf: such weights make
    every output NaN, and a tracker fed NaN boxes would write plausible-looking results."""
    bad = []
    for key, value in traverse_util.flatten_dict(plain_tree(variables)).items():
        array = np.asarray(value)
        if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
            count = int(array.size - np.count_nonzero(np.isfinite(array)))
            bad.append(f"{'/'.join(map(str, key))} ({count} of {array.size} values NaN/inf)")
    if bad:
        shown = "\n  ".join(bad[:20]) + (f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else "")
        raise CheckpointLoadError(f"{source}: {len(bad)} tensor(s) hold non-finite values:\n  {shown}")


def _load_any(path, cfg):
    if not is_url(path):   # a bucket holds a converted directory or a training workdir, never an official file
        path = Path(path)
        if not path.exists():
            raise CheckpointLoadError(f"{path}: no such file or directory")
        if path.is_file():
            if not _looks_official(path):
                raise CheckpointLoadError(f"{path}: a file, but not a PyTorch checkpoint (.pth/.pth.tar/.pt); "
                                          "converted checkpoints are directories")
            variables, extras = load_official_checkpoint(
                path, conversion_architecture(cfg) if cfg is not None else None)
            return variables, {"format": "official", "source": str(path), "architecture": extras.get("__arch__")}
    if is_converted_dir(path):
        variables, _, meta = load_variables(path)
        return variables, {"format": "converted", "source": meta.get("source", str(path)),
                           "architecture": meta.get("architecture")}
    variables, step = load_training_variables(path)
    return variables, {"format": "training", "source": str(path), "step": step}

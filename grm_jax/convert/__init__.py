"""Official PyTorch checkpoints <-> Flax variables.

torch is imported lazily (only when a .pth file is read or written); the layout table and the position
embedding resize are numpy only.
"""
from __future__ import annotations

from .errors import CheckpointError, ConversionError
from .layout import (Entry, ModelArchitecture, arch_from_variables, flax_to_official, infer_architecture,
                     official_layout, official_to_flax)
from .safe_pickle import ForeignObject
from .torch_io import extract_state_dict, read_torch_checkpoint, save_official_checkpoint

__all__ = [
    "CheckpointError", "ConversionError", "Entry", "ForeignObject", "ModelArchitecture", "arch_from_variables",
    "extract_state_dict", "flax_to_official", "infer_architecture", "official_layout", "official_to_flax",
    "read_torch_checkpoint", "save_official_checkpoint", "load_official_checkpoint",
]


def load_official_checkpoint(path, expected: ModelArchitecture | None = None):
    """Read an official GRM .pth.tar ('net') and convert it (checked against ``expected`` when given):
    -> (variables, extras)."""
    ckpt = read_torch_checkpoint(path)
    sd = extract_state_dict(ckpt, source=str(path), keys=("net", "state_dict"))
    return official_to_flax(sd, expected, source=str(path))

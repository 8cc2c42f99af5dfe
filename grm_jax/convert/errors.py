"""Errors raised by checkpoint reading and conversion (one error that lists every problem)."""
from __future__ import annotations

from ..errors import UserError


class CheckpointError(UserError, ValueError):
    """A checkpoint file cannot be read or does not have the expected layout."""


class PretrainedFileError(CheckpointError):
    """The pretrained backbone checkpoint a config names (MODEL.PRETRAIN_FILE) is not found."""


class ConversionError(CheckpointError):
    """Tensors are missing, unexpected or mis-shaped. ``problems`` holds one line per tensor."""

    def __init__(self, source: str, problems: list[str], hint: str = ""):
        self.source = source
        self.problems = list(problems)
        lines = [f"{source}: {len(problems)} problem(s) with the checkpoint tensors:"]
        lines += [f"  - {p}" for p in problems]
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))

"""Parity check `pos_embed`: our bicubic position-embedding resize vs the official finetune_track tables."""
from __future__ import annotations

from pathlib import Path

from ..convert.pretrained import pos_embed_parity
from .registry import CheckResult, register_check


@register_check("pos_embed", requires=("pos_embed_interp.npz",))
def check_pos_embed(bundle: Path, cfg_json: dict) -> list[CheckResult]:
    # The resize only involves the stored table, so every size stored in the bundle is checked whatever the
    # bundle's own template/search sizes are.
    return [CheckResult(**r) for r in pos_embed_parity(bundle)]

"""Parity check `pos_embed`: our bicubic position-embedding resize vs the official finetune_track tables."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from ..convert.pretrained import pos_embed_prefix_rows, resize_pos_embed
from .registry import CheckResult, register_check

POS_EMBED_TOL = 1e-5


@register_check("pos_embed", requires=("pos_embed_interp.npz",))
def check_pos_embed(bundle: Path, cfg_json: dict) -> list[CheckResult]:
    """One result per table stored in pos_embed_interp.npz. The resize only involves the stored table, so every
    size stored in the bundle is checked whatever the bundle's own template/search sizes are."""
    data = np.load(Path(bundle) / "pos_embed_interp.npz")
    src = data["pos_embed"]
    prefix = pos_embed_prefix_rows(src)
    results = []
    for key in sorted(data.files):
        m = re.fullmatch(r"pos_embed_([zx])_(\d+)", key)
        if not m:
            continue
        ref = data[key]
        side = math.isqrt(ref.shape[1])
        ours = resize_pos_embed(src, prefix, (side, side))
        err = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
        bad = int((err > POS_EMBED_TOL).sum())
        results.append(CheckResult(f"pos_embed/{key}", float(err.max()), bad, int(err.size), bad == 0,
                                   f"{ref.shape[1]} tokens, tol 1e-5"))
    return results

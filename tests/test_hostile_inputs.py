"""Hostile and careless input for tracking and the tools: each case ends in one clear message (or the exact
result), never a traceback, a hang or a silently wrong file."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import PARITY_BUNDLE, REPO

torch = pytest.importorskip("torch")


def _script(name: str):
    """A scripts/<name>.py module, imported in-process (its main(argv) returns the exit status)."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------------------------
# Exact divisions at every feature size (official lib/models/layers/head.py: CenterPredictor.cal_bbox)


def _torch_cal_bbox(score, size, offset):
    """Torch re-statement of the official decode on NCHW maps: first maximum of the flattened score map, centre =
    (cell index + offset) / F in float32, size taken at the peak."""
    f = score.shape[-1]
    max_score, idx = torch.max(score.flatten(1), dim=1, keepdim=True)
    gather_idx = idx.unsqueeze(1).expand(idx.shape[0], 2, 1)
    wh = size.flatten(2).gather(dim=2, index=gather_idx).squeeze(-1)
    off = offset.flatten(2).gather(dim=2, index=gather_idx).squeeze(-1)
    cx = ((idx % f).to(torch.float) + off[:, :1]) / f
    cy = ((idx // f).to(torch.float) + off[:, 1:]) / f
    return torch.cat([cx, cy, wh], dim=1), max_score


def _random_maps(f: int, batch: int, seed: int):
    rng = np.random.default_rng(seed)
    score = rng.random((batch, 1, f, f), dtype=np.float32)
    size = rng.random((batch, 2, f, f), dtype=np.float32)
    offset = (rng.random((batch, 2, f, f), dtype=np.float32) * 1.5 - 0.25).astype(np.float32)
    return score, size, offset


def _nhwc(a):
    return np.ascontiguousarray(np.transpose(a, (0, 2, 3, 1)))


@pytest.mark.parametrize("feat", [8, 10, 12, 14, 16, 20])
def test_cal_bbox_matches_torch_bit_for_bit_at_any_feature_size(feat):
    from grm_jax.models.head import cal_bbox
    from grm_jax.runtime import xla_compiler_options

    score, size, offset = _random_maps(feat, 256, feat)
    ref, _ = _torch_cal_bbox(*(torch.from_numpy(a) for a in (score, size, offset)))
    args = [_nhwc(a) for a in (score, size, offset)]
    jitted = np.asarray(jax.jit(cal_bbox, compiler_options=xla_compiler_options())(*args))
    eager = np.asarray(cal_bbox(*args))
    np.testing.assert_array_equal(jitted, ref.numpy())
    np.testing.assert_array_equal(eager, ref.numpy())


def test_interacting_fraction_is_a_true_division():
    from grm_jax.models.head import true_divide

    counts = np.arange(0, 101, dtype=np.float32)[None].repeat(3, 0)
    for n in (64, 100, 144, 196, 400):
        ref = (torch.from_numpy(counts) / n).numpy()
        np.testing.assert_array_equal(np.asarray(jax.jit(lambda c: true_divide(c, n))(counts)), ref)


def _heads_bundle(root: Path, search_size: int, seed: int) -> Path:
    """A parity bundle for the `heads` check at another search size: cal_bbox and the Hann window from torch
    re-statements of the official code (lib/models/layers/head.py, lib/test/utils/hann.py: hann1d/hann2d)."""
    cfg = json.loads((PARITY_BUNDLE / "config.json").read_text())
    cfg["model"]["search_size"] = search_size
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(cfg))
    f = search_size // cfg["model"]["patch_size"]
    score, size, offset = _random_maps(f, 64, seed)
    box, max_score = _torch_cal_bbox(*(torch.from_numpy(a) for a in (score, size, offset)))
    k = torch.arange(1, f + 1).float()
    hann1 = 0.5 * (1 - torch.cos((2 * np.pi / (f + 1)) * k))
    hann = (hann1.reshape(-1, 1) * hann1.reshape(1, -1)).reshape(1, 1, f, f)
    np.savez(root / "heads_and_losses.npz", calbbox_score_map=score, calbbox_size_map=size,
             calbbox_offset_map=offset, calbbox_bbox_cxcywh=box.numpy(), calbbox_max_score=max_score.numpy(),
             hann2d=hann.numpy())
    return root


@pytest.mark.parametrize("search_size", [128, 160])
def test_parity_script_passes_heads_exactly_at_search_size(search_size, tmp_path, capsys):
    bundle = (PARITY_BUNDLE if search_size == 128 else _heads_bundle(tmp_path / f"s{search_size}", search_size, 1))
    status = _script("parity").main([str(bundle), "--check", "heads"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert status == 0, lines
    checked = {r["name"] for r in lines if "ok" in r}
    assert {"heads/cal_bbox", "heads/hann2d"} <= checked

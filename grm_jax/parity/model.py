"""Parity checks of the model: `forward` (eval forward at every stored threshold) and `heads` (cal_bbox, hann2d)."""
from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..models.head import cal_bbox, hann2d
from ..runtime import xla_compiler_options
from .bundle import load_bundle_model
from .compare import max_abs_err
from .registry import CheckResult, register_check

FORWARD_TOL = 1e-4
# bf16 keeps 8 mantissa bits (relative step 2**-8 = 3.9e-3); over a dozen residual blocks the bounded outputs
# (score and size maps after their sigmoids, normalised boxes: all in [0, 1]) may drift a few steps, so their
# budget is 8 steps = 3.1e-2 absolute. The unbounded ones (offset map, tokens) are reported, not judged.
# Decisions whose two log-probabilities lie within bf16 rounding of each other can flip: up to 2% may.
BF16_TOL = 8 * 2.0 ** -8
BF16_JUDGED = ("score_map", "size_map", "pred_boxes")
BF16_MAX_FLIP_FRACTION = 0.02
# Outputs the acceptance tolerance applies to; divide_logprob and block_outputs are reported as diagnostics
# (their flips show up as decision mismatches, and the residual stream's scale is the bundle's choice).
FORWARD_OUTPUTS = ("score_map", "size_map", "offset_map", "pred_boxes", "backbone_tokens")


def _nhwc(a: np.ndarray) -> jnp.ndarray:
    return jnp.asarray(np.transpose(a, (0, 2, 3, 1)))


def _nchw(a) -> np.ndarray:
    return np.transpose(np.asarray(a), (0, 3, 1, 2))


def threshold_tags(data) -> list[tuple[float, str]]:
    """(threshold, key suffix) pairs: suffixes of the `score_map_*` keys in file order, one per threshold."""
    thresholds = [float(t) for t in np.atleast_1d(data["thresholds"])]
    suffixes = [k[len("score_map_"):] for k in data.files if k.startswith("score_map_")]
    if len(suffixes) != len(thresholds):
        raise ValueError(f"forward_eval.npz: {len(thresholds)} thresholds but {len(suffixes)} score_map_* arrays")
    return list(zip(thresholds, suffixes))


@register_check("forward", requires=("forward_eval.npz", "checkpoint.pth.tar", "config.json"))
def check_forward(bundle: Path, cfg_json: dict) -> list[CheckResult]:
    return _forward_results(bundle, "float32")


@register_check("forward_bf16", requires=("forward_eval.npz", "checkpoint.pth.tar", "config.json"))
def check_forward_bf16(bundle: Path, cfg_json: dict) -> list[CheckResult]:
    """bf16 compute (fp32 params, fp32 softmax) against the fp32 golden data, with the bf16 budget."""
    return _forward_results(bundle, "bfloat16")


def _forward_results(bundle: Path, dtype: str) -> list[CheckResult]:
    bf16 = dtype == "bfloat16"
    tol = BF16_TOL if bf16 else FORWARD_TOL
    data = np.load(Path(bundle) / "forward_eval.npz")
    _, model, variables = load_bundle_model(bundle, dtype)
    template, search = _nhwc(data["template"]), _nhwc(data["search"])
    template_mask = jnp.asarray(data["template_mask"]) if "template_mask" in data.files else None

    @functools.partial(jax.jit, compiler_options=xla_compiler_options())
    def forward(threshold):
        return model.apply(variables, template, search, template_mask, train=False, threshold=threshold,
                           mutable=["intermediates"])

    results = []
    for threshold, tag in threshold_tags(data):
        out, state = forward(jnp.float32(threshold))
        ours = {
            "score_map": _nchw(out["score_map"]), "size_map": _nchw(out["size_map"]),
            "offset_map": _nchw(out["offset_map"]), "pred_boxes": np.asarray(out["pred_boxes"]),
            "backbone_tokens": np.asarray(out["backbone_tokens"]),
            # ours (L_div, B, Nx, 2); the bundle stores (B, L_div, Nx, 2)
            "divide_logprob": np.swapaxes(np.asarray(out["divide_logprob"]), 0, 1),
        }
        blocks = state["intermediates"]["backbone"]["block_outputs"]
        ours["block_outputs"] = np.stack([np.asarray(b) for b in blocks])
        errors = {k: max_abs_err(ours[k], data[f"{k}_{tag}"]) for k in ours if f"{k}_{tag}" in data.files}
        missing = [k for k in FORWARD_OUTPUTS if k not in errors]
        if missing:
            raise KeyError(f"forward_eval.npz lacks {[f'{k}_{tag}' for k in missing]}")

        ref_dec = data[f"decisions_{tag}"]
        our_dec = np.swapaxes(np.asarray(out["decisions"]), 0, 1)
        flipped = np.any(our_dec.astype(np.int64) != ref_dec.astype(np.int64), axis=-1)  # (B, L_div, Nx)
        per_layer = flipped.sum(axis=(0, 2)).astype(int).tolist()
        mismatches = int(flipped.sum())
        if bf16:
            max_err = max(errors[k] for k in BF16_JUDGED)
            ok = max_err <= tol and mismatches <= BF16_MAX_FLIP_FRACTION * flipped.size
        else:
            max_err = max(errors[k] for k in FORWARD_OUTPUTS)
            ok = max_err <= tol and mismatches == 0
        detail = {"threshold": threshold, "dtype": dtype, "tol": tol, "errors": errors,
                  "decision_mismatches_per_layer": per_layer,
                  "interacting_fraction_per_layer": [round(float(f), 4) for f in np.asarray(out["interact_frac"]).mean(0)]}
        name = f"forward_bf16/{tag}" if bf16 else f"forward/{tag}"
        results.append(CheckResult(name, max_err, mismatches, int(flipped.size), ok, detail))
    return results


@register_check("heads", requires=("heads_and_losses.npz",))
def check_heads(bundle: Path, cfg_json: dict) -> list[CheckResult]:
    data = np.load(Path(bundle) / "heads_and_losses.npz")
    results = []
    if "calbbox_score_map" in data.files:
        box, score = cal_bbox(_nhwc(data["calbbox_score_map"]), _nhwc(data["calbbox_size_map"]),
                              _nhwc(data["calbbox_offset_map"]), return_score=True)
        pairs = [(np.asarray(box), data["calbbox_bbox_cxcywh"])]
        if "calbbox_max_score" in data.files:
            pairs.append((np.asarray(score), data["calbbox_max_score"]))
        bad = sum(int(np.sum(o != r)) for o, r in pairs)
        total = sum(int(r.size) for _, r in pairs)
        err = max(max_abs_err(o, r) for o, r in pairs)
        results.append(CheckResult("heads/cal_bbox", err, bad, total, bad == 0, "exact match required"))
    if "hann2d" in data.files:
        ref = data["hann2d"].reshape(data["hann2d"].shape[-2:])
        ours = np.asarray(hann2d(ref.shape[-1]))
        bad = int(np.sum(ours != ref))
        results.append(CheckResult("heads/hann2d", max_abs_err(ours, ref), bad, int(ref.size), bad == 0,
                                   f"F={ref.shape[-1]}, exact match required"))
    return results

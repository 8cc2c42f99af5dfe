"""Parity checks of training: `losses` (focal, GIoU, IoU, L1 on heads_and_losses.npz) and `train_step`
(training forward with the stored Gumbel noise, loss parts, every parameter gradient, BatchNorm running
statistics after the step, on train_step.npz)."""
from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..convert.layout import arch_from_variables, official_layout, to_torch
from ..runtime import xla_compiler_options
from ..train.losses import cxcywh_to_xyxy, focal_loss, giou_loss, l1_loss, xywh_to_xyxy
from ..train.step import loss_and_grads
from .bundle import load_bundle_model
from .compare import max_abs_err, max_rel_err
from .registry import CheckResult, register_check

LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-4
GRAD_ATOL = 1e-6
BN_TOL = 1e-5


def _scalar_result(name, ours, ref, rtol) -> CheckResult:
    rel = max_rel_err(ours, ref)
    bad = int(np.sum(np.abs(np.asarray(ours, np.float64) - np.asarray(ref, np.float64))
                     > rtol * np.abs(np.asarray(ref, np.float64))))
    return CheckResult(name, max_abs_err(ours, ref), bad, int(np.size(ref)), bad == 0,
                       {"max_rel_err": rel, "rtol": rtol, "ours": np.asarray(ours).tolist(),
                        "ref": np.asarray(ref).tolist()})


@register_check("losses", requires=("heads_and_losses.npz",))
def check_losses(bundle: Path, cfg_json: dict) -> list[CheckResult]:
    d = np.load(Path(bundle) / "heads_and_losses.npz")
    results = []
    if "focal_loss" in d.files:
        results.append(_scalar_result("losses/focal", focal_loss(d["focal_pred"], d["focal_target"]),
                                      d["focal_loss"], LOSS_RTOL))
    if "focal_loss_nopos" in d.files:
        results.append(_scalar_result("losses/focal_nopos", focal_loss(d["focal_pred"], d["focal_target_nopos"]),
                                      d["focal_loss_nopos"], LOSS_RTOL))
    if "giou_loss" in d.files:
        pred = cxcywh_to_xyxy(jnp.asarray(d["pred_cxcywh"]))
        gt = jnp.clip(xywh_to_xyxy(jnp.asarray(d["boxes_xywh"])), 0.0, 1.0)
        giou, iou = giou_loss(pred, gt)
        results.append(_scalar_result("losses/giou", giou, d["giou_loss"], LOSS_RTOL))
        err = max_abs_err(iou, d["iou"])
        bad = int(np.sum(np.abs(np.asarray(iou, np.float64) - d["iou"]) > LOSS_RTOL * np.abs(d["iou"]) + 1e-7))
        results.append(CheckResult("losses/iou", err, bad, int(d["iou"].size), bad == 0,
                                   {"rtol": LOSS_RTOL, "atol": 1e-7}))
        results.append(_scalar_result("losses/l1", l1_loss(pred, gt), d["l1_loss"], LOSS_RTOL))
        boxes = max_abs_err(pred, d["pred_xyxy"]) + max_abs_err(gt, d["gt_xyxy_clamped"])
        results.append(CheckResult("losses/box_convert", boxes, int(boxes > 0), 1, boxes == 0.0, "exact"))
    return results


def _nhwc(a):
    return jnp.asarray(np.transpose(a, (0, 2, 3, 1)))


def train_step_report(bundle: Path) -> dict:
    """Our training step on train_step.npz: loss parts, gradients (official names/layout), BN stats."""
    d = np.load(Path(bundle) / "train_step.npz")
    cfg, model, variables = load_bundle_model(bundle)
    batch = {"template": _nhwc(d["template"]), "search": _nhwc(d["search"]),
             "template_mask": jnp.asarray(d["template_mask"]), "search_anno": jnp.asarray(d["search_anno"]),
             "heatmap": jnp.asarray(d["gt_heatmap"][:, 0])}
    w = d["loss_weights_giou_l1_focal"] if "loss_weights_giou_l1_focal" in d.files else (2.0, 5.0, 1.0)
    kwargs = {"giou_weight": float(w[0]), "l1_weight": float(w[1]), "focal_weight": float(w[2])}

    @functools.partial(jax.jit, compiler_options=xla_compiler_options())
    def run(params, batch_stats, batch, noise):
        return loss_and_grads(model, kwargs, params, batch_stats, batch, gumbel_noise=noise)

    grads, parts, new_bs, frac = run(variables["params"], variables["batch_stats"], batch,
                                     jnp.asarray(d["gumbel_noise"]))
    arch = arch_from_variables(variables)
    ours_grads, ours_bn = {}, {}
    for entry in official_layout(arch):
        if entry.collection == "params":
            g = grads
            for k in entry.path:
                g = g[k]
            ours_grads[entry.key] = to_torch(entry, np.asarray(g))
        elif entry.collection == "batch_stats":
            s = new_bs
            for k in entry.path:
                s = s[k]
            ours_bn[entry.key] = np.asarray(s)
    return {"data": d, "parts": {k: float(v) for k, v in parts.items()}, "grads": ours_grads, "bn": ours_bn,
            "interact_frac": np.asarray(frac)}


@register_check("train_step", requires=("train_step.npz", "checkpoint.pth.tar", "config.json"))
def check_train_step(bundle: Path, cfg_json: dict) -> list[CheckResult]:
    rep = train_step_report(bundle)
    d = rep["data"]
    results = []
    for part, key in (("total", "loss_total"), ("giou", "loss_giou"), ("l1", "loss_l1"), ("focal", "loss_focal"),
                      ("iou", "iou_mean")):
        if key in d.files:
            results.append(_scalar_result(f"train_step/loss_{part}", rep["parts"][part], d[key], LOSS_RTOL))

    # Gradients: every official parameter with a stored gradient; parameters the fixture lists as unused
    # must not be model params at all (cls_token / pos_embed live in the converter's extras).
    grad_keys = [k[len("grad/"):] for k in d.files if k.startswith("grad/")]
    missing = [k for k in grad_keys if k not in rep["grads"]]
    extra = [k for k in rep["grads"] if k not in grad_keys]
    worst_rel, worst_key, bad_tensors, bad_elems, total = 0.0, "", [], 0, 0
    max_abs = 0.0
    for k in grad_keys:
        if k not in rep["grads"]:
            continue
        ours, ref = rep["grads"][k].astype(np.float64), d[f"grad/{k}"].astype(np.float64)
        if ours.shape != ref.shape:
            bad_tensors.append(f"{k}: shape {ours.shape} vs {ref.shape}")
            continue
        # Per tensor: the largest deviation relative to the tensor's largest magnitude, or absolute for
        # tensors whose true gradient is ~0 (conv biases in front of a training-mode BatchNorm).
        diff = np.abs(ours - ref)
        tensor_rel = float(diff.max() / max(np.abs(ref).max(), 1e-30))
        tensor_ok = tensor_rel <= GRAD_RTOL or float(diff.max()) <= GRAD_ATOL
        if tensor_rel > worst_rel and float(diff.max()) > GRAD_ATOL:
            worst_rel, worst_key = tensor_rel, k
        max_abs = max(max_abs, float(diff.max()))
        bad_elems += int(np.sum(diff > np.maximum(GRAD_RTOL * np.abs(ref).max(), GRAD_ATOL)))
        total += ref.size
        if not tensor_ok:
            bad_tensors.append(k)
    ok = not missing and not extra and not bad_tensors
    results.append(CheckResult("train_step/grads", max_abs, bad_elems, total, ok,
                               {"rule": f"per tensor: max|ours-ref| <= {GRAD_RTOL}*max|ref| or <= {GRAD_ATOL}",
                                "tensors": len(grad_keys), "bad_tensors": bad_tensors[:10],
                                "worst_tensor_rel_err (above atol)": worst_rel, "worst_tensor": worst_key,
                                "missing": missing, "unexpected": extra}))
    if "grad_total_norm_before_clip" in d.files:
        norm = np.sqrt(sum(float(np.sum(np.square(g.astype(np.float64)))) for g in rep["grads"].values()))
        results.append(_scalar_result("train_step/grad_norm", norm, d["grad_total_norm_before_clip"], GRAD_RTOL))

    bn_keys = [k[len("bn_after/"):] for k in d.files
               if k.startswith("bn_after/") and not k.endswith("num_batches_tracked")]
    errs = {k: max_abs_err(rep["bn"][k], d[f"bn_after/{k}"]) for k in bn_keys if k in rep["bn"]}
    bn_missing = [k for k in bn_keys if k not in rep["bn"]]
    bn_err = max(errs.values()) if errs else 0.0
    bad = [k for k, e in errs.items() if e > BN_TOL]
    results.append(CheckResult("train_step/bn_running_stats", bn_err, len(bad), len(bn_keys),
                               not bad and not bn_missing, {"tol": BN_TOL, "bad": bad, "missing": bn_missing}))
    if "backbone_decisions" in d.files:
        ref = d["backbone_decisions"].mean(0)
        err = max_abs_err(rep["interact_frac"], ref)
        results.append(CheckResult("train_step/interact_frac", err, int(err > 1e-6), int(ref.size), err <= 1e-6,
                                   {"ours": rep["interact_frac"].tolist(), "ref": ref.tolist()}))
    return results

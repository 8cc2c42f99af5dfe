"""Parity check `metrics`: the official OPE analysis on the bundle's synthetic sequences (metrics.npz)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..evaluation import metrics as M
from .registry import CheckResult, register_check

METRICS_TOL = 1e-6


def _err(ours, ref) -> float:
    """Max |ours - ref|, with equal infinities counting as 0 and an inf/finite disagreement as inf."""
    a = np.asarray(ours, np.float64)
    b = np.asarray(ref, np.float64)
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    same_inf = np.isinf(a) & np.isinf(b) & (np.sign(a) == np.sign(b))
    both_nan = np.isnan(a) & np.isnan(b)
    with np.errstate(invalid="ignore"):
        d = np.atleast_1d(np.abs(np.where(same_inf | both_nan, 0.0, a - b)))
    d[np.isnan(d)] = np.inf
    return float(d.max())


def metrics_errors(data) -> dict[str, float]:
    """Every quantity of metrics.npz recomputed with grm_jax.evaluation.metrics -> max abs error per key."""
    errors: dict[str, float] = {}
    errors["threshold_set_overlap"] = _err(M.OVERLAP_THRESHOLDS, data["threshold_set_overlap"])
    errors["threshold_set_center"] = _err(M.CENTER_THRESHOLDS, data["threshold_set_center"])
    errors["threshold_set_center_norm"] = _err(M.NORM_CENTER_THRESHOLDS, data["threshold_set_center_norm"])
    seq_ids = sorted({int(k.split("/")[0][3:]) for k in data.files if k.startswith("seq")})
    ground_truth, predictions = [], {}
    one = np.ones(1, bool)
    for i in seq_ids:
        p = f"seq{i}/"
        name, dataset = str(data[p + "name"]), str(data[p + "dataset"])
        visible = data[p + "target_visible"] if p + "target_visible" in data.files else None
        ground_truth.append(M.GroundTruth(name, data[p + "gt"], dataset, visible))
        predictions[name] = data[p + "pred"]
        e = M.sequence_errors(data[p + "pred"], data[p + "gt"], dataset, visible, name=name)
        c = M.sequence_curves(e, name=name)
        errors[p + "err_overlap"] = _err(e.overlap, data[p + "err_overlap"])
        errors[p + "err_center"] = _err(e.center, data[p + "err_center"])
        errors[p + "err_center_norm"] = _err(e.center_norm, data[p + "err_center_norm"])
        errors[p + "valid"] = float(np.sum(e.valid != data[p + "valid"].astype(bool)))
        errors[p + "success_curve"] = _err(c.success, data[p + "success_curve"])
        errors[p + "precision_curve"] = _err(c.precision, data[p + "precision_curve"])
        errors[p + "norm_precision_curve"] = _err(c.norm_precision, data[p + "norm_precision_curve"])
        errors[p + "avg_overlap"] = _err(c.avg_overlap, data[p + "avg_overlap"])
        _, auc = M.auc_curve_and_score(c.success[None, None], one)
        _, p20 = M.prec_curve_and_score(c.precision[None, None], one)
        _, n20 = M.prec_curve_and_score(c.norm_precision[None, None], one)
        errors[p + "auc"] = _err(auc[0], data[p + "auc"])
        errors[p + "precision20"] = _err(p20[0], data[p + "precision20"])
        errors[p + "norm_precision020"] = _err(n20[0], data[p + "norm_precision020"])

    res = M.evaluate_ope(ground_truth, {"tracker": predictions})
    errors["ave_success_rate_plot_overlap"] = _err(res.success, data["ave_success_rate_plot_overlap"])
    errors["ave_success_rate_plot_center"] = _err(res.precision, data["ave_success_rate_plot_center"])
    errors["ave_success_rate_plot_center_norm"] = _err(res.norm_precision, data["ave_success_rate_plot_center_norm"])
    errors["avg_overlap_all"] = _err(res.avg_overlap, data["avg_overlap_all"])
    errors["valid_sequence"] = float(np.sum(res.valid_sequence != data["valid_sequence"].astype(bool)))
    valid = data["valid_sequence"].astype(bool)
    auc_curve, auc = M.auc_curve_and_score(res.success, valid)
    prec_curve, p20 = M.prec_curve_and_score(res.precision, valid)
    norm_curve, n20 = M.prec_curve_and_score(res.norm_precision, valid)
    errors["all/auc_curve"] = _err(auc_curve, data["all/auc_curve"])
    errors["all/auc"] = _err(auc, data["all/auc"])
    errors["all/precision_curve"] = _err(prec_curve, data["all/precision_curve"])
    errors["all/precision20"] = _err(p20, data["all/precision20"])
    errors["all/norm_precision_curve"] = _err(norm_curve, data["all/norm_precision_curve"])
    errors["all/norm_precision020"] = _err(n20, data["all/norm_precision020"])
    return errors


@register_check("metrics", requires=("metrics.npz",))
def check_metrics(bundle: Path, cfg_json: dict) -> list[CheckResult]:
    data = np.load(Path(bundle) / "metrics.npz")
    errors = metrics_errors(data)
    bad = {k: v for k, v in errors.items() if not v <= METRICS_TOL}
    max_err = max(errors.values())
    worst = max(errors, key=errors.get)
    detail = {"tol": METRICS_TOL, "worst": worst, "failing": bad,
              "overall_auc": float(data["all/auc"][0])}
    return [CheckResult("metrics", max_err, len(bad), len(errors), not bad, detail)]

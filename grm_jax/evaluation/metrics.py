"""One-pass evaluation (OPE) metrics exactly as the official analysis computes them (`lib/test/analysis/
extract_results.py: extract_results`), and GOT-10k AO/SR.

The official numbers come from the pytracking-style `extract_results` / `plot_results` helpers. Their quirks are
reproduced on purpose, because published numbers were computed with them:

* invalid frames (GT w or h <= 0, NaN GT on UAV, not visible on LaSOT/AVisT) get IoU -1 (never a success), and a
  normalised centre error of -1, which counts as a HIT at every threshold while the denominator is the number of
  VALID frames: normalised-precision curves (and UAV precision curves, whose invalid centre error is -1 too) can
  exceed 1;
* the overlap thresholds are a float arange (0.15000000000000002, ...), compared with a strict `>`;
* the first predicted box is replaced by the ground truth; zero-size predictions are replaced by the previous
  prediction before a short result is padded with zero boxes (LaSOT: a short result is an error, a long one is
  truncated);
* AVisT divides by the number of ALL frames and needs all four GT values > 0;
* curves are float32 and averaged over sequences in float32 in the order torch's CPU kernels sum them, so the
  reported AUC / precision values match the official ones to the last bit (see `torch_mean`).

GOT-10k's AO / SR follow the got10k toolkit: IoU of boxes bounded to the image, frame 0 excluded, only frames with
cover > 0, all frames of all sequences pooled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

from ..errors import UserError

__all__ = [
    "MetricsError",
    "OVERLAP_THRESHOLDS",
    "CENTER_THRESHOLDS",
    "NORM_CENTER_THRESHOLDS",
    "GOT10K_IOU_THRESHOLDS",
    "SequenceErrors",
    "SequenceCurves",
    "OPEResults",
    "sequence_errors",
    "sequence_curves",
    "evaluate_ope",
    "summarize",
    "got10k_sequence_ious",
    "got10k_scores",
    "torch_mean",
    "torch_sum",
    "bootstrap_mean_difference",
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_LEVEL",
]


class MetricsError(UserError, ValueError):
    """Predictions or annotations that the official analysis refuses (NaN, negative size, short LaSOT result)."""


def _float_arange(start: float, stop: float, step: float) -> np.ndarray:
    """torch.arange for a double tensor on an AVX2 CPU: each group of 4 values is (start + step * first index)
    + step * lane, which is where 0.6500000000000001 and 0.7500000000000001 come from."""
    n = int(np.ceil((stop - start) / step))
    i = np.arange(n)
    return (start + step * (i // 4 * 4).astype(np.float64)) + step * (i % 4).astype(np.float64)


OVERLAP_THRESHOLDS = _float_arange(0.0, 1.0 + 0.05, 0.05)          # 21 values
CENTER_THRESHOLDS = np.arange(0, 51, dtype=np.float64)             # pixels
NORM_CENTER_THRESHOLDS = np.arange(0, 51, dtype=np.float64) / 100.0
GOT10K_IOU_THRESHOLDS = np.linspace(0, 1, 101)

# Curve indices of the summary numbers: precision at 20 px, normalised precision at 0.20, success at 0.5 / 0.75.
PRECISION_INDEX = 20
NORM_PRECISION_INDEX = 20
OP50_INDEX = 10
OP75_INDEX = 15


# ------------------------------------------------------------------------------------ torch-order float sums
_VEC_BYTES = 32  # AVX2 register: torch's CPU kernels the official numbers were produced with (8 floats / 4 doubles)


def _ceil_log2(x: int) -> int:
    return 1 if x <= 2 else int(x - 1).bit_length()


def _multi_row_sum(x: np.ndarray) -> np.ndarray:
    """Cascade sum over axis 0 with 4 levels (torch `multi_row_sum`), element-wise over the other axes."""
    n = x.shape[0]
    levels = 4
    level_power = max(4, _ceil_log2(n) // levels) if n > 0 else 4
    step = 1 << level_power
    mask = step - 1
    acc = [np.zeros(x.shape[1:], x.dtype) for _ in range(levels)]
    i = 0
    while i + step <= n:
        for _ in range(step):
            acc[0] = acc[0] + x[i]
            i += 1
        for j in range(1, levels):
            acc[j] = acc[j] + acc[j - 1]
            acc[j - 1] = np.zeros_like(acc[j - 1])
            if i & (mask << (j * level_power)):
                break
    while i < n:
        acc[0] = acc[0] + x[i]
        i += 1
    for j in range(1, levels):
        acc[0] = acc[0] + acc[j]
    return acc[0]


def _row_sum(x: np.ndarray) -> np.ndarray:
    """torch `row_sum`: 4 interleaved partial sums (ILP), each a cascade sum, then the tail, then combined."""
    n = x.shape[0]
    ilp = 4
    n_ilp = n // ilp
    blocks = x[:n_ilp * ilp].reshape((n_ilp, ilp) + x.shape[1:])
    partial = [_multi_row_sum(blocks[:, k]) for k in range(ilp)]
    for i in range(n_ilp * ilp, n):
        partial[0] = partial[0] + x[i]
    for k in range(1, ilp):
        partial[0] = partial[0] + partial[k]
    return partial[0]


def _inner_sum(x: np.ndarray) -> np.ndarray:
    """Sum over the last, contiguous axis of a 2-D array (torch vectorized/scalar inner sum)."""
    vec = _VEC_BYTES // x.itemsize
    n = x.shape[-1]
    rows = x.reshape(-1, n)
    if n < vec:
        return _row_sum(rows.T)
    n_vec = n // vec
    lanes = rows[:, :n_vec * vec].reshape(rows.shape[0], n_vec, vec).transpose(1, 0, 2)  # (n_vec, rows, vec)
    vec_acc = _row_sum(lanes)                                                                # (rows, vec)
    final = np.zeros(rows.shape[0], x.dtype)
    for k in range(n_vec * vec, n):
        final = final + rows[:, k]
    for k in range(vec):
        final = final + vec_acc[:, k]
    return final


def _outer_sum(x: np.ndarray) -> np.ndarray:
    """Sum over axis 0 of a 2-D array whose columns are contiguous (torch vectorized/scalar outer sum)."""
    n, m = x.shape
    vec = _VEC_BYTES // x.itemsize
    out = np.zeros(m, x.dtype)
    nrows = 4
    width = nrows * vec if m >= vec else nrows
    j = 0
    # Groups of columns get the plain cascade sum; the remaining columns the interleaved row sum.
    while j + width <= m:
        out[j:j + width] = _multi_row_sum(x[:, j:j + width])
        j += width
    if m >= vec:
        while j + vec <= m:
            out[j:j + vec] = _row_sum(x[:, j:j + vec])
            j += vec
    if j < m:
        out[j:] = _row_sum(x[:, j:])
    return out


def torch_sum(x: np.ndarray, axis: int) -> np.ndarray:
    """Sum of a C-contiguous float array over one axis with the rounding of torch's CPU sum kernel (AVX2)."""
    x = np.ascontiguousarray(x)
    axis = axis % x.ndim
    before, n, after = x.shape[:axis], x.shape[axis], x.shape[axis + 1:]
    inner = int(np.prod(after, dtype=np.int64))
    outer = int(np.prod(before, dtype=np.int64))
    if n == 0:
        return np.zeros(before + after, x.dtype)
    if inner == 1:
        return _inner_sum(x.reshape(outer, n)).reshape(before + after)
    blocks = x.reshape(outer, n, inner)
    return np.stack([_outer_sum(b) for b in blocks]).reshape(before + after)


def torch_mean(x: np.ndarray, axis: int) -> np.ndarray:
    """torch's CPU `mean(dim)`: the sum above divided by the count in the array's own precision."""
    x = np.asarray(x)
    return (torch_sum(x, axis) / x.dtype.type(x.shape[axis])).astype(x.dtype)


# ------------------------------------------------------------------------------------------ per sequence
@dataclass
class SequenceErrors:
    overlap: np.ndarray        # (T,) float64 IoU, -1 on invalid frames
    center: np.ndarray         # (T,) float64 centre error in pixels
    center_norm: np.ndarray    # (T,) float64 centre error normalised by the GT size
    valid: np.ndarray          # (T,) bool


@dataclass
class SequenceCurves:
    success: np.ndarray        # (21,) float32
    precision: np.ndarray      # (51,) float32
    norm_precision: np.ndarray  # (51,) float32
    avg_overlap: float         # mean IoU over valid frames (float64)


def _center(boxes: np.ndarray) -> np.ndarray:
    return boxes[:, :2] + 0.5 * (boxes[:, 2:] - 1.0)


def _center_error(pred: np.ndarray, gt: np.ndarray, normalized: bool) -> np.ndarray:
    pc, gc = _center(pred), _center(gt)
    if normalized:
        pc, gc = pc / gt[:, 2:], gc / gt[:, 2:]
    d = (pc - gc) ** 2
    return np.sqrt(d[:, 0] + d[:, 1])


def _pixel_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    # Inclusive-pixel convention (x2 = x + w - 1, side + 1): the same number as the continuous-box IoU.
    tl = np.maximum(pred[:, :2], gt[:, :2])
    br = np.minimum(pred[:, :2] + pred[:, 2:] - 1.0, gt[:, :2] + gt[:, 2:] - 1.0)
    sz = np.maximum(br - tl + 1.0, 0.0)
    inter = sz[:, 0] * sz[:, 1]
    union = pred[:, 2] * pred[:, 3] + gt[:, 2] * gt[:, 3] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / union


def sequence_errors(pred: np.ndarray, gt: np.ndarray, dataset: str, target_visible: np.ndarray | None = None,
                    avist: bool = False, name: str = "") -> SequenceErrors:
    """Per-frame IoU and centre errors of one sequence, as the official `calc_seq_err_robust`.

    `pred` (P, 4) and `gt` (T, 4) are x, y, w, h; `dataset` is the sequence's dataset tag (`lasot`, `uav`, `otb`,
    ...), which selects the LaSOT truncation/visibility rules and UAV's NaN ground truth.
    """
    where = f"sequence {name!r}: " if name else ""
    pred = np.array(pred, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    if np.isnan(pred).any() or (pred[:, 2:] < 0.0).any():
        raise MetricsError(f"{where}invalid results (NaN or negative width/height in the predictions)")
    gt_nan = np.isnan(gt).any(axis=1)
    if gt_nan.any() and dataset != "uav":
        raise MetricsError(f"{where}NaNs in the annotation (only the 'uav' dataset may have them)")

    zero = (pred[:, 2] == 0.0) | (pred[:, 3] == 0.0)
    if zero.any():
        for i in range(1, len(pred)):
            # Beyond the annotation the rows are dropped below; the official code indexes past its end there.
            if zero[i] and not (i < len(gt) and gt_nan[i]):
                pred[i] = pred[i - 1]

    if len(pred) != len(gt):
        if len(pred) > len(gt):
            pred = pred[:len(gt)]
        elif dataset == "lasot":
            raise MetricsError(f"{where}{len(pred)} predicted boxes for {len(gt)} annotated frames (LaSOT needs all)")
        else:
            pred = np.concatenate([pred, np.zeros((len(gt) - len(pred), 4))], axis=0)
    pred[0] = gt[0]

    if avist:
        valid = (gt > 0.0).sum(axis=1) == 4
    else:
        valid = (gt[:, 2:] > 0.0).sum(axis=1) == 2
    visible = None
    if target_visible is not None:
        visible = np.asarray(target_visible).astype(bool).reshape(-1)
        if len(visible) != len(gt):
            raise MetricsError(f"{where}{len(visible)} visibility flags for {len(gt)} annotated frames")
        valid = valid & visible

    with np.errstate(divide="ignore", invalid="ignore"):
        center = _center_error(pred, gt, normalized=False)
        center_norm = _center_error(pred, gt, normalized=True)
    overlap = _pixel_iou(pred, gt)

    center[~valid] = -1.0 if dataset == "uav" else np.inf
    center_norm[~valid] = -1.0
    overlap[~valid] = -1.0
    if dataset == "lasot":
        if visible is None:
            raise MetricsError(f"{where}LaSOT sequences need their target_visible flags")
        center_norm[~visible] = np.inf
        center[~visible] = np.inf
    if np.isnan(overlap).any():
        raise MetricsError(f"{where}NaN IoU (a zero-area predicted and annotated box on a valid frame)")
    return SequenceErrors(overlap, center, center_norm, valid)


def _rate(hits: np.ndarray, denominator: int) -> np.ndarray:
    return hits.sum(axis=0).astype(np.float32) / np.float32(denominator)


def sequence_curves(errors: SequenceErrors, avist: bool = False, name: str = "") -> SequenceCurves:
    """Success / precision / normalised-precision curves of one sequence (float32, official denominators)."""
    valid = errors.valid
    denominator = len(valid) if avist else int(valid.sum())
    if denominator <= 0:
        raise MetricsError(f"sequence {name!r}: no valid frame (sequence length zero for the metrics)")
    success = _rate(errors.overlap[:, None] > OVERLAP_THRESHOLDS[None], denominator)
    precision = _rate(errors.center[:, None] <= CENTER_THRESHOLDS[None], denominator)
    norm_precision = _rate(errors.center_norm[:, None] <= NORM_CENTER_THRESHOLDS[None], denominator)
    ov = errors.overlap[valid]
    avg_overlap = float(torch_mean(ov, 0)) if len(ov) else float("nan")
    return SequenceCurves(success, precision, norm_precision, avg_overlap)


# ------------------------------------------------------------------------------------- over a benchmark
@dataclass
class OPEResults:
    """What `extract_results` returns, as arrays indexed [sequence, tracker, threshold]."""
    sequences: list[str]
    trackers: list[str]
    success: np.ndarray          # (S, K, 21) float32
    precision: np.ndarray        # (S, K, 51) float32
    norm_precision: np.ndarray   # (S, K, 51) float32
    avg_overlap: np.ndarray      # (S, K) float64
    valid_sequence: np.ndarray   # (S,) bool: every tracker had a result (False only with skip_missing)
    thresholds_overlap: np.ndarray = field(default_factory=lambda: OVERLAP_THRESHOLDS.copy())
    thresholds_center: np.ndarray = field(default_factory=lambda: CENTER_THRESHOLDS.copy())
    thresholds_center_norm: np.ndarray = field(default_factory=lambda: NORM_CENTER_THRESHOLDS.copy())


@dataclass
class GroundTruth:
    name: str
    boxes: np.ndarray
    dataset: str
    target_visible: np.ndarray | None = None


def evaluate_ope(ground_truth: Iterable, predictions: Mapping[str, Mapping[str, np.ndarray]], *,
                 avist: bool = False, skip_missing: bool = False) -> OPEResults:
    """All per-sequence curves for several trackers (the official `extract_results`).

    `ground_truth`: items with `name`, `boxes` (or `ground_truth`), `dataset` and optional `target_visible` /
    `visible` + `meta['has_visibility']` - a `grm_jax.sequence.Sequence` works as is. `predictions[tracker][seq]`
    is the (P, 4) result array. A missing result raises unless `skip_missing`, which drops that sequence for
    every tracker (as the official code).
    """
    seqs = [_as_ground_truth(s) for s in ground_truth]
    trackers = list(predictions)
    s_n, k_n = len(seqs), len(trackers)
    success = np.zeros((s_n, k_n, len(OVERLAP_THRESHOLDS)), np.float32)
    precision = np.zeros((s_n, k_n, len(CENTER_THRESHOLDS)), np.float32)
    norm_precision = np.zeros((s_n, k_n, len(CENTER_THRESHOLDS)), np.float32)
    avg_overlap = np.zeros((s_n, k_n), np.float64)
    valid_sequence = np.ones(s_n, bool)
    for si, seq in enumerate(seqs):
        for ki, trk in enumerate(trackers):
            pred = predictions[trk].get(seq.name)
            if pred is None:
                if skip_missing:
                    valid_sequence[si] = False
                    break
                raise MetricsError(f"tracker {trk!r} has no result for sequence {seq.name!r}")
            errors = sequence_errors(pred, seq.boxes, seq.dataset, seq.target_visible, avist, seq.name)
            curves = sequence_curves(errors, avist, seq.name)
            avg_overlap[si, ki] = curves.avg_overlap
            success[si, ki] = curves.success
            precision[si, ki] = curves.precision
            norm_precision[si, ki] = curves.norm_precision
    return OPEResults([s.name for s in seqs], trackers, success, precision, norm_precision, avg_overlap,
                      valid_sequence)


def _as_ground_truth(seq) -> GroundTruth:
    if isinstance(seq, GroundTruth):
        return seq
    boxes = getattr(seq, "boxes", None)
    if boxes is None:
        boxes = seq.ground_truth
    visible = getattr(seq, "target_visible", None)
    if visible is None and getattr(seq, "meta", {}).get("has_visibility"):
        visible = seq.visible
    return GroundTruth(seq.name, np.asarray(boxes, np.float64), seq.dataset, visible)


def summarize(results: OPEResults, sequence_mask: np.ndarray | None = None) -> dict[str, dict]:
    """Overall numbers per tracker (the official `get_auc_curve` / `get_prec_curve`, x100, float32).

    Returns {tracker: {auc, precision, norm_precision, op50, op75, ao, success_curve, precision_curve,
    norm_precision_curve, num_sequences}}. OP50/OP75 are the success curve at thresholds 0.50 / 0.75 (the official
    printer looks 0.75 up by float equality against 0.7500000000000001 and reports nothing).
    """
    mask = results.valid_sequence if sequence_mask is None else (results.valid_sequence & sequence_mask)
    if not mask.any():
        raise MetricsError("no sequence left to average over")
    auc_curve = torch_mean(np.ascontiguousarray(results.success[mask]), 0) * np.float32(100.0)
    prec_curve = torch_mean(np.ascontiguousarray(results.precision[mask]), 0) * np.float32(100.0)
    norm_curve = torch_mean(np.ascontiguousarray(results.norm_precision[mask]), 0) * np.float32(100.0)
    auc = torch_mean(auc_curve, -1)
    out = {}
    for ki, trk in enumerate(results.trackers):
        out[trk] = {
            "auc": float(auc[ki]),
            "precision": float(prec_curve[ki, PRECISION_INDEX]),
            "norm_precision": float(norm_curve[ki, NORM_PRECISION_INDEX]),
            "op50": float(auc_curve[ki, OP50_INDEX]),
            "op75": float(auc_curve[ki, OP75_INDEX]),
            "ao": float(np.mean(results.avg_overlap[mask, ki]) * 100.0),
            "success_curve": auc_curve[ki],
            "precision_curve": prec_curve[ki],
            "norm_precision_curve": norm_curve[ki],
            "num_sequences": int(mask.sum()),
        }
    return out


def auc_curve_and_score(success: np.ndarray, valid_sequence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Official `get_auc_curve`: (K, 21) mean success curve x100 and its mean (K,), float32."""
    curve = torch_mean(np.ascontiguousarray(success[valid_sequence]), 0) * np.float32(100.0)
    return curve, torch_mean(curve, -1)


def prec_curve_and_score(curves: np.ndarray, valid_sequence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Official `get_prec_curve`: (K, 51) mean curve x100 and its value at index 20 (K,), float32."""
    curve = torch_mean(np.ascontiguousarray(curves[valid_sequence]), 0) * np.float32(100.0)
    return curve, curve[:, PRECISION_INDEX]


# ------------------------------------------------------------------------------------------------ GOT-10k
def _bound(rects: np.ndarray, width: float, height: float) -> np.ndarray:
    r = rects.copy()
    r[:, 0] = np.clip(r[:, 0], 0, width)
    r[:, 1] = np.clip(r[:, 1], 0, height)
    r[:, 2] = np.clip(r[:, 2], 0, width - r[:, 0])
    r[:, 3] = np.clip(r[:, 3], 0, height - r[:, 1])
    return r


def _continuous_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[:, 0], b[:, 0])
    y1 = np.maximum(a[:, 1], b[:, 1])
    x2 = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2])
    y2 = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])
    inter = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    return np.clip(inter / (union + np.finfo(float).eps), 0.0, 1.0)


def got10k_sequence_ious(pred: np.ndarray, gt: np.ndarray, cover: np.ndarray | None,
                         resolution: tuple[float, float], name: str = "") -> np.ndarray:
    """IoUs the GOT-10k toolkit keeps for one sequence: frames 1.. with cover > 0, boxes bounded to (W, H)."""
    pred = np.asarray(pred, np.float64).reshape(-1, 4)
    gt = np.asarray(gt, np.float64).reshape(-1, 4)
    if pred.shape != gt.shape:
        raise MetricsError(f"sequence {name!r}: {len(pred)} predicted boxes for {len(gt)} annotated frames")
    w, h = resolution
    ious = _continuous_iou(_bound(pred[1:], w, h), _bound(gt[1:], w, h))
    if cover is not None:
        cover = np.asarray(cover).reshape(-1)
        if len(cover) != len(gt):
            raise MetricsError(f"sequence {name!r}: {len(cover)} cover labels for {len(gt)} frames")
        ious = ious[cover[1:] > 0]
    return ious


def got10k_scores(ious: np.ndarray) -> dict:
    """AO, SR0.50, SR0.75 (fractions) and the 101-point success curve of pooled IoUs."""
    ious = np.asarray(ious, np.float64).reshape(-1)
    if ious.size == 0:
        raise MetricsError("GOT-10k scores of an empty set of frames")
    return {
        "ao": float(np.mean(ious)),
        "sr50": float(np.mean(ious > 0.5)),
        "sr75": float(np.mean(ious > 0.75)),
        "success_curve": np.mean(ious[:, None] > GOT10K_IOU_THRESHOLDS[None], axis=0),
    }


# -------------------------------------------------------------------------------------- confidence intervals
BOOTSTRAP_RESAMPLES = 10000
BOOTSTRAP_LEVEL = 0.95


def bootstrap_mean_difference(values: np.ndarray, reference: np.ndarray, *, resamples: int = BOOTSTRAP_RESAMPLES,
                              seed: int = 0, level: float = BOOTSTRAP_LEVEL) -> dict:
    """Percentile bootstrap interval of mean(values) - mean(reference) over sequences, paired by sequence.

    `values` (S,) or (R, S) and `reference` (S,) or (Q, S): one row per training seed (R, Q >= 1). Each resample
    draws S sequences with replacement (the same ones for both: paired) and, independently for each side, its
    seeds with replacement; the statistic is the mean over the drawn seeds and sequences. With one seed per side
    this is the plain paired bootstrap over sequences. Returns {difference, low, high, resamples, level, seed,
    sequences, significant}: `significant` is False when the interval contains 0.
    """
    a = np.atleast_2d(np.asarray(values, np.float64))
    b = np.atleast_2d(np.asarray(reference, np.float64))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"paired bootstrap needs the same sequences: {a.shape[1]} values vs {b.shape[1]}")
    if a.shape[1] < 2:
        raise MetricsError("a bootstrap interval needs at least 2 sequences")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise MetricsError("non-finite per-sequence values cannot be bootstrapped")
    rng = np.random.default_rng(seed)
    s = a.shape[1]
    diffs = np.empty(resamples)
    chunk = max(1, 2_000_000 // max(s, 1))
    for start in range(0, resamples, chunk):
        n = min(chunk, resamples - start)
        idx = rng.integers(0, s, size=(n, s))
        ra = rng.integers(0, a.shape[0], size=(n, a.shape[0]))
        rb = rng.integers(0, b.shape[0], size=(n, b.shape[0]))
        # mean over drawn seeds first (a per-sequence value per resample), then over the drawn sequences
        ma = a[ra].mean(axis=1)                       # (n, S)
        mb = b[rb].mean(axis=1)
        diffs[start:start + n] = (np.take_along_axis(ma, idx, 1).mean(1) - np.take_along_axis(mb, idx, 1).mean(1))
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    difference = float(a.mean() - b.mean())
    return {"difference": difference, "low": float(low), "high": float(high), "resamples": int(resamples),
            "level": float(level), "seed": int(seed), "sequences": int(s),
            "significant": bool(low > 0 or high < 0)}

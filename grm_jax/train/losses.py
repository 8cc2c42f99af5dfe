"""Training losses of GRM (official `GRMActor.compute_losses`): weighted focal + GIoU + L1, optional entropy.

Everything is traceable (no Python branching on values), so it runs inside the jitted train step.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

FOCAL_ALPHA = 2.0
FOCAL_BETA = 4.0
FOCAL_MIN_PROB = 1e-12
ENTROPY_EPS = 1e-5


# ----------------------------------------------------------------------------------------------- boxes

def cxcywh_to_xyxy(box: jax.Array) -> jax.Array:
    cx, cy, w, h = jnp.moveaxis(box, -1, 0)
    return jnp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def xywh_to_xyxy(box: jax.Array) -> jax.Array:
    x, y, w, h = jnp.moveaxis(box, -1, 0)
    return jnp.stack([x, y, x + w, y + h], axis=-1)


def _area(box: jax.Array) -> jax.Array:
    return (box[..., 2] - box[..., 0]) * (box[..., 3] - box[..., 1])


def generalized_iou(pred_xyxy: jax.Array, gt_xyxy: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Element-wise GIoU and IoU of (N, 4) xyxy box pairs."""
    area_p, area_g = _area(pred_xyxy), _area(gt_xyxy)
    lt = jnp.maximum(pred_xyxy[:, :2], gt_xyxy[:, :2])
    rb = jnp.minimum(pred_xyxy[:, 2:], gt_xyxy[:, 2:])
    wh = jnp.maximum(rb - lt, 0.0)
    inter = wh[:, 0] * wh[:, 1]
    union = area_p + area_g - inter
    iou = inter / union
    enc_lt = jnp.minimum(pred_xyxy[:, :2], gt_xyxy[:, :2])
    enc_rb = jnp.maximum(pred_xyxy[:, 2:], gt_xyxy[:, 2:])
    enc_wh = jnp.maximum(enc_rb - enc_lt, 0.0)
    enclosing = enc_wh[:, 0] * enc_wh[:, 1]
    return iou - (enclosing - union) / enclosing, iou


def giou_loss(pred_xyxy: jax.Array, gt_xyxy: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mean(1 - GIoU), per-box IoU) with the official fallback.

    The official GIoU asserts that every box has x2 >= x1 and y2 >= y1, and the actor catches the failure by
    using 0 for both the loss and the IoU, so that step gets no gradient from this term. A degenerate box
    anywhere in the batch switches the whole term off here too; the boxes are sanitised before the GIoU so
    the discarded branch cannot put NaNs into the gradient.
    """
    def valid(b):
        return jnp.all(b[:, 2:] >= b[:, :2])

    ok = valid(pred_xyxy) & valid(gt_xyxy)
    safe_box = jnp.array([0.0, 0.0, 1.0, 1.0], pred_xyxy.dtype)
    pred = jnp.where(ok, pred_xyxy, safe_box)
    gt = jnp.where(ok, gt_xyxy, safe_box)
    giou, iou = generalized_iou(pred, gt)
    loss = jnp.mean(1.0 - giou)
    return jnp.where(ok, loss, 0.0), jnp.where(ok, iou, 0.0)


def l1_loss(pred_xyxy: jax.Array, gt_xyxy: jax.Array) -> jax.Array:
    return jnp.mean(jnp.abs(pred_xyxy - gt_xyxy))


# ----------------------------------------------------------------------------------------------- focal

def focal_loss(score: jax.Array, target: jax.Array, alpha: float = FOCAL_ALPHA,
               beta: float = FOCAL_BETA) -> jax.Array:
    """Weighted CenterNet focal loss over the whole batch (any layout, same shape for score and target).

    Positives are the cells where the heat map is exactly 1; the loss is normalised by the number of
    positives in the batch, or is the un-normalised negative term when there are none.
    """
    score = score.astype(jnp.float32)
    target = target.astype(jnp.float32)
    pos = (target == 1.0).astype(jnp.float32)
    neg = (target < 1.0).astype(jnp.float32)
    p = jnp.maximum(score, FOCAL_MIN_PROB)
    pos_loss = jnp.sum(jnp.log(p) * jnp.power(1.0 - p, alpha) * pos)
    neg_loss = jnp.sum(jnp.log(1.0 - p) * jnp.power(p, alpha) * jnp.power(1.0 - target, beta) * neg)
    n_pos = jnp.sum(pos)
    return jnp.where(n_pos == 0, -neg_loss, -(pos_loss + neg_loss) / jnp.maximum(n_pos, 1.0))


# ----------------------------------------------------------------------------------------------- entropy

def entropy_loss(interact_frac: jax.Array) -> jax.Array:
    """Mean of 1 - H(q) (base 2) over the per-layer interacting fractions q (B, L_div): low when the
    fractions are near 0.5; the paper's optional regulariser (off in the official runs)."""
    q = interact_frac.astype(jnp.float32)
    if q.size == 0:
        return jnp.float32(0.0)
    return jnp.mean(1.0 + q * jnp.log2(q + ENTROPY_EPS) + (1.0 - q) * jnp.log2(1.0 - q + ENTROPY_EPS))


# ----------------------------------------------------------------------------------------------- total

def grm_losses(outputs: dict, search_anno: jax.Array, heatmap: jax.Array, *, giou_weight: float = 2.0,
               l1_weight: float = 5.0, focal_weight: float = 1.0, entropy: bool = False,
               entropy_weight: float = 1.0) -> tuple[jax.Array, dict]:
    """Total loss and its parts for one batch.

    outputs: the model's training outputs (`pred_boxes` (B, 1, 4) cx,cy,w,h; `score_map` (B, F, F, 1);
    `interact_frac` (B, L_div)); search_anno (B, 4) normalised x,y,w,h; heatmap (B, F, F) Gaussian labels.
    """
    pred = cxcywh_to_xyxy(outputs["pred_boxes"].reshape(-1, 4).astype(jnp.float32))
    num_queries = outputs["pred_boxes"].shape[1]
    gt = xywh_to_xyxy(search_anno.astype(jnp.float32))
    gt = jnp.clip(jnp.repeat(gt, num_queries, axis=0), 0.0, 1.0)
    giou, iou = giou_loss(pred, gt)
    l1 = l1_loss(pred, gt)
    focal = focal_loss(outputs["score_map"][..., 0], heatmap)
    total = giou_weight * giou + l1_weight * l1 + focal_weight * focal
    parts = {"giou": giou, "l1": l1, "focal": focal, "iou": jnp.mean(iou)}
    if entropy:
        ent = entropy_loss(outputs["interact_frac"])
        total = total + entropy_weight * ent
        parts["entropy"] = ent
    parts["total"] = total
    return total, parts


def loss_weights(cfg) -> dict:
    return {"giou_weight": float(cfg.TRAIN.GIOU_WEIGHT), "l1_weight": float(cfg.TRAIN.L1_WEIGHT),
            "entropy": bool(cfg.TRAIN.ENTROPY_LOSS)}

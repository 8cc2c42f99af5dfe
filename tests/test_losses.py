"""Losses against the official values in heads_and_losses.npz, plus the fallback and entropy term."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax.train.losses import (cxcywh_to_xyxy, entropy_loss, focal_loss, giou_loss, grm_losses, l1_loss,
                                  xywh_to_xyxy)


@pytest.fixture(scope="module")
def hl(parity_bundle):
    return np.load(parity_bundle / "heads_and_losses.npz")


def test_focal_matches_official(hl):
    ours = float(focal_loss(hl["focal_pred"], hl["focal_target"]))
    assert ours == pytest.approx(float(hl["focal_loss"]), rel=1e-5)


def test_focal_without_positives_is_unnormalised_negative_term(hl):
    assert not np.any(hl["focal_target_nopos"] == 1.0)
    ours = float(focal_loss(hl["focal_pred"], hl["focal_target_nopos"]))
    assert ours == pytest.approx(float(hl["focal_loss_nopos"]), rel=1e-5)


def test_focal_positive_count_is_batch_wide():
    # Two samples with 1 and 3 positives: normalised by 4 in total, not per sample.
    rng = np.random.default_rng(0)
    score = rng.uniform(0.01, 0.99, (2, 4, 4)).astype(np.float32)
    target = rng.uniform(0.0, 0.9, (2, 4, 4)).astype(np.float32)
    target[0, 1, 1] = target[1, 0, 0] = target[1, 2, 2] = target[1, 3, 3] = 1.0
    p = score.astype(np.float64)
    pos = target == 1.0
    lpos = np.sum(np.log(p) * (1 - p) ** 2 * pos)
    lneg = np.sum(np.log(1 - p) * p ** 2 * (1 - target) ** 4 * ~pos)
    assert float(focal_loss(score, target)) == pytest.approx(-(lpos + lneg) / 4, rel=1e-5)


def test_giou_iou_l1_match_official(hl):
    pred = cxcywh_to_xyxy(jnp.asarray(hl["pred_cxcywh"]))
    gt = jnp.clip(xywh_to_xyxy(jnp.asarray(hl["boxes_xywh"])), 0.0, 1.0)
    np.testing.assert_array_equal(np.asarray(pred), hl["pred_xyxy"])
    np.testing.assert_array_equal(np.asarray(gt), hl["gt_xyxy_clamped"])
    loss, iou = giou_loss(pred, gt)
    assert float(loss) == pytest.approx(float(hl["giou_loss"]), rel=1e-5)
    np.testing.assert_allclose(np.asarray(iou), hl["iou"], rtol=1e-5, atol=1e-7)
    assert float(l1_loss(pred, gt)) == pytest.approx(float(hl["l1_loss"]), rel=1e-5)


def test_giou_degenerate_box_falls_back_to_zero_without_nan_gradient():
    pred = jnp.array([[0.2, 0.2, 0.5, 0.5], [0.6, 0.3, 0.4, 0.7]])   # second box has x2 < x1
    gt = jnp.array([[0.1, 0.1, 0.4, 0.4], [0.3, 0.3, 0.6, 0.6]])
    loss, iou = jax.jit(giou_loss)(pred, gt)
    assert float(loss) == 0.0 and np.all(np.asarray(iou) == 0.0)
    grad = jax.grad(lambda p: giou_loss(p, gt)[0])(pred)
    assert np.all(np.asarray(grad) == 0.0)
    ok_grad = jax.grad(lambda p: giou_loss(p, gt)[0])(pred.at[1].set(jnp.array([0.3, 0.3, 0.7, 0.7])))
    assert np.all(np.isfinite(np.asarray(ok_grad))) and np.any(np.asarray(ok_grad) != 0.0)


def test_entropy_loss_formula():
    q = np.array([[0.0, 0.5, 0.9], [1.0, 0.25, 0.5]], np.float32)
    qd = q.astype(np.float64)
    ref = np.mean(1 + qd * np.log2(qd + 1e-5) + (1 - qd) * np.log2(1 - qd + 1e-5))
    assert float(entropy_loss(q)) == pytest.approx(ref, rel=1e-5)
    assert float(entropy_loss(np.full((1, 2), 0.5, np.float32))) == pytest.approx(0.0, abs=1e-4)


def test_total_is_weighted_sum_and_entropy_flag(hl):
    b = 4
    rng = np.random.default_rng(1)
    outputs = {"pred_boxes": jnp.asarray(rng.uniform(0.3, 0.6, (b, 1, 4)).astype(np.float32)),
               "score_map": jnp.asarray(hl["focal_pred"][:b, 0, :, :, None]),
               "interact_frac": jnp.asarray(rng.uniform(0, 1, (b, 3)).astype(np.float32))}
    anno = jnp.asarray(hl["boxes_xywh"][:b])
    heat = jnp.asarray(hl["focal_target"][:b, 0])
    total, parts = grm_losses(outputs, anno, heat)
    assert float(total) == pytest.approx(2 * float(parts["giou"]) + 5 * float(parts["l1"]) + float(parts["focal"]),
                                         rel=1e-6)
    total_e, parts_e = grm_losses(outputs, anno, heat, entropy=True)
    assert float(total_e) == pytest.approx(float(total) + float(entropy_loss(outputs["interact_frac"])), rel=1e-6)
    assert "entropy" in parts_e and "entropy" not in parts

"""Host geometry: parity with the official crop / label code, and the conventions it must keep."""
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax import geometry
from grm_jax.parity import CHECK_MODULES, CHECKS, import_check_modules
from grm_jax.parity.geometry import check_labels, check_sample_target


def _assert_all_ok(results):
    bad = [r for r in results if not r.ok]
    assert not bad, "\n".join(f"{r.name}: err {r.max_abs_err} mismatches {r.mismatches}/{r.total} {r.detail}"
                              for r in bad)


def test_sample_target_parity(parity_bundle):
    results = check_sample_target(parity_bundle, {})
    assert len(results) >= 4 * 5
    _assert_all_ok(results)


def test_labels_parity(parity_bundle):
    results = check_labels(parity_bundle, {})
    assert {r.name for r in results} >= {"labels/heatmap", "labels/template_mask", "labels/gaussian_radius_int"}
    _assert_all_ok(results)


def test_checks_registered():
    assert "grm_jax.parity.geometry" in CHECK_MODULES
    failures = import_check_modules()
    assert not [f for f in failures if "geometry" in f.name], failures
    assert {"sample_target", "labels"} <= set(CHECKS)


def test_crop_padding_off_by_one_and_half_to_even():
    image = np.full((10, 10, 3), 200, np.uint8)
    # box centre 7.5, crop side 5 -> x1 = round(5.0) = 5, x2 = 10 touches the right border: the last
    # image column is replaced by padding (official +1).
    crop, rf, att = geometry.sample_target(image, [6.5, 2.5, 2.5, 2.5], 2.0, None)
    assert crop.shape == (5, 5, 3) and rf == 1.0
    assert np.all(att[:, -1]) and not np.any(att[:, :-1])
    assert np.all(crop[:, -1] == 0) and np.all(crop[:, :-1] == 200)
    # x1 = round(2.5) = 2 (half to even), not 3
    img = np.arange(100, dtype=np.uint8).reshape(10, 10, 1).repeat(3, axis=2)
    crop, _, att = geometry.sample_target(img, [3.0, 3.0, 1.0, 1.0], 1.0, None)
    assert crop.shape == (1, 1, 3) and int(crop[0, 0, 0]) == 33  # row 3, col 3
    # side 2: origin 3 + 0.5 - 1 = 2.5 -> round half to even = 2 (half-up would give 3)
    crop, _, _ = geometry.sample_target(img, [3.0, 3.0, 1.0, 1.0], 2.0, None)
    assert crop.shape == (2, 2, 3) and int(crop[0, 0, 0]) == 22


def test_sample_target_bad_boxes_raise():
    image = np.zeros((20, 20, 3), np.uint8)
    for box in ([1, 1, 0, 5], [1, 1, np.nan, 5], [1, 1, -3, 5]):
        with pytest.raises(ValueError, match="sample_target"):
            geometry.sample_target(image, box, 2.0, 16)
    with pytest.raises(ValueError, match="off the"):
        geometry.sample_target(image, [500, 500, 4, 4], 1.0, 16)


def test_resized_att_mask_marks_partial_padding():
    image = np.full((50, 50, 3), 9, np.uint8)
    crop, rf, att = geometry.sample_target(image, [-10, 10, 20, 20], 2.0, 16)
    assert crop.shape == (16, 16, 3) and att.dtype == bool and rf == pytest.approx(16 / 40)
    # the left 20 of 40 source columns are padding -> the left 8 of 16 output columns
    assert np.all(att[:, :8]) and not np.any(att[:, 8:])


def test_transform_image_to_crop_centre_convention():
    box = np.array([10, 20, 40, 40], np.float32)
    out = geometry.transform_image_to_crop(box, box, 2.0, np.array([128, 128], np.float32))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [63.5 - 40, 63.5 - 40, 80, 80])
    norm = geometry.transform_image_to_crop(box, box, 2.0, 128, normalize=True)
    np.testing.assert_allclose(norm, out / 128, rtol=1e-7)


def test_template_mask_extents():
    # x = 0.26*8 = 2.08 -> cols 2 .. int(2.08+2+1)-1 = 4 ; y = 0 -> rows 0 .. int(0+1+1)-1 = 1
    m = geometry.template_box_mask([[0.26, 0.0, 0.25, 0.125]], 128).reshape(8, 8)
    expected = np.zeros((8, 8), np.float32)
    expected[0:2, 2:5] = 1
    np.testing.assert_array_equal(m, expected)


def test_heatmap_peak_and_clipping():
    heat = geometry.gaussian_heatmap([[0.5, 0.5, 0.25, 0.25], [0.8125, 0.8125, 0.5, 0.5]], 256)
    assert heat.shape == (2, 16, 16) and heat.dtype == np.float32
    # box 1: centre 8 + 2 = 10 cells, radius int(r(4x4)) = 1 -> 3x3 patch, peak exactly 1
    assert heat[0, 10, 10] == 1.0 and np.count_nonzero(heat[0]) == 9
    # box 2: centre 13 + 4 = 17 cells (off the map), radius 2: only the map's corner cell is painted
    assert np.count_nonzero(heat[1]) == 1
    assert heat[1, 15, 15] == pytest.approx(np.exp(-8 / (2 * (5 / 6) ** 2)), rel=1e-6)
    radius = geometry.gaussian_radius(np.array([[1, 1], [4, 4], [8, 8], [16, 16]], np.float32))
    np.testing.assert_array_equal(radius.astype(int), [0, 1, 2, 4])


def test_box_converters_round_trip():
    b = np.array([[1.0, 2.0, 3.0, 4.0]])
    np.testing.assert_allclose(geometry.xywh_to_xyxy(b), [[1, 2, 4, 6]])
    np.testing.assert_allclose(geometry.xyxy_to_xywh(geometry.xywh_to_xyxy(b)), b)
    np.testing.assert_allclose(geometry.xywh_to_cxcywh(b), [[2.5, 4, 3, 4]])
    np.testing.assert_allclose(geometry.cxcywh_to_xywh(geometry.xywh_to_cxcywh(b)), b)
    np.testing.assert_allclose(geometry.cxcywh_to_xyxy(geometry.xywh_to_cxcywh(b)), [[1, 2, 4, 6]])
    np.testing.assert_allclose(geometry.xyxy_to_cxcywh([[1, 2, 4, 6]]), [[2.5, 4, 3, 4]])


def test_clip_box_and_normalize():
    assert geometry.clip_box([-5, 90, 30, 30], 100, 200, margin=10) == [0, 90, 25, 10]
    img = np.array([[[0, 128, 255]]], np.uint8)
    n = geometry.normalize_image(img)
    assert n.dtype == np.float32
    np.testing.assert_allclose(n[0, 0], (np.array([0, 128, 255]) / 255 - geometry.IMAGENET_MEAN)
                               / geometry.IMAGENET_STD, rtol=1e-6)
    custom = geometry.normalize_image(img, (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    assert custom.dtype == np.float32
    np.testing.assert_allclose(custom[0, 0], (np.array([0, 128, 255]) / 255 - 0.5) / [0.25, 0.5, 1.0], atol=1e-6)
    # the same arithmetic in jax.numpy (the tracker's jitted step, training's tableless device_images)
    on_device = geometry.normalize_image(jnp.asarray(img), (0.5, 0.5, 0.5), (0.25, 0.5, 1.0), xp=jnp)
    assert on_device.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(on_device), custom, atol=1e-6)
    # Normalize of the training brightness tables is the same standardisation (gain 1/255: level / 255)
    table = geometry.brightness_table(np.float32(1 / 255), (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    np.testing.assert_allclose(table[[0, 128, 255]].diagonal(), custom[0, 0], atol=1e-6)


def test_separable_padding_mask_equals_resized_2d_mask():
    import cv2

    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(400):
        crop_sz = int(rng.integers(2, 700))
        out = int(rng.choice([7, 16, 64, 128, 256, 320]))
        pads = [int(rng.integers(0, crop_sz // 2 + 1)) if rng.random() < 0.6 else 0 for _ in range(4)]
        top, bottom, left, right = pads
        if top + bottom >= crop_sz or left + right >= crop_sz:
            continue
        layout = geometry.CropLayout(crop_sz, 0, crop_sz - top - bottom, 0, crop_sz - left - right, *pads)
        window = np.zeros((crop_sz - top - bottom, crop_sz - left - right, 3), np.uint8)
        _, _, att = geometry.crop_from_window(window, layout, out)
        full = np.ones((crop_sz, crop_sz))
        full[top:crop_sz - bottom, left:crop_sz - right] = 0
        np.testing.assert_array_equal(att, cv2.resize(full, (out, out)).astype(bool))
        checked += 1
    assert checked > 300

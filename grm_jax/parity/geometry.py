"""Parity checks of the host geometry: `sample_target` (crops, resize factors, padding masks, box transforms
against sample_target.npz) and `labels` (Gaussian heat maps, radii, centres, template masks against
heads_and_losses.npz)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import geometry
from ..models.head import hann2d
from .compare import elementwise_result
from .registry import CheckResult, register_check

CROP_TOL = 1.0  # grey levels (OpenCV versions may round the fixed-point bilinear resize differently)
BOX_TOL = 1e-5


def _cases(data) -> list[str]:
    return sorted({k.split("/")[0] for k in data.files if k.startswith("case")}, key=lambda c: int(c[4:]))


@register_check("sample_target", requires=("sample_target.npz",))
def check_sample_target(bundle: Path, cfg_json: dict) -> list[CheckResult]:
    data = np.load(Path(bundle) / "sample_target.npz")
    image = data["image"]
    results = []
    for case in _cases(data):
        g = lambda key: data[f"{case}/{key}"]  # noqa: E731
        label = f"sample_target/{case}:{str(g('name'))}"
        box = [float(v) for v in g("box_xywh")]
        factor, out = float(g("search_area_factor")), int(g("output_sz"))
        crop, rf, att = geometry.sample_target(image, box, factor, out)
        results.append(elementwise_result(f"{label}/crop", crop, g("crop"), CROP_TOL))
        results.append(elementwise_result(f"{label}/resize_factor", rf, g("resize_factor"), 1e-12))
        results.append(elementwise_result(f"{label}/att_mask", att, g("att_mask"), 0))
        if f"{case}/crop_no_resize" in data.files:
            crop_full, rf_full, att_full = geometry.sample_target(image, box, factor, None)
            results.append(elementwise_result(f"{label}/crop_no_resize", crop_full, g("crop_no_resize"), 0))
            results.append(elementwise_result(f"{label}/att_mask_no_resize", att_full, g("att_mask_no_resize"), 0))
            results.append(elementwise_result(f"{label}/resize_factor_no_resize", rf_full, 1.0, 0))
        crop_sz = np.array([out, out], np.float32)
        gt = g("gt_box_xywh")
        for key, normalize in (("gt_box_in_crop", False), ("gt_box_in_crop_norm", True)):
            ours = geometry.transform_image_to_crop(gt, box, rf, crop_sz, normalize=normalize)
            results.append(elementwise_result(f"{label}/{key}", ours, g(key), BOX_TOL))
    return results


@register_check("labels", requires=("heads_and_losses.npz",))
def check_labels(bundle: Path, cfg_json: dict) -> list[CheckResult]:
    data = np.load(Path(bundle) / "heads_and_losses.npz")
    heat_ref = data["heatmap"]
    F = heat_ref.shape[-1]
    search_size = F * 16
    boxes = data["boxes_xywh"]
    cells = boxes.astype(np.float32) * np.float32(F)
    results = [
        elementwise_result("labels/heatmap", geometry.gaussian_heatmap(boxes, search_size), heat_ref, 0),
        elementwise_result("labels/gaussian_radius_float", geometry.gaussian_radius(cells[:, 2:]),
                data["gaussian_radius_float"], 1e-6),
        elementwise_result("labels/gaussian_radius_int",
                np.maximum(geometry.gaussian_radius(cells[:, 2:]), 0).astype(np.int32),
                data["gaussian_radius_int"], 0),
        elementwise_result("labels/heatmap_centers_int", geometry.heatmap_centers(boxes, search_size),
                data["heatmap_centers_int"], 0),
    ]
    tmask_ref = data["template_mask"]
    fz = int(round(np.sqrt(tmask_ref.shape[-1])))
    results.append(elementwise_result("labels/template_mask",
                           geometry.template_box_mask(data["template_boxes_xywh"], fz * 16), tmask_ref, 0))
    if "hann2d" in data.files:
        results.append(elementwise_result("labels/hann2d", hann2d(F), data["hann2d"][0, 0], 1e-6))
    return results

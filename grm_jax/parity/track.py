"""Parity check `tracker`: the official tracker run stored in tracker_run.npz.

Each frame k is tracked from the official input state (state_in[k-1]) with our crop, jitted step and host
mapping, and its output box compared with the official state_out: within 1e-3 px on at least 29 of the 30 frames
(frame 0 is the init box). Also reported: the teacher-forced run (tf_*), our own chained run from the init box,
and diagnostics (template crop and mask, Hann window, normalised crop boxes).
"""
from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from ..models.head import hann2d
from ..track.tracker import SequenceTracker, TrackerCore, TrackerSettings
from .bundle import load_bundle_model
from .registry import CheckResult, register_check

BOX_TOL_PX = 1e-3
MIN_FRAMES_OK = 29          # of 30 (init frame included)


def _tracker_for_bundle(bundle: Path):
    cfg, model, variables = load_bundle_model(bundle)
    settings = TrackerSettings.from_config(cfg, threshold=0.0)
    return cfg, SequenceTracker(TrackerCore(model, variables, settings))


def _per_frame(tracker, frames, init_box, states_in, ref_out):
    tracker.initialize(frames[0], init_box)
    errs = []
    for k in range(1, len(frames)):
        tracker.state = [float(v) for v in states_in[k - 1]]
        out = tracker.track(frames[k])
        errs.append(float(np.max(np.abs(np.asarray(out) - ref_out[k - 1]))))
    return np.asarray(errs)


def _result(name, errs, detail):
    within = int(np.sum(errs <= BOX_TOL_PX)) + 1          # + the init frame
    total = len(errs) + 1
    return CheckResult(name, float(errs.max()), total - within, total, within >= MIN_FRAMES_OK,
                       {"tol_px": BOX_TOL_PX, "frames_within_tol": within, "required": MIN_FRAMES_OK,
                        "per_frame_err_px": [float(f"{e:.3g}") for e in errs], **detail})


@register_check("tracker", requires=("tracker_run.npz", "checkpoint.pth.tar", "config.json"))
def check_tracker(bundle: Path, cfg_json: dict) -> list[CheckResult]:
    data = np.load(Path(bundle) / "tracker_run.npz")
    frames = data["frames_htwc"].transpose(1, 0, 2, 3)
    init_box = [float(v) for v in data["init_bbox"]]
    _, tracker = _tracker_for_bundle(bundle)
    core = tracker.core

    crop, template, mask = core.template_input(frames[0], init_box)
    ref_template = np.transpose(data["template"], (0, 2, 3, 1))
    diag = {
        "template_crop_max_abs_diff": int(np.abs(crop.astype(int) - data["template_crop"].astype(int)).max()),
        "template_input_max_err": float(np.abs(template - ref_template).max()),
        "template_mask_mismatches": int(np.sum(mask != data["template_mask"])),
        "hann_max_err": float(np.abs(np.asarray(hann2d(core.settings.feat_size)) - data["hann_window"][0, 0]).max()),
    }
    # normalised crop boxes of the forced-state frames (the jitted step's output)
    norm_errs = []
    for k in range(1, len(frames)):
        search, rf = core.search_input(frames[k], data["state_in"][k - 1])
        box = np.asarray(core(jnp.asarray(template), jnp.asarray(mask), jnp.asarray(search[None])))[0]
        norm_errs.append(float(np.abs(box - data["pred_box_norm_cxcywh"][k - 1]).max()))
        if k - 1 < len(data["search_resize_factor"]):
            diag.setdefault("resize_factor_max_err", 0.0)
            diag["resize_factor_max_err"] = max(diag["resize_factor_max_err"],
                                                abs(rf - float(data["search_resize_factor"][k - 1])))
    diag["pred_box_norm_max_err"] = max(norm_errs)

    results = [_result("tracker", _per_frame(tracker, frames, init_box, data["state_in"], data["state_out"]), diag)]
    if "tf_state_in" in data.files:
        results.append(_result("tracker/teacher_forced",
                               _per_frame(tracker, frames, init_box, data["tf_state_in"], data["tf_state_out"]), {}))
    # our own chained run from the init box (errors may compound; reported for information)
    tracker.initialize(frames[0], init_box)
    chained = []
    for k in range(1, len(frames)):
        chained.append(float(np.max(np.abs(np.asarray(tracker.track(frames[k])) - data["state_out"][k - 1]))))
    chained = np.asarray(chained)
    results.append(_result("tracker/chained", chained, {}))
    return results

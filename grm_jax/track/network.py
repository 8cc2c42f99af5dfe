"""The tracker's network step (official `lib/test/tracker/grm.py: GRM.track`, network part): the one function that
both the jitted tracker (`track/tracker.py: TrackerCore`) and an exported program (`grm_jax/export.py`) run, so the
two cannot drift apart.

Crops in, normalised network input (`geometry.normalize_image`, official `lib/test/tracker/data_utils.py:
Preprocessor`), eval-mode forward with the division threshold, then the box decoded at the peak of the
Hann-windowed score map (`models/head.py: cal_bbox`, official `lib/models/layers/head.py: CenterPredictor.cal_bbox`).
"""
from __future__ import annotations

import jax.numpy as jnp

from .. import geometry
from ..models.head import cal_bbox, hann2d

__all__ = ["network_outputs"]


def network_outputs(model, variables, template, template_mask, search, threshold, *,
                    mean=geometry.IMAGENET_MEAN, std=geometry.IMAGENET_STD, with_decisions: bool = False) -> dict:
    """One frame of the network for a batch of crops.

    template: (B, Hz, Wz, 3) float32, normalised (the host normalises it once per sequence); template_mask: (B, Nz)
    0/1 or None; search: (B, Hx, Wx, 3) uint8 crops, normalised here with `mean` / `std` (DATA.MEAN / DATA.STD),
    or float32 crops already normalised (an exported program's input); threshold: the division threshold.

    Returns {"pred_boxes": (B, 4) normalised cx, cy, w, h at the raw score peak, "tracker_box": (B, 4) the same at
    the Hann-windowed peak (what the tracker maps back), "score_map": (B, F, F, 1)} and, with `with_decisions`,
    "decisions": (B, L_div, Nx) class-1 decisions (1 = the search token interacts with the template).
    """
    if search.dtype == jnp.uint8:
        search = geometry.normalize_image(search, mean, std, xp=jnp)
    out = model.apply(variables, template, search, template_mask, train=False, threshold=threshold)
    window = hann2d(model.feat_size)[None, :, :, None]
    outputs = {"pred_boxes": out["pred_boxes"][:, 0],
               "tracker_box": cal_bbox(window * out["score_map"], out["size_map"], out["offset_map"]),
               "score_map": out["score_map"]}
    if with_decisions:
        outputs["decisions"] = jnp.swapaxes(out["decisions"][..., 1], 0, 1)
    return outputs

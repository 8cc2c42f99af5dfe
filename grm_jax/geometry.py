"""Host-side crop and label geometry shared by the training pipeline and the tracker (NumPy + OpenCV).

Everything here reproduces the official GRM conventions bit for bit where they matter for parity
(`lib/train/data/processing_utils.py: sample_target`, `lib/utils/heapmap_utils.py: generate_heatmap`,
`lib/utils/mask_utils.py: generate_mask_cond`, `lib/test/tracker/grm.py: GRM.map_box_back`): Python / torch
rounding (half to even), `int()` truncation, the +1 in the right/bottom crop padding and in the template mask
extents, float32 box arithmetic, OpenCV INTER_LINEAR resizing. Several of these look like bugs; they are
reproduced on purpose.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence as Seq

import cv2
import numpy as np

from .config import IMAGE_MEAN, IMAGE_STD

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "brightness_normalize",
    "brightness_table",
    "CropLayout",
    "crop_from_window",
    "crop_layout",
    "clip_box",
    "cxcywh_to_xywh",
    "cxcywh_to_xyxy",
    "gaussian_heatmap",
    "gaussian_radius",
    "heatmap_centers",
    "normalize_image",
    "sample_target",
    "standardize",
    "template_box_mask",
    "transform_image_to_crop",
    "xywh_to_cxcywh",
    "xywh_to_xyxy",
    "xyxy_to_cxcywh",
    "xyxy_to_xywh",
]

IMAGENET_MEAN = np.array(IMAGE_MEAN, np.float32)
IMAGENET_STD = np.array(IMAGE_STD, np.float32)
# CornerNet's min_overlap used by the official heat-map labels.
HEATMAP_MIN_OVERLAP = 0.7
# Crops refused before anything is allocated (the official code would ask OpenCV for the memory): a box whose
# side sqrt(w*h) exceeds MAX_BOX_TO_IMAGE x the image's longer side (a box on this image cannot be that large;
# the largest training scale jitter stays well below it), or a crop side beyond MAX_CROP_SIDE (a 3 GiB crop).
MAX_BOX_TO_IMAGE = 16
MAX_CROP_SIDE = 32768


# ------------------------------------------------------------------------------------------------ crops
@dataclass(frozen=True)
class CropLayout:
    """Where the square crop of `sample_target` lies: image rows [row0, row1) and columns [col0, col1) are copied
    (official slice bounds, Python semantics) and padded by (top, bottom, left, right) zeros."""
    crop_sz: int
    row0: int
    row1: int
    col0: int
    col1: int
    top: int
    bottom: int
    left: int
    right: int


def crop_layout(box_xywh: Seq[float], factor: float, image_hw: tuple[int, int]) -> CropLayout:
    """The official crop geometry (`processing_utils.py: sample_target`) for a box on an image of (H, W). Raises
    ValueError for a box whose crop would be empty (zero / negative / NaN size) or absurdly large (see
    MAX_BOX_TO_IMAGE, MAX_CROP_SIDE)."""
    x, y, w, h = (float(v) for v in box_xywh)
    box_side = math.sqrt(w * h) if w * h >= 0 else float("nan")
    area_side = box_side * factor
    if not math.isfinite(area_side) or not all(math.isfinite(v) for v in (x, y)):
        raise ValueError(f"sample_target: box {list(box_xywh)} with factor {factor} gives no finite crop")
    crop_sz = math.ceil(area_side)
    if crop_sz < 1:
        raise ValueError(f"sample_target: box {list(box_xywh)} with factor {factor} gives an empty crop")
    img_h, img_w = int(image_hw[0]), int(image_hw[1])
    if box_side > MAX_BOX_TO_IMAGE * max(img_h, img_w, 1) or crop_sz > MAX_CROP_SIDE:
        raise ValueError(f"sample_target: box {list(box_xywh)} with factor {factor} on a {img_w}x{img_h} image "
                         f"gives a {crop_sz}-pixel crop (limits: box side {MAX_BOX_TO_IMAGE}x the image, crop side "
                         f"{MAX_CROP_SIDE})")
    # Python round() is half-to-even, as in the official code.
    x1 = round(x + 0.5 * w - crop_sz * 0.5)
    y1 = round(y + 0.5 * h - crop_sz * 0.5)
    x2, y2 = x1 + crop_sz, y1 + crop_sz
    left, top = max(0, -x1), max(0, -y1)
    # Official off-by-one: touching the right/bottom border drops the last image column/row for a zero one.
    right, bottom = max(x2 - img_w + 1, 0), max(y2 - img_h + 1, 0)
    return CropLayout(crop_sz, y1 + top, y2 - bottom, x1 + left, x2 - right, top, bottom, left, right)


def crop_from_window(window: np.ndarray, layout: CropLayout, output_sz: int | None = None):
    """Finish `sample_target` from the already cut image window (rows/cols of `layout`): zero padding, padding
    mask, INTER_LINEAR resize. Returns `(crop, resize_factor, att_mask)`."""
    if window.size == 0:
        raise ValueError(f"sample_target: the crop (side {layout.crop_sz}) lies off the image")
    crop = cv2.copyMakeBorder(window, layout.top, layout.bottom, layout.left, layout.right,
                              cv2.BORDER_CONSTANT, value=0)
    pad_h, pad_w = crop.shape[:2]
    # The padding mask is 1 - valid_row x valid_col; INTER_LINEAR is separable with non-negative weights, so a
    # resized pixel is non-zero (padded) iff a contributing row or column is padding. Resizing the two 1-D
    # profiles with OpenCV (same weights as the 2-D resize) gives the official bool mask without building and
    # resizing a crop_sz^2 float64 image.
    rows = np.ones((pad_h, 1), np.float64)
    rows[layout.top:pad_h - layout.bottom] = 0.0
    cols = np.ones((1, pad_w), np.float64)
    cols[:, layout.left:pad_w - layout.right] = 0.0
    if output_sz is None:
        return crop, 1.0, (rows > 0) | (cols > 0)
    out = int(output_sz)
    resize_factor = out / layout.crop_sz
    crop = cv2.resize(crop, (out, out))  # INTER_LINEAR, like the official default
    rows_out = cv2.resize(rows, (1, out)).reshape(out, 1)
    cols_out = cv2.resize(cols, (out, 1)).reshape(1, out)
    return crop, resize_factor, (rows_out > 0) | (cols_out > 0)


def sample_target(image: np.ndarray, box_xywh: Seq[float], factor: float, output_sz: int | None = None):
    """Square crop of side ceil(sqrt(w*h)*factor) centred on the box, zero padded, resized to `output_sz`.

    Returns `(crop uint8 (S,S,3), resize_factor, att_mask bool (S,S))`, att_mask True on padding. With
    `output_sz=None` the crop is not resized (S = crop side) and resize_factor is 1.0.
    Raises ValueError for a box whose crop would be empty (zero/negative/NaN size) or lies wholly off the image.
    """
    layout = crop_layout(box_xywh, factor, image.shape[:2])
    # Same slice bounds as the official code (incl. Python's negative-index behaviour in degenerate cases).
    window = image[layout.row0:layout.row1, layout.col0:layout.col1]
    return crop_from_window(window, layout, output_sz)


def transform_image_to_crop(box_gt, box_extract, resize_factor, crop_sz, normalize: bool = False) -> np.ndarray:
    """Box (xywh, image pixels) into the coordinates of the crop cut around `box_extract` (float32, official).

    Crop centre convention (crop_sz - 1) / 2; `crop_sz` is a scalar or (2,) array; normalize -> / crop_sz[0].
    """
    box_gt = np.asarray(box_gt, np.float32)
    box_extract = np.asarray(box_extract, np.float32)
    crop = np.broadcast_to(np.asarray(crop_sz, np.float32), (2,))
    rf = np.float32(resize_factor)
    extract_centre = box_extract[:2] + np.float32(0.5) * box_extract[2:4]
    gt_centre = box_gt[:2] + np.float32(0.5) * box_gt[2:4]
    out_centre = (crop - np.float32(1)) / np.float32(2) + (gt_centre - extract_centre) * rf
    out_wh = box_gt[2:4] * rf
    box_out = np.concatenate([out_centre - np.float32(0.5) * out_wh, out_wh]).astype(np.float32)
    if normalize:
        return (box_out / crop[0]).astype(np.float32)
    return box_out


def clip_box(box: Seq[float], H: int, W: int, margin: int = 0) -> list[float]:
    """Official tracker's clip of an xywh box to the image, keeping at least `margin` pixels of size."""
    x1, y1, w, h = (float(v) for v in box)
    x2, y2 = x1 + w, y1 + h
    x1 = min(max(0, x1), W - margin)
    x2 = min(max(margin, x2), W)
    y1 = min(max(0, y1), H - margin)
    y2 = min(max(margin, y2), H)
    w = max(margin, x2 - x1)
    h = max(margin, y2 - y1)
    return [x1, y1, w, h]


def normalize_image(image, mean=IMAGENET_MEAN, std=IMAGENET_STD, xp=np):
    """uint8 HWC RGB -> float32 network input, `((x / 255) - mean) / std` in float32 (official
    `lib/test/tracker/data_utils.py: Preprocessor` and `lib/train/data/transforms.py: Normalize` after ToTensor).

    `xp` is the array module: NumPy on the host (IEEE division) or `jax.numpy` inside a jitted step (XLA's
    division), the same operations in the same order either way; `mean` / `std` are DATA.MEAN / DATA.STD."""
    return standardize(image.astype(xp.float32) / xp.float32(255.0), mean, std, xp)


def standardize(scaled, mean=IMAGENET_MEAN, std=IMAGENET_STD, xp=np):
    """`(scaled - mean) / std` per channel in float32 for pixel values in [0, 1] (official
    `lib/train/data/transforms.py: Normalize`): the one place the channel statistics are applied."""
    return (scaled - xp.asarray(mean, xp.float32)) / xp.asarray(std, xp.float32)


def brightness_table(gain, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """(256, 3) float32: the network input of every uint8 level per channel for a training crop,
    `(min(level * gain, 1) - mean) / std`, gain = float32(brightness / 255): the official ToTensorAndJitter +
    Normalize arithmetic in float32. Computed here in NumPy (IEEE division; XLA:CPU's float32 division is not
    correctly rounded) and applied per pixel by `brightness_normalize` on the host or, in training, by
    `grm_jax.train.step.device_images` on the device, so the input pipeline ships uint8 crops + tables."""
    levels = np.minimum(np.arange(256, dtype=np.float32) * np.float32(gain), np.float32(1.0))
    return standardize(levels[:, None], mean, std).astype(np.float32)


def brightness_normalize(crop: np.ndarray, table: np.ndarray) -> np.ndarray:
    """uint8 HWC crop -> float32 HWC through a `brightness_table` (cv2.LUT: the same numbers as pixel by pixel)."""
    return cv2.LUT(np.ascontiguousarray(crop), np.ascontiguousarray(table, np.float32).reshape(256, 1, 3))


# ----------------------------------------------------------------------------------------------- labels
def template_box_mask(boxes_norm_xywh, template_size: int, stride: int = 16) -> np.ndarray:
    """(B, Nz) float32 0/1 mask of the template tokens covered by each normalised xywh box
    (`mask_utils.py: generate_mask_cond`).

    Extents: rows int(y) .. int(y + h + 1) - 1 clipped to the grid (int truncates toward 0), same for columns;
    the box is scaled to cells in float32 like the official tensor code.
    """
    boxes = np.asarray(boxes_norm_xywh, np.float32).reshape(-1, 4)
    fs = int(template_size) // int(stride)
    cells = boxes * np.float32(fs)
    mask = np.zeros((len(boxes), fs, fs), np.float32)
    for i, (x, y, w, h) in enumerate(cells.tolist()):
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            raise ValueError(f"template_box_mask: box {i} is not finite: {boxes[i].tolist()}")
        # The official slices are built from Python ints, so degenerate (negative) ends behave as Python slices.
        mask[i, max(int(y), 0):min(int(y + h + 1), fs), max(int(x), 0):min(int(x + w + 1), fs)] = 1.0
    return mask.reshape(len(boxes), fs * fs)


def gaussian_radius(wh_cells: np.ndarray, min_overlap: float = HEATMAP_MIN_OVERLAP) -> np.ndarray:
    """CornerNet radius, the official "bug version" (float32, before truncation) for (.., 2) sizes in cells."""
    wh = np.asarray(wh_cells, np.float32)
    w, h = wh[..., 0], wh[..., 1]
    m = np.float32(min_overlap)
    one = np.float32(1)
    b1 = h + w
    c1 = w * h * (one - m) / (one + m)
    r1 = (b1 + np.sqrt(b1 ** 2 - np.float32(4) * c1)) / np.float32(2)
    b2 = np.float32(2) * (h + w)
    c2 = (one - m) * w * h
    r2 = (b2 + np.sqrt(b2 ** 2 - np.float32(16) * c2)) / np.float32(2)
    a3 = np.float32(4) * m
    b3 = np.float32(-2) * m * (h + w)
    c3 = (m - one) * w * h
    r3 = (b3 + np.sqrt(b3 ** 2 - np.float32(4) * a3 * c3)) / np.float32(2)
    return np.minimum(r1, np.minimum(r2, r3)).astype(np.float32)


def heatmap_centers(boxes_norm_xywh, search_size: int, stride: int = 16) -> np.ndarray:
    """Box centres in feature cells, rounded half to even (torch.round), float32 (B, 2)."""
    boxes = np.asarray(boxes_norm_xywh, np.float32).reshape(-1, 4)
    cells = boxes * np.float32(int(search_size) // int(stride))
    return np.round(cells[:, :2] + cells[:, 2:] / np.float32(2)).astype(np.float32)


def _gaussian_patch(radius: int) -> np.ndarray:
    sigma = (2 * radius + 1) / 6
    d = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(d[None, :] ** 2 + d[:, None] ** 2) / (2 * sigma * sigma))
    g[g < np.finfo(np.float64).eps * g.max()] = 0
    return g.astype(np.float32)


def gaussian_heatmap(boxes_norm_xywh, search_size: int, stride: int = 16) -> np.ndarray:
    """CenterNet Gaussian labels (B, F, F) float32 for normalised xywh search boxes (`lib/utils/heapmap_utils.py:
    generate_heatmap`)."""
    boxes = np.asarray(boxes_norm_xywh, np.float32).reshape(-1, 4)
    F = int(search_size) // int(stride)
    cells = boxes * np.float32(F)
    centres = heatmap_centers(boxes, search_size, stride)
    radii = np.maximum(gaussian_radius(cells[:, 2:]), np.float32(0))
    heat = np.zeros((len(boxes), F, F), np.float32)
    for i in range(len(boxes)):
        if not (np.all(np.isfinite(centres[i])) and np.isfinite(radii[i])):
            raise ValueError(f"gaussian_heatmap: box {i} is not finite: {boxes[i].tolist()}")
        r = int(radii[i])
        cx, cy = int(centres[i, 0]), int(centres[i, 1])
        # Clip the (2r+1)^2 patch to the map; a centre off the map still paints its overlapping part.
        x0, x1 = max(cx - r, 0), min(cx + r + 1, F)
        y0, y1 = max(cy - r, 0), min(cy + r + 1, F)
        if x0 >= x1 or y0 >= y1:
            continue
        patch = _gaussian_patch(r)
        heat[i, y0:y1, x0:x1] = np.maximum(heat[i, y0:y1, x0:x1],
                                           patch[y0 - cy + r:y1 - cy + r, x0 - cx + r:x1 - cx + r])
    return heat


# ------------------------------------------------------------------------------------------ box formats
def xywh_to_xyxy(b):
    b = np.asarray(b)
    return np.concatenate([b[..., :2], b[..., :2] + b[..., 2:4]], axis=-1)


def xyxy_to_xywh(b):
    b = np.asarray(b)
    return np.concatenate([b[..., :2], b[..., 2:4] - b[..., :2]], axis=-1)


def cxcywh_to_xyxy(b):
    b = np.asarray(b)
    half = b[..., 2:4] / 2
    return np.concatenate([b[..., :2] - half, b[..., :2] + half], axis=-1)


def xyxy_to_cxcywh(b):
    b = np.asarray(b)
    return np.concatenate([(b[..., :2] + b[..., 2:4]) / 2, b[..., 2:4] - b[..., :2]], axis=-1)


def xywh_to_cxcywh(b):
    b = np.asarray(b)
    return np.concatenate([b[..., :2] + b[..., 2:4] / 2, b[..., 2:4]], axis=-1)


def cxcywh_to_xywh(b):
    b = np.asarray(b)
    return np.concatenate([b[..., :2] - b[..., 2:4] / 2, b[..., 2:4]], axis=-1)

"""Synthetic tracking datasets written in the on-disk formats of the real ones.

Each sequence is a textured rectangle (a patch of a photograph with a coloured border, or a coloured pattern) moving
smoothly over a photograph shipped with scikit-image (or a procedural background) that pans slowly. The object
changes scale and aspect ratio, can be fully occluded by a passing patch, and can leave the image for a while.
Ground truth, visibility and occlusion labels are computed from the rendered pixels, so they are exact.

Everything is a pure function of (seed, format, split, sequence index): the same seed writes identical files.

The evaluation formats also get the benchmark's attribute annotations in its own layout, computed from the rendered
geometry (`sequence_attributes`): LaSOT test `annos/att/<seq>.txt` (the LaSOT toolkit's 14 values), UAV123
`anno/UAV123/att/<seq>.txt` (12), OTB `anno/att/<seq>.txt` (11), GOT-10k val object / motion classes in
`meta_info.ini`; NfS sequences get the occluder exactly when the official table marks them occluded; per-frame flags as each benchmark writes them (LaSOT full_occlusion / out_of_view, GOT-10k
absence / cover labels, UAV123 NaN rows). Attributes no rendering produces (illumination, deformation, blur,
rotation, clutter, viewpoint, similar objects, camera motion) are 0.

    write_dataset("lasot", root, num_sequences=4, num_frames=30, image_size=(160, 120), seed=0)
    write_all(root, size="tiny")       # every training and evaluation format under root/<format>/
"""
from __future__ import annotations

import json
import math
import os
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence as Seq

import cv2
import numpy as np
import skimage.data
from tqdm import tqdm

from grm_jax.evaluation import tables

TRAIN_FORMATS = ("got10k", "lasot", "trackingnet", "coco")
EVAL_FORMATS = ("lasot_test", "got10k_val", "got10k_test", "trackingnet_test", "nfs", "uav", "avist", "otb", "tnl2k")
FORMATS = TRAIN_FORMATS + EVAL_FORMATS

# (num_sequences, num_frames, image_size) per preset; eval formats use `eval_*`.
SIZES = {
    "tiny": dict(num_sequences=3, num_frames=(20, 40), image_size=(160, 120), eval_sequences=2, eval_frames=(20, 30)),
    "demo": dict(num_sequences=40, num_frames=60, image_size=(320, 240), eval_sequences=8, eval_frames=(60, 100)),
    "hd": dict(num_sequences=4, num_frames=60, image_size=(1280, 720), eval_sequences=2, eval_frames=60),
    "fullhd": dict(num_sequences=4, num_frames=60, image_size=(1920, 1080), eval_sequences=2, eval_frames=60),
}

_COLOR_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                 "colorwheel")
_GRAY_PHOTOS = ("camera", "brick", "grass", "gravel", "coins", "moon", "clock")
_LASOT_TRAIN_CLASSES = ("airplane", "bear", "bicycle", "bird", "boat", "car", "cat", "dog", "horse", "kite")


# ----------------------------------------------------------------------------------------------- image sources
@lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def _tinted_gray(name: str, rng: np.random.Generator) -> np.ndarray:
    """A grey photograph tinted with a random colour, so grey sources still give colour backgrounds."""
    tint = rng.uniform(0.55, 1.0, size=3)
    return np.clip(_photo(name).astype(np.float32) * tint, 0, 255).astype(np.uint8)


def _procedural_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    coarse = rng.uniform(30, 225, size=(rng.integers(3, 7), rng.integers(3, 7), 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    fine = cv2.resize(rng.normal(0, 18, size=(height // 4 + 1, width // 4 + 1, 3)).astype(np.float32),
                      (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(smooth + fine, 0, 255).astype(np.uint8)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A background larger than the frame (the camera pans inside it)."""
    if rng.random() < 0.25:
        return _procedural_background(rng, width, height)
    if rng.random() < 0.7:
        src = _photo(_COLOR_PHOTOS[rng.integers(len(_COLOR_PHOTOS))])
    else:
        src = _tinted_gray(_GRAY_PHOTOS[rng.integers(len(_GRAY_PHOTOS))], rng)
    scale = max(width / src.shape[1], height / src.shape[0])
    size = (max(width, math.ceil(src.shape[1] * scale)), max(height, math.ceil(src.shape[0] * scale)))
    out = cv2.resize(src, size, interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA)
    return out if rng.random() < 0.5 else out[:, ::-1].copy()


def _object_texture(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """A distinctive texture: a photo patch or a coloured pattern, always with a saturated border."""
    kind = rng.random()
    if kind < 0.6:
        src = _photo(_COLOR_PHOTOS[rng.integers(len(_COLOR_PHOTOS))])
        side = int(rng.integers(min(src.shape[:2]) // 4, min(src.shape[:2]) // 2))
        y = int(rng.integers(0, src.shape[0] - side))
        x = int(rng.integers(0, src.shape[1] - side))
        tex = cv2.resize(src[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)
    else:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        freq = rng.uniform(2, 6)
        angle = rng.uniform(0, np.pi)
        wave = np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)))
        c1, c2 = rng.uniform(0, 255, size=(2, 3))
        tex = np.where(wave[..., None] > 0, c1, c2).astype(np.uint8)
    hsv = np.uint8([[[rng.integers(0, 180), 255, 255]]])
    border = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    b = max(3, size // 16)
    tex[:b], tex[-b:], tex[:, :b], tex[:, -b:] = border, border, border, border
    return tex


# ------------------------------------------------------------------------------------------------- trajectories
@dataclass
class SyntheticSequence:
    """One rendered-on-demand sequence and its exact labels."""

    width: int
    height: int
    background: np.ndarray  # larger than the frame
    pan: np.ndarray  # (T, 2) int top-left of the camera window in the background
    texture: np.ndarray
    rects: np.ndarray  # (T, 4) int x0, y0, x1, y1 of the object (may extend beyond the image)
    occluder_rects: np.ndarray  # (T, 4) int, zero-size where no occluder
    occluder_texture: np.ndarray
    boxes: np.ndarray  # (T, 4) float64 xywh of the visible-in-image object extent; 0 rows when out of view
    out_of_view: np.ndarray  # (T,) bool: no object pixel inside the image
    full_occlusion: np.ndarray  # (T,) bool: in view but every pixel covered
    visible_fraction: np.ndarray  # (T,) float: uncovered in-image pixels / in-image pixels

    def __len__(self) -> int:
        return len(self.rects)

    @property
    def cover(self) -> np.ndarray:
        """GOT-10k cover level: 0 fully covered (or absent), 1..8 = visible fraction in eighths."""
        level = np.clip(np.ceil(self.visible_fraction * 8), 1, 8).astype(np.int64)
        level[self.full_occlusion | self.out_of_view] = 0
        return level

    @property
    def visible(self) -> np.ndarray:
        return ~(self.out_of_view | self.full_occlusion)

    def render(self, t: int) -> np.ndarray:
        px, py = self.pan[t]
        frame = self.background[py:py + self.height, px:px + self.width].copy()
        _paste(frame, self.texture, self.rects[t])
        _paste(frame, self.occluder_texture, self.occluder_rects[t])
        return frame


def _paste(frame: np.ndarray, texture: np.ndarray, rect: np.ndarray) -> None:
    x0, y0, x1, y1 = (int(v) for v in rect)
    if x1 <= x0 or y1 <= y0:
        return
    h, w = frame.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx1 <= cx0 or cy1 <= cy0:
        return
    patch = cv2.resize(texture, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    frame[cy0:cy1, cx0:cx1] = patch[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]


def _bump(t: np.ndarray, start: float, length: float) -> np.ndarray:
    """0 outside [start, start+length], a smooth sine bump reaching 1 in the middle."""
    u = (t - start) / length
    return np.where((u > 0) & (u < 1), np.sin(np.pi * np.clip(u, 0, 1)), 0.0)


def make_sequence(rng: np.random.Generator, num_frames: int, width: int, height: int,
                  occlusion: bool | None = None, out_of_view: bool | None = None) -> SyntheticSequence:
    """Draw one sequence. `occlusion` / `out_of_view`: force (True/False) or draw (None) the events."""
    T = int(num_frames)
    t = np.arange(T, dtype=np.float64)
    margin_x, margin_y = int(round(width * 0.12)), int(round(height * 0.12))
    background = _background(rng, width + 2 * margin_x, height + 2 * margin_y)
    bh, bw = background.shape[:2]
    # slow camera pan inside the background
    pan_x = (bw - width) * (0.5 + 0.45 * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t / 60 + rng.uniform(0, 6.3)))
    pan_y = (bh - height) * (0.5 + 0.45 * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t / 60 + rng.uniform(0, 6.3)))
    pan = np.stack([np.round(pan_x), np.round(pan_y)], axis=1).astype(np.int64)

    # object size: area 2-8 % of the frame, aspect 0.5..2, smooth scale / aspect changes (about +-25 %)
    area = rng.uniform(0.02, 0.08) * width * height
    aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    scale = np.exp(rng.uniform(0.05, 0.22) * np.sin(2 * np.pi * rng.uniform(0.2, 0.8) * t / 60 + rng.uniform(0, 6.3)))
    stretch = np.exp(rng.uniform(0.03, 0.15) * np.sin(2 * np.pi * rng.uniform(0.2, 0.8) * t / 60
                                                      + rng.uniform(0, 6.3)))
    w = np.sqrt(area * aspect) * scale * stretch
    h = np.sqrt(area / aspect) * scale / stretch
    w = np.minimum(w, 0.45 * width)
    h = np.minimum(h, 0.45 * height)

    # centre: two harmonics per axis, kept inside the frame; speed independent of the sequence length
    def axis(extent: float, size: np.ndarray) -> np.ndarray:
        room = 0.5 * extent - 0.5 * size.max() - 2
        a1, a2 = rng.uniform(0.35, 0.7), rng.uniform(0.0, 0.25)
        f1, f2 = rng.uniform(0.3, 0.9), rng.uniform(0.8, 1.8)
        wave = a1 * np.sin(2 * np.pi * f1 * t / 60 + rng.uniform(0, 6.3)) + \
            a2 * np.sin(2 * np.pi * f2 * t / 60 + rng.uniform(0, 6.3))
        return 0.5 * extent + room * wave / (a1 + a2)

    cx, cy = axis(width, w), axis(height, h)

    events_possible = T >= 16
    if out_of_view is None:
        out_of_view = events_possible and rng.random() < 0.35
    if occlusion is None:
        occlusion = events_possible and rng.random() < 0.35
    if out_of_view and events_possible:
        length = max(6.0, min(T * 0.25, 30.0))
        start = rng.uniform(0.3 * T, max(0.3 * T, 0.95 * T - length))
        # push the centre beyond the nearest vertical border far enough to leave the frame in the middle
        mid = int(min(T - 1, start + length / 2))
        toward_left = cx[mid] < width / 2
        distance = (cx[mid] + w[mid] / 2 + 4) if toward_left else (width - cx[mid] + w[mid] / 2 + 4)
        cx = cx + (-1 if toward_left else 1) * distance / 0.8 * _bump(t, start, length)
    x0 = np.round(cx - w / 2).astype(np.int64)
    y0 = np.round(cy - h / 2).astype(np.int64)
    x1 = np.maximum(x0 + 4, np.round(cx + w / 2).astype(np.int64))
    y1 = np.maximum(y0 + 4, np.round(cy + h / 2).astype(np.int64))
    rects = np.stack([x0, y0, x1, y1], axis=1)

    occluder_rects = np.zeros((T, 4), dtype=np.int64)
    if occlusion and events_possible:
        length = max(8.0, min(T * 0.3, 30.0))
        start = rng.uniform(0.25 * T, max(0.25 * T, 0.95 * T - length))
        u = (t - start) / length
        active = (u > 0) & (u < 1)
        ow, oh = (x1 - x0) * 1.8 + 6, (y1 - y0) * 1.5 + 6
        # slides across the object: fully covers it for the middle part of the event
        ocx = (x0 + x1) / 2 + (u - 0.5) * 2 * (x1 - x0) * 1.9
        ocy = (y0 + y1) / 2
        occ = np.stack([np.round(ocx - ow / 2), np.round(ocy - oh / 2), np.round(ocx + ow / 2),
                        np.round(ocy + oh / 2)], axis=1).astype(np.int64)
        occluder_rects[active] = occ[active]

    # exact labels from the integer rectangles
    ix0, iy0 = np.clip(x0, 0, width), np.clip(y0, 0, height)
    ix1, iy1 = np.clip(x1, 0, width), np.clip(y1, 0, height)
    in_w, in_h = ix1 - ix0, iy1 - iy0
    in_area = np.maximum(in_w, 0) * np.maximum(in_h, 0)
    oov = in_area <= 0
    ox0 = np.maximum(ix0, occluder_rects[:, 0])
    oy0 = np.maximum(iy0, occluder_rects[:, 1])
    ox1 = np.minimum(ix1, occluder_rects[:, 2])
    oy1 = np.minimum(iy1, occluder_rects[:, 3])
    covered = np.maximum(ox1 - ox0, 0) * np.maximum(oy1 - oy0, 0)
    covered[occluder_rects[:, 2] <= occluder_rects[:, 0]] = 0
    visible_fraction = np.where(oov, 0.0, 1.0 - covered / np.maximum(in_area, 1))
    full_occ = (~oov) & (covered >= in_area)
    boxes = np.stack([ix0, iy0, in_w, in_h], axis=1).astype(np.float64)
    boxes[oov] = 0.0

    return SyntheticSequence(
        width=width, height=height, background=background, pan=pan, texture=_object_texture(rng),
        rects=rects, occluder_rects=occluder_rects, occluder_texture=_background(rng, 96, 96),
        boxes=boxes, out_of_view=oov, full_occlusion=full_occ, visible_fraction=visible_fraction,
    )


# --------------------------------------------------------------------------------------------------- attributes
def sequence_attributes(seq: SyntheticSequence) -> dict[str, bool]:
    """What a sequence shows, by the benchmarks' attribute definitions, from its rendered rectangles.

    FOC: some frame fully occluded; POC: some frame partly covered by the occluder; OCC (OTB): either;
    OV: the object entirely outside the image in some frame (LaSOT's definition); OV_PART: part of it outside
    (OTB / UAV123's "some portion of the target leaves the view"); SV / ARC: the box area's square root /
    aspect ratio relative to frame 0 outside [0.5, 2]; FM: the centre moves more than 20 px between consecutive
    frames; LR / LR1000: fewer than 400 / 1000 pixels in the box in some frame (OTB and UAV123 / LaSOT).
    """
    r = seq.rects.astype(np.float64)
    w, h = r[:, 2] - r[:, 0], r[:, 3] - r[:, 1]
    area = w * h
    scale = np.sqrt(area / area[0])
    aspect = (w / h) / (w[0] / h[0])
    centre = np.stack([(r[:, 0] + r[:, 2]) / 2, (r[:, 1] + r[:, 3]) / 2], axis=1)
    motion = np.hypot(*np.diff(centre, axis=0).T) if len(centre) > 1 else np.zeros(0)
    partly_outside = (r[:, 0] < 0) | (r[:, 1] < 0) | (r[:, 2] > seq.width) | (r[:, 3] > seq.height)
    partial = (~seq.out_of_view) & (~seq.full_occlusion) & (seq.visible_fraction < 1.0)
    return {"FOC": bool(seq.full_occlusion.any()), "POC": bool(partial.any()),
            "OCC": bool(partial.any() or seq.full_occlusion.any()), "OV": bool(seq.out_of_view.any()),
            "OV_PART": bool(partly_outside.any()), "SV": bool(((scale < 0.5) | (scale > 2)).any()),
            "ARC": bool(((aspect < 0.5) | (aspect > 2)).any()), "FM": bool((motion > 20).any()),
            "LR": bool((area < 400).any()), "LR1000": bool((area < 1000).any())}


# Attribute file columns per benchmark (grm_jax.evaluation.attributes.ATTRIBUTE_NAMES order) -> which computed
# property fills each; None = not rendered (0).
_ATTRIBUTE_COLUMNS = {
    "lasot": (None, "POC", None, None, None, None, None, None, "SV", "FOC", "FM", "OV", "LR1000", "ARC"),
    "uav": ("SV", "ARC", "LR", "FM", "FOC", "POC", "OV_PART", None, None, None, None, None),
    "otb": (None, None, "SV", "OCC", None, None, "FM", None, "OV_PART", None, "LR"),
}


def _attribute_line(seq: SyntheticSequence, benchmark: str) -> str:
    found = sequence_attributes(seq)
    return ",".join("1" if key is not None and found[key] else "0" for key in _ATTRIBUTE_COLUMNS[benchmark]) + "\n"


def _got10k_classes(seq: SyntheticSequence) -> tuple[str, str]:
    """GOT-10k-style object and motion classes that describe what the sequence renders."""
    r = seq.rects
    wide = np.median((r[:, 2] - r[:, 0]) / (r[:, 3] - r[:, 1])) >= 1.0
    if seq.out_of_view.any():
        motion = "leaving the view"
    elif seq.full_occlusion.any() or (seq.visible_fraction < 1.0).any():
        motion = "passing behind an occluder"
    else:
        motion = "moving in view"
    return ("wide textured object" if wide else "tall textured object"), motion


# ------------------------------------------------------------------------------------------------------ writing
def _rng(seed: int, *keys) -> np.random.Generator:
    """Independent stream per (seed, format, split, index): stable across runs and Python versions."""
    entropy = [int(seed)] + [zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def _frame_count(rng: np.random.Generator, num_frames) -> int:
    if isinstance(num_frames, (tuple, list)):
        return int(rng.integers(num_frames[0], num_frames[1] + 1))
    return int(num_frames)


_JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, 90]


def _write_image(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           _JPEG_PARAMS if path.suffix == ".jpg" else [])
    if not ok:
        raise IOError(f"cannot encode {path}")
    path.write_bytes(buf.tobytes())


def _write_frames(seq: SyntheticSequence, paths: Seq[Path]) -> None:
    assert len(paths) == len(seq)
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for t, p in enumerate(paths):
        _write_image(p, seq.render(t))


def _box_lines(boxes: np.ndarray, delimiter: str = ",", fmt: str = "{:.0f}", nan_rows=None) -> str:
    lines = []
    for i, b in enumerate(boxes):
        if nan_rows is not None and nan_rows[i]:
            lines.append(delimiter.join(["NaN"] * 4))
        else:
            lines.append(delimiter.join(fmt.format(v) for v in b))
    return "\n".join(lines) + "\n"


def _flags_line(flags: np.ndarray) -> str:
    return ",".join(str(int(v)) for v in flags) + "\n"


def _flags_lines(flags: np.ndarray) -> str:
    return "\n".join(str(int(v)) for v in flags) + "\n"


def _progress(total: int, desc: str, enabled: bool):
    return tqdm(total=total, desc=desc, unit="seq", disable=not enabled, leave=False)


def _size(image_size) -> tuple[int, int]:
    w, h = image_size
    return int(w), int(h)


def _write_got10k(root: Path, split: str, n: int, num_frames, image_size, seed: int, bar) -> dict:
    split_dir = root / split
    split_dir.mkdir(parents=True, exist_ok=True)
    prefix = {"train": "GOT-10k_Train", "val": "GOT-10k_Val", "test": "GOT-10k_Test"}[split]
    names = [f"{prefix}_{i + 1:06d}" for i in range(n)]
    width, height = _size(image_size)
    for i, name in enumerate(names):
        rng = _rng(seed, "got10k", split, i)
        seq = make_sequence(rng, _frame_count(rng, num_frames), width, height)
        d = split_dir / name
        _write_frames(seq, [d / f"{k + 1:08d}.jpg" for k in range(len(seq))])
        boxes = seq.boxes if split != "test" else seq.boxes[:1]
        (d / "groundtruth.txt").write_text(_box_lines(boxes, ",", "{:.4f}"))
        if split != "test":
            (d / "absence.label").write_text(_flags_lines(seq.out_of_view))
            (d / "cover.label").write_text(_flags_lines(seq.cover))
            (d / "cut_by_image.label").write_text(_flags_lines(np.zeros(len(seq), dtype=int)))
            # the validation split's classes describe the rendering (attribute groups of the analysis)
            object_class, motion_class = _got10k_classes(seq) if split == "val" else ("synthetic", "moving")
            (d / "meta_info.ini").write_text(
                "[METAINFO]\nurl: synthetic\nbegin_time: 0\nend_time: 0\nduration: 0\nanno_fps: 10Hz\n"
                f"object_class: {object_class}\nmotion_class: {motion_class}\nmajor_class: object\n"
                f"root_class: object\nmotion_adverb: smoothly\nresolution: ({width}, {height})\n")
        bar.update(1)
    (split_dir / "list.txt").write_text("\n".join(names) + "\n")
    if split == "train" and n > 1:
        # dataset-local split file (overrides the shipped official one): all but the second sequence
        (split_dir / "got10k_vot_train_split.txt").write_text("\n".join(str(i) for i in range(n) if i != 1) + "\n")
    return {"sequences": names}


def _lasot_train_names(n: int) -> list[str]:
    test = set(tables.lasot_test_names())
    names = []
    k = 1
    while len(names) < n:
        for cls in _LASOT_TRAIN_CLASSES:
            name = f"{cls}-{k}"
            if name not in test and len(names) < n:
                names.append(name)
        k += 1
    return names


def _write_lasot(root: Path, names: list[str], num_frames, image_size, seed: int, bar, tag: str) -> dict:
    width, height = _size(image_size)
    for i, name in enumerate(names):
        rng = _rng(seed, "lasot", tag, i)
        seq = make_sequence(rng, _frame_count(rng, num_frames), width, height)
        d = root / name.rsplit("-", 1)[0] / name
        _write_frames(seq, [d / "img" / f"{k + 1:08d}.jpg" for k in range(len(seq))])
        (d / "groundtruth.txt").write_text(_box_lines(seq.boxes))
        (d / "full_occlusion.txt").write_text(_flags_line(seq.full_occlusion))
        (d / "out_of_view.txt").write_text(_flags_line(seq.out_of_view))
        (d / "nlp.txt").write_text("a synthetic textured object\n")
        if tag == "test":   # the LaSOT evaluation toolkit's attribute file (annos/att), test sequences
            (root / "annos" / "att").mkdir(parents=True, exist_ok=True)
            (root / "annos" / "att" / f"{name}.txt").write_text(_attribute_line(seq, "lasot"))
        bar.update(1)
    return {"sequences": names}


def _trackingnet_name(rng: np.random.Generator, i: int) -> str:
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"))
    return "".join(rng.choice(alphabet, size=11)) + f"_{i % 3}"


def _write_trackingnet(root: Path, split: str, n: int, num_frames, image_size, seed: int, bar,
                       num_chunks: int) -> dict:
    width, height = _size(image_size)
    chunks = [f"TRAIN_{i % num_chunks}" for i in range(n)] if split == "train" else ["TEST"] * n
    written = []
    for i in range(n):
        rng = _rng(seed, "trackingnet", split, i)
        name = _trackingnet_name(rng, i)
        seq = make_sequence(rng, _frame_count(rng, num_frames), width, height)
        chunk = root / chunks[i]
        _write_frames(seq, [chunk / "frames" / name / f"{k}.jpg" for k in range(len(seq))])
        (chunk / "anno").mkdir(parents=True, exist_ok=True)
        boxes = seq.boxes if split == "train" else seq.boxes[:1]
        (chunk / "anno" / f"{name}.txt").write_text(_box_lines(boxes, ",", "{:.2f}"))
        written.append(f"{chunks[i]}/{name}")
        bar.update(1)
    return {"sequences": written}


def _write_coco(root: Path, n: int, image_size, seed: int, bar) -> dict:
    width, height = _size(image_size)
    img_dir = root / "images" / "train2017"
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    ann_id = 1
    for i in range(n):
        rng = _rng(seed, "coco", i)
        frame = _background(rng, width, height)[:height, :width].copy()
        file_name = f"{i + 1:012d}.jpg"
        num_objects = int(rng.integers(1, 4))
        for k in range(num_objects):
            small = k == 1  # one small object (< 50 px) per image with >1 object: kept, never filtered
            side_w = rng.uniform(0.08, 0.14) * width if small else rng.uniform(0.2, 0.45) * width
            side_h = rng.uniform(0.08, 0.14) * height if small else rng.uniform(0.2, 0.45) * height
            x = int(rng.integers(0, max(1, width - int(side_w))))
            y = int(rng.integers(0, max(1, height - int(side_h))))
            rect = np.array([x, y, x + int(side_w), y + int(side_h)])
            _paste(frame, _object_texture(rng), rect)
            bw, bh = float(rect[2] - rect[0]), float(rect[3] - rect[1])
            iscrowd = int(k == 2)  # crowd annotations exist in COCO and are skipped by the reader
            annotations.append({
                "id": ann_id, "image_id": i + 1, "category_id": 1 + int(rng.integers(0, 3)), "iscrowd": iscrowd,
                "bbox": [float(x), float(y), bw, bh], "area": bw * bh,
                "segmentation": [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]],
            })
            ann_id += 1
        _write_image(img_dir / file_name, frame)
        images.append({"id": i + 1, "file_name": file_name, "width": width, "height": height})
        bar.update(1)
    categories = [{"id": 1, "name": "box", "supercategory": "thing"},
                  {"id": 2, "name": "pattern", "supercategory": "thing"},
                  {"id": 3, "name": "patch", "supercategory": "thing"}]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_train2017.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return {"images": n, "annotations": len(annotations)}


def _pick(names: list[str], n: int) -> list[str]:
    if n <= 0:
        return []
    if n > len(names):
        raise ValueError(f"this format has only {len(names)} sequences, asked for {n}")
    # spread over the list so different classes / kinds are represented
    idx = np.linspace(0, len(names) - 1, n).round().astype(int)
    return [names[i] for i in idx]


def _write_table_sequences(fmt: str, root: Path, n: int, num_frames, image_size, seed: int, bar,
                           names: Seq[str] | None) -> dict:
    """NfS / UAV123 / OTB: frame numbers and annotation paths come from the official tables."""
    width, height = _size(image_size)
    table = tables.table(fmt)
    if names is not None:
        chosen = list(names)
    else:
        # the special cases first (a UAV sub-sequence starting late; OTB init_omit, 5-digit frames, a late
        # start, a second target), then picks spread over the table
        special = _SPECIAL_TABLE_ENTRIES.get(fmt, ())[:max(1, n // 2)]
        chosen = list(special) + _pick([e["name"] for e in table if e["name"] not in special], n - len(special))
    entries = {e["name"]: e for e in table}
    for i, name in enumerate(chosen):
        e = entries[name]
        rng = _rng(seed, fmt, name)
        omit = e.get("init_omit", 0)
        count = min(_frame_count(rng, num_frames), e["end"] - e["start"] + 1 - omit)
        # NfS: the official table's occlusion flag is the twin's attribute, so the occluder follows it
        occlusion = bool(e["occlusion"]) if fmt == "nfs" else None
        seq = make_sequence(rng, count + omit, width, height, occlusion=occlusion)
        numbers = range(e["start"], e["start"] + count + omit)
        _write_frames(seq, [root / e["path"] / f"{k:0{e['nz']}d}.{e['ext']}" for k in numbers])
        anno = root / e["anno"]
        anno.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "nfs":
            anno.write_text(_box_lines(seq.boxes, "\t"))
        elif fmt == "uav":
            anno.write_text(_box_lines(seq.boxes, ",", nan_rows=seq.out_of_view))
            (anno.parent / "att").mkdir(exist_ok=True)
            (anno.parent / "att" / anno.name).write_text(_attribute_line(seq, "uav"))
        else:
            anno.write_text(_box_lines(seq.boxes, "," if i % 2 == 0 else "\t"))  # OTB mixes delimiters
            (root / "anno" / "att").mkdir(parents=True, exist_ok=True)
            (root / "anno" / "att" / f"{name[len('otb_'):]}.txt").write_text(_attribute_line(seq, "otb"))
        bar.update(1)
    return {"sequences": chosen}


_SPECIAL_TABLE_ENTRIES = {"uav": ("uav_bird1_2", "uav_car1_3"),
                          "otb": ("otb_Tiger1", "otb_Board", "otb_BlurCar3", "otb_Jogging_2")}


def _write_avist(root: Path, names: list[str], num_frames, image_size, seed: int, bar) -> dict:
    width, height = _size(image_size)
    for name in names:
        rng = _rng(seed, "avist", name)
        seq = make_sequence(rng, _frame_count(rng, num_frames), width, height)
        _write_frames(seq, [root / "sequences" / name / f"img_{k + 1:05d}.jpg" for k in range(len(seq))])
        for sub, text in (("anno", _box_lines(seq.boxes, " ")),
                          ("full_occlusion", _flags_line(seq.full_occlusion)),
                          ("out_of_view", _flags_line(seq.out_of_view))):
            (root / sub).mkdir(parents=True, exist_ok=True)
            fname = f"{name}.txt" if sub == "anno" else f"{name}_{sub}.txt"
            (root / sub / fname).write_text(text)
        bar.update(1)
    return {"sequences": names}


def _write_tnl2k(root: Path, n: int, num_frames, image_size, seed: int, bar) -> dict:
    width, height = _size(image_size)
    names = [f"synthetic_{i:03d}_textured_object" for i in range(n)]
    for i, name in enumerate(names):
        rng = _rng(seed, "tnl2k", i)
        seq = make_sequence(rng, _frame_count(rng, num_frames), width, height)
        d = root / name
        # TNL2K mixes .jpg and .png and zero-padding styles; frames sort lexicographically
        ext = "png" if i == 1 else "jpg"
        _write_frames(seq, [d / "imgs" / f"{k:05d}.{ext}" for k in range(len(seq))])
        (d / "groundtruth.txt").write_text(_box_lines(seq.boxes))
        (d / "language.txt").write_text("the textured object moving over the picture\n")
        bar.update(1)
    return {"sequences": names}


def write_dataset(fmt: str, root: str | os.PathLike, num_sequences: int = 3, num_frames=30,
                  image_size=(160, 120), seed: int = 0, *, split: str | None = None, names: Seq[str] | None = None,
                  num_chunks: int = 2, progress: bool = False) -> dict:
    """Write one synthetic dataset in the on-disk format `fmt` (see FORMATS) under `root`.

    num_frames: int or (min, max) inclusive range drawn per sequence. image_size: (width, height).
    Training formats: "got10k" (split train|val|test under root/<split>), "lasot" (split train|test; test uses
    official LaSOT test names), "trackingnet" (split train -> TRAIN_0..num_chunks-1, test -> TEST), "coco"
    (num_sequences images, 1-3 objects each). Evaluation formats: "lasot_test", "got10k_val", "got10k_test",
    "trackingnet_test" (aliases of the above), "nfs", "uav", "avist", "otb" (names from the official tables,
    `names` to choose), "tnl2k". Returns a summary dict (what was written).
    """
    root = Path(root)
    aliases = {"lasot_test": ("lasot", "test"), "got10k_val": ("got10k", "val"), "got10k_test": ("got10k", "test"),
               "trackingnet_test": ("trackingnet", "test")}
    if fmt in aliases:
        fmt, split = aliases[fmt]
    if fmt not in FORMATS:
        raise ValueError(f"unknown synthetic format {fmt!r}; choose one of {', '.join(FORMATS)}")
    root.mkdir(parents=True, exist_ok=True)
    bar = _progress(num_sequences if names is None else len(names), f"synthetic {fmt}", progress)
    try:
        if fmt == "got10k":
            split = split or "train"
            if split not in ("train", "val", "test"):
                raise ValueError(f"GOT-10k split must be train, val or test, not {split!r}")
            out = _write_got10k(root, split, num_sequences, num_frames, image_size, seed, bar)
        elif fmt == "lasot":
            split = split or "train"
            if split == "train":
                seq_names = list(names) if names is not None else _lasot_train_names(num_sequences)
                out = _write_lasot(root, seq_names, num_frames, image_size, seed, bar, "train")
                # dataset-local train split (overrides the shipped official list of 1120 names)
                (root / "lasot_train_split.txt").write_text("\n".join(seq_names) + "\n")
            elif split == "test":
                seq_names = list(names) if names is not None else _pick(tables.lasot_test_names(), num_sequences)
                out = _write_lasot(root, seq_names, num_frames, image_size, seed, bar, "test")
            else:
                raise ValueError(f"LaSOT split must be train or test, not {split!r}")
        elif fmt == "trackingnet":
            split = split or "train"
            if split not in ("train", "test"):
                raise ValueError(f"TrackingNet split must be train or test, not {split!r}")
            out = _write_trackingnet(root, split, num_sequences, num_frames, image_size, seed, bar, num_chunks)
        elif fmt == "coco":
            out = _write_coco(root, num_sequences, image_size, seed, bar)
        elif fmt in ("nfs", "uav", "otb"):
            out = _write_table_sequences(fmt, root, num_sequences, num_frames, image_size, seed, bar, names)
        elif fmt == "avist":
            seq_names = list(names) if names is not None else _pick(tables.avist_names(), num_sequences)
            out = _write_avist(root, seq_names, num_frames, image_size, seed, bar)
        else:
            out = _write_tnl2k(root, num_sequences, num_frames, image_size, seed, bar)
    finally:
        bar.close()
    return {"format": fmt, "split": split, "root": str(root), **out}


def write_all(root: str | os.PathLike, size: str = "tiny", seed: int = 0, *, formats: Seq[str] | None = None,
              progress: bool = False, **overrides) -> dict:
    """Write every format (or `formats`) under root/<name>: got10k (train, val, test), lasot (train + test
    sequences in one root, as the real LaSOT), trackingnet (train chunks + TEST), coco, nfs, uav, avist, otb,
    tnl2k. `size` is a preset of SIZES; keyword overrides replace preset values."""
    if size not in SIZES:
        raise ValueError(f"unknown size preset {size!r}; choose one of {', '.join(SIZES)}")
    p = {**SIZES[size], **overrides}
    root = Path(root)
    wanted = tuple(formats) if formats is not None else ("got10k", "lasot", "trackingnet", "coco", "nfs", "uav",
                                                          "avist", "otb", "tnl2k")
    train_kw = dict(num_sequences=p["num_sequences"], num_frames=p["num_frames"], image_size=p["image_size"],
                    seed=seed, progress=progress)
    eval_kw = dict(num_sequences=p["eval_sequences"], num_frames=p["eval_frames"], image_size=p["image_size"],
                   seed=seed, progress=progress)
    summary = {}
    for fmt in wanted:
        r = root / fmt
        if fmt == "got10k":
            summary[fmt] = [write_dataset(fmt, r, split="train", **train_kw),
                            write_dataset(fmt, r, split="val", **eval_kw),
                            write_dataset(fmt, r, split="test", **eval_kw)]
        elif fmt == "lasot":
            summary[fmt] = [write_dataset(fmt, r, split="train", **train_kw),
                            write_dataset(fmt, r, split="test", **eval_kw)]
        elif fmt == "trackingnet":
            summary[fmt] = [write_dataset(fmt, r, split="train", **train_kw),
                            write_dataset(fmt, r, split="test", **eval_kw)]
        elif fmt == "coco":
            summary[fmt] = [write_dataset(fmt, r, **{**train_kw, "num_sequences": 4 * p["num_sequences"]})]
        elif fmt in ("nfs", "uav", "avist", "otb", "tnl2k"):
            summary[fmt] = [write_dataset(fmt, r, **eval_kw)]
        else:
            raise ValueError(f"unknown format {fmt!r} for write_all")
    return summary


def count_files(root: str | os.PathLike) -> tuple[int, int]:
    """(number of files, total bytes) under root."""
    n = size = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            n += 1
            size += os.path.getsize(os.path.join(dirpath, f))
    return n, size


__all__ = ["EVAL_FORMATS", "FORMATS", "SIZES", "SyntheticSequence", "TRAIN_FORMATS", "count_files",
           "make_sequence", "sequence_attributes", "write_all", "write_dataset"]


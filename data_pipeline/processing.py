"""Official `GRMProcessing` (`lib/train/data/processing.py`, mode `sequence`) on a template/search frame pair,
NumPy + OpenCV.

Frames come as `FrameSource`s: an in-memory image (`ArrayFrame`) or a JPEG file decoded lazily (`JpegFrame`),
which with `window=True` decodes only the rectangle the crop needs (`tf.io.decode_and_crop_jpeg`). Flip and
grayscale are applied to that window only, which is exact: both act pixel by pixel or mirror coordinates.
"""
from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass

import cv2
import numpy as np

from grm_jax import geometry
from grm_jax.sequence import FrameError, decode_frame, read_bytes, read_frame

from .prepared_store import is_frame_ref, read_frame_bytes

__all__ = ["ArrayFrame", "InvalidSample", "JpegFrame", "ProcessingSettings", "normalized_images", "open_frame",
           "process_pair"]


class InvalidSample(ValueError):
    """The pair cannot give a training sample (crop all padding, degenerate box, ...): draw another."""


@dataclass(frozen=True)
class ProcessingSettings:
    template_size: int = 128
    search_size: int = 256
    template_factor: float = 2.0
    search_factor: float = 4.0
    template_center_jitter: float = 0.0
    template_scale_jitter: float = 0.0
    search_center_jitter: float = 3.0
    search_scale_jitter: float = 0.25
    mean: tuple = tuple(geometry.IMAGENET_MEAN.tolist())
    std: tuple = tuple(geometry.IMAGENET_STD.tolist())
    stride: int = 16
    grayscale_prob: float = 0.05
    flip_prob: float = 0.5
    brightness_jitter: float = 0.2
    norm_flip_prob: float = 0.5

    @classmethod
    def from_config(cls, cfg) -> "ProcessingSettings":
        d = cfg.DATA
        return cls(template_size=int(d.TEMPLATE.SIZE), search_size=int(d.SEARCH.SIZE),
                   template_factor=float(d.TEMPLATE.FACTOR), search_factor=float(d.SEARCH.FACTOR),
                   template_center_jitter=float(d.TEMPLATE.CENTER_JITTER),
                   template_scale_jitter=float(d.TEMPLATE.SCALE_JITTER),
                   search_center_jitter=float(d.SEARCH.CENTER_JITTER),
                   search_scale_jitter=float(d.SEARCH.SCALE_JITTER),
                   mean=tuple(float(v) for v in d.MEAN), std=tuple(float(v) for v in d.STD),
                   stride=int(cfg.MODEL.BACKBONE.STRIDE))


# ------------------------------------------------------------------------------------------- frame sources
class ArrayFrame:
    """An image already in memory (uint8 RGB HWC)."""

    def __init__(self, image: np.ndarray, path: str = "<array>"):
        self.image, self.path = image, path
        self.shape = image.shape[:2]

    def window(self, row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
        return self.image[row0:row1, col0:col1]


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes, path: str) -> tuple[int, int]:
    """(H, W) from the JPEG start-of-frame header."""
    if data[:2] != b"\xff\xd8":
        raise FrameError(f"not a JPEG file (no start-of-image marker): {path}")
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in _SOF_MARKERS:
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return h, w
        i += 2 + length
    raise FrameError(f"corrupt JPEG (no frame header): {path}")


class JpegFrame:
    """A JPEG read lazily. `window=True`: only the crop's rectangle is decoded (INTEGER_ACCURATE IDCT, like
    libjpeg in cv2.imread; a window differs from the full decode on ~0.1 % of pixels at chroma edges, see
    tests/test_pipeline.py::test_window_decode_matches_full_decode). `window=False`: the whole frame, exactly as
    `cv2.imread` (via `read_frame`)."""

    def __init__(self, path: str, window: bool = True, data: bytes | None = None):
        # data: the file's bytes when they come from elsewhere (a prepared dataset's record); `path` then only
        # names the frame in errors
        self.path = os.fspath(path)
        self.windowed = window and (self.path.lower().endswith((".jpg", ".jpeg")) or data is not None)
        if self.windowed:
            try:
                self.data = read_bytes(self.path) if data is None else data
            except OSError as err:
                raise FrameError(f"cannot read frame {self.path}: {err.strerror or err}") from None
            if not self.data:
                raise FrameError(f"frame file is empty: {self.path}")
            if b"\xff\xd9" not in self.data[-4096:]:
                raise FrameError(f"truncated or corrupt JPEG (no end-of-image marker): {self.path}")
            self.shape = _jpeg_size(self.data, self.path)
            self.image = None
        else:
            self.image = read_frame(self.path) if data is None else decode_frame(data, self.path, jpeg=True)
            self.shape = self.image.shape[:2]

    def window(self, row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
        if self.image is not None:
            return self.image[row0:row1, col0:col1]
        h, w = self.shape
        r0, r1, c0, c1 = max(row0, 0), min(row1, h), max(col0, 0), min(col1, w)
        if r1 <= r0 or c1 <= c0:
            return np.zeros((0, 0, 3), np.uint8)
        import tensorflow as tf

        try:
            out = tf.io.decode_and_crop_jpeg(self.data, [r0, c0, r1 - r0, c1 - c0], channels=3,
                                             dct_method="INTEGER_ACCURATE")
        except tf.errors.OpError as err:
            raise FrameError(f"cannot decode JPEG {self.path}: {err.message}") from None
        return out.numpy()


def open_frame(path: str, window: bool = True):
    """The frame at `path`: a file (local or a file-system URL) or a prepared dataset's frame reference."""
    if is_frame_ref(path):
        data, name = read_frame_bytes(path)
        return JpegFrame(name, window=window, data=data)
    return JpegFrame(path, window=window)


class _Transformed:
    """A frame seen through the joint grayscale / full-image flip, evaluated on windows only."""

    def __init__(self, frame, gray: bool, flip: bool):
        self.frame, self.gray, self.flip = frame, gray, flip
        self.shape = frame.shape

    def window(self, row0, row1, col0, col1):
        h, w = self.shape
        if self.flip:
            # columns [c0, c1) of the mirrored image are columns [W - c1, W - c0) of the original, reversed
            if col0 < 0 or col1 < 0 or col1 <= col0:
                return np.zeros((0, 0, 3), np.uint8)
            win = self.frame.window(row0, row1, w - col1, w - col0)
            win = cv2.flip(np.ascontiguousarray(win), 1) if win.size else win
        else:
            win = self.frame.window(row0, row1, col0, col1)
        if self.gray and win.size:
            g = cv2.cvtColor(np.ascontiguousarray(win), cv2.COLOR_RGB2GRAY)
            win = np.stack([g, g, g], axis=2)
        return win


# ------------------------------------------------------------------------------------------------ processing
def _jitter_box(box: np.ndarray, center_jitter: float, scale_jitter: float, rng) -> np.ndarray:
    """Official jitter in float32: size * exp(N(0,1) * scale_jitter); centre + sqrt(w'h') * cj * (U - 0.5)."""
    box = box.astype(np.float32)
    size = box[2:4] * np.exp(rng.standard_normal(2).astype(np.float32) * np.float32(scale_jitter))
    max_offset = np.sqrt(np.prod(size)) * np.float32(center_jitter)
    centre = box[:2] + np.float32(0.5) * box[2:4] + max_offset * (rng.random(2).astype(np.float32) - np.float32(0.5))
    return np.concatenate([centre - np.float32(0.5) * size, size]).astype(np.float32)


def _nearest_all_padding(att: np.ndarray, size: int) -> bool:
    idx = np.floor(np.arange(size) * (att.shape[0] / size)).astype(int)
    return bool(np.all(att[np.ix_(idx, idx)]))


def _crop_one(frame, box: np.ndarray, factor: float, out_sz: int, center_jitter: float, scale_jitter: float,
              rng, stride: int):
    jittered = _jitter_box(box, center_jitter, scale_jitter, rng)
    w, h = float(jittered[2]), float(jittered[3])
    if not (math.isfinite(w) and math.isfinite(h)) or w * h < 0 or math.ceil(math.sqrt(w * h) * factor) < 1:
        raise InvalidSample(f"jittered box {jittered.tolist()} gives an empty crop")
    try:
        layout = geometry.crop_layout(jittered.tolist(), factor, frame.shape)
        window = frame.window(layout.row0, layout.row1, layout.col0, layout.col1)
        crop, rf, att = geometry.crop_from_window(window, layout, out_sz)
    except ValueError as err:
        raise InvalidSample(str(err)) from None
    if att.all() or _nearest_all_padding(att, out_sz // stride):
        raise InvalidSample("crop is all padding")
    anno = geometry.transform_image_to_crop(box.astype(np.float32), jittered, rf,
                                            np.array([out_sz, out_sz], np.float32), normalize=True)
    return crop, anno


def _finish(crop: np.ndarray, anno: np.ndarray, rng, s: ProcessingSettings):
    """Per-frame transform: brightness factor b ~ U(0.8, 1.2), then the independent normalised flip.

    Returns the (flipped) uint8 crop, its box and its `geometry.brightness_table` (256 x 3 float32: brightness,
    clamp and Normalize of every level); `normalized_images` (host) or `train.step.device_images` (device)
    apply it."""
    b = rng.uniform(max(0.0, 1.0 - s.brightness_jitter), 1.0 + s.brightness_jitter)
    table = geometry.brightness_table(np.float32(b / 255.0), s.mean, s.std)
    if rng.random() < s.norm_flip_prob:
        crop = cv2.flip(crop, 1)
        anno = anno.copy()
        anno[0] = np.float32(1) - (anno[0] + anno[2])
    return np.ascontiguousarray(crop, np.uint8), anno.astype(np.float32), table


def normalized_images(sample: dict) -> dict:
    """`process_pair`'s uint8 crops + level tables -> the float32 network inputs (template, search) on the host."""
    return {k: geometry.brightness_normalize(sample[k], sample[f"{k}_lut"]) for k in ("template", "search")}


def process_pair(template_frame, template_box, search_frame, search_box, rng: np.random.Generator,
                 settings: ProcessingSettings) -> dict:
    """One training sample from a frame pair (frames: FrameSource or uint8 arrays; boxes xywh pixels).

    Returns template (Hz,Wz,3), search (Hx,Wx,3) uint8 crops with template_lut, search_lut (256,3) float32 level
    tables (see `normalized_images`; 4x fewer bytes through tf.data and to the device than float32 images);
    template_anno, search_anno (4,) normalised xywh; template_mask (Nz,) float32; heatmap (F,F) float32.
    Raises InvalidSample (draw another pair)."""
    s = settings
    if isinstance(template_frame, np.ndarray):
        template_frame = ArrayFrame(template_frame)
    if isinstance(search_frame, np.ndarray):
        search_frame = ArrayFrame(search_frame)
    boxes = [np.asarray(template_box, np.float64), np.asarray(search_box, np.float64)]
    for b in boxes:
        if not (np.all(np.isfinite(b)) and b[2] > 0 and b[3] > 0):
            raise InvalidSample(f"unusable box {b.tolist()}")
    # joint transform, rolled once for both frames
    gray = rng.random() < s.grayscale_prob
    flip = rng.random() < s.flip_prob
    frames = []
    for frame, i in ((template_frame, 0), (search_frame, 1)):
        if flip:
            b = boxes[i].astype(np.float32)
            b[0] = np.float32(frame.shape[1] - 1) - (b[0] + b[2])
            boxes[i] = b
        frames.append(_Transformed(frame, gray, flip))

    t_crop, t_anno = _crop_one(frames[0], boxes[0], s.template_factor, s.template_size, s.template_center_jitter,
                               s.template_scale_jitter, rng, s.stride)
    x_crop, x_anno = _crop_one(frames[1], boxes[1], s.search_factor, s.search_size, s.search_center_jitter,
                               s.search_scale_jitter, rng, s.stride)
    template, t_anno, t_lut = _finish(t_crop, t_anno, rng, s)
    search, x_anno, x_lut = _finish(x_crop, x_anno, rng, s)
    return {
        "template": template,
        "search": search,
        "template_lut": t_lut,
        "search_lut": x_lut,
        "template_anno": t_anno,
        "search_anno": x_anno,
        "template_mask": geometry.template_box_mask(t_anno[None], s.template_size, s.stride)[0],
        "heatmap": geometry.gaussian_heatmap(x_anno[None], s.search_size, s.stride)[0],
    }

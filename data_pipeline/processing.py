"""Official `GRMProcessing` (`lib/train/data/processing.py`, mode `sequence`) on a template/search frame pair,
NumPy + OpenCV.

Frames come as `FrameSource`s: an in-memory image (`ArrayFrame`) or a JPEG file decoded lazily (`JpegFrame`),
which with `window=True` decodes only the rectangle the crop needs (`tf.io.decode_and_crop_jpeg`). Flip and
grayscale are applied to that window only, which is exact: both act pixel by pixel or mirror coordinates.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import cv2
import numpy as np
import tensorflow as tf

from grm_jax import geometry
from grm_jax.sequence import FrameError, decode_frame, read_bytes, read_frame

from .prepared_store import is_frame_ref, read_frame_bytes as read_prepared_frame

__all__ = ["ArrayFrame", "InvalidSample", "JpegFrame", "ProcessingSettings", "RngDraws", "ReplayDraws",
           "normalized_images", "open_frame", "process_pair", "read_frame_bytes"]


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


def read_frame_bytes(path: str) -> bytes:
    """The bytes of one frame file, local or a file-system URL (the one place the Python path reads frame files)."""
    try:
        data = read_bytes(path)
    except OSError as err:
        raise FrameError(f"cannot read frame {path}: {err.strerror or err}") from None
    if not data:
        raise FrameError(f"frame file is empty: {path}")
    return data


def _jpeg_size(data: bytes, path: str) -> tuple[int, int]:
    """(H, W) from the JPEG header (`tf.io.extract_jpeg_shape`)."""
    try:
        shape = tf.io.extract_jpeg_shape(data).numpy()
    except tf.errors.OpError as err:
        raise FrameError(f"corrupt JPEG or not a JPEG file ({err.message}): {path}") from None
    return int(shape[0]), int(shape[1])


class JpegFrame:
    """A JPEG read lazily. `window=True`: only the crop's rectangle is decoded (INTEGER_ACCURATE IDCT, like
    libjpeg in cv2.imread; a window differs from the full decode on ~0.1 % of pixels at chroma edges, see
    tests/test_pipeline.py::test_window_decode_matches_full_decode). `window=False`: the whole frame, exactly as
    `cv2.imread` (via `read_frame`)."""

    def __init__(self, path: str, window: bool = True, data: bytes | None = None):
        # data: the file's bytes when they come from elsewhere (a prepared dataset's record); `path` then only
        # names the frame in errors
        self.path = os.fspath(path)
        self.image = None
        if not window:
            self.image = read_frame(self.path) if data is None else decode_frame(data, self.path)
            self.shape = self.image.shape[:2]
            return
        self.data = read_frame_bytes(self.path) if data is None else data
        if not self.data:
            raise FrameError(f"frame file is empty: {self.path}")
        if self.data[:2] != b"\xff\xd8":
            # not a JPEG whatever its name says (e.g. a PNG saved as .jpg): decoded whole, by content, as
            # cv2.imread and the official loaders do
            self.image = decode_frame(self.data, self.path)
            self.shape = self.image.shape[:2]
            return
        if b"\xff\xd9" not in self.data[-4096:]:
            raise FrameError(f"truncated or corrupt JPEG (no end-of-image marker): {self.path}")
        self.shape = _jpeg_size(self.data, self.path)

    def window(self, row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
        if self.image is not None:
            return self.image[row0:row1, col0:col1]
        h, w = self.shape
        r0, r1, c0, c1 = max(row0, 0), min(row1, h), max(col0, 0), min(col1, w)
        if r1 <= r0 or c1 <= c0:
            return np.zeros((0, 0, 3), np.uint8)
        try:
            out = tf.io.decode_and_crop_jpeg(self.data, [r0, c0, r1 - r0, c1 - c0], channels=3,
                                             dct_method="INTEGER_ACCURATE")
        except tf.errors.OpError as err:
            raise FrameError(f"cannot decode JPEG {self.path}: {err.message}") from None
        return out.numpy()


def open_frame(path: str, window: bool = True):
    """The frame at `path`: a file (local or a file-system URL) or a prepared dataset's frame reference."""
    if is_frame_ref(path):
        data, name = read_prepared_frame(path)
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
class RngDraws:
    """The random draws of `process_pair`, taken from a NumPy generator in the order the code asks for them."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def coin(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def jitter(self, scale_jitter: float) -> tuple[np.ndarray, np.ndarray]:
        """(size growth exp(N(0,1) * scale_jitter), centre shift U[0,1)) per axis, float32 (official order)."""
        growth = np.exp(self.rng.standard_normal(2).astype(np.float32) * np.float32(scale_jitter))
        return growth, self.rng.random(2).astype(np.float32)

    def uniform(self, low: float, high: float) -> float:
        return float(self.rng.uniform(low, high))


class ReplayDraws(RngDraws):
    """Given draws, handed out in call order (to rerun a pair with the draws of another generator)."""

    def __init__(self, values):
        self.values = list(values)

    def _next(self):
        if not self.values:
            raise IndexError("ReplayDraws: more draws asked for than given")
        return self.values.pop(0)

    def coin(self, p):
        return bool(self._next())

    def jitter(self, scale_jitter):
        growth, shift = self._next()
        return np.asarray(growth, np.float32), np.asarray(shift, np.float32)

    def uniform(self, low, high):
        return float(self._next())


def _jitter_box(box: np.ndarray, center_jitter: float, scale_jitter: float, draws: RngDraws) -> np.ndarray:
    """Official jitter in float32: size * exp(N(0,1) * scale_jitter); centre + sqrt(w'h') * cj * (U - 0.5)."""
    box = box.astype(np.float32)
    growth, shift = draws.jitter(scale_jitter)
    size = box[2:4] * growth
    max_offset = np.sqrt(np.prod(size)) * np.float32(center_jitter)
    centre = box[:2] + np.float32(0.5) * box[2:4] + max_offset * (shift - np.float32(0.5))
    return np.concatenate([centre - np.float32(0.5) * size, size]).astype(np.float32)


def _nearest_all_padding(att: np.ndarray, size: int) -> bool:
    idx = np.floor(np.arange(size) * (att.shape[0] / size)).astype(int)
    return bool(np.all(att[np.ix_(idx, idx)]))


def _crop_one(frame, box: np.ndarray, factor: float, out_sz: int, center_jitter: float, scale_jitter: float,
              draws: RngDraws, stride: int):
    jittered = _jitter_box(box, center_jitter, scale_jitter, draws)
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
    draws = rng if isinstance(rng, RngDraws) else RngDraws(rng)
    """Per-frame transform: brightness factor b ~ U(0.8, 1.2), then the independent normalised flip.

    Returns the (flipped) uint8 crop, its box and its `geometry.brightness_table` (256 x 3 float32: brightness,
    clamp and Normalize of every level); `normalized_images` (host) or `train.step.device_images` (device)
    apply it."""
    b = draws.uniform(max(0.0, 1.0 - s.brightness_jitter), 1.0 + s.brightness_jitter)
    table = geometry.brightness_table(np.float32(b / 255.0), s.mean, s.std)
    if draws.coin(s.norm_flip_prob):
        crop = cv2.flip(crop, 1)
        anno = anno.copy()
        anno[0] = np.float32(1) - (anno[0] + anno[2])
    return np.ascontiguousarray(crop, np.uint8), anno.astype(np.float32), table


def normalized_images(sample: dict) -> dict:
    """`process_pair`'s uint8 crops + level tables -> the float32 network inputs (template, search) on the host."""
    return {k: geometry.brightness_normalize(sample[k], sample[f"{k}_lut"]) for k in ("template", "search")}


def process_pair(template_frame, template_box, search_frame, search_box, rng,
                 settings: ProcessingSettings) -> dict:
    """One training sample from a frame pair (frames: FrameSource or uint8 arrays; boxes xywh pixels).

    Returns template (Hz,Wz,3), search (Hx,Wx,3) uint8 crops with template_lut, search_lut (256,3) float32 level
    tables (see `normalized_images`; 4x fewer bytes through tf.data and to the device than float32 images);
    template_anno, search_anno (4,) normalised xywh; template_mask (Nz,) float32; heatmap (F,F) float32.
    `rng`: a NumPy generator (or `RngDraws`; `ReplayDraws` reruns given draws). Raises InvalidSample (draw
    another pair)."""
    s = settings
    draws = rng if isinstance(rng, RngDraws) else RngDraws(rng)
    if isinstance(template_frame, np.ndarray):
        template_frame = ArrayFrame(template_frame)
    if isinstance(search_frame, np.ndarray):
        search_frame = ArrayFrame(search_frame)
    boxes = [np.asarray(template_box, np.float64), np.asarray(search_box, np.float64)]
    for b in boxes:
        if not (np.all(np.isfinite(b)) and b[2] > 0 and b[3] > 0):
            raise InvalidSample(f"unusable box {b.tolist()}")
    # joint transform, rolled once for both frames
    gray = draws.coin(s.grayscale_prob)
    flip = draws.coin(s.flip_prob)
    frames = []
    for frame, i in ((template_frame, 0), (search_frame, 1)):
        if flip:
            b = boxes[i].astype(np.float32)
            b[0] = np.float32(frame.shape[1] - 1) - (b[0] + b[2])
            boxes[i] = b
        frames.append(_Transformed(frame, gray, flip))

    t_crop, t_anno = _crop_one(frames[0], boxes[0], s.template_factor, s.template_size, s.template_center_jitter,
                               s.template_scale_jitter, draws, s.stride)
    x_crop, x_anno = _crop_one(frames[1], boxes[1], s.search_factor, s.search_size, s.search_center_jitter,
                               s.search_scale_jitter, draws, s.stride)
    template, t_anno, t_lut = _finish(t_crop, t_anno, draws, s)
    search, x_anno, x_lut = _finish(x_crop, x_anno, draws, s)
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

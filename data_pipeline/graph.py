"""The per-sample training input as TensorFlow graph ops: pair draw, JPEG window decode, crop + resize, flips,
grayscale, brightness level table and labels, with no Python per sample.

tf.data runs these ops on its own thread pool without the GIL, so throughput grows with cores, and the whole
pipeline is a serialisable graph that tf.data service workers can run on other machines.

Mirrors the official `lib/train/data/sampler.py: TrackingSampler` (causal mode), `lib/train/data/processing.py:
GRMProcessing` and `lib/train/data/processing_utils.py: sample_target / transform_image_to_crop`, as the Python
path (`sampler.PairSampler`, `processing.process_pair`) does:
- randomness: stateless TF random ops keyed by (seed, global sample index, attempt); a sample is a pure function
  of (seed, index), but the stream is not the Python path's (a different generator).
- geometry and labels: the Python path's float32 / float64 arithmetic op for op (jitter, crop layout with
  half-to-even rounding, `transform_image_to_crop`, template mask, Gaussian heat map), so for the same draw
  parameters the labels are identical. The jitter's exp is taken in float64 and rounded to float32 (portable
  across CPUs; NumPy's float32 exp is not correctly rounded and depends on the CPU's SIMD level).
- pixels: the crop's window is decoded as in the Python path (`tf.io.decode_and_crop_jpeg`, INTEGER_ACCURATE),
  grayscale is OpenCV's fixed-point RGB2GRAY exactly, and the zero-padded INTER_LINEAR resize samples the same
  source pixels with the same weights in float32 (OpenCV uses 11-bit fixed point): within 1 grey level.
- bad frames: a frame that cannot be read or decoded (missing, empty, truncated, not a JPEG) raises inside the
  attempt; `ignore_errors` drops that attempt and the next attempt of the same sample is drawn. Attempts whose
  geometry is invalid (degenerate box, crop all padding, ...) come out with `ok=False` and are redrawn too.
  `redraws` = attempts before the used one, `bad_frames` = how many of them were dropped by an error.

Frames are read by ONE object (`FileFrameReader.read(path)`: `tf.io.read_file`, which accepts local, gfile and
cloud paths, and a prepared dataset's frame references); another bytes-backed frame store can replace it with
the same method.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from grm_jax.geometry import HEATMAP_MIN_OVERLAP

from .prepared_store import PREFIX as PREPARED_PREFIX, read_record_bytes
from .readers.index import LazySequences
from .sampler import GAP_INCREASE_STEP

__all__ = ["FileFrameReader", "GraphSampleFn", "PairTable", "MAX_FRAME_TRIES"]

MAX_FRAME_TRIES = 100  # template/search draws with a growing gap before the attempt counts as invalid
# OpenCV's RGB2GRAY for 8-bit images: 15-bit fixed-point 0.299 R + 0.587 G + 0.114 B, rounded
_GRAY_COEFFS = (9798, 19235, 3735)
_GRAY_SHIFT = 15
_PATTERN = re.compile(r"^([^{}]*)\{(?::(0?)(\d*)d)?\}([^{}]*)$")
_JPEG_SUFFIXES = (".jpg", ".jpeg")


class FileFrameReader:
    """Frame bytes by path (`tf.io.read_file`: local, gfile and cloud paths). With `prepared`, a path may also
    be a prepared dataset's frame reference (`prepared_store.frame_ref`): its serialized record is looked up by
    `prepared_store.read_record_bytes` in `tf.numpy_function` (array_record has no TF op: the lookup holds the
    GIL, the parse, the decode and the rest of the sample do not; a graph with it cannot run on tf.data service
    workers)."""

    def __init__(self, prepared: bool = False):
        self.prepared = bool(prepared)

    def read(self, path):
        if not self.prepared:
            return tf.io.read_file(path)

        def record(ref):
            return read_record_bytes(ref.decode())

        def prepared():
            # Python only looks the serialized record up; the `tf.train.Example` is parsed by a TF op
            raw = tf.ensure_shape(tf.numpy_function(record, [path], tf.string, stateful=False,
                                                    name="prepared_record"), [])
            return tf.io.parse_single_example(raw, {"image": tf.io.FixedLenFeature([], tf.string)})["image"]

        return tf.cond(tf.strings.regex_full_match(path, re.escape(PREPARED_PREFIX) + ".*"), prepared,
                       lambda: tf.io.read_file(path))


# ------------------------------------------------------------------------------------------ sequence tables
@dataclass
class PairTable:
    """What the graph sampler needs of the training datasets, as flat arrays (S eligible sequences over all
    datasets, V frames usable as template or search, i.e. visible frames).

    A frame path is `seq_base[s] + prefix[d] + zero-padded(first[d] + frame, width[d]) + suffix[d]`, or
    `vis_path[v]` for sequences given as explicit path lists."""

    cum_probs: np.ndarray        # (D,) float64
    seq_start: np.ndarray        # (D,) int64: first row of dataset d in the sequence arrays
    seq_count: np.ndarray        # (D,) int64
    is_video: np.ndarray         # (D,) bool
    prefix: list
    width: np.ndarray            # (D,) int64
    suffix: list
    first: np.ndarray            # (D,) int64
    seq_base: list               # (S,) str
    seq_length: np.ndarray       # (S,) int64
    seq_dataset: np.ndarray      # (S,) int64
    vis_start: np.ndarray        # (S,) int64
    vis_count: np.ndarray        # (S,) int64
    template_count: np.ndarray   # (S,) int64: visible frames before the last frame
    vis_frame: np.ndarray        # (V,) int64
    vis_box: np.ndarray          # (V, 4) float32 xywh
    vis_path: list | None        # (V,) str, "" where the pattern applies; None if no sequence needs it

    @classmethod
    def from_sampler(cls, sampler) -> "PairTable":
        D = len(sampler.datasets)
        prefix, suffix = [""] * D, [""] * D
        width, first = np.zeros(D, np.int64), np.zeros(D, np.int64)
        seq_start, seq_count = np.zeros(D, np.int64), np.zeros(D, np.int64)
        is_video = np.array([bool(d.is_video) for d in sampler.datasets])
        seq_base, seq_length, seq_dataset, vis_count, template_count = [], [], [], [], []
        vis_frame, vis_box, vis_path = [], [], []
        explicit_any = False
        for d, (dataset, rows) in enumerate(zip(sampler.datasets, sampler.eligible)):
            seq_start[d] = len(seq_base)
            seq_count[d] = len(rows) if sampler.probs[d] > 0 else 0
            if sampler.probs[d] == 0:
                continue
            seqs = dataset.sequences
            index = seqs.index if isinstance(seqs, LazySequences) else None
            pattern = None
            if index is not None and index.files is None:
                pattern = _parse_pattern(index.pattern)
            if pattern is not None:
                prefix[d], width[d], suffix[d] = pattern
                first[d] = index.first
            for row in rows:
                if index is not None:
                    r = int(seqs.rows[row])
                    a, b = int(index.offsets[r]), int(index.offsets[r + 1])
                    visible, boxes = index.visible[a:b], index.boxes[a:b]
                    frames = None if pattern is not None else index.sequence(r).frames
                    base = os.path.join(index.root, index.dirs[r], "") if pattern is not None else ""
                else:
                    seq = seqs[int(row)]
                    # sequences given as objects carry their own path lists: explicit paths per frame
                    visible, boxes, frames, base = np.asarray(seq.visible, bool), seq.boxes, seq.frames, ""
                n = len(visible)
                ids = np.flatnonzero(visible) if dataset.is_video else np.array([0])
                seq_base.append(base)
                seq_length.append(n)
                seq_dataset.append(d)
                vis_count.append(len(ids))
                template_count.append(int(np.sum(ids < n - 1)) if dataset.is_video else 1)
                vis_frame.append(ids)
                vis_box.append(np.asarray(boxes, np.float32)[ids].reshape(-1, 4))
                if frames is None:
                    vis_path.append([""] * len(ids))
                else:
                    explicit_any = True
                    vis_path.append([str(frames[int(i)]) for i in ids])
        vis_start = np.concatenate([[0], np.cumsum(vis_count)[:-1]]).astype(np.int64)
        table = cls(
            cum_probs=np.cumsum(sampler.probs), seq_start=seq_start, seq_count=seq_count, is_video=is_video,
            prefix=prefix, width=width, suffix=suffix, first=first, seq_base=seq_base,
            seq_length=np.asarray(seq_length, np.int64), seq_dataset=np.asarray(seq_dataset, np.int64),
            vis_start=vis_start, vis_count=np.asarray(vis_count, np.int64),
            template_count=np.asarray(template_count, np.int64),
            vis_frame=np.concatenate(vis_frame).astype(np.int64) if vis_frame else np.zeros(0, np.int64),
            vis_box=np.concatenate(vis_box).astype(np.float32) if vis_box else np.zeros((0, 4), np.float32),
            vis_path=[p for ps in vis_path for p in ps] if explicit_any else None)
        table.check_jpeg()
        return table

    @property
    def has_prepared(self) -> bool:
        """Whether frames come from a prepared dataset (references instead of paths)."""
        return any(p.startswith(PREPARED_PREFIX) for p in self.vis_path or ())

    def check_jpeg(self) -> None:
        """The graph path decodes JPEG only: one clear error for another format."""
        for d, sfx in enumerate(self.suffix):
            if self.seq_count[d] and self.vis_path is None and not sfx.lower().endswith(_JPEG_SUFFIXES):
                raise ValueError(f"DATA.PIPELINE=graph reads JPEG frames only; frames of dataset {d} end with "
                                 f"{sfx!r}: use DATA.PIPELINE=python")
        for p in self.vis_path or ():
            # a prepared dataset's frames are the JPEG files of the download, whatever their reference says
            if p and not p.startswith(PREPARED_PREFIX) and not p.lower().endswith(_JPEG_SUFFIXES):
                raise ValueError(f"DATA.PIPELINE=graph reads JPEG frames only, not {p}: use DATA.PIPELINE=python")


def _parse_pattern(pattern: str):
    """'{:08d}.jpg' -> ('', 8, '.jpg'); None if not a single integer field."""
    m = _PATTERN.match(pattern or "")
    if m is None or (m.group(3) and not m.group(2)):  # space padding is not supported
        return None
    return m.group(1), int(m.group(3) or 0), m.group(4)


# ------------------------------------------------------------------------------------------ graph sampling
class GraphSampleFn:
    """`attempt(index, attempt)` -> dict of tensors: one draw of sample `index` and, when its geometry is valid,
    the processed pair (`ok`), as graph ops. See the module docstring."""

    def __init__(self, sampler, settings, seed: int, reader=None):
        self.settings, self.seed = settings, int(seed)
        self.max_interval = int(sampler.max_interval)
        t = PairTable.from_sampler(sampler)
        self.reader = reader or FileFrameReader(prepared=t.has_prepared)
        self.table = t
        c = lambda v, dt: tf.constant(np.asarray(v), dt)  # noqa: E731
        self.cum_probs = c(t.cum_probs, tf.float64)
        self.seq_start, self.seq_count = c(t.seq_start, tf.int64), c(t.seq_count, tf.int64)
        self.is_video = c(t.is_video, tf.bool)
        self.prefix, self.suffix = c(t.prefix, tf.string), c(t.suffix, tf.string)
        self.width, self.first = c(t.width, tf.int64), c(t.first, tf.int64)
        self.seq_base = c(t.seq_base if t.seq_base else [""], tf.string)
        self.seq_length, self.seq_dataset = c(t.seq_length, tf.int64), c(t.seq_dataset, tf.int64)
        self.vis_start, self.vis_count = c(t.vis_start, tf.int64), c(t.vis_count, tf.int64)
        self.template_count = c(t.template_count, tf.int64)
        self.vis_frame, self.vis_box = c(t.vis_frame, tf.int64), c(t.vis_box, tf.float32)
        self.vis_path = None if t.vis_path is None else c(t.vis_path, tf.string)

    # --- randomness: one Philox stream per (seed, index, attempt)
    def _key(self, index, attempt):
        key = tf.stack([tf.constant(self.seed & 0xFFFFFFFF, tf.int64), tf.cast(index, tf.int64)])
        return tf.random.experimental.stateless_fold_in(key, tf.cast(attempt, tf.int64))

    @staticmethod
    def _below(u, n):
        """floor(u * n) for u in [0, 1): a uniform integer in [0, n)."""
        return tf.minimum(tf.cast(tf.floor(u * tf.cast(n, tf.float64)), tf.int64), tf.maximum(n - 1, 0))

    # --- the pair draw (official TrackingSampler, causal mode)
    def draw(self, key, u):
        """-> (template_path, search_path, template_box, search_box, found) from the attempt's uniforms u[0:4]
        (and, when the first template has no search frame in reach, further draws from `key`)."""
        d = tf.minimum(tf.searchsorted(self.cum_probs, u[0:1], side="right", out_type=tf.int64)[0],
                       tf.size(self.cum_probs, out_type=tf.int64) - 1)
        s = self.seq_start[d] + self._below(u[1], self.seq_count[d])
        n, vs, vc, tc = self.seq_length[s], self.vis_start[s], self.vis_count[s], self.template_count[s]
        frames = self.vis_frame[vs:vs + vc]

        def pick(i, u_t, u_s):
            t_pos = self._below(u_t, tc)
            # the search range widens after every failed try, as `sampler.PairSampler.draw_frames`
            hi = tf.minimum(frames[t_pos] + self.max_interval + GAP_INCREASE_STEP * i, n)
            hi_pos = tf.searchsorted(frames, hi[None], side="left", out_type=tf.int64)[0]
            count = hi_pos - (t_pos + 1)
            return t_pos, t_pos + 1 + self._below(u_s, count), count > 0

        def retry(i, t_pos, s_pos, found):
            v = tf.random.stateless_uniform([2], tf.random.experimental.stateless_fold_in(key, i), dtype=tf.float64)
            return (i + 1,) + pick(i, v[0], v[1])

        def video():
            t_pos, s_pos, found = pick(tf.constant(0, tf.int64), u[2], u[3])
            return tf.cond(found, lambda: (t_pos, s_pos, found), lambda: tf.while_loop(
                lambda i, a, b, f: tf.logical_and(tf.logical_not(f), i < MAX_FRAME_TRIES), retry,
                (tf.constant(1, tf.int64), t_pos, s_pos, found))[1:])

        zero = tf.constant(0, tf.int64)
        t_pos, s_pos, found = tf.cond(self.is_video[d], video, lambda: (zero, zero, tf.constant(True)))
        t_vis, s_vis = vs + t_pos, vs + s_pos
        return (self._path(d, s, t_vis), self._path(d, s, s_vis), self.vis_box[t_vis], self.vis_box[s_vis],
                found)

    def _path(self, d, s, v):
        number = tf.strings.as_string(self.first[d] + self.vis_frame[v])
        pad = tf.maximum(self.width[d] - tf.cast(tf.strings.length(number), tf.int64), 0)
        zeros = tf.strings.substr(tf.constant("0" * 32), 0, tf.cast(pad, tf.int32))
        patterned = tf.strings.join([self.seq_base[s], self.prefix[d], zeros, number, self.suffix[d]])
        if self.vis_path is None:
            return patterned
        explicit = self.vis_path[v]
        return tf.where(tf.strings.length(explicit) > 0, explicit, patterned)

    # --- one attempt: draw + processing
    def draws(self, index, attempt) -> dict:
        """Every random quantity of one attempt (tensors): the frame pair and the processing draws."""
        st = self.settings
        key = self._key(index, attempt)
        u = tf.random.stateless_uniform([14], key, dtype=tf.float64)
        normal = tf.cast(tf.random.stateless_normal(
            [4], tf.random.experimental.stateless_fold_in(key, -1), dtype=tf.float64), tf.float32)
        t_path, s_path, t_box, s_box, found = self.draw(key, u)
        low, high = max(0.0, 1.0 - st.brightness_jitter), 1.0 + st.brightness_jitter
        return {"template_path": t_path, "search_path": s_path, "template_box": t_box, "search_box": s_box,
                "found": found, "gray": u[4] < st.grayscale_prob, "flip": u[5] < st.flip_prob,
                "template_growth": jitter_growth(normal[0:2], st.template_scale_jitter),
                "template_shift": tf.cast(u[6:8], tf.float32),
                "search_growth": jitter_growth(normal[2:4], st.search_scale_jitter),
                "search_shift": tf.cast(u[8:10], tf.float32),
                "template_brightness": low + (high - low) * u[10], "template_norm_flip": u[11] < st.norm_flip_prob,
                "search_brightness": low + (high - low) * u[12], "search_norm_flip": u[13] < st.norm_flip_prob}

    def draw_parameters(self, index, attempt) -> dict:
        """`draws` as numpy values (eager; for tests and for naming bad frames in logs)."""
        return {k: v.numpy() for k, v in self.draws(index, attempt).items()}

    def attempt(self, index, attempt) -> dict:
        st = self.settings
        r = self.draws(index, attempt)
        t_path, s_path, gray, flip = r["template_path"], r["search_path"], r["gray"], r["flip"]
        t_bytes = self._read(t_path)
        s_bytes = tf.cond(tf.equal(t_path, s_path), lambda: t_bytes, lambda: self._read(s_path))
        t_shape = tf.cast(tf.io.extract_jpeg_shape(t_bytes)[:2], tf.int64)
        s_shape = tf.cast(tf.io.extract_jpeg_shape(s_bytes)[:2], tf.int64)
        boxes_ok = tf.logical_and(_box_ok(r["template_box"]), _box_ok(r["search_box"]))
        t_box = _flip_box(r["template_box"], t_shape[1], flip)
        s_box = _flip_box(r["search_box"], s_shape[1], flip)
        t_geo = crop_geometry(jitter_box(t_box, r["template_growth"], r["template_shift"],
                                         st.template_center_jitter),
                              t_shape, flip, st.template_factor, st.template_size, st.stride)
        s_geo = crop_geometry(jitter_box(s_box, r["search_growth"], r["search_shift"], st.search_center_jitter),
                              s_shape, flip, st.search_factor, st.search_size, st.stride)
        ok = r["found"] & boxes_ok & t_geo["valid"] & s_geo["valid"]

        def crops():
            return (_crop_pixels(t_bytes, t_geo, gray, flip, st.template_size),
                    _crop_pixels(s_bytes, s_geo, gray, flip, st.search_size))

        def empty():
            return (tf.zeros([st.template_size, st.template_size, 3], tf.uint8),
                    tf.zeros([st.search_size, st.search_size, 3], tf.uint8))

        t_crop, s_crop = tf.cond(ok, crops, empty)
        t_crop, t_anno, t_lut = _finish(t_crop, _anno(t_box, t_geo, st.template_size), r["template_brightness"],
                                        r["template_norm_flip"], st)
        s_crop, s_anno, s_lut = _finish(s_crop, _anno(s_box, s_geo, st.search_size), r["search_brightness"],
                                        r["search_norm_flip"], st)
        # the labels of an invalid attempt are never used; a placeholder box keeps them finite
        placeholder = tf.constant([0.25, 0.25, 0.5, 0.5], tf.float32)
        return {
            "template": t_crop, "search": s_crop, "template_lut": t_lut, "search_lut": s_lut,
            "template_anno": t_anno, "search_anno": s_anno,
            "template_mask": template_box_mask(tf.where(ok, t_anno, placeholder), st.template_size, st.stride),
            "heatmap": gaussian_heatmap(tf.where(ok, s_anno, placeholder), st.search_size, st.stride),
            "ok": ok, "attempt": tf.cast(attempt, tf.int32),
        }

    def _read(self, path):
        """Frame bytes, with the Python path's truncation check (a JPEG must end with its end-of-image marker;
        a window of a truncated file can decode without error)."""
        data = self.reader.read(path)
        size = tf.strings.length(data)
        tail = tf.io.decode_raw(tf.strings.substr(data, tf.maximum(size - 4096, 0), 4096), tf.uint8)
        has_eoi = tf.reduce_any(tf.logical_and(tf.equal(tail[:-1], 0xFF), tf.equal(tail[1:], 0xD9)))
        check = tf.debugging.Assert(has_eoi, ["truncated or corrupt JPEG (no end-of-image marker):", path])
        with tf.control_dependencies([check]):
            return tf.identity(data)


# ------------------------------------------------------------------------------------------ geometry (graph)
def _opaque(value):
    """A constant that grappler cannot fold: its arithmetic optimiser turns `x / const` into `x * (1 / const)`,
    which rounds differently from the division the Python path does."""
    value = tf.constant(value)
    return tf.raw_ops.PlaceholderWithDefault(input=value, shape=value.shape)


def _box_ok(box):
    return tf.reduce_all(tf.math.is_finite(box)) & (box[2] > 0) & (box[3] > 0)


def _flip_box(box, image_w, flip):
    x = tf.cast(image_w - 1, tf.float32) - (box[0] + box[2])
    return tf.where(flip, tf.stack([x, box[1], box[2], box[3]]), box)


def jitter_growth(normal, scale_jitter: float):
    """exp(N * scale_jitter) per axis: the product in float32, the exp in float64 rounded to float32."""
    return tf.cast(tf.exp(tf.cast(normal * np.float32(scale_jitter), tf.float64)), tf.float32)


def jitter_box(box, growth, shift, center_jitter: float):
    """`processing._jitter_box` in float32."""
    size = box[2:4] * growth
    max_offset = tf.sqrt(size[0] * size[1]) * np.float32(center_jitter)
    centre = box[:2] + np.float32(0.5) * box[2:4] + max_offset * (shift - np.float32(0.5))
    return tf.concat([centre - np.float32(0.5) * size, size], 0)


def crop_geometry(jittered, image_hw, flip, factor, out_sz, stride) -> dict:
    """`geometry.crop_layout` + the window a (flipped) frame gives + the resize taps + the Python path's
    validity checks (`processing._crop_one`), for one jittered float32 box."""
    j = tf.cast(jittered, tf.float64)
    x, y, w, h = j[0], j[1], j[2], j[3]
    area = w * h
    finite = tf.reduce_all(tf.math.is_finite(j))
    side = tf.sqrt(tf.maximum(area, 0.0)) * factor
    crop_sz_f = tf.math.ceil(side)
    size_ok = finite & (area >= 0) & (crop_sz_f >= 1)
    crop_sz = tf.cast(tf.where(size_ok, crop_sz_f, 1.0), tf.int64)
    half = tf.cast(crop_sz, tf.float64) * 0.5
    x1 = tf.cast(tf.where(size_ok, tf.round(x + 0.5 * w - half), 0.0), tf.int64)
    y1 = tf.cast(tf.where(size_ok, tf.round(y + 0.5 * h - half), 0.0), tf.int64)
    img_h, img_w = image_hw[0], image_hw[1]
    x2, y2 = x1 + crop_sz, y1 + crop_sz
    left, top = tf.maximum(-x1, 0), tf.maximum(-y1, 0)
    right, bottom = tf.maximum(x2 - img_w + 1, 0), tf.maximum(y2 - img_h + 1, 0)
    row0, row1, col0, col1 = y1 + top, y2 - bottom, x1 + left, x2 - right
    # window in the (possibly mirrored) image; empty -> invalid, as the Python path's windowed frames
    nonempty = (row1 > row0) & (col1 > col0) & (row0 >= 0) & (col0 >= 0) & (row1 <= img_h) & (col1 <= img_w)
    src_col0 = tf.where(flip, img_w - col1, col0)
    rows = padding_profile(crop_sz, out_sz, top, row1 - row0)
    cols = padding_profile(crop_sz, out_sz, left, col1 - col0)
    all_padding = tf.reduce_all(rows) | tf.reduce_all(cols)
    size = out_sz // stride
    nearest = tf.cast(tf.floor(tf.range(size, dtype=tf.float64) * (out_sz / size)), tf.int64)
    nearest_all_padding = tf.reduce_all(tf.gather(rows, nearest)) | tf.reduce_all(tf.gather(cols, nearest))
    valid = size_ok & nonempty & tf.logical_not(all_padding | nearest_all_padding)
    return {"valid": valid, "jittered": jittered, "crop_sz": crop_sz, "row0": row0, "col0": src_col0,
            "height": row1 - row0, "width": col1 - col0,
            # padding in the mirrored frame's coordinates, as the window is seen after the flip
            "top": top, "bottom": bottom, "left": left, "right": right}


def padding_profile(n, out: int, pad_before, window_len):
    """Which of `out` resized positions of a zero-padded axis of length n touch padding (the official
    `att_mask` profile: OpenCV INTER_LINEAR source positions and clamping, a source with non-zero weight)."""
    scale = 1.0 / (out / tf.cast(n, tf.float64))
    f = tf.cast((tf.range(out, dtype=tf.float64) + 0.5) * scale - 0.5, tf.float32)
    s = tf.floor(f)
    frac = f - s
    s = tf.cast(s, tf.int64)
    clamped = (s < 0) | (s >= n - 1)
    s = tf.clip_by_value(s, 0, n - 1)
    outside = lambda p: (p < pad_before) | (p >= pad_before + window_len)  # noqa: E731
    return outside(s) | (outside(s + 1) & tf.logical_not(clamped) & (frac > 0))


def _crop_pixels(data, geo, gray, flip, out_sz: int):
    """Decode the crop's window, grey it, pad with zeros and resize (INTER_LINEAR) to out_sz; mirrored
    (`flip`) as the output's columns (see `resize_padded`), not as a copy of the window."""
    window = tf.io.decode_and_crop_jpeg(
        data, tf.cast(tf.stack([geo["row0"], geo["col0"], geo["height"], geo["width"]]), tf.int32),
        channels=3, dct_method="INTEGER_ACCURATE")
    window = tf.cond(gray, lambda: _gray(window), lambda: window)
    return resize_padded(window, geo, out_sz, mirror=flip)


def _gray(window):
    v = tf.cast(window, tf.int32)
    r, g, b = _GRAY_COEFFS
    grey = tf.bitwise.right_shift(v[..., 0] * r + v[..., 1] * g + v[..., 2] * b + (1 << (_GRAY_SHIFT - 1)),
                                  _GRAY_SHIFT)
    return tf.cast(tf.repeat(grey[..., None], 3, axis=-1), tf.uint8)


def _pad_axis(x, before, after, axis: int):
    """Zeros before / after `x` along `axis` (concat: a plain copy; `tf.pad` is several times slower on CPU);
    `x` itself where there is nothing to add."""
    def padded():
        shape = tf.shape(x, out_type=tf.int64)
        zeros = lambda n: tf.zeros(tf.tensor_scatter_nd_update(shape, [[axis]], [n]), x.dtype)  # noqa: E731
        return tf.concat([zeros(before), x, zeros(after)], axis)

    return tf.cond((before > 0) | (after > 0), padded, lambda: x)


def resize_padded(window, geo: dict, out_sz: int, mirror=None):
    """`geometry.crop_from_window`'s zero padding + INTER_LINEAR resize (OpenCV `resize`) in TF ops.

    `tf.raw_ops.ResizeBilinear` with half-pixel centres samples the padded crop where OpenCV does ((i + 0.5)
    * crop_sz / out_sz - 0.5, clamped to the crop's first / last row), in float32 instead of OpenCV's 11-bit
    fixed point, rounded half up as OpenCV's fixed point rounds: within 1 grey level.

    mirror (bool tensor): `window` is the unmirrored image's window and the result is the crop of the mirrored
    image: bilinear resizing commutes with mirroring (the sample positions are symmetric about the crop's
    centre), so the crop is padded with its left / right padding swapped, resized, and its columns reversed."""
    left, right = geo["left"], geo["right"]
    if mirror is not None:
        left, right = tf.where(mirror, right, left), tf.where(mirror, left, right)
    padded = _pad_axis(_pad_axis(window, geo["top"], geo["bottom"], 0), left, right, 1)
    out = tf.raw_ops.ResizeBilinear(images=padded[None], size=[out_sz, out_sz], half_pixel_centers=True)[0]
    # a convex combination of uint8 values: within [0, 255] up to rounding, so + 0.5 and truncation round it
    out = tf.cast(tf.clip_by_value(out + 0.5, 0.0, 255.0), tf.uint8)
    if mirror is not None:
        out = tf.cond(mirror, lambda: tf.reverse(out, [1]), lambda: out)
    return tf.ensure_shape(out, [out_sz, out_sz, 3])


def _anno(box, geo, out_sz: int):
    """`geometry.transform_image_to_crop(box, jittered, out/crop_sz, out, normalize=True)` in float32."""
    be = geo["jittered"]
    rf = tf.cast(out_sz / tf.cast(geo["crop_sz"], tf.float64), tf.float32)
    crop = np.float32(out_sz)
    extract_centre = be[:2] + np.float32(0.5) * be[2:4]
    gt_centre = box[:2] + np.float32(0.5) * box[2:4]
    out_centre = (crop - np.float32(1)) / np.float32(2) + (gt_centre - extract_centre) * rf
    out_wh = box[2:4] * rf
    return tf.concat([out_centre - np.float32(0.5) * out_wh, out_wh], 0) / crop


def _finish(crop, anno, b, flip, st):
    """`processing._finish`: brightness level table, then the independent normalised flip."""
    table = brightness_table(tf.cast(b / 255.0, tf.float32), st.mean, st.std)
    crop = tf.cond(flip, lambda: tf.reverse(crop, [1]), lambda: crop)
    # x + w as a reduction: grappler rewrites `1 - (x + w)` into `(1 - x) - w`, which rounds differently
    right = tf.reduce_sum(tf.gather(anno, [0, 2]))
    anno = tf.where(flip, tf.stack([np.float32(1) - right, anno[1], anno[2], anno[3]]), anno)
    return crop, anno, table


def brightness_table(gain, mean, std):
    """`geometry.brightness_table` in graph ops (float32, IEEE division: same numbers)."""
    levels = tf.minimum(tf.range(256, dtype=tf.float32) * gain, np.float32(1.0))
    return (levels[:, None] - np.asarray(mean, np.float32)) / _opaque(np.asarray(std, np.float32))


# --------------------------------------------------------------------------------------------- labels (graph)
def template_box_mask(anno, template_size: int, stride: int):
    """`geometry.template_box_mask` for one normalised xywh box: (Nz,) float32."""
    fs = int(template_size) // int(stride)
    cells = tf.cast(anno * np.float32(fs), tf.float64)
    x, y, w, h = cells[0], cells[1], cells[2], cells[3]
    trunc = lambda v: tf.cast(v, tf.int64)  # noqa: E731  (toward zero, like int())
    r0, r1 = tf.maximum(trunc(y), 0), tf.minimum(trunc(y + h + 1), fs)
    c0, c1 = tf.maximum(trunc(x), 0), tf.minimum(trunc(x + w + 1), fs)
    idx = tf.range(fs, dtype=tf.int64)
    rows = (idx >= r0) & (idx < r1)
    cols = (idx >= c0) & (idx < c1)
    return tf.reshape(tf.cast(rows[:, None] & cols[None, :], tf.float32), [fs * fs])


def gaussian_heatmap(anno, search_size: int, stride: int):
    """`geometry.gaussian_heatmap` for one normalised xywh box: (F, F) float32."""
    F = int(search_size) // int(stride)
    cells = anno * np.float32(F)
    centre = tf.round(cells[:2] + cells[2:] / np.float32(2))
    w, h = cells[2], cells[3]
    m, one = np.float32(HEATMAP_MIN_OVERLAP), np.float32(1)
    b1 = h + w
    c1 = w * h * (one - m) / _opaque(one + m)
    r1 = (b1 + tf.sqrt(b1 * b1 - np.float32(4) * c1)) / np.float32(2)
    b2 = np.float32(2) * (h + w)
    c2 = (one - m) * w * h
    r2 = (b2 + tf.sqrt(b2 * b2 - np.float32(16) * c2)) / np.float32(2)
    a3 = np.float32(4) * m
    b3 = np.float32(-2) * m * (h + w)
    c3 = (m - one) * w * h
    r3 = (b3 + tf.sqrt(b3 * b3 - np.float32(4) * a3 * c3)) / np.float32(2)
    radius = tf.maximum(tf.minimum(r1, tf.minimum(r2, r3)), np.float32(0))
    r = tf.cast(radius, tf.int64)
    cx, cy = tf.cast(centre[0], tf.int64), tf.cast(centre[1], tf.int64)
    idx = tf.range(F, dtype=tf.int64)
    dy, dx = (idx - cy)[:, None], (idx - cx)[None, :]
    sigma = tf.cast(2 * r + 1, tf.float64) / _opaque(np.float64(6))
    d2 = tf.cast(dx * dx + dy * dy, tf.float64)
    g = tf.exp(-d2 / (2 * sigma * sigma))
    g = tf.where(g < np.finfo(np.float64).eps, tf.zeros_like(g), g)  # the patch's max is exp(0) = 1
    inside = (tf.abs(dx) <= r) & (tf.abs(dy) <= r)
    return tf.cast(tf.where(inside, g, tf.zeros_like(g)), tf.float32)

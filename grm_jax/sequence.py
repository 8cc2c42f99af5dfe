"""The sequence type shared by the training readers, the evaluation readers and the tracker.

A `Sequence` is a list of frame paths plus per-frame boxes (x, y, w, h, float64, pixels, 0-based top-left) and a
per-frame visibility flag. Evaluation datasets may carry NaN rows (target absent / not annotated); training
readers mark such rows invisible so the sampler never uses them.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from etils import epath

from .deadlines import check_bucket

from .errors import UserError

__all__ = [
    "AnnotationError",
    "FrameError",
    "Sequence",
    "data_path",
    "decode_frame",
    "is_url",
    "read_bytes",
    "resolve_path",
    "TrackingDataset",
    "parse_annotation",
    "parse_flags",
    "read_frame",
]


class FrameError(UserError, IOError):
    """A frame file is missing, unreadable or not a decodable image."""


class AnnotationError(UserError, ValueError):
    """An annotation file is missing or a line of it is malformed."""


@dataclass
class Sequence:
    name: str
    dataset: str
    frames: SequenceABC  # of str, full paths (a list, or a lazy FramePaths from the training readers)
    boxes: np.ndarray  # (T, 4) float64 xywh
    visible: np.ndarray  # (T,) bool
    cover: np.ndarray | None = None  # (T,) int, GOT-10k cover level 0..8 (None elsewhere)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.visible = np.asarray(self.visible, dtype=bool).reshape(-1)
        if len(self.visible) != len(self.boxes):
            raise ValueError(
                f"sequence {self.dataset}/{self.name}: {len(self.boxes)} boxes but {len(self.visible)} visibility flags"
            )
        if self.cover is not None:
            self.cover = np.asarray(self.cover).reshape(-1)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def init_box(self) -> np.ndarray:
        return self.boxes[0]

    def frame(self, index: int) -> np.ndarray:
        return read_frame(self.frames[index])


@dataclass
class TrackingDataset:
    """A training dataset. `sequences` is a list or a lazy sequence of `Sequence` (the readers build each
    `Sequence` on access from a packed index, so millions of frames / COCO's 860k objects cost no start-up).
    `lengths` and `visible_counts` (S,) let a sampler filter sequences without touching them."""

    name: str
    is_video: bool
    sequences: SequenceABC  # of Sequence
    # names of sequences dropped because no frame is usable (reported, never sampled)
    excluded: list[str] = field(default_factory=list)
    lengths: np.ndarray | None = None  # (S,) frames per sequence
    visible_counts: np.ndarray | None = None  # (S,) visible frames per sequence

    def __post_init__(self):
        if self.lengths is None:
            self.lengths = np.array([len(s) for s in self.sequences], dtype=np.int64)
        if self.visible_counts is None:
            self.visible_counts = np.array([int(np.sum(s.visible)) for s in self.sequences], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def num_frames(self) -> int:
        return int(np.sum(self.lengths))


_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"


def is_url(path) -> bool:
    """True for a file-system URL (gs://, s3://, ...): read through `etils.epath` (tf.io.gfile / fsspec)."""
    return "://" in os.fspath(path)


def data_path(path: str | os.PathLike):
    """A dataset location as a path object: `pathlib.Path` for a local path, `etils.epath.Path` for a URL
    (gs://, s3://, ...). Both support `/`, `is_file`, `is_dir`, `exists`, `iterdir`, `read_text`, `read_bytes`."""
    if is_url(path):
        check_bucket(os.fspath(path))   # a bucket that does not answer is named within a deadline
        return epath.Path(os.fspath(path))
    return Path(path).expanduser()


def resolve_path(path) -> str:
    """The absolute form of a local path; a URL as it is."""
    return os.fspath(path) if is_url(path) else str(Path(path).resolve())


def read_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of a local file or of a file-system URL (`etils.epath`: gs://, s3://, ...)."""
    if is_url(path):
        return epath.Path(path).read_bytes()
    with open(path, "rb") as f:
        return f.read()


def read_frame(path: str | os.PathLike) -> np.ndarray:
    """Read an image as uint8 RGB HWC, the same pixels as `cv2.imread(path)[..., ::-1]`.

    The format is taken from the content, not the file name. A missing, empty, truncated (JPEG without
    end-of-image marker) or undecodable file raises `FrameError` naming the path: OpenCV alone returns None or,
    for a truncated JPEG, silently returns grey-filled pixels. `path` may be a file-system URL (gs://...).
    """
    path = os.fspath(path)
    try:
        data = read_bytes(path)
    except (OSError, ValueError) as err:
        raise FrameError(f"cannot read frame {path}: {getattr(err, 'strerror', None) or err}") from None
    return decode_frame(data, path)


def decode_frame(data: bytes, path: str, jpeg: bool | None = None) -> np.ndarray:
    """`read_frame` on bytes already read. `path` names the frame in errors; `jpeg`: the bytes are meant to be a
    JPEG file (None: decided by the content, as OpenCV and the official loaders do: a PNG saved as .jpg is a PNG;
    only data that starts like a JPEG (SOI marker) must end like one)."""
    if len(data) == 0:
        raise FrameError(f"frame file is empty: {path}")
    if (bytes(data[:2]) == _JPEG_SOI) if jpeg is None else jpeg:
        if _JPEG_EOI not in bytes(data[-4096:]):
            raise FrameError(f"truncated or corrupt JPEG (no end-of-image marker): {path}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise FrameError(f"cannot decode image: {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


_SPLITTERS = {
    ",": lambda s: s.split(","),
    "\t": lambda s: s.split("\t"),
    " ": lambda s: s.split(),
    None: re.compile(r"[,\s]+").split,  # comma, tab or spaces (OTB mixes them)
}
_DELIM_NAMES = {",": "comma", "\t": "tab", " ": "whitespace", None: "comma/whitespace"}


def parse_annotation(path: str | os.PathLike, delimiter: str | None = ",", columns: int = 4) -> np.ndarray:
    """Parse a text file of `columns` numbers per line into a float64 array (N, columns).

    `delimiter` is ',', '\\t', ' ' (any whitespace) or None (comma or whitespace). 'nan' / 'NaN' are accepted
    (UAV123 marks absent targets that way). Blank lines are skipped. A missing file or a line with the wrong
    number of fields or a non-number raises `AnnotationError` naming the file and the 1-based line.
    """
    path = os.fspath(path)
    split = _SPLITTERS[delimiter]
    try:
        text = read_bytes(path).decode("utf-8", errors="replace")
    except OSError as err:
        raise AnnotationError(f"cannot read annotation file {path}: {err.strerror or err}") from None
    lines = text.splitlines()
    if delimiter is not None:
        try:  # fast path (C parser); blank lines are skipped
            out = np.loadtxt(lines, delimiter=None if delimiter == " " else delimiter, dtype=np.float64, ndmin=2)
            if out.shape[0] > 0 and out.shape[1] == columns:
                return out
        except ValueError:
            pass
    numbered = [(i + 1, line.strip()) for i, line in enumerate(lines)]
    numbered = [(n, line) for n, line in numbered if line]
    if not numbered:
        raise AnnotationError(f"annotation file is empty: {path}")
    rows = [split(line) for _, line in numbered]
    try:
        out = np.array(rows, dtype=np.float64)
        if out.ndim == 2 and out.shape[1] == columns:
            return out
    except ValueError:
        pass
    # slow path only to name the first bad line
    for (lineno, line), fields in zip(numbered, rows):
        fields = [x for x in fields if x != ""]
        if len(fields) != columns:
            raise AnnotationError(
                f"{path}:{lineno}: expected {columns} {_DELIM_NAMES[delimiter]}-separated numbers, got {line!r}"
            )
        try:
            [float(x) for x in fields]
        except ValueError:
            raise AnnotationError(f"{path}:{lineno}: not a number in {line!r}") from None
    # fields with stray empty entries (e.g. "1,2,,3,4") land here after passing the per-line check
    raise AnnotationError(f"{path}: malformed annotation (inconsistent fields)")


def parse_flags(path: str | os.PathLike, expected: int | None = None) -> np.ndarray:
    """Parse per-frame integer flags: one comma-separated line (LaSOT/AVisT occlusion files) or one value per
    line (GOT-10k absence/cover labels). Returns int64 (N,). A non-integer or a count differing from `expected`
    raises `AnnotationError` naming the file."""
    path = os.fspath(path)
    try:
        text = read_bytes(path).decode("utf-8", errors="replace")
    except OSError as err:
        raise AnnotationError(f"cannot read flag file {path}: {err.strerror or err}") from None
    tokens = [t for t in re.split(r"[,\s]+", text.strip()) if t]
    try:
        values = np.array(tokens, dtype=np.float64).astype(np.int64)
    except ValueError:
        bad = next(t for t in tokens if not _is_number(t))
        raise AnnotationError(f"{path}: not an integer flag: {bad!r}") from None
    if expected is not None and len(values) != expected:
        raise AnnotationError(f"{path}: {len(values)} flags but the sequence has {expected} annotated frames")
    return values


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False

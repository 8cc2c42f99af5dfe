"""The packed sequence index shared by every training reader, and its on-disk cache.

Reading the annotations of the full training sets (LaSOT 2.8 M, GOT-10k 1.4 M, TrackingNet 14 M frames, COCO's
860 k objects) takes minutes, so each reader parses once into a `SequenceIndex` (flat arrays: names, frame
folders, per-frame boxes and visibility, offsets) and caches it as an .npz next to the data (or in a cache dir).
The cache key covers the reader version, the resolved root, the split list and the size / mtime of every file the
index is built from (list files and each sequence's annotation files), so an annotation edited in place is read
again; `refresh=True` (train.py --rebuild-index) rebuilds regardless.

`Sequence` objects are built on access (`LazySequences`), with frame paths generated on demand (`FramePaths`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from grm_jax.sequence import Sequence, data_path, is_url, resolve_path

log = logging.getLogger(__name__)

INDEX_VERSION = 2
CACHE_DIRNAME = ".grm_jax_index"
# The largest side a JPEG can have: a box coordinate beyond it cannot lie on any frame (e.g. `10,10,1e5,1e5`).
MAX_BOX_COORD = 65535.0


class DatasetError(ValueError):
    """The dataset on disk is not laid out as expected (wrong root, missing list or annotation file)."""


class FramePaths(SequenceABC):
    """Frame paths `<folder>/<pattern.format(first + i)>` for i in range(count), generated on access."""

    __slots__ = ("folder", "pattern", "first", "count")

    def __init__(self, folder: str, pattern: str, first: int, count: int):
        self.folder, self.pattern, self.first, self.count = folder, pattern, int(first), int(count)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self.count))]
        if i < 0:
            i += self.count
        if not 0 <= i < self.count:
            raise IndexError(f"frame {i} out of range for {self.count} frames in {self.folder}")
        return os.path.join(self.folder, self.pattern.format(self.first + i))

    def __repr__(self) -> str:
        return f"FramePaths({self.folder!r}, {self.pattern!r}, first={self.first}, count={self.count})"

    def __eq__(self, other) -> bool:
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))


@dataclass
class SequenceIndex:
    """Flat arrays describing S sequences with F frames in total.

    Frame paths: `root/dirs[i]/pattern.format(first + k)`, or `root/files[i]` for image datasets (one frame).
    Boxes are stored as float32 (the official training readers load them as float32 tensors too) and handed
    out as float64.
    """

    dataset: str
    root: str
    names: list[str]
    offsets: np.ndarray  # (S+1,) int64
    boxes: np.ndarray  # (F, 4) float32 xywh
    visible: np.ndarray  # (F,) bool
    dirs: list[str] | None = None
    files: list[str] | None = None
    pattern: str = ""
    first: int = 0
    cover: np.ndarray | None = None  # (F,) int8 (GOT-10k)
    classes: list[str] | None = None  # (S,) object class names where the dataset has them
    # one line per annotation file with rows left out as invalid boxes (see `invalid_boxes`)
    invalid: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def visible_counts(self) -> np.ndarray:
        cum = np.concatenate([[0], np.cumsum(self.visible, dtype=np.int64)])
        return cum[self.offsets[1:]] - cum[self.offsets[:-1]]

    def sequence(self, i: int) -> Sequence:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        if self.files is not None:
            frames = [os.path.join(self.root, self.files[i])]
        else:
            frames = FramePaths(os.path.join(self.root, self.dirs[i]), self.pattern, self.first, b - a)
        meta = {"class": self.classes[i]} if self.classes is not None else {}
        return Sequence(
            name=self.names[i], dataset=self.dataset, frames=frames,
            boxes=self.boxes[a:b].astype(np.float64), visible=self.visible[a:b].copy(),
            cover=None if self.cover is None else self.cover[a:b].astype(np.int64), meta=meta,
        )

    # ------------------------------------------------------------------------------------------- (de)serialise
    def save(self, path: Path) -> None:
        arrays = {"offsets": self.offsets, "boxes": self.boxes, "visible": self.visible,
                  "names": np.array(self.names, dtype=np.str_)}
        if self.dirs is not None:
            arrays["dirs"] = np.array(self.dirs, dtype=np.str_)
        if self.files is not None:
            arrays["files"] = np.array(self.files, dtype=np.str_)
        if self.cover is not None:
            arrays["cover"] = self.cover
        if self.classes is not None:
            arrays["classes"] = np.array(self.classes, dtype=np.str_)
        attrs = {"dataset": self.dataset, "pattern": self.pattern, "first": self.first, "version": INDEX_VERSION,
                 "invalid": self.invalid}
        arrays["attrs"] = np.array(json.dumps(attrs))
        path.parent.mkdir(parents=True, exist_ok=True)
        # atomic: concurrent processes (one per host) may build the same index
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: Path, root: str) -> "SequenceIndex":
        with np.load(path, allow_pickle=False) as z:
            attrs = json.loads(str(z["attrs"]))
            if attrs.get("version") != INDEX_VERSION:
                raise ValueError("index version mismatch")
            get = lambda k: z[k].tolist() if k in z.files else None  # noqa: E731
            return cls(dataset=attrs["dataset"], root=root, names=z["names"].tolist(), offsets=z["offsets"],
                       boxes=z["boxes"], visible=z["visible"], dirs=get("dirs"), files=get("files"),
                       pattern=attrs["pattern"], first=int(attrs["first"]),
                       cover=z["cover"] if "cover" in z.files else None, classes=get("classes"),
                       invalid=list(attrs.get("invalid", [])))


class LazySequences(SequenceABC):
    """`Sequence` objects of the selected index rows, built on access."""

    def __init__(self, index: SequenceIndex, rows: np.ndarray):
        self.index, self.rows = index, np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        return self.index.sequence(int(self.rows[i]))

    def __repr__(self) -> str:
        return f"LazySequences({self.index.dataset}, {len(self)} sequences)"


def invalid_boxes(boxes: np.ndarray) -> np.ndarray:
    """(N,) bool: rows that are no box on any image (a non-finite value, or a coordinate beyond MAX_BOX_COORD).

    The official readers keep such rows "visible" when w > 0 and h > 0 (NaN x, inf or 1e30 sizes); cropping
    them fails or asks OpenCV for terabytes, so the index leaves them out."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    with np.errstate(invalid="ignore"):
        return ~np.all(np.isfinite(boxes), axis=1) | np.any(np.abs(boxes) > MAX_BOX_COORD, axis=1)


def _line_numbers(path: str, rows: np.ndarray) -> list[int]:
    """1-based line numbers of the given data rows of a text annotation file (blank lines are not rows)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [i + 1 for i, line in enumerate(f) if line.strip()]
        return [lines[r] if r < len(lines) else r + 1 for r in rows]
    except OSError:
        return [int(r) + 1 for r in rows]


class IndexBuilder:
    """Accumulates parsed sequences into flat arrays."""

    def __init__(self):
        self.names: list[str] = []
        self.dirs: list[str] = []
        self.files: list[str] = []
        self.classes: list[str] = []
        self.boxes: list[np.ndarray] = []
        self.visible: list[np.ndarray] = []
        self.cover: list[np.ndarray] = []
        self.invalid: list[str] = []

    def add(self, name: str, boxes: np.ndarray, visible: np.ndarray, *, folder: str | None = None,
            file: str | None = None, cover: np.ndarray | None = None, cls: str | None = None,
            source: str | os.PathLike | None = None, line_numbers: bool = True) -> None:
        """Add one sequence. Visible rows holding no usable box (`invalid_boxes`) become invisible and are
        reported once per annotation file `source` (with its 1-based line when `line_numbers`)."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        visible = np.asarray(visible, dtype=bool).reshape(-1)
        bad = visible & invalid_boxes(boxes)
        if bad.any():
            rows = np.flatnonzero(bad)
            where = os.fspath(source) if source is not None else name
            if line_numbers and source is not None:
                where = f"{where}:{_line_numbers(where, rows[:1])[0]}"
            message = (f"{where}: box {boxes[rows[0]].tolist()} is not a box on any image (non-finite, or beyond "
                       f"{MAX_BOX_COORD:.0f} px); {len(rows)} such row(s) in this file left out of training")
            log.warning("%s", message)
            self.invalid.append(message)
            visible = visible & ~bad
        self.names.append(name)
        if folder is not None:
            self.dirs.append(folder)
        if file is not None:
            self.files.append(file)
        if cls is not None:
            self.classes.append(cls)
        self.boxes.append(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
        self.visible.append(np.asarray(visible, dtype=bool).reshape(-1))
        if cover is not None:
            self.cover.append(np.asarray(cover, dtype=np.int8).reshape(-1))

    def build(self, dataset: str, root: str, pattern: str = "", first: int = 0) -> SequenceIndex:
        lengths = np.array([len(b) for b in self.boxes], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        cat = lambda xs, shape, dt: np.concatenate(xs) if xs else np.zeros(shape, dt)  # noqa: E731
        return SequenceIndex(
            dataset=dataset, root=root, names=self.names, offsets=offsets,
            boxes=cat(self.boxes, (0, 4), np.float32), visible=cat(self.visible, (0,), bool),
            dirs=self.dirs or None, files=self.files or None, pattern=pattern, first=first,
            cover=cat(self.cover, (0,), np.int8) if self.cover else None, classes=self.classes or None,
            invalid=list(self.invalid),
        )


def _stat_key(paths: Iterable[Path]) -> str:
    """sha1 over (path, size, mtime) of every file (tens of thousands for the full datasets: a digest, not a list)."""
    h = hashlib.sha1()
    for p in paths:
        try:
            if is_url(p):
                st = data_path(p).stat()
                h.update(f"{p}|{st.length}|{st.mtime}\n".encode())
            else:
                st = os.stat(p)
                h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|-\n".encode())
    return h.hexdigest()


def _default_cache_dir(root: Path) -> Path:
    """Next to the data when writable (and local), else the user cache."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    if is_url(root):
        return base / "grm_jax" / "index"
    candidate = root / CACHE_DIRNAME
    try:
        candidate.mkdir(exist_ok=True)
        probe = candidate / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
        return candidate
    except OSError:
        return base / "grm_jax" / "index"


def cached_index(kind: str, root: Path, key_files: Iterable[Path], key_extra, build: Callable[[], SequenceIndex],
                 cache_dir: str | os.PathLike | None = None, refresh: bool = False) -> tuple[SequenceIndex, bool]:
    """Load the index of (kind, root) from the cache or build and store it. Returns (index, from_cache)."""
    root = data_path(resolve_path(root))
    key = json.dumps([INDEX_VERSION, kind, str(root), _stat_key(key_files), key_extra], sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    directory = Path(cache_dir) if cache_dir is not None else _default_cache_dir(root)
    path = directory / f"{kind}-{digest}.npz"
    if not refresh and path.exists():
        try:
            return SequenceIndex.load(path, str(root)), True
        except Exception as err:  # a stale or truncated cache is rebuilt, never trusted
            log.warning("ignoring unreadable index cache %s (%s); rebuilding", path, err)
    index = build()
    try:
        index.save(path)
    except OSError as err:
        log.warning("could not write index cache %s: %s", path, err)
    return index, False

"""Reading a prepared dataset: per-split sequence tables, frame references and frame bytes.

A prepared split is one `array_record` record per frame (COCO: per image) in generation order, plus a sequence
table `sequences.<split>.npz` written next to the records (inside TFDS's temporary folder, so it appears with the
dataset only when the build completed). The table holds what the samplers need without touching a record:
sequence names, frame offsets, the record index of every frame, the training readers' float32 boxes and
visibility (`train_*`) and / or the evaluation readers' float64 boxes and visibility (`eval_*`).

Frames of a prepared `Sequence` are reference strings `tfds:<split>:<record>:<builder dir>` (`PREFIX`), resolved
by `read_frame_bytes` through one cached `as_data_source` per (builder dir, split) and process. Any `tf.io.gfile`
/ `etils.epath` location works as builder dir (local disk, gs://, s3://).
"""
from __future__ import annotations

import io
import json
import threading
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow.core.example import example_pb2

from grm_jax.sequence import FrameError, decode_frame, read_frame as read_file

PREFIX = "tfds:"
TABLE_VERSION = 1


def table_path(builder_dir, split: str):
    return epath.Path(builder_dir) / f"sequences.{split}.npz"


@dataclass
class SplitTable:
    """The sequence table of one prepared split (see module docstring). F frames in S sequences."""

    split: str
    names: list[str]
    offsets: np.ndarray  # (S+1,) int64
    records: np.ndarray  # (F,) int64: record index of each frame
    train_boxes: np.ndarray | None = None  # (F, 4) float32, as the training readers hold them
    train_visible: np.ndarray | None = None  # (F,) bool, the training readers' rule
    cover: np.ndarray | None = None  # (F,) int8 (GOT-10k)
    classes: list[str] | None = None  # (S,) (LaSOT, COCO)
    eval_boxes: np.ndarray | None = None  # (F, 4) float64, as the evaluation readers give them (NaN rows)
    eval_visible: np.ndarray | None = None  # (F,) bool
    eval_meta: list[dict] | None = None  # (S,) Sequence.meta of the evaluation reader
    attrs: dict = field(default_factory=dict)  # dataset-level facts (source layout, split lists, bad frames)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def save(self, builder_dir) -> None:
        arrays = {"names": np.array(self.names, dtype=np.str_), "offsets": self.offsets, "records": self.records}
        for key in ("train_boxes", "train_visible", "cover", "eval_boxes", "eval_visible"):
            value = getattr(self, key)
            if value is not None:
                arrays[key] = value
        if self.classes is not None:
            arrays["classes"] = np.array(self.classes, dtype=np.str_)
        attrs = {**self.attrs, "version": TABLE_VERSION, "split": self.split}
        if self.eval_meta is not None:
            attrs["eval_meta"] = self.eval_meta
        arrays["attrs"] = np.array(json.dumps(attrs))
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        table_path(builder_dir, self.split).write_bytes(buffer.getvalue())

    @classmethod
    def load(cls, builder_dir, split: str) -> "SplitTable":
        path = table_path(builder_dir, split)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"prepared dataset {builder_dir} has no sequence table for split {split!r} "
                                    f"({path} is missing: not built by data_pipeline.prepared?)") from None
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            attrs = json.loads(str(z["attrs"]))
            if attrs.get("version") != TABLE_VERSION:
                raise ValueError(f"{path}: table version {attrs.get('version')} but this code reads "
                                 f"{TABLE_VERSION}; prepare the dataset again")
            get = lambda k: z[k] if k in z.files else None  # noqa: E731
            classes = get("classes")
            return cls(split=split, names=z["names"].tolist(), offsets=z["offsets"], records=z["records"],
                       train_boxes=get("train_boxes"), train_visible=get("train_visible"), cover=get("cover"),
                       classes=None if classes is None else classes.tolist(), eval_boxes=get("eval_boxes"),
                       eval_visible=get("eval_visible"), eval_meta=attrs.pop("eval_meta", None), attrs=attrs)


# ------------------------------------------------------------------------------------------- frame references
def frame_ref(builder_dir: str, split: str, record: int) -> str:
    return f"{PREFIX}{split}:{int(record)}:{builder_dir}"


def is_frame_ref(path) -> bool:
    return isinstance(path, str) and path.startswith(PREFIX)


def parse_frame_ref(ref: str) -> tuple[str, str, int]:
    """`tfds:<split>:<record>:<builder dir>` -> (builder dir, split, record)."""
    try:
        _, split, record, builder_dir = ref.split(":", 3)
        return builder_dir, split, int(record)
    except ValueError:
        raise FrameError(f"malformed prepared-frame reference {ref!r}") from None


class PreparedFrames(SequenceABC):
    """Frame references of one sequence (records[i] for i in range(len)), generated on access."""

    __slots__ = ("builder_dir", "split", "records")

    def __init__(self, builder_dir: str, split: str, records: np.ndarray):
        self.builder_dir, self.split, self.records = str(builder_dir), split, records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        return frame_ref(self.builder_dir, self.split, self.records[i])

    def __repr__(self) -> str:
        return f"PreparedFrames({self.builder_dir!r}, {self.split!r}, {len(self)} frames)"


_SOURCES: dict[tuple[str, str, bool], object] = {}
_SOURCES_LOCK = threading.Lock()


def data_source(builder_dir: str, split: str, *, raw: bool = False):
    """The random-access source of a prepared split, one per process (array_record readers are thread-safe).
    Items: decoded feature dicts (images left as their bytes), or with `raw` the serialized records."""
    key = (builder_dir, split, raw)
    source = _SOURCES.get(key)
    if source is None:
        with _SOURCES_LOCK:
            source = _SOURCES.get(key)
            if source is None:
                builder = tfds.builder_from_directory(builder_dir)
                if raw:
                    source = builder.as_data_source(split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
                else:
                    source = builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})
                _SOURCES[key] = source
    return source


def read_record(ref: str) -> dict:
    """The decoded record (image left as its stored bytes) that `ref` points to."""
    builder_dir, split, record = parse_frame_ref(ref)
    try:
        return data_source(builder_dir, split)[record]
    except Exception as err:  # unreadable shard, record out of range, ...
        raise FrameError(f"cannot read prepared frame {ref}: {err}") from None


def read_record_bytes(ref: str) -> bytes:
    """The serialized `tf.train.Example` that `ref` points to (the graph input path parses it with TF ops)."""
    builder_dir, split, record = parse_frame_ref(ref)
    try:
        return data_source(builder_dir, split, raw=True)[record]
    except Exception as err:  # unreadable shard, record out of range
        raise FrameError(f"cannot read prepared frame {ref}: {err}") from None


def read_frame_bytes(ref: str) -> tuple[bytes, str]:
    """(encoded image bytes exactly as in the source file, a description naming the frame).

    Reads the serialized record and takes the fields it needs from the `tf.train.Example` that TFDS stores
    (the full TFDS decode of every feature costs more than the read itself)."""
    builder_dir, split, record = parse_frame_ref(ref)
    try:
        feature = example_pb2.Example.FromString(data_source(builder_dir, split, raw=True)[record]).features.feature
        image = feature["image"].bytes_list.value
    except Exception as err:  # unreadable shard, record out of range, not a TFDS example
        raise FrameError(f"cannot read prepared frame {ref}: {err}") from None
    if "sequence" in feature:
        name = f"{feature['sequence'].bytes_list.value[0].decode()} frame {feature['frame'].int64_list.value[0]}"
    else:
        name = feature["file_name"].bytes_list.value[0].decode()
    return (image[0] if image else b""), f"{name} ({ref})"


def read_frame(path) -> np.ndarray:
    """`grm_jax.sequence.read_frame` for prepared references too (uint8 RGB HWC, the same pixels)."""
    if not is_frame_ref(path):
        return read_file(path)
    data, name = read_frame_bytes(path)
    return decode_frame(data, name, jpeg=True)  # every prepared dataset's frames are JPEG files

"""TFDS builders of the training / evaluation datasets, read from the official downloads (manual download).

    PYTHONPATH=. tfds build grm_got10k --imports data_pipeline.prepared.builders \\
        --manual_dir /data/GOT-10k --data_dir gs://bucket/tfds
    python scripts/prepare_tfds.py got10k --manual-dir /data/GOT-10k --data-dir gs://bucket/tfds   # + verification

Layout: one `array_record` record per frame (COCO 2017: per image), in the order of the sequence table
(`store.SplitTable`, written next to the records). Why: training draws (sequence, frame) pairs at random, and
array_record reads any record by index without scanning (TFRecord would need a separate offset index and one
seek per frame); the table gives, for every sequence, its first record and length, and the boxes and
visibility the sampler needs, without reading a single image. Records are written in that order
(`disable_shuffling`), so a sequence's frames are neighbours on disk.

The records hold the JPEG bytes exactly as in the source file (never re-encoded: pixels stay identical), the
sequence name, the 0-based frame index, the box (x, y, w, h as parsed; NaN where the benchmark publishes none) and
the visibility / absence / cover / occlusion flags; the annotations are parsed by `data_pipeline.readers` and
`grm_jax.evaluation.datasets` (one definition of each format). A frame file that the folder pipeline would skip
as bad (missing, empty, truncated, not a JPEG) is stored as its bytes (a missing one as empty bytes), so the
prepared pipeline skips it in exactly the same way, and it is listed in the table (`attrs["bad_frames"]`) and
by `scripts/prepare_tfds.py`; `strict_frames=True` refuses it instead, with one error naming the file.
"""
from __future__ import annotations

import json
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from grm_jax.evaluation.datasets import dataset_names, load_eval_dataset
from grm_jax.sequence import FrameError, Sequence, parse_flags, read_bytes

from ..readers import coco, got10k, lasot, trackingnet
from ..readers.index import DatasetError, SequenceIndex
from ..prepared_store import SplitTable
from ..processing import JpegFrame

log = logging.getLogger(__name__)

PREPARED_VERSION = "1.0.0"
_HKEY_RANGE = 2 ** 128  # TFDS's shuffler buckets records by key / 2**128 (see `_record_key`)


class SequenceTables(tfds.core.Metadata):
    """Writes each split's `SplitTable` with the dataset (inside TFDS's temporary folder, renamed on success)."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, SplitTable] = {}

    def save_metadata(self, data_dir):
        for table in self.tables.values():
            table.save(data_dir)
        summary = {split: {"sequences": len(t), "frames": int(t.offsets[-1]),
                           "bad_frames": len(t.attrs.get("bad_frames", []))} for split, t in self.tables.items()}
        self.update(summary)
        (epath.Path(data_dir) / "metadata.json").write_text(json.dumps(summary))

    def load_metadata(self, data_dir):
        self.clear()
        path = epath.Path(data_dir) / "metadata.json"
        if path.exists():
            self.update(json.loads(path.read_text()))


@dataclass
class SplitPlan:
    """What one split will hold: the table and, per sequence, its frame files and per-frame record fields."""

    table: SplitTable
    frame_files: list  # per sequence: its frame paths (a list or FramePaths)
    fields: list[dict] = field(default_factory=list)  # per sequence: {feature: (T,) array}
    record_files: list | None = None  # COCO: one file per record (records shared by several sequences)


def _record_key(record: int, total: int) -> int:
    """A key that keeps generation order and spreads the records over TFDS's shuffle buckets: with plain small
    integers every record would land in the first bucket, which TFDS sorts in memory (the whole split)."""
    return int(record) * (_HKEY_RANGE // max(int(total), 1))


def _check_frame(path: str, data: bytes) -> str | None:
    """The folder pipeline's verdict on a frame file: None if usable, else why it would be skipped."""
    try:
        JpegFrame(path, window=True, data=data)
    except FrameError as err:
        return str(err)
    return None


def _read_frame_file(path: str) -> tuple[bytes, str | None]:
    try:
        data = read_bytes(path)
    except OSError as err:
        return b"", f"cannot read frame {path}: {err.strerror or err}"
    return data, _check_frame(path, data)


def _read_ahead(items, workers: int = 16, window: int = 64):
    """(item, `_read_frame_file(item[-1])`) for (..., path) `items` in order, with up to `window` reads in flight
    on `workers` threads: on a network file system or a bucket each read is a round trip, which one thread would
    wait out one by one."""
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append((item, pool.submit(_read_frame_file, item[-1])))
            if len(pending) >= window:
                item, future = pending.popleft()
                yield item, future.result()
        while pending:
            item, future = pending.popleft()
            yield item, future.result()


def _train_table(split: str, index: SequenceIndex) -> SplitTable:
    return SplitTable(split=split, names=list(index.names), offsets=np.asarray(index.offsets, np.int64),
                      records=np.arange(int(index.offsets[-1]), dtype=np.int64), train_boxes=index.boxes,
                      train_visible=index.visible, cover=index.cover, classes=index.classes)


def _add_eval(table: SplitTable | None, split: str, sequences: list[Sequence]) -> SplitTable:
    lengths = np.array([len(s.boxes) for s in sequences], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    if table is None:
        table = SplitTable(split=split, names=[s.name for s in sequences], offsets=offsets,
                           records=np.arange(int(offsets[-1]), dtype=np.int64))
    elif table.names != [s.name for s in sequences] or not np.array_equal(table.offsets, offsets):
        bad = next((f"{a}: {n} annotated frames, {len(b.frames)} frame files" for a, b, n in
                    zip(table.names, sequences, table.lengths) if a != b.name or n != len(b.boxes)),
                   f"{len(table.names)} sequences in the training reader, {len(sequences)} in the evaluation reader")
        raise DatasetError(f"split {split}: the training and evaluation readers disagree ({bad})")
    table.eval_boxes = np.concatenate([s.boxes for s in sequences]).astype(np.float64)
    table.eval_visible = np.concatenate([s.visible for s in sequences]).astype(bool)
    table.eval_meta = [dict(s.meta) for s in sequences]
    table.attrs["eval_dataset"] = sequences[0].dataset
    return table


def _frames_of(index: SequenceIndex) -> list:
    return [index.sequence(i).frames for i in range(len(index))]


def _boxes(table: SplitTable) -> np.ndarray:
    return table.eval_boxes if table.eval_boxes is not None else table.train_boxes.astype(np.float64)


def _visible(table: SplitTable) -> np.ndarray:
    return table.train_visible if table.train_visible is not None else table.eval_visible


class _TrackingBuilder(tfds.core.GeneratorBasedBuilder):
    """Common part: features, split plans -> records, the sequence tables as metadata."""

    VERSION = tfds.core.Version(PREPARED_VERSION)
    RELEASE_NOTES = {PREPARED_VERSION: "One record per frame (array_record), JPEG bytes as in the download, sequence "
                              "table per split."}
    HOMEPAGE = ""
    FLAG_FEATURES: tuple[str, ...] = ()  # per-frame int8 flags of the format

    def __init__(self, *, file_format=None, strict_frames: bool = False, progress: bool = True, **kwargs):
        self.strict_frames, self.progress = strict_frames, progress
        super().__init__(file_format=file_format or "array_record", **kwargs)

    # -------------------------------------------------------------------------------------------- TFDS hooks
    def _features(self) -> dict:
        features = {"image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "sequence": tfds.features.Text(), "frame": np.int32,
                    "box": tfds.features.Tensor(shape=(4,), dtype=np.float64), "visible": np.bool_}
        features.update({k: np.int8 for k in self.FLAG_FEATURES})
        return features

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(self._features()),
                                              homepage=self.HOMEPAGE, disable_shuffling=True,
                                              metadata=SequenceTables())

    def _split_generators(self, dl_manager):
        root = epath.Path(dl_manager.manual_dir)
        plans = self._plans(root)
        if not plans:
            raise DatasetError(f"{self.name}: no split found under {root}\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        for split, plan in plans.items():
            plan.table.attrs.setdefault("source", str(root))
            self.info.metadata.tables[split] = plan.table
        return {split: self._generate_examples(plan) for split, plan in plans.items()}

    def _plans(self, root) -> dict[str, SplitPlan]:
        raise NotImplementedError

    def _generate_examples(self, plan: SplitPlan):
        table = plan.table
        total = int(table.offsets[-1])
        bad = table.attrs.setdefault("bad_frames", [])
        boxes, visible = _boxes(table), _visible(table)
        frames = ((i, k, str(files[k])) for i, files in enumerate(plan.frame_files) for k in range(len(files)))
        for (i, k, path), (data, problem) in _read_ahead(frames):
            name, a = table.names[i], int(table.offsets[i])
            if problem is not None:
                if self.strict_frames:
                    raise FrameError(f"{self.name}: {problem}")
                log.warning("%s: stored as a bad frame (training skips it as with folders): %s", self.name, problem)
                bad.append({"record": a + k, "sequence": name, "frame": k, "file": path, "problem": problem})
            example = {"image": data, "sequence": name, "frame": k, "box": boxes[a + k],
                       "visible": bool(visible[a + k])}
            example.update({key: int(v[k]) for key, v in (plan.fields[i] if plan.fields else {}).items()})
            yield _record_key(a + k, total), example


# ---------------------------------------------------------------------------------------------------- GOT-10k
class GrmGot10k(_TrackingBuilder):
    """GOT-10k (train, val, test) for GRM training and evaluation."""

    HOMEPAGE = "http://got-10k.aitestunion.com/"
    FLAG_FEATURES = ("absence", "cover")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download GOT-10k from http://got-10k.aitestunion.com/downloads (full_data: train_data, val_data, test_data),
    unzip, and pass the top folder as manual dir:
      <manual_dir>/train/list.txt, <manual_dir>/train/GOT-10k_Train_000001/{00000001.jpg, ..., groundtruth.txt,
                                                                           absence.label, cover.label}
      <manual_dir>/val/list.txt, <manual_dir>/val/GOT-10k_Val_000001/...
      <manual_dir>/test/list.txt, <manual_dir>/test/GOT-10k_Test_000001/{*.jpg, groundtruth.txt (first box)}
    Splits whose list.txt is missing are left out. Split files (got10k_vot_train_split.txt, ...) in train/
    override the shipped official ones, as for the folder reader.
    """

    def _plans(self, root):
        plans = {}
        for split, folder in (("train", root / "train"), ("val", root / "val")):
            if not (folder / "list.txt").is_file():
                continue
            names = got10k.read_list(folder)
            index = got10k.build_index(folder, names, "got10k", self.progress)
            table = _train_table(split, index)
            if split == "val":
                table = _add_eval(table, split, load_eval_dataset("got10k_val", root))
            else:
                table.attrs["split_files"] = {name: (folder / name).read_text()
                                              for name in got10k.SPLIT_FILES.values() if (folder / name).is_file()}
            fields = []
            for name, n in zip(names, table.lengths):
                fields.append({key: parse_flags(folder / name / f"{key}.label", expected=int(n))
                               for key in self.FLAG_FEATURES})
            plans[split] = SplitPlan(table, _frames_of(index), fields)
        if (root / "test" / "list.txt").is_file():
            sequences = load_eval_dataset("got10k_test", root)
            table = _add_eval(None, "test", sequences)
            fields = [{key: np.full(len(s.boxes), -1) for key in self.FLAG_FEATURES} for s in sequences]
            plans["test"] = SplitPlan(table, [s.frames for s in sequences], fields)
        return plans


# ------------------------------------------------------------------------------------------------------ LaSOT
class GrmLasot(_TrackingBuilder):
    """LaSOT (the 1120 training and 280 test sequences) for GRM training and evaluation."""

    HOMEPAGE = "http://vision.cs.stonybrook.edu/~lasot/"
    FLAG_FEATURES = ("full_occlusion", "out_of_view")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download LaSOT from http://vision.cs.stonybrook.edu/~lasot/download.html (the 70 class zips, or
    LaSOTBenchmark), unzip all classes into one folder and pass it as manual dir:
      <manual_dir>/<class>/<class>-<n>/img/00000001.jpg, groundtruth.txt, full_occlusion.txt, out_of_view.txt
    Split "train" holds the official 1120 training sequences (a lasot_train_split.txt in the manual dir
    overrides the list), split "test" the official 280 test sequences found there.
    """

    def _plans(self, root):
        plans = {}
        names, _ = lasot.train_names(root)
        lasot.check_root(root, names)
        index = lasot.build_index(root, names, "lasot", self.progress)
        table = _train_table("train", index)
        plans["train"] = SplitPlan(table, _frames_of(index), self._flags(root, names, table.lengths))
        test_names = [n for n in dataset_names("lasot")
                      if (root / n.rsplit("-", 1)[0] / n / "groundtruth.txt").is_file()]
        if test_names:
            if len(test_names) < len(dataset_names("lasot")):
                log.warning("LaSOT root %s holds %d of the %d test sequences; split 'test' has those", root,
                            len(test_names), len(dataset_names("lasot")))
            sequences = load_eval_dataset("lasot", root, test_names)
            table = _add_eval(None, "test", sequences)
            plans["test"] = SplitPlan(table, [s.frames for s in sequences],
                                      self._flags(root, test_names, table.lengths))
        return plans

    def _flags(self, root, names, lengths):
        return [{key: parse_flags(root / n.rsplit("-", 1)[0] / n / f"{key}.txt", expected=int(length))
                 for key in self.FLAG_FEATURES} for n, length in zip(names, lengths)]


# ------------------------------------------------------------------------------------------------ TrackingNet
class GrmTrackingnet(_TrackingBuilder):
    """TrackingNet (TRAIN_0..11 chunks and TEST) for GRM training and evaluation."""

    HOMEPAGE = "https://tracking-net.org/"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download TrackingNet with the official downloader (https://github.com/SilvioGiancola/TrackingNet-devkit,
    https://tracking-net.org/), extract the frames, and pass the top folder as manual dir:
      <manual_dir>/TRAIN_<k>/anno/<video>.txt, <manual_dir>/TRAIN_<k>/frames/<video>/0.jpg, 1.jpg, ...
      <manual_dir>/TEST/anno/<video>.txt (first box), <manual_dir>/TEST/frames/<video>/*.jpg
    Split "train" holds every TRAIN_<k> chunk present (select chunks when training), "test" the TEST chunk.
    """

    def _plans(self, root):
        plans = {}
        if any(p.name.startswith("TRAIN_") for p in root.iterdir()):
            chunk_names = trackingnet.chunks(root)
            index = trackingnet.build_index(root, trackingnet.videos(root, chunk_names), "trackingnet",
                                            progress=self.progress)
            table = _train_table("train", index)
            table.attrs["chunks"] = chunk_names
            plans["train"] = SplitPlan(table, _frames_of(index))
        if (root / "TEST" / "anno").is_dir():
            sequences = load_eval_dataset("trackingnet", root)
            plans["test"] = SplitPlan(_add_eval(None, "test", sequences), [s.frames for s in sequences])
        return plans


# ---------------------------------------------------------------------------------------------------- COCO 17
class GrmCoco2017(_TrackingBuilder):
    """COCO 2017 train images with their box annotations (one-frame sequences for GRM training)."""

    HOMEPAGE = "https://cocodataset.org/"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download train2017.zip and annotations_trainval2017.zip from https://cocodataset.org/#download, unzip into
    one folder and pass it as manual dir:
      <manual_dir>/annotations/instances_train2017.json, <manual_dir>/images/train2017/000000000009.jpg, ...
    One record per image that has a non-crowd box; the sequence table holds one one-frame sequence per
    non-crowd annotation (as the training reader).
    """

    def _features(self) -> dict:
        return {"image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "file_name": tfds.features.Text(),
                "objects": tfds.features.Sequence({"id": np.int64, "category": tfds.features.Text(),
                                                   "box": tfds.features.Tensor(shape=(4,), dtype=np.float64),
                                                   "visible": np.bool_})}

    def _plans(self, root):
        anno = coco.annotation_file(root)
        index = coco.build_index(root, anno, "coco")
        records: dict[str, int] = {}
        for f in index.files:
            records.setdefault(f, len(records))
        table = _train_table("train", index)
        table.records = np.array([records[f] for f in index.files], np.int64)
        return {"train": SplitPlan(table, [], record_files=list(records))}

    def _generate_examples(self, plan: SplitPlan):
        table = plan.table
        objects: list[list[int]] = [[] for _ in plan.record_files]
        for seq, record in enumerate(table.records):
            objects[int(record)].append(seq)
        bad = table.attrs.setdefault("bad_frames", [])
        total = len(plan.record_files)
        root = epath.Path(table.attrs["source"])
        paths = ((record, str(root / rel)) for record, rel in enumerate(plan.record_files))
        for (record, path), (data, problem) in _read_ahead(paths):
            if problem is not None:
                if self.strict_frames:
                    raise FrameError(f"{self.name}: {problem}")
                log.warning("%s: stored as a bad frame (training skips it as with folders): %s", self.name, problem)
                bad.append({"record": record, "sequence": table.names[objects[record][0]], "frame": 0, "file": path,
                            "problem": problem})
            yield _record_key(record, total), {
                "image": data, "file_name": plan.record_files[record],
                "objects": {"id": [int(table.names[s]) for s in objects[record]],
                            "category": [table.classes[s] for s in objects[record]],
                            "box": [table.train_boxes[s].astype(np.float64) for s in objects[record]],
                            "visible": [bool(table.train_visible[s]) for s in objects[record]]}}


BUILDERS = {"got10k": GrmGot10k, "lasot": GrmLasot, "trackingnet": GrmTrackingnet, "coco2017": GrmCoco2017}

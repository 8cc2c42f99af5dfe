"""Check a prepared dataset against the folder it was built from: the same sequences, frame counts, boxes,
visibility / cover flags and meta as the folder readers give, and records that hold the source files' bytes."""
from __future__ import annotations

import tempfile

import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from grm_jax.evaluation import datasets as folder_eval
from grm_jax.sequence import read_bytes

from .datasets import EVALUATION, TRAINING, builder_dir, load_eval_dataset, load_training_dataset
from ..prepared_store import SplitTable, data_source
from ..readers import build_dataset

# which training names / benchmarks each prepared dataset serves (and can be compared)
_TRAINING_NAMES = {"got10k": ("GOT10K_train", "GOT10K_vot_train", "GOT10K_val"), "lasot": ("LASOT",),
                   "trackingnet": ("TRACKINGNET",), "coco2017": ("COCO17",)}


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))


def compare_sequences(what: str, prepared, folder) -> list[str]:
    """Differences between two lists of `Sequence` (names, lengths, boxes, visibility, cover, meta)."""
    problems = []
    if [s.name for s in prepared] != [s.name for s in folder]:
        return [f"{what}: sequence lists differ ({len(prepared)} prepared, {len(folder)} in the folder)"]
    for p, f in zip(prepared, folder):
        for key, x, y in (("dataset", p.dataset, f.dataset), ("frame count", len(p.frames), len(f.frames)),
                          ("meta", p.meta, f.meta)):
            if x != y:
                problems.append(f"{what} {p.name}: {key} {x!r} prepared, {y!r} in the folder")
        for key in ("boxes", "visible", "cover"):
            x, y = getattr(p, key), getattr(f, key)
            if (x is None) != (y is None) or (x is not None and not _same(x, y)):
                problems.append(f"{what} {p.name}: {key} differ")
    return problems


def compare_training(prepared, folder) -> list[str]:
    what = f"training {folder.name}"
    problems = []
    for key in ("name", "is_video", "excluded"):
        if getattr(prepared, key) != getattr(folder, key):
            problems.append(f"{what}: {key} {getattr(prepared, key)!r} prepared, {getattr(folder, key)!r} in the "
                            f"folder")
    for key in ("lengths", "visible_counts"):
        if not _same(getattr(prepared, key), getattr(folder, key)):
            problems.append(f"{what}: {key} differ")
    return problems + compare_sequences(what, list(prepared.sequences), list(folder.sequences))


def check_records(bdir: str, split: str, table: SplitTable, frame_files: list[list[str]] | None, *,
                  every: bool, progress: bool = True, seed: int = 0) -> list[str]:
    """Records agree with the table (sequence, frame, box, visible) and hold the source files' bytes.
    `every`: all records, else the first and last frame of every sequence and 1000 random frames."""
    source = data_source(bdir, split)
    total = int(table.offsets[-1])
    if len(source) != total:
        return [f"split {split}: {len(source)} records but the table has {total} frames"]
    if every:
        frames = np.arange(total)
    else:
        ends = np.concatenate([table.offsets[:-1], table.offsets[1:] - 1])
        frames = np.unique(np.concatenate([ends, np.random.default_rng(seed).integers(0, total, min(total, 1000))]))
    seq_of = np.searchsorted(table.offsets, frames, side="right") - 1
    boxes = table.eval_boxes if table.eval_boxes is not None else table.train_boxes.astype(np.float64)
    visible = table.train_visible if table.train_visible is not None else table.eval_visible
    problems = []
    for frame, seq in tqdm(list(zip(frames.tolist(), seq_of.tolist())), desc=f"checking {split} records",
                           unit="frame", disable=not progress, leave=False):
        record = source[int(table.records[frame])]
        k = frame - int(table.offsets[seq])
        if "sequence" in record:
            got = (record["sequence"].decode(), int(record["frame"]))
            if got != (table.names[seq], k) or not _same(record["box"], boxes[frame]) or \
                    bool(record["visible"]) != bool(visible[frame]):
                problems.append(f"split {split} record {frame}: holds {got}, box {record['box'].tolist()}, expected "
                                f"{(table.names[seq], k)}, box {boxes[frame].tolist()}")
        if frame_files is not None:
            path = str(frame_files[seq][k])
            try:
                expected = read_bytes(path)
            except OSError:
                expected = b""  # a missing source frame is stored as empty bytes (a bad frame)
            if bytes(record["image"]) != expected:
                problems.append(f"split {split} record {frame}: image bytes differ from {path}")
        if len(problems) > 20:
            break
    return problems


def verify(dataset: str, manual_dir, data_dir, *, every_record: bool = False, progress: bool = True) -> list[str]:
    """All differences between the prepared `dataset` under `data_dir` and the folder `manual_dir` (empty list:
    they agree)."""
    bdir = builder_dir(dataset, data_dir)
    problems: list[str] = []
    splits = set(tfds.builder_from_directory(bdir).info.splits)
    with tempfile.TemporaryDirectory() as cache:
        for name in _TRAINING_NAMES[dataset]:
            if TRAINING[name.upper()][1] not in splits:
                continue
            folder = build_dataset(name, manual_dir, cache, refresh=True, progress=False)
            prepared = load_training_dataset(name, data_dir)
            problems += compare_training(prepared, folder)
            if name.upper() in ("GOT10K_TRAIN", "GOT10K_VAL", "LASOT", "TRACKINGNET", "COCO17"):
                split = TRAINING[name.upper()][1]
                table = SplitTable.load(bdir, split)
                index_files = [s.frames for s in folder.sequences]
                if dataset == "coco2017":
                    problems += _check_coco_records(bdir, table, folder, every_record, progress)
                elif len(folder) == len(table):  # (folders exclude sequences without a visible frame)
                    problems += check_records(bdir, split, table, index_files, every=every_record,
                                              progress=progress)
    for bench, (ds, split) in EVALUATION.items():
        if ds != dataset or split not in splits:
            continue
        prepared = load_eval_dataset(bench, data_dir, only_existing=True)
        folder = folder_eval.load_eval_dataset(bench, manual_dir, [s.name for s in prepared])
        problems += compare_sequences(f"benchmark {bench}", prepared, folder)
        if split == "test":
            problems += check_records(bdir, split, SplitTable.load(bdir, split), [s.frames for s in folder],
                                      every=every_record, progress=progress)
    return problems


def _check_coco_records(bdir, table, folder, every, progress) -> list[str]:
    source = data_source(bdir, "train")
    picks = range(len(folder)) if every else np.unique(np.linspace(0, len(folder) - 1, min(len(folder), 1000)
                                                                   ).astype(int))
    problems = []
    for i in tqdm(list(picks), desc="checking train records", unit="object", disable=not progress, leave=False):
        seq = folder.sequences[int(i)]
        record = source[int(table.records[int(i)])]
        ids = np.asarray(record["objects"]["id"]).tolist()
        if int(seq.name) not in ids:
            problems.append(f"COCO record {int(table.records[int(i)])} does not hold annotation {seq.name}")
            continue
        if not _same(record["objects"]["box"][ids.index(int(seq.name))], seq.boxes[0]):
            problems.append(f"COCO annotation {seq.name}: box differs in its record")
        try:
            expected = read_bytes(seq.frames[0])
        except OSError:
            expected = b""
        if bytes(record["image"]) != expected:
            problems.append(f"COCO record {int(table.records[int(i)])}: image bytes differ from {seq.frames[0]}")
    return problems

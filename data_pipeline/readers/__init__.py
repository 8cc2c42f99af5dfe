"""Training dataset readers: `build_dataset(name, root)` -> `TrackingDataset` (official
`lib/train/base_functions.py: names2datasets`).

Names as in the official configs (case-insensitive): LASOT, GOT10K_vot_train, GOT10K_train, GOT10K_votval,
GOT10K_val, TRACKINGNET, COCO17. The parsed index is cached (see `index.py`); a second build of the same root
loads it in well under a second. Structural problems (wrong root, missing list / split / annotation file, a
malformed line) raise one error naming the file. Video sequences without any visible frame are reported (log
warning) and left out (`TrackingDataset.excluded`).
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from grm_jax.sequence import AnnotationError, TrackingDataset, data_path

from . import coco, got10k, lasot, trackingnet
from .index import DatasetError, FramePaths, LazySequences, SequenceIndex, cached_index

log = logging.getLogger(__name__)

DATASET_NAMES = ("LASOT", "GOT10K_vot_train", "GOT10K_train", "GOT10K_votval", "GOT10K_val", "TRACKINGNET",
                 "COCO17")
_GOT_SPLITS = {"GOT10K_VOT_TRAIN": "vot", "GOT10K_TRAIN": "full", "GOT10K_VOTVAL": "votval", "GOT10K_VAL": "val"}

# which config root (DATA.ROOTS.<key>) each dataset name reads
ROOT_KEYS = {"LASOT": "LASOT", "TRACKINGNET": "TRACKINGNET", "COCO17": "COCO17", "GOT10K_vot_train": "GOT10K",
             "GOT10K_train": "GOT10K", "GOT10K_votval": "GOT10K", "GOT10K_val": "GOT10K"}


def _file_hash(path: Path | None) -> str | None:
    if path is None:
        return None
    return hashlib.sha1(path.read_bytes()).hexdigest()


def build_index(name: str, root: str | os.PathLike, cache_dir=None, *, split_file=None, chunks=None,
                refresh: bool = False, progress: bool = True) -> tuple[SequenceIndex, bool, bool]:
    """(index, is_video, from_cache) for dataset `name` under `root`."""
    key = name.upper()
    root = data_path(root)  # a local folder or a file-system URL (gs://...)
    if not str(root) or not root.exists():
        raise DatasetError(f"dataset root for {name} does not exist: {root}")
    if key in _GOT_SPLITS:
        split = _GOT_SPLITS[key]
        folder, names, ids_file = got10k.selected_sequences(root, split, split_file)
        anno_files = [folder / n / f for n in names for f in ("groundtruth.txt", "absence.label", "cover.label")]
        index, cached = cached_index(
            f"got10k_{split}", folder, [folder / "list.txt", *anno_files],
            [_file_hash(ids_file), names[:1], len(names)],
            lambda: got10k.build_index(folder, names, "got10k", progress), cache_dir, refresh)
        return index, True, cached
    if key == "LASOT":
        names, split_path = lasot.train_names(root, split_file)
        lasot.check_root(root, names)
        anno_files = [root / n.rsplit("-", 1)[0] / n / f for n in names
                      for f in ("groundtruth.txt", "full_occlusion.txt", "out_of_view.txt")]
        index, cached = cached_index(
            "lasot_train", root, anno_files, [_file_hash(split_path)],
            lambda: lasot.build_index(root, names, "lasot", progress), cache_dir, refresh)
        return index, True, cached
    if key == "TRACKINGNET":
        chunk_names = trackingnet.chunks(root, chunks)
        if chunks is None and len(chunk_names) < trackingnet.NUM_TRAIN_CHUNKS:
            log.warning("TrackingNet root %s has %d of the %d TRAIN chunks: %s", root, len(chunk_names),
                        trackingnet.NUM_TRAIN_CHUNKS, ", ".join(chunk_names))
        items = trackingnet.videos(root, chunk_names)
        anno_files = [root / c / "anno" / f"{v}.txt" for c, v in items]
        index, cached = cached_index(
            "trackingnet_train", root, anno_files, chunk_names,
            lambda: trackingnet.build_index(root, items, "trackingnet", progress=progress), cache_dir, refresh)
        return index, True, cached
    if key in ("COCO17", "COCO"):
        anno = coco.annotation_file(root)
        index, cached = cached_index("coco17_train", root, [anno], None,
                                     lambda: coco.build_index(root, anno, "coco"), cache_dir, refresh)
        return index, False, cached
    raise ValueError(f"unknown training dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")


def build_dataset(name: str, root: str | os.PathLike, cache_dir=None, *, split_file=None, chunks=None,
                  refresh: bool = False, progress: bool = True) -> TrackingDataset:
    """Index (or load the cached index of) a training dataset.

    root: the dataset folder (GOT-10k: the top folder with train/ and val/, or the train folder itself).
    cache_dir: where the index cache lives (default: <root>/.grm_jax_index, else ~/.cache/grm_jax/index).
    split_file: replaces the split list (GOT-10k ids / LaSOT names). chunks: TrackingNet chunk ids (default:
    every TRAIN_<k> present). refresh: rebuild the index even if a cache exists.
    """
    index, is_video, from_cache = build_index(name, root, cache_dir, split_file=split_file, chunks=chunks,
                                              refresh=refresh, progress=progress)
    if from_cache and index.invalid:   # reported one by one when the index was built
        log.warning("%s: %d annotation file(s) hold rows that are no box, left out of training; first: %s", name,
                    len(index.invalid), index.invalid[0])
    return dataset_from_index(name, index, is_video)


def dataset_from_index(name: str, index: SequenceIndex, is_video: bool, rows=None) -> TrackingDataset:
    """The `TrackingDataset` of `index` rows `rows` (default: all, in order): video sequences without any visible
    frame are reported and left out. Shared by the folder readers and the prepared (TFDS) source."""
    lengths, counts = index.lengths, index.visible_counts
    rows = np.arange(len(index)) if rows is None else np.asarray(rows, dtype=np.int64)
    excluded: list[str] = []
    if is_video:
        empty = counts[rows] == 0
        if empty.any():
            excluded = [index.names[i] for i in rows[empty]]
            log.warning("%s: %d of %d sequences have no visible frame and are left out: %s%s", name, len(excluded),
                        len(rows), ", ".join(excluded[:5]), " ..." if len(excluded) > 5 else "")
            rows = rows[~empty]
    return TrackingDataset(name=name, is_video=is_video, sequences=LazySequences(index, rows), excluded=excluded,
                           lengths=lengths[rows], visible_counts=counts[rows])


__all__ = ["AnnotationError", "DATASET_NAMES", "DatasetError", "FramePaths", "ROOT_KEYS", "SequenceIndex",
           "build_dataset", "build_index", "dataset_from_index"]

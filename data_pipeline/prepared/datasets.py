"""Training and evaluation datasets from prepared (TFDS) datasets: the same `TrackingDataset` / `Sequence`
objects as the folder readers, with frames that are prepared-frame references (`store.PreparedFrames`)."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import numpy as np
from etils import epath

from grm_jax.evaluation import datasets as folders
from grm_jax.sequence import Sequence, TrackingDataset, is_url

from ..readers import dataset_from_index, got10k, trackingnet
from ..readers.index import DatasetError, SequenceIndex
from ..prepared_store import PreparedFrames, SplitTable, table_path
from .builders import BUILDERS

log = logging.getLogger(__name__)

# training dataset name (as DATA.TRAIN.DATASETS_NAME) -> (prepared dataset, split, GOT-10k split selection)
TRAINING = {"GOT10K_VOT_TRAIN": ("got10k", "train", "vot"), "GOT10K_TRAIN": ("got10k", "train", "full"),
            "GOT10K_VOTVAL": ("got10k", "train", "votval"), "GOT10K_VAL": ("got10k", "val", "val"),
            "LASOT": ("lasot", "train", None), "TRACKINGNET": ("trackingnet", "train", None),
            "COCO17": ("coco2017", "train", None), "COCO": ("coco2017", "train", None)}
# evaluation benchmark (canonical name of grm_jax.evaluation.datasets) -> (prepared dataset, split)
EVALUATION = {"got10k_val": ("got10k", "val"), "got10k_test": ("got10k", "test"), "lasot": ("lasot", "test"),
              "trackingnet": ("trackingnet", "test")}
# the `Sequence.dataset` tag the folder training readers give
_TRAIN_TAGS = {"got10k": "got10k", "lasot": "lasot", "trackingnet": "trackingnet", "coco2017": "coco"}


def builder_dir(dataset: str, data_dir) -> str:
    """The prepared builder folder of `dataset` (got10k, lasot, trackingnet, coco2017) under a TFDS data dir
    (`<data_dir>/grm_<dataset>/<version>`), or `data_dir` itself when it is such a folder."""
    if dataset not in BUILDERS:
        raise ValueError(f"unknown prepared dataset {dataset!r}; choose one of {', '.join(BUILDERS)}")
    path = epath.Path(data_dir)
    if not is_url(path):
        path = epath.Path(os.path.abspath(os.path.expanduser(os.fspath(path))))  # frame references outlive cwd
    if (path / "dataset_info.json").exists():
        found = json.loads((path / "dataset_info.json").read_text()).get("name")
        if found != BUILDERS[dataset].name:
            raise DatasetError(f"{path} holds the prepared dataset {found!r}, not {BUILDERS[dataset].name!r}")
        return str(path)
    builder = BUILDERS[dataset](data_dir=str(path))
    if not builder.is_prepared():
        unfinished = list(epath.Path(builder.data_dir).parent.glob("*incomplete*")) if \
            epath.Path(builder.data_dir).parent.exists() else []
        raise DatasetError(
            f"no prepared {builder.name} {builder.version} in {path} (expected {builder.data_dir}/dataset_info.json)"
            + (f"; {unfinished[0]} is an unfinished build: run it again" if unfinished else "")
            + f". Build it with: scripts/prepare_tfds.py {dataset} --manual-dir DOWNLOAD --data-dir {path}")
    return str(builder.data_dir)


@dataclass
class PreparedIndex(SequenceIndex):
    """A `SequenceIndex` whose frames are records of a prepared split."""

    split: str = ""
    records: np.ndarray | None = None  # (F,) int64

    def sequence(self, i: int) -> Sequence:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        meta = {"class": self.classes[i]} if self.classes is not None else {}
        return Sequence(
            name=self.names[i], dataset=self.dataset, frames=PreparedFrames(self.root, self.split, self.records[a:b]),
            boxes=self.boxes[a:b].astype(np.float64), visible=self.visible[a:b].copy(),
            cover=None if self.cover is None else self.cover[a:b].astype(np.int64), meta=meta,
        )


class _StoredText:
    """A split file captured in the prepared dataset (read like a file by `got10k.select_names`)."""

    def __init__(self, text: str, origin: str):
        self.text, self.origin = text, origin

    def read_text(self) -> str:
        return self.text

    def read_bytes(self) -> bytes:   # read as any user text file (grm_jax.validation.read_utf8_text)
        return self.text.encode("utf-8")

    def __fspath__(self) -> str:   # named in messages as where it came from
        return self.origin

    def __str__(self) -> str:
        return self.origin


def _table(bdir: str, dataset: str, split: str) -> SplitTable:
    if not table_path(bdir, split).exists():
        present = sorted(p.name.split(".")[1] for p in epath.Path(bdir).glob("sequences.*.npz"))
        raise DatasetError(f"prepared {dataset} in {bdir} has no split {split!r} (it has: {', '.join(present)}); "
                           f"was it in the download it was prepared from?")
    return SplitTable.load(bdir, split)


def load_training_dataset(name: str, data_dir, *, split_file=None, chunks=None) -> TrackingDataset:
    """The training dataset `name` (LASOT, GOT10K_vot_train, ..., as `readers.build_dataset`) from a prepared
    dataset under `data_dir`: equal to the folder reader's (sequences, order, boxes, visibility), frames read
    from the records. `split_file` / `chunks` as for `readers.build_dataset`."""
    key = name.upper()
    if key not in TRAINING:
        raise ValueError(f"unknown training dataset {name!r}; choose one of {', '.join(sorted(TRAINING))}")
    dataset, split, got_split = TRAINING[key]
    bdir = builder_dir(dataset, data_dir)
    table = _table(bdir, dataset, split)
    if table.train_boxes is None:
        raise DatasetError(f"prepared {dataset} split {split!r} in {bdir} has no training annotations")
    index = PreparedIndex(dataset=_TRAIN_TAGS[dataset], root=bdir, names=table.names, offsets=table.offsets,
                          boxes=table.train_boxes, visible=table.train_visible, cover=table.cover,
                          classes=table.classes, split=split, records=table.records)
    rows = None
    if got_split is not None:
        local = {n: _StoredText(text, f"{n} of {bdir}") for n, text in table.attrs.get("split_files", {}).items()}
        selected, _ = got10k.select_names(table.names, got_split, split_file, local)
        position = {n: i for i, n in enumerate(table.names)}
        rows = [position[n] for n in selected]
    elif dataset == "trackingnet":
        present = table.attrs.get("chunks", [])
        if chunks is not None:
            wanted = [f"TRAIN_{int(k)}" for k in chunks]
            missing = [c for c in wanted if c not in present]
            if missing:
                raise DatasetError(f"prepared TrackingNet {bdir} has no chunk {missing[0]} (it holds "
                                   f"{', '.join(present)})")
            rows = [i for i, n in enumerate(table.names) if n.split("/", 1)[0] in wanted]
        elif len(present) < trackingnet.NUM_TRAIN_CHUNKS:
            log.warning("prepared TrackingNet %s has %d of the %d TRAIN chunks: %s", bdir, len(present),
                        trackingnet.NUM_TRAIN_CHUNKS, ", ".join(present))
    return dataset_from_index(name, index, dataset != "coco2017", rows)


def load_eval_dataset(name: str, data_dir, sequences=None, *, only_existing: bool = False) -> list[Sequence]:
    """Benchmark `name` (got10k_val, got10k_test, lasot, trackingnet and their aliases) from a prepared dataset:
    the same sequences, boxes, visibility and meta as `grm_jax.evaluation.datasets.load_eval_dataset` on the
    folder it was prepared from, frames read from the records. `sequences` / `only_existing` as there."""
    key = folders.DATASET_ALIASES.get(name.lower(), name.lower())
    if key not in EVALUATION:
        raise ValueError(f"no prepared dataset for benchmark {name!r}; prepared benchmarks: "
                         f"{', '.join(sorted(EVALUATION))}")
    dataset, split = EVALUATION[key]
    bdir = builder_dir(dataset, data_dir)
    table = _table(bdir, dataset, split)
    if table.eval_boxes is None:
        raise DatasetError(f"prepared {dataset} split {split!r} in {bdir} has no evaluation annotations")
    row = {n: i for i, n in enumerate(table.names)}
    listed = folders.dataset_names(key) or table.names
    names = folders._select(list(listed), None if sequences is None else list(sequences), row.__contains__,
                            only_existing, f"prepared {key}")
    missing = [n for n in names if n not in row]
    if missing:
        raise DatasetError(f"prepared {key} in {bdir} holds {len(table)} of the {len(listed)} sequences; "
                           f"{missing[0]} is not among them (pass only_existing=True or sequences=[...])")
    tag = table.attrs.get("eval_dataset", key)
    out = []
    for n in names:
        i = row[n]
        a, b = int(table.offsets[i]), int(table.offsets[i + 1])
        out.append(Sequence(n, tag, PreparedFrames(bdir, split, table.records[a:b]), table.eval_boxes[a:b],
                            table.eval_visible[a:b], meta=dict(table.eval_meta[i])))
    return out

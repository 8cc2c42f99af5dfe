"""Evaluation benchmark readers (official `lib/test/evaluation/*dataset.py`, e.g. `lasotdataset.py: LaSOTDataset`):
`load_eval_dataset(name, root) -> list[Sequence]`.

Every reader returns sequences whose `boxes` have one row per frame (float64 xywh). Datasets that publish only the
first box (GOT-10k test, TrackingNet test) get NaN rows after the first. `visible` is the official
`target_visible` where the benchmark defines one (LaSOT, AVisT: no full occlusion and not out of view), else
"the row is a valid box" (finite, w > 0, h > 0). `meta` carries `object_class`, TNL2K's `language` and
`has_visibility`.

Benchmarks with a fixed sequence list (LaSOT, AVisT, NfS, UAV123, OTB) load every listed sequence and fail on the
first one missing; `sequences=[...]` picks some of them and `only_existing=True` takes the listed sequences whose
annotation file exists (partial downloads and the synthetic twins from data_pipeline.synthetic). A missing frame
or annotation file, or a malformed annotation line, raises one error naming the file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from grm_jax.sequence import AnnotationError, FrameError, Sequence, data_path, parse_annotation, parse_flags
from grm_jax.validation import read_name_list

from ..errors import UserError
from . import tables

DATASETS = ("lasot", "lasot_extension_subset", "got10k_test", "got10k_val", "trackingnet", "nfs", "uav", "avist",
            "otb", "tnl2k")
DATASET_ALIASES = {"lasot_test": "lasot", "lasot_ext": "lasot_extension_subset",
                   "lasot_extension": "lasot_extension_subset", "trackingnet_test": "trackingnet", "nfs30": "nfs",
                   "uav123": "uav", "otb100": "otb", "otb2015": "otb"}
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


class EvalDatasetError(UserError, ValueError):
    """The benchmark folder is not laid out as expected, or the dataset / a sequence name is unknown."""


class UnknownSequenceError(EvalDatasetError, KeyError):
    """A requested sequence is not part of the benchmark."""

    __str__ = Exception.__str__   # KeyError would quote the message


def _valid_rows(boxes: np.ndarray) -> np.ndarray:
    return np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)


def _listing(folder) -> set[str]:
    try:
        return {p.name for p in folder.iterdir()}
    except FileNotFoundError:
        raise FrameError(f"frame folder not found: {folder}") from None
    except NotADirectoryError:
        raise FrameError(f"frame folder is not a folder: {folder}") from None


def _check_frames(frames: list[str], sequence: str) -> None:
    """Every expected frame file exists (one directory listing per folder)."""
    listings: dict[str, set[str]] = {}
    for f in frames:
        folder, name = os.path.split(f)
        if folder not in listings:
            listings[folder] = _listing(data_path(folder))
        if name not in listings[folder]:
            raise FrameError(f"sequence {sequence}: missing frame {f} ({len(frames)} frames expected)")


def _select(all_names: list[str], sequences: Iterable[str] | None, exists: Callable[[str], bool],
            only_existing: bool, dataset: str, prefix: str = "") -> list[str]:
    if sequences is not None:
        known = set(all_names)
        chosen = []
        for s in sequences:
            name = s if s in known else prefix + s
            if name not in known:
                close = [n for n in all_names if s.lower() in n.lower()][:5]
                raise UnknownSequenceError(f"{dataset} has no sequence {s!r}"
                                           + (f"; similar: {', '.join(close)}" if close else ""))
            chosen.append(name)
        return chosen
    if only_existing:
        chosen = [n for n in all_names if exists(n)]
        if not chosen:
            raise EvalDatasetError(f"no {dataset} sequence found on disk (checked the {len(all_names)} listed names)")
        return chosen
    return list(all_names)


def _need_file(path: Path, dataset: str, sequence: str) -> None:
    if not path.is_file():
        raise AnnotationError(f"{dataset} sequence {sequence}: missing annotation file {path} (--only-existing "
                              f"/ only_existing=True, or --sequences, loads only the sequences present)")


# ------------------------------------------------------------------------------------------------ LaSOT / AVisT
def _lasot(root: Path, names: list[str], dataset_tag: str, verify: bool) -> list[Sequence]:
    out = []
    for name in names:
        cls = name.rsplit("-", 1)[0]
        d = root / cls / name
        _need_file(d / "groundtruth.txt", "LaSOT", name)
        boxes = parse_annotation(d / "groundtruth.txt", ",")
        occ = parse_flags(d / "full_occlusion.txt", expected=len(boxes))
        oov = parse_flags(d / "out_of_view.txt", expected=len(boxes))
        frames = [str(d / "img" / f"{k:08d}.jpg") for k in range(1, len(boxes) + 1)]
        if verify:
            _check_frames(frames, name)
        out.append(Sequence(name, dataset_tag, frames, boxes, (occ == 0) & (oov == 0),
                            meta={"object_class": cls, "has_visibility": True}))
    return out


def _avist(root: Path, names: list[str], verify: bool) -> list[Sequence]:
    out = []
    for name in names:
        anno = root / "anno" / f"{name}.txt"
        _need_file(anno, "AVisT", name)
        boxes = parse_annotation(anno, " ")
        occ = parse_flags(root / "full_occlusion" / f"{name}_full_occlusion.txt", expected=len(boxes))
        oov = parse_flags(root / "out_of_view" / f"{name}_out_of_view.txt", expected=len(boxes))
        frames = [str(root / "sequences" / name / f"img_{k:05d}.jpg") for k in range(1, len(boxes) + 1)]
        if verify:
            _check_frames(frames, name)
        out.append(Sequence(name, "avist", frames, boxes, (occ == 0) & (oov == 0), meta={"has_visibility": True}))
    return out


# ------------------------------------------------------------------------------------------ NfS / UAV123 / OTB
_TABLE_DELIMITER = {"nfs": "\t", "uav": ",", "otb": None}


def _table_sequences(fmt: str, root: Path, names: list[str], verify: bool) -> list[Sequence]:
    entries = {e["name"]: e for e in tables.table(fmt)}
    out = []
    for name in names:
        e = entries[name]
        anno = root / e["anno"]
        _need_file(anno, fmt, name)
        boxes = parse_annotation(anno, _TABLE_DELIMITER[fmt])
        omit = e.get("init_omit", 0)
        available = e["end"] - e["start"] + 1
        if len(boxes) > available:
            raise AnnotationError(f"{anno}: {len(boxes)} annotation rows but the {fmt} table defines only "
                                  f"{available} frames ({e['start']}..{e['end']}) for {name}")
        boxes = boxes[omit:]
        # frames follow the annotation (equal to the table range on the real benchmark; shorter on a twin)
        first = e["start"] + omit
        frames = [str(root / e["path"] / f"{k:0{e['nz']}d}.{e['ext']}") for k in range(first, first + len(boxes))]
        if verify:
            _check_frames(frames, name)
        out.append(Sequence(name, fmt, frames, boxes, _valid_rows(boxes),
                            meta={"object_class": e["object_class"], "has_visibility": False}))
    return out


# ---------------------------------------------------------------------------------- GOT-10k / TrackingNet / TNL2K
def _sorted_frames(folder: Path, exts=(".jpg",), numeric: bool = True) -> list[str]:
    names = [n for n in _listing(folder) if n.lower().endswith(exts)]
    if numeric:
        try:
            names.sort(key=lambda n: int(os.path.splitext(n)[0]))
        except ValueError:
            raise FrameError(f"frame names in {folder} are not all integers (e.g. {names[0]!r})") from None
    else:
        names.sort()
    return [str(folder / n) for n in names]


def _first_only(init: np.ndarray, length: int) -> np.ndarray:
    boxes = np.full((length, 4), np.nan)
    boxes[0] = init[0]
    return boxes


def _got10k_dir(root: Path, split: str) -> Path:
    for c in (root / split, root):
        if (c / "list.txt").is_file():
            return c
    raise EvalDatasetError(f"GOT-10k root {root} has no {split}/list.txt")


def _got10k(root: Path, split: str, sequences, only_existing: bool) -> list[Sequence]:
    folder = _got10k_dir(root, split)
    names = read_name_list(folder / "list.txt")   # each name checked: no path separators, '..' or absolute paths
    names = _select(names, sequences, lambda n: (folder / n / "groundtruth.txt").is_file(), only_existing,
                    f"GOT-10k {split}")
    out = []
    for name in names:
        d = folder / name
        _need_file(d / "groundtruth.txt", f"GOT-10k {split}", name)
        gt = parse_annotation(d / "groundtruth.txt", ",")
        frames = _sorted_frames(d)
        if not frames:
            raise FrameError(f"GOT-10k {split} sequence {name}: no .jpg frames in {d}")
        if split == "test":
            boxes = _first_only(gt, len(frames))
        else:
            if len(gt) != len(frames):
                raise AnnotationError(f"{d / 'groundtruth.txt'}: {len(gt)} rows but {len(frames)} frames in {d}")
            boxes = gt
        out.append(Sequence(name, "got10k", frames, boxes, _valid_rows(boxes),
                            meta={"has_visibility": False, "annotated": split != "test"}))
    return out


def _trackingnet(root: Path, sequences, only_existing: bool) -> list[Sequence]:
    test = root / "TEST" if (root / "TEST").is_dir() else root
    anno_dir = test / "anno"
    if not anno_dir.is_dir():
        raise EvalDatasetError(f"TrackingNet root {root} has no TEST/anno folder")
    names = sorted(n[:-4] for n in _listing(anno_dir) if n.endswith(".txt"))
    names = _select(names, sequences, lambda n: True, only_existing, "TrackingNet test")
    out = []
    for name in names:
        gt = parse_annotation(anno_dir / f"{name}.txt", ",")
        frames = _sorted_frames(test / "frames" / name)
        if not frames:
            raise FrameError(f"TrackingNet sequence {name}: no .jpg frames in {test / 'frames' / name}")
        boxes = _first_only(gt, len(frames))
        out.append(Sequence(name, "trackingnet", frames, boxes, _valid_rows(boxes),
                            meta={"has_visibility": False, "annotated": False}))
    return out


def _tnl2k(root: Path, sequences, only_existing: bool) -> list[Sequence]:
    if not root.is_dir():
        raise EvalDatasetError(f"TNL2K root is not a folder: {root}")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = _select(names, sequences, lambda n: (root / n / "groundtruth.txt").is_file(), only_existing, "TNL2K")
    out = []
    for name in names:
        d = root / name
        _need_file(d / "groundtruth.txt", "TNL2K", name)
        boxes = parse_annotation(d / "groundtruth.txt", ",")
        frames = _sorted_frames(d / "imgs", _IMAGE_EXTS, numeric=False)
        if len(frames) != len(boxes):
            raise AnnotationError(f"{d / 'groundtruth.txt'}: {len(boxes)} rows but {len(frames)} frames in "
                                  f"{d / 'imgs'}")
        language = (d / "language.txt").read_text(errors="replace").strip() if (d / "language.txt").is_file() else ""
        out.append(Sequence(name, "tnl2k", frames, boxes, _valid_rows(boxes),
                            meta={"language": language, "has_visibility": False}))
    return out


# ------------------------------------------------------------------------------------------------------- public
def dataset_names(name: str) -> list[str] | None:
    """The fixed sequence list of a benchmark (None for those defined by what is on disk)."""
    name = DATASET_ALIASES.get(name.lower(), name.lower())
    if name == "lasot":
        return tables.lasot_test_names()
    if name == "lasot_extension_subset":
        return tables.lasot_extension_names()
    if name == "avist":
        return tables.avist_names()
    if name in ("nfs", "uav", "otb"):
        return [e["name"] for e in tables.table(name)]
    return None


def load_eval_dataset(name: str, root: str | os.PathLike, sequences: Iterable[str] | None = None, *,
                      only_existing: bool = False, verify_frames: bool = True) -> list[Sequence]:
    """Load benchmark `name` (see DATASETS) from `root`.

    sequences: names to load (official names; the 'nfs_'/'uav_'/'otb_' prefixes may be left out).
    only_existing: for fixed-list benchmarks, load the listed sequences whose annotation exists.
    verify_frames: check that every frame file exists (one directory listing per sequence).
    """
    key = DATASET_ALIASES.get(name.lower(), name.lower())
    if key not in DATASETS:
        raise EvalDatasetError(f"unknown evaluation dataset {name!r}; choose one of {', '.join(DATASETS)}")
    root = data_path(root)  # a local folder or a file-system URL (gs://...)
    if not root.is_dir():
        raise EvalDatasetError(f"{name} root is not a folder: {root}")
    sequences = None if sequences is None else list(sequences)
    if key in ("lasot", "lasot_extension_subset"):
        names = _select(dataset_names(key), sequences,
                        lambda n: (root / n.rsplit("-", 1)[0] / n / "groundtruth.txt").is_file(), only_existing, key)
        return _lasot(root, names, "lasot" if key == "lasot" else "lasot_extension_subset", verify_frames)
    if key == "avist":
        names = _select(dataset_names(key), sequences, lambda n: (root / "anno" / f"{n}.txt").is_file(),
                        only_existing, "AVisT")
        return _avist(root, names, verify_frames)
    if key in ("nfs", "uav", "otb"):
        entries = {e["name"]: e for e in tables.table(key)}
        names = _select(list(entries), sequences, lambda n: (root / entries[n]["anno"]).is_file(), only_existing,
                        key, prefix=f"{key}_")
        return _table_sequences(key, root, names, verify_frames)
    if key == "got10k_test":
        return _got10k(root, "test", sequences, only_existing)
    if key == "got10k_val":
        return _got10k(root, "val", sequences, only_existing)
    if key == "trackingnet":
        return _trackingnet(root, sequences, only_existing)
    return _tnl2k(root, sequences, only_existing)


__all__ = ["DATASETS", "EvalDatasetError", "dataset_names", "load_eval_dataset"]


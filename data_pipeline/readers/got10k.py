"""GOT-10k training reader (official `lib/train/dataset/got10k.py: Got10k`).

Layout: `<split_dir>/list.txt` (one folder per line), per sequence `%08d.jpg` from 1, `groundtruth.txt` (comma
xywh), `absence.label` (1 = absent), `cover.label` (0 = fully covered .. 8). Frame count = annotation rows.
visible = (absence == 0) & (cover > 0) & (w > 0) & (h > 0).

Splits: "full" (every sequence of train/list.txt), "vot" (0-based indices into train/list.txt from
got10k_vot_train_split.txt: the 7086 sequences that do not overlap VOT), "votval" (got10k_val_split.txt), "val"
(the val/ folder). A split file in the train folder overrides the shipped one in data_pipeline/splits/.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from grm_jax.sequence import AnnotationError, parse_annotation, parse_flags, data_path, resolve_path
from grm_jax.validation import read_name_list, read_utf8_text

from .index import DatasetError, IndexBuilder, SequenceIndex

log = logging.getLogger(__name__)

SPLITS_DIR = Path(__file__).resolve().parents[1] / "splits"
SPLIT_FILES = {"vot": "got10k_vot_train_split.txt", "votval": "got10k_val_split.txt", "full": "got10k_train_split.txt"}


def split_dir(root: Path, split: str) -> Path:
    """The folder holding list.txt for `split`. `root` is the GOT-10k top folder (with train/, val/) or, as in
    the official settings, the train folder itself."""
    root = data_path(root)
    folder = "val" if split == "val" else "train"
    candidates = [root / folder]
    if root.name == folder or (folder == "train" and root.name != "val"):
        candidates.insert(0, root)  # root is the split folder itself (the official settings point at .../train)
    if root.name in ("train", "val"):
        candidates.append(root.parent / folder)
    for c in candidates:
        if (c / "list.txt").is_file():
            return c
    raise DatasetError(f"GOT-10k root {root} has no {folder}/list.txt (looked in: "
                       f"{', '.join(str(c) for c in candidates)})")


def read_list(folder: Path) -> list[str]:
    names = read_name_list(folder / "list.txt")   # each name checked: no path separators, '..' or absolute paths
    if not names:
        raise DatasetError(f"{folder / 'list.txt'} lists no sequences")
    return names


def read_split_ids(path: Path, num_sequences: int) -> list[int]:
    return parse_split_ids(read_utf8_text(path), path, num_sequences)


def parse_split_ids(text: str, origin, num_sequences: int) -> list[int]:
    """0-based ids of a split file's text (`origin` names the file in errors)."""
    try:
        ids = [int(t) for t in text.split()]
    except ValueError as err:
        raise DatasetError(f"GOT-10k split file {origin} holds a non-integer id: {err}") from None
    bad = [i for i in ids if not 0 <= i < num_sequences]
    if bad:
        raise DatasetError(f"GOT-10k split file {origin} refers to sequence index {bad[0]} but list.txt has only "
                           f"{num_sequences} sequences (wrong root or split file?)")
    return ids


def selected_sequences(root: Path, split: str, split_file=None) -> tuple[Path, list[str], Path | None]:
    folder = split_dir(root, split)
    local = {name: folder / name for name in SPLIT_FILES.values() if (folder / name).is_file()}
    names, ids_file = select_names(read_list(folder), split, split_file, local)
    return folder, names, ids_file


def select_names(names: list[str], split: str, split_file=None, local: dict | None = None):
    """(the names of `split` in order, the split file used) from list.txt's `names`. `local`: split files that
    come with the dataset ({file name: path-like with read_text()}); they override the shipped ones."""
    if split not in ("full", "vot", "votval", "val"):
        raise ValueError(f"GOT-10k split must be full, vot, votval or val, not {split!r}")
    local = local or {}

    def ids_file(which):
        if split_file is not None:
            return Path(split_file)
        name = SPLIT_FILES[which]
        if name in local:
            return local[name]
        shipped = SPLITS_DIR / name
        return shipped if shipped.is_file() else None

    used = None
    if split in ("vot", "votval") or (split == "full" and split_file is not None):
        used = ids_file(split)
        if used is None:
            raise DatasetError(f"GOT-10k split {split!r} needs {SPLIT_FILES[split]} (the official list of 0-based "
                               f"ids) in {SPLITS_DIR} or the dataset's train folder")
        names = [names[i] for i in parse_split_ids(read_utf8_text(used), used, len(names))]
    elif split == "full":
        # the official got10k_train_split.txt is a permutation of all ids; list order is used when not shipped
        shipped = ids_file("full")
        if shipped is not None:
            ids = parse_split_ids(read_utf8_text(shipped), shipped, len(names))
            if len(ids) == len(names):
                names = [names[i] for i in ids]
                used = shipped
    return names, used


def parse_sequence(seq_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gt_path = seq_dir / "groundtruth.txt"
    if not gt_path.is_file():
        raise DatasetError(f"GOT-10k sequence {seq_dir.name}: missing annotation file {gt_path}")
    boxes = parse_annotation(gt_path, ",")
    absence = parse_flags(seq_dir / "absence.label", expected=len(boxes))
    cover = parse_flags(seq_dir / "cover.label", expected=len(boxes))
    visible = (absence == 0) & (cover > 0) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    return boxes, visible, cover


def build_index(folder: Path, names: list[str], dataset: str, progress: bool = True) -> SequenceIndex:
    builder = IndexBuilder()
    for name in tqdm(names, desc=f"indexing {dataset}", unit="seq", disable=not progress, leave=False):
        try:
            boxes, visible, cover = parse_sequence(folder / name)
        except AnnotationError as err:
            raise AnnotationError(f"GOT-10k sequence {name}: {err}") from None
        builder.add(name, boxes, visible, folder=name, cover=cover, source=folder / name / "groundtruth.txt")
    return builder.build(dataset, resolve_path(folder), pattern="{:08d}.jpg", first=1)

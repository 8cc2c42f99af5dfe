"""LaSOT training reader (official `lib/train/dataset/lasot.py: Lasot`).

Layout: `<root>/<class>/<class>-<n>/img/%08d.jpg` from 1, `groundtruth.txt` (comma xywh), `full_occlusion.txt`
and `out_of_view.txt` (one comma-separated line of 0/1). Frame count = annotation rows.
visible = (full_occlusion == 0) & (out_of_view == 0) & (w > 0) & (h > 0).

The train split is the official 1120 names (data_pipeline/splits/lasot_train_split.txt: every class-id of the 70
classes x 1..20 not in the 280-sequence test list); a `lasot_train_split.txt` in the dataset root overrides it.
"""
from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from grm_jax.sequence import AnnotationError, parse_annotation, parse_flags, resolve_path
from grm_jax.validation import read_name_list

from .index import DatasetError, IndexBuilder, SequenceIndex

SPLITS_DIR = Path(__file__).resolve().parents[1] / "splits"
SPLIT_FILE = "lasot_train_split.txt"


def train_names(root: Path, split_file=None) -> tuple[list[str], Path]:
    path = Path(split_file) if split_file is not None else (
        root / SPLIT_FILE if (root / SPLIT_FILE).is_file() else SPLITS_DIR / SPLIT_FILE)
    if not path.is_file():
        raise DatasetError(f"LaSOT train split file not found: {path}")
    names = read_name_list(path)   # each name checked: no path separators, '..' or absolute paths
    if not names:
        raise DatasetError(f"LaSOT split file {path} lists no sequences")
    return names, path


def check_root(root: Path, names: list[str]) -> None:
    if not root.is_dir():
        raise DatasetError(f"LaSOT root is not a folder: {root}")
    first = root / names[0].rsplit("-", 1)[0] / names[0]
    if not first.is_dir():
        raise DatasetError(f"LaSOT root {root} has no sequence folder {first} (expected <root>/<class>/<class>-<n>)")


def build_index(root: Path, names: list[str], dataset: str = "lasot", progress: bool = True) -> SequenceIndex:
    builder = IndexBuilder()
    for name in tqdm(names, desc=f"indexing {dataset}", unit="seq", disable=not progress, leave=False):
        cls = name.rsplit("-", 1)[0]
        seq_dir = root / cls / name
        gt_path = seq_dir / "groundtruth.txt"
        if not gt_path.is_file():
            raise DatasetError(f"LaSOT sequence {name}: missing annotation file {gt_path}")
        try:
            boxes = parse_annotation(gt_path, ",")
            occ = parse_flags(seq_dir / "full_occlusion.txt", expected=len(boxes))
            oov = parse_flags(seq_dir / "out_of_view.txt", expected=len(boxes))
        except AnnotationError as err:
            raise AnnotationError(f"LaSOT sequence {name}: {err}") from None
        visible = (occ == 0) & (oov == 0) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        builder.add(name, boxes, visible, folder=f"{cls}/{name}/img", cls=cls, source=gt_path)
    return builder.build(dataset, resolve_path(root), pattern="{:08d}.jpg", first=1)

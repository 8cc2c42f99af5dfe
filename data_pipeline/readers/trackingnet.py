"""TrackingNet training reader (official `lib/train/dataset/tracking_net.py: TrackingNet`).

Layout: chunks `<root>/TRAIN_<k>/anno/<video>.txt` (comma xywh per frame) and `frames/<video>/<i>.jpg`
(0-based, unpadded). visible = (w > 0) & (h > 0), then, with only_human_anno (the official default), only
every 30th frame and the last frame stay visible (the others are interpolated annotations).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from tqdm import tqdm

from grm_jax.sequence import AnnotationError, parse_annotation, resolve_path

from .index import DatasetError, IndexBuilder, SequenceIndex

NUM_TRAIN_CHUNKS = 12


def chunks(root: Path, chunk_ids=None) -> list[str]:
    if not root.is_dir():
        raise DatasetError(f"TrackingNet root is not a folder: {root}")
    if chunk_ids is None:
        found = sorted((p.name for p in root.iterdir() if re.fullmatch(r"TRAIN_\d+", p.name) and p.is_dir()),
                       key=lambda n: int(n.split("_")[1]))
        if not found:
            raise DatasetError(f"TrackingNet root {root} has no TRAIN_<k> chunk folders")
        return found
    names = [f"TRAIN_{int(k)}" for k in chunk_ids]
    for n in names:
        if not (root / n / "anno").is_dir():
            raise DatasetError(f"TrackingNet chunk folder missing: {root / n / 'anno'}")
    return names


def videos(root: Path, chunk_names: list[str]) -> list[tuple[str, str]]:
    out = []
    for chunk in chunk_names:
        anno = root / chunk / "anno"
        if not anno.is_dir():
            raise DatasetError(f"TrackingNet chunk {chunk} has no anno folder: {anno}")
        out.extend((chunk, f[:-4]) for f in sorted(f for f in _listdir(anno) if f.endswith(".txt")))
    return out


def _listdir(path) -> list[str]:
    return [p.name for p in path.iterdir()]


def human_annotated(length: int) -> np.ndarray:
    """Frames annotated by hand: indices 0, 30, 60, ... and the last frame."""
    keep = np.arange(length) % 30 == 0
    if length:
        keep[-1] = True
    return keep


def build_index(root: Path, items: list[tuple[str, str]], dataset: str = "trackingnet",
                only_human_anno: bool = True, progress: bool = True) -> SequenceIndex:
    builder = IndexBuilder()
    for chunk, video in tqdm(items, desc=f"indexing {dataset}", unit="seq", disable=not progress, leave=False):
        try:
            boxes = parse_annotation(root / chunk / "anno" / f"{video}.txt", ",")
        except AnnotationError as err:
            raise AnnotationError(f"TrackingNet video {chunk}/{video}: {err}") from None
        visible = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        if only_human_anno:
            visible &= human_annotated(len(boxes))
        builder.add(f"{chunk}/{video}", boxes, visible, folder=f"{chunk}/frames/{video}",
                    source=root / chunk / "anno" / f"{video}.txt")
    return builder.build(dataset, resolve_path(root), pattern="{:d}.jpg", first=0)

"""COCO 2017 training reader (official `lib/train/dataset/coco_seq.py: MSCOCOSeq`): every annotation with
iscrowd == 0 is a one-frame sequence.

Layout: `<root>/annotations/instances_train2017.json`, images `<root>/images/train2017/<file_name>`.
Box = COCO [x, y, w, h]. As an image dataset, small objects are not filtered (the official reader defines
visible = w > 50 & h > 50 but never uses it to filter); here visible = (w > 0) & (h > 0).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from grm_jax.sequence import resolve_path

from .index import DatasetError, IndexBuilder, SequenceIndex


def annotation_file(root: Path, split: str = "train", version: str = "2017") -> Path:
    path = root / "annotations" / f"instances_{split}{version}.json"
    if not path.is_file():
        raise DatasetError(f"COCO annotation file not found: {path}")
    return path


def build_index(root: Path, anno_path: Path, dataset: str = "coco", split: str = "train",
                version: str = "2017") -> SequenceIndex:
    try:
        data = json.loads(anno_path.read_text())
        images = {img["id"]: img["file_name"] for img in data["images"]}
        categories = {c["id"]: c["name"] for c in data.get("categories", [])}
        anns = data["annotations"]
    except (ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"COCO annotation file {anno_path} is malformed: {err!r}") from None
    builder = IndexBuilder()
    image_dir = f"images/{split}{version}"
    for ann in anns:
        if ann.get("iscrowd", 0) != 0:
            continue
        try:
            box = np.asarray(ann["bbox"], dtype=np.float64).reshape(4)
            file_name = images[ann["image_id"]]
        except (KeyError, ValueError) as err:
            raise DatasetError(f"COCO annotation id {ann.get('id')} in {anno_path} is malformed: {err!r}") from None
        builder.add(str(ann["id"]), box[None], np.array([box[2] > 0 and box[3] > 0]),
                    file=f"{image_dir}/{file_name}", cls=categories.get(ann.get("category_id"), ""),
                    source=f"{anno_path} (annotation id {ann.get('id')})", line_numbers=False)
    return builder.build(dataset, resolve_path(root))

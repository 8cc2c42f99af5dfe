"""Training readers on their synthetic twins: visibility rules, frames, splits, index cache, bad input."""
import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_pipeline import readers
from data_pipeline.readers import DatasetError, build_dataset, build_index, got10k
from data_pipeline.synthetic import write_dataset
from grm_jax.evaluation import tables
from grm_jax.sequence import AnnotationError, FrameError, parse_annotation, read_frame


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train_data")
    kw = dict(num_frames=(32, 64), image_size=(160, 120), seed=11)
    write_dataset("got10k", root / "got10k", num_sequences=4, split="train", **kw)
    write_dataset("got10k", root / "got10k", num_sequences=2, split="val", **kw)
    write_dataset("lasot", root / "lasot", num_sequences=3, **kw)
    write_dataset("trackingnet", root / "trackingnet", num_sequences=4, num_chunks=2, **kw)
    write_dataset("coco", root / "coco", num_sequences=6, image_size=(160, 120), seed=11)
    return root


def _copy(data: Path, name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(data / name, dst, ignore=shutil.ignore_patterns(".grm_jax_index"))
    return dst


def _lines(path: Path) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", ndmin=2)


def test_got10k_full_and_visibility(data, tmp_path):
    ds = build_dataset("GOT10K_train", data / "got10k", cache_dir=tmp_path, progress=False)
    assert ds.is_video and len(ds) == 4 and ds.excluded == []
    listed = (data / "got10k" / "train" / "list.txt").read_text().split()
    assert [s.name for s in ds.sequences] == listed
    for seq in ds.sequences:
        d = data / "got10k" / "train" / seq.name
        gt = _lines(d / "groundtruth.txt")
        absence = np.loadtxt(d / "absence.label")
        cover = np.loadtxt(d / "cover.label")
        np.testing.assert_allclose(seq.boxes, gt, atol=1e-4)
        assert seq.boxes.dtype == np.float64 and seq.boxes.shape == (len(gt), 4)
        np.testing.assert_array_equal(seq.visible, (absence == 0) & (cover > 0) & (gt[:, 2] > 0) & (gt[:, 3] > 0))
        np.testing.assert_array_equal(seq.cover, cover)
        assert len(seq.frames) == len(gt)
        assert seq.frames[0] == str(d.resolve() / "00000001.jpg") and Path(seq.frames[-1]).is_file()
        assert seq.frames[-1].endswith(f"{len(gt):08d}.jpg")
    assert ds.visible_counts.tolist() == [int(s.visible.sum()) for s in ds.sequences]
    assert ds.lengths.tolist() == [len(s) for s in ds.sequences]


def test_got10k_vot_split_and_val(data, tmp_path):
    vot = build_dataset("GOT10K_vot_train", data / "got10k", cache_dir=tmp_path, progress=False)
    ids = [int(t) for t in (data / "got10k" / "train" / "got10k_vot_train_split.txt").read_text().split()]
    listed = (data / "got10k" / "train" / "list.txt").read_text().split()
    assert [s.name for s in vot.sequences] == [listed[i] for i in ids] and len(vot) == 3
    # the official-settings root (the train folder itself) works too
    same = build_dataset("GOT10K_vot_train", data / "got10k" / "train", cache_dir=tmp_path, progress=False)
    assert [s.name for s in same.sequences] == [s.name for s in vot.sequences]
    val = build_dataset("GOT10K_val", data / "got10k", cache_dir=tmp_path, progress=False)
    assert [s.name for s in val.sequences] == ["GOT-10k_Val_000001", "GOT-10k_Val_000002"]


def test_got10k_split_file_out_of_range(data, tmp_path):
    bad = tmp_path / "split.txt"
    bad.write_text("0\n9000\n")
    with pytest.raises(DatasetError, match="9000"):
        build_dataset("GOT10K_vot_train", data / "got10k", cache_dir=tmp_path, split_file=bad, progress=False)


def test_lasot_visibility_and_frames(data, tmp_path):
    ds = build_dataset("LASOT", data / "lasot", cache_dir=tmp_path, progress=False)
    names = (data / "lasot" / "lasot_train_split.txt").read_text().split()
    assert [s.name for s in ds.sequences] == names
    for seq in ds.sequences:
        d = data / "lasot" / seq.name.split("-")[0] / seq.name
        gt = _lines(d / "groundtruth.txt")
        occ = np.array((d / "full_occlusion.txt").read_text().strip().split(","), dtype=int)
        oov = np.array((d / "out_of_view.txt").read_text().strip().split(","), dtype=int)
        np.testing.assert_array_equal(seq.boxes, gt)
        np.testing.assert_array_equal(seq.visible, (occ == 0) & (oov == 0) & (gt[:, 2] > 0) & (gt[:, 3] > 0))
        assert seq.frames[0].endswith("img/00000001.jpg") and Path(seq.frames[len(gt) - 1]).is_file()
        assert seq.meta["class"] == seq.name.split("-")[0]


def test_trackingnet_human_annotated_frames_only(data, tmp_path):
    ds = build_dataset("TRACKINGNET", data / "trackingnet", cache_dir=tmp_path, progress=False)
    assert len(ds) == 4 and {s.name.split("/")[0] for s in ds.sequences} == {"TRAIN_0", "TRAIN_1"}
    for seq in ds.sequences:
        chunk, video = seq.name.split("/")
        gt = _lines(data / "trackingnet" / chunk / "anno" / f"{video}.txt")
        np.testing.assert_allclose(seq.boxes, gt, atol=1e-4)
        k = np.arange(len(gt))
        expected = (gt[:, 2] > 0) & (gt[:, 3] > 0) & ((k % 30 == 0) | (k == len(gt) - 1))
        np.testing.assert_array_equal(seq.visible, expected)
        assert seq.frames[0].endswith(f"{video}/0.jpg") and Path(seq.frames[len(gt) - 1]).is_file()
    only_first = build_dataset("TRACKINGNET", data / "trackingnet", cache_dir=tmp_path, chunks=[0], progress=False)
    assert {s.name.split("/")[0] for s in only_first.sequences} == {"TRAIN_0"}


def test_coco_one_frame_sequences(data, tmp_path):
    ds = build_dataset("COCO17", data / "coco", cache_dir=tmp_path, progress=False)
    anno = json.loads((data / "coco" / "annotations" / "instances_train2017.json").read_text())
    kept = [a for a in anno["annotations"] if a["iscrowd"] == 0]
    assert not ds.is_video and len(ds) == len(kept) < len(anno["annotations"])
    files = {img["id"]: img["file_name"] for img in anno["images"]}
    for seq, a in zip(ds.sequences, kept):
        assert len(seq) == 1 and seq.name == str(a["id"])
        np.testing.assert_array_equal(seq.boxes[0], a["bbox"])
        assert seq.frames[0].endswith("images/train2017/" + files[a["image_id"]])
        assert read_frame(seq.frames[0]).shape == (120, 160, 3)
    # small objects are kept (the official 50-pixel rule is never a filter)
    assert min(s.boxes[0, 2] for s in ds.sequences) < 50


def test_index_cache_is_reused_and_invalidated(data, tmp_path, monkeypatch):
    root = _copy(data, "got10k", tmp_path)
    cache = tmp_path / "cache"
    first, _, cached = build_index("GOT10K_train", root, cache, progress=False)
    assert not cached and len(list(cache.glob("*.npz"))) == 1

    def boom(*a, **k):
        raise AssertionError("annotations re-parsed although the index is cached")

    monkeypatch.setattr(got10k, "parse_sequence", boom)
    second, _, cached = build_index("GOT10K_train", root, cache, progress=False)
    assert cached
    np.testing.assert_array_equal(first.boxes, second.boxes)
    np.testing.assert_array_equal(first.visible, second.visible)
    assert first.names == second.names
    monkeypatch.undo()
    # a changed list.txt is a different dataset: rebuilt
    names = (root / "train" / "list.txt").read_text().split()
    (root / "train" / "list.txt").write_text("\n".join(names[:2]) + "\n")
    third, _, cached = build_index("GOT10K_train", root, cache, progress=False)
    assert not cached and len(third) == 2
    _, _, cached = build_index("GOT10K_train", root, cache, refresh=True, progress=False)
    assert not cached
    # default cache location: next to the data
    build_dataset("GOT10K_train", root, progress=False)
    assert list((root / "train" / ".grm_jax_index").glob("*.npz"))


def test_structural_errors_name_the_path(data, tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        build_dataset("LASOT", tmp_path / "nowhere", cache_dir=tmp_path)
    with pytest.raises(DatasetError, match="list.txt"):
        build_dataset("GOT10K_train", data / "lasot", cache_dir=tmp_path)
    with pytest.raises(DatasetError, match="TRAIN_"):
        build_dataset("TRACKINGNET", data / "lasot", cache_dir=tmp_path)
    with pytest.raises(DatasetError, match="instances_train2017.json"):
        build_dataset("COCO17", data / "lasot", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown training dataset"):
        build_dataset("VOT2020", data / "lasot", cache_dir=tmp_path)

    root = _copy(data, "got10k", tmp_path)
    name = (root / "train" / "list.txt").read_text().split()[1]
    gt = root / "train" / name / "groundtruth.txt"
    gt.unlink()
    with pytest.raises(DatasetError, match=str(gt)):
        build_dataset("GOT10K_train", root, cache_dir=tmp_path / "c1", progress=False)


def test_malformed_lines_name_file_and_line(data, tmp_path):
    root = _copy(data, "lasot", tmp_path)
    name = (root / "lasot_train_split.txt").read_text().split()[0]
    gt = root / name.split("-")[0] / name / "groundtruth.txt"
    lines = gt.read_text().splitlines()
    lines[4] = "12,13,abc,40"
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match=rf"{gt}:5: not a number"):
        build_dataset("LASOT", root, cache_dir=tmp_path / "c", progress=False)
    lines[4] = "12,13,40"
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match=rf"{gt}:5: expected 4"):
        build_dataset("LASOT", root, cache_dir=tmp_path / "c", progress=False)
    lines.pop(4)
    gt.write_text("\n".join(lines) + "\n")  # now one row fewer than the occlusion flags
    with pytest.raises(AnnotationError, match="full_occlusion.txt"):
        build_dataset("LASOT", root, cache_dir=tmp_path / "c", progress=False)


def test_sequence_without_visible_frame_is_excluded(data, tmp_path, caplog):
    root = _copy(data, "got10k", tmp_path)
    name = (root / "train" / "list.txt").read_text().split()[0]
    absence = root / "train" / name / "absence.label"
    absence.write_text("1\n" * len(absence.read_text().split()))
    with caplog.at_level(logging.WARNING):
        ds = build_dataset("GOT10K_train", root, cache_dir=tmp_path / "c", progress=False)
    assert ds.excluded == [name] and name not in [s.name for s in ds.sequences] and len(ds) == 3
    assert name in caplog.text


def test_read_frame_matches_opencv_and_rejects_bad_files(data, tmp_path):
    ds = build_dataset("GOT10K_train", data / "got10k", cache_dir=tmp_path, progress=False)
    path = ds.sequences[0].frames[3]
    np.testing.assert_array_equal(read_frame(path), cv2.imread(path)[:, :, ::-1])
    with pytest.raises(FrameError, match="missing.jpg"):
        read_frame(tmp_path / "missing.jpg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(Path(path).read_bytes()[:400])
    with pytest.raises(FrameError, match="truncated.jpg"):
        read_frame(truncated)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all" * 10)
    with pytest.raises(FrameError, match="garbage.png"):
        read_frame(garbage)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(FrameError, match="empty"):
        read_frame(empty)


def test_parse_annotation_delimiters_and_nan(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("1\t2\t3\t4\nNaN\tNaN\tNaN\tNaN\n\n")
    out = parse_annotation(p, "\t")
    assert out.shape == (2, 4) and np.isnan(out[1]).all()
    p.write_text("1,2,3,4\n5 6 7 8\n")  # OTB mixes delimiters
    np.testing.assert_array_equal(parse_annotation(p, None), [[1, 2, 3, 4], [5, 6, 7, 8]])
    with pytest.raises(AnnotationError, match="a.txt:2"):
        parse_annotation(p, ",")
    with pytest.raises(AnnotationError, match="cannot read"):
        parse_annotation(tmp_path / "none.txt")


def test_shipped_lasot_split_is_the_official_rule():
    names = (Path(readers.__file__).parents[1] / "splits" / "lasot_train_split.txt").read_text().split()
    test = set(tables.lasot_test_names())
    assert len(names) == 1120 == len(set(names)) and not test & set(names)
    classes = {n.rsplit("-", 1)[0] for n in names}
    assert len(classes) == 70 and classes == {n.rsplit("-", 1)[0] for n in test}


def test_shipped_got10k_vot_split():
    ids = [int(t) for t in (Path(got10k.__file__).parents[1] / "splits" / "got10k_vot_train_split.txt").read_text().split()]
    assert len(ids) == 7086 == len(set(ids)) and min(ids) >= 0 and max(ids) < 9335


def test_nan_and_zero_size_boxes_are_invisible(data, tmp_path):
    root = _copy(data, "got10k", tmp_path)
    name = (root / "train" / "list.txt").read_text().split()[0]
    gt = root / "train" / name / "groundtruth.txt"
    lines = gt.read_text().splitlines()
    lines[1], lines[2], lines[3] = "nan,nan,nan,nan", "10.0,12.0,0.0,30.0", "10.0,12.0,30.0,-1.0"
    gt.write_text("\n".join(lines) + "\n")
    absence = np.loadtxt(root / "train" / name / "absence.label")
    cover = np.loadtxt(root / "train" / name / "cover.label")
    ds = build_dataset("GOT10K_train", root, cache_dir=tmp_path / "c", progress=False)
    seq = next(s for s in ds.sequences if s.name == name)
    assert not seq.visible[1:4].any() and np.isnan(seq.boxes[1]).all()
    np.testing.assert_array_equal(seq.visible[4:], ((absence == 0) & (cover > 0))[4:])

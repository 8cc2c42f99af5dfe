"""Evaluation readers on their synthetic twins, the official tables, and bad input."""
import shutil
from pathlib import Path

import numpy as np
import pytest

from data_pipeline.synthetic import write_dataset
from grm_jax.evaluation import tables
from grm_jax.evaluation.datasets import EvalDatasetError, dataset_names, load_eval_dataset
from grm_jax.sequence import AnnotationError, FrameError

KW = dict(num_frames=(20, 30), image_size=(96, 72), seed=5)
UAV = ["uav_bike1", "uav_bird1_2", "uav_car1_3"]
OTB = ["otb_Tiger1", "otb_Board", "otb_BlurCar3", "otb_Jogging_2", "otb_Basketball"]


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval_twins")
    write_dataset("lasot_test", root / "lasot", num_sequences=3, **KW)
    write_dataset("got10k_val", root / "got10k", num_sequences=2, **KW)
    write_dataset("got10k_test", root / "got10k", num_sequences=2, **KW)
    write_dataset("trackingnet_test", root / "trackingnet", num_sequences=2, **KW)
    write_dataset("nfs", root / "nfs", num_sequences=2, **KW)
    write_dataset("uav", root / "uav", names=UAV, **KW)
    write_dataset("avist", root / "avist", num_sequences=2, **KW)
    write_dataset("otb", root / "otb", names=OTB, **KW)
    write_dataset("tnl2k", root / "tnl2k", num_sequences=3, **KW)
    return root


def _gt(path: Path, delimiter=",") -> np.ndarray:
    return np.loadtxt(path, delimiter=delimiter, ndmin=2)


def _frames_exist(seq) -> None:
    assert len(seq.frames) == len(seq.boxes) == len(seq.visible)
    assert all(Path(f).is_file() for f in seq.frames)


def test_official_tables():
    assert len(tables.lasot_test_names()) == 280 and len(set(tables.lasot_test_names())) == 280
    assert len(tables.lasot_extension_names()) == 150
    assert len(tables.avist_names()) == 120
    nfs, uav, otb = tables.table("nfs"), tables.table("uav"), tables.table("otb")
    assert len(nfs) == 100 and len(uav) == 123 and len(otb) == 100
    assert sum(e["start"] > 1 for e in uav) == 32
    uav_by = {e["name"]: e for e in uav}
    assert uav_by["uav_bird1_2"]["path"].endswith("/bird1") and uav_by["uav_bird1_2"]["start"] == 775
    assert uav_by["uav_car1_s"]["path"].endswith("/car1_s")
    assert len([n for n in uav_by if n.startswith("uav_car6_")]) == 5
    o = {e["name"]: e for e in otb}
    assert (o["otb_BlurCar1"]["start"], o["otb_BlurCar1"]["end"]) == (247, 988)
    assert (o["otb_David"]["start"], o["otb_David"]["end"]) == (300, 770)
    assert o["otb_Tiger1"]["init_omit"] == 5 and o["otb_Board"]["nz"] == 5
    assert o["otb_Human4_2"]["anno"] == "Human4/groundtruth_rect.2.txt"
    assert {n for n in o if n.startswith(("otb_Jogging", "otb_Skating2"))} == {
        "otb_Jogging_1", "otb_Jogging_2", "otb_Skating2_1", "otb_Skating2_2"}
    assert all(e["anno"] == f"anno/{e['name']}.txt" and e["nz"] == 5 for e in nfs)


def test_lasot_test(twins):
    seqs = load_eval_dataset("lasot", twins / "lasot", only_existing=True)
    assert len(seqs) == 3 and all(s.name in tables.lasot_test_names() for s in seqs)
    for s in seqs:
        d = twins / "lasot" / s.name.split("-")[0] / s.name
        gt = _gt(d / "groundtruth.txt")
        occ = np.array((d / "full_occlusion.txt").read_text().strip().split(","), dtype=int)
        oov = np.array((d / "out_of_view.txt").read_text().strip().split(","), dtype=int)
        np.testing.assert_array_equal(s.boxes, gt)
        np.testing.assert_array_equal(s.visible, (occ == 0) & (oov == 0))
        assert s.dataset == "lasot" and s.frames[0].endswith("img/00000001.jpg")
        _frames_exist(s)
    picked = load_eval_dataset("lasot", twins / "lasot", sequences=[seqs[1].name])
    assert [s.name for s in picked] == [seqs[1].name]


def test_fixed_list_needs_every_sequence_unless_asked(twins):
    with pytest.raises(AnnotationError, match="groundtruth.txt.*only_existing"):
        load_eval_dataset("lasot", twins / "lasot")
    with pytest.raises(KeyError, match="no sequence 'airplane-99'"):
        load_eval_dataset("lasot", twins / "lasot", sequences=["airplane-99"])
    with pytest.raises(EvalDatasetError, match="no AVisT sequence"):
        load_eval_dataset("avist", twins / "lasot", only_existing=True)
    with pytest.raises(ValueError, match="unknown evaluation dataset"):
        load_eval_dataset("vot2020", twins)
    with pytest.raises(EvalDatasetError, match="not a folder"):
        load_eval_dataset("otb", twins / "nowhere")


def test_got10k_val_and_test(twins):
    val = load_eval_dataset("got10k_val", twins / "got10k")
    assert [s.name for s in val] == ["GOT-10k_Val_000001", "GOT-10k_Val_000002"]
    for s in val:
        np.testing.assert_allclose(s.boxes, _gt(twins / "got10k" / "val" / s.name / "groundtruth.txt"))
        _frames_exist(s)
    test = load_eval_dataset("got10k_test", twins / "got10k" / "test")
    for s in test:
        first = _gt(twins / "got10k" / "test" / s.name / "groundtruth.txt")
        assert first.shape == (1, 4)
        np.testing.assert_allclose(s.boxes[0], first[0])
        assert np.isnan(s.boxes[1:]).all() and s.visible[0] and not s.visible[1:].any()
        assert s.frames == sorted(s.frames, key=lambda f: int(Path(f).stem))
        _frames_exist(s)


def test_trackingnet_test(twins):
    seqs = load_eval_dataset("trackingnet", twins / "trackingnet")
    assert len(seqs) == 2
    for s in seqs:
        assert Path(s.frames[0]).name == "0.jpg" and Path(s.frames[10]).name == "10.jpg"  # integer order
        assert np.isfinite(s.boxes[0]).all() and np.isnan(s.boxes[1:]).all()
        _frames_exist(s)


def test_nfs_tab_delimited(twins):
    seqs = load_eval_dataset("nfs", twins / "nfs", only_existing=True)
    assert len(seqs) == 2
    for s in seqs:
        gt = _gt(twins / "nfs" / "anno" / f"{s.name}.txt", "\t")
        np.testing.assert_array_equal(s.boxes, gt)
        assert s.frames[0].endswith(f"sequences/{s.name[4:]}/00001.jpg")
        _frames_exist(s)


def test_uav_sub_sequences_and_nan_rows(twins):
    seqs = {s.name: s for s in load_eval_dataset("uav", twins / "uav", sequences=["bike1", "bird1_2", "uav_car1_3"])}
    assert sorted(seqs) == sorted(UAV)
    assert seqs["uav_bird1_2"].frames[0].endswith("data_seq/UAV123/bird1/000775.jpg")
    assert seqs["uav_car1_3"].frames[0].endswith("data_seq/UAV123/car1/001627.jpg")
    for s in seqs.values():
        text = (twins / "uav" / "anno" / "UAV123" / f"{s.name[4:]}.txt").read_text()
        gt = np.array([[float(v) for v in line.split(",")] for line in text.split()])
        np.testing.assert_array_equal(np.isnan(s.boxes), np.isnan(gt))
        np.testing.assert_array_equal(s.visible, ~np.isnan(gt).any(axis=1) & (gt[:, 2] > 0) & (gt[:, 3] > 0))
        _frames_exist(s)


def test_otb_special_cases(twins):
    seqs = {s.name: s for s in load_eval_dataset("otb", twins / "otb", only_existing=True)}
    assert set(OTB) <= set(seqs)
    tiger = seqs["otb_Tiger1"]
    gt = np.array([[float(v) for v in line.replace("\t", ",").split(",")]
                   for line in (twins / "otb" / "Tiger1" / "groundtruth_rect.txt").read_text().split("\n") if line])
    np.testing.assert_array_equal(tiger.boxes, gt[5:])  # initOmit drops 5 frames and 5 rows
    assert tiger.frames[0].endswith("Tiger1/img/0006.jpg")
    assert seqs["otb_Board"].frames[0].endswith("Board/img/00001.jpg")
    assert seqs["otb_BlurCar3"].frames[0].endswith("BlurCar3/img/0003.jpg")
    assert (twins / "otb" / "Jogging" / "groundtruth_rect.2.txt").is_file()
    for s in seqs.values():
        _frames_exist(s)


def test_avist_space_delimited_with_visibility(twins):
    seqs = load_eval_dataset("avist", twins / "avist", only_existing=True)
    assert len(seqs) == 2
    for s in seqs:
        gt = _gt(twins / "avist" / "anno" / f"{s.name}.txt", " ")
        occ = np.loadtxt(twins / "avist" / "full_occlusion" / f"{s.name}_full_occlusion.txt", delimiter=",")
        oov = np.loadtxt(twins / "avist" / "out_of_view" / f"{s.name}_out_of_view.txt", delimiter=",")
        np.testing.assert_array_equal(s.boxes, gt)
        np.testing.assert_array_equal(s.visible, (occ == 0) & (oov == 0))
        assert s.frames[0].endswith(f"sequences/{s.name}/img_00001.jpg")
        _frames_exist(s)


def test_tnl2k_every_folder(twins):
    seqs = load_eval_dataset("tnl2k", twins / "tnl2k")
    assert len(seqs) == 3 and any(s.frames[0].endswith(".png") for s in seqs)
    for s in seqs:
        assert s.meta["language"] and s.frames == sorted(s.frames)
        np.testing.assert_array_equal(s.boxes, _gt(twins / "tnl2k" / s.name / "groundtruth.txt"))
        _frames_exist(s)


def test_missing_frame_and_malformed_annotation_name_the_file(twins, tmp_path):
    root = tmp_path / "otb"
    shutil.copytree(twins / "otb", root)
    missing = root / "Basketball" / "img" / "0007.jpg"
    missing.unlink()
    with pytest.raises(FrameError, match=str(missing)):
        load_eval_dataset("otb", root, sequences=["Basketball"])
    anno = root / "Board" / "groundtruth_rect.txt"
    lines = anno.read_text().splitlines()
    lines[2] = "1,2,3"
    anno.write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match=rf"{anno}:3"):
        load_eval_dataset("otb", root, sequences=["Board"])
    got = tmp_path / "got10k"
    shutil.copytree(twins / "got10k", got)
    frames = sorted((got / "val" / "GOT-10k_Val_000001").glob("*.jpg"))
    frames[-1].unlink()
    with pytest.raises(AnnotationError, match="rows but"):
        load_eval_dataset("got10k_val", got)


def test_dataset_names():
    assert len(dataset_names("lasot")) == 280 and len(dataset_names("UAV123")) == 123
    assert dataset_names("tnl2k") is None

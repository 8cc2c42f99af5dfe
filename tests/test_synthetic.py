"""Synthetic dataset generator: determinism, exact labels, trackable motion, every on-disk format."""
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_pipeline.synthetic import _rng, make_sequence, write_all, write_dataset


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_writes_identical_files(tmp_path):
    for name in ("a", "b"):
        write_dataset("lasot", tmp_path / name, num_sequences=2, num_frames=(18, 24), seed=7)
        write_dataset("coco", tmp_path / name / "coco", num_sequences=2, seed=7)
    write_dataset("lasot", tmp_path / "c", num_sequences=2, num_frames=(18, 24), seed=8)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert len(a) > 40 and a == b
    assert a != c


def test_labels_match_rendered_pixels():
    checked = 0
    for i in range(6):
        seq = make_sequence(_rng(0, "labels", i), 40, 160, 120, occlusion=i % 2 == 0, out_of_view=i >= 3)
        tex = cv2.resize(seq.texture, (32, 32))
        border = tex[0, 0]
        for t in range(len(seq)):
            x, y, w, h = seq.boxes[t]
            if seq.out_of_view[t]:
                assert w == 0 and h == 0
                continue
            assert 0 <= x and 0 <= y and x + w <= 160 and y + h <= 120 and w > 0 and h > 0
            frame = seq.render(t)
            x0, y0, x1, y1 = seq.rects[t]
            if seq.visible_fraction[t] == 1.0 and x0 >= 0 and y0 >= 0 and x1 <= 160 and y1 <= 120:
                # the object's top-left pixel is its border colour, so the box is where the object is drawn
                np.testing.assert_array_equal(frame[int(y), int(x)], border)
                checked += 1
            if seq.full_occlusion[t]:
                ox0, oy0, ox1, oy1 = seq.occluder_rects[t]
                assert ox0 <= x and oy0 <= y and ox1 >= x + w and oy1 >= y + h
    assert checked > 100


def test_events_flags_and_first_frame():
    occ = make_sequence(_rng(1, "ev", 0), 60, 160, 120, occlusion=True, out_of_view=False)
    oov = make_sequence(_rng(1, "ev", 1), 60, 160, 120, occlusion=False, out_of_view=True)
    assert occ.full_occlusion.sum() >= 1 and not occ.out_of_view.any()
    assert (occ.cover[occ.full_occlusion] == 0).all() and (occ.cover[occ.visible] >= 1).all()
    assert oov.out_of_view.sum() >= 1 and not oov.full_occlusion.any()
    assert (oov.boxes[oov.out_of_view] == 0).all()
    for s in (occ, oov):
        assert s.visible[0] and s.cover[0] == 8  # trackers start from a clean first frame


def test_motion_is_smooth_and_scale_moderate():
    for i in range(8):
        s = make_sequence(_rng(2, "motion", i), 60, 320, 240, occlusion=False, out_of_view=False)
        centre = s.boxes[:, :2] + s.boxes[:, 2:] / 2
        step = np.abs(np.diff(centre, axis=0))
        assert step[:, 0].max() < 0.06 * 320 and step[:, 1].max() < 0.06 * 240
        area = s.boxes[:, 2] * s.boxes[:, 3]
        assert area.max() / area.min() < 3.0
        assert (area / (320 * 240)).min() > 0.005


def test_write_all_tiny_layouts(tmp_path):
    summary = write_all(tmp_path, "tiny", seed=0, num_sequences=2, eval_sequences=2, num_frames=20, eval_frames=20)
    got = tmp_path / "got10k" / "train" / summary["got10k"][0]["sequences"][0]
    n = len((got / "groundtruth.txt").read_text().splitlines())
    assert n == 20 == len(list(got.glob("*.jpg")))
    assert len((got / "absence.label").read_text().split()) == n == len((got / "cover.label").read_text().split())
    assert (got / "meta_info.ini").read_text().startswith("[METAINFO]")
    test_seq = tmp_path / "got10k" / "test" / summary["got10k"][2]["sequences"][0]
    assert len((test_seq / "groundtruth.txt").read_text().splitlines()) == 1
    lasot = tmp_path / "lasot"
    assert (lasot / "lasot_train_split.txt").is_file()
    name = summary["lasot"][1]["sequences"][0]
    flags = (lasot / name.split("-")[0] / name / "full_occlusion.txt").read_text().strip().split(",")
    assert len(flags) == 20
    tn = tmp_path / "trackingnet"
    assert (tn / "TRAIN_0" / "frames").is_dir() and (tn / "TRAIN_1" / "anno").is_dir() and (tn / "TEST").is_dir()
    video = summary["trackingnet"][0]["sequences"][0]
    assert (tn / video.split("/")[0] / "frames" / video.split("/")[1] / "0.jpg").is_file()
    assert (tmp_path / "coco" / "annotations" / "instances_train2017.json").is_file()
    assert (tmp_path / "nfs" / "anno").is_dir() and "\t" in next((tmp_path / "nfs" / "anno").iterdir()).read_text()
    assert (tmp_path / "uav" / "data_seq" / "UAV123" / "bird1" / "000775.jpg").is_file()
    assert (tmp_path / "otb" / "Tiger1" / "img" / "0001.jpg").is_file()
    assert (tmp_path / "avist" / "full_occlusion").is_dir()
    assert any((tmp_path / "tnl2k").rglob("*.png")) and any((tmp_path / "tnl2k").rglob("language.txt"))
    img = cv2.imread(str(got / "00000001.jpg"))
    assert img.shape == (120, 160, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown synthetic format"):
        write_dataset("vot", "/nonexistent-never-written")
    with pytest.raises(ValueError, match="unknown size preset"):
        write_all("/nonexistent-never-written", size="huge")

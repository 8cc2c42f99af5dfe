"""Prepared (TFDS, array_record) datasets on the synthetic twins: equal to the folder readers, identical
training batches and evaluation results, bad frames / malformed annotations / killed builds."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data_pipeline import synthetic
from data_pipeline.pipeline import make_train_iterator
from data_pipeline.prepared import builder_dir, load_eval_dataset, load_training_dataset, read_frame
from data_pipeline.prepared.builders import BUILDERS
from data_pipeline.prepared_store import SplitTable, data_source, is_frame_ref
from data_pipeline.prepared.verify import verify
from data_pipeline.readers import DatasetError, build_dataset
from grm_jax.config import ConfigError, load_config
from grm_jax.evaluation.datasets import load_eval_dataset as load_folder_eval
from grm_jax.sequence import AnnotationError, FrameError
from grm_jax.sequence import read_frame as read_file_frame

REPO = Path(__file__).resolve().parents[1]
KW = dict(num_frames=(22, 34), image_size=(160, 120), seed=3)
# training name -> (prepared dataset, folder twin)
TRAINING = {"GOT10K_train": ("got10k", "got10k"), "GOT10K_vot_train": ("got10k", "got10k"),
            "GOT10K_val": ("got10k", "got10k"), "LASOT": ("lasot", "lasot"),
            "TRACKINGNET": ("trackingnet", "trackingnet"), "COCO17": ("coco2017", "coco")}


def _prepare(dataset, manual_dir, data_dir, **kw):
    import tensorflow_datasets as tfds

    builder = BUILDERS[dataset](data_dir=str(data_dir), progress=False, **kw)
    builder.download_and_prepare(download_dir=str(Path(data_dir) / "_downloads"),
                                 download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    synthetic.write_dataset("got10k", root / "got10k", num_sequences=3, split="train", **KW)
    synthetic.write_dataset("got10k", root / "got10k", num_sequences=2, split="val", **KW)
    synthetic.write_dataset("got10k", root / "got10k", num_sequences=2, split="test", **KW)
    synthetic.write_dataset("lasot", root / "lasot", num_sequences=3, split="train", **KW)
    synthetic.write_dataset("lasot", root / "lasot", num_sequences=2, split="test", **KW)
    # TrackingNet: only every 30th frame is visible; the sampler needs > 4 visible frames
    synthetic.write_dataset("trackingnet", root / "trackingnet", num_sequences=3, split="train", num_chunks=2,
                            **{**KW, "num_frames": (125, 140), "image_size": (96, 72)})
    synthetic.write_dataset("trackingnet", root / "trackingnet", num_sequences=2, split="test", **KW)
    synthetic.write_dataset("coco", root / "coco", num_sequences=5, image_size=(160, 120), seed=3)
    return root


@pytest.fixture(scope="module")
def prepared(twins, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    for dataset, folder in (("got10k", "got10k"), ("lasot", "lasot"), ("trackingnet", "trackingnet"),
                            ("coco2017", "coco")):
        _prepare(dataset, twins / folder, data_dir)
    return data_dir


def _folder(name, twins, tmp_path):
    return build_dataset(name, twins / TRAINING[name][1], tmp_path / "index", progress=False)


# ------------------------------------------------------------------------------------ equal to the folders
@pytest.mark.parametrize("name", sorted(TRAINING))
def test_training_dataset_equals_folder_reader(name, twins, prepared, tmp_path):
    folder = _folder(name, twins, tmp_path)
    ours = load_training_dataset(name, prepared)
    assert (ours.name, ours.is_video, ours.excluded) == (folder.name, folder.is_video, folder.excluded)
    np.testing.assert_array_equal(ours.lengths, folder.lengths)
    np.testing.assert_array_equal(ours.visible_counts, folder.visible_counts)
    assert len(ours) == len(folder) > 0
    for p, f in zip(ours.sequences, folder.sequences):
        assert (p.name, p.dataset, p.meta, len(p.frames)) == (f.name, f.dataset, f.meta, len(f.frames))
        np.testing.assert_array_equal(p.boxes, f.boxes)
        assert p.boxes.dtype == f.boxes.dtype == np.float64
        np.testing.assert_array_equal(p.visible, f.visible)
        if f.cover is None:
            assert p.cover is None
        else:
            np.testing.assert_array_equal(p.cover, f.cover)
        assert all(is_frame_ref(x) for x in p.frames[:2])
        for k in (0, len(f.frames) - 1):   # the stored bytes decode to the file's pixels
            np.testing.assert_array_equal(read_frame(p.frames[k]), read_file_frame(f.frames[k]))


def test_records_hold_the_source_bytes_and_annotations(twins, prepared):
    bdir = builder_dir("lasot", prepared)
    table = SplitTable.load(bdir, "train")
    source = data_source(bdir, "train")
    assert len(source) == int(table.offsets[-1]) == len(table.records)
    for i, name in enumerate(table.names):
        seq_dir = twins / "lasot" / name.rsplit("-", 1)[0] / name
        gt = np.loadtxt(seq_dir / "groundtruth.txt", delimiter=",", ndmin=2)
        occlusion = np.loadtxt(seq_dir / "full_occlusion.txt", delimiter=",")
        for k in (0, 7, len(gt) - 1):
            record = source[int(table.offsets[i]) + k]
            assert record["sequence"].decode() == name and int(record["frame"]) == k
            assert bytes(record["image"]) == (seq_dir / "img" / f"{k + 1:08d}.jpg").read_bytes()
            np.testing.assert_array_equal(record["box"], gt[k])
            assert int(record["full_occlusion"]) == occlusion[k]
    coco = data_source(builder_dir("coco2017", prepared), "train")
    record = coco[0]
    assert record["file_name"].decode().startswith("images/train2017/")   # relative to the download
    assert bytes(record["image"]) == (twins / "coco" / record["file_name"].decode()).read_bytes()
    assert len(record["objects"]["id"]) >= 1 and np.asarray(record["objects"]["box"]).shape[1:] == (4,)


@pytest.mark.parametrize("bench,folder,split", [("got10k_val", "got10k", "val"), ("got10k_test", "got10k", "test"),
                                                ("lasot", "lasot", "test"), ("trackingnet", "trackingnet", "test")])
def test_eval_dataset_equals_folder_reader(bench, folder, split, twins, prepared):
    ours = load_eval_dataset(bench, prepared, only_existing=True)
    theirs = load_folder_eval(bench, twins / folder, only_existing=True)
    assert [s.name for s in ours] == [s.name for s in theirs] and len(ours) == 2
    for p, f in zip(ours, theirs):
        assert (p.dataset, p.meta, len(p.frames)) == (f.dataset, f.meta, len(f.frames))
        np.testing.assert_array_equal(p.boxes, f.boxes)     # NaN rows of the test splits included
        np.testing.assert_array_equal(p.visible, f.visible)
        np.testing.assert_array_equal(read_frame(p.frames[-1]), read_file_frame(f.frames[-1]))
    if bench == "lasot":   # the fixed 280-name list: the prepared twin holds two of them
        with pytest.raises(DatasetError, match="only_existing"):
            load_eval_dataset(bench, prepared)


def test_verify_reports_agreement_and_differences(twins, prepared, tmp_path):
    for dataset, folder in (("got10k", "got10k"), ("lasot", "lasot"), ("trackingnet", "trackingnet"),
                            ("coco2017", "coco")):
        assert verify(dataset, twins / folder, prepared, every_record=True, progress=False) == []
    # the folder changed after preparing: a box and a frame's bytes
    changed = tmp_path / "lasot"
    shutil.copytree(twins / "lasot", changed)
    name = (changed / "lasot_train_split.txt").read_text().split()[0]
    gt = changed / name.rsplit("-", 1)[0] / name / "groundtruth.txt"
    lines = gt.read_text().splitlines()
    lines[3] = "1,2,3,4"
    gt.write_text("\n".join(lines) + "\n")
    frame = changed / name.rsplit("-", 1)[0] / name / "img" / "00000005.jpg"
    frame.write_bytes(frame.read_bytes() + b"\0")
    problems = verify("lasot", changed, prepared, every_record=True, progress=False)
    assert any(f"{name}: boxes differ" in p for p in problems)
    assert any("00000005.jpg" in p and "bytes differ" in p for p in problems)


# ---------------------------------------------------------------------------------------- training batches
def _cfg(names):
    cfg = load_config("tiny_test")
    cfg.DATA.TRAIN.DATASETS_NAME = list(names)
    cfg.DATA.TRAIN.DATASETS_RATIO = [1] * len(names)
    return cfg


def _batches(cfg, datasets, start, n, **kw):
    kw.setdefault("process_index", 0)
    kw.setdefault("process_count", 1)
    with make_train_iterator(cfg, datasets, seed=7, start_step=start, host_batch_size=kw.pop("host_batch", 4),
                             num_parallel=2, **kw) as it:
        return [next(it) for _ in range(n)], it.stats


def _assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.slow   # end to end over all four datasets and both sources (make test runs it)
def test_batches_from_prepared_equal_folder_batches(twins, prepared, tmp_path):
    names = ["LASOT", "GOT10K_vot_train", "COCO17", "TRACKINGNET"]
    cfg = _cfg(names)
    folders = [_folder(n, twins, tmp_path) for n in names]
    ours = [load_training_dataset(n, prepared) for n in names]
    want, _ = _batches(cfg, folders, 0, 3)
    got, _ = _batches(cfg, ours, 0, 3)
    _assert_batches_equal(got, want)
    drawn = {int(i) for b in want for i in b["sample_index"]}
    assert drawn == set(range(12))
    # resume at step 2, two hosts, and the full-frame decode path
    got, _ = _batches(cfg, ours, 2, 1, process_index=1, process_count=2, host_batch=2)
    want_host, _ = _batches(cfg, folders, 2, 1, process_index=1, process_count=2, host_batch=2)
    _assert_batches_equal(got, want_host)
    got, _ = _batches(cfg, ours, 1, 1, window_decode=False)
    want, _ = _batches(cfg, folders, 1, 1, window_decode=False)
    _assert_batches_equal(got, want)


def test_bad_frames_are_stored_and_skipped_as_with_folders(twins, tmp_path):
    root = tmp_path / "got10k"
    shutil.copytree(twins / "got10k", root, ignore=shutil.ignore_patterns(".grm_jax_index"))
    frames = sorted((root / "train").rglob("*.jpg"))
    for i, f in enumerate(frames[::4]):
        if i % 2:
            f.unlink()
        else:
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    data_dir = tmp_path / "tfds"
    _prepare("got10k", root, data_dir)
    table = SplitTable.load(builder_dir("got10k", data_dir), "train")
    bad = table.attrs["bad_frames"]
    assert len(bad) == len(frames[::4]), bad
    assert {b["file"] for b in bad} == {str(f.resolve()) for f in frames[::4]}
    assert all(("truncated" in b["problem"]) != ("cannot read" in b["problem"]) for b in bad)
    cfg = _cfg(["GOT10K_train"])
    folder = build_dataset("GOT10K_train", root, tmp_path / "index", progress=False)
    want, _ = _batches(cfg, [folder], 0, 4)
    got, stats = _batches(cfg, [load_training_dataset("GOT10K_train", data_dir)], 0, 4)
    _assert_batches_equal(got, want)   # including the per-sample counts of skipped bad frames
    skipped = sum(int(b["bad_frames"].sum()) for b in got)
    assert skipped > 0 and stats["bad_frames"] >= skipped
    # strict: one error naming the first bad file, and no dataset
    strict_dir = tmp_path / "strict"
    with pytest.raises(FrameError, match=frames[0].name):
        _prepare("got10k", root, strict_dir, strict_frames=True)
    with pytest.raises(DatasetError, match="no prepared grm_got10k"):
        load_training_dataset("GOT10K_train", strict_dir)


def test_malformed_annotation_is_one_error_and_leaves_no_dataset(twins, tmp_path, capsys):
    root = tmp_path / "lasot"
    shutil.copytree(twins / "lasot", root, ignore=shutil.ignore_patterns(".grm_jax_index"))
    name = (root / "lasot_train_split.txt").read_text().split()[1]
    gt = root / name.rsplit("-", 1)[0] / name / "groundtruth.txt"
    lines = gt.read_text().splitlines()
    lines[2] = "12,13,abc,40"
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match=rf"{gt}:3: not a number"):
        _prepare("lasot", root, tmp_path / "tfds")
    assert not BUILDERS["lasot"](data_dir=str(tmp_path / "tfds")).is_prepared()
    prepare = _script("prepare_tfds")
    assert prepare.main(["lasot", "--manual-dir", str(root), "--data-dir", str(tmp_path / "tfds"),
                         "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{gt}:3: not a number" in err and err.count("error:") == 1
    assert not list((tmp_path / "tfds").rglob("*.array_record*"))


def test_builders_are_registered_tfds_datasets(twins, tmp_path):
    import tensorflow_datasets as tfds

    builder = tfds.builder("grm_coco2017", data_dir=str(tmp_path))   # as `tfds build --imports ...` does
    assert type(builder) is BUILDERS["coco2017"] and "cocodataset.org" in builder.MANUAL_DOWNLOAD_INSTRUCTIONS
    builder.download_and_prepare(download_dir=str(tmp_path / "_downloads"),
                                 download_config=tfds.download.DownloadConfig(manual_dir=str(twins / "coco")))
    assert builder.info.file_format.value == "array_record" and builder.info.disable_shuffling
    assert load_training_dataset("COCO17", tmp_path).num_frames == len(_folder("COCO17", twins, tmp_path))


def test_train_script_reads_the_configured_source(twins, prepared, tmp_path):
    train = _script("train")
    cfg = _cfg(["LASOT", "GOT10K_vot_train"])
    cfg.DATA.ROOTS.LASOT, cfg.DATA.ROOTS.GOT10K = str(twins / "lasot"), str(twins / "got10k")
    folders = train.build_datasets(cfg)
    cfg.DATA.SOURCE = "tfds"
    cfg.DATA.TFDS_DIRS.LASOT = str(prepared)
    with pytest.raises(ConfigError, match="DATA.TFDS_DIRS.GOT10K is empty"):
        train.build_datasets(cfg)
    cfg.DATA.TFDS_DIRS.GOT10K = str(tmp_path)   # nothing prepared there
    with pytest.raises(ConfigError, match="DATA.TFDS_DIRS.GOT10K=.*no prepared grm_got10k"):
        train.build_datasets(cfg)
    cfg.DATA.TFDS_DIRS.GOT10K = str(prepared)
    ours = train.build_datasets(cfg)
    assert [d.name for d in ours] == [d.name for d in folders]
    assert all(is_frame_ref(d.sequences[0].frames[0]) for d in ours)
    assert [[s.name for s in d.sequences] for d in ours] == [[s.name for s in d.sequences] for d in folders]


def test_config_source_key():
    cfg = load_config("tiny_test", ["DATA.SOURCE=tfds", "DATA.TFDS_DIRS.GOT10K=gs://bucket/tfds"])
    assert cfg.DATA.SOURCE == "tfds" and cfg.DATA.TFDS_DIRS.GOT10K == "gs://bucket/tfds"
    with pytest.raises(ConfigError, match="DATA.SOURCE"):
        load_config("tiny_test", ["DATA.SOURCE=bucket"])


def test_missing_prepared_dataset_names_the_folder(prepared, twins, tmp_path):
    with pytest.raises(DatasetError, match="prepare_tfds.py lasot"):
        load_training_dataset("LASOT", tmp_path)
    with pytest.raises(DatasetError, match="holds the prepared dataset 'grm_got10k', not 'grm_lasot'"):
        load_training_dataset("LASOT", builder_dir("got10k", prepared))
    # a split the download did not have (here: its table removed after the build)
    _prepare("trackingnet", twins / "trackingnet", tmp_path / "tn")
    (tmp_path / "tn" / "grm_trackingnet" / "1.0.0" / "sequences.train.npz").unlink()
    with pytest.raises(DatasetError, match="has no split 'train' \\(it has: test\\)"):
        load_training_dataset("TRACKINGNET", tmp_path / "tn")
    with pytest.raises(ValueError, match="no prepared dataset for benchmark"):
        load_eval_dataset("otb", tmp_path)


def _script(name):
    import importlib

    return importlib.import_module(f"grm_jax.cli.{name}")


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_killed_prepare_leaves_nothing_that_loads_then_reruns(tmp_path):
    root = tmp_path / "got10k"
    synthetic.write_dataset("got10k", root, num_sequences=40, split="train", num_frames=60, image_size=(320, 240),
                            seed=1)
    data_dir = tmp_path / "tfds"
    cmd = [sys.executable, "-m", "grm_jax.cli.prepare_tfds", "got10k", "--manual-dir", str(root),
           "--data-dir", str(data_dir), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    deadline = time.time() + 120
    # kill it while it writes (records spill into the unfinished folder)
    while time.time() < deadline and proc.poll() is None:
        if any(p.stat().st_size > 0 for p in data_dir.rglob("incomplete.*/*") if p.is_file()):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the build finished before it could be killed: make the twin larger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(data_dir.glob("grm_got10k/incomplete.*"))
    assert not BUILDERS["got10k"](data_dir=str(data_dir)).is_prepared()
    with pytest.raises(DatasetError, match="unfinished build"):
        load_training_dataset("GOT10K_train", data_dir)
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "removing the unfinished build" in done.stdout and "verified" in done.stdout
    assert not list(data_dir.glob("grm_got10k/incomplete.*"))
    assert len(load_training_dataset("GOT10K_train", data_dir)) == 40


@pytest.mark.slow
def test_track_script_same_raw_results_from_prepared(twins, prepared, tmp_path):
    import jax
    import jax.numpy as jnp

    from grm_jax.checkpoints.converted import save_variables
    from grm_jax.specs import build_model

    cfg = load_config("tiny_test")
    model = build_model(cfg)
    z = jnp.zeros((1, 64, 64, 3))
    x = jnp.zeros((1, 128, 128, 3))
    variables = jax.tree_util.tree_map(np.asarray, dict(model.init(jax.random.PRNGKey(5), z, x, train=False)))
    ckpt = save_variables(tmp_path / "ckpt", variables, {"backbone.cls_token": np.zeros((1, 1, 64), np.float32)})
    track = _script("track")
    common = ["--config", "tiny_test", "--checkpoint", str(ckpt), "--dataset", "lasot", "--only-existing",
              "--no-progress"]
    runs = {"folders": ["--dataset-root", str(twins / "lasot"), "--dataset-source", "folders"],
            # the config's source and TFDS data dir stand in for --dataset-source / --dataset-root
            "tfds": ["--set", "DATA.SOURCE=tfds", "--set", f"DATA.TFDS_DIRS.LASOT={prepared}"]}
    results = {}
    for source, extra in runs.items():
        work = tmp_path / source
        assert track.main(common + extra + ["--workdir", str(work)]) == 0
        results[source] = {p.name: p.read_text() for p in sorted(work.glob("*.txt"))}
    assert len(results["tfds"]) == 2 and results["tfds"] == results["folders"]


# ------------------------------------------------------------------------------------ cloud paths (mocked)
@pytest.fixture
def fake_bucket(twins):
    """`gs://bucket/...` served from the twins folder through etils.epath (a local path would not resolve)."""
    from etils.epath import testing

    prefix = "gs://bucket/"

    def local(path):
        path = os.fspath(path)
        assert path.startswith(prefix), f"a non-bucket path reached the bucket backend: {path}"
        return str(twins / path[len(prefix):])

    def on_path(fn, path, *args, **kwargs):
        return fn(local(path), *args, **kwargs)

    def on_two(fn, path, dst, *args, **kwargs):
        return fn(local(path), local(dst), *args, **kwargs)

    single = ("open", "exists", "glob", "isdir", "listdir", "makedirs", "mkdir", "remove", "rmtree", "stat", "walk")
    from unittest import mock

    from etils.epath import gpath

    # (with TensorFlow installed, epath sends gs:// to tf.io.gfile, past the mocked backends)
    with mock.patch.object(gpath, "_is_tf_installed", lambda: False), \
            testing.mock_epath(**{k: on_path for k in single}, copy=on_two, rename=on_two, replace=on_two):
        yield prefix


def test_readers_and_frames_read_bucket_urls(fake_bucket, twins, tmp_path):
    for name in ("LASOT", "GOT10K_vot_train", "TRACKINGNET", "COCO17"):
        local = _folder(name, twins, tmp_path)
        remote = build_dataset(name, fake_bucket + TRAINING[name][1], tmp_path / "bucket_index", progress=False)
        assert [s.name for s in remote.sequences] == [s.name for s in local.sequences]
        for r, f in zip(remote.sequences, local.sequences):
            np.testing.assert_array_equal(r.boxes, f.boxes)
            np.testing.assert_array_equal(r.visible, f.visible)
            assert r.frames[0].startswith(fake_bucket)
        np.testing.assert_array_equal(read_file_frame(r.frames[-1]), read_file_frame(f.frames[-1]))
    seqs = load_folder_eval("lasot", fake_bucket + "lasot", only_existing=True)
    assert [s.name for s in seqs] == [s.name for s in load_folder_eval("lasot", twins / "lasot", only_existing=True)]
    # training batches from the bucket equal those from the local folders; on the python path, whose frames are
    # read through epath: the mocked bucket lives in Python, where the graph path's tf.io.read_file cannot see it
    cfg = _cfg(["GOT10K_vot_train"])
    cfg.DATA.PIPELINE = "python"
    remote = build_dataset("GOT10K_vot_train", fake_bucket + "got10k", tmp_path / "bucket_index", progress=False)
    got, _ = _batches(cfg, [remote], 0, 1)
    want, _ = _batches(cfg, [_folder("GOT10K_vot_train", twins, tmp_path)], 0, 1)
    _assert_batches_equal(got, want)

"""The graph input path (`data_pipeline/graph.py`) against the Python reference (`processing.process_pair`) for
the same draws, and the graph iterator's determinism, resume, host shards and bad frames."""
import dataclasses
import shutil

import cv2
import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import synthetic
from data_pipeline.graph import GraphSampleFn, padding_profile, resize_padded
from data_pipeline.pipeline import make_train_iterator
from data_pipeline.processing import InvalidSample, JpegFrame, ProcessingSettings, ReplayDraws, process_pair
from data_pipeline.readers import build_dataset
from data_pipeline.sampler import PairSampler
from grm_jax import geometry
from grm_jax.config import load_config

HOST_BATCH = 2
LABELS = ("template_anno", "search_anno", "template_mask", "heatmap", "template_lut", "search_lut")


@pytest.fixture(scope="module")
def tiny_cfg():
    cfg = load_config("tiny_test")
    cfg.DATA.TRAIN.DATASETS_NAME = ["GOT10K_train"]
    cfg.DATA.TRAIN.DATASETS_RATIO = [1]
    return cfg


@pytest.fixture(scope="module")
def got10k_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("got10k_graph")
    # 400x300 frames: template crops are scaled up and search crops down (both resize directions)
    synthetic.write_dataset("got10k", root, num_sequences=3, num_frames=(20, 30), image_size=(400, 300), seed=1,
                            split="train")
    return root


@pytest.fixture(scope="module")
def got10k(got10k_root, tmp_path_factory):
    return build_dataset("GOT10K_train", got10k_root, tmp_path_factory.mktemp("idx"), progress=False)


def _python_pair(p, settings):
    """The Python path on the graph path's draws (frames decoded by window, as the graph path does)."""
    draws = ReplayDraws([p["gray"], p["flip"], (p["template_growth"], p["template_shift"]),
                         (p["search_growth"], p["search_shift"]), p["template_brightness"], p["template_norm_flip"],
                         p["search_brightness"], p["search_norm_flip"]])
    t, s = p["template_path"].decode(), p["search_path"].decode()
    return process_pair(JpegFrame(t), p["template_box"].astype(np.float64), JpegFrame(s),
                        p["search_box"].astype(np.float64), draws, settings)


def test_graph_pairs_equal_python_processing_for_the_same_draws(got10k):
    # heavy jitter and frequent grey / flip so that invalid crops, both flips and grayscale all occur
    settings = dataclasses.replace(ProcessingSettings(template_size=64, search_size=128), grayscale_prob=0.4,
                                   search_center_jitter=4.5, search_scale_jitter=0.5)
    fn = GraphSampleFn(PairSampler([got10k], [1], max_interval=10), settings, seed=3)
    attempt = tf.function(fn.attempt)
    seen = {"ok": 0, "invalid": 0, "gray": 0, "flip": 0, "norm_flip": 0, "grey_level_diffs": 0}
    for index in range(40):
        p = fn.draw_parameters(index, 0)
        out = {k: v.numpy() for k, v in attempt(tf.constant(index, tf.int64), tf.constant(0, tf.int64)).items()}
        try:
            ref = _python_pair(p, settings)
        except InvalidSample:
            ref = None
        assert out["ok"] == (ref is not None), index
        if ref is None:
            seen["invalid"] += 1
            continue
        seen["ok"] += 1
        seen["gray"] += bool(p["gray"])
        seen["flip"] += bool(p["flip"])
        seen["norm_flip"] += bool(p["search_norm_flip"])
        for key in LABELS:
            np.testing.assert_array_equal(out[key], ref[key], err_msg=f"{key} sample {index}")
        for key in ("template", "search"):
            diff = np.abs(out[key].astype(np.int16) - ref[key].astype(np.int16))
            assert diff.max() <= 1, (key, index, diff.max())
            seen["grey_level_diffs"] += int(np.count_nonzero(diff))
    assert seen["ok"] >= 20 and seen["invalid"] >= 1 and seen["gray"] >= 3 and seen["flip"] >= 5, seen
    assert seen["norm_flip"] >= 5, seen


def test_resize_padded_is_cv2_pad_and_resize_within_one_level():
    rng = np.random.default_rng(0)
    # (crop side, output, top, left, window h, w): up- and downscaling, padding on no / some / every side
    for crop_sz, out, top, left, h, w in ((37, 128, 5, 0, 30, 37), (301, 64, 0, 40, 300, 200),
                                          (256, 128, 10, 10, 200, 236), (500, 256, 100, 0, 400, 500),
                                          (90, 90, 0, 0, 90, 90), (7, 256, 3, 2, 2, 5), (41, 256, 0, 0, 41, 41),
                                          (1000, 128, 1, 999, 998, 1)):
        window = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        bottom, right = crop_sz - top - h, crop_sz - left - w
        layout = geometry.CropLayout(crop_sz, 0, h, 0, w, top, bottom, left, right)
        ref, _, att = geometry.crop_from_window(window, layout, out)
        geo = {k: tf.constant(v, tf.int64) for k, v in dict(crop_sz=crop_sz, top=top, bottom=bottom, left=left,
                                                             right=right, height=h, width=w).items()}
        got = resize_padded(tf.constant(window), geo, out).numpy()
        assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1, (crop_sz, out, top, left)
        # mirror: the crop of the mirrored image from the unmirrored window (padding in mirrored coordinates)
        mirrored, _, _ = geometry.crop_from_window(np.ascontiguousarray(window[:, ::-1]), layout, out)
        got = resize_padded(tf.constant(window), geo, out, mirror=tf.constant(True)).numpy()
        assert np.abs(got.astype(int) - mirrored.astype(int)).max() <= 1, ("mirror", crop_sz, out, top, left)
        rows = padding_profile(geo["crop_sz"], out, geo["top"], geo["height"]).numpy()
        cols = padding_profile(geo["crop_sz"], out, geo["left"], geo["width"]).numpy()
        np.testing.assert_array_equal(rows[:, None] | cols[None, :], att)


def _batches(cfg, ds, start, n, **kw):
    kw.setdefault("process_index", 0)
    kw.setdefault("process_count", 1)
    with make_train_iterator(cfg, [ds], seed=5, start_step=start, host_batch_size=kw.pop("host_batch", HOST_BATCH),
                             num_parallel=2, pipeline="graph", **kw) as it:
        out = [next(it) for _ in range(n)]
        return out, it.stats


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_graph_batches_determinism_resume_and_host_shards(tiny_cfg, got10k):
    run, stats = _batches(tiny_cfg, got10k, 0, 3)
    b = run[0]
    hz, hx = tiny_cfg.DATA.TEMPLATE.SIZE, tiny_cfg.DATA.SEARCH.SIZE
    assert b["template"].shape == (HOST_BATCH, hz, hz, 3) and b["search"].shape == (HOST_BATCH, hx, hx, 3)
    assert b["template"].dtype == np.uint8 and b["search_lut"].dtype == np.float32
    assert stats["samples"] == 3 * HOST_BATCH
    np.testing.assert_array_equal(np.concatenate([r["sample_index"] for r in run]), np.arange(3 * HOST_BATCH))
    for batch in run:
        np.testing.assert_array_equal(batch["heatmap"], geometry.gaussian_heatmap(batch["search_anno"], hx))
        np.testing.assert_array_equal(batch["template_mask"], geometry.template_box_mask(batch["template_anno"], hz))
        for lut, anno in ((batch["search_lut"], batch["search_anno"]),):
            assert np.all(np.isfinite(lut)) and np.all(np.isfinite(anno))
    again, _ = _batches(tiny_cfg, got10k, 0, 3)
    for x, y in zip(run, again):
        _assert_same(x, y)
    resumed, _ = _batches(tiny_cfg, got10k, 2, 1)
    _assert_same(resumed[0], run[2])
    assert not np.array_equal(run[0]["search"], run[1]["search"])
    single, _ = _batches(tiny_cfg, got10k, 1, 1, host_batch=4)
    hosts = [_batches(tiny_cfg, got10k, 1, 1, process_index=p, process_count=2)[0][0] for p in range(2)]
    assert not set(hosts[0]["sample_index"]) & set(hosts[1]["sample_index"])
    _assert_same({k: np.concatenate([h[k] for h in hosts]) for k in single[0]}, single[0])


def test_graph_bad_frames_are_skipped_counted_logged_and_deterministic(tiny_cfg, got10k_root, tmp_path, caplog):
    root = tmp_path / "broken"
    shutil.copytree(got10k_root, root)
    frames = sorted(root.rglob("*.jpg"))
    for i, f in enumerate(frames[::3]):
        if i % 3 == 0:
            f.unlink()  # missing frame
        elif i % 3 == 1:
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])  # truncated JPEG
        else:
            f.write_bytes(b"GIF89a" + bytes(200) + b"\xff\xd9")  # not a JPEG
    ds = build_dataset("GOT10K_train", root, tmp_path / "idx", progress=False)
    with caplog.at_level("WARNING", logger="data_pipeline.pipeline"):
        run, stats = _batches(tiny_cfg, ds, 0, 4)
    bad = sum(int(b["bad_frames"].sum()) for b in run)
    assert bad > 0 and stats["bad_frames"] == bad
    assert stats["invalid_pairs"] == sum(int((b["redraws"] - b["bad_frames"]).sum()) for b in run)
    assert any(str(root) in r.getMessage() and ".jpg" in r.getMessage() for r in caplog.records)
    for b in run:
        assert np.all(b["redraws"] >= b["bad_frames"])
        np.testing.assert_array_equal(b["heatmap"], geometry.gaussian_heatmap(b["search_anno"], 128))
    again, _ = _batches(tiny_cfg, ds, 0, 4)
    for x, y in zip(run, again):
        _assert_same(x, y)
    # a tf.data service worker's stream: some of the steps, in increasing order; a step whose first sample hit
    # a bad frame must be refilled from its own first sample, not from the end of the worker's previous step
    from data_pipeline.pipeline import _graph_dataset

    first_bad = [s for s in range(1, 4) if run[s]["bad_frames"][0] > 0]
    assert first_bad, [b["bad_frames"] for b in run]
    worker_steps = [first_bad[0]] + [s for s in range(first_bad[0] + 2, 4)]
    fn = GraphSampleFn(PairSampler([ds], tiny_cfg.DATA.TRAIN.DATASETS_RATIO, tiny_cfg.DATA.MAX_SAMPLE_INTERVAL),
                       ProcessingSettings.from_config(tiny_cfg), seed=5)
    worker = _graph_dataset(fn, worker_steps[0], HOST_BATCH, HOST_BATCH, 0, 2, per_step=True,
                            steps=tf.data.Dataset.from_tensor_slices(np.array(worker_steps, np.int64)))
    served = list(worker.as_numpy_iterator())
    assert [int(b.pop("step")) for b in served] == worker_steps
    for step, batch in zip(worker_steps, served):
        _assert_same(batch, run[step])


def test_graph_gives_up_with_a_clear_error(tiny_cfg, got10k, monkeypatch):
    from data_pipeline import pipeline

    monkeypatch.setattr(pipeline, "MAX_REDRAWS", 3)
    from grm_jax.sequence import Sequence

    class Missing:
        name, is_video = "missing", True
        sequences = [Sequence("gone", "missing", [f"/nonexistent/{i:08d}.jpg" for i in range(25)],
                              np.tile([10.0, 10.0, 20.0, 20.0], (25, 1)), np.ones(25, bool))]

    with make_train_iterator(tiny_cfg, [Missing()], seed=0, start_step=0, host_batch_size=1, process_index=0,
                             process_count=1, pipeline="graph", sampler=PairSampler([Missing()], [1])) as it:
        with pytest.raises(RuntimeError, match="no usable pair after 3 draws"):
            next(it)


def test_graph_path_refuses_non_jpeg_frames(tiny_cfg):
    from grm_jax.sequence import Sequence

    class Png:
        name, is_video = "png", True
        sequences = [Sequence("s", "png", [f"/x/{i:08d}.png" for i in range(25)],
                              np.tile([10.0, 10.0, 20.0, 20.0], (25, 1)), np.ones(25, bool))]

    with pytest.raises(ValueError, match="JPEG frames only.*png"):
        make_train_iterator(tiny_cfg, [Png()], seed=0, start_step=0, host_batch_size=1, process_index=0,
                            process_count=1, pipeline="graph")


def test_graph_batches_from_a_prepared_dataset_equal_folder_batches(tiny_cfg, got10k_root, got10k, tmp_path):
    """DATA.SOURCE=tfds under the graph path: frames read from the records (same bytes) -> the same batches."""
    import tensorflow_datasets as tfds

    from data_pipeline.prepared import load_training_dataset
    from data_pipeline.prepared.builders import BUILDERS

    builder = BUILDERS["got10k"](data_dir=str(tmp_path / "tfds"), progress=False)
    builder.download_and_prepare(download_dir=str(tmp_path / "downloads"),
                                 download_config=tfds.download.DownloadConfig(manual_dir=str(got10k_root)))
    prepared = load_training_dataset("GOT10K_train", tmp_path / "tfds")
    want, _ = _batches(tiny_cfg, got10k, 1, 2)
    got, stats = _batches(tiny_cfg, prepared, 1, 2)
    assert stats["samples"] == 2 * HOST_BATCH
    for x, y in zip(got, want):
        _assert_same(x, y)
    with pytest.raises(ValueError, match="tf.data service"):
        make_train_iterator(tiny_cfg, [prepared], seed=5, start_step=0, host_batch_size=2, process_index=0,
                            process_count=1, pipeline="graph", service_address="grpc://localhost:1")


def test_cv2_gray_formula_is_exact():
    from data_pipeline.graph import _gray

    img = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(_gray(tf.constant(img)).numpy(), np.stack([g, g, g], 2))


def test_service_workers_keep_samples_in_flight_for_their_own_cores(tiny_cfg, got10k, monkeypatch):
    """The dataset graph is built by the trainer: DATA.SERVICE_WORKER_CORES, not the trainer's core count, sizes
    the workers' parallelism (direct use keeps this host's cores)."""
    from data_pipeline import pipeline

    seen = []

    def capture(*args, **kwargs):
        seen.append((args[5], kwargs["per_step"]))
        raise KeyboardInterrupt  # stop before a dispatcher is contacted

    monkeypatch.setattr(pipeline, "_graph_dataset", capture)
    cfg = tiny_cfg  # module-scoped: the key is put back below
    old = cfg.DATA.SERVICE_WORKER_CORES
    try:
        cfg.DATA.SERVICE_WORKER_CORES = 24
        for address in ("grpc://localhost:1", ""):
            with pytest.raises(KeyboardInterrupt):
                make_train_iterator(cfg, [got10k], seed=0, start_step=0, host_batch_size=2, process_index=0,
                                    process_count=1, pipeline="graph", service_address=address, threads=2)
    finally:
        cfg.DATA.SERVICE_WORKER_CORES = old
    assert seen == [(24, True), (2, False)]


@pytest.mark.slow
def test_service_batches_equal_the_direct_pipeline(tiny_cfg, got10k):
    """tf.data service, dispatcher + 2 workers on localhost (in this process): same batches, same order."""
    service = tf.data.experimental.service
    dispatcher = service.DispatchServer()
    address = dispatcher.target.split("://", 1)[1]
    workers = [service.WorkerServer(service.WorkerConfig(dispatcher_address=address)) for _ in range(2)]
    assert dispatcher._num_workers() == 2
    direct, _ = _batches(tiny_cfg, got10k, 3, 4)
    served, stats = _batches(tiny_cfg, got10k, 3, 4, service_address=dispatcher.target)
    assert stats["samples"] == 4 * HOST_BATCH
    for x, y in zip(direct, served):
        _assert_same(x, y)
    np.testing.assert_array_equal(served[0]["sample_index"], [6, 7])
    del workers


@pytest.mark.slow
def test_input_service_script_serves_batches(tiny_cfg, got10k, tmp_path):
    """scripts/input_service.py: dispatcher + 2 worker processes, consumed by make_train_iterator."""
    import os
    import re
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "input_service.py"
    log = tmp_path / "service.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(script), "--port", "0", "--workers", "2"], stdout=out,
                                stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(script.parents[1])))
    try:
        deadline = time.time() + 60
        while not (m := re.search(r"dispatcher: (grpc://\S+)", log.read_text())) and time.time() < deadline:
            time.sleep(0.5)
        assert m, log.read_text()
        while log.read_text().count("joined") < 2 and time.time() < deadline:
            time.sleep(0.5)
        served, _ = _batches(tiny_cfg, got10k, 0, 2, service_address=m.group(1))
        direct, _ = _batches(tiny_cfg, got10k, 0, 2)
        for x, y in zip(direct, served):
            _assert_same(x, y)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

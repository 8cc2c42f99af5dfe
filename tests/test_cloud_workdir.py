"""A training workdir under a URL (grm_jax/workdir.py), tested on a gs:// bucket that lives in memory: every
`tf.io.gfile` call (what etils.epath, the GFile logs and the bucket check use) sees gs://BUCKET/... (and
s3://BUCKET/...) in TensorFlow's in-memory file system ram:// (tests/conftest.py: gs_in_memory; no network).

What runs on that bucket here: the lock, config.yaml and its resume check, the TensorBoard event file,
history.jsonl and the resume decision. Orbax writes checkpoint arrays with TensorStore, which reaches local paths
and gs:// only (`grm_jax.workdir.checkpoint_location`): the end-to-end test maps the run's checkpoint folder to a
local folder for orbax (one monkeypatched function), so the orbax gs:// path itself is not exercised without a
bucket.
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
STEPS = 4
CKPT_EVERY = 2
@pytest.fixture(scope="module", autouse=True)
def in_memory(gs_in_memory):
    """Every test of this module on the in-memory buckets (tests/conftest.py: gs_in_memory)."""
    return gs_in_memory


def _bucket_dir(name: str, scheme: str = "gs"):
    """A fresh folder in a fresh in-memory bucket (it lives as long as the process)."""
    from grm_jax.workdir import workdir_path

    return workdir_path(f"{scheme}://bucket-{uuid.uuid4().hex[:8]}/{name}")


@pytest.fixture
def quick_lock(monkeypatch):
    from grm_jax.workdir import ObjectStoreLock

    monkeypatch.setattr(ObjectStoreLock, "settle_s", 0.05)
    return ObjectStoreLock


# ----------------------------------------------------------------------------------- the file-system layer

def test_url_paths_keep_their_scheme_and_answer_pathlib_calls():
    from etils import epath

    from grm_jax.workdir import absolute_path, workdir_path

    work = _bucket_dir("run")
    assert isinstance(work, epath.Path) and str(work).startswith("gs://bucket-")
    assert absolute_path(work) == work
    assert isinstance(workdir_path("runs/a"), Path)                  # local paths stay pathlib paths
    assert str(workdir_path("gs://b/run/") / "checkpoints") == "gs://b/run/checkpoints"
    work.mkdir(parents=True, exist_ok=True)
    (work / "a.txt").write_text("one\n")
    (work / "a.txt").write_text("two\n")                             # replaces, as on a bucket
    assert (work / "a.txt").read_text() == "two\n" and (work / "a.txt").is_file() and work.is_dir()
    (work / "a.txt").replace(work / "b.txt")
    assert [p.name for p in work.iterdir()] == ["b.txt"] and not (work / "a.txt").exists()
    with pytest.raises(ValueError, match="'gs://': not a URL"):
        workdir_path("gs://")
    with pytest.raises(ValueError, match="'ram://b/run': not a URL of the form scheme://bucket/path with scheme one "
                                         "of gs, s3, az"):
        workdir_path("ram://b/run")


def test_checkpoints_go_to_local_paths_and_gs_only():
    from etils import epath

    from grm_jax.config import ConfigError
    from grm_jax.workdir import checkpoint_location, workdir_path

    assert isinstance(checkpoint_location(workdir_path("gs://b/run/checkpoints")), epath.Path)
    assert checkpoint_location(workdir_path("rel/run")) == Path("rel/run").absolute()
    with pytest.raises(ConfigError, match=r"^s3://b/run/checkpoints: checkpoints can be written to a local path .* "
                                          r"or to gs:// only"):
        checkpoint_location(workdir_path("s3://b/run/checkpoints"))


def test_train_refuses_a_url_orbax_cannot_write_before_writing_anything():
    from grm_jax.config import ConfigError, load_config
    from grm_jax.train.loop import train

    work = _bucket_dir("run", "s3")
    cfg = load_config(REPO / "configs" / "tiny_test.yaml")
    with pytest.raises(ConfigError, match=rf"^{work}/checkpoints: checkpoints can be written"):
        train(cfg, str(work), lambda *a: iter(()))
    assert not work.exists()


def test_object_store_lock_refuses_a_second_run_and_takes_over_a_stale_one(quick_lock, capsys):
    from grm_jax.errors import WorkdirBusyError
    from grm_jax.workdir import WorkdirLock

    work = _bucket_dir("run")
    work.mkdir(parents=True)
    first = WorkdirLock(str(work)).acquire()
    assert isinstance(first, quick_lock)
    with pytest.raises(WorkdirBusyError, match=rf"^{work} is in use by another training run \(pid \d+ on host .*, last "
                                          r"heartbeat \d+ s ago\); .*delete " + f"{work}/.lock"):
        WorkdirLock(work).acquire()
    first.check()                                                  # still ours
    first.release()
    assert not (work / ".lock").exists()

    # a killed holder: its heartbeat goes stale and the next run takes over, saying so
    killed = WorkdirLock(work).acquire()
    killed._stop.set()                                             # no more heartbeats, lock object left behind
    killed._thread.join()
    with pytest.raises(WorkdirBusyError, match="in use by another training run"):
        WorkdirLock(work).acquire()
    stale = quick_lock(work)
    stale.stale_s = 0.5
    time.sleep(0.6)
    stale.acquire()
    assert "taking over the lock of a run without a heartbeat" in capsys.readouterr().err
    # the killed holder, had it come back, would stop before its next checkpoint write
    killed._beat_once()
    with pytest.raises(WorkdirBusyError, match=rf"^{work}/.lock was taken over by another run .*stopping before the next "
                                          "checkpoint write"):
        killed.check()
    stale.release()


def test_metric_writer_on_a_url_writes_tensorboard_events_and_history(in_memory):
    import tensorflow as tf
    from tensorboardX.proto.event_pb2 import Event

    from grm_jax.train.metrics import HISTORY_FILE, TENSORBOARD_DIR, MetricWriter, read_history

    work = _bucket_dir("run")
    writer = MetricWriter(str(work), total_steps=3)
    for step in (1, 2, 3):
        writer.write_scalars(step, {"loss/total": 1.0 / step, "IoU": 0.1 * step})
    writer.close()
    [events] = list((work / TENSORBOARD_DIR).iterdir())
    assert events.name.startswith("events.out.tfevents.")
    scalars = {}
    # TF's record reader is C++ (no tf.io.gfile call to map): it reads the in-memory object itself
    for record in tf.data.TFRecordDataset(in_memory(str(events))).as_numpy_iterator():
        event = Event.FromString(record)
        for value in event.summary.value:
            scalars[(event.step, value.tag)] = value.simple_value
    assert scalars[(3, "loss/total")] == pytest.approx(1 / 3) and scalars[(2, "IoU")] == pytest.approx(0.2)
    # a resumed run at step 2 drops the records of step 3 (written after the last checkpoint)
    MetricWriter(work, total_steps=3, start_step=2).close()
    assert [r["step"] for r in read_history(work / HISTORY_FILE)] == [1, 2]


# ----------------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_training_yaml):
    from data_pipeline.synthetic import write_dataset

    from grm_jax.cli.train import batch_factory, build_datasets
    from grm_jax.config import load_config

    base = tmp_path_factory.mktemp("cloud_workdir")
    write_dataset("got10k", base / "got10k", 4, num_frames=20, image_size=(96, 72), seed=0, split="train")
    tiny_training_yaml(base / "tiny.yaml", base / "got10k", ckpt_every=CKPT_EVERY)
    cfg = load_config(base / "tiny.yaml")
    return base, cfg, batch_factory(cfg, build_datasets(cfg))


@pytest.mark.slow
def test_training_in_a_url_workdir_resumes_like_a_local_one(tiny, quick_lock, monkeypatch, request):
    import jax

    import grm_jax.checkpoints.training as training
    import grm_jax.train.loop as loop
    import grm_jax.workdir as workdir
    from grm_jax.checkpoints.training import latest_training_step, load_training_variables
    from grm_jax.errors import WorkdirBusyError
    from grm_jax.train.metrics import read_history

    base, cfg, make_batches = tiny
    # the three runs compile the same step: share it through JAX's persistent cache (a fresh folder), and leave
    # the process's cache settings as they were for the tests that follow
    from jax.experimental.compilation_cache import compilation_cache

    request.addfinalizer(compilation_cache.reset_cache)
    for name, value in (("jax_compilation_cache_dir", str(base / "jax_cache")),
                        ("jax_persistent_cache_min_compile_time_secs", 0.0),
                        ("jax_persistent_cache_min_entry_size_bytes", 0)):
        request.addfinalizer(lambda name=name, old=getattr(jax.config, name): jax.config.update(name, old))
        jax.config.update(name, value)
    compilation_cache.reset_cache()
    local = loop.train(cfg, base / "local", make_batches, max_steps=STEPS, progress=False)

    # orbax's TensorStore writer does not see the in-memory bucket: the checkpoint folder of the bucket's run is
    # mapped to a local folder
    orbax_dirs = base / "orbax_of_bucket"
    real_location = workdir.checkpoint_location

    def location(directory):
        if str(directory).startswith("gs://"):
            return orbax_dirs / str(directory).removeprefix("gs://")
        return real_location(directory)
    for module in (workdir, loop, training):
        monkeypatch.setattr(module, "checkpoint_location", location)

    work = _bucket_dir("run")
    first = loop.train(cfg, str(work), make_batches, max_steps=STEPS // 2, progress=False)
    assert first.step == STEPS // 2
    # a second run while one holds the workdir is refused before it writes anything
    holder = workdir.WorkdirLock(work).acquire()
    try:
        config_before = (work / "config.yaml").read_text()
        with pytest.raises(WorkdirBusyError, match=rf"^{work} is in use by another training run"):
            loop.train(cfg, str(work), make_batches, max_steps=STEPS, progress=False)
        assert (work / "config.yaml").read_text() == config_before
    finally:
        holder.release()
    resumed = loop.train(cfg, str(work), make_batches, max_steps=STEPS, progress=False)

    assert (resumed.step, resumed.digest) == (local.step, local.digest)
    bucket_checkpoints = location(work / "checkpoints")
    assert latest_training_step(bucket_checkpoints) == (bucket_checkpoints, STEPS)
    bucket_variables, _ = load_training_variables(bucket_checkpoints)
    local_variables, _ = load_training_variables(base / "local")
    jax.tree_util.tree_map(np.testing.assert_array_equal, bucket_variables, local_variables)

    def losses(history):
        return [(r["step"], r["loss/total"], r["IoU"], r["grad_norm"]) for r in history]
    assert losses(read_history(work / "history.jsonl")) == losses(read_history(base / "local" / "history.jsonl"))
    assert [r["step"] for r in read_history(work / "history.jsonl")] == list(range(1, STEPS + 1))
    assert "KEEP_CHECKPOINTS: 2" in (work / "config.yaml").read_text()
    assert not (work / ".lock").exists()
    tb = sorted(p.name for p in (work / "tb").iterdir())
    assert len(tb) == 2 and all(n.startswith("events.out.tfevents.") for n in tb)   # one event file per run


@pytest.mark.slow
def test_grm_train_refuses_a_workdir_url_it_cannot_checkpoint_to_before_reading_data(tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "scripts/train.py", "--config", "tiny_test", "--workdir", "s3://b/run",
                          "--set", "DATA.ROOTS.GOT10K=" + str(tmp_path / "missing"), "--max-steps", "1"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert errors == ["error: s3://b/run/checkpoints: checkpoints can be written to a local path (or a mounted "
                      "bucket) or to gs:// only (orbax writes the arrays with TensorStore's file and gcs drivers); "
                      "choose such a --workdir"], res.stderr[-2000:]
    assert "Traceback" not in res.stderr


def test_readers_of_a_workdir_take_a_url_and_name_it_when_it_holds_no_checkpoint():
    from grm_jax.checkpoints.inference import load_for_inference
    from grm_jax.checkpoints.reading import CheckpointLoadError
    from grm_jax.checkpoints.training import latest_training_step
    from grm_jax.cli.track import build_parser, checkpoint_identity

    work = _bucket_dir("run")
    (work / "checkpoints").mkdir(parents=True)
    assert latest_training_step(str(work)) is None
    with pytest.raises(CheckpointLoadError, match=rf"^{work}/checkpoints: no orbax CheckpointManager steps found"):
        load_for_inference(str(work))
    args = build_parser().parse_args(["--config", "tiny_test", "--checkpoint", str(work), "--dataset", "lasot",
                                      "--workdir", "results"])
    assert str(args.checkpoint) == str(work)                  # the URL keeps its '//'
    with pytest.raises(CheckpointLoadError, match=rf"^{work}: no orbax CheckpointManager steps found"):
        checkpoint_identity(args.checkpoint)

"""Hostile and careless input on the training side: every case ends promptly with exit status 2 (or the
documented one) and one message naming the file / key / path, keeps what was already written, and a rerun after
the cause is removed ends bit-identical to an uninterrupted run."""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from grm_jax.checkpoints.training import load_training_variables
from grm_jax.train.loop import params_digest

REPO = Path(__file__).resolve().parents[1]
STEPS = 4
CKPT_EVERY = 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_training_yaml):
    from data_pipeline.synthetic import write_dataset

    base = tmp_path_factory.mktemp("hostile_train")
    write_dataset("got10k", base / "got10k", 4, num_frames=20, image_size=(96, 72), seed=0, split="train")
    # python path: the faults below are injected into its per-sample function (PairSource); the graph path's
    # bad frames are covered in tests/test_graph_pipeline.py
    cfg = tiny_training_yaml(base / "tiny.yaml", base / "got10k", ckpt_every=CKPT_EVERY, pipeline="python")
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
               JAX_COMPILATION_CACHE_DIR=str(base / "jax_cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", PYTHONPATH=str(REPO))
    env.pop("XLA_FLAGS", None)
    return base, cfg, env


def _copy_dataset(base: Path, name: str) -> Path:
    root = base / name
    shutil.copytree(base / "got10k", root, ignore=shutil.ignore_patterns(".grm_jax_index"))
    return root


def _train(cfg, workdir, env, *args, steps=STEPS, prelude: str = "", timeout=300):
    """scripts/train.py as a user runs it (`__main__`), after `prelude` (a fault to inject) in the same process."""
    argv = ["train.py", "--config", str(cfg), "--workdir", str(workdir), "--max-steps", str(steps), "--no-progress",
            *args]
    script = textwrap.dedent(prelude) + textwrap.dedent(f"""
        import runpy, sys
        sys.argv = {argv!r}
        runpy.run_module("grm_jax.cli.train", run_name="__main__", alter_sys=True)
    """)
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _digest(workdir, step=None):
    """(step, params sha256) of a checkpoint: what `grm-checkpoint-digest` prints (its two calls, run in this
    process; the command itself: tests/test_checkpoint_topology.py)."""
    variables, step = load_training_variables(workdir, step)
    return step, params_digest(variables["params"])


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


def _assert_one_clean_error(res, code=2):
    assert res.returncode == code, res.stdout[-2000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = _error_lines(res.stderr)
    assert len(lines) == 1, res.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def uninterrupted(setup):
    base, cfg, env = setup
    work = base / "run_ref"
    res = _train(cfg, work, env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return work, _digest(work)


# ----------------------------------------------------------------------------------- 1: input-pipeline errors

def test_invalid_boxes_are_left_out_at_index_time_and_reported_per_file_line(setup, caplog):
    from data_pipeline.readers import build_dataset

    base, _, _ = setup
    root = _copy_dataset(base, "got10k_badboxes")
    seq = sorted((root / "train").glob("GOT-10k_Train_*"))[0]
    gt = seq / "groundtruth.txt"
    lines = gt.read_text().splitlines()
    lines[2] = "nan,10,20,20"                  # NaN x: the official readers keep it "visible" (w, h > 0)
    lines[4] = "10,10,inf,20"
    lines[5] = "10,10,1e30,1e30"
    lines[7] = "10,10,100000,100000"           # asks OpenCV for 120 GB at crop time
    gt.write_text("\n".join(lines) + "\n")
    # every row of another sequence is absurd: that sequence has no visible frame left
    other = sorted((root / "train").glob("GOT-10k_Train_*"))[1] / "groundtruth.txt"
    other.write_text("10,10,100000,100000\n" * len(other.read_text().splitlines()))
    with caplog.at_level(logging.WARNING):
        ds = build_dataset("GOT10K_train", root, progress=False)
    by_name = {s.name: s for s in ds.sequences}
    visible = by_name[seq.name].visible
    assert not visible[[2, 4, 5, 7]].any() and visible[[0, 1, 3, 6]].all()
    messages = [r.getMessage() for r in caplog.records if "is not a box on any image" in r.getMessage()]
    assert len(messages) == 2, messages                             # once per file
    assert any(m.startswith(f"{gt}:3: box [nan, 10.0, 20.0, 20.0]") and "4 such row(s)" in m for m in messages)
    assert other.parent.name in ds.excluded
    caplog.clear()
    with caplog.at_level(logging.WARNING):                          # from the cache: still said once
        ds2 = build_dataset("GOT10K_train", root, progress=False)
    assert np.array_equal(ds2.visible_counts, ds.visible_counts)
    assert any("2 annotation file(s) hold rows that are no box" in r.getMessage() for r in caplog.records)


def test_absurd_crops_are_refused_before_opencv_allocates():
    from data_pipeline.processing import InvalidSample, ProcessingSettings, process_pair
    from grm_jax.geometry import crop_layout

    with pytest.raises(ValueError, match="gives a 400000-pixel crop"):
        crop_layout([10, 10, 100000, 100000], 4.0, (120, 160))
    with pytest.raises(ValueError, match="crop"):
        crop_layout([10, 10, 1e30, 1e30], 2.0, (120, 160))
    crop_layout([0, 0, 160, 120], 5.0, (120, 160))                  # a whole-frame box is fine
    image = np.zeros((120, 160, 3), np.uint8)
    settings = ProcessingSettings(template_size=32, search_size=64, search_scale_jitter=0.0,
                                  search_center_jitter=0.0)
    for box in ([10, 10, 20000, 20000], [10, 10, 3e9, 3e9]):
        with pytest.raises(InvalidSample):                          # a redraw, not a cv2.error / MemoryError
            process_pair(image, [10, 10, 20, 20], image, box, np.random.default_rng(0), settings)


def test_dataset_without_a_usable_pair_stops_at_start_naming_it(setup, tiny_training_yaml):
    base, _, env = setup
    root = _copy_dataset(base, "got10k_empty_jpegs")
    for f in root.glob("train/*/*.jpg"):
        f.write_bytes(b"")
    cfg = tiny_training_yaml(base / "empty.yaml", root, ckpt_every=CKPT_EVERY, pipeline="python")
    res = _train(cfg, base / "run_empty", env, timeout=120)
    line = _assert_one_clean_error(res)
    assert line.startswith(f"error: dataset GOT10K_train (DATA.ROOTS.GOT10K='{root}') gives no usable training "
                           "pair in 100 draws"), line
    assert "frame file is empty: " in line and str(root) in line
    assert not (base / "run_empty" / "checkpoints").exists()


@pytest.mark.slow
def test_pipeline_error_mid_run_exits_2_promptly_and_a_rerun_is_bit_identical(setup, uninterrupted):
    base, cfg, env = setup
    work_ref, (ref_step, ref_digest) = uninterrupted
    work = base / "run_pipeline_error"
    # samples of step 3 on raise inside the tf.data workers (as an OpenCV allocation failure would)
    prelude = """
        import data_pipeline.pipeline as P
        _call = P.PairSource.__call__
        def failing(self, index):
            if 8 <= index < 2 ** 40:   # (the start-up check draws far beyond)
                raise MemoryError(f"injected: cannot allocate the crop of sample {index}")
            return _call(self, index)
        P.PairSource.__call__ = failing
    """
    res = _train(cfg, work, env, prelude=prelude, timeout=240)
    line = _assert_one_clean_error(res)
    assert line.startswith("error: input pipeline: MemoryError: injected: cannot allocate the crop of sample"), line
    assert _digest(work)[0] == 2                                # the checkpoint of step 2 is kept
    resumed = _train(cfg, work, env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "(step 2)" in resumed.stdout
    assert _digest(work) == (ref_step, ref_digest)


# ----------------------------------------------------------------------------------- 2, 6: keep / config on resume

def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _steps(work: Path) -> list[int]:
    return sorted(int(p.name) for p in (work / "checkpoints").iterdir() if p.name.isdigit())


def test_keep_checkpoints_must_be_positive_or_null(tmp_path):
    from grm_jax.checkpoints.training import TrainingCheckpoints
    from grm_jax.config import ConfigError

    for bad in (0, -1, True, 2.5):
        with pytest.raises(ConfigError, match=rf"TRAIN.KEEP_CHECKPOINTS={bad!r}: must be a number of checkpoints "
                                              r">= 1, or null to keep all"):
            TrainingCheckpoints(tmp_path, bad)


@pytest.mark.slow
def test_keep_checkpoints_and_config_changes_on_resume(setup, uninterrupted):
    base, cfg, env = setup
    work_ref, _ = uninterrupted
    work = _copy_run(work_ref, base / "run_keep")
    recorded = (work / "config.yaml").read_text()
    for keep in (0, -1):
        res = _train(cfg, work, env, "--set", f"TRAIN.KEEP_CHECKPOINTS={keep}", steps=8, timeout=120)
        line = _assert_one_clean_error(res)
        assert f"TRAIN.KEEP_CHECKPOINTS={keep}: must be a number of checkpoints >= 1" in line, line
        assert _steps(work) == [2, 4]
    # a changed model / LR is refused, naming every key, before anything is written
    res = _train(cfg, work, env, "--set", "TRAIN.LR=0.002", "--set", "MODEL.BACKBONE.DEPTH=3", steps=8, timeout=120)
    line = _assert_one_clean_error(res)
    assert line.startswith(f"error: {work / 'config.yaml'}: resuming at step 4 with a different configuration: "
                           "MODEL.BACKBONE.DEPTH: 2 -> 3, TRAIN.LR: 0.001 -> 0.002;"), line
    assert "--allow-config-change" in line
    assert (work / "config.yaml").read_text() == recorded and _steps(work) == [2, 4]
    # KEEP_CHECKPOINTS 1 (a change that does not touch the math: recorded, not refused) keeps the newest
    # checkpoint of this run and never deletes those from before it
    res = _train(cfg, work, env, "--set", "TRAIN.KEEP_CHECKPOINTS=1", steps=8)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "config changed at step 4 (TRAIN.KEEP_CHECKPOINTS: 2 -> 1)" in res.stdout
    assert _steps(work) == [2, 4, 8]
    assert (work / "config.until_step_4.yaml").read_text() == recorded
    assert "KEEP_CHECKPOINTS: 1" in (work / "config.yaml").read_text()


def test_allowed_config_change_is_recorded(tmp_path):
    import yaml

    from grm_jax.config import ConfigError, load_config
    from grm_jax.train.loop import check_resume_config

    cfg = load_config(REPO / "configs" / "tiny_test.yaml")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    changed = load_config(REPO / "configs" / "tiny_test.yaml", ["TRAIN.LR=0.5", "DATA.SEARCH.SCALE_JITTER=0.1"])
    with pytest.raises(ConfigError, match=r"DATA.SEARCH.SCALE_JITTER: 0.5 -> 0.1, TRAIN.LR: 0.0001 -> 0.5"):
        check_resume_config(changed, tmp_path, 10)
    check_resume_config(changed, tmp_path, 10, allow_change=True)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["TRAIN"]["LR"] == 0.5
    assert yaml.safe_load((tmp_path / "config.until_step_10.yaml").read_text())["TRAIN"]["LR"] == 0.0001
    check_resume_config(changed, tmp_path, 20)                      # the recorded config is now the new one
    # where the data is read from (prepared datasets, tf.data service workers) gives the same batches: recorded,
    # not refused
    moved = load_config(REPO / "configs" / "tiny_test.yaml", [
        "TRAIN.LR=0.5", "DATA.SEARCH.SCALE_JITTER=0.1", "DATA.SOURCE=tfds", "DATA.TFDS_DIRS.GOT10K=gs://b/tfds",
        "DATA.SERVICE_ADDRESS=grpc://dispatcher:5050", "DATA.SERVICE_WORKER_CORES=32"])
    check_resume_config(moved, tmp_path, 30)
    recorded = yaml.safe_load((tmp_path / "config.yaml").read_text())["DATA"]
    assert (recorded["SOURCE"], recorded["SERVICE_ADDRESS"], recorded["SERVICE_WORKER_CORES"]) == (
        "tfds", "grpc://dispatcher:5050", 32)
    # a config.yaml written before a key existed: the key at its default is no change, another value is one
    older = cfg.to_dict()
    del older["DATA"]["SERVICE_WORKER_CORES"], older["TRAIN"]["REMAT"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(older, sort_keys=False))
    check_resume_config(cfg, tmp_path, 40)
    assert not (tmp_path / "config.until_step_40.yaml").exists()
    with pytest.raises(ConfigError, match=r"TRAIN.REMAT: 'dots' -> 'none'"):
        check_resume_config(load_config(REPO / "configs" / "tiny_test.yaml", ["TRAIN.REMAT=none"]), tmp_path, 40)


# ----------------------------------------------------------------------------------- 4: one run per workdir

def test_second_run_on_a_workdir_refuses_and_a_killed_holder_does_not_block(setup):
    import signal

    from grm_jax.train.loop import WorkdirLock

    base, cfg, env = setup
    work = base / "run_locked"
    work.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from grm_jax.train.loop import WorkdirLock
        WorkdirLock(Path({str(work)!r})).acquire()
        print("locked", flush=True)
        time.sleep(600)
    """)], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        res = _train(cfg, work, env, timeout=120)
        line = _assert_one_clean_error(res)
        assert line.startswith(f"error: {work} is in use by another training run (pid {holder.pid} on host "), line
        assert not (work / "checkpoints").exists() and not (work / "config.yaml").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    lock = WorkdirLock(work).acquire()       # the kernel dropped the killed holder's lock
    lock.release()


# ----------------------------------------------------------------------------------- 7: digests

@pytest.mark.slow
def test_damaged_latest_checkpoint_falls_back_and_resume_is_bit_identical(setup, uninterrupted):
    base, cfg, env = setup
    work_ref, (ref_step, ref_digest) = uninterrupted
    work = _copy_run(work_ref, base / "run_damaged")
    for f in (work / "checkpoints" / "4" / "state").rglob("d/*"):   # one flipped bit in every data file
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0x04
        f.write_bytes(data)
    res = _train(cfg, work, env)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert re.search(r"warning: checkpoint step 4 is damaged \((the digest of '\w+' differs from the one written "
                     rf"with it|unreadable \(.*\))\); moved to {re.escape(str(work / 'checkpoints' / 'damaged-4'))}; "
                     r"resuming from step 2", out), out[-3000:]
    assert "(step 2)" in res.stdout
    assert (work / "checkpoints" / "damaged-4").is_dir()             # kept for inspection, never deleted
    assert _digest(work) == (ref_step, ref_digest)


def test_every_bit_flip_in_a_converted_checkpoint_is_an_error_or_harmless(tmp_path):
    from grm_jax.checkpoints.converted import load_variables, save_variables
    from grm_jax.checkpoints.reading import CheckpointLoadError

    rng = np.random.default_rng(0)
    variables = {"params": {"backbone": {"w": rng.standard_normal((64, 96), np.float32),
                                         "b": rng.standard_normal(96).astype(np.float32)},
                            "box_head": {"k": rng.standard_normal((3, 3, 8, 8)).astype(np.float32)}},
                 "batch_stats": {"box_head": {"mean": rng.standard_normal(8).astype(np.float32)}}}
    clean = save_variables(tmp_path / "clean", variables, {"backbone.pos_embed": np.ones((1, 5, 4), np.float32)})
    files = sorted(p for p in clean.rglob("*") if p.is_file() and p.stat().st_size > 0)
    data_files = [p for p in files if "/d/" in str(p)]
    detected = 0
    for trial in range(12):
        damaged = tmp_path / f"flip{trial}"
        shutil.copytree(clean, damaged)
        f = damaged / (data_files if trial % 2 == 0 else files)[trial % len(data_files if trial % 2 == 0 else files)] \
            .relative_to(clean)
        data = bytearray(f.read_bytes())
        pos = int(rng.integers(len(data)))
        data[pos] ^= 1 << int(rng.integers(8))
        f.write_bytes(data)
        try:
            loaded, _, _ = load_variables(damaged)
        except CheckpointLoadError as err:
            assert str(damaged) in str(err)
            detected += 1
            continue
        for group in ("params", "batch_stats"):   # loaded without error: the weights must be the written ones
            for mod, leaves in variables[group].items():
                for name, value in leaves.items():
                    assert np.array_equal(loaded[group][mod][name], value), (f, pos)
    assert detected > 0    # (some flips land in bytes nothing reads; those load the written weights)


# ----------------------------------------------------------------------------------- 8: stale index

def test_annotation_edited_in_place_rebuilds_the_index(setup):
    import time

    from data_pipeline.readers import build_dataset

    base, _, _ = setup
    root = _copy_dataset(base, "got10k_edited")
    ds = build_dataset("GOT10K_train", root, progress=False)
    seq = ds.sequences[0]
    gt = root / "train" / seq.name / "groundtruth.txt"
    lines = gt.read_text().splitlines()
    x, y, w, h = lines[0].split(",")
    lines[0] = ",".join([x, y, w, str(float(h) + 1.0)[: len(h)].ljust(len(h), "0")])  # same size, other value
    time.sleep(0.01)
    gt.write_text("\n".join(lines) + "\n")
    fresh = build_dataset("GOT10K_train", root, progress=False).sequences[0]
    assert fresh.boxes[0, 3] == pytest.approx(float(h) + 1.0) and fresh.boxes[0, 3] != seq.boxes[0, 3]


# ----------------------------------------------------------------------------------- 5: full disk

@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (room for one checkpoint of the tiny model, not two); needs root (mount)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {res.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_full_disk_is_one_message_and_a_rerun_with_space_is_bit_identical(setup, uninterrupted, small_disk):
    base, cfg, env = setup
    _, (ref_step, ref_digest) = uninterrupted
    work = small_disk / "run"
    res = _train(cfg, work, env)
    line = _assert_one_clean_error(res)
    assert line.startswith(f"error: no space left on device writing checkpoint step 4 to {work / 'checkpoints'} ("), line
    assert line.endswith("the unfinished write was removed, the latest intact checkpoint is step 2; free space and "
                         "rerun to resume"), line
    assert "RESOURCE_EXHAUSTED" not in res.stderr                   # orbax's own tracebacks stay out
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == ["2"]   # nothing half-written left
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    resumed = _train(cfg, work, env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "(step 2)" in resumed.stdout
    assert _digest(work) == (ref_step, ref_digest)


# ----------------------------------------------------------------------------------- non-finite loss, fetched late

@pytest.mark.slow
def test_non_finite_loss_between_log_steps_stops_before_the_next_checkpoint(setup):
    base, cfg, env = setup
    work = base / "run_nan_deferred"
    # metrics are fetched at log / checkpoint steps only: a NaN at step 3 is seen at step 4 (a checkpoint step)
    prelude = """
        import numpy as np
        import data_pipeline.pipeline as P
        _call = P.PairSource.__call__
        def poisoned(self, index):
            out = _call(self, index)
            if 8 <= index < 12:                       # the batch of step 3
                out["search_lut"] = np.full_like(out["search_lut"], np.nan)
            return out
        P.PairSource.__call__ = poisoned
    """
    res = _train(cfg, work, env, "--set", "TRAIN.LOG_EVERY_STEPS=5", "--set", "TRAIN.CKPT_EVERY_STEPS=4",
                 steps=8, prelude=prelude)
    line = _assert_one_clean_error(res, code=3)
    assert line.startswith("error: non-finite loss at step 3 (") and "total=nan" in line, line
    assert "stopping at step 4" in line and "the last good checkpoint is none" in line, line
    assert not (work / "checkpoints").exists() or _steps(work) == []


def test_training_checkpoint_digests_are_checked_on_restore_and_on_load(tmp_path):
    import json

    import jax

    from grm_jax.checkpoints.reading import CheckpointLoadError
    from grm_jax.checkpoints.training import TrainingCheckpoints, load_training_variables

    rng = np.random.default_rng(1)

    def state(step):
        return {"step": np.int32(step), "params": {"backbone": {"w": rng.standard_normal((8, 8), np.float32)}},
                "batch_stats": {}, "opt_state": {"mu": np.zeros(3, np.float32)}, "rng": np.arange(2, dtype=np.uint32)}

    work = tmp_path / "run"
    ckpts = TrainingCheckpoints(work)
    states = {s: state(s) for s in (10, 20, 30)}
    for s, st in states.items():
        ckpts.save(s, st, {"step": s})
    ckpts.close()

    def tamper(step, key):   # the stored digest no longer matches the arrays: as if a bit of them flipped
        meta = work / "checkpoints" / str(step) / "meta" / "metadata"
        data = json.loads(meta.read_text())
        data["digests"][key] = "0" * 64
        meta.write_text(json.dumps(data))

    tamper(30, "params")
    with pytest.raises(CheckpointLoadError, match=r"checkpoints/30: the digest of 'params' differs from the one "
                                                  r"written with it \(a damaged checkpoint\)"):
        load_training_variables(work)
    tamper(20, "opt_state")                       # inference only reads params / batch_stats: step 20 loads
    assert load_training_variables(work, step=20)[1] == 20
    messages = []
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), state(0))
    restored, step = TrainingCheckpoints(work, log=messages.append).restore(abstract)
    assert step == 10 and np.array_equal(restored["params"]["backbone"]["w"], states[10]["params"]["backbone"]["w"])
    assert messages == [
        f"warning: checkpoint step 30 is damaged (the digest of 'params' differs from the one written with it); "
        f"moved to {work / 'checkpoints' / 'damaged-30'}; resuming from step 10",
        f"warning: checkpoint step 20 is damaged (the digest of 'opt_state' differs from the one written with it); "
        f"moved to {work / 'checkpoints' / 'damaged-20'}; resuming from step 10"]
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == ["10", "damaged-20", "damaged-30"]
    tamper(10, "rng")                             # nothing intact: one error listing every step, nothing moved
    with pytest.raises(CheckpointLoadError, match=r"no intact checkpoint to resume from: step 10: the digest of "
                                                  r"'rng' differs"):
        TrainingCheckpoints(work).restore(abstract)
    assert (work / "checkpoints" / "10").is_dir()

"""Checkpoints move between device counts: a training workdir written by processes with 2 and with 3 (not a power
of two) simulated CPU devices is read by every reader of this 1-device test process (load_for_inference,
grm-checkpoint-digest, grm-track, grm-export, convert flax-to-official, a bucket URL), and a 1-device checkpoint
is resumed for training by a 2-device process. The expected values come from the writer: the host arrays it
handed to the checkpoint writer (dumped by a wrapper around TrainingCheckpoints.save) and its final params digest.
The writers are grm-train itself on 2 and 3 devices (the global batch is the per-device batch times the devices).
"""
from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
STEPS = 1
ONE_DEVICE_STEP = 4
WRITER_DEVICES = (2, 3)

# Runs in the writer process before grm-train's __main__: every state handed to the checkpoint writer is also
# dumped as host arrays (params, batch_stats), the reference the readers must reproduce.
WRITER_PRELUDE = """
import pickle
from pathlib import Path
import jax, numpy as np
from grm_jax.checkpoints import training

_save = training.TrainingCheckpoints.save

def save(self, step, state, meta):
    host = jax.tree_util.tree_map(np.asarray, jax.device_get(
        {"params": state["params"], "batch_stats": state["batch_stats"]}))
    Path(DUMP_DIR).joinpath(f"saved_{step}.pkl").write_bytes(pickle.dumps(host))
    return _save(self, step, state, meta)

training.TrainingCheckpoints.save = save
"""


def _env(devices: int | None = None) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    env.pop("XLA_FLAGS", None)
    if devices is not None:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _train_command(cfg: Path, workdir: Path, steps: int, dump: Path | None = None) -> list[str]:
    """grm-train as a user runs it (`__main__`); with `dump`, the writer's saved arrays go there."""
    argv = ["grm-train", "--config", str(cfg), "--workdir", str(workdir), "--max-steps", str(steps),
            "--no-progress"]
    prelude = WRITER_PRELUDE.replace("DUMP_DIR", repr(str(dump))) if dump is not None else ""
    script = textwrap.dedent(prelude) + textwrap.dedent(f"""
        import runpy, sys
        sys.argv = {argv!r}
        runpy.run_module("grm_jax.cli.train", run_name="__main__", alter_sys=True)
    """)
    return [sys.executable, "-c", script]


def _done_digest(stdout: str) -> str:
    m = re.search(r"done: step \d+ params sha256 ([0-9a-f]{64})", stdout)
    assert m, stdout[-2000:]
    return m.group(1)


def _assert_quiet(stderr: str) -> None:
    """No orbax / absl log line, no Python warning, and no checkpoint called damaged."""
    assert "damaged" not in stderr, stderr[-3000:]
    assert "orbax" not in stderr.lower(), stderr[-3000:]
    noise = [ln for ln in stderr.splitlines()   # logging's and absl's formats, Python warnings
             if re.match(r"(WARNING|ERROR|INFO|DEBUG|CRITICAL):|[WEI]\d{4} ", ln) or "Warning:" in ln]
    assert not noise, stderr[-3000:]


# Run by a 2-device process: what the trainer does on resume (grm_jax/train/loop.py), restoring the workdir of
# argv[2] onto a state replicated over this process's mesh, then the digests of what it got.
RESUME_SCRIPT = """
import json, sys
import jax
from grm_jax.checkpoints.digests import tree_digests
from grm_jax.checkpoints.training import TrainingCheckpoints
from grm_jax.config import load_config
from grm_jax.specs import build_model, optimizer_spec
from grm_jax.train.loop import init_variables
from grm_jax.train.optim import OptimizerSpec, make_optimizer
from grm_jax.train.step import create_train_state, make_key, make_mesh

cfg = load_config(sys.argv[1])
model = build_model(cfg)
mesh = make_mesh()


def initial_state():
    variables = init_variables(cfg, model, make_key(0))
    tx = make_optimizer(OptimizerSpec(**optimizer_spec(cfg, mesh.devices.size)), variables["params"])
    return create_train_state(variables, tx, make_key(0))


shapes = jax.eval_shape(initial_state)
replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), shapes)
state, step = TrainingCheckpoints(sys.argv[2], log=lambda m: print(m, file=sys.stderr)).restore(abstract)
print(json.dumps({"step": step, "devices": sorted({len(x.sharding.device_set) for x in jax.tree_util.tree_leaves(state)}),
                  "digests": tree_digests(jax.device_get(state))}))
"""


def _write_one_device_checkpoint(cfg_path: Path, workdir: Path, step: int) -> dict:
    """A training checkpoint as the trainer writes it on this 1-device process (the state replicated over the
    mesh); returns the digests of the state written."""
    import jax

    from grm_jax.checkpoints.digests import tree_digests
    from grm_jax.checkpoints.training import TrainingCheckpoints
    from grm_jax.config import load_config
    from grm_jax.specs import build_model, optimizer_spec
    from grm_jax.train.loop import init_variables
    from grm_jax.train.optim import OptimizerSpec, make_optimizer
    from grm_jax.train.step import create_train_state, make_key, make_mesh

    cfg = load_config(cfg_path)
    variables = init_variables(cfg, build_model(cfg), make_key(7))
    state = create_train_state(variables, make_optimizer(OptimizerSpec(**optimizer_spec(cfg, 1)), variables["params"]),
                               make_key(8))
    state["step"] = np.int32(step)
    state = jax.device_put(state, jax.sharding.NamedSharding(make_mesh(), jax.sharding.PartitionSpec()))
    ckpts = TrainingCheckpoints(workdir)
    ckpts.save(step, state, {"step": step})
    ckpts.close()
    return tree_digests(jax.device_get(state))


@pytest.fixture(scope="module")
def written(tmp_path_factory, tiny_training_yaml):
    """{'runs': {devices: (workdir, host arrays the writer saved, writer's final params digest)}} for 2 and 3
    devices, the tiny config, and the result of restoring a 1-device checkpoint in a 2-device process (the other
    direction). The three processes run at once."""
    from data_pipeline.synthetic import write_dataset

    base = tmp_path_factory.mktemp("topology")
    write_dataset("got10k", base / "got10k", 4, num_frames=20, image_size=(96, 72), seed=0, split="train")
    cfg = tiny_training_yaml(base / "tiny.yaml", base / "got10k", ckpt_every=1, batch_size=1, keep=1,
                             pipeline="python")
    procs = {}
    try:
        for n in WRITER_DEVICES:
            (base / f"dump{n}").mkdir()
            procs[n] = subprocess.Popen(_train_command(cfg, base / f"run{n}", STEPS, base / f"dump{n}"), cwd=REPO,
                                        env=_env(n), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        one_digests = _write_one_device_checkpoint(cfg, base / "run1", ONE_DEVICE_STEP)
        procs["resume"] = subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, str(cfg), str(base / "run1")],
                                           cwd=REPO, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                           text=True)
        outputs = {}
        for key, proc in procs.items():
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, f"{key}: " + out[-3000:] + err[-3000:]
            outputs[key] = (out, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    runs = {}
    for n in WRITER_DEVICES:
        out = outputs[n][0]
        # grm-train on n devices: the per-device batch (1) times n, every step run
        assert f"devices {n} (cpu)" in out and f"global batch {n}," in out, out[-3000:]
        assert re.search(rf"^step {STEPS}/{STEPS} ", out, re.M), out[-3000:]
        saved = pickle.loads((base / f"dump{n}" / f"saved_{STEPS}.pkl").read_bytes())
        runs[n] = (base / f"run{n}", saved, _done_digest(out))
    return {"runs": runs, "cfg": cfg, "base": base,
            "resume": (base / "run1", one_digests, *outputs["resume"])}


def _assert_trees_equal(got, expected):
    import jax

    got_flat = dict(jax.tree_util.tree_flatten_with_path(got)[0])
    expected_flat = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
    assert got_flat.keys() == expected_flat.keys()
    for key, value in expected_flat.items():
        assert np.asarray(got_flat[key]).dtype == value.dtype, key
        np.testing.assert_array_equal(got_flat[key], value, err_msg=str(key))


@pytest.mark.slow
@pytest.mark.parametrize("devices", WRITER_DEVICES)
def test_load_for_inference_on_one_device_gives_what_the_writer_saved(written, devices):
    import jax

    from grm_jax.checkpoints.digests import tree_digest
    from grm_jax.checkpoints.inference import load_for_inference

    assert jax.device_count() == 1
    workdir, saved, digest = written["runs"][devices]
    variables, info = load_for_inference(workdir, return_info=True)
    assert info["format"] == "training" and info["step"] == STEPS
    _assert_trees_equal(variables, saved)
    assert tree_digest(variables["params"]) == tree_digest(saved["params"]) == digest


@pytest.mark.slow
def test_checkpoint_digest_command_prints_the_writers_digest_and_nothing_else(written):
    procs = {n: subprocess.Popen([sys.executable, "-m", "grm_jax.cli.checkpoint_digest", str(workdir)], cwd=REPO,
                                 env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n, (workdir, _, _) in written["runs"].items()}
    for n, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        assert out.strip() == f"step {STEPS} params_sha256 {written['runs'][n][2]}"
        assert err == ""


@pytest.mark.slow
def test_tracking_on_one_device_gives_the_boxes_of_the_writers_variables(written, synthetic_benchmark, tmp_path):
    """grm-track --checkpoint <3-device workdir> in a 1-device process writes the boxes that tracking with the
    writer's own arrays gives here."""
    from grm_jax.config import load_config
    from grm_jax.evaluation.raw_results import read_result
    from grm_jax.specs import build_model
    from grm_jax.track import TrackerCore, TrackerSettings, track_sequences

    workdir, saved, _ = written["runs"][3]
    cfg_path = written["cfg"]
    root, seqs = synthetic_benchmark("got10k_val", num_sequences=2, num_frames=(5, 7), image_size=(96, 72), seed=5)
    proc = subprocess.Popen([sys.executable, "-m", "grm_jax.cli.track", "--config", str(cfg_path), "--checkpoint",
                             str(workdir), "--dataset", "got10k_val", "--dataset-root", str(root), "--workdir",
                             str(tmp_path / "results"), "--no-progress"], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:   # the reference meanwhile: the writer's arrays tracked here
        cfg = load_config(cfg_path)
        core = TrackerCore(build_model(cfg), saved, TrackerSettings.from_config(cfg, "got10k_val"))
        expected = {r.sequence.name: r.boxes for r in track_sequences(core, seqs, batch_size=1)}
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-2000:] + err[-3000:]
    _assert_quiet(err)
    assert any(not np.allclose(b[1:], b[0]) for b in expected.values())   # the tracker moves
    for s in seqs:
        got = read_result(tmp_path / "results" / "got10k" / f"{s.name}.txt")
        np.testing.assert_array_equal(got, expected[s.name].astype(int), err_msg=s.name)


@pytest.mark.slow
def test_export_and_flax_to_official_read_a_two_device_workdir(written, tmp_path, capsys):
    import json

    from grm_jax.cli import convert_checkpoint, export
    from grm_jax.convert import extract_state_dict, flax_to_official, read_torch_checkpoint

    workdir, saved, _ = written["runs"][2]
    out = tmp_path / "grm.jax"
    rc = export.main(["--config", str(written["cfg"]), "--checkpoint", str(workdir), "--format", "jax", "--out",
                      str(out), "--platforms", "cpu"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-3000:]
    summary = json.loads(captured.out.splitlines()[-1])
    assert out.is_file() and summary["verify"]["flipped_decisions"] == 0
    assert json.loads(Path(summary["sidecar"]).read_text())["checkpoint"]["step"] == STEPS

    pth = tmp_path / "grm.pth.tar"
    assert convert_checkpoint.main(["flax-to-official", "--input", str(workdir), "--output", str(pth)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["training_step"] == STEPS
    back = extract_state_dict(read_torch_checkpoint(pth))
    expected = flax_to_official(saved, {})
    assert back.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


@pytest.mark.slow
def test_a_workdir_and_a_converted_dir_in_a_bucket_read_on_one_device(written, monkeypatch, tmp_path,
                                                                         save_tiny_checkpoint, gs_in_memory):
    """The readers take a workdir or a converted directory as a URL: listed through tf.io.gfile (an in-memory
    gs:// bucket here: tests/conftest.py), arrays read by orbax from the location `checkpoint_location` gives
    (mapped to the local copy: TensorStore does not see the in-memory bucket)."""
    import uuid

    import tensorflow as tf

    import grm_jax.checkpoints.converted as converted_module
    import grm_jax.checkpoints.training as training_module
    import grm_jax.workdir as workdir_module
    from grm_jax.checkpoints.inference import load_for_inference

    local, saved, _ = written["runs"][2]
    converted = save_tiny_checkpoint(tmp_path / "converted", saved)
    bucket = f"gs://bucket-{uuid.uuid4().hex[:8]}"
    mapped = {f"{bucket}/run2": local, f"{bucket}/converted": converted}
    for url, source in mapped.items():
        for folder, _, files in os.walk(source):
            target = url + "/" + Path(folder).relative_to(source).as_posix()
            tf.io.gfile.makedirs(target)
            for name in files:
                tf.io.gfile.copy(os.path.join(folder, name), f"{target}/{name}")
    real = workdir_module.checkpoint_location

    def location(directory):
        for url, source in mapped.items():
            if str(directory).startswith(url + "/"):
                return source / str(directory).removeprefix(url + "/")
        return real(directory)
    for module in (workdir_module, training_module, converted_module):
        monkeypatch.setattr(module, "checkpoint_location", location)
    variables, info = load_for_inference(f"{bucket}/run2", return_info=True)
    assert info == {"format": "training", "source": f"{bucket}/run2", "step": STEPS}
    _assert_trees_equal(variables, saved)
    variables, info = load_for_inference(f"{bucket}/converted", return_info=True)
    assert info["format"] == "converted"
    _assert_trees_equal(variables, saved)


@pytest.mark.slow
def test_a_one_device_checkpoint_restores_for_training_on_two_devices(written):
    import json

    work, digests, out, err = written["resume"]
    restored = json.loads(out.strip().splitlines()[-1])
    assert restored["step"] == ONE_DEVICE_STEP
    assert restored["devices"] == [2]                          # every array of the state on both devices
    assert restored["digests"] == digests                      # params, batch_stats, opt_state, step, rng
    _assert_quiet(err)
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == [str(ONE_DEVICE_STEP)]


# ----------------------------------------------------------------------------------- unreadable vs damaged

def _tiny_states(rng):
    def state(step):
        return {"step": np.int32(step), "params": {"w": rng.standard_normal((8, 8), np.float32)},
                "batch_stats": {}, "opt_state": {"mu": np.zeros(3, np.float32)}, "rng": np.arange(2, dtype=np.uint32)}
    return state


def test_an_intact_step_that_does_not_fit_the_run_is_named_and_never_moved_aside(tmp_path):
    import jax

    from grm_jax.checkpoints.reading import CheckpointLoadError
    from grm_jax.checkpoints.training import TrainingCheckpoints

    state = _tiny_states(np.random.default_rng(0))
    ckpts = TrainingCheckpoints(tmp_path / "run")
    ckpts.save(5, state(5), {"step": 5})
    ckpts.close()
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=replicated), state(0))
    restored, step = TrainingCheckpoints(tmp_path / "run").restore(abstract)
    assert step == 5 and isinstance(restored["params"]["w"], jax.Array)
    assert restored["params"]["w"].sharding == replicated

    abstract["params"]["w"] = jax.ShapeDtypeStruct((8, 9), np.float32, sharding=replicated)   # another model
    with pytest.raises(CheckpointLoadError, match=r"checkpoints/5: the checkpoint is intact \(its arrays match "
                                                  r"their digests\) but does not restore onto this run's training "
                                                  r"state: .*; nothing was moved") as err:
        TrainingCheckpoints(tmp_path / "run", log=pytest.fail).restore(abstract)
    assert "damaged" not in str(err.value)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["5"]


def test_a_read_stopped_by_this_machine_names_the_cause_and_is_not_called_damaged(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    from grm_jax.checkpoints.reading import CheckpointLoadError
    from grm_jax.checkpoints.training import TrainingCheckpoints, load_training_variables

    state = _tiny_states(np.random.default_rng(1))
    ckpts = TrainingCheckpoints(tmp_path / "run")
    ckpts.save(3, state(3), {"step": 3})
    ckpts.close()

    def out_of_memory(*args, **kwargs):
        raise MemoryError("cannot allocate 1 GiB")
    monkeypatch.setattr(ocp.Checkpointer, "restore", out_of_memory)
    with pytest.raises(CheckpointLoadError, match=r"checkpoints/3: cannot read the training state on this machine: "
                                                  r"not enough memory \(MemoryError: cannot allocate 1 GiB\)") as err:
        load_training_variables(tmp_path / "run")
    assert "damaged" not in str(err.value)
    with pytest.raises(CheckpointLoadError, match=r"checkpoints/3: cannot restore the checkpoint on this machine: "
                                                  r"not enough memory .*; nothing was moved"):
        TrainingCheckpoints(tmp_path / "run", log=pytest.fail).restore(state(0))
    assert (tmp_path / "run" / "checkpoints" / "3").is_dir()


@pytest.mark.slow
def test_unreadable_bytes_of_a_multi_device_checkpoint_are_still_damaged(written, tmp_path):
    from grm_jax.checkpoints.inference import load_for_inference
    from grm_jax.checkpoints.reading import CheckpointLoadError

    work = tmp_path / "run"
    shutil.copytree(written["runs"][2][0], work)
    for f in (work / "checkpoints").rglob("d/*"):   # every data file cut short
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    damaged = rf"checkpoints/{STEPS}: (cannot read the training state \(.*\); the checkpoint is damaged|the digest of " \
              r"'params' differs from the one written with it \(a damaged checkpoint\))"
    with pytest.raises(CheckpointLoadError, match=damaged):
        load_for_inference(work)
    # in a user's terminal: that one line, without the tracebacks of orbax's reads left in flight
    res = subprocess.run([sys.executable, "-m", "grm_jax.cli.checkpoint_digest", str(work)], cwd=REPO, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and res.stdout == ""
    assert len(res.stderr.splitlines()) == 1 and re.match("error: .*" + damaged, res.stderr), res.stderr[-3000:]

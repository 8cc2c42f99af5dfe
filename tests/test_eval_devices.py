"""Evaluation on several devices and processes: grm-track's slots split over fake CPU devices (3, not a power of
two, with batches that do not divide over them), two processes on localhost (jax.distributed) sharing one results
folder, the tracker batch capped at the number of sequences, and SIGTERM keeping the finished sequences."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax.specs import build_model
from grm_jax.runtime import EXIT_STOPPED, stop_requested
from grm_jax.track import TrackerCore, TrackerSettings, track_sequences
from grm_jax.track.tracker import split_by_frames

REPO = Path(__file__).resolve().parents[1]
SUMMARY = "sequences have results in"


@pytest.fixture(scope="module")
def tiny_variables(tiny_cfg):
    model = build_model(tiny_cfg)
    z = jnp.zeros((1, tiny_cfg.DATA.TEMPLATE.SIZE, tiny_cfg.DATA.TEMPLATE.SIZE, 3))
    x = jnp.zeros((1, tiny_cfg.DATA.SEARCH.SIZE, tiny_cfg.DATA.SEARCH.SIZE, 3))
    variables = jax.jit(lambda k: model.init(k, z, x, train=False))(jax.random.PRNGKey(5))
    return jax.tree_util.tree_map(np.asarray, dict(variables))


@pytest.fixture(scope="module")
def benchmark(synthetic_benchmark):
    # 7 sequences of different lengths: slots are refilled mid-run
    root, seqs = synthetic_benchmark("got10k_val", num_sequences=7, num_frames=(4, 12), image_size=(160, 120),
                                     seed=23)
    return root, seqs


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_variables, save_tiny_checkpoint):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("evaldev") / "tiny", tiny_variables)


def _env(**extra):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    for key in ("XLA_FLAGS", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(key, None)
    env.update(extra)
    return env


def _track_args(checkpoint, root, workdir, *extra):
    return ["--config", "tiny_test", "--checkpoint", str(checkpoint), "--dataset", "got10k_val", "--dataset-root",
            str(root), "--workdir", str(workdir), "--no-progress", *extra]


def _boxes(workdir) -> dict:
    """{sequence: bytes of its box file}; the time files hold wall-clock times, so they are left out."""
    return {p.stem: p.read_bytes() for p in sorted((Path(workdir) / "got10k").glob("*.txt"))
            if not p.stem.endswith("_time")}


def test_tracker_batch_is_capped_at_the_number_of_sequences(tiny_cfg, tiny_variables, benchmark):
    _, seqs = benchmark
    core = TrackerCore(build_model(tiny_cfg), tiny_variables, TrackerSettings.from_config(tiny_cfg, "got10k_val"))
    shapes = []
    real_call = TrackerCore.__call__

    class Spy(TrackerCore):
        def __call__(self, template, template_mask, search_uint8, active=None):
            shapes.append(np.shape(search_uint8)[0])
            return real_call(self, template, template_mask, search_uint8, active)

    core.__class__ = Spy
    results = list(track_sequences(core, seqs[:3], batch_size=1000))
    assert len(results) == 3
    assert shapes and max(shapes) == 3


def test_more_devices_than_the_process_has_is_one_error_line(tmp_path, capsys, checkpoint, benchmark):
    from grm_jax.cli import track

    root, _ = benchmark
    n = jax.local_device_count()
    assert track.main(_track_args(checkpoint, root, tmp_path / "w", "--devices", str(n + 2))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --devices {n + 2}: this process has {n} local device(s) (cpu)"]
    assert not (tmp_path / "w").exists()   # refused before anything was written


# Runs grm-track several times in ONE process with 3 fake CPU devices (one start-up and one process for all).
_THREE_DEVICE_DRIVER = """
import json, sys
import jax
assert jax.local_device_count() == 3, jax.local_devices()
from grm_jax.cli import track
runs = json.loads(sys.argv[1])
sys.exit(max(track.main(argv) for argv in runs))
"""


@pytest.fixture(scope="module")
def three_device_runs(tmp_path_factory, checkpoint, benchmark):
    """Workdirs of grm-track on 3 devices with batches 4 and 5 (padded to 6 slots; 5 by default on all devices),
    on 1 device with batch 1, and in vectorized mode on 3 devices."""
    root, _ = benchmark
    base = tmp_path_factory.mktemp("three_devices")
    runs = {"d3_b4": ["--devices", "3", "--batch-size", "4"], "d3_b5": ["--batch-size", "5"],
            "d1_b1": ["--devices", "1", "--batch-size", "1"],
            "d3_b5_vectorized": ["--batch-size", "5", "--batch-mode", "vectorized"]}
    argvs = [_track_args(checkpoint, root, base / name, *extra) for name, extra in runs.items()]
    proc = subprocess.run([sys.executable, "-c", _THREE_DEVICE_DRIVER, json.dumps(argvs)], capture_output=True,
                          text=True, timeout=600, cwd=REPO,
                          env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=3"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {name: base / name for name in runs}, proc.stdout


@pytest.mark.slow
def test_exact_boxes_do_not_depend_on_devices_or_batch(three_device_runs, benchmark):
    workdirs, stdout = three_device_runs
    _, seqs = benchmark
    expected = {s.name for s in seqs if len(s.frames) > 1}
    reference = _boxes(workdirs["d1_b1"])
    assert set(reference) == expected
    for name, workdir in workdirs.items():
        if "vectorized" not in name:
            assert _boxes(workdir) == reference, name   # bit-identical files
    # vectorized: one batched forward per device, last-bit float differences; the written boxes are truncated to
    # whole pixels, so a difference can move a value across an integer
    vectorized = _boxes(workdirs["d3_b5_vectorized"])
    assert set(vectorized) == expected
    def rows(text):
        return np.loadtxt(text.decode().splitlines(), delimiter=",")

    for name, text in vectorized.items():
        np.testing.assert_allclose(rows(text), rows(reference[name]), atol=1, err_msg=name)
    records = {name: json.loads((w / "track_config.json").read_text()) for name, w in workdirs.items()}
    assert records["d3_b5"]["devices"] == 3 and records["d3_b5"]["batch_size"] == 5   # all devices by default
    assert records["d1_b1"]["devices"] == 1
    # the boxes move, so equal files are not a tracker stuck on the init box
    first_lines = {n: b.splitlines()[0] for n, b in reference.items()}
    assert any(any(line != first_lines[n] for line in b.splitlines()[1:]) for n, b in reference.items())
    assert stdout.count(SUMMARY) == len(workdirs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_share_a_results_folder(tmp_path, three_device_runs, checkpoint, benchmark):
    """2 processes x 1 device (jax.distributed on localhost) finish a folder that one process started: the files
    equal the one-process run, finished sequences are skipped, the summary is printed once."""
    workdirs, _ = three_device_runs
    root, seqs = benchmark
    work = tmp_path / "shared"
    shutil.copytree(workdirs["d1_b1"], work)
    reference = _boxes(work)
    kept = sorted(reference)[:2]
    for name in sorted(reference)[2:]:
        (work / "got10k" / f"{name}.txt").unlink()
    kept_mtimes = {n: (work / "got10k" / f"{n}.txt").stat().st_mtime_ns for n in kept}
    port = _free_port()
    cmd = [sys.executable, "-m", "grm_jax.cli.track", *_track_args(checkpoint, root, work, "--batch-size", "2")]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                              env=_env(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                                       JAX_PROCESS_ID=str(i)))
             for i in range(2)]
    outputs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=400)
            outputs.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for code, out, err in outputs:
        assert code == 0, out + err
    assert _boxes(work) == reference
    assert all((work / "got10k" / f"{n}.txt").stat().st_mtime_ns == t for n, t in kept_mtimes.items())
    stdout = [out for _, out, _ in outputs]
    assert sum(out.count(SUMMARY) for out in stdout) == 1 and SUMMARY in stdout[0]
    # each process tracked a share, together every sequence that was left
    left = [s for s in seqs if s.name not in kept]
    shares = [int(out.split(" of them")[0].rsplit(" ", 1)[-1]) for out in stdout]
    assert sum(shares) == len(left) and min(shares) > 0
    record = json.loads((work / "track_config.json").read_text())
    assert record["processes"] == 2 and "earlier_settings" in record


_SLOW_FRAMES_DRIVER = """
import sys, time
import grm_jax.sequence as sequence
read = sequence.read_frame
sequence.read_frame = lambda path: (time.sleep(0.1), read(path))[1]   # slow enough to be stopped mid-run
from grm_jax.cli import track
sys.exit(track.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigterm_keeps_finished_sequences_and_a_rerun_completes(tmp_path, three_device_runs, checkpoint,
                                                                benchmark):
    from grm_jax.cli import track

    workdirs, _ = three_device_runs
    root, _ = benchmark
    work = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_FRAMES_DRIVER,
                             *_track_args(checkpoint, root, work, "--batch-size", "1")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=_env())
    try:
        deadline = time.monotonic() + 300
        while not list((work / "got10k").glob("*[!e].txt")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_STOPPED, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1 and "stopped by SIGTERM" in lines[0], err
    assert "rerun the same command" in lines[0]
    reference = _boxes(workdirs["d1_b1"])
    finished = _boxes(work)
    assert 0 < len(finished) < len(reference)
    assert all(finished[n] == reference[n] for n in finished)
    assert not list(work.rglob("*.part"))
    # batch 3 on one device: the program the batch-cap test compiled in this process
    assert track.main(_track_args(checkpoint, root, work, "--batch-size", "3")) == 0
    assert _boxes(work) == reference


def test_split_by_frames_is_disjoint_balanced_and_deterministic():
    class Seq:
        def __init__(self, name, n):
            self.name, self.frames = name, [None] * n

    seqs = [Seq(f"s{i}", n) for i, n in enumerate([5, 40, 7, 7, 22, 1, 13, 30])]
    for parts in (1, 2, 3, 5):
        shares = split_by_frames(seqs, parts)
        assert len(shares) == parts
        names = [s.name for share in shares for s in share]
        assert sorted(names) == sorted(s.name for s in seqs)          # every sequence exactly once
        for share in shares:                                           # the given order within a share
            assert [seqs.index(s) for s in share] == sorted(seqs.index(s) for s in share)
        totals = [sum(len(s.frames) for s in share) for share in shares]
        # greedy longest-first: no share exceeds the lightest by more than the longest sequence
        assert max(totals) - min(totals) <= 40
        assert [[s.name for s in share] for share in split_by_frames(seqs, parts)] == \
            [[s.name for s in share] for share in shares]
    # by hand, longest first onto the lighter share: 40 | 30, 22 -> 1 (52), 13 -> 0 (53), 7 -> 1 (59),
    # 7 -> 0 (60), 5 -> 1 (64), 1 -> 0 (61)
    assert [[s.name for s in share] for share in split_by_frames(seqs, 2)] == \
        [["s1", "s3", "s5", "s6"], ["s0", "s2", "s4", "s7"]]


def test_stop_requested_records_the_signal_and_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with stop_requested(agree_through_jax=False) as stop:
        assert not stop
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)   # the handler runs between bytecodes of the main thread
        assert stop and stop.signal == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before

"""Training across processes on localhost (jax.distributed, CPU collectives) and the trainer's stop paths: two
processes with one device each train to the parameters of one process with two devices, stop and resume to them;
a peer killed with SIGKILL ends the survivor promptly with one error naming it; SIGTERM / SIGINT stop every process
at the same step after saving it, and the rerun ends with the uninterrupted run's parameters; a coordinator that
never answers is one error within the configured time."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from grm_jax.checkpoints.training import load_training_variables
from grm_jax.train.loop import params_digest

REPO = Path(__file__).resolve().parents[1]
STEPS = 12
CKPT_EVERY = 4
# each step waits this long for its batch (the batches themselves are unchanged), so a signal sent after step 2
# lands mid-run on any machine
STEP_DELAY_S = 0.4


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_training_yaml):
    from data_pipeline.synthetic import write_dataset

    base = tmp_path_factory.mktemp("multiprocess_train")
    write_dataset("got10k", base / "got10k", 4, num_frames=20, image_size=(96, 72), seed=0, split="train")
    cfg = tiny_training_yaml(base / "tiny.yaml", base / "got10k", ckpt_every=CKPT_EVERY, batch_size=2, keep="null",
                             pipeline="python")
    # the reference run checkpoints every step (a resume-neutral key: same training), so a stop at any step can be
    # compared with it
    tiny_training_yaml(base / "ref.yaml", base / "got10k", ckpt_every=1, batch_size=2, keep="null",
                       pipeline="python")
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
               JAX_COMPILATION_CACHE_DIR=str(base / "jax_cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", PYTHONPATH=str(REPO))
    for name in ("XLA_FLAGS", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(name, None)
    return base, cfg, env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Run:
    """`grm-train` as a user starts it (`__main__`): one process with `devices` devices, or `processes` processes
    with one device each joined through jax.distributed on a free localhost port. Output goes to files."""

    def __init__(self, cfg, workdir: Path, env, *, processes: int = 1, devices: int = 1, steps: int = STEPS,
                 slow: bool = False, extra_env: dict | None = None):
        argv = ["train.py", "--config", str(cfg), "--workdir", str(workdir), "--max-steps", str(steps),
                "--no-progress"]
        prelude = ""
        if slow:
            prelude = f"""
                import time, data_pipeline.pipeline as pipeline
                make = pipeline.make_train_iterator
                class Slow:
                    def __init__(self, it): self.it = it
                    def __iter__(self): return self
                    def __next__(self):
                        time.sleep({STEP_DELAY_S})
                        return next(self.it)
                    def close(self): self.it.close()
                pipeline.make_train_iterator = lambda *a, **k: Slow(make(*a, **k))
            """
        script = textwrap.dedent(prelude) + textwrap.dedent(f"""
            import runpy, sys
            sys.argv = {argv!r}
            runpy.run_module("grm_jax.cli.train", run_name="__main__", alter_sys=True)
        """)
        port = _free_port()
        self.logs = []
        self.procs = []
        workdir.parent.mkdir(parents=True, exist_ok=True)
        for i in range(processes):
            penv = dict(env, **(extra_env or {}))
            if processes > 1:
                penv.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(processes),
                            JAX_PROCESS_ID=str(i))
            elif devices > 1:
                penv["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
            out = open(workdir.parent / f"{workdir.name}.p{i}.{len(list(workdir.parent.glob('*.p*.out')))}.out", "w+")
            self.logs.append(out)
            self.procs.append(subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=penv, stdout=out,
                                               stderr=subprocess.STDOUT, text=True))

    def output(self, i: int = 0) -> str:
        return Path(self.logs[i].name).read_text()

    def wait_for_step(self, step: int, timeout: float = 240) -> None:
        """Until process 0 has logged `step` (every step is logged)."""
        deadline = time.monotonic() + timeout
        while not re.search(rf"^step {step}/", self.output(0), re.M):
            if any(p.poll() is not None for p in self.procs) or time.monotonic() > deadline:
                self.kill()   # no trainer left running after the failure
                raise AssertionError(f"step {step} not reached:\n" + self.output(0)[-3000:])
            time.sleep(0.05)

    def wait(self, timeout: float = 300) -> list[int]:
        codes = []
        for p in self.procs:
            try:
                codes.append(p.wait(timeout=timeout))
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError("training did not end in time:\n" + "\n".join(
                    self.output(i)[-3000:] for i in range(len(self.procs))))
        return codes

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _digest(workdir, step):
    """What `grm-checkpoint-digest --step` prints for a checkpoint, as (step, params sha256): its two calls, run in
    this process (the command itself, and reads on another device count: tests/test_checkpoint_topology.py)."""
    variables, step = load_training_variables(workdir, step)
    return step, params_digest(variables["params"])


def _final_digest(output: str):
    """(step, params sha256) of the run's last line: the digest `grm-checkpoint-digest` prints for its last step
    (one function computes both: grm_jax.train.loop.params_digest)."""
    m = re.search(r"^done: step (\d+) params sha256 ([0-9a-f]{64})$", output, re.M)
    assert m, output[-3000:]
    return int(m.group(1)), m.group(2)


def _steps(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def _error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("error:")]


@pytest.fixture(scope="module")
def reference(setup):
    """One process with two devices, uninterrupted: its last line's digest, and the workdir (a checkpoint of every
    step)."""
    base, cfg, env = setup
    work = base / "ref_1x2"
    run = Run(cfg.with_name("ref.yaml"), work, env, devices=2)
    assert run.wait() == [0], run.output()[-3000:]
    assert _steps(work) == list(range(1, STEPS + 1))
    return {"final": _final_digest(run.output()), "workdir": work}


def _copy_workdir(src: Path, dst: Path, steps: list[int] | None = None) -> Path:
    """A copy of a training workdir holding only checkpoints `steps` (all by default)."""
    shutil.copytree(src, dst, ignore=lambda d, names: [n for n in names if steps is not None and
                                                       Path(d).name == "checkpoints" and n.isdigit() and
                                                       int(n) not in steps])
    return dst


def _assert_quiet(output: str) -> None:
    """No traceback, no library chatter (jax.distributed INFO lines, gloo, C++ log lines)."""
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-3000:]
    assert "[Gloo]" not in output and "jax._src.distributed" not in output, output[-3000:]
    assert not re.search(r"^[IWEF]\d{4} ", output, re.M), output[-3000:]


STOP_LINE = (r"^stopped by {signal} at step (\d+); checkpoint \1 written; rerun the same command to resume "
             r"\(params sha256 ([0-9a-f]{{64}})\)$")
# signal to exit on a loaded 2-core machine: at most about 1 s for JAX's SIGTERM listener (it polls each second)
# and the agreement on a step (a barrier through the coordinator), two more steps, the checkpoint write, the exit
STOP_BOUND_S = 120
# the survivor of a peer killed mid-run exits when its next collective fails (gloo reports the closed connection
# at once; every step has one): about one step
PEER_LOST_BOUND_S = 30


def _signalled_run(cfg, work, env, *, after_step: int, send, processes=1, devices=1):
    """A slowed run of `work`; once process 0 logged `after_step`, `send(run)`; -> (run, exit codes, seconds
    from the signal to the end of every process)."""
    run = Run(cfg, work, env, processes=processes, devices=devices, slow=True)
    run.wait_for_step(after_step)
    sent = time.monotonic()
    send(run)
    codes = run.wait()
    return run, codes, time.monotonic() - sent


def _stop_step(output: str, signal_name: str, *, digest: bool = False):
    """The step of the run's stop line (with `digest`: (step, params sha256), as `grm-checkpoint-digest` prints)."""
    m = re.search(STOP_LINE.format(signal=signal_name), output, re.M)
    assert m, output[-3000:]
    return (int(m.group(1)), m.group(2)) if digest else int(m.group(1))


# -------------------------------------------------------------------- two processes: one chain of reruns
# SIGTERM to process 1 -> rerun, process 1 SIGKILLed -> rerun to the end

@pytest.fixture(scope="module")
def two_process_sigterm(setup):
    base, cfg, env = setup
    work = base / "mp"
    run, codes, elapsed = _signalled_run(cfg, work, env, processes=2, after_step=CKPT_EVERY + 1,
                                         send=lambda r: r.procs[1].send_signal(signal.SIGTERM))
    return work, run, codes, elapsed


@pytest.fixture(scope="module")
def two_process_peer_killed(setup, two_process_sigterm):
    base, cfg, env = setup
    work, stopped = two_process_sigterm[0], _stop_step(two_process_sigterm[1].output(0), "SIGTERM")
    run = Run(cfg, work, env, processes=2, slow=True)
    run.wait_for_step(stopped + 1)
    sent = time.monotonic()
    run.procs[1].kill()
    code = run.procs[0].wait(timeout=300)
    elapsed = time.monotonic() - sent
    run.wait()
    return work, run, code, elapsed, stopped


@pytest.mark.slow
def test_two_processes_train_to_the_two_device_digest(setup, reference, two_process_sigterm):
    """Two processes with one device each, stopped at a step (the SIGTERM below), hold the parameters one process
    with two devices had at that step."""
    base, cfg, env = setup
    run = two_process_sigterm[1]
    assert "processes 2" in run.output(0)
    stopped, digest = _stop_step(run.output(0), "SIGTERM", digest=True)
    assert (stopped, digest) == _digest(reference["workdir"], stopped)


@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_stops_both_at_one_step_after_saving_it(two_process_sigterm):
    work, run, codes, elapsed = two_process_sigterm
    out0, out1 = run.output(0), run.output(1)
    assert codes == [75, 75], out0[-3000:] + out1[-3000:]
    print(f"\nSIGTERM to one of two processes -> both exited in {elapsed:.1f} s")
    assert elapsed < STOP_BOUND_S
    stopped = _stop_step(out0, "SIGTERM")
    assert CKPT_EVERY + 1 < stopped < STEPS
    # both stopped there: it is the last checkpoint, complete, nothing unfinished (a process that went on would
    # have waited for the other at its next collective and failed, not exited 75)
    assert _steps(work)[-1] == stopped
    assert not list((work / "checkpoints").glob("*.orbax-checkpoint-tmp*"))
    _assert_quiet(out0 + out1)


@pytest.mark.slow
def test_a_peer_killed_mid_run_ends_the_survivor_promptly_with_one_error_naming_it(two_process_peer_killed):
    work, run, code, elapsed, stopped = two_process_peer_killed
    out0 = run.output(0)
    assert f"(step {stopped})" in out0                       # resumed from the SIGTERM stop
    print(f"\npeer SIGKILLed -> survivor exited in {elapsed:.1f} s")
    assert code == 4, out0[-3000:]
    assert elapsed < PEER_LOST_BOUND_S
    errors = _error_lines(out0)
    assert len(errors) == 1, out0[-3000:]
    assert re.match(r"error: process 0 of 2: lost process 1 \(its connection at 127\.0\.0\.1:\d+\) after step \d+",
                    errors[0]), errors
    assert f"resume from checkpoint {_steps(work)[-1]}" in errors[0]
    _assert_quiet(out0)


@pytest.mark.slow
def test_two_process_reruns_after_stops_and_a_lost_peer_end_at_the_uninterrupted_digest(setup, reference,
                                                                                       two_process_peer_killed):
    base, cfg, env = setup
    work = two_process_peer_killed[0]
    newest = _steps(work)[-1]
    run = Run(cfg, work, env, processes=2)
    assert run.wait() == [0, 0], run.output(0)[-3000:] + run.output(1)[-3000:]
    out = run.output(0)
    assert f"(step {newest})" in out                         # resumed from the newest checkpoint
    if "removed" in out:                                    # a write the kill interrupted: cleaned, one line
        assert re.search(r"^removed 1 unfinished checkpoint write", out, re.M), out[-3000:]
    assert _final_digest(out) == reference["final"]


# -------------------------------------------------------------------- one process: SIGTERM
# (SIGINT goes through the same handler: `runtime.stop_requested`; Ctrl-C outside a step: test_validation)

@pytest.mark.slow
def test_sigterm_in_one_process_saves_the_step_and_the_rerun_ends_at_the_uninterrupted_digest(setup, reference):
    base, cfg, env = setup
    work = _copy_workdir(reference["workdir"], base / "one", steps=[])
    stops = []
    for sig in (signal.SIGTERM,):
        after = 2
        run, codes, elapsed = _signalled_run(cfg, work, env, devices=2, after_step=after,
                                             send=lambda r: r.procs[0].send_signal(sig))
        out = run.output()
        assert codes == [75], out[-3000:]
        print(f"\n{sig.name} to one process -> exited in {elapsed:.1f} s")
        assert elapsed < STOP_BOUND_S
        stops.append(_stop_step(out, sig.name))
        assert after <= stops[-1] < STEPS and _steps(work)[-1] == stops[-1]
        _assert_quiet(out)
    rerun = Run(cfg, work, env, devices=2)
    assert rerun.wait() == [0], rerun.output()[-3000:]
    assert f"(step {stops[-1]})" in rerun.output()
    assert _final_digest(rerun.output()) == reference["final"]


def test_an_unfinished_checkpoint_write_is_removed_and_reported_on_the_next_start(tmp_path):
    from grm_jax.checkpoints.training import TrainingCheckpoints

    ckpt = tmp_path / "checkpoints"
    unfinished = ckpt / "6.orbax-checkpoint-tmp-1733450000123456"
    (unfinished / "state").mkdir(parents=True)
    (unfinished / "state" / "partial").write_bytes(b"\0" * 100)
    (ckpt / "4" / "state").mkdir(parents=True)          # a finished step stays
    lines = []
    checkpoints = TrainingCheckpoints(tmp_path, log=lines.append)
    try:
        assert not unfinished.exists() and (ckpt / "4").is_dir()
        assert len(lines) == 1 and str(unfinished) in lines[0] and "unfinished checkpoint write" in lines[0], lines
    finally:
        checkpoints.close()


def test_distributed_timeouts_are_read_from_the_environment_and_checked():
    from grm_jax.config import ConfigError
    from grm_jax.runtime import DISTRIBUTED_TIMEOUTS, distributed_timeouts

    assert distributed_timeouts({}) == DISTRIBUTED_TIMEOUTS
    assert distributed_timeouts({"GRM_JAX_HEARTBEAT_TIMEOUT_S": "7"})["GRM_JAX_HEARTBEAT_TIMEOUT_S"] == 7
    for bad in ("0", "-3", "1.5", "ten"):
        with pytest.raises(ConfigError, match=f"GRM_JAX_INIT_TIMEOUT_S='{re.escape(bad)}'"):
            distributed_timeouts({"GRM_JAX_INIT_TIMEOUT_S": bad})


@pytest.mark.slow
def test_a_coordinator_that_never_answers_is_one_error_naming_it_within_the_deadline(setup):
    base, cfg, env = setup
    port = _free_port()          # nothing listens there
    deadline = 3
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "grm_jax.cli.train", "--config", str(cfg), "--workdir",
                          str(base / "no_coordinator"), "--max-steps", "2", "--no-progress"], cwd=REPO,
                         env=dict(env, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                                  JAX_PROCESS_ID="1", GRM_JAX_INIT_TIMEOUT_S=str(deadline)),
                         capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - started
    assert res.returncode == 2, res.stderr[-3000:]
    errors = _error_lines(res.stderr)
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0] and f"within {deadline} s" in errors[0], \
        res.stderr[-3000:]
    _assert_quiet(res.stdout + res.stderr)
    print(f"unanswered coordinator -> exit 2 after {elapsed:.1f} s (deadline {deadline} s + start-up)")
    assert elapsed < deadline + 60          # start-up (imports) on a loaded machine, then the deadline
    assert not (base / "no_coordinator").exists()

"""grm-train (grm_jax/cli/train.py) end to end on a generated synthetic dataset (subprocesses, tiny model):
the loss goes down, a run SIGKILLed while writing a checkpoint keeps the previous one usable and, restarted,
ends bit-identical to an uninterrupted run; a non-finite loss stops the run naming the step and the parts."""
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from grm_jax.checkpoints.training import load_training_variables
from grm_jax.train.loop import params_digest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
STEPS = 40
CKPT_EVERY = 10
KILL_AT = 30


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_training_yaml):
    from data_pipeline.synthetic import write_dataset

    base = tmp_path_factory.mktemp("train_loop")
    write_dataset("got10k", base / "got10k", 6, num_frames=20, image_size=(160, 120), seed=0, split="train")
    cfg = tiny_training_yaml(base / "tiny.yaml", base / "got10k", ckpt_every=CKPT_EVERY, batch_size=8)
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
               # the runs share compiled programs through JAX's persistent cache
               JAX_COMPILATION_CACHE_DIR=str(base / "jax_cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    env.pop("XLA_FLAGS", None)
    return base, cfg, env


def _train(cfg, workdir, env, steps=STEPS, kill_during_save=None):
    """grm-train as a user runs it; with `kill_during_save=N` the process SIGKILLs itself right after the
    asynchronous write of checkpoint N started (the loop's `on_checkpoint_save` callback)."""
    argv = ["train.py", "--config", str(cfg), "--workdir", str(workdir), "--max-steps", str(steps), "--no-progress"]
    script = textwrap.dedent(f"""
        import functools, os, runpy, signal, sys
        import grm_jax.train.loop as loop
        def kill_at(step):
            if step == {kill_during_save!r}:
                print(f"[fault injection] SIGKILL while writing checkpoint {{step}}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        loop.train = functools.partial(loop.train, on_checkpoint_save=kill_at)
        sys.argv = {argv!r}
        runpy.run_module("grm_jax.cli.train", run_name="__main__", alter_sys=True)
    """)
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


def _digest(workdir):
    """(step, params sha256) of the latest checkpoint: what `grm-checkpoint-digest` prints (its two calls, run in
    this process; the command itself: tests/test_checkpoint_topology.py)."""
    variables, step = load_training_variables(workdir)
    return step, params_digest(variables["params"])


def _losses(stdout):
    return {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"^step (\d+)/\d+ total (\S+)", stdout, re.M)}


@pytest.fixture(scope="module")
def uninterrupted(setup):
    base, cfg, env = setup
    work = base / "run_a"
    res = _train(cfg, work, env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return work, res


def test_tiny_training_lowers_the_loss(uninterrupted):
    _, res = uninterrupted
    losses = _losses(res.stdout)
    assert sorted(losses) == list(range(1, STEPS + 1))
    first = np.mean([losses[s] for s in range(1, 9)])
    last = np.mean([losses[s] for s in range(STEPS - 7, STEPS + 1)])
    assert last < 0.8 * first, (first, last)


def test_kill_during_checkpoint_write_then_resume_is_bit_identical(setup, uninterrupted):
    base, cfg, env = setup
    work_a, res_a = uninterrupted
    step_a, digest_a = _digest(work_a)
    assert step_a == STEPS
    assert re.search(rf"params sha256 {digest_a}", res_a.stdout)

    work = base / "run_b"
    killed = _train(cfg, work, env, kill_during_save=KILL_AT)
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    assert f"step {KILL_AT}/{STEPS}" in killed.stdout
    # the interrupted write is not a checkpoint; the previous one restores
    step_prev, _ = _digest(work)
    assert step_prev == KILL_AT - CKPT_EVERY
    # the same run restarted picks up from there and ends where the uninterrupted run ended
    resumed = _train(cfg, work, env)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"(step {KILL_AT - CKPT_EVERY})" in resumed.stdout
    assert _losses(resumed.stdout)[STEPS] == _losses(res_a.stdout)[STEPS]
    step_b, digest_b = _digest(work)
    assert (step_b, digest_b) == (STEPS, digest_a)
    print(f"uninterrupted: step {step_a} {digest_a}; killed at {KILL_AT} + resumed: step {step_b} {digest_b}")


def test_non_finite_loss_stops_naming_step_and_parts(setup, uninterrupted):
    base, cfg, env = setup
    work = base / "run_nan"
    # Same program as the runs above (compile cache hit); the batch of step 3 carries a NaN in a level table.
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from grm_jax.cli import train as T
        from grm_jax.config import load_config
        from grm_jax.train.loop import NonFiniteLossError, train
        cfg = load_config({str(cfg)!r}, ["TRAIN.CKPT_EVERY_STEPS=2"])
        make = T.batch_factory(cfg, T.build_datasets(cfg))
        def poisoned(start, bs, pi, pc):
            for i, b in enumerate(make(start, bs, pi, pc), start=start):
                if i == 2:
                    b = dict(b); b["search_lut"] = b["search_lut"].copy(); b["search_lut"][0] = np.nan
                yield b
        try:
            train(cfg, {str(work)!r}, poisoned, max_steps=6, progress=False)
        except NonFiniteLossError as err:
            print("STOPPED:", err)
    """)
    res = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("STOPPED:")), None)
    assert line is not None, res.stdout[-2000:]
    assert "step 3" in line and "total=nan" in line and "focal=" in line and "giou=" in line
    assert "last good checkpoint is step 2" in line
    step, _ = _digest(work)
    assert step == 2
    variables, _ = load_training_variables(work)
    assert all(np.all(np.isfinite(v)) for v in __import__("jax").tree_util.tree_leaves(variables))


def test_corrupt_frames_are_skipped_and_reported_by_the_loop(setup, uninterrupted, tiny_training_yaml):
    import shutil

    base, cfg, env = setup
    root = base / "got10k_corrupt"
    shutil.copytree(base / "got10k", root, ignore=shutil.ignore_patterns(".grm_jax_index"))
    broken = sorted((root / "train").glob("GOT-10k_Train_*"))[0]
    frames = sorted(broken.glob("*.jpg"))
    assert frames
    for f in frames:  # every frame of one of the 6 sequences loses its end: ~1 draw in 6 hits it
        f.write_bytes(f.read_bytes()[:200])
    corrupt_cfg = tiny_training_yaml(base / "tiny_corrupt.yaml", root, ckpt_every=CKPT_EVERY, batch_size=8)
    res = _train(corrupt_cfg, base / "run_corrupt", env, steps=4)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    counts = [tuple(map(int, m.groups())) for m in
              re.finditer(r"skipped: (\d+) bad frames, (\d+) redraws", res.stdout)]
    assert counts, res.stdout[-2000:]
    bad, redraws = counts[-1]
    assert bad > 0 and redraws >= bad                       # each bad frame caused a redraw
    assert [c[0] for c in counts] == sorted(c[0] for c in counts)   # running totals
    assert broken.name in res.stderr                        # the pipeline names a corrupt file

"""Training loop: init (random or MAE/DeiT), sharded steps, logging, orbax checkpoints, exact resume.

The loop does not know where batches come from (grm_jax never imports data_pipeline): the caller passes
`make_batches(start_step, host_batch_size, process_index, process_count)` returning an iterator of host-local
numpy batches whose k-th element is the batch of optimiser step start_step + k. Because that stream and the
step's PRNG key are pure functions of the step, the checkpointed state (params, batch_stats, opt_state, step,
base PRNG key) is all a restart needs: a resumed run ends bit-identical to an uninterrupted one.

Batch size: TRAIN.BATCH_SIZE is per device, as in the official (per-GPU) configs; the global batch is
BATCH_SIZE x number of devices, each process feeds BATCH_SIZE x its local device count.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import jax
import numpy as np

import yaml

from ..checkpoint import CHECKPOINT_DIR, TrainingCheckpoints, tree_digest
from ..config import DATA_ACCESS_KEYS, Config, ConfigError, config_changes
from ..convert.pretrained import init_from_pretrained, random_variables, resolve_pretrained
from ..runtime import stop_requested
from ..workdir import Workdir, WorkdirLock, checkpoint_location, workdir_path, write_text_atomic
from .losses import loss_weights
from .metrics import MetricWriter
from .optim import drop_path_rates, learning_rates, make_optimizer, steps_per_epoch
from .step import create_train_state, global_batch, make_key, make_mesh, make_train_step

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
# Keys that may differ on resume without changing the training math: logging / checkpoint cadence, workers, where
# and how the data is read (same batches), tracking settings. A change is recorded in config.yaml (and printed);
# any other change is refused.
RESUME_NEUTRAL_KEYS = ("TRAIN.LOG_EVERY_STEPS", "TRAIN.CKPT_EVERY_STEPS", "TRAIN.KEEP_CHECKPOINTS",
                       "TRAIN.NUM_WORKER", *DATA_ACCESS_KEYS, "TEST.")

BatchFactory = Callable[[int, int, int, int], Iterator[dict]]


class NonFiniteLossError(RuntimeError):
    """The loss (or the gradient norm) of a step is NaN/inf; the state was not updated."""


class InputPipelineError(RuntimeError):
    """The batch iterator failed (the message says which sample / file); the run stops, checkpoints are kept."""


class PeerLostError(RuntimeError):
    """Another process of a multi-process run died (its collective failed); every process must be rerun."""


@dataclass
class TrainResult:
    step: int
    digest: str
    history: list = field(default_factory=list)
    workdir: Optional[Workdir] = None
    # 'SIGTERM' / 'SIGINT' when a stop signal ended the run early (checkpoint `step` written); None when done
    stopped_by: Optional[str] = None


# ----------------------------------------------------------------------------------------------- helpers

# jax.distributed deadlines (seconds), from the environment because initialize() runs before the config is read.
# Defaults are JAX's own, sized for clusters (slow schedulers, hosts that start minutes apart).
DISTRIBUTED_TIMEOUTS = {
    # how long initialize() waits for the coordinator (process 0) to answer and for every process to join
    "GRM_JAX_INIT_TIMEOUT_S": 300,
    # a process whose heartbeats stop this long is declared dead, and every other process is stopped
    "GRM_JAX_HEARTBEAT_TIMEOUT_S": 100,
    # how long a finishing process waits for the others at the final shutdown barrier
    "GRM_JAX_SHUTDOWN_TIMEOUT_S": 300,
}
# JAX's own connect timeout is left this much longer than ours, so our one-line error comes first (when JAX's
# fires, its client aborts the process with a C++ stack trace)
_INIT_GRACE_S = 30


def distributed_timeouts(environ=None) -> dict:
    """{env name: seconds} of DISTRIBUTED_TIMEOUTS, read from `environ`; a value that is not a whole number of
    seconds >= 1 is a ConfigError naming the variable."""
    environ = os.environ if environ is None else environ
    values = {}
    for name, default in DISTRIBUTED_TIMEOUTS.items():
        text = environ.get(name, "").strip()
        if not text:
            values[name] = default
            continue
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise ConfigError(f"{name}={text!r}: must be a whole number of seconds >= 1 (default {default})")
        values[name] = value
    return values


def _int_env(name: str, minimum: int) -> int:
    text = os.environ[name].strip()
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ConfigError(f"{name}={text!r}: must be a whole number >= {minimum}")
    return value


def maybe_initialize_distributed() -> bool:
    """jax.distributed.initialize() for multi-host runs.

    Triggered by JAX_COORDINATOR_ADDRESS (+ JAX_NUM_PROCESSES, JAX_PROCESS_ID) or GRM_JAX_DISTRIBUTED=1 (let
    JAX detect SLURM / Open MPI / cloud TPU settings). Single-process runs skip it. Deadlines: DISTRIBUTED_TIMEOUTS
    (environment). A coordinator that does not answer within GRM_JAX_INIT_TIMEOUT_S (or processes that do not
    all join) ends the process with one `error:` line naming the address and exit status 2; bad values of these
    variables are a ConfigError.
    """
    addr = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not addr and os.environ.get("GRM_JAX_DISTRIBUTED", "") not in ("1", "true", "yes"):
        return False
    timeouts = distributed_timeouts()
    kwargs = {}
    if addr:
        kwargs["coordinator_address"] = addr
        if os.environ.get("JAX_NUM_PROCESSES"):
            kwargs["num_processes"] = _int_env("JAX_NUM_PROCESSES", 1)
        if os.environ.get("JAX_PROCESS_ID"):
            kwargs["process_id"] = _int_env("JAX_PROCESS_ID", 0)
    init_timeout = timeouts["GRM_JAX_INIT_TIMEOUT_S"]
    who = (f"process {kwargs['process_id']} of {kwargs.get('num_processes', '?')}" if "process_id" in kwargs
           else "this process")
    where = f"JAX_COORDINATOR_ADDRESS={addr}" if addr else "the coordinator found by JAX's cluster detection"
    _deadline(init_timeout, f"jax.distributed: no connection to the coordinator at {where} within {init_timeout} s "
              f"({who}): either nothing answers at that address (check it, and that process 0 runs) or not "
              f"every process joined in time (GRM_JAX_INIT_TIMEOUT_S sets the wait)")
    try:
        jax.distributed.initialize(**kwargs, initialization_timeout=init_timeout + _INIT_GRACE_S,
                                   heartbeat_timeout_seconds=timeouts["GRM_JAX_HEARTBEAT_TIMEOUT_S"],
                                   shutdown_timeout_seconds=timeouts["GRM_JAX_SHUTDOWN_TIMEOUT_S"])
    finally:
        _deadline(None, "")
    if jax.process_count() > 1:
        _connect_collectives()
    return True


def _connect_collectives() -> None:
    """Open the CPU collectives' connections between the processes now, with stdout silenced: gloo announces
    each connection on stdout ("[Gloo] Rank 0 is connected to 1 peer ranks ..."), which is noise in a user's
    terminal. The training step's collectives reuse these connections (same devices)."""
    from jax.experimental import multihost_utils

    if jax.devices()[0].platform != "cpu":
        return
    sys.stdout.flush()
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    try:
        multihost_utils.sync_global_devices("grm_jax: collectives connected")
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


_DEADLINE = {"timer": None}


def _deadline(seconds: Optional[float], message: str) -> None:
    """Start (seconds) or cancel (None) a timer that prints `error: message` and ends the process with status 2.
    jax.distributed.initialize() blocks in C++ with the GIL released, so a timer thread can end a wait that
    would otherwise end in an abort with a stack trace."""
    import threading

    timer = _DEADLINE["timer"]
    if timer is not None:
        timer.cancel()
        _DEADLINE["timer"] = None
    if seconds is None:
        return

    def expire():
        print(f"error: {message}", file=sys.stderr, flush=True)
        os._exit(2)
    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    _DEADLINE["timer"] = timer


def params_digest(params) -> str:
    """sha256 over every parameter: sorted '/'-joined path, dtype, shape, then the C-order bytes."""
    return tree_digest(params)


def check_resume_config(cfg: Config, workdir: Workdir, start: int, *, allow_change: bool = False) -> None:
    """Compare `cfg` with the config.yaml of a workdir that holds checkpoints (step `start`).

    Differences outside RESUME_NEUTRAL_KEYS are refused (ConfigError naming every key) unless `allow_change`;
    any accepted difference is recorded: config.yaml takes the new values, the old file is kept as
    config.until_step_<start>.yaml."""
    path = workdir / CONFIG_FILE
    new_text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    if not path.is_file():
        write_text_atomic(path, new_text)
        return
    try:
        recorded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err}); it records the configuration the checkpoints were "
                          "trained with: restore it, or move it away to resume with the given config") from None
    changed = config_changes(recorded, cfg.to_dict())
    if not changed:
        return
    describe = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changed)
    material = [(k, a, b) for k, a, b in changed if not k.startswith(RESUME_NEUTRAL_KEYS)]
    if material and not allow_change:
        raise ConfigError(f"{path}: resuming at step {start} with a different configuration: " + ", ".join(
            f"{k}: {a!r} -> {b!r}" for k, a, b in material)
            + "; the checkpoints were trained with the recorded values. Use the same config, or pass "
              "--allow-config-change to continue with the new values (recorded in config.yaml)")
    kept = workdir / f"config.until_step_{start}.yaml"
    if not kept.exists():
        path.replace(kept)
    write_text_atomic(path, new_text)
    if jax.process_index() == 0:
        print(f"config changed at step {start} ({describe}); recorded in {path}, previous values in {kept}",
              flush=True)


def total_steps(cfg: Config, global_batch_size: int, max_steps: Optional[int] = None) -> int:
    if max_steps is not None:
        return int(max_steps)
    if cfg.TRAIN.MAX_STEPS is not None:
        return int(cfg.TRAIN.MAX_STEPS)
    return int(cfg.TRAIN.EPOCH) * steps_per_epoch(cfg, global_batch_size)


def init_variables(cfg: Config, model, rng) -> dict:
    """Random init, then the MAE/DeiT encoder if MODEL.PRETRAIN_FILE names one."""
    variables = random_variables(model, cfg.DATA.TEMPLATE.SIZE, cfg.DATA.SEARCH.SIZE, rng)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(variables["params"]))
    log.info("model: %.2fM parameters", n_params / 1e6)
    pretrain = str(cfg.MODEL.PRETRAIN_FILE or "")
    if pretrain:
        path = resolve_pretrained(pretrain)
        log.info("backbone initialised from %s", path)
        variables = init_from_pretrained(str(path), variables)
    return variables


# ----------------------------------------------------------------------------------------------- train

def train(cfg: Config, workdir: str | os.PathLike | Workdir, make_batches: BatchFactory, *, max_steps: Optional[int] = None,
          progress: bool = True, devices=None, allow_config_change: bool = False,
          on_checkpoint_save: Optional[Callable[[int], None]] = None) -> TrainResult:
    """Train (or resume) in `workdir`; returns the final step, params digest and the logged metrics.

    A second run on the same workdir, a changed config on resume (unless `allow_config_change`) and an invalid
    TRAIN.KEEP_CHECKPOINTS are refused with ConfigError before anything is written; a failed checkpoint write
    raises CheckpointWriteError. `on_checkpoint_save(step)` runs right after each checkpoint write started.
    `workdir` is a local path or a URL (grm_jax/workdir.py: files through tf.io.gfile, checkpoints to gs://)."""
    workdir = workdir_path(workdir)
    checkpoint_location(workdir / CHECKPOINT_DIR)   # a URL orbax cannot write to is refused before any write
    workdir.mkdir(parents=True, exist_ok=True)
    is_main = jax.process_index() == 0
    lock = WorkdirLock(workdir).acquire() if is_main else None
    try:
        return _train_locked(cfg, workdir, make_batches, max_steps=max_steps, progress=progress, devices=devices,
                             allow_config_change=allow_config_change, on_checkpoint_save=on_checkpoint_save,
                             lock=lock)
    finally:
        if lock is not None:
            lock.release()


def _train_locked(cfg, workdir, make_batches, *, max_steps, progress, devices, allow_config_change,
                  on_checkpoint_save, lock=None) -> TrainResult:
    from ..models import build_model

    is_main = jax.process_index() == 0
    keep = cfg.TRAIN.KEEP_CHECKPOINTS
    ckpts = TrainingCheckpoints(workdir, keep, on_save=on_checkpoint_save)
    latest = ckpts.latest_step()
    if is_main:   # before any work: a refused config change costs nothing
        if latest is not None:
            check_resume_config(cfg, workdir, latest, allow_change=allow_config_change)
        else:
            write_text_atomic(workdir / CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    mesh = make_mesh(devices)
    n_dev = mesh.devices.size
    per_device = int(cfg.TRAIN.BATCH_SIZE)
    global_bs = per_device * n_dev
    host_bs = per_device * (n_dev // jax.process_count())
    steps = total_steps(cfg, global_bs, max_steps)
    spe = steps_per_epoch(cfg, global_bs)

    model = build_model(cfg)
    seed = int(cfg.TRAIN.SEED)
    init_rng, train_rng = jax.random.split(make_key(seed))
    variables = init_variables(cfg, model, init_rng)
    tx = make_optimizer(cfg, variables["params"], global_bs)
    state = create_train_state(variables, tx, 0)
    state["rng"] = jax.random.key_data(train_rng)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    state = jax.device_put(state, replicated)
    del variables

    start = 0
    resumed = False
    if latest is not None:
        abstract = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state)
        found = ckpts.restore(abstract)
        if found is not None:
            state, restored_step = found
            start = int(jax.device_get(state["step"]))
            if start != restored_step:
                raise RuntimeError(f"{workdir}: checkpoint {restored_step} holds step {start}")
            resumed = True
    writer = MetricWriter(workdir, total_steps=steps, start_step=start, enabled=is_main)
    if resumed:
        writer.message(f"resumed from {workdir / CHECKPOINT_DIR / str(start)} (step {start})")

    train_step = make_train_step(model, tx, mesh, loss_weights(cfg), image_mean=tuple(cfg.DATA.MEAN),
                                 image_std=tuple(cfg.DATA.STD))
    ckpt_every = int(cfg.TRAIN.CKPT_EVERY_STEPS or spe)
    log_every = max(1, int(cfg.TRAIN.LOG_EVERY_STEPS or 50))
    writer.message(f"devices {n_dev} ({jax.devices()[0].platform}), processes {jax.process_count()}, global batch "
                   f"{global_bs}, steps {start}->{steps}, {spe} steps/epoch, checkpoint every {ckpt_every}, "
                   f"drop-path {[round(r, 4) for r in drop_path_rates(cfg)]}")

    batches = make_batches(start, host_bs, jax.process_index(), jax.process_count())
    bar = None
    if progress and is_main:
        from tqdm import tqdm
        bar = tqdm(total=steps, initial=start, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr)
        writer.bar = bar
    step = start
    # Metrics stay on the device; they are fetched (one host sync) at log and checkpoint steps only. A step with
    # a non-finite loss leaves the state unchanged (train_step refuses the update), and the fetch before any
    # checkpoint stops the run on it, so a checkpoint never follows a non-finite step unseen.
    pending: list = []   # (step, device metrics) since the last fetch
    interval_start = time.perf_counter()
    # samples redrawn by the input pipeline on this host since the loop started: after an unreadable/corrupt
    # frame ("bad_frames", its path is logged by the pipeline) or an invalid crop ("redraws" counts both)
    skipped = {"bad_frames": 0, "redraws": 0}
    stopped_by = None
    peer_lost = False
    with stop_requested() as stop:
        try:
            while step < steps:
                try:
                    host_batch = next(batches)
                except InputPipelineError:
                    raise
                except Exception as err:   # noqa: BLE001 - any failure of the input side ends the run the same way
                    reason = "ended" if isinstance(err, StopIteration) else f"failed: {type(err).__name__}: {err}"
                    raise InputPipelineError(f"input pipeline {reason} (batch of step {step + 1})") from err
                for k in skipped:
                    if k in host_batch:
                        skipped[k] += int(np.sum(host_batch[k]))
                batch = global_batch(host_batch, mesh)
                state, metrics = train_step(state, batch)
                step += 1
                pending.append((step, metrics))
                if bar is not None:
                    bar.update(1)
                # a stop signal: this step is finished, saved and logged, then the run ends (every process at the
                # same step)
                stop_now = _stop_agreed(stop, step)
                log_now = step % log_every == 0 or step == steps or step == start + 1 or stop_now
                ckpt_now = step % ckpt_every == 0 or step == steps or stop_now
                if not (log_now or ckpt_now):
                    continue
                fetched = jax.device_get([m for _, m in pending])
                now = time.perf_counter()
                dt, interval_start = (now - interval_start) / len(pending), now   # mean step time of the interval
                for (at, _), metrics in zip(pending, fetched):
                    if not bool(metrics["finite"]):
                        parts = ", ".join(f"{k}={float(v):.6g}" for k, v in metrics.items()
                                          if k not in ("finite", "interact_frac"))
                        saved = ckpts.latest_step()
                        raise NonFiniteLossError(
                            f"non-finite loss at step {at} ({parts}); stopping at step {step}. That update was not "
                            f"applied and nothing was saved after it; the last good checkpoint is "
                            f"{'step ' + str(saved) if saved is not None else 'none'} in {workdir / CHECKPOINT_DIR}")
                last_loss = float(fetched[-1]["total"])
                pending.clear()
                if log_now:
                    writer.write_scalars(step, _step_scalars(fetched[-1], skipped, dt, global_bs,
                                                             learning_rates(cfg, step - 1, global_bs)))
                if ckpt_now:
                    if lock is not None:
                        lock.check()   # an object-store lock taken over by another run: stop before writing
                    ckpts.save(step, state, {"step": step, "time": time.time(), "loss": last_loss})
                if stop_now and step < steps:
                    stopped_by = stop.signal or "SIGTERM"   # JAX's preemption service relays SIGTERM
                    break
        except Exception as err:
            lost = _peer_lost(err, step, ckpts)
            if lost is None:
                raise
            peer_lost = True
            raise lost from None
        finally:
            # Stop the input workers first: a tf.data iterator left open keeps worker threads alive at exit.
            close = getattr(batches, "close", None)
            if close is not None:
                close()
            if bar is not None:
                bar.close()
            writer.close()
            if not peer_lost:   # a write in flight waits at barriers with the dead process: abandoned (cleaned on the
                ckpts.close()   # next start)
    digest = params_digest(jax.device_get(state["params"]))
    if stopped_by is not None:
        writer.message(f"stopped by {stopped_by} at step {step}; checkpoint {step} written; rerun the same command "
                       f"to resume (params sha256 {digest})")
    else:
        writer.message(f"done: step {step} params sha256 {digest}")
    return TrainResult(step=step, digest=digest, history=writer.history, workdir=workdir, stopped_by=stopped_by)


def _stop_agreed(stop, step: int) -> bool:
    """Whether the run stops after optimiser step `step`.

    One process: a stop signal arrived (`runtime.stop_requested`). Several: JAX's preemption sync point, where
    every process stops at the same step: a SIGTERM on any of them (SIGINT is relayed as SIGTERM) starts JAX's
    protocol, which picks the step after the furthest one any process has reached. The counter given to JAX is
    the global step because orbax's CheckpointManager.save reports the step it saves to the same counter."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.reached_preemption_sync_point(step)
    return bool(stop)


# what a collective or a coordination-service wait says when another process has gone
_PEER_FAILURE_MARKERS = ("Gloo", "Connection reset by peer", "Connection closed by peer", "heartbeat timeout",
                         "coordination service", "stopped sending heartbeats")


def _peer_lost(err: BaseException, step: int, ckpts: TrainingCheckpoints) -> Optional[PeerLostError]:
    """A PeerLostError naming the lost process when `err` (or its cause) is a multi-process run losing another
    process; None otherwise."""
    import re

    if jax.process_count() < 2:
        return None
    text, seen, cause = "", set(), err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        text += f"{cause}\n"
        cause = cause.__cause__ or cause.__context__
    if not any(marker in text for marker in _PEER_FAILURE_MARKERS):
        return None
    me, count = jax.process_index(), jax.process_count()
    address = re.search(r"\[([0-9A-Za-z:._-]+)\]:(\d+)", text)
    where = f" (its connection at {address.group(1)}:{address.group(2)})" if address else ""
    who = f"process {1 - me}{where}" if count == 2 else f"another process{where}"
    reason = next((ln.strip() for ln in text.splitlines() if any(m in ln for m in _PEER_FAILURE_MARKERS)), "")
    saved = ckpts.latest_step()
    return PeerLostError(
        f"process {me} of {count}: lost {who} after step {step} ({reason[:200]}); stopping. Rerun the same command "
        f"on every process to resume from {'checkpoint ' + str(saved) if saved is not None else 'step 0'}")


def _step_scalars(metrics: dict, skipped: dict, step_time: float, global_bs: int, lrs: dict) -> dict:
    """The scalars reported for a log step (names: grm_jax/train/metrics.py), from the step's fetched metrics."""
    scalars = {f"loss/{k}": float(metrics[k]) for k in ("total", "giou", "l1", "focal", "entropy") if k in metrics}
    scalars.update({"IoU": float(metrics["iou"]), "grad_norm": float(metrics["grad_norm"])})
    scalars.update({f"lr/{g}": float(v) for g, v in lrs.items()})
    scalars.update({f"interact_frac/layer{i}": float(f)
                    for i, f in enumerate(np.atleast_1d(metrics["interact_frac"]))})
    scalars.update({"step_time": step_time, "pairs_per_s": global_bs / step_time})
    scalars.update({f"data/{k}": v for k, v in skipped.items()})
    return scalars

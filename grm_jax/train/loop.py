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
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import jax
import numpy as np
import yaml
from jax.experimental import multihost_utils
from tqdm import tqdm

from ..checkpoints.digests import tree_digest
from ..checkpoints.training import CHECKPOINT_DIR, TrainingCheckpoints
from ..config import DATA_ACCESS_KEYS, Config, ConfigError, config_changes
from ..errors import InputPipelineError
from ..models.vit import drop_path_rates
from ..convert.pretrained import init_from_pretrained, random_variables, resolve_pretrained
from ..runtime import stop_requested
from ..specs import build_model, optimizer_spec, steps_per_epoch
from ..workdir import Workdir, WorkdirLock, checkpoint_location, workdir_path, write_text_atomic
from .losses import loss_weights
from .metrics import MetricWriter
from .optim import OptimizerSpec, learning_rates, lr_schedule, make_optimizer
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
    """The run, top to bottom: record the config, plan the devices and steps, build the model and optimiser, the
    initial or restored state, the step loop (logs and checkpoints), the final digest."""
    ckpts = TrainingCheckpoints(workdir, cfg.TRAIN.KEEP_CHECKPOINTS, on_save=on_checkpoint_save)
    latest = ckpts.latest_step()
    if jax.process_index() == 0:   # before any work: a refused config change costs nothing
        _record_config(cfg, workdir, latest, allow_config_change)
    plan = _plan(cfg, devices, max_steps)
    model = build_model(cfg)
    optimizer = OptimizerSpec(**optimizer_spec(cfg, plan.global_batch))
    schedule = lr_schedule(optimizer)
    state, tx = _initial_state(cfg, model, optimizer, schedule, plan.mesh)
    state, restored = _restore(ckpts, latest, state, plan.mesh, workdir)
    start = 0 if restored is None else restored
    writer = MetricWriter(workdir, total_steps=plan.steps, start_step=start, enabled=jax.process_index() == 0)
    if restored is not None:
        writer.message(f"resumed from {workdir / CHECKPOINT_DIR / str(start)} (step {start})")
    train_step = make_train_step(model, tx, plan.mesh, loss_weights(cfg), image_mean=tuple(cfg.DATA.MEAN),
                                 image_std=tuple(cfg.DATA.STD))
    writer.message(f"devices {plan.mesh.devices.size} ({jax.devices()[0].platform}), processes "
                   f"{jax.process_count()}, global batch {plan.global_batch}, steps {start}->{plan.steps}, "
                   f"{plan.steps_per_epoch} steps/epoch, checkpoint every {plan.ckpt_every}, drop-path "
                   f"{[round(r, 4) for r in drop_path_rates(model.drop_path_rate, model.depth)]}")
    state, step, stopped_by = _run_steps(
        state, train_step, make_batches, start=start, plan=plan, writer=writer, ckpts=ckpts, lock=lock,
        workdir=workdir, progress=progress,
        learning_rates_at=lambda at: learning_rates(optimizer, schedule, at))
    return _finish(state, step, stopped_by, writer, workdir)


@dataclass(frozen=True)
class _Plan:
    """The run's shape: devices, batch sizes and step counts."""
    mesh: jax.sharding.Mesh
    global_batch: int        # TRAIN.BATCH_SIZE per device x devices
    host_batch: int          # what this process feeds: TRAIN.BATCH_SIZE x its local devices
    steps: int               # the step the run ends at
    steps_per_epoch: int
    ckpt_every: int
    log_every: int


def _record_config(cfg: Config, workdir: Workdir, latest: Optional[int], allow_change: bool) -> None:
    """config.yaml of a new workdir, or the resume check against the recorded one (see check_resume_config)."""
    if latest is not None:
        check_resume_config(cfg, workdir, latest, allow_change=allow_change)
    else:
        write_text_atomic(workdir / CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _plan(cfg: Config, devices, max_steps: Optional[int]) -> _Plan:
    mesh = make_mesh(devices)
    n_dev = mesh.devices.size
    per_device = int(cfg.TRAIN.BATCH_SIZE)
    global_bs = per_device * n_dev
    spe = steps_per_epoch(cfg, global_bs)
    return _Plan(mesh=mesh, global_batch=global_bs, host_batch=per_device * (n_dev // jax.process_count()),
                 steps=total_steps(cfg, global_bs, max_steps), steps_per_epoch=spe,
                 ckpt_every=int(cfg.TRAIN.CKPT_EVERY_STEPS or spe),
                 log_every=max(1, int(cfg.TRAIN.LOG_EVERY_STEPS or 50)))


def _initial_state(cfg: Config, model, optimizer: OptimizerSpec, schedule, mesh) -> tuple[dict, object]:
    """(step-0 train state replicated over `mesh`, optimiser): initial variables (random or MAE/DeiT) from the
    first half of TRAIN.SEED's key, the steps' base key the second half."""
    init_rng, train_rng = jax.random.split(make_key(int(cfg.TRAIN.SEED)))
    variables = init_variables(cfg, model, init_rng)
    tx = make_optimizer(optimizer, variables["params"], schedule)
    state = create_train_state(variables, tx, train_rng)
    return jax.device_put(state, _replicated(mesh)), tx


def _replicated(mesh) -> jax.sharding.NamedSharding:
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def _restore(ckpts: TrainingCheckpoints, latest: Optional[int], state: dict, mesh,
             workdir) -> tuple[dict, Optional[int]]:
    """(state, step) of the latest checkpoint (restored replicated, like `state`), or (`state`, None) without
    one."""
    if latest is None:
        return state, None
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=_replicated(mesh)), state)
    found = ckpts.restore(abstract)
    if found is None:
        return state, None
    state, restored_step = found
    start = int(jax.device_get(state["step"]))
    if start != restored_step:
        raise RuntimeError(f"{workdir}: checkpoint {restored_step} holds step {start}")
    return state, start


def _run_steps(state, train_step, make_batches: BatchFactory, *, start: int, plan: _Plan, writer: MetricWriter,
               ckpts: TrainingCheckpoints, lock, workdir, progress: bool,
               learning_rates_at: Callable[[int], dict]) -> tuple[dict, int, Optional[str]]:
    """The optimiser steps from `start` to `plan.steps`, with the log and checkpoint steps between them; returns
    (state, last step, the stop signal's name or None). A stop signal ends the run after the step it arrived in,
    saved and logged (every process at the same step)."""
    batches = make_batches(start, plan.host_batch, jax.process_index(), jax.process_count())
    bar = None
    if progress and jax.process_index() == 0:
        bar = tqdm(total=plan.steps, initial=start, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr)
        writer.bar = bar
    step = start
    pending = _PendingMetrics()
    # samples redrawn by the input pipeline on this host since the loop started: after an unreadable/corrupt
    # frame ("bad_frames", its path is logged by the pipeline) or an invalid crop ("redraws" counts both)
    skipped = {"bad_frames": 0, "redraws": 0}
    stopped_by = None
    peer_lost = False
    with stop_requested() as stop:
        try:
            while step < plan.steps:
                host_batch = _next_batch(batches, step)
                for k in skipped:
                    if k in host_batch:
                        skipped[k] += int(np.sum(host_batch[k]))
                state, metrics = train_step(state, global_batch(host_batch, plan.mesh))
                step += 1
                pending.add(step, metrics)
                if bar is not None:
                    bar.update(1)
                stop_now = _stop_agreed(stop, step)
                log_now = step % plan.log_every == 0 or step == plan.steps or step == start + 1 or stop_now
                ckpt_now = step % plan.ckpt_every == 0 or step == plan.steps or stop_now
                if not (log_now or ckpt_now):
                    continue
                fetched, step_time = pending.fetch(step, ckpts, workdir)
                if log_now:
                    writer.write_scalars(step, _step_scalars(fetched[-1], skipped, step_time, plan.global_batch,
                                                             learning_rates_at(step - 1)))
                if ckpt_now:
                    if lock is not None:
                        lock.check()   # an object-store lock taken over by another run: stop before writing
                    ckpts.save(step, state, {"step": step, "time": time.time(), "loss": float(fetched[-1]["total"])})
                if stop_now and step < plan.steps:
                    stopped_by = stop.signal or "SIGTERM"   # JAX's preemption service relays SIGTERM
                    break
        except Exception as err:
            lost = _peer_lost(err, step, ckpts)
            if lost is None:
                raise
            peer_lost = True
            raise lost from None
        finally:
            _close_run(batches, bar, writer, ckpts, peer_lost=peer_lost)
    return state, step, stopped_by


def _close_run(batches, bar, writer: MetricWriter, ckpts: TrainingCheckpoints, *, peer_lost: bool) -> None:
    # Stop the input workers first: a tf.data iterator left open keeps worker threads alive at exit.
    close = getattr(batches, "close", None)
    if close is not None:
        close()
    if bar is not None:
        bar.close()
    writer.close()
    if not peer_lost:   # a write in flight waits at barriers with the dead process: abandoned (cleaned on the
        ckpts.close()   # next start)


def _next_batch(batches: Iterator[dict], step: int) -> dict:
    """The host batch of step `step + 1`; any failure of the input side ends the run as an InputPipelineError."""
    try:
        return next(batches)
    except InputPipelineError:   # the pipeline's own one-line description of the failure
        raise
    except Exception as err:   # noqa: BLE001 - any failure of the input side ends the run the same way
        reason = "ended" if isinstance(err, StopIteration) else f"{type(err).__name__}: {err}"
        raise InputPipelineError(f"{reason} (batch of step {step + 1})") from err


class _PendingMetrics:
    """The device metrics of the steps since the last fetch.

    Metrics stay on the device; they are fetched (one host sync) at log and checkpoint steps only. A step with a
    non-finite loss leaves the state unchanged (train_step refuses the update), and the fetch before any
    checkpoint stops the run on it, so a checkpoint never follows a non-finite step unseen."""

    def __init__(self):
        self.steps: list = []   # (step, device metrics)
        self.since = time.perf_counter()

    def add(self, step: int, metrics: dict) -> None:
        self.steps.append((step, metrics))

    def fetch(self, step: int, ckpts: TrainingCheckpoints, workdir) -> tuple[list, float]:
        """(host copies of the metrics, mean step time of the interval), the interval then starting anew; a
        NonFiniteLossError naming the first step whose loss was not finite."""
        fetched = jax.device_get([m for _, m in self.steps])
        now = time.perf_counter()
        step_time, self.since = (now - self.since) / len(self.steps), now
        for (at, _), metrics in zip(self.steps, fetched):
            if not bool(metrics["finite"]):
                parts = ", ".join(f"{k}={float(v):.6g}" for k, v in metrics.items()
                                  if k not in ("finite", "interact_frac"))
                saved = ckpts.latest_step()
                raise NonFiniteLossError(
                    f"non-finite loss at step {at} ({parts}); stopping at step {step}. That update was not "
                    f"applied and nothing was saved after it; the last good checkpoint is "
                    f"{'step ' + str(saved) if saved is not None else 'none'} in {workdir / CHECKPOINT_DIR}")
        self.steps.clear()
        return fetched, step_time


def _finish(state: dict, step: int, stopped_by: Optional[str], writer: MetricWriter, workdir) -> TrainResult:
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
        return multihost_utils.reached_preemption_sync_point(step)
    return bool(stop)


# what a collective or a coordination-service wait says when another process has gone
_PEER_FAILURE_MARKERS = ("Gloo", "Connection reset by peer", "Connection closed by peer", "heartbeat timeout",
                         "coordination service", "stopped sending heartbeats")


def _peer_lost(err: BaseException, step: int, ckpts: TrainingCheckpoints) -> Optional[PeerLostError]:
    """A PeerLostError naming the lost process when `err` (or its cause) is a multi-process run losing another
    process; None otherwise."""
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

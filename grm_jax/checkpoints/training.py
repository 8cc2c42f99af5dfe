"""The checkpoints of a training workdir: `TrainingCheckpoints` writes and restores the full training state
(orbax CheckpointManager, async writes, digests, damaged steps moved aside); `load_training_variables` reads
the params and batch_stats of one step for inference."""
from __future__ import annotations

import errno
import os
import shutil
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from ..errors import ConfigError, UserError
from ..workdir import Workdir, absolute_path, checkpoint_location, is_url
from .digests import DIGEST_ALGORITHM, first_mismatch, tree_digests
from .reading import (CheckpointLoadError, jsonable, machine_cause, read_json_item, restore_item, short_error,
                      to_host, unreadable)

CHECKPOINT_DIR = "checkpoints"
STATE_ITEM = "state"
META_ITEM = "meta"
DAMAGED_PREFIX = "damaged-"
UNFINISHED_WRITE_SUFFIX = ".orbax-checkpoint-tmp"   # orbax's name for a step folder being written


def step_dirs(directory) -> list[int]:
    """The step numbers of the checkpoint folder `directory`, ascending ([] when it does not exist)."""
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


class TrainingCheckpoints:
    """The checkpoints of a training workdir (`WORKDIR/checkpoints/<step>/{state,meta}`, orbax, async writes).
    The workdir is a local path or a gs:// URL (`grm_jax.workdir.checkpoint_location`).

    - every checkpoint's meta holds `digests` ({state key: tree_digest}); `restore` checks them and falls back
      to the newest intact step, moving damaged newer steps aside (`damaged-<step>`, nothing is deleted);
    - `keep` (TRAIN.KEEP_CHECKPOINTS): None keeps all, N >= 1 keeps the newest N; checkpoints that were in the
      workdir before this run started are never deleted;
    - a full disk ends in one `CheckpointWriteError` naming the path, with the unfinished write removed;
    - `on_save(step)` is called right after a save was started (tests use it to inject faults).
    """

    def __init__(self, workdir: str | os.PathLike, keep: int | None = None, *, on_save=None,
                 log=print):
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise ConfigError(f"TRAIN.KEEP_CHECKPOINTS={keep!r}: must be a number of checkpoints >= 1, or null to "
                              "keep all")
        self.directory = absolute_path(workdir) / CHECKPOINT_DIR
        location = checkpoint_location(self.directory)   # what orbax is given (epath for gs://)
        self.keep, self.on_save, self.log = keep, on_save, log
        unfinished = self._remove_unfinished_writes()
        if unfinished:
            self.log(f"removed {len(unfinished)} unfinished checkpoint write(s) left by an interrupted run: "
                     + ", ".join(str(p) for p in unfinished))
        self.preexisting = step_dirs(self.directory)
        policies = [ocp.checkpoint_managers.LatestN(n=keep)]
        if keep is not None and self.preexisting:
            policies.append(ocp.checkpoint_managers.CustomSteps(self.preexisting))
        options = ocp.CheckpointManagerOptions(
            create=True, enable_async_checkpointing=True,
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies))
        self._mngr = ocp.CheckpointManager(location, options=options, item_names=(STATE_ITEM, META_ITEM))
        self._pending: int | None = None

    # ------------------------------------------------------------------ write
    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def save(self, step: int, state, meta: Mapping) -> None:
        self._raise_pending_errors()
        meta = dict(jsonable(meta))
        meta.update(digests=tree_digests(jax.device_get(state)), digest_algorithm=DIGEST_ALGORITHM)
        self._pending = int(step)
        try:
            self._mngr.save(int(step), args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave(state),
                                                                   META_ITEM: ocp.args.JsonSave(meta)}))
        except Exception as exc:  # noqa: BLE001 - orbax reports a failed write in several types
            self._write_failed(exc)
        if self.on_save is not None:
            self.on_save(int(step))

    def wait(self) -> None:
        """Wait for the pending write; a failed one raises CheckpointWriteError."""
        self._raise_pending_errors()

    def close(self) -> None:
        try:
            self._raise_pending_errors()
        finally:
            try:
                self._mngr.close()
            except Exception:  # noqa: BLE001 - the write error, if any, has been reported already
                pass

    def _raise_pending_errors(self) -> None:
        try:
            self._mngr.wait_until_finished()
        except Exception as exc:  # noqa: BLE001
            self._write_failed(exc)
        self._pending = None

    def _remove_unfinished_writes(self) -> list:
        """Delete the folders of writes that never finished (`<step>.orbax-checkpoint-tmp*`: a run killed while
        writing); they are never mistaken for checkpoints. One process does it (the workdir is shared)."""
        if jax.process_index() != 0 or not self.directory.is_dir():
            return []
        removed = sorted(self.directory.glob(f"*{UNFINISHED_WRITE_SUFFIX}*"), key=str)
        for tmp in removed:
            if not is_url(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                try:
                    tmp.rmtree()
                except Exception:  # noqa: BLE001 - as ignore_errors above
                    pass
        return removed

    def _write_failed(self, exc: BaseException) -> None:
        step = self._pending
        self._remove_unfinished_writes()
        self._pending = None
        intact = [s for s in step_dirs(self.directory) if s != step]
        kept = f"the latest intact checkpoint is step {intact[-1]}" if intact else "no earlier checkpoint exists"
        if is_disk_full(exc) and not is_url(self.directory):
            free = shutil.disk_usage(self.directory).free if self.directory.exists() else 0
            raise CheckpointWriteError(
                f"no space left on device writing checkpoint step {step} to {self.directory} ({free} bytes free); "
                f"the unfinished write was removed, {kept}; free space and rerun to resume") from None
        raise CheckpointWriteError(f"cannot write checkpoint step {step} to {self.directory}: {short_error(exc)}; "
                                   f"{kept}") from exc

    # ------------------------------------------------------------------ read
    def restore(self, abstract_state) -> tuple[Any, int] | None:
        """(state, step) of the newest intact checkpoint, or None when the workdir has none.

        Damaged newer steps (unreadable, or a digest that differs) are moved to `damaged-<step>` and named; if
        no step restores, CheckpointLoadError lists every step's problem and nothing is moved."""
        self._mngr.reload()
        steps = sorted(self._mngr.all_steps(), reverse=True)
        problems: list[tuple[int, str]] = []
        for step in steps:
            step_dir = self.directory / str(step)
            try:   # read by the readers' own code, so the manager's item handlers stay those of its writes
                state = restore_item(checkpoint_location(step_dir / STATE_ITEM), abstract_state)
                meta = dict(read_json_item(checkpoint_location(step_dir / META_ITEM)) or {})
            except Exception as exc:  # noqa: BLE001 - orbax reports a failed read in several types
                self._refuse_if_intact(step, exc)
                problems.append((step, f"unreadable ({short_error(exc)})"))
                continue
            stored = meta.get("digests")
            if stored:
                bad = first_mismatch(jax.device_get(state), stored)
                if bad is not None:
                    problems.append((step, f"the digest of '{bad}' differs from the one written with it"))
                    continue
            else:
                self.log(f"warning: checkpoint step {step} in {self.directory} has no stored digest; not verified")
            for bad_step, reason in problems:
                target = self.directory / f"{DAMAGED_PREFIX}{bad_step}"
                if jax.process_index() == 0:   # one host renames and reports (the workdir is shared)
                    (self.directory / str(bad_step)).rename(target)
                    self.log(f"warning: checkpoint step {bad_step} is damaged ({reason}); moved to {target}; "
                             f"resuming from step {step}")
            if problems:
                if jax.process_count() > 1:
                    multihost_utils.sync_global_devices("grm_jax: damaged checkpoints moved aside")
                self._mngr.reload()
            return state, int(step)
        if problems:
            raise CheckpointLoadError(f"{self.directory}: no intact checkpoint to resume from: " + "; ".join(
                f"step {s}: {r}" for s, r in problems) + " (move the folder away to start afresh)")
        return None

    def _refuse_if_intact(self, step: int, exc: BaseException) -> None:
        """A step whose restore onto the caller's target failed is damaged only if its bytes cannot be read:
        read its state as host arrays and check the stored digests. When they are intact, or this machine's
        memory or access rights stopped the read, raise CheckpointLoadError naming the cause (nothing is moved);
        return when the step is damaged."""
        step_dir = self.directory / str(step)
        cause = machine_cause(exc)
        if cause is None:
            try:
                state = restore_item(checkpoint_location(step_dir / STATE_ITEM))
                meta = read_json_item(checkpoint_location(step_dir / META_ITEM)) or {}
            except Exception as host_exc:  # noqa: BLE001 - unreadable bytes: a damaged step
                cause = machine_cause(host_exc)
                if cause is None:
                    return
            else:
                if first_mismatch(state, meta.get("digests") or {}) is not None:
                    return
                raise CheckpointLoadError(
                    f"{step_dir}: the checkpoint is intact (its arrays match their digests) but does not restore "
                    f"onto this run's training state: {short_error(exc)}; nothing was moved") from None
        raise CheckpointLoadError(f"{step_dir}: cannot restore the checkpoint on this machine: {cause}; nothing "
                                  "was moved") from None


def training_checkpoint_dir(path: str | os.PathLike) -> Workdir:
    """The checkpoint folder of a training workdir: WORKDIR/checkpoints, or `path` itself when it is that folder
    (holds step subfolders); a local path or a URL (`grm_jax.workdir.workdir_path`)."""
    path = absolute_path(path)
    if (path / CHECKPOINT_DIR).is_dir():
        return path / CHECKPOINT_DIR
    if step_dirs(path):
        return path
    raise CheckpointLoadError(f"{path}: no orbax CheckpointManager steps found (a training workdir holds "
                              f"{CHECKPOINT_DIR}/<step>/{STATE_ITEM})")


def latest_training_step(path: str | os.PathLike) -> tuple[Any, int] | None:
    """(checkpoint folder, latest step) of a training workdir, or None when it has no checkpoint yet."""
    try:
        directory = training_checkpoint_dir(path)
    except CheckpointLoadError:
        return None
    steps = step_dirs(directory)
    return (directory, steps[-1]) if steps else None


def load_training_variables(path: str | os.PathLike, step: int | None = None) -> tuple[dict, int]:
    """{'params', 'batch_stats'} of a training workdir's checkpoint (latest step by default), checked against the
    digests stored with it."""
    directory = training_checkpoint_dir(path)
    steps = step_dirs(directory)
    if not steps:
        raise CheckpointLoadError(f"{directory}: no orbax CheckpointManager steps found")
    step = steps[-1] if step is None else int(step)
    step_dir = directory / str(step)
    if step not in steps:
        raise CheckpointLoadError(f"{directory}: no step {step} (latest is {steps[-1]})")
    if not (step_dir / STATE_ITEM).is_dir():
        raise CheckpointLoadError(f"{step_dir}: not a grm_jax training checkpoint (no '{STATE_ITEM}' item)")
    try:   # only what inference needs: the optimizer state is never read
        state = restore_item(checkpoint_location(step_dir / STATE_ITEM), keys=("params", "batch_stats"))
        variables = {"params": state["params"], "batch_stats": state.get("batch_stats") or {}}
    except Exception as exc:  # noqa: BLE001 - a damaged file surfaces as any of several orbax/tensorstore errors
        raise unreadable(step_dir, "the training state", exc,
                         "use another step (--step) or another checkpoint") from None
    _verify_training_variables(step_dir, variables)
    return to_host(variables), step


def _verify_training_variables(step_dir, variables: Mapping) -> None:
    """Check params / batch_stats against the digests stored in the step's meta item (when it has them)."""
    if not (step_dir / META_ITEM).is_dir():
        return
    try:
        meta = read_json_item(checkpoint_location(step_dir / META_ITEM)) or {}
    except Exception as exc:  # noqa: BLE001
        raise unreadable(step_dir, "its meta item", exc, "use another step (--step) or another checkpoint") from None
    stored = {k: v for k, v in (meta.get("digests") or {}).items() if k in ("params", "batch_stats")}
    bad = first_mismatch(to_host(variables), stored)
    if bad is not None:
        raise CheckpointLoadError(f"{step_dir}: the digest of '{bad}' differs from the one written with it (a "
                                  "damaged checkpoint); use another step (--step) or another checkpoint")


class CheckpointWriteError(UserError, OSError):
    """A checkpoint could not be written (full disk, permissions); earlier checkpoints are intact."""


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or an exception it was raised from) says the disk or the quota is full."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc)
        if "No space left on device" in text or "Disk quota exceeded" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False

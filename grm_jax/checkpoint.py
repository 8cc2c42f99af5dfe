"""Saving and loading converted variables with orbax, and one loader for inference.

A converted checkpoint is an orbax composite directory with three items:
``variables`` ({'params', 'batch_stats'}), ``extras`` (tensors of the official state_dict the Flax model does
not own: cls_token, pos_embed, num_batches_tracked; nested by the dots of their official keys) and ``meta``
(JSON: inferred architecture, source file, format version, and `digests`: a `tree_digest` of each array item,
checked on load so a damaged file is an error, never different weights).

Training workdirs (`TrainingCheckpoints`, `load_training_variables`) live here too: one module writes, restores
and locates every checkpoint.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from flax import traverse_util

from .convert.layout import plain_tree
from .specs import conversion_architecture

FORMAT = "grm_jax.converted/1"
_ITEMS = ("variables", "extras", "meta")
_OFFICIAL_SUFFIXES = (".pth", ".pth.tar", ".pt", ".tar", ".bin")


class CheckpointLoadError(ValueError):
    """A checkpoint path that is none of the formats :func:`load_for_inference` accepts."""


def _ocp():
    import orbax.checkpoint as ocp

    return ocp


def _to_host(tree):
    import jax

    return jax.tree_util.tree_map(lambda x: np.array(x, order="C"), plain_tree(tree))


def _jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def save_variables(directory: str | os.PathLike, variables: Mapping, extras: Mapping | None = None,
                   meta: Mapping | None = None, *, force: bool = False) -> Path:
    """Write ``variables`` (+ extras + JSON meta) as an orbax checkpoint directory."""
    ocp = _ocp()
    directory = Path(directory).absolute()
    if directory.exists() and any(directory.iterdir()):
        if not force:
            raise FileExistsError(f"{directory} exists and is not empty (pass force=True / --force to replace it)")
        import shutil

        shutil.rmtree(directory)
    extras = dict(extras or {})
    meta = dict(meta or {})
    if "__arch__" in extras and "architecture" not in meta:
        meta["architecture"] = extras["__arch__"]
    meta["format"] = FORMAT
    host_vars = _to_host({"params": variables["params"], "batch_stats": variables.get("batch_stats", {})})
    items = {"variables": ocp.args.StandardSave(host_vars), "meta": ocp.args.JsonSave(_jsonable(meta))}
    # official dotted keys nest as a tree (orbax items are trees); '__arch__' travels in meta
    nested_extras = traverse_util.unflatten_dict(
        {k: np.asarray(v) for k, v in extras.items() if not k.startswith("__")}, sep=".")
    if nested_extras:   # orbax refuses an empty tree, so a checkpoint without extras simply has no such item
        items["extras"] = ocp.args.StandardSave(nested_extras)
    meta["digests"] = {"variables": tree_digest(host_vars), **({"extras": tree_digest(nested_extras)}
                                                                 if nested_extras else {})}
    items["meta"] = ocp.args.JsonSave(_jsonable(meta))
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        ckptr.save(directory, ocp.args.Composite(**items))
    return directory


def is_converted_dir(path: str | os.PathLike) -> bool:
    """Whether `path` (local or a URL) holds a checkpoint written by :func:`save_variables`."""
    from .workdir import workdir_path

    path = workdir_path(path)
    return path.is_dir() and (path / "meta").is_dir() and (path / "variables").is_dir()


def load_variables(directory: str | os.PathLike) -> tuple[dict, dict, dict]:
    """-> (variables, extras, meta) from a directory (local or gs://) written by :func:`save_variables`, as host
    numpy arrays whatever devices wrote it."""
    from .workdir import checkpoint_location, workdir_path

    directory = workdir_path(directory).absolute()
    if not is_converted_dir(directory):
        raise CheckpointLoadError(f"{directory}: not a converted checkpoint (expected items {list(_ITEMS)})")
    arrays = ("variables", "extras") if (directory / "extras").is_dir() else ("variables",)
    try:
        restored = {item: restore_item(checkpoint_location(directory / item)) for item in arrays}
        restored["meta"] = _read_json_item(checkpoint_location(directory / "meta"))
    except Exception as exc:  # noqa: BLE001 - a damaged file surfaces as any of several orbax/tensorstore errors
        raise _unreadable(directory, "the converted checkpoint", exc,
                          "convert the official checkpoint again") from None
    meta = dict(restored["meta"] or {})
    stored = meta.get("digests") or {}
    for item in ("variables", "extras"):
        if item in stored and item in restored and tree_digest(_to_host(restored[item])) != stored[item]:
            raise CheckpointLoadError(f"{directory}: the arrays of '{item}' differ from the digest written with "
                                      "them (a damaged file); convert the official checkpoint again")
    variables = _to_host(restored["variables"])
    variables.setdefault("batch_stats", {})
    extras = {}
    if "extras" in restored:
        flat = traverse_util.flatten_dict(restored.get("extras") or {}, sep=".")
        extras = {k: np.asarray(v) for k, v in flat.items()}
    if "architecture" in meta:
        extras["__arch__"] = meta["architecture"]
    return variables, extras, meta


def training_checkpoint_dir(path: str | os.PathLike) -> Path:
    """The checkpoint folder of a training workdir: WORKDIR/checkpoints, or `path` itself when it is that folder
    (holds step subfolders); a local path or a URL (`grm_jax.workdir.workdir_path`)."""
    from .workdir import workdir_path

    path = workdir_path(path).absolute()
    if (path / CHECKPOINT_DIR).is_dir():
        return path / CHECKPOINT_DIR
    if _step_dirs(path):
        return path
    raise CheckpointLoadError(f"{path}: no orbax CheckpointManager steps found (a training workdir holds "
                              f"{CHECKPOINT_DIR}/<step>/{STATE_ITEM})")


def latest_training_step(path: str | os.PathLike) -> tuple[Any, int] | None:
    """(checkpoint folder, latest step) of a training workdir, or None when it has no checkpoint yet."""
    try:
        directory = training_checkpoint_dir(path)
    except CheckpointLoadError:
        return None
    steps = _step_dirs(directory)
    return (directory, steps[-1]) if steps else None


def load_training_variables(path: str | os.PathLike, step: int | None = None) -> tuple[dict, int]:
    """{'params', 'batch_stats'} of a training workdir's checkpoint (latest step by default), checked against the
    digests stored with it."""
    from .workdir import checkpoint_location

    directory = training_checkpoint_dir(path)
    steps = _step_dirs(directory)
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
        raise _unreadable(step_dir, "the training state", exc,
                          "use another step (--step) or another checkpoint") from None
    _verify_training_variables(step_dir, variables)
    return _to_host(variables), step


def _verify_training_variables(step_dir, variables: Mapping) -> None:
    """Check params / batch_stats against the digests stored in the step's meta item (when it has them)."""
    from .workdir import checkpoint_location

    if not (step_dir / META_ITEM).is_dir():
        return
    try:
        meta = _read_json_item(checkpoint_location(step_dir / META_ITEM)) or {}
    except Exception as exc:  # noqa: BLE001
        raise _unreadable(step_dir, "its meta item", exc, "use another step (--step) or another checkpoint") from None
    stored = {k: v for k, v in (meta.get("digests") or {}).items() if k in ("params", "batch_stats")}
    bad = _first_mismatch(_to_host(variables), stored)
    if bad is not None:
        raise CheckpointLoadError(f"{step_dir}: the digest of '{bad}' differs from the one written with it (a "
                                  "damaged checkpoint); use another step (--step) or another checkpoint")


def _looks_official(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith(_OFFICIAL_SUFFIXES)


def load_for_inference(path: str | os.PathLike, cfg=None, *, return_info: bool = False):
    """Variables for the tracker/evaluation from any of: a converted orbax directory, a training workdir
    (latest CheckpointManager step), or an official .pth/.pth.tar (converted on the fly; needs torch).

    Returns ``{'params', 'batch_stats'}`` (host numpy arrays); with ``return_info`` also a dict saying which
    format was read, the step or source, and the architecture when known. With ``cfg`` the official path
    also checks the checkpoint against the config.
    """
    variables, info = _load_any(path, cfg)
    refuse_non_finite(variables, path)
    return (variables, info) if return_info else variables


def refuse_non_finite(variables: Mapping, source: str | os.PathLike) -> None:
    """Raise CheckpointLoadError naming every tensor of `variables` that holds NaN or inf: such weights make
    every output NaN, and a tracker fed NaN boxes would write plausible-looking results."""
    bad = []
    for key, value in traverse_util.flatten_dict(plain_tree(variables)).items():
        array = np.asarray(value)
        if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
            count = int(array.size - np.count_nonzero(np.isfinite(array)))
            bad.append(f"{'/'.join(map(str, key))} ({count} of {array.size} values NaN/inf)")
    if bad:
        shown = "\n  ".join(bad[:20]) + (f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else "")
        raise CheckpointLoadError(f"{source}: {len(bad)} tensor(s) hold non-finite values:\n  {shown}")


def _load_any(path, cfg):
    from .workdir import is_url

    if is_url(path):   # a converted directory or a training workdir in a bucket
        if is_converted_dir(path):
            variables, _, meta = load_variables(path)
            return variables, {"format": "converted", "source": meta.get("source", str(path)),
                               "architecture": meta.get("architecture")}
        variables, step = load_training_variables(path)
        return variables, {"format": "training", "source": str(path), "step": step}
    path = Path(path)
    if not path.exists():
        raise CheckpointLoadError(f"{path}: no such file or directory")
    if path.is_file():
        if not _looks_official(path):
            raise CheckpointLoadError(f"{path}: a file, but not a PyTorch checkpoint (.pth/.pth.tar/.pt); "
                                      "converted checkpoints are directories")
        from grm_jax.convert import load_official_checkpoint

        variables, extras = load_official_checkpoint(path, conversion_architecture(cfg) if cfg is not None else None)
        return variables, {"format": "official", "source": str(path), "architecture": extras.get("__arch__")}
    if is_converted_dir(path):
        variables, extras, meta = load_variables(path)
        return variables, {"format": "converted", "source": meta.get("source", str(path)),
                           "architecture": meta.get("architecture")}
    variables, step = load_training_variables(path)
    return variables, {"format": "training", "source": str(path), "step": step}


# ------------------------------------------------------------------------------------ digests and full disk

DIGEST_ALGORITHM = "sha256(sorted path|dtype|shape + C-order bytes)"


def tree_digest(tree) -> str:
    """sha256 over every leaf of a tree: sorted '/'-joined path, dtype, shape, then the C-order bytes."""
    import hashlib

    import jax

    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    items = sorted((("/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)), np.asarray(v))
                   for path, v in flat)
    h = hashlib.sha256()
    for name, arr in items:
        arr = np.ascontiguousarray(arr)
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}\n".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def tree_digests(tree: Mapping) -> dict:
    """{top-level key: tree_digest} of a host tree (a training state, a converted checkpoint's items)."""
    return {str(k): tree_digest(v) for k, v in tree.items()}


def _first_mismatch(tree: Mapping, stored: Mapping) -> str | None:
    for key, digest in stored.items():
        if key in tree and tree_digest(tree[key]) != digest:
            return key
    return None


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, permissions); earlier checkpoints are intact."""


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or an exception it was raised from) says the disk or the quota is full."""
    import errno

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


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


# ------------------------------------------------------------------------------------ reading on any topology

def reader_restore_args(target):
    """Orbax restore arguments for `target`, built from the reader's side only: a leaf that carries a
    `jax.sharding.Sharding` (a `jax.ShapeDtypeStruct` or array placed on this process's mesh) is restored onto it,
    every other array leaf (numpy arrays, sharding-less `ShapeDtypeStruct`s, the item's own orbax metadata) as a
    host numpy array. The sharding file a checkpoint carries names the writer's devices; restoring onto it fails
    on any other device or process count, so it is never used: a checkpoint written on N devices and P processes
    reads on any other N and P."""
    import jax

    ocp = _ocp()
    shardings = jax.tree_util.tree_map(
        lambda leaf: leaf.sharding if isinstance(getattr(leaf, "sharding", None), jax.sharding.Sharding) else None,
        target)
    return ocp.checkpoint_utils.construct_restore_args(target, shardings)


def restore_item(location, target=None, *, keys: tuple[str, ...] | None = None):
    """The orbax PyTree item at `location` (a local path or an `epath.Path`) restored onto `target` (see
    `reader_restore_args`); without `target` every array as a host numpy array, and with `keys` only those
    top-level entries of the item (the rest is not read)."""
    ocp = _ocp()
    with quiet_orbax():
        if target is None:
            from etils import epath

            target = ocp.PyTreeCheckpointHandler().metadata(epath.Path(location)).tree
            if keys is not None:
                target = {k: target[k] for k in keys if k in target}
        with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as ckptr:
            return ckptr.restore(location, args=ocp.args.PyTreeRestore(
                item=target, restore_args=reader_restore_args(target), partial_restore=keys is not None))


def _read_json_item(location):
    ocp = _ocp()
    with quiet_orbax(), ocp.Checkpointer(ocp.JsonCheckpointHandler()) as ckptr:
        return ckptr.restore(location)


@contextlib.contextmanager
def quiet_orbax():
    """Keep orbax's log records and warnings (through absl's logger and the root logger) out of the user's
    terminal while it reads: they are notes for orbax developers (a step-metadata file an item folder does not
    have, sharding caveats), and every failed read also raises; that exception is what our message reports."""
    import warnings

    import orbax.checkpoint as ocp

    orbax_dir = os.path.dirname(os.path.dirname(os.path.abspath(ocp.__file__)))   # .../site-packages/orbax

    class FromOrbax(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not os.path.abspath(record.pathname).startswith(orbax_dir + os.sep)

    drop = FromOrbax()
    loggers = (logging.getLogger(), logging.getLogger("absl"))   # orbax logs through both
    for logger in loggers:
        logger.addFilter(drop)
    # before the read: a failed read's leftovers can print while its exception is still being raised
    _ignore_closed_loop_callbacks()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"orbax\.")
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


def _ignore_closed_loop_callbacks() -> None:
    """After a failed orbax read, the TensorStore reads still in flight finish on their own threads and post to
    orbax's event loop, closed by then; Python prints each as "RuntimeError: Event loop is closed" with a
    traceback, at any later moment: through `sys.unraisablehook` ("Exception ignored in: ...") or, from
    TensorStore's C++ callbacks, through `sys.excepthook`. They carry nothing (the failure itself was raised and
    is reported), so from then on exactly those are dropped; every other exception still prints."""
    import sys

    def closed_loop(exc) -> bool:
        return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"

    previous_unraisable = sys.unraisablehook
    if not getattr(previous_unraisable, "drops_closed_loop_callbacks", False):
        def unraisable_hook(unraisable):
            if not closed_loop(unraisable.exc_value):
                previous_unraisable(unraisable)
        unraisable_hook.drops_closed_loop_callbacks = True
        sys.unraisablehook = unraisable_hook
    previous_except = sys.excepthook
    if not getattr(previous_except, "drops_closed_loop_callbacks", False):
        def except_hook(exc_type, exc, tb):
            if not closed_loop(exc):
                previous_except(exc_type, exc, tb)
        except_hook.drops_closed_loop_callbacks = True
        sys.excepthook = except_hook


def machine_cause(exc: BaseException) -> str | None:
    """What about this machine keeps it from reading a checkpoint, when `exc` (or what it was raised from) says
    so: memory or access rights. None: nothing points at the machine."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, MemoryError) or "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
            return f"not enough memory ({_short(exc)})"
        if (isinstance(exc, PermissionError) or "PERMISSION_DENIED" in text or "Permission denied" in text
                or "UNAUTHENTICATED" in text or "credentials" in text.lower()):
            return f"no permission to read it ({_short(exc)})"
        exc = exc.__cause__ or exc.__context__
    return None


def _unreadable(where, what: str, exc: BaseException, damaged_hint: str) -> CheckpointLoadError:
    """The error for a failed read of `what` at `where`: this machine's limit when `exc` names one, else the
    bytes themselves are unreadable (a damaged checkpoint)."""
    cause = machine_cause(exc)
    if cause is not None:
        return CheckpointLoadError(f"{where}: cannot read {what} on this machine: {cause}; the checkpoint itself "
                                   "may be intact")
    return CheckpointLoadError(f"{where}: cannot read {what} ({_short(exc)}); the checkpoint is damaged: "
                               f"{damaged_hint}")


# ------------------------------------------------------------------------------------ training workdirs

CHECKPOINT_DIR = "checkpoints"
STATE_ITEM = "state"
META_ITEM = "meta"
DAMAGED_PREFIX = "damaged-"
UNFINISHED_WRITE_SUFFIX = ".orbax-checkpoint-tmp"   # orbax's name for a step folder being written


def _step_dirs(directory) -> list[int]:
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
        from .config import ConfigError

        ocp = _ocp()
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise ConfigError(f"TRAIN.KEEP_CHECKPOINTS={keep!r}: must be a number of checkpoints >= 1, or null to "
                              "keep all")
        from .workdir import checkpoint_location, workdir_path

        self.directory = workdir_path(workdir).absolute() / CHECKPOINT_DIR
        location = checkpoint_location(self.directory)   # what orbax is given (epath for gs://)
        self.keep, self.on_save, self.log = keep, on_save, log
        unfinished = self._remove_unfinished_writes()
        if unfinished:
            self.log(f"removed {len(unfinished)} unfinished checkpoint write(s) left by an interrupted run: "
                     + ", ".join(str(p) for p in unfinished))
        self.preexisting = _step_dirs(self.directory)
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
        import jax

        ocp = _ocp()
        self._raise_pending_errors()
        meta = dict(_jsonable(meta))
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
        import shutil

        import jax

        if jax.process_index() != 0 or not self.directory.is_dir():
            return []
        removed = sorted(self.directory.glob(f"*{UNFINISHED_WRITE_SUFFIX}*"), key=str)
        for tmp in removed:
            if isinstance(tmp, Path):
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                try:
                    tmp.rmtree()
                except Exception:  # noqa: BLE001 - as ignore_errors above
                    pass
        return removed

    def _write_failed(self, exc: BaseException) -> None:
        import shutil

        step = self._pending
        self._remove_unfinished_writes()
        self._pending = None
        intact = [s for s in _step_dirs(self.directory) if s != step]
        kept = f"the latest intact checkpoint is step {intact[-1]}" if intact else "no earlier checkpoint exists"
        if is_disk_full(exc) and isinstance(self.directory, Path):
            free = shutil.disk_usage(self.directory).free if self.directory.exists() else 0
            raise CheckpointWriteError(
                f"no space left on device writing checkpoint step {step} to {self.directory} ({free} bytes free); "
                f"the unfinished write was removed, {kept}; free space and rerun to resume") from None
        raise CheckpointWriteError(f"cannot write checkpoint step {step} to {self.directory}: {_short(exc)}; "
                                   f"{kept}") from exc

    # ------------------------------------------------------------------ read
    def restore(self, abstract_state) -> tuple[Any, int] | None:
        """(state, step) of the newest intact checkpoint, or None when the workdir has none.

        Damaged newer steps (unreadable, or a digest that differs) are moved to `damaged-<step>` and named; if
        no step restores, CheckpointLoadError lists every step's problem and nothing is moved."""
        import jax

        from .workdir import checkpoint_location

        self._mngr.reload()
        steps = sorted(self._mngr.all_steps(), reverse=True)
        problems: list[tuple[int, str]] = []
        for step in steps:
            step_dir = self.directory / str(step)
            try:   # read by the readers' own code, so the manager's item handlers stay those of its writes
                state = restore_item(checkpoint_location(step_dir / STATE_ITEM), abstract_state)
                meta = dict(_read_json_item(checkpoint_location(step_dir / META_ITEM)) or {})
            except Exception as exc:  # noqa: BLE001 - orbax reports a failed read in several types
                self._refuse_if_intact(step, exc)
                problems.append((step, f"unreadable ({_short(exc)})"))
                continue
            stored = meta.get("digests")
            if stored:
                bad = _first_mismatch(jax.device_get(state), stored)
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
                    from jax.experimental import multihost_utils

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
        from .workdir import checkpoint_location

        step_dir = self.directory / str(step)
        cause = machine_cause(exc)
        if cause is None:
            try:
                state = restore_item(checkpoint_location(step_dir / STATE_ITEM))
                meta = _read_json_item(checkpoint_location(step_dir / META_ITEM)) or {}
            except Exception as host_exc:  # noqa: BLE001 - unreadable bytes: a damaged step
                cause = machine_cause(host_exc)
                if cause is None:
                    return
            else:
                if _first_mismatch(state, meta.get("digests") or {}) is not None:
                    return
                raise CheckpointLoadError(
                    f"{step_dir}: the checkpoint is intact (its arrays match their digests) but does not restore "
                    f"onto this run's training state: {_short(exc)}; nothing was moved") from None
        raise CheckpointLoadError(f"{step_dir}: cannot restore the checkpoint on this machine: {cause}; nothing "
                                  "was moved") from None

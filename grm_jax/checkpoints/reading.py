"""Reading orbax checkpoint items on any machine: restore onto the reader's devices (never the writer's), keep
orbax's notes for its developers out of the terminal, and tell "cannot read on this machine" (memory, access
rights) from "damaged" (unreadable bytes)."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from typing import Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from ..convert.layout import plain_tree
from ..errors import UserError


class CheckpointLoadError(UserError, ValueError):
    """A checkpoint that cannot be read: not one of the formats `load_for_inference` accepts, damaged, or not
    readable on this machine (the message names the path and says which)."""


def to_host(tree):
    """A tree of host numpy arrays (C order) with plain dicts."""
    return jax.tree_util.tree_map(lambda x: np.array(x, order="C"), plain_tree(tree))


def jsonable(obj):
    """`obj` with every value JSON can hold as it is and everything else as its text (numpy scalars as Python's)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def reader_restore_args(target):
    """Orbax restore arguments for `target`, built from the reader's side only: a leaf that carries a
    `jax.sharding.Sharding` (a `jax.ShapeDtypeStruct` or array placed on this process's mesh) is restored onto it,
    every other array leaf (numpy arrays, sharding-less `ShapeDtypeStruct`s, the item's own orbax metadata) as a
    host numpy array. The sharding file a checkpoint carries names the writer's devices; restoring onto it fails
    on any other device or process count, so it is never used: a checkpoint written on N devices and P processes
    reads on any other N and P."""
    shardings = jax.tree_util.tree_map(
        lambda leaf: leaf.sharding if isinstance(getattr(leaf, "sharding", None), jax.sharding.Sharding) else None,
        target)
    return ocp.checkpoint_utils.construct_restore_args(target, shardings)


def restore_item(location, target=None, *, keys: tuple[str, ...] | None = None):
    """The orbax PyTree item at `location` (a local path or an `epath.Path`) restored onto `target` (see
    `reader_restore_args`); without `target` every array as a host numpy array, and with `keys` only those
    top-level entries of the item (the rest is not read)."""
    with quiet_orbax():
        if target is None:
            target = ocp.PyTreeCheckpointHandler().metadata(epath.Path(location)).tree
            if keys is not None:
                target = {k: target[k] for k in keys if k in target}
        with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as ckptr:
            return ckptr.restore(location, args=ocp.args.PyTreeRestore(
                item=target, restore_args=reader_restore_args(target), partial_restore=keys is not None))


def read_json_item(location):
    """The JSON item at `location` (a local path or an `epath.Path`)."""
    with quiet_orbax(), ocp.Checkpointer(ocp.JsonCheckpointHandler()) as ckptr:
        return ckptr.restore(location)


@contextlib.contextmanager
def quiet_orbax():
    """Keep orbax's log records and warnings (through absl's logger and the root logger) out of the user's
    terminal while it reads: they are notes for orbax developers (a step-metadata file an item folder does not
    have, sharding caveats), and every failed read also raises; that exception is what our message reports."""
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
            return f"not enough memory ({short_error(exc)})"
        if (isinstance(exc, PermissionError) or "PERMISSION_DENIED" in text or "Permission denied" in text
                or "UNAUTHENTICATED" in text or "credentials" in text.lower()):
            return f"no permission to read it ({short_error(exc)})"
        exc = exc.__cause__ or exc.__context__
    return None


def unreadable(where, what: str, exc: BaseException, damaged_hint: str) -> CheckpointLoadError:
    """The error for a failed read of `what` at `where`: this machine's limit when `exc` names one, else the
    bytes themselves are unreadable (a damaged checkpoint)."""
    cause = machine_cause(exc)
    if cause is not None:
        return CheckpointLoadError(f"{where}: cannot read {what} on this machine: {cause}; the checkpoint itself "
                                   "may be intact")
    return CheckpointLoadError(f"{where}: cannot read {what} ({short_error(exc)}); the checkpoint is damaged: "
                               f"{damaged_hint}")


def short_error(exc: BaseException) -> str:
    """`Type: first line of the message` (at most 300 characters)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__

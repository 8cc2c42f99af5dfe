"""The file-system layer of a training workdir: a local folder, or a URL (`gs://bucket/run`; s3:// and az://
as far as tf.io.gfile reaches them).

`workdir_path(text)` gives a `pathlib.Path` for a local path (the operating system does the work: `flock`,
fsync + rename) and an `etils.epath.Path` for a URL (every operation through `tf.io.gfile`, as orbax does);
both answer the same pathlib calls (`/`, `name`, `parent`, `exists`, `is_file`, `is_dir`, `iterdir`, `glob`,
`mkdir`, `open`, `read_text`, `write_text`, `rename`, `replace`, `unlink`), so the loop, the metrics writer and
the checkpoint code handle either. Orbax writes the checkpoint arrays itself through etils.epath and
TensorStore, which reach local paths and gs:// only (`orbax/checkpoint/_src/serialization/tensorstore_utils.py`:
a non-gs path must be absolute), so `checkpoint_location` refuses other URLs before anything is written.

`WorkdirLock` keeps one run per workdir: `flock` on a local `.lock`; on an object store (no flock there) an
owner object with a heartbeat (`ObjectStoreLock`, see its limits).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Union

from etils import epath

from .deadlines import check_bucket
from .errors import ConfigError, WorkdirBusyError

LOCK_FILE = ".lock"
# the URL schemes etils.epath reaches (through tf.io.gfile)
URL_SCHEMES = ("gs", "s3", "az")


def is_url(path) -> bool:
    """Whether `path` (text or a path object) names a location under a URL (`scheme://...`)."""
    return isinstance(path, (str, os.PathLike)) and "://" in os.fspath(path)


Workdir = Union[Path, epath.Path]


def workdir_path(path) -> Workdir:
    """A local path as `pathlib.Path`, a URL as `etils.epath.Path` (a `Path` made from a URL has lost its '//').

    The first access of this process to a URL's bucket is made here, within a deadline (grm_jax/deadlines.py:
    a bucket that does not answer is named instead of waited for)."""
    if isinstance(path, Path) or (isinstance(path, epath.Path) and is_url(path)):
        return path
    text = os.fspath(path)
    if "://" not in text:
        return Path(text)
    scheme, _, rest = text.partition("://")
    if scheme not in URL_SCHEMES or not rest.strip("/"):
        raise ValueError(f"{text!r}: not a URL of the form scheme://bucket/path with scheme one of "
                         f"{', '.join(URL_SCHEMES)}")
    check_bucket(text)
    return epath.Path(text)


def absolute_path(path) -> Workdir:
    """`workdir_path(path)`, made absolute when it is local (a URL is absolute already)."""
    path = workdir_path(path)
    return path if is_url(path) else path.absolute()


def open_file(path: Workdir, mode: str):
    """A file object of `path` that stays open until the caller closes it (a log written step by step): the
    builtin `open` for a local path, a `tf.io.gfile.GFile` for a URL (`epath.Path.open` of a URL is only a
    context manager)."""
    if not is_url(path):
        return open(path, mode)
    import tensorflow as tf   # not at module top: importing grm_jax must not start TensorFlow (quiet_startup first)

    return tf.io.gfile.GFile(os.fspath(path), mode)


def checkpoint_location(directory: Workdir):
    """What orbax is given for a checkpoint folder: the absolute local path, or an `etils.epath.Path` for gs://;
    any other URL is refused (ConfigError naming it) because orbax's TensorStore writer cannot reach it."""
    if not is_url(directory):
        return Path(directory).absolute()
    if str(directory).startswith("gs://"):
        return epath.Path(directory)
    raise ConfigError(f"{directory}: checkpoints can be written to a local path (or a mounted bucket) or to gs:// "
                      "only (orbax writes the arrays with TensorStore's file and gcs drivers); choose such a "
                      "--workdir")


def write_text_atomic(path: Workdir, text: str) -> None:
    """Whole file or nothing (a full disk must not leave a truncated config.yaml that a rerun would read). An
    object store makes an object visible only once its upload is complete, so a URL is written directly."""
    if is_url(path):
        path.write_text(text)
        return
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------------------------- locks

def _in_use(workdir, holder: str, how_released: str) -> WorkdirBusyError:
    return WorkdirBusyError(f"{workdir} is in use by another training run ({holder}); two runs on one workdir would "
                       f"write the same checkpoints. Wait for it to end or stop it ({how_released}), or choose "
                       "another --workdir")


class LocalLock:
    """An exclusive `flock` on WORKDIR/.lock for the life of a run: a second run on the same workdir refuses at
    start, naming the holder. The kernel drops the lock when its process dies, so a killed run (SIGKILL, node
    loss with a local disk) never blocks the next one; the pid/host written in the file is for the message only."""

    def __init__(self, workdir: Path):
        self.path = Path(workdir) / LOCK_FILE
        self._fd = None

    def acquire(self) -> "LocalLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            raise _in_use(self.path.parent, holder, "the lock goes with its process") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}, started "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n".encode(), 0)
        self._fd = fd
        return self

    def check(self) -> None:
        """The kernel holds a flock until release: nothing can take it over."""

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)   # closing drops the flock; the file stays (removing it would race a new holder)
            self._fd = None


class ObjectStoreLock:
    """One run per workdir on an object store: WORKDIR/.lock is an owner object (JSON: a random token, pid,
    host, start time) that the holder rewrites every `heartbeat_s` from a background thread and deletes at the end.

    A run starting finds either no lock object, or one whose last heartbeat (the time recorded in it) is older
    than `stale_s` (its holder was killed): it writes its own, waits `settle_s`, and reads it back; if
    another run's token is there instead, it refuses. Otherwise the lock is held; `check()` (called before each
    checkpoint write) raises if another run has since taken it over.

    Limits (tf.io.gfile has no conditional writes): two runs can both pass only if one of them takes longer than
    `settle_s` between finding the workdir free and writing its token; a killed run blocks the workdir for up to
    `stale_s` (the message says when it counts as stale, and deleting the object frees it at once); the
    heartbeat time is the writer's clock (`time.time()` in the record), so hosts whose clocks differ by more
    than `stale_s` break the staleness test."""

    heartbeat_s = 60.0
    stale_s = 600.0
    settle_s = 2.0

    def __init__(self, workdir: epath.Path):
        self.workdir = workdir
        self.path = workdir / LOCK_FILE
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread = None
        self._lost: str | None = None
        self._record = {"token": self.token, "pid": os.getpid(), "host": socket.gethostname(),
                        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}

    def _read(self) -> tuple[dict | None, float]:
        """(owner record or None when there is no lock object, seconds since its last heartbeat)."""
        try:
            text = self.path.read_text()
        except Exception:   # noqa: BLE001 - NotFoundError: no lock (tf.errors are no OSError)
            if self.path.exists():
                raise
            return None, 0.0
        try:
            record = json.loads(text)
            age = time.time() - float(record["heartbeat"])
        except (ValueError, KeyError, TypeError):   # not our format (torn or foreign): counts as held now
            record, age = {}, 0.0
        return record, age

    @staticmethod
    def _describe(record: dict, age: float) -> str:
        return (f"pid {record.get('pid', '?')} on host {record.get('host', '?')}, started "
                f"{record.get('started', '?')}, last heartbeat {age:.0f} s ago")

    def _write(self) -> None:
        self.path.write_text(json.dumps({**self._record, "heartbeat": time.time()}) + "\n")

    def acquire(self) -> "ObjectStoreLock":
        record, age = self._read()
        if record is not None and age < self.stale_s:
            raise _in_use(self.workdir, self._describe(record, age),
                          f"a killed run's lock counts as stale {self.stale_s:.0f} s after its last heartbeat; "
                          f"delete {self.path} if no run uses the workdir")
        if record is not None:
            print(f"warning: {self.path}: taking over the lock of a run without a heartbeat for {age:.0f} s "
                  f"({self._describe(record, age)})", file=sys.stderr, flush=True)
        self._write()
        time.sleep(self.settle_s)
        record, age = self._read()
        if record is None or record.get("token") != self.token:
            raise _in_use(self.workdir, self._describe(record or {}, age) + ", started at the same time",
                          "it holds the lock object")
        self._thread = threading.Thread(target=self._beat, name="grm-workdir-lock", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s) and self._beat_once():
            pass

    def _beat_once(self) -> bool:
        """Rewrite the lock object with a new heartbeat time if it is still ours; False once it is not."""
        try:
            record, age = self._read()
            if record is None or record.get("token") != self.token:
                self._lost = f"{self.path} was taken over by another run ({self._describe(record or {}, age)})"
                return False
            self._write()
        except Exception as err:   # noqa: BLE001 - a failed heartbeat is retried at the next beat
            print(f"warning: {self.path}: heartbeat failed ({type(err).__name__}: {err})", file=sys.stderr,
                  flush=True)
        return True

    def check(self) -> None:
        if self._lost is not None:
            raise WorkdirBusyError(f"{self._lost}; stopping before the next checkpoint write (two runs on one workdir "
                              "would write the same checkpoints)")

    def release(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        try:
            record, _ = self._read()
            if record is not None and record.get("token") == self.token:
                self.path.unlink(missing_ok=True)
        except Exception as err:   # noqa: BLE001 - the run is over; a left lock only goes stale
            print(f"warning: could not remove {self.path} ({type(err).__name__}: {err}); it counts as stale "
                  f"{self.stale_s:.0f} s after the run ended", file=sys.stderr, flush=True)


def WorkdirLock(workdir) -> "LocalLock | ObjectStoreLock":   # noqa: N802 - the class callers construct
    """The lock of a workdir: `LocalLock` (flock) for a local path, `ObjectStoreLock` for a URL."""
    workdir = workdir_path(workdir)
    return ObjectStoreLock(workdir) if is_url(workdir) else LocalLock(workdir)

"""Raw tracking results in the official layout (`lib/test/evaluation/running.py: _save_tracker_output`).

`<dir>/<seq>.txt`: one `x,y,w,h` line per frame (frame 0 = the init box), values truncated toward zero to int and
written `%d` comma-separated. GOT-10k and TrackingNet sequences go into a `got10k/` or `trackingnet/` subfolder
and also get `<seq>_time.txt` (seconds per frame, `%f`). Readers accept tab or comma separators and float values,
so results published by other trackers load too.
"""
from __future__ import annotations

import fcntl
import io
import os
import socket
from pathlib import Path

import numpy as np

from ..errors import UserError

__all__ = ["RawResultError", "ResultsFolderBusy", "ResultsFolderLock", "atomic_write_text",
           "SUBFOLDER_DATASETS", "result_dir", "result_path", "write_result", "read_result",
           "read_times", "has_result", "read_results", "DIVISION_SUFFIX", "division_path", "write_division",
           "read_division"]

# Datasets whose results the official runner writes into a subfolder named after the dataset, with time files.
SUBFOLDER_DATASETS = ("got10k", "trackingnet")


class RawResultError(UserError, ValueError):
    """A raw-result file is missing or malformed."""


class ResultsFolderBusy(RawResultError):
    """Another run holds the lock of a results folder."""


def result_dir(base: str | os.PathLike, dataset: str) -> Path:
    """Folder of one dataset's result files under a tracker's results folder."""
    base = Path(base)
    return base / dataset if dataset in SUBFOLDER_DATASETS else base


def result_path(base: str | os.PathLike, dataset: str, name: str) -> Path:
    return result_dir(base, dataset) / f"{name}.txt"


def write_result(base: str | os.PathLike, dataset: str, name: str, boxes, times=None) -> Path:
    """Write one sequence's boxes (T, 4) (and per-frame times for GOT-10k / TrackingNet) atomically."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not np.isfinite(boxes).all():
        raise RawResultError(f"sequence {name}: non-finite boxes cannot be written")
    path = result_path(base, dataset, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    if dataset in SUBFOLDER_DATASETS and times is not None:
        # the time file first: the box file is what marks a sequence as done
        _atomic_savetxt(path.with_name(f"{name}_time.txt"), np.asarray(times, np.float64).reshape(-1), fmt="%f")
    _atomic_savetxt(path, boxes.astype(int), fmt="%d")
    return path


def _atomic_savetxt(path: Path, array: np.ndarray, fmt: str) -> None:
    buf = io.StringIO()
    np.savetxt(buf, array, delimiter=",", fmt=fmt)
    atomic_write_text(path, buf.getvalue())


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` under a temporary name, flush it to disk, then rename it over `path`: an interrupted run or a
    full disk never leaves a truncated file that a resumed run would take for a finished one. On failure the
    temporary file is removed and an OSError naming `path` is raised."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())   # a full disk shows up here (delayed allocation), not at write()
        os.replace(tmp, path)
    except OSError as err:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise OSError(err.errno, err.strerror or str(err), str(path)) from None
    return path


class ResultsFolderLock:
    """An exclusive lock on a results folder (`fcntl.flock` on `<folder>/.lock`), held for a tracking run so that
    two runs never write the same folder. The kernel drops the lock when its process dies, so a lock left by a
    killed run never blocks the next one."""

    def __init__(self, folder: str | os.PathLike, tool: str = "track.py"):
        self.path = Path(folder) / ".lock"
        self.tool = tool
        self._fh = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise ResultsFolderBusy(f"{self.path.parent} is being written by {holder} (lock {self.path}); wait "
                                    "for it to finish or use another results folder") from None
        try:   # who holds it, for the message a second run prints; the lock itself does not need it
            fh.seek(0)
            fh.truncate()
            fh.write(f"{self.tool} pid {os.getpid()} on {socket.gethostname()}\n")
            fh.flush()
        except OSError:
            pass
        self._fh = fh
        return self

    def __exit__(self, *exc):
        if self._fh is not None:
            try:
                self._fh.close()   # releases the flock; the file stays (removing it would race a waiter)
            except OSError:
                pass               # an unflushed holder note on a full disk; the descriptor is closed anyway
            self._fh = None
        return False


def has_result(base: str | os.PathLike, dataset: str, name: str) -> bool:
    return result_path(base, dataset, name).is_file()


def read_result(path: str | os.PathLike) -> np.ndarray:
    """(T, 4) float64 boxes from a raw-result file; tab, comma or whitespace separated, int or float values."""
    path = Path(path)
    if not path.is_file():
        raise RawResultError(f"result file not found: {path}")
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise RawResultError(f"{path}: not a text result file (byte {err.start} is not UTF-8 text)") from None
    if "\x00" in text:
        raise RawResultError(f"{path}: not a text result file (it holds NUL bytes)")
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        parts = [p for p in line.replace("\t", ",").replace(" ", ",").split(",") if p != ""]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise RawResultError(f"{path}:{lineno}: not numbers: {line!r}") from None
        if len(values) != 4:
            raise RawResultError(f"{path}:{lineno}: expected 4 values (x,y,w,h), got {len(values)}: {line!r}")
        rows.append(values)
    if not rows:
        raise RawResultError(f"{path}: empty result file")
    return np.asarray(rows, dtype=np.float64)


def read_times(path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise RawResultError(f"time file not found: {path}")
    try:
        times = np.loadtxt(path, delimiter=None, dtype=np.float64, ndmin=1)
    except ValueError as err:   # UnicodeDecodeError (a binary file) included
        raise RawResultError(f"{path}: malformed time file ({err})") from None
    if times.ndim != 1 or times.size == 0:
        raise RawResultError(f"{path}: malformed time file (expected one number per line, got shape "
                             f"{list(times.shape)})")
    return times


def read_results(base: str | os.PathLike, dataset: str, names, *, missing_ok: bool = False) -> dict[str, np.ndarray]:
    """{sequence: boxes} for the given sequence names; a missing file raises unless `missing_ok`."""
    out = {}
    for name in names:
        path = result_path(base, dataset, name)
        if not path.is_file():
            # Published results of other trackers are often flat even for GOT-10k / TrackingNet.
            flat = Path(base) / f"{name}.txt"
            if flat.is_file():
                path = flat
            elif missing_ok:
                continue
            else:
                raise RawResultError(f"no result for sequence {name}: {path} not found")
        out[name] = read_result(path)
    return out


# ------------------------------------------------------------------------------- token-division statistics
DIVISION_SUFFIX = "_division.txt"


def division_path(base: str | os.PathLike, dataset: str, name: str) -> Path:
    """`<seq>_division.txt` beside the sequence's result file."""
    return result_dir(base, dataset) / f"{name}{DIVISION_SUFFIX}"


def write_division(base: str | os.PathLike, dataset: str, name: str, fractions, layers) -> Path:
    """Per frame (rows) and dividing layer (columns) the fraction of search tokens that interact with the template.
    Row 0 (the initial frame: no search region is processed) is NaN. A `# layers:` line names the block index of
    each column."""
    fractions = np.asarray(fractions, np.float64).reshape(len(fractions), -1)
    path = division_path(base, dataset, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    buf.write("# layers: " + ",".join(str(int(layer)) for layer in layers) + "\n")
    np.savetxt(buf, fractions, delimiter=",", fmt="%.6f")
    atomic_write_text(path, buf.getvalue())
    return path


def read_division(path: str | os.PathLike) -> tuple[np.ndarray, list[int]]:
    """(fractions (T, L) float64 with NaN row 0, layer block indices) of a `_division.txt` file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RawResultError(f"division file not found: {path}") from None
    except UnicodeDecodeError:
        raise RawResultError(f"{path}: not a text division file") from None
    layers: list[int] = []
    rows = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("#"):
            key, _, value = line[1:].partition(":")
            if key.strip() == "layers":
                try:
                    layers = [int(v) for v in value.split(",") if v.strip()]
                except ValueError:
                    raise RawResultError(f"{path}:{lineno}: malformed layers line {line!r}") from None
            continue
        if not line:
            continue
        try:
            rows.append([float(v) for v in line.split(",")])
        except ValueError:
            raise RawResultError(f"{path}:{lineno}: not numbers: {line!r}") from None
        if layers and len(rows[-1]) != len(layers):
            raise RawResultError(f"{path}:{lineno}: {len(rows[-1])} values for {len(layers)} layers")
    if not rows:
        raise RawResultError(f"{path}: empty division file")
    return np.asarray(rows, np.float64), layers or list(range(len(rows[0])))

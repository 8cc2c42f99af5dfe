"""Raw tracking results in the official layout (`lib/test/evaluation/running.py: _save_tracker_output`).

`<dir>/<seq>.txt`: one `x,y,w,h` line per frame (frame 0 = the init box), values truncated toward zero to int and
written `%d` comma-separated. GOT-10k and TrackingNet sequences go into a `got10k/` or `trackingnet/` subfolder
and also get `<seq>_time.txt` (seconds per frame, `%f`). Readers accept tab or comma separators and float values,
so results published by other trackers load too.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["RawResultError", "SUBFOLDER_DATASETS", "result_dir", "result_path", "write_result", "read_result",
           "read_times", "has_result", "read_results"]

# Datasets whose results the official runner writes into a subfolder named after the dataset, with time files.
SUBFOLDER_DATASETS = ("got10k", "trackingnet")


class RawResultError(ValueError):
    """A raw-result file is missing or malformed."""


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
    _atomic_savetxt(path, boxes.astype(int), fmt="%d")
    if dataset in SUBFOLDER_DATASETS and times is not None:
        _atomic_savetxt(path.with_name(f"{name}_time.txt"), np.asarray(times, np.float64).reshape(-1), fmt="%f")
    return path


def _atomic_savetxt(path: Path, array: np.ndarray, fmt: str) -> None:
    # Written under a temporary name first so an interrupted run never leaves a truncated file that a resumed
    # run would take for a finished sequence.
    tmp = path.with_name(path.name + ".part")
    np.savetxt(tmp, array, delimiter=",", fmt=fmt)
    os.replace(tmp, path)


def has_result(base: str | os.PathLike, dataset: str, name: str) -> bool:
    return result_path(base, dataset, name).is_file()


def read_result(path: str | os.PathLike) -> np.ndarray:
    """(T, 4) float64 boxes from a raw-result file; tab, comma or whitespace separated, int or float values."""
    path = Path(path)
    if not path.is_file():
        raise RawResultError(f"result file not found: {path}")
    rows = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            text = line.strip()
            if not text:
                continue
            parts = [p for p in text.replace("\t", ",").replace(" ", ",").split(",") if p != ""]
            try:
                values = [float(p) for p in parts]
            except ValueError:
                raise RawResultError(f"{path}:{lineno}: not numbers: {text!r}") from None
            if len(values) != 4:
                raise RawResultError(f"{path}:{lineno}: expected 4 values (x,y,w,h), got {len(values)}: {text!r}")
            rows.append(values)
    if not rows:
        raise RawResultError(f"{path}: empty result file")
    return np.asarray(rows, dtype=np.float64)


def read_times(path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise RawResultError(f"time file not found: {path}")
    try:
        return np.atleast_1d(np.loadtxt(path, delimiter=None, dtype=np.float64))
    except ValueError as err:
        raise RawResultError(f"{path}: malformed time file ({err})") from None


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

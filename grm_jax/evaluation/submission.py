"""Server submission archives for GOT-10k test and TrackingNet test (official `lib/test/utils/transform_got10k.py:
transform_got10k`, `transform_trackingnet.py: transform_trackingnet`).

GOT-10k: `<seq>/<seq>_001.txt` (int boxes, comma, `%d`) and `<seq>/<seq>_time.txt` for every sequence, at the root
of the zip. TrackingNet: `<seq>.txt` (int boxes, comma) at the root. Unlike the official converters the source
results are left in place; files with `all` in the name (all-query dumps) are skipped, as there.
"""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

from .raw_results import RawResultError, read_result, read_times
from ..errors import UserError

__all__ = ["pack_got10k", "pack_trackingnet", "SubmissionError"]


class SubmissionError(UserError, ValueError):
    """The results folder cannot be turned into a submission."""


def _box_text(boxes: np.ndarray) -> str:
    buf = io.StringIO()
    np.savetxt(buf, boxes.astype(int), fmt="%d", delimiter=",")
    return buf.getvalue()


def _result_files(src: Path) -> list[Path]:
    if not src.is_dir():
        raise SubmissionError(f"results folder not found: {src}")
    files = sorted(p for p in src.iterdir() if p.suffix == ".txt" and "all" not in p.name
                   and not p.name.endswith("_time.txt"))
    if not files:
        raise SubmissionError(f"no <sequence>.txt result files in {src}")
    return files


def _check_expected(found: list[str], expected, src: Path) -> None:
    if expected is None:
        return
    missing = sorted(set(expected) - set(found))
    if missing:
        raise SubmissionError(f"{src}: {len(missing)} sequences have no result, e.g. {missing[:5]}")


def _checked_boxes(f: Path, expected) -> np.ndarray:
    """The boxes of one result file, refused (naming the file and row) when a row is not finite or the row count
    differs from the sequence's frame count (`expected`: {sequence: frames}, when known)."""
    try:
        boxes = read_result(f)
    except RawResultError as err:
        raise SubmissionError(str(err)) from None
    bad = np.flatnonzero(~np.isfinite(boxes).all(axis=1))
    if bad.size:
        raise SubmissionError(f"{f}: {bad.size} row(s) are not finite, e.g. row {bad[0] + 1}: "
                              f"{boxes[bad[0]].tolist()} (the server would read them as garbage integers)")
    frames = expected.get(f.stem) if isinstance(expected, dict) else None
    if frames is not None and len(boxes) != frames:
        raise SubmissionError(f"{f}: {len(boxes)} rows but the sequence has {frames} frames")
    return boxes


def _checked_times(t: Path, rows: int) -> None:
    try:
        times = read_times(t)
    except RawResultError as err:
        raise SubmissionError(str(err)) from None
    if len(times) != rows:
        raise SubmissionError(f"{t}: {len(times)} times but {t.with_name(t.name[:-len('_time.txt')] + '.txt')} "
                              f"has {rows} rows")
    bad = np.flatnonzero(~np.isfinite(times) | (times < 0))
    if bad.size:
        raise SubmissionError(f"{t}: line {bad[0] + 1} is not a non-negative time: {float(times[bad[0]])}")


def _pack(src, out_zip, expected, add_sequence) -> Path:
    """Check the result folder, then write the archive beside its final name and rename it when complete, so an
    interrupted run never leaves a zip that looks finished. `add_sequence(zf, result_file, boxes)` writes one."""
    src, out_zip = Path(src), Path(out_zip)
    files = _result_files(src)
    _check_expected([f.stem for f in files], expected, src)
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_zip.with_name(out_zip.name + ".part")
    try:
        _write_zip(tmp, files, expected, add_sequence)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out_zip)
    return out_zip


def _write_zip(tmp: Path, files, expected, add_sequence) -> None:
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            add_sequence(zf, f, _checked_boxes(f, expected))


def pack_got10k(src: str | os.PathLike, out_zip: str | os.PathLike, expected=None, require_times: bool = True) -> Path:
    """Zip `src/<seq>.txt` (+ `<seq>_time.txt`) in the GOT-10k server layout. Returns the zip path.

    `expected`: sequence names that must have a result, or {name: frame count} to check row counts too."""
    def add(zf, f, boxes):
        seq = f.stem
        zf.writestr(f"{seq}/{seq}_001.txt", _box_text(boxes))
        t = f.with_name(f"{seq}_time.txt")
        if t.is_file():
            _checked_times(t, len(boxes))
            zf.write(t, f"{seq}/{seq}_time.txt")
        elif require_times:
            raise SubmissionError(f"GOT-10k submission needs {t} (written by scripts/track.py)")
    return _pack(src, out_zip, expected, add)


def pack_trackingnet(src: str | os.PathLike, out_zip: str | os.PathLike, expected=None) -> Path:
    """Zip `src/<seq>.txt` as int boxes at the zip root (TrackingNet server layout). Returns the zip path."""
    return _pack(src, out_zip, expected, lambda zf, f, boxes: zf.writestr(f"{f.stem}.txt", _box_text(boxes)))

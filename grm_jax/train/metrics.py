"""The training loop's one metrics writer: each reported step goes to the console line, TensorBoard and the JSON
history through `MetricWriter.write_scalars(step, scalars)`.

The interface follows `clu.metric_writers.MetricWriter` (write_scalars / flush / close). clu itself is not used:
`import clu.metric_writers` needs the `tensorboard` package (server, Werkzeug, Markdown), which our TensorFlow
does not pull in, and clu's TensorBoard writer (`tf.summary`) would need the same full-disk guard as ours.

Scalar names are the TensorBoard tags: `loss/{total,giou,l1,focal[,entropy]}`, `IoU`, `grad_norm`, `lr/<group>`,
`interact_frac/layer<i>`, `step_time` (seconds), `pairs_per_s`, `data/{bad_frames,redraws}` (samples the input
pipeline redrew on this host since the run started). A sink that cannot write (e.g. no space left on the device)
prints one warning naming its file and stops; training goes on (the checkpoints report their own write errors).
A workdir URL (grm_jax/workdir.py) is written through etils.epath (tf.io.gfile): the event file as a TFRecord file
of `Event` protos (tensorboardX reaches buckets only through boto3 / google-cloud-storage), the history in append
mode.
"""
from __future__ import annotations

import contextlib
import json
import socket
import struct
import sys
import time
from typing import Mapping

from tqdm import tqdm

from ..workdir import is_url, open_file, workdir_path

TENSORBOARD_DIR = "tb"
HISTORY_FILE = "history.jsonl"

# console line: "step S/N total .. giou .. l1 .. focal .. iou .. grad_norm ..[ entropy ..] lr a/b interact [..]
# 123ms 45.6 pairs/s[ skipped: B bad frames, R redraws]" (tests parse "step S/N total X" and the skipped counts)
_CONSOLE_NAMES = (("loss/total", "total"), ("loss/giou", "giou"), ("loss/l1", "l1"), ("loss/focal", "focal"),
                  ("IoU", "iou"), ("grad_norm", "grad_norm"), ("loss/entropy", "entropy"))


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def console_line(step: int, total_steps: int, scalars: Mapping[str, float]) -> str:
    parts = [f"step {step}/{total_steps}"]
    parts += [f"{short} {_fmt(scalars[name])}" for name, short in _CONSOLE_NAMES if name in scalars]
    lrs = [v for k, v in scalars.items() if k.startswith("lr/")]
    if lrs:
        parts.append("lr " + "/".join(_fmt(v) for v in lrs))
    fracs = [round(float(v), 3) for k, v in scalars.items() if k.startswith("interact_frac/")]
    if fracs:
        parts.append(f"interact {fracs}")
    if "step_time" in scalars:
        parts.append(f"{scalars['step_time'] * 1e3:.0f}ms")
    if "pairs_per_s" in scalars:
        parts.append(f"{scalars['pairs_per_s']:.1f} pairs/s")
    bad, redraws = int(scalars.get("data/bad_frames", 0)), int(scalars.get("data/redraws", 0))
    if bad or redraws:
        parts.append(f"skipped: {bad} bad frames, {redraws} redraws")
    return " ".join(parts)


def _write_errors() -> tuple:
    """What a failed write raises: OSError locally, tf.errors.OpError through tf.io.gfile."""
    # not at module top: importing the trainer must not start TensorFlow (quiet_startup() sets its log level first)
    import tensorflow as tf

    return (OSError, tf.errors.OpError)


class _UrlEventsWriter:
    """tensorboardX's `EventsWriter` interface (write_event / flush / close) on a file under a URL
    (`grm_jax.workdir.open_file`), framed as tensorboardX's `RecordWriter` frames a TFRecord (length, masked CRC32C
    of the length, data, masked CRC32C of the data); the file name follows tensorboardX's
    (`events.out.tfevents.<time>.<host>`)."""

    def __init__(self, file_prefix):
        from tensorboardX.proto.event_pb2 import Event   # optional dependency

        self._file = open_file(file_prefix.with_name(f"{file_prefix.name}.out.tfevents.{str(time.time())[:10]}."
                                                     f"{socket.gethostname()}"), "wb")
        self.write_event(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def write_event(self, event) -> None:
        from tensorboardX.record_writer import masked_crc32c   # optional dependency

        data = event.SerializeToString()
        header = struct.pack("Q", len(data))
        self._file.write(header + struct.pack("I", masked_crc32c(header)) + data
                         + struct.pack("I", masked_crc32c(data)))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class _GuardedSink:
    """A metrics file behind `guarded()`: its first failed write prints one warning naming the file and ends the
    sink (later calls do nothing); training goes on. Subclasses set `what`, open `handle` and write `_write`."""

    what = "metrics"

    def __init__(self, path):
        self.path = path
        self.handle = None

    @contextlib.contextmanager
    def guarded(self):
        try:
            yield
        except _write_errors() as err:
            self._failed(err)

    def _failed(self, err: Exception) -> None:
        reason = getattr(err, "strerror", None) or getattr(err, "message", None) or err
        print(f"warning: cannot write {self.what} to {self.path} ({reason}); training goes on without them",
              file=sys.stderr, flush=True)
        handle, self.handle = self.handle, None
        if handle is not None:
            try:
                handle.close()
            except _write_errors():
                pass

    def _write(self, step: int, scalars: Mapping[str, float]) -> None:
        raise NotImplementedError

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        if self.handle is not None:
            with self.guarded():
                self._write(step, scalars)

    def flush(self) -> None:
        if self.handle is not None:
            with self.guarded():
                self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            with self.guarded():
                self.handle.close()
            self.handle = None


class _TensorBoard(_GuardedSink):
    """Scalars written synchronously with tensorboardX's plain `EventsWriter`: its `SummaryWriter` writes from a
    background thread and flushes again at exit, printing tracebacks on a full disk."""

    what = "TensorBoard logs"

    def __init__(self, path):
        super().__init__(path)
        with self.guarded():
            from tensorboardX.event_file_writer import EventsWriter   # optional dependency

            path.mkdir(parents=True, exist_ok=True)
            self.handle = _UrlEventsWriter(path / "events") if is_url(path) else EventsWriter(str(path / "events"))

    def _write(self, step: int, scalars: Mapping[str, float]) -> None:
        from tensorboardX.proto.event_pb2 import Event   # optional dependency
        from tensorboardX.summary import scalar

        for k, v in scalars.items():
            self.handle.write_event(Event(wall_time=time.time(), step=int(step), summary=scalar(k, float(v))))


class _History(_GuardedSink):
    """One JSON object per reported step, appended to WORKDIR/history.jsonl. On resume at step `start`, records of
    later steps (written by a run that ended after its last checkpoint) are dropped first, so the file follows the
    steps the checkpoints hold."""

    what = "the metrics history"

    def __init__(self, path, start_step: int):
        super().__init__(path)
        with self.guarded():
            if path.is_file():
                kept = [ln for ln in path.read_text().splitlines() if self._step(ln) <= start_step]
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_text("".join(ln + "\n" for ln in kept))
                tmp.replace(path)
            self.handle = open_file(path, "a")

    @staticmethod
    def _step(line: str) -> int:
        """The record's step; a torn last line of a killed run (or any unreadable line) counts as after all."""
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            return sys.maxsize

    def _write(self, step: int, scalars: Mapping[str, float]) -> None:
        self.handle.write(json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}}) + "\n")


class MetricWriter:
    """Fans each reported step out to the console line (stdout, through `tqdm.write` so an open bar is redrawn
    below it; with a bar, its postfix shows loss and IoU), TensorBoard (WORKDIR/tb) and the JSON history
    (WORKDIR/history.jsonl, and `history` in memory). Built with `enabled=False` (processes other than the first)
    it writes nothing. `message(text)` prints a status line the same tqdm-safe way."""

    def __init__(self, workdir, *, total_steps: int, start_step: int = 0, enabled: bool = True,
                 bar=None):
        self.enabled = enabled
        self.total_steps = int(total_steps)
        self.bar = bar
        self.history: list[dict] = []
        workdir = workdir_path(workdir)
        self._tensorboard = _TensorBoard(workdir / TENSORBOARD_DIR) if enabled else None
        self._history = _History(workdir / HISTORY_FILE, start_step) if enabled else None

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        tqdm.write(text, file=sys.stdout)
        sys.stdout.flush()   # line by line even into a pipe: a killed run's log ends at its last step

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        scalars = {k: float(v) for k, v in scalars.items()}
        self.history.append({"step": int(step), **scalars})
        self._history.write_scalars(step, scalars)
        self._tensorboard.write_scalars(step, scalars)
        if self.bar is not None and "loss/total" in scalars:
            self.bar.set_postfix(loss=_fmt(scalars["loss/total"]), iou=_fmt(scalars.get("IoU", float("nan"))),
                                 refresh=False)
        self.message(console_line(step, self.total_steps, scalars))
        self.flush()

    def flush(self) -> None:
        if self.enabled:
            self._history.flush()
            self._tensorboard.flush()

    def close(self) -> None:
        if self.enabled:
            self._history.close()
            self._tensorboard.close()


def read_history(path) -> list[dict]:
    """The records of a history.jsonl, a local path or a URL (a torn last line of a killed run is skipped)."""
    out = []
    for line in workdir_path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out



"""tf.data training input: deterministic, resumable, per-host sharded template/search batches.

Global sample index of step s, host p, slot j: `s * global_batch + p * host_batch + j`. Each sample is a pure
function of (seed, index) (redraws after a bad frame or an invalid crop included), so hosts are disjoint and
together complete, and an iterator started at step s yields exactly the batches an uninterrupted run yields from
step s.

Two per-sample paths (`DATA.PIPELINE`), both keeping the order (deterministic=True), batching and prefetching:
- python: sampling, JPEG window decode, OpenCV crop and labels in NumPy inside `tf.numpy_function` on tf.data
  threads (NumPy generator per index). Part of every sample holds the GIL: one process does not scale with cores.
- graph: the same as TF graph ops (`graph.GraphSampleFn`, stateless random ops per index): no Python per
  sample, so tf.data's threads scale with cores and the dataset graph can run on tf.data service workers
  (`DATA.SERVICE_ADDRESS`, scripts/input_service.py).
Bad frames (missing / corrupt JPEG) and invalid pairs are skipped (redrawn), counted and logged, never raised.
"""
from __future__ import annotations

import atexit
import gc
import logging
import os
import re
import threading
import weakref
from collections import Counter
from typing import Callable

import cv2
import jax
import numpy as np
import tensorflow as tf

from grm_jax.config import check_input_pipeline
from grm_jax.deadlines import UnreachableError, call_with_deadline, check_data_service
from grm_jax.errors import InputPipelineError
from grm_jax.sequence import FrameError

from .graph import GraphSampleFn
from .processing import InvalidSample, ProcessingSettings, open_frame, process_pair
from .sampler import PairSampler, sample_rng

log = logging.getLogger(__name__)

__all__ = ["InputFailure", "PairSource", "TrainIterator", "make_train_iterator", "global_sample_index",
           "OUTPUT_KEYS"]

OUTPUT_KEYS = ("template", "search", "template_lut", "search_lut", "template_anno", "search_anno",
               "template_mask", "heatmap")
MAX_REDRAWS = 100
REORDER_LIMIT = 256  # batches from the tf.data service held back while an earlier step is missing
_LOGGED_BAD_FRAMES = 20  # individual warnings, then only the counts
# Explicit tf.cond / while_loop throughout the graph path: autograph's conversion of every traced function only
# costs time.
_plain = tf.autograph.experimental.do_not_convert


def global_sample_index(counter, host_batch: int, global_batch: int, process_index: int):
    """Global sample index of this host's `counter`-th sample (counter = step * host_batch + slot): see the
    module docstring. Python / NumPy integers or int64 tensors."""
    return (counter // host_batch) * global_batch + process_index * host_batch + counter % host_batch


def _warn_bad_frame(count: int, index: int, describe: Callable[[], str]) -> None:
    """Log the `count`-th skipped bad frame (of sample `index`): every one of the first few, then the 32nd, 64th,
    128th, ... so a long run's log stays readable. `describe()` names the frame; it runs only for a logged one
    (the graph path replays the sample's draws for it)."""
    if count <= _LOGGED_BAD_FRAMES or count & (count - 1) == 0:
        log.warning("skipping bad frame (%d so far, sample %d redrawn): %s", count, index, describe())


class InputFailure(InputPipelineError):
    """A training batch could not be made; the message is one line: the error a tf.data worker raised (for the
    Python per-sample path, the Python exception, e.g. `MemoryError: ...`) and the step of the batch."""


def _first_line(err) -> str:
    """TF wraps a worker's error as '{{function_node ...}} <Python exception line>', then the Python traceback
    and the failing node: keep the exception line."""
    lines = str(getattr(err, "message", err)).strip().splitlines()
    return re.sub(r"^\{\{[^}]*\}\}\s*", "", lines[0]) if lines else type(err).__name__


class PairSource:
    """index -> processed sample dict (+ `redraws`, `bad_frames`); thread-safe counters of skipped draws."""

    def __init__(self, sampler: PairSampler, settings: ProcessingSettings, seed: int, *, window_decode: bool = True,
                 max_redraws: int = MAX_REDRAWS):
        self.sampler, self.settings, self.seed = sampler, settings, int(seed)
        self.window_decode, self.max_redraws = window_decode, max_redraws
        self._lock = threading.Lock()
        self.counters: Counter = Counter()

    def _count(self, key: str) -> int:
        """Add one to counter `key`; its new value."""
        with self._lock:
            self.counters[key] += 1
            return self.counters[key]

    def __call__(self, index: int) -> dict:
        rng = sample_rng(self.seed, index)
        bad_frames = 0
        last_error = None
        for attempt in range(self.max_redraws):
            draw = self.sampler.draw(rng)
            try:
                template = open_frame(draw.template_path, window=self.window_decode)
                search = template if draw.search_path == draw.template_path else \
                    open_frame(draw.search_path, window=self.window_decode)
                out = process_pair(template, draw.template_box, search, draw.search_box, rng, self.settings)
            except FrameError as err:
                bad_frames += 1
                last_error = err
                _warn_bad_frame(self._count("bad_frames"), index, lambda: str(err))
                continue
            except InvalidSample as err:
                last_error = err
                self._count("invalid_pairs")
                continue
            self._count("samples")
            out["redraws"] = np.int32(attempt)
            out["bad_frames"] = np.int32(bad_frames)
            return out
        raise RuntimeError(f"sample {index}: no usable pair after {self.max_redraws} draws "
                           f"(last problem: {last_error})")


_OPEN: "weakref.WeakSet[TrainIterator]" = weakref.WeakSet()


@atexit.register
def _close_open_iterators():
    for it in list(_OPEN):
        it.close()


class TrainIterator:
    """Iterator of host-local numpy batches: dict of (host_batch, ...) arrays (OUTPUT_KEYS: uint8 crops with
    their level tables, see `processing.process_pair`) plus `sample_index`, `redraws`,
    `bad_frames`. `stats` holds the running counts of samples, skipped bad frames and invalid pairs."""

    def __init__(self, dataset, source, start_step: int, *, graph_fn=None, reorder: bool = False,
                 batch_timeout_s: float | None = None, service_address: str = ""):
        self._dataset = dataset
        self._it = dataset.as_numpy_iterator()
        self.source = source
        self.step = int(start_step)
        self._graph_fn = graph_fn
        self._reorder = reorder
        self._pending: dict = {}
        self._counters: Counter = Counter()
        # the tf.data service retries a silent worker forever: each batch from it has this deadline
        self._batch_timeout_s = batch_timeout_s
        self._service_address = service_address
        _OPEN.add(self)

    @property
    def stats(self) -> dict:
        if self.source is not None:
            return dict(self.source.counters)
        return dict(self._counters)

    def close(self):
        """Stop the tf.data workers (an open iterator would keep the interpreter from exiting)."""
        self._it = None
        self._dataset = None
        gc.collect()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __iter__(self):
        return self

    def _next_batch(self) -> dict:
        try:
            if not self._reorder:
                return self._fetch()
            # tf.data service (dynamic sharding): whole batches tagged with their step arrive in any order
            while self.step not in self._pending:
                batch = self._fetch()
                step = int(batch.pop("step"))
                if step >= self.step:
                    self._pending[step] = batch
                if len(self._pending) > REORDER_LIMIT:
                    raise InputFailure(f"input service: step {self.step} missing while {len(self._pending)} later "
                                       f"batches arrived (a worker lost its work?)")
            return self._pending.pop(self.step)
        except tf.errors.OpError as err:
            raise InputFailure(f"{_first_line(err)} (batch of step {self.step})") from None

    def _fetch(self) -> dict:
        if self._batch_timeout_s is None:
            return next(self._it)
        try:
            return call_with_deadline(lambda: next(self._it), self._batch_timeout_s, lambda: (
                f"input service {self._service_address}: no batch within {self._batch_timeout_s:g} s "
                f"(DATA.SERVICE_TIMEOUT_S) while waiting for step {self.step}; are its workers running and "
                "reachable from here?"))
        except UnreachableError as err:
            raise InputFailure(str(err)) from None

    def __next__(self) -> dict:
        if self._it is None:
            raise StopIteration
        batch = self._next_batch()
        if self._graph_fn is not None:
            self._count_graph_batch(batch)
        self.step += 1
        return batch

    def _count_graph_batch(self, batch: dict) -> None:
        """Counters and bad-frame warnings of the graph path, from the per-sample fields of a batch."""
        bad, redraws = batch["bad_frames"], batch["redraws"]
        self._counters["samples"] += len(bad)
        self._counters["invalid_pairs"] += int(np.sum(redraws - bad))
        for index, n_bad, n_redraws in zip(batch["sample_index"], bad, redraws):
            for _ in range(int(n_bad)):
                self._counters["bad_frames"] += 1
                _warn_bad_frame(self._counters["bad_frames"], int(index), lambda: "; ".join(
                    bad_frame_messages(self._graph_fn, int(index), int(n_redraws))))


def bad_frame_messages(graph_fn, index: int, redraws: int) -> list[str]:
    """Name the frames that made attempts of sample `index` fail (replays the draws eagerly; rare)."""
    messages = []
    for attempt in range(redraws):
        p = graph_fn.draw_parameters(index, attempt)
        for key in ("template_path", "search_path"):
            path = p[key].decode()
            try:
                frame = open_frame(path)
                frame.window(0, 1, 0, 1)
            except FrameError as err:
                if str(err) not in messages:
                    messages.append(str(err))
    return messages or [f"sample {index}: a frame failed to decode"]


class _GraphSamples:
    """The per-sample steps of `_graph_dataset` (see its docstring) for one host's share of the global batch:
    `counter` numbers this host's samples (step * host_batch + slot)."""

    def __init__(self, graph_fn, host_batch: int, global_batch: int, process_index: int):
        self.host_batch, self.global_batch, self.process_index = host_batch, global_batch, process_index
        self.attempt = tf.function(graph_fn.attempt, autograph=False, input_signature=[
            tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int64)])
        blank = tf.nest.map_structure(lambda t: tf.zeros(t.shape, t.dtype),
                                      self.attempt.get_concrete_function().structured_outputs)
        self.blank_attempt = dict(blank, read=tf.constant(False))
        probe = tf.function(_plain(lambda c: self.redrawn(c, dict(self.blank_attempt))), autograph=False,
                            input_signature=[tf.TensorSpec([], tf.int64)])
        self.blank_sample = tf.nest.map_structure(lambda t: tf.zeros(t.shape, t.dtype),
                                                  probe.get_concrete_function().structured_outputs)
        self.blank_sample.pop("counter")

    def global_index(self, counter):
        return global_sample_index(counter, self.host_batch, self.global_batch, self.process_index)

    def guarded(self, index, a):
        """attempt(index, a) plus `read`: False if it raised (unreadable / undecodable frame)."""
        one = tf.data.Dataset.from_tensors((index, a)).map(_plain(lambda i, k: dict(self.attempt(i, k),
                                                                                     read=tf.constant(True))))
        return one.ignore_errors(log_warning=False).concatenate(
            tf.data.Dataset.from_tensors(self.blank_attempt)).take(1).get_single_element()

    def redrawn(self, counter, first):
        """The sample of `counter` given its attempt 0 (`first`): attempts 1, 2, ... (guarded) until one reads
        and is valid."""
        index = self.global_index(counter)

        def body(a, bad, x):
            x = self.guarded(index, a)
            return a + 1, bad + tf.cast(tf.logical_not(x["read"]), tf.int32), x

        def again(a, bad, x):
            return tf.logical_not(x["read"] & x["ok"]) & (a < MAX_REDRAWS)

        a, bad, x = tf.while_loop(again, body, (tf.constant(1, tf.int64),
                                                tf.cast(tf.logical_not(first["read"]), tf.int32), first))
        check = tf.debugging.Assert(x["read"] & x["ok"], [
            "sample", index, f": no usable pair after {MAX_REDRAWS} draws (every draw hit an unreadable frame or "
            "an invalid crop)"])
        with tf.control_dependencies([check]):
            out = {k: tf.identity(x[k]) for k in OUTPUT_KEYS}
        out["sample_index"] = index
        out["redraws"] = tf.cast(a - 1, tf.int32)
        out["bad_frames"] = bad
        out["counter"] = counter
        return out

    def guarded_sample(self, counter):
        return self.redrawn(counter, self.guarded(self.global_index(counter), tf.constant(0, tf.int64)))

    def fast_sample(self, k):
        """Stream element k: the sample of counter k - k // (host_batch + 1) with attempt 0 unguarded (raises on
        a bad frame: the stream drops the sample and `fill` makes it again), or, for every (host_batch + 1)-th
        element, a sentinel that reads nothing and never fails, so that `ignore_errors` skips at most one step's
        samples before `fill` sees the gap."""
        host_batch = self.host_batch
        sentinel = tf.equal(k % (host_batch + 1), host_batch)
        counter = k - k // (host_batch + 1)
        return tf.cond(sentinel,
                       lambda: dict(tf.nest.map_structure(tf.identity, self.blank_sample), counter=counter,
                                    sentinel=tf.constant(True)),
                       lambda: dict(self.redrawn(counter, dict(self.attempt(self.global_index(counter),
                                                                            tf.constant(0, tf.int64)),
                                                               read=tf.constant(True))),
                                    sentinel=tf.constant(False)))

    def after(self, expected, x):
        """The scan over the stream: the first counter `fill` must see before x, and the next one expected. A
        sample's counter advances the expected one; a sentinel carries the next step's first counter. A stream
        may skip steps (other service workers make them): the gap never reaches back before x's own step."""
        sentinel = tf.cast(x["sentinel"], tf.int64)
        own_step_first = (x["counter"] - sentinel) // self.host_batch * self.host_batch
        gap_start = tf.maximum(expected, own_step_first)
        return x["counter"] + 1 - sentinel, (gap_start, x)

    def fill(self, gap_start, x):
        """The samples of the counters [gap_start, x.counter) the stream dropped, then x (a leading axis)."""
        def refill():
            made = tf.map_fn(lambda c: dict(self.guarded_sample(c), sentinel=tf.constant(False)),
                             tf.range(gap_start, x["counter"]),
                             fn_output_signature={k: tf.TensorSpec(v.shape, v.dtype) for k, v in x.items()})
            return {k: tf.concat([made[k], x[k][None]], 0) for k in x}

        return tf.cond(x["counter"] > gap_start, refill, lambda: {k: v[None] for k, v in x.items()})


def _graph_dataset(graph_fn, start_step: int, host_batch: int, global_batch: int, process_index: int,
                   parallel: int, *, per_step: bool, steps=None):
    """Batches of the graph path, one per step. per_step=True: each batch tagged with its `step`, for tf.data
    service with dynamic sharding, which hands the stream's source (the steps) out to the workers one by one: each
    worker sees an increasing subsequence of the steps and makes each of them whole from the step alone.
    steps: that source (a dataset of step numbers; default: start_step, start_step + 1, ...).

    Each sample is a bounded `tf.while_loop` over attempts 0, 1, ... of its index. A frame that fails to read
    or decode raises, and TF graphs cannot catch: the attempt is isolated in a one-element dataset with
    `ignore_errors` (`get_single_element` of it, or a blank marked failed), so it turns into a failed attempt
    and the sample is redrawn in place. That isolation costs about as much as a small crop, so a sample first
    runs its attempt 0 unguarded in the stream itself; a sample whose attempt 0 raises is dropped there
    (`ignore_errors`), and the gap it leaves in the stream's counters is filled with the same sample made the
    guarded way (attempt 0 again, failed and counted, then the redraws). Either way a sample is the same pure
    function of its index, and the stream keeps its order, with no Python and no error crossing the map."""
    samples = _GraphSamples(graph_fn, host_batch, global_batch, process_index)
    per_step_elements = host_batch + 1
    if steps is None:
        steps = tf.data.Dataset.range(int(start_step), np.iinfo(np.int64).max // (4 * per_step_elements))
    # stream element k of step s: k in [s * (host_batch + 1), (s + 1) * (host_batch + 1)), the last a sentinel
    ds = steps.map(_plain(lambda s: tf.range(s * per_step_elements, (s + 1) * per_step_elements))).unbatch()
    # more samples in flight than threads: in an ordered map a slow sample (big crop, redraws) must not leave the
    # other threads idle; the thread pool bounds the cores used
    ds = ds.map(_plain(samples.fast_sample), num_parallel_calls=4 * parallel, deterministic=True)
    ds = ds.ignore_errors(log_warning=False)
    ds = ds.scan(tf.cast(int(start_step) * host_batch, tf.int64), _plain(samples.after))
    ds = ds.map(_plain(samples.fill), num_parallel_calls=parallel, deterministic=True).unbatch()
    # every step leaves exactly host_batch samples: the batches are the steps
    ds = ds.filter(_plain(lambda x: tf.logical_not(x["sentinel"]))).batch(host_batch, drop_remainder=True)

    def finish(batch):
        out = {k: v for k, v in batch.items() if k not in ("counter", "sentinel")}
        if per_step:
            out["step"] = batch["counter"][0] // host_batch
        return out

    # Every stage has a fixed parallelism: the autotuner would only add its per-element bookkeeping (timing calls
    # on every element; see docs/PERFORMANCE.md). The options travel with the graph to tf.data service workers.
    options = tf.data.Options()
    options.deterministic = True
    options.autotune.enabled = False
    return ds.map(_plain(finish)).with_options(options)


def _python_output_specs(settings: ProcessingSettings) -> dict:
    """key -> (shape, dtype) of one sample of the Python path (`processing.process_pair` + the redraw counts)."""
    hz, hx = settings.template_size, settings.search_size
    f, nz = hx // settings.stride, (hz // settings.stride) ** 2
    return {"template": ((hz, hz, 3), tf.uint8), "search": ((hx, hx, 3), tf.uint8),
            "template_lut": ((256, 3), tf.float32), "search_lut": ((256, 3), tf.float32),
            "template_anno": ((4,), tf.float32), "search_anno": ((4,), tf.float32),
            "template_mask": ((nz,), tf.float32), "heatmap": ((f, f), tf.float32),
            "redraws": ((), tf.int32), "bad_frames": ((), tf.int32)}


def _python_dataset(source: PairSource, start_step: int, host_batch: int, global_batch: int, process_index: int,
                    num_parallel):
    """Batches of the Python path: `source` in `tf.numpy_function` per sample, one batch per step."""
    specs = _python_output_specs(source.settings)
    keys = list(specs)

    def produce(index):
        out = source(int(index))
        return [out[k] for k in keys]

    def load(counter):
        index = global_sample_index(counter, host_batch, global_batch, process_index)
        values = tf.numpy_function(produce, [index], [specs[k][1] for k in keys], stateful=False)
        out = {}
        for k, v in zip(keys, values):
            v.set_shape(specs[k][0])
            out[k] = v
        out["sample_index"] = index
        return out

    ds = tf.data.Dataset.range(int(start_step) * host_batch, np.iinfo(np.int64).max)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE if num_parallel is None else num_parallel,
                deterministic=True)
    return ds.batch(host_batch, drop_remainder=True)


def _host_position(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    """(process_index, process_count), JAX's where not given."""
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} outside [0, {process_count})")
    return process_index, process_count


def _input_choice(data_cfg, pipeline: str | None, service_address: str | None) -> tuple[str, str]:
    """(pipeline, service_address): the arguments, else the config's DATA.PIPELINE / DATA.SERVICE_ADDRESS. The
    arguments bypass `grm_jax.config.validate`, hence its check of these keys here too."""
    pipeline = str(pipeline or getattr(data_cfg, "PIPELINE", None) or "graph").lower()
    if service_address is None:
        service_address = str(getattr(data_cfg, "SERVICE_ADDRESS", "") or "")
    check_input_pipeline(pipeline, service_address, source="make_train_iterator")
    return pipeline, service_address


def _iterator_options(threads: int | None) -> tf.data.Options:
    """Deterministic order; with `threads`, a private pool of that size (one thread per op inside it)."""
    options = tf.data.Options()
    options.deterministic = True
    if threads is not None:
        options.threading.private_threadpool_size = int(threads)
        options.threading.max_intra_op_parallelism = 1
    return options


def _graph_parallelism(num_parallel, threads: int | None, data_cfg, service_address: str) -> int:
    """Samples made in parallel by the graph path: `num_parallel`, else the service workers' cores
    (DATA.SERVICE_WORKER_CORES), else the private pool's threads or this host's usable cores."""
    if isinstance(num_parallel, int) and num_parallel > 0:
        return int(num_parallel)
    worker_cores = int(getattr(data_cfg, "SERVICE_WORKER_CORES", 0) or 0) if service_address else 0
    return worker_cores or int(threads or len(os.sched_getaffinity(0)))


def _graph_iterator(graph_fn: GraphSampleFn, data_cfg, *, seed: int, start_step: int, host_batch: int,
                    global_batch: int, process_index: int, process_count: int, num_parallel, threads: int | None,
                    prefetch, options: tf.data.Options, service_address: str) -> TrainIterator:
    """The graph path's batches, made in this process or (`service_address`) by tf.data service workers."""
    if service_address and graph_fn.table.has_prepared:
        raise ValueError("DATA.SERVICE_ADDRESS with DATA.SOURCE=tfds: the graph path reads prepared frames in "
                         "tf.numpy_function, which tf.data service workers cannot run; use DATA.SOURCE=folders "
                         "(any tf.io.gfile path) with the service")
    parallel = _graph_parallelism(num_parallel, threads, data_cfg, service_address)
    ds = _graph_dataset(graph_fn, start_step, host_batch, global_batch, process_index, parallel,
                        per_step=bool(service_address))
    timeout_s = None
    if service_address:
        timeout_s = float(getattr(data_cfg, "SERVICE_TIMEOUT_S", 60.0))
        # TensorFlow would wait forever for a service that does not answer
        check_data_service(service_address, timeout_s)
        ds = ds.apply(tf.data.experimental.service.distribute(
            processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC, service=service_address,
            job_name=f"grm_train_seed{seed}_host{process_index}_of{process_count}_from{start_step}",
            compression=None))
    ds = ds.prefetch(tf.data.AUTOTUNE if prefetch is None else prefetch).with_options(options)
    return TrainIterator(ds, None, start_step, graph_fn=graph_fn, reorder=bool(service_address),
                         batch_timeout_s=timeout_s, service_address=service_address)


def make_train_iterator(cfg, datasets, *, seed: int, start_step: int, host_batch_size: int,
                        process_index: int | None = None, process_count: int | None = None,
                        num_parallel=None, threads: int | None = None, window_decode: bool = True,
                        prefetch: int | None = None, sampler: PairSampler | None = None,
                        pipeline: str | None = None, service_address: str | None = None) -> TrainIterator:
    """Endless iterator of host-local training batches from step `start_step` on (see module docstring).

    pipeline: "graph" (TF ops per sample) or "python" (NumPy/OpenCV per sample in `tf.numpy_function`);
    None -> cfg.DATA.PIPELINE. service_address: consume the graph path from a tf.data service dispatcher
    (None -> cfg.DATA.SERVICE_ADDRESS; "" = in this process). num_parallel: parallel samples (None -> AUTOTUNE
    for python, the usable cores for graph); threads: size of a private tf.data thread pool (None -> TF's shared
    pool); window_decode: decode only each crop's window of the JPEGs (python path; False -> full cv2 decode).
    """
    # Parallelism is across samples (tf.data threads); OpenCV's own thread pool would only oversubscribe cores.
    cv2.setNumThreads(1)
    process_index, process_count = _host_position(process_index, process_count)
    data_cfg = getattr(cfg, "DATA", None)
    pipeline, service_address = _input_choice(data_cfg, pipeline, service_address)
    host_batch = int(host_batch_size)
    global_batch = host_batch * int(process_count)
    settings = ProcessingSettings.from_config(cfg)
    if sampler is None:
        sampler = PairSampler(datasets, cfg.DATA.TRAIN.DATASETS_RATIO, cfg.DATA.MAX_SAMPLE_INTERVAL)
    options = _iterator_options(threads)

    if pipeline == "graph":
        return _graph_iterator(GraphSampleFn(sampler, settings, seed), data_cfg, seed=seed, start_step=start_step,
                               host_batch=host_batch, global_batch=global_batch, process_index=process_index,
                               process_count=process_count, num_parallel=num_parallel, threads=threads,
                               prefetch=prefetch, options=options, service_address=service_address)

    source = PairSource(sampler, settings, seed, window_decode=window_decode)
    ds = _python_dataset(source, start_step, host_batch, global_batch, process_index, num_parallel)
    ds = ds.prefetch(tf.data.AUTOTUNE if prefetch is None else prefetch).with_options(options)
    return TrainIterator(ds, source, start_step)

"""tf.data training input: deterministic, resumable, per-host sharded template/search batches.

Global sample index of step s, host p, slot j: `s * global_batch + p * host_batch + j`. Each sample is a pure
function of (seed, index) (its own NumPy generator; redraws after a bad frame or an invalid crop come from the
same stream), so hosts are disjoint and together complete, and an iterator started at step s yields exactly the
batches an uninterrupted run yields from step s.

tf.data runs the per-sample Python work (sampling, JPEG window decode, OpenCV crop, labels) in parallel threads
(`tf.numpy_function`; OpenCV and the TF decoder release the GIL), keeps the order (deterministic=True), batches
and prefetches. Bad frames (missing / corrupt JPEG) and invalid pairs are skipped and counted, never raised.
"""
from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections import Counter

import numpy as np

from grm_jax.sequence import FrameError

from .processing import InvalidSample, ProcessingSettings, open_frame, process_pair
from .sampler import PairSampler, sample_rng

log = logging.getLogger(__name__)

__all__ = ["PairSource", "TrainIterator", "make_train_iterator", "sample_indices", "OUTPUT_KEYS"]

OUTPUT_KEYS = ("template", "search", "template_lut", "search_lut", "template_anno", "search_anno",
               "template_mask", "heatmap")
MAX_REDRAWS = 100
_LOGGED_BAD_FRAMES = 20  # individual warnings, then only the counts


def sample_indices(step: int, global_batch: int, process_index: int, host_batch: int) -> np.ndarray:
    """Global sample indices of one host's batch at `step`."""
    return step * global_batch + process_index * host_batch + np.arange(host_batch, dtype=np.int64)


class PairSource:
    """index -> processed sample dict (+ `redraws`, `bad_frames`); thread-safe counters of skipped draws."""

    def __init__(self, sampler: PairSampler, settings: ProcessingSettings, seed: int, *, window_decode: bool = True,
                 max_redraws: int = MAX_REDRAWS):
        self.sampler, self.settings, self.seed = sampler, settings, int(seed)
        self.window_decode, self.max_redraws = window_decode, max_redraws
        self._lock = threading.Lock()
        self.counters: Counter = Counter()

    def _count(self, key: str, message: str | None = None):
        with self._lock:
            self.counters[key] += 1
            n = self.counters[key]
        if message and key == "bad_frames" and (n <= _LOGGED_BAD_FRAMES or n & (n - 1) == 0):
            # every one of the first few, then at 32, 64, 128, ... so a long run's log stays readable
            log.warning("skipping bad frame (%d so far, sample redrawn): %s", n, message)

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
                self._count("bad_frames", str(err))
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

    def __init__(self, dataset, source: PairSource, start_step: int):
        self._dataset = dataset
        self._it = dataset.as_numpy_iterator()
        self.source = source
        self.step = int(start_step)
        _OPEN.add(self)

    @property
    def stats(self) -> dict:
        return dict(self.source.counters)

    def close(self):
        """Stop the tf.data workers (an open iterator would keep the interpreter from exiting)."""
        self._it = None
        self._dataset = None
        import gc

        gc.collect()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._it is None:
            raise StopIteration
        batch = next(self._it)
        self.step += 1
        return batch


def make_train_iterator(cfg, datasets, *, seed: int, start_step: int, host_batch_size: int,
                        process_index: int | None = None, process_count: int | None = None,
                        num_parallel=None, threads: int | None = None, window_decode: bool = True,
                        prefetch: int | None = None, sampler: PairSampler | None = None) -> TrainIterator:
    """Endless iterator of host-local training batches from step `start_step` on (see module docstring).

    num_parallel: parallel map calls (None -> AUTOTUNE); threads: size of a private tf.data thread pool (None ->
    TF's shared pool); window_decode: decode only each crop's window of the JPEGs (False -> full cv2 decode).
    """
    import cv2
    import tensorflow as tf

    # Parallelism is across samples (tf.data threads); OpenCV's own thread pool would only oversubscribe cores.
    cv2.setNumThreads(1)
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} outside [0, {process_count})")
    host_batch = int(host_batch_size)
    global_batch = host_batch * int(process_count)
    settings = ProcessingSettings.from_config(cfg)
    if sampler is None:
        sampler = PairSampler(datasets, cfg.DATA.TRAIN.DATASETS_RATIO, cfg.DATA.MAX_SAMPLE_INTERVAL)
    source = PairSource(sampler, settings, seed, window_decode=window_decode)

    hz, hx = settings.template_size, settings.search_size
    f, nz = hx // settings.stride, (hz // settings.stride) ** 2
    specs = {"template": ((hz, hz, 3), tf.uint8), "search": ((hx, hx, 3), tf.uint8),
             "template_lut": ((256, 3), tf.float32), "search_lut": ((256, 3), tf.float32),
             "template_anno": ((4,), tf.float32), "search_anno": ((4,), tf.float32),
             "template_mask": ((nz,), tf.float32), "heatmap": ((f, f), tf.float32),
             "redraws": ((), tf.int32), "bad_frames": ((), tf.int32)}
    keys = list(specs)

    def produce(index):
        out = source(int(index))
        return [out[k] for k in keys]

    def load(counter):
        step = counter // host_batch
        slot = counter % host_batch
        index = step * global_batch + process_index * host_batch + slot
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
    ds = ds.batch(host_batch, drop_remainder=True)
    ds = ds.prefetch(tf.data.AUTOTUNE if prefetch is None else prefetch)
    options = tf.data.Options()
    options.deterministic = True
    if threads is not None:
        options.threading.private_threadpool_size = int(threads)
        options.threading.max_intra_op_parallelism = 1
    ds = ds.with_options(options)
    return TrainIterator(ds, source, start_step)

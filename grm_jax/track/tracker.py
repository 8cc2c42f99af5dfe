"""The GRM tracker (official `lib/test/tracker/grm.py: GRM`), one sequence or a batch of sequences at a time.

Per frame the host cuts the search crop around the previous state (OpenCV, `geometry.sample_target`); ONE jitted
function with fixed shapes then runs the network step (`track/network.py: network_outputs`, the same function an
exported model runs): it normalises the crop with DATA.MEAN / DATA.STD, runs the model in eval mode with the
dataset's division threshold, multiplies the score map by the Hann window and decodes the box at the windowed
peak. The host maps the box back to the frame exactly as the official tracker: crop pixels in float32, then
float64 Python arithmetic, then `clip_box` with a 10 px margin.

Batched evaluation runs `batch_size` sequences at once, each slot advancing one frame per step; a finished slot is
refilled with the next sequence (its template crop made at that time), idle slots carry zeros. Every slot's result
depends only on its own inputs, so the boxes equal those of one-at-a-time tracking (tested).

Several devices: the slots are split over a 1-D Mesh of the tracker's devices (axis "slots", the variables
replicated); each device runs the frame step on its own slots (shard_map), so no device talks to another and the
boxes of "exact" mode do not depend on the device count. A batch that does not divide over the devices is padded
with idle slots.
"""
from __future__ import annotations

import functools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional, Sequence as Seq

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from .. import geometry
from ..evaluation import datasets as eval_datasets
from ..runtime import xla_compiler_options
from ..sequence import read_frame as read_sequence_frame
from .network import network_outputs

__all__ = ["TrackerSettings", "division_threshold", "TrackerCore", "SequenceTracker", "SequenceResult",
           "SequenceError", "track_sequences", "map_box_back", "split_by_frames"]


class SequenceError(ValueError):
    """One sequence cannot be tracked (bad init box, unreadable frame, non-finite network output); the message
    names the sequence and the frame. Other sequences are unaffected."""


# A template crop this many times larger than the frame's longer side means a broken init box (a 1e5-pixel box
# on a 640x480 frame would make OpenCV allocate a 100+ GB padded crop).
MAX_CROP_TO_FRAME = 32


def checked_output_box(box: np.ndarray, where: str) -> np.ndarray:
    """The network's normalised box, refused when not finite (NaN/inf weights or activations): a NaN box would
    pass clip_box's min/max unchanged and be written as 0,0,10,10."""
    if not np.isfinite(box).all():
        raise SequenceError(f"{where}: the network output is not finite ({np.asarray(box).tolist()}); the "
                            "checkpoint or the input frame is broken")
    return box


def canonical_dataset_name(name: str) -> str:
    """The official benchmark key of a dataset name or alias (nfs30 -> nfs, uav123 -> uav, lasot_ext -> ...)."""
    key = name.lower()
    return eval_datasets.DATASET_ALIASES.get(key, key)


def division_threshold(cfg, dataset_name: Optional[str]) -> float:
    """TEST.HYPER[<DATASET NAME>] (the official benchmark name upper-cased, aliases resolved), else DEFAULT."""
    hyper = cfg.TEST.HYPER
    key = canonical_dataset_name(dataset_name).upper() if dataset_name else ""
    value = hyper[key] if key and key in hyper else hyper["DEFAULT"]
    return float(value)


@dataclass(frozen=True)
class TrackerSettings:
    template_size: int
    template_factor: float
    search_size: int
    search_factor: float
    feat_size: int
    threshold: float
    # DATA.MEAN / DATA.STD: the crops are normalised as in training (`geometry.normalize_image`)
    mean: tuple = tuple(geometry.IMAGENET_MEAN.tolist())
    std: tuple = tuple(geometry.IMAGENET_STD.tolist())

    @classmethod
    def from_config(cls, cfg, dataset_name: Optional[str] = None, threshold: Optional[float] = None):
        t = cfg.TEST
        stride = int(cfg.MODEL.BACKBONE.STRIDE)
        if int(t.SEARCH_SIZE) != int(cfg.DATA.SEARCH.SIZE) or int(t.TEMPLATE_SIZE) != int(cfg.DATA.TEMPLATE.SIZE):
            raise ValueError(
                f"TEST.SEARCH_SIZE/TEMPLATE_SIZE ({t.SEARCH_SIZE}/{t.TEMPLATE_SIZE}) must equal DATA.SEARCH.SIZE/"
                f"DATA.TEMPLATE.SIZE ({cfg.DATA.SEARCH.SIZE}/{cfg.DATA.TEMPLATE.SIZE}): the model's token grid "
                "is built from DATA.*")
        thr = division_threshold(cfg, dataset_name) if threshold is None else float(threshold)
        return cls(int(t.TEMPLATE_SIZE), float(t.TEMPLATE_FACTOR), int(t.SEARCH_SIZE), float(t.SEARCH_FACTOR),
                   int(t.SEARCH_SIZE) // stride, thr, mean=tuple(float(v) for v in cfg.DATA.MEAN),
                   std=tuple(float(v) for v in cfg.DATA.STD))


def map_box_back(state: Seq[float], box_norm_cxcywh: np.ndarray, resize_factor: float, search_size: int,
                 image_hw: tuple[int, int]) -> list[float]:
    """Normalised crop box -> clipped frame box x, y, w, h (python floats), as the official tracker.

    The crop-pixel box is computed in float32 (box * search_size / resize_factor on a float32 tensor), the rest in
    float64 with the crop assumed centred on the previous box centre.
    """
    px = (np.asarray(box_norm_cxcywh, np.float32) * np.float32(search_size)) / np.float32(resize_factor)
    cx, cy, w, h = (float(v) for v in px)
    cx_prev = state[0] + 0.5 * state[2]
    cy_prev = state[1] + 0.5 * state[3]
    half_side = 0.5 * search_size / resize_factor
    cx_real = cx + (cx_prev - half_side)
    cy_real = cy + (cy_prev - half_side)
    box = [cx_real - 0.5 * w, cy_real - 0.5 * h, w, h]
    return list(geometry.clip_box(box, image_hw[0], image_hw[1], margin=10))


BATCH_MODES = ("exact", "vectorized")
SLOT_AXIS = "slots"


@functools.lru_cache(maxsize=None)
def _compiled_step(model, mean: tuple, std: tuple, with_decisions: bool, batch_mode: str, mesh: Mesh):
    """The jitted frame step for a model (flax modules hash by their fields) and normalisation on a mesh of
    devices, shared by all trackers of them: each device steps its own slots."""

    def forward(variables, template, template_mask, search_uint8, threshold):
        """(boxes, decisions) or boxes, as the step returns them."""
        out = network_outputs(model, variables, template, template_mask, search_uint8, threshold, mean=mean,
                              std=std, with_decisions=with_decisions)
        return (out["tracker_box"], out["decisions"]) if with_decisions else out["tracker_box"]

    def step(variables, template, template_mask, search_uint8, threshold, active):
        if batch_mode == "exact" and template.shape[0] > 1:
            def one(args):
                t, m, x, a = args

                def run(_):
                    return jax.tree_util.tree_map(lambda o: o[0], forward(variables, t[None], m[None], x[None],
                                                                          threshold))

                shapes = jax.eval_shape(run, None)
                idle = lambda _: jax.tree_util.tree_map(lambda sd: jnp.zeros(sd.shape, sd.dtype), shapes)
                # an idle slot (sequence finished, none left to refill it) costs nothing
                return jax.lax.cond(a, run, idle, None)
            return jax.lax.map(one, (template, template_mask, search_uint8, active))
        return forward(variables, template, template_mask, search_uint8, threshold)

    slots = P(SLOT_AXIS)
    per_device = jax.shard_map(step, mesh=mesh, in_specs=(P(), slots, slots, slots, P(), slots),
                               out_specs=(slots, slots) if with_decisions else slots, check_vma=False)
    return jax.jit(per_device, compiler_options=xla_compiler_options())


class TrackerCore:
    """The jitted per-frame function, shared by every tracker built on the same model and variables.

    `core(template, template_mask, search_uint8)` -> (B, 4) float32 normalised cx, cy, w, h in the search crop
    (and (B, L_div, Nx) class-1 decisions when `with_decisions`). One compilation per batch size.

    batch_mode: with several slots, "exact" runs the slots one after the other inside the jitted function
    (`lax.map` over the one-sequence computation), so every slot's boxes are bit-identical to one-at-a-time
    tracking; "vectorized" runs one batched forward, the fastest on an accelerator, whose float rounding can
    differ from a batch of one (XLA picks kernels by shape), so boxes may differ in the last bits.

    devices: the slots are split over these devices (each runs its share, see the module doc); default: `device`,
    else the first local device. A batch that does not divide over them is padded with idle slots.
    """

    def __init__(self, model, variables, settings: TrackerSettings, *, with_decisions: bool = False,
                 batch_mode: str = "exact", device=None, devices=None, engine=None):
        """`engine`: an exported network step (`grm_jax.export.load_engine`) run instead of the jitted JAX step
        (then `model` and `variables` may be None); refused when its baked threshold or crop sizes differ
        from `settings`. Idle slots are skipped, so boxes do not depend on the batch."""
        if batch_mode not in BATCH_MODES:
            raise ValueError(f"batch_mode={batch_mode!r}, expected one of {BATCH_MODES}")
        self.model = model
        self.settings = settings
        self.with_decisions = with_decisions
        self.batch_mode = batch_mode
        self.engine = engine
        if engine is not None:
            engine.check_settings(settings, with_decisions)
            self.devices = [None]
            return
        if devices is None:
            devices = [device if device is not None else jax.local_devices()[0]]
        self.devices = list(devices)
        self.mesh = Mesh(np.asarray(self.devices), (SLOT_AXIS,))
        self.slot_sharding = NamedSharding(self.mesh, P(SLOT_AXIS))
        self.variables = jax.device_put(variables, NamedSharding(self.mesh, P()))
        self._step = _compiled_step(model, settings.mean, settings.std, with_decisions, batch_mode, self.mesh)

    @property
    def device(self):
        """The first of the tracker's devices (None for an engine)."""
        return self.devices[0]

    def padded_slots(self, batch: int) -> int:
        """The number of slots a batch of `batch` runs as: the next multiple of the device count."""
        return -(-batch // len(self.devices)) * len(self.devices)

    def place(self, array):
        """A (B, ...) batch input on the tracker's devices, split by slot and padded with zeros to
        `padded_slots(B)` rows; an input already placed so is returned as it is (no copy)."""
        if self.engine is not None:
            return jnp.asarray(array)
        rows = self.padded_slots(np.shape(array)[0])
        if isinstance(array, jax.Array) and array.shape[0] == rows and array.sharding == self.slot_sharding:
            return array
        host = np.asarray(array)
        if rows != host.shape[0]:
            host = np.concatenate([host, np.zeros((rows - host.shape[0], *host.shape[1:]), host.dtype)])
        return jax.device_put(host, self.slot_sharding)

    @property
    def engine_name(self) -> str:
        return "jax" if self.engine is None else self.engine.kind

    def __call__(self, template, template_mask, search_uint8, active=None):
        """`active` (B,) bool: slots to compute (exact mode skips the others; default all)."""
        if self.engine is not None:
            return self.engine(template, template_mask, search_uint8, active, with_decisions=self.with_decisions)
        batch = np.shape(search_uint8)[0]
        if active is None:
            active = np.ones(batch, bool)
        out = self._step(self.variables, self.place(template), self.place(template_mask), self.place(search_uint8),
                         jnp.float32(self.settings.threshold), self.place(np.asarray(active, bool)))
        if self.padded_slots(batch) != batch:   # the padding slots' outputs are zeros: not the caller's
            out = jax.tree_util.tree_map(lambda o: o[:batch], out)
        return out

    def template_input(self, image: np.ndarray, box_xywh: Seq[float]):
        """Template crop, its normalised NHWC array (1, Hz, Wz, 3) and box mask (1, Nz) for an init box."""
        s = self.settings
        crop, resize_factor, _ = geometry.sample_target(image, list(box_xywh), s.template_factor, s.template_size)
        template = geometry.normalize_image(crop, s.mean, s.std)[None]
        box = [float(v) for v in box_xywh]
        # The official tracker expresses the init box in its own template crop (box = crop reference), float32.
        box_in_crop = geometry.transform_image_to_crop(np.asarray(box, np.float32), np.asarray(box, np.float32),
                                                       resize_factor, np.array([s.template_size] * 2, np.float32),
                                                       normalize=True)
        mask = geometry.template_box_mask(np.asarray(box_in_crop, np.float32).reshape(1, 4), s.template_size)
        return crop, np.asarray(template, np.float32), np.asarray(mask, np.float32)

    def search_input(self, image: np.ndarray, state: Seq[float]):
        s = self.settings
        crop, resize_factor, _ = geometry.sample_target(image, list(state), s.search_factor, s.search_size)
        return crop, float(resize_factor)


class SequenceTracker:
    """Official-style single tracker: `initialize(image, box)` then `track(image) -> box` per frame."""

    def __init__(self, core: TrackerCore):
        self.core = core
        self.state: Optional[list[float]] = None
        self.last_decisions = None
        self.last_search_crop = None

    def initialize(self, image: np.ndarray, init_box: Seq[float]) -> None:
        init_box = checked_init_box(init_box, image.shape[:2], self.core.settings, "init box")
        _, template, mask = self.core.template_input(image, init_box)
        self.template = jnp.asarray(template)
        self.template_mask = jnp.asarray(mask)
        self.state = [float(v) for v in init_box]

    def track(self, image: np.ndarray) -> list[float]:
        crop, resize_factor = self.core.search_input(image, self.state)
        self.last_search_crop = crop
        out = self.core(self.template, self.template_mask, jnp.asarray(crop[None]))
        if self.core.with_decisions:
            out, dec = out
            self.last_decisions = np.asarray(dec)[0]
        box = checked_output_box(np.asarray(out)[0], "frame")
        self.state = map_box_back(self.state, box, resize_factor, self.core.settings.search_size, image.shape[:2])
        return list(self.state)


@dataclass
class SequenceResult:
    sequence: object
    boxes: np.ndarray          # (T, 4) float64, frame 0 = init box
    times: np.ndarray          # (T,) seconds per frame (batched: the step time shared by the active slots)
    # (T, L_div) fraction of search tokens interacting with the template per dividing layer (row 0 NaN: the
    # initial frame has no search region); only from a core built with_decisions
    division: Optional[np.ndarray] = None


@dataclass
class _Slot:
    sequence: object
    frame: int = 0
    state: list = field(default_factory=list)
    boxes: list = field(default_factory=list)
    times: list = field(default_factory=list)
    division: list = field(default_factory=list)


# What one sequence's own data can raise while it is read, cropped or mapped back (FrameError is an OSError).
_SEQUENCE_FAILURES = (ValueError, OSError, cv2.error)


def checked_init_box(box: Seq[float], image_hw: tuple[int, int], settings: TrackerSettings,
                     where: str) -> list[float]:
    """The init box as floats, refused (SequenceError naming `where`) when not finite, empty, off the frame or
    so large that its template crop could not be allocated."""
    box = np.asarray(box, np.float64).reshape(-1)
    h, w = int(image_hw[0]), int(image_hw[1])
    if box.size != 4 or not np.isfinite(box).all() or box[2] <= 0 or box[3] <= 0:
        raise SequenceError(f"{where}: {box.tolist()} is not a valid x,y,w,h box (finite, w > 0, h > 0)")
    x, y, bw, bh = box
    if x >= w or y >= h or x + bw <= 0 or y + bh <= 0:
        raise SequenceError(f"{where}: {box.tolist()} lies outside the {w}x{h} frame")
    crop_side = np.sqrt(bw * bh) * settings.template_factor
    if crop_side > MAX_CROP_TO_FRAME * max(h, w):
        raise SequenceError(f"{where}: {box.tolist()} is far larger than the {w}x{h} frame (template crop side "
                            f"{crop_side:.0f} px)")
    return [float(v) for v in box]


def track_sequences(core: TrackerCore, sequences: Iterable, *, batch_size: int = 1,
                    read_frame: Optional[Callable[[str], np.ndarray]] = None,
                    on_result: Callable[[SequenceResult], None] = None, progress=None,
                    num_threads: int = 4,
                    on_error: Callable[[object, SequenceError], None] = None,
                    stop_requested: Callable[[], bool] = None) -> Iterator[SequenceResult]:
    """Track sequences `batch_size` at a time; yields each SequenceResult when its sequence ends.

    The batch is capped at the number of sequences (when `sequences` has a length) and padded to a multiple of
    the core's device count with idle slots.
    `read_frame`: a frame path -> RGB uint8 image (default `sequence.read_frame`).
    `progress`: an optional tqdm-like object whose `update(n_frames)` is called after every step.
    A sequence that cannot be tracked (bad init box, unreadable frame, non-finite output) raises SequenceError,
    or, with `on_error`, is reported as `on_error(sequence, error)` and dropped while the others go on.
    `stop_requested`: asked after every frame step; when it returns True the generator ends there, the sequences
    still in their slots unfinished (not yielded).
    """
    read_frame = read_sequence_frame if read_frame is None else read_frame
    if hasattr(sequences, "__len__"):   # more slots than sequences would only allocate idle memory
        batch_size = max(1, min(batch_size, len(sequences)))
    batch = _SlotBatch(core, batch_size, iter(sequences))
    outcomes = _Outcomes(core.with_decisions, on_result, on_error)
    pool = ThreadPoolExecutor(max(1, min(num_threads, batch_size))) if batch_size > 1 else None
    try:
        while True:
            done = _start_sequences(batch, read_frame, outcomes, progress)
            active = batch.active()
            yield from done
            if not active:
                break
            t0 = time.perf_counter()   # per-frame time: frame read, crop, network, mapping back
            cut = _cut_search_crops(batch, active, read_frame, pool, outcomes)
            if not cut:
                continue
            boxes, fractions = batch.run_network(cut)
            tracked = _map_boxes_back(batch, cut, boxes, outcomes)
            step_time = (time.perf_counter() - t0) / len(active)
            done = _record_frame(batch, tracked, step_time, fractions, outcomes)
            if progress is not None:
                progress.update(len(active))
            yield from done
            if stop_requested is not None and stop_requested():
                return
    finally:
        if pool is not None:
            pool.shutdown(wait=False)


class _SlotBatch:
    """The slots of a batched run (a `_Slot` or None each), the sequences still to start and the host copies of
    the network inputs (templates put on the devices again only after a refill: they change once per sequence)."""

    def __init__(self, core: TrackerCore, size: int, queue: Iterator):
        s = core.settings
        self.core = core
        self.size = size
        self.queue = queue
        self.exhausted = False
        self.slots: list[Optional[_Slot]] = [None] * size
        self.rows = core.padded_slots(size)
        nz = (s.template_size // (s.search_size // s.feat_size)) ** 2
        self.templates = np.zeros((self.rows, s.template_size, s.template_size, 3), np.float32)
        self.masks = np.zeros((self.rows, nz), np.float32)
        self.search = np.zeros((self.rows, s.search_size, s.search_size, 3), np.uint8)
        self._placed_templates = None

    def active(self) -> list[int]:
        return [i for i in range(self.size) if self.slots[i] is not None]

    def next_sequence(self):
        """The next sequence to start, or None once there is none left."""
        if not self.exhausted:
            try:
                return next(self.queue)
            except StopIteration:
                self.exhausted = True
        return None

    def set_template(self, i: int, template: np.ndarray, mask: np.ndarray) -> None:
        self.templates[i], self.masks[i] = template[0], mask[0]
        self._placed_templates = None

    def run_network(self, cut: list) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """One step of the core on the cut search crops (idle slots zero) -> ((B, 4) boxes, (B, L_div) fraction
        of interacting search tokens per dividing layer, or None without decisions)."""
        for i, crop, _, _ in cut:
            self.search[i] = crop
        for i in range(self.size):
            if self.slots[i] is None:
                self.search[i] = 0
        if self._placed_templates is None:
            self._placed_templates = self.core.place(self.templates), self.core.place(self.masks)
        active = np.array([slot is not None for slot in self.slots] + [False] * (self.rows - self.size))
        out = self.core(*self._placed_templates, self.search, active)
        fractions = None
        if self.core.with_decisions:
            out, decisions = out
            fractions = np.asarray(decisions, np.float64).mean(axis=-1)
        return np.asarray(out), fractions


class _Outcomes:
    """A finished sequence's result (`on_result`) and a failed sequence's error (`on_error`, else raised)."""

    def __init__(self, with_decisions: bool, on_result, on_error):
        self.with_decisions = with_decisions
        self.on_result = on_result
        self.on_error = on_error

    def finish(self, slot: _Slot) -> SequenceResult:
        division = None
        if self.with_decisions and slot.division:
            division = np.concatenate([np.full((1, len(slot.division[0])), np.nan), np.asarray(slot.division)])
        result = SequenceResult(slot.sequence, np.asarray(slot.boxes, np.float64).reshape(-1, 4),
                                np.asarray(slot.times, np.float64), division)
        if self.on_result is not None:
            self.on_result(result)
        return result

    def fail(self, seq, frame: int, err: Exception) -> None:
        if not isinstance(err, SequenceError):
            err = SequenceError(f"sequence {seq.name}: frame {frame}: {err}")
        if self.on_error is None:
            raise err
        self.on_error(seq, err)


def _start_sequences(batch: _SlotBatch, read_frame, outcomes: _Outcomes, progress) -> list[SequenceResult]:
    """Fill the idle slots with the next sequences (template crop from the init box); -> the results of those
    that end at once (a sequence of one frame)."""
    s = batch.core.settings
    done = []
    for i in range(batch.size):
        while batch.slots[i] is None:
            seq = batch.next_sequence()
            if seq is None:
                break
            try:
                image = read_frame(seq.frames[0])
                box = checked_init_box(seq.boxes[0], image.shape[:2], s, f"sequence {seq.name}: init box (frame 0)")
                t1 = time.perf_counter()
                _, template, mask = batch.core.template_input(image, box)
            except _SEQUENCE_FAILURES as err:
                outcomes.fail(seq, 0, err)
                continue
            batch.set_template(i, template, mask)
            slot = _Slot(seq, 0, box, [box], [time.perf_counter() - t1])
            if progress is not None:
                progress.update(1)
            if len(seq.frames) <= 1:
                done.append(outcomes.finish(slot))
            else:
                batch.slots[i] = slot
    return done


def _cut_search_crops(batch: _SlotBatch, active: list[int], read_frame, pool, outcomes: _Outcomes) -> list:
    """Read every active slot's next frame and cut its search crop around the slot's state (in `pool`'s threads
    when there is one) -> [(slot index, crop, resize_factor, frame (H, W))]; a slot whose frame fails is dropped."""
    def cut(i):
        slot = batch.slots[i]
        try:
            image = read_frame(slot.sequence.frames[slot.frame + 1])
            crop, resize_factor = batch.core.search_input(image, slot.state)
        except _SEQUENCE_FAILURES as err:
            return i, None, err, None
        return i, crop, resize_factor, image.shape[:2]

    results = list(pool.map(cut, active)) if pool is not None else [cut(i) for i in active]
    for i, crop, err, _ in results:
        if crop is None:
            outcomes.fail(batch.slots[i].sequence, batch.slots[i].frame + 1, err)
            batch.slots[i] = None
    return [r for r in results if r[1] is not None]


def _map_boxes_back(batch: _SlotBatch, cut: list, boxes: np.ndarray, outcomes: _Outcomes) -> list[int]:
    """Each cut slot's new state: its network box mapped back to the frame; -> the slots that got one (a
    non-finite box fails its sequence)."""
    tracked = []
    for i, _, resize_factor, hw in cut:
        slot = batch.slots[i]
        where = f"sequence {slot.sequence.name}: frame {slot.frame + 1}"
        try:
            slot.state = map_box_back(slot.state, checked_output_box(boxes[i], where), resize_factor,
                                      batch.core.settings.search_size, hw)
        except SequenceError as err:
            outcomes.fail(slot.sequence, slot.frame + 1, err)
            batch.slots[i] = None
            continue
        tracked.append(i)
    return tracked


def _record_frame(batch: _SlotBatch, tracked: list[int], step_time: float, fractions: Optional[np.ndarray],
                  outcomes: _Outcomes) -> list[SequenceResult]:
    """Append the frame's box, time and division fractions to each tracked slot; -> the results of the sequences
    that ended (their slots become idle)."""
    done = []
    for i in tracked:
        slot = batch.slots[i]
        slot.boxes.append(list(slot.state))
        slot.times.append(step_time)
        if fractions is not None:
            slot.division.append(fractions[i])
        slot.frame += 1
        if slot.frame + 1 >= len(slot.sequence.frames):
            done.append(outcomes.finish(slot))
            batch.slots[i] = None
    return done


def split_by_frames(sequences: Seq, parts: int) -> list[list]:
    """`sequences` in `parts` disjoint shares of about equal frame counts (greedy, longest first: each goes to the
    share with the fewest frames so far, the lower index on a tie); each share keeps the given order. The same
    input gives the same shares in every process."""
    order = sorted(range(len(sequences)), key=lambda i: (-len(sequences[i].frames), i))
    frames = [0] * parts
    owner = {}
    for i in order:
        part = min(range(parts), key=lambda k: (frames[k], k))
        owner[i] = part
        frames[part] += len(sequences[i].frames)
    return [[sequences[i] for i in range(len(sequences)) if owner[i] == k] for k in range(parts)]

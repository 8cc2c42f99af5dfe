"""Template/search pair sampler, official `TrackingSampler` in `causal` mode
(`lib/train/data/sampler.py`).

Randomness: every draw takes a `np.random.Generator`; the pipeline gives each global sample index its own
generator (`sample_rng(seed, index)`), so a sample is a pure function of (seed, index) - retries included - and a
run resumed at any step reproduces the uninterrupted one exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence as Seq

import numpy as np

__all__ = ["PairDraw", "PairSampler", "SamplerError", "sample_rng"]

# official: a video is used only if sum(visible) > 2 * (num_search + num_template) and it has >= 20 frames
MIN_VISIBLE_EXCLUSIVE = 4
MIN_LENGTH = 20
# official `TrackingSampler.__getitem__` (causal): `gap_increase += 5` after every try that found no search frame
GAP_INCREASE_STEP = 5


class SamplerError(ValueError):
    """No sequence of a dataset can give a pair (wrong dataset list / ratios)."""


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of global sample `index` (independent streams for distinct (seed, index))."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index)])))


@dataclass(frozen=True)
class PairDraw:
    dataset: str
    dataset_index: int
    sequence_index: int
    sequence_name: str
    template_frame: int
    search_frame: int
    template_path: str
    search_path: str
    template_box: np.ndarray  # (4,) float64 xywh pixels
    search_box: np.ndarray


class PairSampler:
    """Draws (template, search) frame pairs from `datasets` (objects with `name`, `is_video`, `sequences`, and
    optionally `lengths` / `visible_counts`) with probabilities proportional to `ratios`."""

    def __init__(self, datasets: Seq, ratios: Seq[float] | None = None, max_interval: int = 200):
        if not datasets:
            raise SamplerError("PairSampler: no training datasets given")
        ratios = [1.0] * len(datasets) if ratios is None else [float(r) for r in ratios]
        if len(ratios) != len(datasets):
            raise SamplerError(f"PairSampler: {len(datasets)} datasets but {len(ratios)} ratios "
                               f"(DATA.TRAIN.DATASETS_RATIO)")
        if any(r < 0 for r in ratios) or sum(ratios) <= 0:
            raise SamplerError(f"PairSampler: dataset ratios must be >= 0 with a positive sum, got {ratios}")
        self.datasets = list(datasets)
        self.probs = np.asarray(ratios, np.float64) / sum(ratios)
        self.max_interval = int(max_interval)
        self.eligible = [self._eligible_sequences(d) for d, r in zip(self.datasets, ratios)]
        for d, e, r in zip(self.datasets, self.eligible, ratios):
            if r > 0 and len(e) == 0:
                raise SamplerError(f"PairSampler: dataset {d.name} has no sequence usable for training "
                                   f"(video: > {MIN_VISIBLE_EXCLUSIVE} visible frames and >= {MIN_LENGTH} frames)")

    @staticmethod
    def _eligible_sequences(dataset) -> np.ndarray:
        n = len(dataset.sequences)
        if not dataset.is_video:
            return np.arange(n)
        lengths = getattr(dataset, "lengths", None)
        visible = getattr(dataset, "visible_counts", None)
        if lengths is None or visible is None:
            lengths = np.array([len(s.visible) for s in dataset.sequences])
            visible = np.array([int(np.sum(s.visible)) for s in dataset.sequences])
        lengths, visible = np.asarray(lengths), np.asarray(visible)
        # Official rejection sampling (redraw until usable) is uniform over the usable sequences.
        return np.flatnonzero((visible > MIN_VISIBLE_EXCLUSIVE) & (lengths >= MIN_LENGTH))

    def draw(self, rng: np.random.Generator) -> PairDraw:
        d = int(rng.choice(len(self.datasets), p=self.probs))
        dataset = self.datasets[d]
        seq_index = int(self.eligible[d][rng.integers(len(self.eligible[d]))])
        seq = dataset.sequences[seq_index]
        if dataset.is_video:
            t, s = self.draw_frames(np.asarray(seq.visible, bool), rng)
        else:
            t = s = 0  # image dataset: the same image and box serve as template and search
        return PairDraw(dataset.name, d, seq_index, seq.name, t, s, str(seq.frames[t]), str(seq.frames[s]),
                        np.asarray(seq.boxes[t], np.float64), np.asarray(seq.boxes[s], np.float64))

    def draw_frames(self, visible: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
        """Causal pair: template among visible ids in [0, len-2]; search among visible ids in
        [t + 1, min(t + max_interval + gap, len)); gap grows by GAP_INCREASE_STEP after every failed attempt."""
        n = len(visible)
        visible_ids = np.flatnonzero(visible)
        template_pool = visible_ids[visible_ids < n - 1]
        if len(template_pool) == 0 or len(visible_ids) < 2:
            raise SamplerError("PairSampler: sequence has no visible frame before its last one")
        gap = 0
        while True:
            t = int(template_pool[rng.integers(len(template_pool))])
            hi = min(t + self.max_interval + gap, n)
            lo_i, hi_i = np.searchsorted(visible_ids, [t + 1, hi])
            gap += GAP_INCREASE_STEP
            if hi_i > lo_i:
                return t, int(visible_ids[lo_i + rng.integers(hi_i - lo_i)])

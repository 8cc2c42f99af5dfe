"""Pair sampler (official `lib/train/data/sampler.py: TrackingSampler`, causal mode) on small in-memory datasets."""
from dataclasses import dataclass

import numpy as np
import pytest

from data_pipeline.sampler import PairSampler, SamplerError, sample_rng
from grm_jax.sequence import Sequence


@dataclass
class FakeDataset:
    name: str
    is_video: bool
    sequences: list


def _seq(name, visible, dataset="fake"):
    visible = np.asarray(visible, bool)
    n = len(visible)
    boxes = np.column_stack([np.arange(n), np.arange(n), np.full(n, 10.0), np.full(n, 12.0)]).astype(np.float64)
    return Sequence(name, dataset, [f"/{dataset}/{name}/{i:05d}.jpg" for i in range(n)], boxes, visible)


def test_causal_order_and_interval_bound():
    rng = np.random.default_rng(0)
    seqs = [_seq(f"s{i}", rng.random(1000) < 0.9) for i in range(3)]
    sampler = PairSampler([FakeDataset("video", True, seqs)], [1])
    intervals = []
    for k in range(2000):
        d = sampler.draw(sample_rng(7, k))
        vis = seqs[d.sequence_index].visible
        assert 0 <= d.template_frame <= len(vis) - 2
        assert d.template_frame < d.search_frame < len(vis)
        assert vis[d.template_frame] and vis[d.search_frame]
        np.testing.assert_array_equal(d.search_box, seqs[d.sequence_index].boxes[d.search_frame])
        assert d.search_path.endswith(f"{d.search_frame:05d}.jpg")
        intervals.append(d.search_frame - d.template_frame)
    intervals = np.array(intervals)
    # dense visibility: the first attempt (gap 0) almost always succeeds -> interval < 200
    assert intervals.max() < 200 + 5 * 3
    assert np.mean(intervals < 200) > 0.99
    assert intervals.mean() > 50  # uniform over a ~200-frame window, not stuck near the template


def test_gap_grows_until_a_search_frame_exists():
    # the only pair is (0, 300): 300 frames apart, reachable once the window 200 + gap (gap += 5 per failed
    # attempt) passes 300; template 300 has no later visible frame and forces redraws of the template
    visible = np.zeros(600, bool)
    visible[[0, 300]] = True
    sampler = PairSampler([FakeDataset("v", True, [_seq("a", np.ones(30, bool))])], [1])
    for k in range(20):
        assert sampler.draw_frames(visible, sample_rng(1, k)) == (0, 300)
    # with a window of 200 and no growth this sequence would never give a pair; frames 1..199 never appear
    visible[[5, 150]] = True
    pairs = {sampler.draw_frames(visible, sample_rng(2, k)) for k in range(200)}
    # every template now has a visible frame within 200: no growth, the search stays inside the first window
    assert pairs == {(0, 5), (0, 150), (5, 150), (150, 300)}


def test_dataset_frequencies_match_ratios():
    rng = np.random.default_rng(1)
    a = FakeDataset("A", True, [_seq("a", rng.random(50) < 0.8, "A")])
    b = FakeDataset("B", True, [_seq("b", rng.random(50) < 0.8, "B")])
    c = FakeDataset("C", False, [_seq(f"img{i}", [True], "C") for i in range(5)])
    sampler = PairSampler([a, b, c], [1, 3, 2])
    n = 6000
    names = [sampler.draw(sample_rng(3, k)).dataset for k in range(n)]
    freq = {k: names.count(k) / n for k in "ABC"}
    for name, expected in (("A", 1 / 6), ("B", 3 / 6), ("C", 2 / 6)):
        assert abs(freq[name] - expected) < 0.025, freq


def test_sequence_eligibility_and_image_datasets():
    ok = _seq("ok", np.ones(20, bool))
    short = _seq("short", np.ones(19, bool))
    few_visible = _seq("few", np.r_[np.ones(4, bool), np.zeros(40, bool)])
    sampler = PairSampler([FakeDataset("v", True, [short, ok, few_visible])], [1])
    assert {sampler.draw(sample_rng(0, k)).sequence_name for k in range(200)} == {"ok"}

    # image datasets: same image and box twice, invisible (empty) boxes are not filtered here
    images = [_seq(f"i{i}", [i % 2 == 0]) for i in range(4)]
    sampler = PairSampler([FakeDataset("coco", False, images)], [1])
    draws = [sampler.draw(sample_rng(0, k)) for k in range(100)]
    assert all(d.template_path == d.search_path and d.template_frame == d.search_frame == 0 for d in draws)
    assert {d.sequence_name for d in draws} == {"i0", "i1", "i2", "i3"}

    with pytest.raises(SamplerError, match="no sequence usable"):
        PairSampler([FakeDataset("bad", True, [short])], [1])
    with pytest.raises(SamplerError, match="ratios"):
        PairSampler([FakeDataset("v", True, [ok])], [1, 2])


def test_draws_are_pure_functions_of_seed_and_index():
    rng = np.random.default_rng(2)
    seqs = [_seq(f"s{i}", rng.random(300) < 0.7) for i in range(5)]
    sampler = PairSampler([FakeDataset("v", True, seqs)], [1])
    key = lambda d: (d.sequence_index, d.template_frame, d.search_frame)  # noqa: E731
    first = [key(sampler.draw(sample_rng(11, k))) for k in range(50)]
    again = [key(sampler.draw(sample_rng(11, k))) for k in reversed(range(50))][::-1]
    other_seed = [key(sampler.draw(sample_rng(12, k))) for k in range(50)]
    assert first == again
    assert first != other_seed
    assert len(set(first)) > 40

"""Processing (official `lib/train/data/processing.py: GRMProcessing`) and the tf.data iterator of the Python
per-sample path (`DATA.PIPELINE=python`): shapes, determinism, resume, host shards, bad frames."""
import shutil

import numpy as np
import pytest

from data_pipeline import synthetic
from data_pipeline.pipeline import PairSource, make_train_iterator
from data_pipeline.processing import (ArrayFrame, InvalidSample, JpegFrame, ProcessingSettings, _Transformed,
                                     normalized_images, process_pair)
from data_pipeline.readers import build_dataset
from data_pipeline.sampler import PairSampler, sample_rng
from grm_jax import geometry
from grm_jax.config import load_config
from grm_jax.sequence import read_frame

HOST_BATCH = 2


@pytest.fixture(scope="session")
def tiny_cfg():
    cfg = load_config("tiny_test")
    cfg.DATA.TRAIN.DATASETS_NAME = ["GOT10K_train"]
    cfg.DATA.TRAIN.DATASETS_RATIO = [1]
    return cfg


@pytest.fixture(scope="session")
def got10k_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("got10k_tiny")
    synthetic.write_dataset("got10k", root, num_sequences=3, num_frames=(20, 30), image_size=(160, 120), seed=0,
                            split="train")
    return root


@pytest.fixture(scope="session")
def got10k(got10k_root, tmp_path_factory):
    return build_dataset("GOT10K_train", got10k_root, tmp_path_factory.mktemp("idx"), progress=False)


def _batches(cfg, ds, start, n, **kw):
    kw.setdefault("process_index", 0)
    kw.setdefault("process_count", 1)
    kw.setdefault("pipeline", "python")  # the graph path: tests/test_graph_pipeline.py
    with make_train_iterator(cfg, [ds], seed=5, start_step=start, host_batch_size=kw.pop("host_batch", HOST_BATCH),
                             num_parallel=2, **kw) as it:
        out = [next(it) for _ in range(n)]
        return out, it.stats


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_transformed_window_equals_full_flip_and_gray():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for gray in (False, True):
        full = img[:, ::-1]
        if gray:
            import cv2

            g = cv2.cvtColor(np.ascontiguousarray(full), cv2.COLOR_RGB2GRAY)
            full = np.stack([g, g, g], axis=2)
        view = _Transformed(ArrayFrame(img), gray=gray, flip=True)
        for r0, r1, c0, c1 in ((0, 37, 0, 53), (3, 20, 5, 52), (10, 11, 0, 1)):
            np.testing.assert_array_equal(view.window(r0, r1, c0, c1), full[r0:r1, c0:c1])


def test_process_pair_outputs_and_template_geometry():
    settings = ProcessingSettings(template_size=64, search_size=128, template_factor=2.0, search_factor=4.0)
    img = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    box = [60.0, 40.0, 20.0, 20.0]
    for k in range(20):
        out = process_pair(img, box, img, box, sample_rng(0, k), settings)
        assert out["template"].shape == (64, 64, 3) and out["search"].shape == (128, 128, 3)
        assert out["template_mask"].shape == (16,) and out["heatmap"].shape == (8, 8)
        assert out["template"].dtype == out["search"].dtype == np.uint8
        assert all(v.dtype == np.float32 for k, v in out.items() if k not in ("template", "search"))
        assert out["template_lut"].shape == out["search_lut"].shape == (256, 3)
        images = normalized_images(out)
        lo = (0 - np.array(settings.mean)) / np.array(settings.std)
        hi = (1 - np.array(settings.mean)) / np.array(settings.std)
        assert images["search"].dtype == np.float32 and images["search"].shape == (128, 128, 3)
        assert np.all(images["search"] >= lo.min() - 1e-6) and np.all(images["search"] <= hi.max() + 1e-6)
        # template: no jitter -> the box sits in the middle of a crop twice its size (0.5 wide), centred at
        # (out - 1) / 2 unless the independent flip mirrors it to 1 - x - w
        t = out["template_anno"]
        np.testing.assert_allclose(t[2:], [0.5, 0.5], atol=1e-6)
        assert min(abs(t[0] - (31.5 / 64 - 0.25)), abs(t[0] - (1 - 31.5 / 64 - 0.25))) < 1e-6
        np.testing.assert_array_equal(out["template_mask"], geometry.template_box_mask(t[None], 64)[0])
        np.testing.assert_array_equal(out["heatmap"], geometry.gaussian_heatmap(out["search_anno"][None], 128)[0])
        assert out["heatmap"].max() <= 1.0
    with pytest.raises(InvalidSample):
        process_pair(img, [1, 1, 0, 5], img, box, sample_rng(0, 0), settings)
    with pytest.raises(InvalidSample):
        process_pair(img, box, img, [np.nan, 1, 5, 5], sample_rng(0, 0), settings)


def test_window_decode_matches_full_decode(got10k):
    settings = ProcessingSettings(template_size=64, search_size=128)
    seq = got10k.sequences[0]
    for k in range(6):
        t, s = seq.frames[k], seq.frames[k + 5]
        win = process_pair(JpegFrame(t), seq.boxes[k], JpegFrame(s), seq.boxes[k + 5], sample_rng(9, k), settings)
        full = process_pair(read_frame(t), seq.boxes[k], read_frame(s), seq.boxes[k + 5], sample_rng(9, k), settings)
        for key in ("template_anno", "search_anno", "template_mask", "heatmap", "template_lut", "search_lut"):
            np.testing.assert_array_equal(win[key], full[key], err_msg=key)
        # decode_and_crop_jpeg differs from a full decode by a few grey levels on ~0.1 % of pixels at chroma
        # edges; upsampling these 160x120 frames spreads a differing pixel over a few crop pixels
        for key in ("template", "search"):
            grey = np.abs(win[key].astype(np.int16) - full[key].astype(np.int16))
            assert grey.max() <= 8.0 and np.mean(grey > 0.5) < 0.01, key
        exact = process_pair(JpegFrame(t, window=False), seq.boxes[k], JpegFrame(s, window=False),
                             seq.boxes[k + 5], sample_rng(9, k), settings)
        for key in full:
            np.testing.assert_array_equal(exact[key], full[key], err_msg=key)


def test_batches_shapes_determinism_and_resume(tiny_cfg, got10k):
    run, _ = _batches(tiny_cfg, got10k, 0, 3)
    b = run[0]
    hz, hx = tiny_cfg.DATA.TEMPLATE.SIZE, tiny_cfg.DATA.SEARCH.SIZE
    assert b["template"].shape == (HOST_BATCH, hz, hz, 3) and b["search"].shape == (HOST_BATCH, hx, hx, 3)
    assert b["template"].dtype == b["search"].dtype == np.uint8
    assert b["search_lut"].shape == (HOST_BATCH, 256, 3) and b["heatmap"].shape == (HOST_BATCH, hx // 16, hx // 16)
    assert b["template_mask"].shape == (HOST_BATCH, (hz // 16) ** 2)
    for batch in run:
        assert np.all(np.isfinite(batch["search_lut"])) and np.all(np.isfinite(batch["search_anno"]))
        # (the search centre may lie outside the crop under centre jitter 4.5: an all-zero heat map is official)
        assert np.all(batch["heatmap"].max(axis=(1, 2)) <= 1.0) and np.all(batch["template_mask"].sum(1) > 0)
    np.testing.assert_array_equal(np.concatenate([r["sample_index"] for r in run]), np.arange(3 * HOST_BATCH))
    again, _ = _batches(tiny_cfg, got10k, 0, 3)
    for x, y in zip(run, again):
        _assert_same(x, y)
    resumed, _ = _batches(tiny_cfg, got10k, 2, 1)
    _assert_same(resumed[0], run[2])
    assert not np.array_equal(run[0]["search"], run[1]["search"])


def test_host_shards_disjoint_complete_and_equal_to_single_host(tiny_cfg, got10k):
    single, _ = _batches(tiny_cfg, got10k, 1, 2, host_batch=4)
    hosts = [_batches(tiny_cfg, got10k, 1, 2, process_index=p, process_count=2)[0] for p in range(2)]
    for step in range(2):
        idx = [h[step]["sample_index"] for h in hosts]
        assert not set(idx[0]) & set(idx[1])
        np.testing.assert_array_equal(np.sort(np.concatenate(idx)), single[step]["sample_index"])
        merged = {k: np.concatenate([h[step][k] for h in hosts]) for k in single[step]}
        _assert_same(merged, single[step])


def test_bad_frames_are_skipped_counted_and_deterministic(tiny_cfg, got10k_root, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(got10k_root, root)
    frames = sorted(root.rglob("*.jpg"))
    for i, f in enumerate(frames[::3]):
        if i % 2:
            f.unlink()  # missing frame
        else:
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])  # truncated JPEG
    ds = build_dataset("GOT10K_train", root, tmp_path / "idx", progress=False)
    run, stats = _batches(tiny_cfg, ds, 0, 4)
    bad = sum(int(b["bad_frames"].sum()) for b in run)
    assert bad > 0 and stats["bad_frames"] >= bad
    for b in run:  # redrawn samples carry the labels of what they show
        assert np.all(np.isfinite(b["search"])) and np.all(np.isfinite(b["search_anno"]))
        np.testing.assert_array_equal(b["heatmap"], geometry.gaussian_heatmap(b["search_anno"], 128))
        np.testing.assert_array_equal(b["template_mask"], geometry.template_box_mask(b["template_anno"], 64))
    again, _ = _batches(tiny_cfg, ds, 0, 4)
    for x, y in zip(run, again):
        _assert_same(x, y)


def test_pair_source_gives_up_with_a_clear_error(tiny_cfg, got10k, tmp_path):
    sampler = PairSampler([got10k], [1])
    source = PairSource(sampler, ProcessingSettings(template_size=64, search_size=128), seed=0, max_redraws=3)
    broken = PairSource(PairSampler([_Missing(got10k)], [1]), source.settings, seed=0, max_redraws=3)
    with pytest.raises(RuntimeError, match="no usable pair after 3 draws"):
        broken(0)
    assert broken.counters["bad_frames"] == 3
    assert source(0)["search"].shape == (128, 128, 3)


class _Missing:
    """A dataset whose frame paths point nowhere."""

    def __init__(self, ds):
        from grm_jax.sequence import Sequence

        self.name, self.is_video = "missing", True
        self.sequences = [Sequence("gone", "missing", [f"/nonexistent/{i:08d}.jpg" for i in range(25)],
                                   np.tile([10.0, 10.0, 20.0, 20.0], (25, 1)), np.ones(25, bool))]


def test_brightness_flip_normalise_table_equals_pixelwise_float32():
    """The crop travels as uint8 + level table; the host (cv2.LUT) and the training step's device lookup must
    both give, bit for bit, the official float32 ToTensorAndJitter + Normalize of the flipped crop."""
    import jax
    import jax.numpy as jnp

    from data_pipeline.processing import _finish
    from grm_jax.train.step import device_images

    settings = ProcessingSettings()
    crop = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    anno = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    flips = set()
    crops, tables, refs = [], [], []
    for k in range(8):
        out, out_anno, table = _finish(crop, anno, np.random.default_rng(k), settings)
        rng = np.random.default_rng(k)
        b = rng.uniform(0.8, 1.2)
        flip = rng.random() < 0.5
        assert out.dtype == np.uint8 and table.shape == (256, 3) and table.dtype == np.float32
        ref = np.minimum(crop.astype(np.float32) * np.float32(b / 255.0), np.float32(1.0))
        ref = (ref[:, ::-1] if flip else ref) - np.asarray(settings.mean, np.float32)
        ref = ref / np.asarray(settings.std, np.float32)
        np.testing.assert_array_equal(geometry.brightness_normalize(out, table), ref)
        np.testing.assert_allclose(out_anno[0], 1 - 0.1 - 0.3 if flip else 0.1, rtol=1e-6)
        flips.add(flip)
        crops.append(out), tables.append(table), refs.append(ref)
    assert flips == {True, False}
    on_device = jax.jit(device_images)(jnp.asarray(np.stack(crops)), jnp.asarray(np.stack(tables)))
    np.testing.assert_array_equal(np.asarray(on_device), np.stack(refs))


def test_jpeg_frame_rejects_bad_files(tmp_path):
    from grm_jax.sequence import FrameError

    not_jpeg = tmp_path / "a.jpg"
    not_jpeg.write_bytes(b"GIF89a" + b"\0" * 100 + b"\xff\xd9")
    with pytest.raises(FrameError, match="a.jpg"):
        JpegFrame(str(not_jpeg))
    empty = tmp_path / "b.jpg"
    empty.write_bytes(b"")
    with pytest.raises(FrameError, match="empty"):
        JpegFrame(str(empty))
    with pytest.raises(FrameError, match="c.jpg"):
        JpegFrame(str(tmp_path / "c.jpg"))


def test_a_png_saved_as_jpg_is_decoded_by_content(tmp_path):
    """A frame file named .jpg that holds a PNG is decoded as what it is (as cv2.imread and the official loaders
    do), not refused as a corrupt JPEG; the window is the same pixels as the full decode."""
    import cv2

    from data_pipeline.processing import JpegFrame

    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", rgb[..., ::-1])
    assert ok
    path = tmp_path / "00000001.jpg"
    path.write_bytes(png.tobytes())
    expected = cv2.imread(str(path))[..., ::-1]
    np.testing.assert_array_equal(expected, rgb)
    for window in (True, False):
        frame = JpegFrame(str(path), window=window)
        assert frame.shape == (48, 64)
        np.testing.assert_array_equal(frame.window(5, 40, 3, 60), rgb[5:40, 3:60])

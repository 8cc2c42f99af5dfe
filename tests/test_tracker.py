"""Tracker: official parity (tracker_run.npz), batched == one-at-a-time, thresholds, track.py end to end + resume."""
import numpy as np
import pytest

import jax
import jax.numpy as jnp

from grm_jax.config import load_config
from grm_jax.specs import build_model
from grm_jax.track import TrackerCore, TrackerSettings, division_threshold, map_box_back, track_sequences

pytest.importorskip("grm_jax.geometry")


@pytest.fixture(scope="session")
def tiny_variables(tiny_cfg):
    model = build_model(tiny_cfg)
    z = jnp.zeros((1, tiny_cfg.DATA.TEMPLATE.SIZE, tiny_cfg.DATA.TEMPLATE.SIZE, 3))
    x = jnp.zeros((1, tiny_cfg.DATA.SEARCH.SIZE, tiny_cfg.DATA.SEARCH.SIZE, 3))
    variables = jax.jit(lambda k: model.init(k, z, x, train=False))(jax.random.PRNGKey(3))
    return jax.tree_util.tree_map(np.asarray, dict(variables))


@pytest.fixture(scope="session")
def tiny_core(tiny_cfg, tiny_variables):
    return TrackerCore(build_model(tiny_cfg), tiny_variables, TrackerSettings.from_config(tiny_cfg, "otb"))


@pytest.fixture(scope="session")
def synthetic_val(synthetic_benchmark):
    return synthetic_benchmark("got10k_val", num_sequences=5, num_frames=(3, 11), image_size=(160, 120), seed=11)


def test_tracker_parity_with_official_run(parity_bundle):
    from grm_jax.parity.track import MIN_FRAMES_OK, check_tracker
    results = {r.name: r for r in check_tracker(parity_bundle, {})}
    main = results["tracker"]
    assert main.detail["frames_within_tol"] >= MIN_FRAMES_OK and main.ok, main.detail
    assert results["tracker/teacher_forced"].ok, results["tracker/teacher_forced"].detail
    assert main.detail["template_crop_max_abs_diff"] == 0 and main.detail["template_mask_mismatches"] == 0


def test_batched_tracking_gives_the_same_boxes(tiny_core, synthetic_val):
    _, seqs = synthetic_val
    lengths = sorted({len(s.frames) for s in seqs})
    assert len(lengths) >= 3  # sequences of different lengths, so slots are refilled mid-run
    single = {r.sequence.name: r.boxes for r in track_sequences(tiny_core, seqs, batch_size=1)}
    order = []
    batched = {}
    for r in track_sequences(tiny_core, seqs, batch_size=3):
        order.append(r.sequence.name)
        batched[r.sequence.name] = r.boxes
    assert set(batched) == set(single) == {s.name for s in seqs}
    for s in seqs:
        assert batched[s.name].shape == (len(s.frames), 4)
        np.testing.assert_array_equal(batched[s.name], single[s.name], err_msg=s.name)
        np.testing.assert_array_equal(batched[s.name][0], s.boxes[0])
    assert order != [s.name for s in seqs]   # shorter sequences finished first: refill really happened
    # one batched forward: same boxes up to float rounding
    vec = TrackerCore(tiny_core.model, tiny_core.variables, tiny_core.settings, batch_mode="vectorized")
    for r in track_sequences(vec, seqs, batch_size=3):
        np.testing.assert_allclose(r.boxes, single[r.sequence.name], atol=0.05)
    # the boxes move (the model is random, but the tracker is not stuck on the init box everywhere)
    assert any(not np.allclose(b[1:], b[0]) for b in single.values())


def test_division_threshold_per_dataset():
    cfg = load_config("vitb_256_ep300")
    assert division_threshold(cfg, "lasot") == 0.4
    assert division_threshold(cfg, "nfs") == 0.6
    assert division_threshold(cfg, "NfS30") == 0.6 and division_threshold(cfg, "uav123") == 0.55  # aliases
    assert division_threshold(cfg, "uav") == 0.55
    assert division_threshold(cfg, "otb") == 0.0          # not a TEST.HYPER key -> DEFAULT
    assert division_threshold(cfg, "got10k_test") == 0.0
    assert TrackerSettings.from_config(cfg, "avist").threshold == 0.4
    assert TrackerSettings.from_config(cfg, "avist", threshold=0.7).threshold == 0.7


def test_map_box_back_and_clip():
    # crop of side 200 px (resize factor 128/200) centred on the previous box centre (100, 60)
    box = map_box_back([80.0, 40.0, 40.0, 40.0], np.array([0.5, 0.5, 0.25, 0.125], np.float32), 0.64, 128,
                       (480, 640))
    np.testing.assert_allclose(box, [75.0, 47.5, 50.0, 25.0], atol=1e-5)
    # pushed off the left/top edge: clipped with a 10 px margin
    box = map_box_back([0.0, 0.0, 20.0, 20.0], np.array([0.0, 0.0, 0.02, 0.02], np.float32), 1.28, 128,
                       (100, 100))
    assert box[0] == 0 and box[1] == 0 and box[2] == 10 and box[3] == 10


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_variables, save_tiny_checkpoint):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", tiny_variables)


def _script(name):
    import importlib
    return importlib.import_module(f"grm_jax.cli.{name}")


@pytest.mark.slow
def test_track_script_end_to_end_with_resume(tmp_path, tiny_checkpoint, synthetic_val):
    track_script = _script("track")
    from grm_jax.evaluation.raw_results import read_result

    root, seqs = synthetic_val
    ckpt = tiny_checkpoint
    work = tmp_path / "work"
    argv = ["--config", "tiny_test", "--checkpoint", str(ckpt), "--dataset", "got10k_val", "--dataset-root",
            str(root), "--workdir", str(work), "--batch-size", "2", "--no-progress"]
    assert track_script.main(argv) == 0
    files = {s.name: work / "got10k" / f"{s.name}.txt" for s in seqs}
    first = {}
    for s in seqs:
        text = files[s.name].read_text().splitlines()
        assert len(text) == len(s.frames)
        assert text[0] == ",".join(str(int(v)) for v in s.boxes[0])   # init box, truncated ints
        assert all(len(line.split(",")) == 4 and "." not in line for line in text)
        assert (work / "got10k" / f"{s.name}_time.txt").is_file()
        first[s.name] = read_result(files[s.name])
    # no --dataset-root: taken from DATA.ROOTS.GOT10K, else a clear error
    no_root = [a for a in argv if a not in ("--dataset-root", str(root))]
    assert track_script.main(no_root) == 2
    assert track_script.main(no_root + ["--set", f"DATA.ROOTS.GOT10K={root}"]) == 0   # everything done: skipped
    # resume: delete one result; only that sequence is tracked again, with the same boxes
    victim = seqs[2].name
    files[victim].unlink()
    mtimes = {n: p.stat().st_mtime_ns for n, p in files.items() if n != victim}
    assert track_script.main(argv[:-2] + ["1", "--no-progress"]) == 0
    assert all(files[n].stat().st_mtime_ns == t for n, t in mtimes.items())
    np.testing.assert_array_equal(read_result(files[victim]), first[victim])


@pytest.mark.slow
def test_track_video_with_decisions(tmp_path, tiny_checkpoint, synthetic_val):
    import cv2
    from grm_jax.sequence import read_frame
    _, seqs = synthetic_val
    seq = max(seqs, key=lambda s: len(s.frames))
    video = tmp_path / "clip.mp4"
    frames = [read_frame(f) for f in seq.frames]
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    box = ",".join(str(v) for v in seq.boxes[0])
    out = tmp_path / "out" / "clip"
    assert _script("track_video").main([str(video), "--box", box, "--config", "tiny_test", "--checkpoint",
                                        str(tiny_checkpoint), "--out", str(out), "--show-decisions"]) == 0
    lines = (tmp_path / "out" / "clip.txt").read_text().splitlines()
    assert len(lines) == len(frames)
    assert lines[0] == ",".join(str(int(v)) for v in seq.boxes[0])
    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    n, shape = 0, None
    while True:
        ok, img = cap.read()
        if not ok:
            break
        n, shape = n + 1, img.shape
    assert n == len(frames) and shape[1] == w and shape[0] > h   # the decision strip is added under the frame
    with pytest.raises(SystemExit):
        _script("track_video").main([str(video), "--box", "5000,5000,10,10", "--config", "tiny_test",
                                     "--checkpoint", str(tiny_checkpoint), "--out", str(out)])


def test_config_mean_and_std_reach_the_tracker(tiny_cfg, tiny_variables, synthetic_val, monkeypatch):
    from grm_jax import geometry
    from grm_jax.sequence import read_frame
    from grm_jax.track import SequenceTracker
    from grm_jax.track import tracker as tracker_module

    mean, std = (0.5, 0.25, 0.75), (0.125, 0.5, 0.25)
    cfg = load_config("tiny_test", [f"DATA.MEAN={list(mean)}", f"DATA.STD={list(std)}"])
    settings = TrackerSettings.from_config(cfg, "otb")
    assert (settings.mean, settings.std) == (mean, std)
    default = TrackerSettings.from_config(tiny_cfg, "otb")
    np.testing.assert_array_equal(np.asarray(default.mean, np.float32), geometry.IMAGENET_MEAN)
    np.testing.assert_array_equal(np.asarray(default.std, np.float32), geometry.IMAGENET_STD)

    seen = []
    real_network_outputs = tracker_module.network_outputs

    def recording(*args, **kwargs):
        seen.append((kwargs["mean"], kwargs["std"]))
        return real_network_outputs(*args, **kwargs)

    monkeypatch.setattr(tracker_module, "network_outputs", recording)
    core = TrackerCore(build_model(cfg), tiny_variables, settings)
    _, seqs = synthetic_val
    image = read_frame(seqs[0].frames[0])
    crop, template, _ = core.template_input(image, seqs[0].boxes[0])
    # the template crop is normalised on the host with the config's statistics, the search crop in the jitted step
    np.testing.assert_array_equal(template[0], geometry.normalize_image(crop, mean, std))
    assert not np.allclose(template[0], geometry.normalize_image(crop))
    tracker = SequenceTracker(core)
    tracker.initialize(image, seqs[0].boxes[0])
    tracker.track(image)
    assert seen and all(stats == (mean, std) for stats in seen)

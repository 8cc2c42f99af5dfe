"""Hostile and careless input for tracking and the tools: each case ends in one clear message (or the exact
result), never a traceback, a hang or a silently wrong file."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import PARITY_BUNDLE, REPO

torch = pytest.importorskip("torch")


def _script(name: str):
    """The command-line module grm_jax.cli.<name>, imported in-process (its main(argv) returns the exit status)."""
    return importlib.import_module(f"grm_jax.cli.{name}")


# ---------------------------------------------------------------------------------------------------------------
# Exact divisions at every feature size (official lib/models/layers/head.py: CenterPredictor.cal_bbox)


def _torch_cal_bbox(score, size, offset):
    """Torch re-statement of the official decode on NCHW maps: first maximum of the flattened score map, centre =
    (cell index + offset) / F in float32, size taken at the peak."""
    f = score.shape[-1]
    max_score, idx = torch.max(score.flatten(1), dim=1, keepdim=True)
    gather_idx = idx.unsqueeze(1).expand(idx.shape[0], 2, 1)
    wh = size.flatten(2).gather(dim=2, index=gather_idx).squeeze(-1)
    off = offset.flatten(2).gather(dim=2, index=gather_idx).squeeze(-1)
    cx = ((idx % f).to(torch.float) + off[:, :1]) / f
    cy = ((idx // f).to(torch.float) + off[:, 1:]) / f
    return torch.cat([cx, cy, wh], dim=1), max_score


def _random_maps(f: int, batch: int, seed: int):
    rng = np.random.default_rng(seed)
    score = rng.random((batch, 1, f, f), dtype=np.float32)
    size = rng.random((batch, 2, f, f), dtype=np.float32)
    offset = (rng.random((batch, 2, f, f), dtype=np.float32) * 1.5 - 0.25).astype(np.float32)
    return score, size, offset


def _nhwc(a):
    return np.ascontiguousarray(np.transpose(a, (0, 2, 3, 1)))


@pytest.mark.parametrize("feat", [8, 10, 12, 14, 16, 20])
def test_cal_bbox_matches_torch_bit_for_bit_at_any_feature_size(feat):
    from grm_jax.models.head import cal_bbox
    from grm_jax.runtime import xla_compiler_options

    score, size, offset = _random_maps(feat, 256, feat)
    ref, _ = _torch_cal_bbox(*(torch.from_numpy(a) for a in (score, size, offset)))
    args = [_nhwc(a) for a in (score, size, offset)]
    jitted = np.asarray(jax.jit(cal_bbox, compiler_options=xla_compiler_options())(*args))
    eager = np.asarray(cal_bbox(*args))
    np.testing.assert_array_equal(jitted, ref.numpy())
    np.testing.assert_array_equal(eager, ref.numpy())


def test_interacting_fraction_is_a_true_division():
    from grm_jax.models.head import true_divide

    counts = np.arange(0, 101, dtype=np.float32)[None].repeat(3, 0)
    for n in (64, 100, 144, 196, 400):
        ref = (torch.from_numpy(counts) / n).numpy()
        np.testing.assert_array_equal(np.asarray(jax.jit(lambda c: true_divide(c, n))(counts)), ref)


@pytest.mark.slow
def test_model_interacting_fraction_is_exact_with_a_10x10_search_grid():
    import jax.numpy as jnp

    from grm_jax.config import load_config
    from grm_jax.specs import build_model
    from grm_jax.runtime import xla_compiler_options

    cfg = load_config("tiny_test", ["DATA.SEARCH.SIZE=160", "TEST.SEARCH_SIZE=160", "MODEL.BACKBONE.DEPTH=2",
                                    "MODEL.HEAD.NUM_CHANNELS=16"])
    model = build_model(cfg)
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.standard_normal((8, 64, 64, 3), dtype=np.float32))
    x = jnp.asarray(rng.standard_normal((8, 160, 160, 3), dtype=np.float32))

    def forward(key):
        variables = model.init(key, z[:1], x[:1], train=False)
        return model.apply(variables, z, x, train=False)
    out = jax.jit(forward, compiler_options=xla_compiler_options())(jax.random.PRNGKey(0))
    counts = np.asarray(out["decisions"])[..., 1].sum(-1).T             # (B, L_div) interacting tokens of 100
    # counts whose float32 k * 0.01 differs from k / 100: the test would fail with a reciprocal multiply
    assert np.isin(counts, [k for k in range(101) if np.float32(k) * np.float32(0.01) != np.float32(k) / 100]).any()
    ref = (torch.from_numpy(counts.astype(np.float32)) / 100).numpy()
    np.testing.assert_array_equal(np.asarray(out["interact_frac"]), ref)


def _heads_bundle(root: Path, search_size: int, seed: int) -> Path:
    """A parity bundle for the `heads` check at another search size: cal_bbox and the Hann window from torch
    re-statements of the official code (lib/models/layers/head.py, lib/test/utils/hann.py: hann1d/hann2d)."""
    cfg = json.loads((PARITY_BUNDLE / "config.json").read_text())
    cfg["model"]["search_size"] = search_size
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(cfg))
    f = search_size // cfg["model"]["patch_size"]
    score, size, offset = _random_maps(f, 64, seed)
    box, max_score = _torch_cal_bbox(*(torch.from_numpy(a) for a in (score, size, offset)))
    k = torch.arange(1, f + 1).float()
    hann1 = 0.5 * (1 - torch.cos((2 * np.pi / (f + 1)) * k))
    hann = (hann1.reshape(-1, 1) * hann1.reshape(1, -1)).reshape(1, 1, f, f)
    np.savez(root / "heads_and_losses.npz", calbbox_score_map=score, calbbox_size_map=size,
             calbbox_offset_map=offset, calbbox_bbox_cxcywh=box.numpy(), calbbox_max_score=max_score.numpy(),
             hann2d=hann.numpy())
    return root


@pytest.mark.parametrize("search_size", [128, 160])
def test_parity_script_passes_heads_exactly_at_search_size(search_size, tmp_path, capsys):
    bundle = (PARITY_BUNDLE if search_size == 128 else _heads_bundle(tmp_path / f"s{search_size}", search_size, 1))
    status = _script("parity").main([str(bundle), "--check", "heads"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert status == 0, lines
    checked = {r["name"] for r in lines if "ok" in r}
    assert {"heads/cal_bbox", "heads/hann2d"} <= checked


# ---------------------------------------------------------------------------------------------------------------
# Tracking: scripts/track.py on a tiny model and a synthetic OTB-format benchmark


@pytest.fixture(scope="module")
def tiny_variables():
    """The parity bundle's official checkpoint: the tiny_test architecture, real (non-degenerate) weights."""
    from grm_jax.checkpoints.inference import load_for_inference

    return load_for_inference(PARITY_BUNDLE / "checkpoint.pth.tar")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_variables, save_tiny_checkpoint):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", tiny_variables)


@pytest.fixture(scope="module")
def otb_template(synthetic_benchmark):
    root, _ = synthetic_benchmark("otb", only_existing=True, num_sequences=3, num_frames=(4, 6), image_size=(160, 120),
                                  seed=12)
    return root


@pytest.fixture
def otb(tmp_path, otb_template):
    """A private copy of the synthetic benchmark (tests damage it)."""
    root = tmp_path / "otb"
    shutil.copytree(otb_template, root)
    return root


def _otb_sequences(root: Path):
    from grm_jax.evaluation.datasets import load_eval_dataset

    return load_eval_dataset("otb", root, only_existing=True)


def _track(capsys, checkpoint, root, workdir, *extra):
    argv = ["--config", "tiny_test", "--checkpoint", str(checkpoint), "--dataset", "otb", "--dataset-root",
            str(root), "--only-existing", "--workdir", str(workdir), "--no-progress", *extra]
    status = _script("track").main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def clean_results(tmp_path_factory, tiny_checkpoint, otb_template):
    """{file name: bytes} of an uninterrupted run on the undamaged benchmark."""
    work = tmp_path_factory.mktemp("clean") / "work"
    argv = ["--config", "tiny_test", "--checkpoint", str(tiny_checkpoint), "--dataset", "otb", "--dataset-root",
            str(otb_template), "--only-existing", "--workdir", str(work), "--no-progress"]
    assert _script("track").main(argv) == 0
    return {p.name: p.read_bytes() for p in work.glob("*.txt")}


def _result_files(work: Path) -> dict:
    return {p.name: p.read_bytes() for p in work.glob("*.txt")}


def _only_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert lines and lines[-1].startswith("error: "), err
    return lines[-1]


def test_non_finite_weights_are_refused_at_load_naming_the_tensor(tmp_path, capsys, tiny_variables, otb,
                                                                  save_tiny_checkpoint):
    from grm_jax.checkpoints.inference import load_for_inference
    from grm_jax.checkpoints.reading import CheckpointLoadError

    broken = jax.tree_util.tree_map(np.copy, tiny_variables)
    broken["params"]["box_head"]["conv5_ctr"]["bias"][0] = np.nan
    broken["params"]["backbone"]["norm"]["scale"][3] = np.inf
    ckpt = save_tiny_checkpoint(tmp_path / "nan_ckpt", broken)
    with pytest.raises(CheckpointLoadError, match="2 tensor"):
        load_for_inference(ckpt)
    status, _, err = _track(capsys, ckpt, otb, tmp_path / "work")
    assert status == 2
    assert "params/box_head/conv5_ctr/bias (1 of 1 values NaN/inf)" in err and "backbone/norm/scale" in err
    assert "Traceback" not in err
    assert not list((tmp_path / "work").glob("*.txt")) and not (tmp_path / "work" / "track_config.json").exists()


def test_non_finite_network_output_stops_the_sequence(tiny_variables, otb_template):
    from grm_jax.config import load_config
    from grm_jax.specs import build_model
    from grm_jax.track import SequenceError, TrackerCore, TrackerSettings, track_sequences

    cfg = load_config("tiny_test")
    broken = jax.tree_util.tree_map(np.copy, tiny_variables)
    broken["params"]["box_head"]["conv5_size"]["bias"][:] = np.nan
    core = TrackerCore(build_model(cfg), broken, TrackerSettings.from_config(cfg, "otb"))
    seqs = _otb_sequences(otb_template)
    with pytest.raises(SequenceError, match=r"frame 1: the network output is not finite"):
        list(track_sequences(core, seqs[:1]))
    errors = []
    assert list(track_sequences(core, seqs, batch_size=2, on_error=lambda s, e: errors.append(s.name))) == []
    assert sorted(errors) == sorted(s.name for s in seqs)


def test_bad_frame_or_init_box_skips_only_that_sequence(tmp_path, capsys, tiny_checkpoint, otb, clean_results):
    seqs = _otb_sequences(otb)
    bad_frame_seq, bad_box_seq, good_seq = seqs
    original_frame = Path(bad_frame_seq.frames[2]).read_bytes()
    Path(bad_frame_seq.frames[2]).write_bytes(b"\xff\xd8 truncated")
    anno = otb / bad_box_seq.name.replace("otb_", "") / "groundtruth_rect.txt"
    rows = anno.read_text().splitlines()
    init_row = next(i for i, r in enumerate(rows)   # OTB tables may skip the first rows (init_omit)
                    if np.array_equal(np.array(r.replace("\t", ",").split(","), float), bad_box_seq.boxes[0]))
    anno.write_text("\n".join(rows[:init_row] + ["10,10,1e30,1e30"] + rows[init_row + 1:]) + "\n")
    work = tmp_path / "work"
    status, out, err = _track(capsys, tiny_checkpoint, otb, work, "--batch-size", "2")
    assert status == 2
    assert "Traceback" not in err
    assert f"warning: skipping sequence {bad_frame_seq.name}: frame 2: truncated or corrupt JPEG" in err
    assert f"warning: skipping sequence {bad_box_seq.name}: init box (frame 0): [10.0, 10.0, 1e+30, 1e+30] is far " \
           "larger than the 160x120 frame" in err
    assert "error: 2 of 3 sequences skipped" in err
    assert sorted(p.stem for p in work.glob("*.txt")) == [good_seq.name]
    # the cause removed, a rerun tracks only the two skipped sequences
    Path(bad_frame_seq.frames[2]).write_bytes(original_frame)
    anno.write_text("\n".join(rows) + "\n")
    status, out, _ = _track(capsys, tiny_checkpoint, otb, work, "--batch-size", "2")
    assert status == 0 and "1 already done, 2 to track" in out
    assert _result_files(work) == clean_results              # as if nothing had gone wrong


def test_rerun_with_other_settings_refuses_unless_told(tmp_path, capsys, tiny_checkpoint, otb):
    work = tmp_path / "work"
    assert _track(capsys, tiny_checkpoint, otb, work)[0] == 0
    before = {p.name: p.read_bytes() for p in work.iterdir()}
    status, _, err = _track(capsys, tiny_checkpoint, otb, work, "--threshold", "0.5")
    assert status == 2
    assert _only_error_line(err) == (f"error: {work} holds 3 results tracked with other settings "
                                     f"({work / 'track_config.json'}): threshold: 0.0 -> 0.5. Use another --workdir, "
                                     "or pass --allow-mixed-settings to add to it (both settings are then recorded)")
    status, _, err = _track(capsys, tiny_checkpoint, otb, work, "--set", "MODEL.DIVISION.RATIO=0.5")
    assert status == 2 and "MODEL.DIVISION.RATIO: 0.0 -> 0.5" in err
    assert {p.name: p.read_bytes() for p in work.iterdir()} == before
    # the same settings resume; with the flag a new sequence is added and both records are kept
    assert _track(capsys, tiny_checkpoint, otb, work)[0] == 0
    victim = next(work.glob("*.txt"))
    victim.unlink()
    assert _track(capsys, tiny_checkpoint, otb, work, "--threshold", "0.5", "--allow-mixed-settings")[0] == 0
    record = json.loads((work / "track_config.json").read_text())
    assert record["threshold"] == 0.5 and [r["threshold"] for r in record["earlier_settings"]] == [0.0]
    # a record written before a config key existed (the key at its default is no change), and where the training
    # data is read from (no part of the results): the same settings
    del record["resolved_config"]["DATA"]["SERVICE_WORKER_CORES"]
    (work / "track_config.json").write_text(json.dumps(record))
    assert _track(capsys, tiny_checkpoint, otb, work, "--threshold", "0.5", "--set",
                  "DATA.TFDS_DIRS.LASOT=gs://bucket/tfds")[0] == 0


def test_results_folder_lock_refuses_a_second_run_and_a_stale_lock_does_not_block(tmp_path, capsys,
                                                                                tiny_checkpoint, otb):
    import fcntl

    work = tmp_path / "work"
    work.mkdir()
    with open(work / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("track.py pid 4242 on node7\n")
        held.flush()
        status, _, err = _track(capsys, tiny_checkpoint, otb, work)
    assert status == 2
    assert _only_error_line(err) == (f"error: {work} is being written by track.py pid 4242 on node7 (lock "
                                     f"{work / '.lock'}); wait for it to finish or use another results folder")
    assert not list(work.glob("*.txt"))
    # a process killed while holding the lock leaves the file behind; the kernel released the lock
    code = ("import fcntl, os, sys; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
            "f.write('track.py pid %d\\n' % os.getpid()); f.flush(); os.kill(os.getpid(), 9)")
    subprocess.run([sys.executable, "-c", code, str(work / ".lock")], timeout=30)
    assert "track.py pid" in (work / ".lock").read_text()
    assert _track(capsys, tiny_checkpoint, otb, work)[0] == 0
    assert len(list(work.glob("*.txt"))) == 3


def test_full_disk_leaves_nothing_half_written(tmp_path, capsys, tiny_checkpoint, otb, clean_results):
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    work = tmp_path / "work"
    work.mkdir()
    # every write to /dev/full fails with ENOSPC, as on a full disk
    (work / "track_config.json.part").symlink_to("/dev/full")
    status, _, err = _track(capsys, tiny_checkpoint, otb, work)
    assert status == 2
    assert _only_error_line(err).startswith(f"error: No space left on device: {work / 'track_config.json'}")
    assert sorted(p.name for p in work.iterdir()) == [".lock"]
    # the disk fills while results are written: the finished ones stay, no truncated file is left
    seqs = _otb_sequences(otb)
    (work / f"{seqs[1].name}.txt.part").symlink_to("/dev/full")
    status, _, err = _track(capsys, tiny_checkpoint, otb, work)
    assert status == 2 and f"No space left on device: {work / seqs[1].name}.txt" in err
    assert f"{seqs[1].name}.txt" not in {p.name for p in work.iterdir()}
    assert not list(work.glob("*.part"))
    done = {p.stem for p in work.glob("*.txt")}
    assert status == 2 and _track(capsys, tiny_checkpoint, otb, work)[0] == 0
    assert {p.stem for p in work.glob("*.txt")} == {s.name for s in seqs} and done < {s.name for s in seqs}
    assert _result_files(work) == clean_results


def test_png_saved_as_jpg_is_decoded_by_content(tmp_path):
    import cv2

    from grm_jax.sequence import FrameError, read_frame

    image = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", image)
    (tmp_path / "0001.jpg").write_bytes(png.tobytes())
    np.testing.assert_array_equal(read_frame(tmp_path / "0001.jpg"), image[..., ::-1])
    ok, jpg = cv2.imencode(".jpg", image)
    (tmp_path / "0002.jpg").write_bytes(jpg.tobytes()[:-200])       # a really truncated JPEG is still refused
    with pytest.raises(FrameError, match="truncated or corrupt JPEG"):
        read_frame(tmp_path / "0002.jpg")


def _analyze(capsys, *argv):
    status = _script("analyze").main(list(argv))
    return status, capsys.readouterr().err


def test_analyze_names_the_bad_result_file(tmp_path, capsys, otb):
    results = tmp_path / "results"
    results.mkdir()
    names = [s.name for s in _otb_sequences(otb)]
    for n in names:
        (results / f"{n}.txt").write_text("10,10,20,20\n" * 6)
    base = ["--dataset", "otb", "--dataset-root", str(otb), "--only-existing", "--tracker", str(results)]
    assert _analyze(capsys, *base)[0] == 0
    victim = results / f"{names[1]}.txt"
    victim.write_bytes(bytes(range(256)) * 4)
    status, err = _analyze(capsys, *base)
    assert status == 2
    assert _only_error_line(err) == f"error: {victim}: not a text result file (byte 128 is not UTF-8 text)"
    victim.write_text("10,10,20,20\n1,2,3\n")
    status, err = _analyze(capsys, *base)
    assert status == 2 and _only_error_line(err) == f"error: {victim}:2: expected 4 values (x,y,w,h), got 3: '1,2,3'"
    status, err = _analyze(capsys, "--dataset", "otb2", "--dataset-root", str(otb), "--tracker", str(results))
    assert status == 2 and _only_error_line(err).startswith("error: unknown evaluation dataset 'otb2'; choose one of")


def test_track_reports_bad_annotation_missing_tensors_and_empty_checkpoint_in_one_message(tmp_path, capsys, otb):
    work = tmp_path / "work"
    # every missing tensor at once, also when one the architecture is read from is among them
    ckpt = torch.load(PARITY_BUNDLE / "checkpoint.pth.tar", map_location="cpu", weights_only=True)
    for key in ("backbone.pos_embed_x", "backbone.blocks.2.attn.qkv.weight", "box_head.conv1_ctr.0.weight"):
        del ckpt["net"][key]
    torch.save(ckpt, tmp_path / "damaged.pth.tar")
    status, _, err = _track(capsys, tmp_path / "damaged.pth.tar", otb, work)
    assert status == 2 and "Traceback" not in err
    assert f"error: {tmp_path / 'damaged.pth.tar'}: 3 problem(s) with the checkpoint tensors:" in err
    for key in ("backbone.pos_embed_x (expected shape [1, 64, 64])", "backbone.blocks.2.attn.qkv.weight",
                "box_head.conv1_ctr.0.weight"):
        assert f"  - missing {key}" in err
    (tmp_path / "empty").mkdir()
    status, _, err = _track(capsys, tmp_path / "empty", otb, work)
    assert status == 2 and _only_error_line(err).startswith(
        f"error: {tmp_path / 'empty'}: no orbax CheckpointManager steps found")
    seq = _otb_sequences(otb)[0]
    anno = otb / seq.name.replace("otb_", "") / "groundtruth_rect.txt"
    anno.write_text(anno.read_text().replace("\n", "\n1,2,x,4\n", 1))
    status, _, err = _track(capsys, tmp_path / "empty", otb, work)
    assert status == 2 and _only_error_line(err) == f"error: {anno}:2: not a number in '1,2,x,4'"
    assert not work.exists() or not list(work.glob("*.txt"))


def test_track_video_keeps_other_sized_frames_and_the_boxes_before_a_bad_frame(tmp_path, capsys, tiny_checkpoint,
                                                                             otb_template):
    import cv2

    seq = max(_otb_sequences(otb_template), key=lambda s: len(s.frames))
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(seq.frames):
        shutil.copy(f, folder / f"{i:04d}.jpg")
    other = cv2.resize(cv2.imread(str(folder / "0002.jpg")), (200, 150))
    cv2.imwrite(str(folder / "0002.jpg"), other)
    box = ",".join(str(v) for v in seq.boxes[0])
    out = tmp_path / "out" / "clip"
    argv = [str(folder), "--box", box, "--config", "tiny_test", "--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    assert _script("track_video").main(argv) == 0
    err = capsys.readouterr().err
    assert "warning: frame 2 is 200x150, the video 160x120: resized in the video" in err
    cap = cv2.VideoCapture(str(out) + ".mp4")
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == len(seq.frames)                       # no frame dropped from the video
    (folder / "0003.jpg").write_bytes(b"\xff\xd8 truncated")
    assert _script("track_video").main(argv) == 2
    err = capsys.readouterr().err
    assert _only_error_line(err) == (f"error: stopped at frame 3: truncated or corrupt JPEG (no end-of-image marker): "
                                     f"{folder / '0003.jpg'}; the boxes of the 3 frames before it are written")
    assert len((tmp_path / "out" / "clip.txt").read_text().splitlines()) == 3


def test_pack_submission_validates_and_names_the_file(tmp_path, capsys):
    import zipfile

    from data_pipeline.synthetic import write_dataset
    from grm_jax.evaluation.datasets import load_eval_dataset
    from grm_jax.evaluation.raw_results import write_result

    root = tmp_path / "got10k"
    write_dataset("got10k_test", root, num_sequences=2, num_frames=(3, 5), image_size=(64, 48), seed=3)
    seqs = load_eval_dataset("got10k_test", root, verify_frames=False)
    results = tmp_path / "work"
    for s in seqs:
        write_result(results, "got10k", s.name, np.tile(s.boxes[:1], (len(s.frames), 1)), np.full(len(s.frames), .01))
    src = results / "got10k"
    out = tmp_path / "submit.zip"
    pack = _script("pack_submission").main

    def run(*extra):
        status = pack(["got10k", str(src), "--out", str(out), *extra])
        return status, capsys.readouterr().err

    assert run("--dataset-root", str(root))[0] == 0 and zipfile.ZipFile(out).testzip() is None
    out.unlink()
    first, second = (src / f"{s.name}.txt" for s in seqs)
    good = first.read_text()
    first.write_text(good + "1,2,3,4\n")                                  # one row too many
    status, err = run("--dataset-root", str(root))
    assert status == 2 and _only_error_line(err) == (f"error: {first}: {len(seqs[0].frames) + 1} rows but the "
                                                     f"sequence has {len(seqs[0].frames)} frames")
    first.write_text(good.replace("\n", "\nnan,2,3,4\n", 1).rsplit("\n", 2)[0] + "\n")   # NaN row, right count
    status, err = run()
    assert status == 2 and _only_error_line(err).startswith(f"error: {first}: 1 row(s) are not finite, e.g. row 2:")
    first.write_text(good)
    times = second.with_name(second.stem + "_time.txt")
    times.write_text("0.01\n0.01,0.02\n")
    status, err = run()
    assert status == 2 and _only_error_line(err).startswith(f"error: {times}: malformed time file")
    times.write_text("0.01\n")
    status, err = run()
    assert status == 2 and _only_error_line(err) == (f"error: {times}: 1 times but {second} has "
                                                     f"{len(seqs[1].frames)} rows")
    assert not out.exists() and not list(tmp_path.glob("*.part"))


# ---------------------------------------------------------------------------------------------------------------
# scripts/convert_checkpoint.py


def _convert(capsys, module, *argv):
    status = module.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_convert_force_only_replaces_a_checkpoint_and_a_failed_run_leaves_nothing(tmp_path, capsys, monkeypatch):
    convert = _script("convert_checkpoint")
    official = str(PARITY_BUNDLE / "checkpoint.pth.tar")
    folder = tmp_path / "my_results"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    status, _, err = _convert(capsys, convert, "official-to-flax", "--input", official, "--output", str(folder),
                              "--force")
    assert status == 2 and (folder / "notes.txt").read_text() == "keep me"
    assert err.strip() == (f"convert_checkpoint: error: {folder} exists and is not a converted checkpoint directory "
                           "(no meta/ and variables/ items): --force only replaces a converted checkpoint; choose "
                           "another --output")
    out = tmp_path / "converted"
    assert _convert(capsys, convert, "official-to-flax", "--input", official, "--output", str(out))[0] == 0
    assert _convert(capsys, convert, "official-to-flax", "--input", official, "--output", str(out), "--force")[0] == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    # a verification failure: nothing new left behind, the existing output untouched
    real = convert.flax_to_official

    def corrupted(variables, extras=None, arch=None):
        sd = real(variables, extras, arch)
        key = next(iter(sd))
        sd[key] = sd[key] + 1
        return sd
    monkeypatch.setattr(convert, "flax_to_official", corrupted)
    status, _, err = _convert(capsys, convert, "official-to-flax", "--input", official, "--output", str(out), "--force")
    assert status == 2 and "re-read check failed" in err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted", "my_results"]
    fresh = tmp_path / "fresh"
    assert _convert(capsys, convert, "official-to-flax", "--input", official, "--output", str(fresh))[0] == 2
    assert not fresh.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["converted", "my_results"]


def test_convert_round_trip_of_non_finite_values_is_bit_exact(tmp_path, capsys):
    convert = _script("convert_checkpoint")
    ckpt = torch.load(PARITY_BUNDLE / "checkpoint.pth.tar", map_location="cpu", weights_only=True)
    ckpt["net"]["box_head.conv5_ctr.bias"][0] = float("nan")
    torch.save(ckpt, tmp_path / "nan.pth.tar")
    status, out, err = _convert(capsys, convert, "official-to-flax", "--input", str(tmp_path / "nan.pth.tar"),
                                "--output", str(tmp_path / "flax"))
    assert status == 0, err
    assert json.loads(out.splitlines()[-1])["verified"] == "bit-exact round trip"


def test_flax_to_official_accepts_a_training_workdir(tmp_path, capsys, tiny_variables):
    from grm_jax.checkpoints.training import TrainingCheckpoints
    from grm_jax.convert import extract_state_dict, read_torch_checkpoint

    workdir = tmp_path / "run"
    ckpts = TrainingCheckpoints(workdir)
    ckpts.save(7, {"step": np.int64(7), "params": tiny_variables["params"],
                   "batch_stats": tiny_variables["batch_stats"]}, {"step": 7})
    ckpts.close()
    convert = _script("convert_checkpoint")
    status, out, err = _convert(capsys, convert, "flax-to-official", "--input", str(workdir), "--output",
                                str(tmp_path / "exported.pth.tar"))
    assert status == 0, err
    assert json.loads(out.splitlines()[-1])["training_step"] == 7
    sd = extract_state_dict(read_torch_checkpoint(tmp_path / "exported.pth.tar"))
    ref = extract_state_dict(read_torch_checkpoint(PARITY_BUNDLE / "checkpoint.pth.tar"))
    assert list(sd) == list(ref)
    for key in ref:
        if key not in ("backbone.cls_token", "backbone.pos_embed") and not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(sd[key], ref[key], err_msg=key)


# ---------------------------------------------------------------------------------------------------------------
# Configuration values: errors naming the key, never silent coercion


@pytest.mark.parametrize("override, message", [
    ("TRAIN.BATCH_SIZE=0", "override: TRAIN.BATCH_SIZE=0: must be an integer >= 1"),
    ("MODEL.BACKBONE.NUM_HEADS=0", "override: MODEL.BACKBONE.NUM_HEADS=0: must be an integer >= 1"),
    ("MODEL.BACKBONE.DEPTH=0", "override: MODEL.BACKBONE.DEPTH=0: must be an integer >= 1"),
    ("MODEL.BACKBONE.STRIDE=0", "override: MODEL.BACKBONE.STRIDE=0: must be an integer >= 1"),
    ("TRAIN.EPOCH=[1, 2]", "override 'TRAIN.EPOCH': key 'TRAIN.EPOCH' expects a whole number, got [1, 2]"),
    ("TRAIN.BATCH_SIZE=2.5", "override 'TRAIN.BATCH_SIZE': key 'TRAIN.BATCH_SIZE' expects a whole number, got 2.5"),
    ("TRAIN.BATCH_SIZE=true", "override 'TRAIN.BATCH_SIZE': key 'TRAIN.BATCH_SIZE' expects a whole number, got True"),
    ("TRAIN.LR=[1]", "override 'TRAIN.LR': key 'TRAIN.LR' expects a number, got [1]"),
    ("TRAIN.SCAN_BLOCKS=1", "override 'TRAIN.SCAN_BLOCKS': key 'TRAIN.SCAN_BLOCKS' expects true or false, got 1"),
    ("TRAIN.NUM_WORKER=-1", "override: TRAIN.NUM_WORKER=-1: must be an integer >= 0"),
    ("MODEL.HEAD.NUM_CHANNELS=4", "override: MODEL.HEAD.NUM_CHANNELS=4: must be an integer >= 8 (each head branch halves it "
                                  "three times)"),
])
def test_config_values_are_checked_not_coerced(override, message):
    from grm_jax.config import ConfigError, load_config

    with pytest.raises(ConfigError) as info:
        load_config("tiny_test", [override])
    assert str(info.value) == message


def test_config_accepts_whole_numbers_written_as_floats_and_keeps_float_keys(tmp_path):
    from grm_jax.config import ConfigError, load_config

    cfg = load_config("tiny_test", ["TRAIN.BATCH_SIZE=8.0", "TRAIN.EPOCH=1e3", "TEST.HYPER.LASOT=0.4"])
    assert cfg.TRAIN.BATCH_SIZE == 8 and isinstance(cfg.TRAIN.BATCH_SIZE, int) and cfg.TRAIN.EPOCH == 1000
    assert cfg.TEST.HYPER.LASOT == 0.4
    yaml_file = tmp_path / "bad.yaml"
    yaml_file.write_text("TRAIN:\n  BATCH_SIZE: 2.5\n")
    with pytest.raises(ConfigError, match=rf"^{yaml_file}: key 'TRAIN.BATCH_SIZE' expects a whole number, got 2.5$"):
        load_config(yaml_file)


@pytest.mark.slow
def test_train_reports_a_bad_annotation_line_in_one_message(tmp_path):
    from data_pipeline.synthetic import write_dataset

    root = tmp_path / "got10k"
    write_dataset("got10k", root, num_sequences=2, num_frames=(25, 26), image_size=(64, 48), seed=1, split="train")
    anno = sorted((root / "train").glob("*/groundtruth.txt"))[0]
    lines = anno.read_text().splitlines()
    lines[2] = "1,2,abc,4"
    anno.write_text("\n".join(lines) + "\n")
    cmd = [sys.executable, "-m", "grm_jax.cli.train", "--config", "tiny_test", "--workdir",
           str(tmp_path / "run"), "--set", f"DATA.ROOTS.GOT10K={root}", "--set",
           "DATA.TRAIN.DATASETS_NAME=[GOT10K_train]", "--set", "DATA.TRAIN.DATASETS_RATIO=[1]", "--set", "MODEL.PRETRAIN_FILE=", "--max-steps", "1",
           "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=REPO,
                          env={**__import__("os").environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith(f"error: GOT-10k sequence {anno.parent.name}: {anno}:3: "
                                                         "not a number in '1,2,abc,4'")
    for noise in ("oneDNN custom operations", "absl::InitializeLog", "Unable to initialize backend"):
        assert noise not in proc.stderr


_NOISE_PROBE = """
import logging, sys
from grm_jax.runtime import quiet_startup
quiet_startup()
logging.basicConfig(level=logging.INFO)          # as train.py does
import tensorflow as tf
tf.constant(1)
import jax, jax.numpy as jnp
from grm_jax.checkpoints.inference import load_for_inference
from grm_jax.checkpoints.training import TrainingCheckpoints
v = load_for_inference(sys.argv[1])
ckpts = TrainingCheckpoints(sys.argv[2])
ckpts.save(1, {"step": 1, "params": jax.tree_util.tree_map(jnp.asarray, v["params"]),
               "batch_stats": jax.tree_util.tree_map(jnp.asarray, v["batch_stats"])}, {"step": 1})
ckpts.close()
load_for_inference(sys.argv[2])
print("restored")
"""


@pytest.mark.slow
def test_startup_and_restore_print_no_library_noise(tmp_path):
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.pop("JAX_PLATFORMS", None)
    proc = subprocess.run([sys.executable, "-c", _NOISE_PROBE, str(PARITY_BUNDLE / "checkpoint.pth.tar"),
                           str(tmp_path / "checkpoints")], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "restored", proc.stderr
    for noise in ("oneDNN custom operations", "absl::InitializeLog", "Unable to initialize backend",
                  "Sharding info not provided", "cpu_feature_guard"):
        assert noise not in proc.stderr, proc.stderr


def test_track_video_refuses_a_non_finite_or_empty_box_at_parse_time():
    import argparse

    parse_box = _script("track_video").parse_box
    assert parse_box("1, 2,3,4") == [1.0, 2.0, 3.0, 4.0]
    for text in ("nan,1,10,10", "1,1,inf,10", "1,1,0,10", "1,2,3"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected finite x,y,w,h"):
            parse_box(text)

"""Export to ONNX / serialized JAX: outputs vs the JAX forward and the official golden data, trackers on the
exported engines, input checks, unsupported ops, the scripts."""
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax import export as ex
from grm_jax.config import load_config
from grm_jax.specs import build_model
from grm_jax.track import TrackerCore, TrackerSettings, track_sequences

pytest.importorskip("onnxruntime")
pytest.importorskip("jax2onnx")

REPO = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.0, 0.4, 0.7)
slow = pytest.mark.slow

# A second model unlike the fixture's: other width / depth / heads, a 3x3 template grid and a 6x6 search grid
# (not powers of two), roiavg (the exported step then takes the template mask), division in blocks 1 and 2 only.
OTHER_OVERRIDES = ["MODEL.BACKBONE.EMBED_DIM=48", "MODEL.BACKBONE.DEPTH=3", "MODEL.BACKBONE.NUM_HEADS=3",
                   "MODEL.TGT_TYPE=roiavg", "MODEL.HEAD.NUM_CHANNELS=16", "MODEL.DIVISION.LAYERS=[1, 2]",
                   "DATA.TEMPLATE.SIZE=48", "DATA.SEARCH.SIZE=96", "TEST.TEMPLATE_SIZE=48", "TEST.SEARCH_SIZE=96"]


@pytest.fixture(scope="session")
def bundle_model(parity_bundle):
    from grm_jax.parity import load_bundle_model
    _, model, variables = load_bundle_model(parity_bundle)
    d = np.load(parity_bundle / "forward_eval.npz")
    nhwc = lambda a: np.ascontiguousarray(a.transpose(0, 2, 3, 1))  # noqa: E731
    inputs = {"template": nhwc(d["template"]), "search": nhwc(d["search"]), "template_mask": d["template_mask"]}
    return model, variables, inputs, d


@pytest.fixture(scope="session")
def other_model():
    cfg = load_config("tiny_test", OTHER_OVERRIDES)
    model = build_model(cfg)
    z, x = jnp.zeros((1, 48, 48, 3)), jnp.zeros((1, 96, 96, 3))
    variables = jax.jit(lambda k: model.init(k, z, x, jnp.ones((1, 9)), train=False))(jax.random.PRNGKey(5))
    variables = jax.tree_util.tree_map(np.asarray, dict(variables))
    # a decisive predictor, so the three thresholds select different tokens
    for i in (1, 2):
        p = variables["params"]["backbone"][f"blocks_{i}"]["attn"]["divide_predict_4"]
        p["kernel"] = p["kernel"] * 8.0
    rng = np.random.default_rng(2)
    inputs = {"template": rng.normal(size=(3, 48, 48, 3)).astype(np.float32),
              "search": rng.normal(size=(3, 96, 96, 3)).astype(np.float32),
              "template_mask": (rng.random((3, 9)) < 0.5).astype(np.float32)}
    return cfg, model, variables, inputs


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    cache = {}

    def get(name, model, variables, fmt, threshold, batch):
        key = (name, fmt, threshold, batch)
        if key not in cache:
            path = root / f"{name}_{threshold:g}_{batch}.{fmt}"
            ex.export_network(model, variables, fmt=fmt, out_path=path, threshold=threshold, batch=batch)
            cache[key] = path
        return cache[key]
    return get


_REFERENCE = {}


def _reference(model, variables, inputs, threshold):
    """The JAX forward + Hann-windowed decode as the tracker's jitted step computes them (threshold traced, so
    one compilation per model)."""
    from grm_jax.models.head import cal_bbox, hann2d
    if model not in _REFERENCE:
        window = hann2d(model.feat_size)[None, :, :, None]

        def forward(variables, threshold, template, search, mask):
            out = model.apply(variables, template, search, mask, train=False, threshold=threshold)
            return {"pred_boxes": out["pred_boxes"][:, 0], "score_map": out["score_map"],
                    "tracker_box": cal_bbox(window * out["score_map"], out["size_map"], out["offset_map"]),
                    "decisions": jnp.swapaxes(out["decisions"][..., 1], 0, 1)}
        _REFERENCE[model] = jax.jit(forward)
    mask = inputs["template_mask"] if model.division.tgt_type == "roiavg" else None
    out = _REFERENCE[model](variables, jnp.float32(threshold), inputs["template"], inputs["search"], mask)
    return {k: np.asarray(v) for k, v in out.items()}


def _params(fast):
    """(model, fmt, threshold) cases; those not in `fast` are marked slow."""
    cases = []
    for name in ("bundle", "other"):
        for fmt in ex.FORMATS:
            for thr in THRESHOLDS:
                marks = () if (name, thr) in fast else (slow,)
                cases.append(pytest.param(name, fmt, thr, marks=marks, id=f"{name}-{fmt}-thr{thr:g}"))
    return cases


@pytest.mark.parametrize("name,fmt,threshold", _params({("bundle", 0.4), ("other", 0.7)}))
def test_export_matches_jax_forward(name, fmt, threshold, bundle_model, other_model, export_cache):
    if name == "bundle":
        model, variables, inputs, golden = bundle_model
    else:
        _, model, variables, inputs = other_model
        golden = None
    batch = inputs["search"].shape[0] if fmt == "onnx" else None
    engine = ex.load_engine(export_cache(name, model, variables, fmt, threshold, batch))
    feeds = {n: inputs[n] for n in engine.inputs}
    assert ("template_mask" in feeds) == (model.division.tgt_type == "roiavg")
    got = engine.run(feeds)
    ref = _reference(model, variables, inputs, threshold)
    assert set(got) == set(ref) == {"pred_boxes", "tracker_box", "score_map", "decisions"}
    for key in ("pred_boxes", "tracker_box", "score_map"):
        assert got[key].shape == ref[key].shape and got[key].dtype == np.float32
        np.testing.assert_allclose(got[key], ref[key], rtol=0, atol=1e-4, err_msg=key)
    assert got["decisions"].shape == ref["decisions"].shape
    assert np.sum(got["decisions"] != ref["decisions"]) == 0   # zero flipped division decisions
    if golden is not None:   # and the official code's outputs for the same inputs
        tag = {0.0: "thr00", 0.4: "thr04", 0.7: "thr07"}[threshold]
        np.testing.assert_allclose(got["score_map"], golden[f"score_map_{tag}"].transpose(0, 2, 3, 1), atol=1e-4)
        np.testing.assert_allclose(got["pred_boxes"], golden[f"pred_boxes_{tag}"][:, 0], atol=1e-4)
        np.testing.assert_array_equal(got["decisions"], golden[f"decisions_{tag}"][..., 1].astype(np.float32))
    if name == "other":   # the thresholds really select differently on this model
        fracs = [_reference(model, variables, inputs, t)["decisions"].mean() for t in THRESHOLDS]
        assert len(set(np.round(fracs, 6))) == 3, fracs


def test_jax_export_has_a_symbolic_batch_and_reloads_without_model_code(bundle_model, export_cache):
    model, variables, inputs, _ = bundle_model
    path = export_cache("bundle", model, variables, "jax", 0.4, None)
    meta = json.loads(ex.sidecar_path(path).read_text())
    assert meta["threshold"] == 0.4 and meta["format"] == "jax" and meta["commit"]
    assert meta["platforms"] == ["cpu", "cuda"]   # lowered for NVIDIA GPUs too, on this CPU-only machine
    specs = meta["inputs"] + meta["outputs"]
    assert len(specs) == 6 and [s["shape"][0] for s in specs] == ["batch"] * 6
    exported = jax.export.deserialize(bytearray(path.read_bytes()))   # no grm_jax involved
    ref = _reference(model, variables, inputs, 0.4)
    for b in (1, 2):
        outs = exported.call(inputs["template"][:b], inputs["search"][:b])
        np.testing.assert_allclose(np.asarray(outs[2]), ref["score_map"][:b], atol=1e-4)


def test_onnx_file_is_standard_onnx_with_the_stated_opset(bundle_model, export_cache):
    import onnx
    model, variables, _, _ = bundle_model
    path = export_cache("bundle", model, variables, "onnx", 0.4, 2)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [ex.DEFAULT_OPSET]
    assert [i.name for i in proto.graph.input] == ["template", "search"]
    assert [o.name for o in proto.graph.output] == ["pred_boxes", "tracker_box", "score_map", "decisions"]
    meta = json.loads(ex.sidecar_path(path).read_text())
    assert meta["opset"] == ex.DEFAULT_OPSET and meta["inputs"][1]["shape"] == [2, 128, 128, 3]


def test_wrong_inputs_are_rejected_with_a_clear_error(other_model, export_cache):
    _, model, variables, inputs = other_model
    for fmt, batch in (("onnx", 3), ("jax", None)):
        engine = ex.load_engine(export_cache("other", model, variables, fmt, 0.7, batch))
        good = {k: v for k, v in inputs.items()}
        engine.run(good)
        bad_cases = [
            ({**good, "search": good["search"][:, :64]}, "'search' has shape [3, 64, 96, 3]"),
            ({**good, "template": good["template"].astype(np.float64)}, "'template' has dtype float64"),
            ({**good, "search": (good["search"] * 50).astype(np.uint8)}, "'search' has dtype uint8"),
            ({k: v for k, v in good.items() if k != "template_mask"}, "the model takes ['search', 'template', "),
            ({**good, "template_mask": good["template_mask"][:2]},
             {"jax": "batch sizes {'template': 3, 'search': 3, 'template_mask': 2}; they must agree",
              "onnx": "'template_mask' has shape [2, 9], the model takes [3, 9]"}[fmt]),
        ]
        if fmt == "onnx":   # fixed batch
            bad_cases.append(({k: v[:1] for k, v in good.items()}, "has shape [1, 48, 48, 3], the model takes [3,"))
        for feeds, message in bad_cases:
            with pytest.raises(ex.ExportInputError) as err:
                engine.run(feeds)
            assert message in str(err.value) and engine.path.name in str(err.value), (fmt, str(err.value))


def test_op_the_converter_cannot_express_fails_naming_it(tmp_path, other_model, monkeypatch):
    def with_callback(x):
        return jax.pure_callback(np.sin, jax.ShapeDtypeStruct(x.shape, x.dtype), x) + 1.0

    with pytest.raises(ex.ExportError, match="cannot express the JAX primitive 'pure_callback'"):
        ex.export_function_to_onnx(with_callback, [jax.ShapeDtypeStruct((4, 4), jnp.float32)],
                                   input_names=["x"], output_names=["y"])
    # a plugin that exists but refuses its case: the primitive is still named (found inside a nested jit)
    with pytest.raises(ex.ExportError, match="primitive 'eigh'"):
        ex.export_function_to_onnx(lambda x: jnp.linalg.eigh(x @ x.T)[0], [jax.ShapeDtypeStruct((5, 5), jnp.float32)],
                                   input_names=["x"], output_names=["y"])
    # the whole export: one error, and no file (nor sidecar) left behind
    _, model, variables, _ = other_model
    real_step = ex.network_step

    def step_with_callback(*args, **kwargs):
        fn, ins, outs = real_step(*args, **kwargs)
        return (lambda *a: tuple(with_callback(o) for o in fn(*a))), ins, outs
    monkeypatch.setattr(ex, "network_step", step_with_callback)
    out = tmp_path / "m.onnx"
    with pytest.raises(ex.ExportError, match="'pure_callback'.*No file was written"):
        ex.export_network(model, variables, fmt="onnx", out_path=out, threshold=0.0, batch=1)
    assert list(tmp_path.iterdir()) == []


def test_onnx_needs_a_fixed_batch_and_engines_match_formats(tmp_path, other_model, export_cache):
    _, model, variables, _ = other_model
    with pytest.raises(ex.ExportError, match="fixed batch size"):
        ex.export_network(model, variables, fmt="onnx", out_path=tmp_path / "m.onnx", threshold=0.0, batch=None)
    path = export_cache("other", model, variables, "jax", 0.7, None)
    with pytest.raises(ValueError, match="use --engine exported"):
        ex.load_engine(path, "onnxruntime")
    lone = tmp_path / "lone.jax"
    lone.write_bytes(path.read_bytes())
    with pytest.raises(ex.ExportInputError, match="sidecar lone.jax.json is missing"):
        ex.load_engine(lone)


def test_missing_runtime_or_converter_gives_an_install_hint(other_model, export_cache, monkeypatch):
    _, model, variables, _ = other_model
    path = export_cache("other", model, variables, "onnx", 0.7, 3)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ex.EngineUnavailableError, match="pip install onnxruntime=="):
        ex.load_engine(path)
    monkeypatch.setitem(sys.modules, "jax2onnx", None)
    with pytest.raises(ex.ExportError, match="needs the packages jax2onnx and onnx"):
        ex.export_function_to_onnx(jnp.sin, [jax.ShapeDtypeStruct((2,), jnp.float32)], input_names=["x"],
                                   output_names=["y"])


# --- the tracker on exported engines -------------------------------------------------------------------------

@pytest.fixture(scope="session")
def synthetic_seqs(synthetic_benchmark):
    return synthetic_benchmark("got10k_val", num_sequences=2, num_frames=(31, 31), image_size=(160, 120), seed=4)


def _track(core, seqs, batch_size):
    return {r.sequence.name: r.boxes for r in track_sequences(core, seqs, batch_size=batch_size)}


@pytest.mark.parametrize("name", ["bundle", pytest.param("other", marks=slow)])
def test_tracker_on_each_engine_matches_the_jax_tracker(name, bundle_model, other_model, export_cache,
                                                        synthetic_seqs):
    if name == "bundle":
        model, variables = bundle_model[:2]
        cfg = load_config("tiny_test")
    else:
        cfg, model, variables, _ = other_model
    _, seqs = synthetic_seqs
    settings = TrackerSettings.from_config(cfg, "got10k_val", threshold=0.4)
    jax_boxes = _track(TrackerCore(model, variables, settings), seqs, 1)
    assert all(len(b) == 31 for b in jax_boxes.values())             # init + 30 tracked frames
    assert any(not np.allclose(b[1:], b[0]) for b in jax_boxes.values())   # the tracker moves
    for fmt, batch in (("onnx", 1), ("jax", None)):
        engine = ex.load_engine(export_cache(name, model, variables, fmt, 0.4, batch))
        core = TrackerCore(None, None, settings, engine=engine)
        assert core.engine_name == {"onnx": "onnxruntime", "jax": "exported"}[fmt]
        for batch_size in (1, 2):   # 2: two slots on a batch-1 ONNX file, one batched call on the jax file
            boxes = _track(core, seqs, batch_size)
            for seq in seqs:
                np.testing.assert_allclose(boxes[seq.name], jax_boxes[seq.name], rtol=0, atol=1e-3,
                                           err_msg=f"{fmt} bs={batch_size} {seq.name}")


def test_tracker_refuses_an_engine_with_another_threshold(bundle_model, export_cache):
    model, variables = bundle_model[:2]
    engine = ex.load_engine(export_cache("bundle", model, variables, "jax", 0.4, None))
    cfg = load_config("tiny_test")
    with pytest.raises(ValueError, match="exported with division threshold 0.4, this run uses 0.7"):
        TrackerCore(None, None, TrackerSettings.from_config(cfg, threshold=0.7), engine=engine)
    wrong_size = load_config("tiny_test", ["DATA.SEARCH.SIZE=160", "TEST.SEARCH_SIZE=160"])
    with pytest.raises(ValueError, match="search crops of 64/128 px"):
        TrackerCore(None, None, TrackerSettings.from_config(wrong_size, threshold=0.4), engine=engine)
    np.testing.assert_array_equal(engine.mean, np.float32(cfg.DATA.MEAN))   # the sidecar's normalisation
    other_stats = load_config("tiny_test", ["DATA.MEAN=[0.5, 0.5, 0.5]"])
    with pytest.raises(ValueError, match=r"normalised with mean \[0\.48"):
        TrackerCore(None, None, TrackerSettings.from_config(other_stats, threshold=0.4), engine=engine)


# --- scripts -------------------------------------------------------------------------------------------------

def _script(name):
    import importlib
    return importlib.import_module(f"grm_jax.cli.{name}")


@slow
def test_export_script_and_track_script_with_engines(tmp_path, parity_bundle, synthetic_seqs, capsys):
    from grm_jax.evaluation.raw_results import read_result
    export_script, track_script = _script("export"), _script("track")
    ckpt = str(parity_bundle / "checkpoint.pth.tar")
    out = tmp_path / "grm.onnx"
    argv = ["--config", "tiny_test", "--checkpoint", ckpt, "--format", "onnx", "--out", str(out),
            "--dataset", "got10k_val"]
    assert export_script.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["batch"] == 1 and summary["verify"]["flipped_decisions"] == 0
    assert max(v for k, v in summary["verify"].items() if k.endswith(("boxes", "box", "map"))) <= 1e-4
    assert export_script.main(argv) == 2                      # exists, no --force
    dynamic = tmp_path / "dynamic.onnx"   # ONNX needs a fixed batch: one error, no file
    assert export_script.main(argv[:4] + ["--format", "onnx", "--out", str(dynamic), "--batch", "dynamic"]) == 1
    assert "needs a fixed batch size" in capsys.readouterr().err and not dynamic.exists()

    root, seqs = synthetic_seqs
    results = {}
    for engine, model_file in (("jax", ckpt), ("onnxruntime", None)):
        if model_file is None:
            assert export_script.main(argv + ["--force"]) == 0
            model_file = str(out)
        work = tmp_path / engine
        assert track_script.main(["--config", "tiny_test", "--checkpoint", model_file, "--dataset", "got10k_val",
                                  "--dataset-root", str(root), "--workdir", str(work), "--no-progress",
                                  "--engine", engine, "--batch-size", "2"]) == 0
        results[engine] = {s.name: read_result(work / "got10k" / f"{s.name}.txt") for s in seqs}
        assert json.loads((work / "track_config.json").read_text())["engine"] == engine
    for s in seqs:
        np.testing.assert_allclose(results["onnxruntime"][s.name], results["jax"][s.name], atol=1)
    # a run whose threshold differs from the one baked into the file is refused with one message
    wrong = tmp_path / "wrong"
    rc = track_script.main(["--config", "tiny_test", "--checkpoint", str(out), "--dataset", "got10k_val",
                            "--dataset-root", str(root), "--workdir", str(wrong), "--no-progress",
                            "--engine", "onnxruntime", "--threshold", "0.55"])
    assert rc == 2 and "exported with division threshold 0, this run uses 0.55" in capsys.readouterr().err


@slow
def test_track_video_with_an_exported_engine_and_decisions(tmp_path, bundle_model, export_cache, synthetic_seqs):
    import cv2
    from grm_jax.sequence import read_frame
    model, variables = bundle_model[:2]
    exported = export_cache("bundle", model, variables, "jax", 0.4, None)
    _, seqs = synthetic_seqs
    frames = [read_frame(f) for f in seqs[0].frames[:8]]
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{k:04d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    box = ",".join(str(v) for v in seqs[0].boxes[0])
    common = [str(folder), "--box", box, "--config", "tiny_test", "--float-boxes", "--no-video"]
    video = _script("track_video")
    assert video.main(common + ["--checkpoint", str(REPO / "tests/fixtures/parity/checkpoint.pth.tar"),
                                "--threshold", "0.4", "--out", str(tmp_path / "jax")]) == 0
    assert video.main(common + ["--checkpoint", str(exported), "--engine", "exported", "--threshold", "0.4",
                                "--show-decisions", "--out", str(tmp_path / "exported")]) == 0
    ref, got = (np.loadtxt(tmp_path / f"{n}.txt", delimiter=",") for n in ("jax", "exported"))
    assert got.shape == (8, 4)
    np.testing.assert_allclose(got, ref, atol=1e-3)
    with pytest.raises(SystemExit, match="exported with division threshold 0.4, this run uses 0.7"):
        video.main(common + ["--checkpoint", str(exported), "--engine", "exported", "--threshold", "0.7",
                             "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="use --engine exported"):
        video.main(common + ["--checkpoint", str(exported), "--engine", "onnxruntime", "--threshold", "0.4",
                             "--out", str(tmp_path / "x")])

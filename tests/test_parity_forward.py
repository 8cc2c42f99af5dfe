"""Forward/heads parity against the official PyTorch golden data, and the parity runner/CLI."""
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax.config import load_config
from grm_jax.convert import official_to_flax, save_official_checkpoint
from grm_jax.specs import conversion_architecture
from grm_jax.convert.layout import official_layout
from grm_jax.specs import build_model
from grm_jax.parity import CHECKS, CheckResult, config_from_bundle, read_bundle_json, run_checks



@pytest.fixture(scope="session")
def fixture_results(parity_bundle):
    return {r.name: r for r in run_checks(parity_bundle, ["forward", "heads"])}


def test_forward_matches_official_at_every_threshold(fixture_results, parity_bundle):
    thresholds = np.load(parity_bundle / "forward_eval.npz")["thresholds"]
    forward = [r for name, r in fixture_results.items() if name.startswith("forward/")]
    assert len(forward) == len(thresholds) == 3
    for r in forward:
        errors = r.detail["errors"]
        for key in ("score_map", "size_map", "offset_map", "pred_boxes", "backbone_tokens"):
            assert errors[key] <= 1e-4, (r.name, key, errors[key])
        assert r.mismatches == 0 and r.total == 2 * 3 * 64, r.name
        assert errors["divide_logprob"] <= 1e-4, r.name
        assert r.ok
    assert fixture_results["forward/thr00"].detail["errors"]["block_outputs"] <= 1e-4
    # the thresholds really change the division (the fixture is calibrated so they do)
    fracs = [np.mean(fixture_results[f"forward/thr{t}"].detail["interacting_fraction_per_layer"])
             for t in ("04", "00", "07")]
    assert fracs[0] < fracs[1] < fracs[2]


def test_bf16_forward_stays_within_its_budget_and_really_runs_in_bf16(parity_bundle):
    from grm_jax.parity.model import BF16_TOL

    results = run_checks(parity_bundle, ["forward_bf16"])
    assert [r.name for r in results] == ["forward_bf16/thr00", "forward_bf16/thr04", "forward_bf16/thr07"]
    for r in results:
        errors = r.detail["errors"]
        assert r.ok and r.detail["dtype"] == "bfloat16", r
        assert max(errors[k] for k in ("score_map", "size_map", "pred_boxes")) <= BF16_TOL
        assert r.mismatches <= 0.02 * r.total
        # far above the fp32 errors (~1e-6): the compute really was bf16
        assert errors["backbone_tokens"] > 1e-3, errors


def test_heads_match_official_exactly(fixture_results):
    for name in ("heads/cal_bbox", "heads/hann2d"):
        r = fixture_results[name]
        assert r.ok and r.mismatches == 0 and r.max_abs_err == 0.0, r


def test_bundle_config_reproduces_model_a(parity_bundle):
    cfg = config_from_bundle(read_bundle_json(parity_bundle))
    tiny = load_config("tiny_test")
    for key in ("MODEL.BACKBONE.EMBED_DIM", "MODEL.BACKBONE.DEPTH", "MODEL.BACKBONE.NUM_HEADS",
                "MODEL.HEAD.NUM_CHANNELS", "MODEL.TGT_TYPE", "DATA.TEMPLATE.SIZE", "DATA.SEARCH.SIZE"):
        assert cfg.get_path(key) == tiny.get_path(key), key


def _load_cli():
    from grm_jax.cli import parity
    return parity


def test_cli_passes_on_fixture_and_fails_on_tampered_copy(parity_bundle, tmp_path, capsys, fixture_results):
    cli = _load_cli()
    assert cli.main([str(parity_bundle), "--check", "forward,heads"]) == 0
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    assert {d["name"] for d in lines if "name" in d} >= {"forward/thr00", "forward/thr04", "forward/thr07",
                                                         "heads/cal_bbox", "heads/hann2d"}

    bad = tmp_path / "tampered"
    bad.mkdir()
    for f in ("config.json", "checkpoint.pth.tar", "heads_and_losses.npz"):
        shutil.copy(parity_bundle / f, bad / f)
    data = dict(np.load(parity_bundle / "forward_eval.npz"))
    data["score_map_thr04"] = data["score_map_thr04"] + 2e-4
    data["decisions_thr07"][1, 2, 5] = 1 - data["decisions_thr07"][1, 2, 5]
    np.savez(bad / "forward_eval.npz", **data)
    assert cli.main([str(bad), "--check", "forward"]) == 1
    by_name = {d["name"]: d for d in map(json.loads, capsys.readouterr().out.splitlines()) if "name" in d}
    assert by_name["forward/thr00"]["ok"]
    assert not by_name["forward/thr04"]["ok"] and by_name["forward/thr04"]["max_abs_err"] > 1e-4
    assert not by_name["forward/thr07"]["ok"] and by_name["forward/thr07"]["mismatches"] == 1

    assert cli.main([str(tmp_path)]) == 2  # not a bundle
    assert cli.main([str(parity_bundle), "--check", "no_such_check"]) == 2


def test_missing_fixture_file_skips_the_check(parity_bundle, tmp_path):
    shutil.copy(parity_bundle / "config.json", tmp_path / "config.json")
    shutil.copy(parity_bundle / "heads_and_losses.npz", tmp_path / "heads_and_losses.npz")
    seen = []
    results = run_checks(tmp_path, ["forward", "heads"], on_result=seen.append)
    assert [r.name for r in results] == ["heads/cal_bbox", "heads/hann2d"]
    assert {"name": "forward", "skipped": True, "reason": "bundle lacks forward_eval.npz, checkpoint.pth.tar"} in seen


def test_registry_is_one_decorator_and_crashing_checks_fail(tmp_path):
    from grm_jax.parity import register_check
    (tmp_path / "config.json").write_text("{}")

    @register_check("_test_crash")
    def crash(bundle, cfg_json):
        raise RuntimeError("boom")

    @register_check("_test_dict")
    def as_dict(bundle, cfg_json):
        return [{"name": "_test_dict/a", "max_abs_err": 0.0, "mismatches": 0, "total": 3, "ok": True}]

    try:
        results = run_checks(tmp_path, ["_test_crash", "_test_dict"])
    finally:
        CHECKS.pop("_test_crash")
        CHECKS.pop("_test_dict")
    assert not results[0].ok and "boom" in results[0].detail
    assert results[1] == CheckResult("_test_dict/a", 0.0, 0, 3, True, "")


# --- a bundle of another shape: the runner must take every dimension from config.json and the arrays -----

OTHER = dict(embed_dim=32, depth=3, num_heads=2, patch_size=16, template_size=32, search_size=96,
             head_channels=16, tgt_type="roiavg")


def _random_official_state_dict(arch, seed=0):
    rng = np.random.default_rng(seed)
    sd = {}
    for e in official_layout(arch):
        if e.dtype == "int64":
            sd[e.key] = np.zeros(e.shape, np.int64)
        elif len(e.shape) >= 2 and "pos_embed" not in e.key:
            sd[e.key] = (rng.standard_normal(e.shape) / np.sqrt(np.prod(e.shape[1:]))).astype(np.float32)
        elif "pos_embed" in e.key or "cls_token" in e.key:
            sd[e.key] = (rng.standard_normal(e.shape) * 0.5).astype(np.float32)
        elif e.key.endswith(("running_var", ".weight")):  # norm scales
            sd[e.key] = (1 + 0.1 * rng.standard_normal(e.shape)).astype(np.float32)
        else:
            sd[e.key] = (0.05 * rng.standard_normal(e.shape)).astype(np.float32)
    return sd


@pytest.fixture(scope="module")
def other_bundle(tmp_path_factory):
    """A bundle in the official layout for a model unlike the fixture's (width, depth, heads, sizes,
    tgt_type, only block 2 divides), with expected outputs computed by a model built independently from the same numbers."""
    bundle = tmp_path_factory.mktemp("other_bundle")
    o = OTHER
    nz, nx = (o["template_size"] // 16) ** 2, (o["search_size"] // 16) ** 2
    arch = {"embed_dim": o["embed_dim"], "depth": o["depth"], "patch_size": 16, "division_layers": [2],
            "num_template_tokens": nz, "num_search_tokens": nx, "head_channels": o["head_channels"]}
    sd = _random_official_state_dict(arch)
    # make the predictor decisive so the thresholds matter
    sd["backbone.blocks.2.attn.divide_predict.4.weight"] *= 20.0
    save_official_checkpoint(bundle / "checkpoint.pth.tar", sd)
    (bundle / "config.json").write_text(json.dumps({"model": o, "fixed_in_official_code": {"drop_path_rate": 0.0}}))

    cfg = load_config("tiny_test", [f"MODEL.BACKBONE.EMBED_DIM={o['embed_dim']}", f"MODEL.BACKBONE.DEPTH={o['depth']}",
                                    f"MODEL.BACKBONE.NUM_HEADS={o['num_heads']}", "MODEL.TGT_TYPE=roiavg",
                                    f"MODEL.HEAD.NUM_CHANNELS={o['head_channels']}",
                                    f"DATA.TEMPLATE.SIZE={o['template_size']}",
                                    f"DATA.SEARCH.SIZE={o['search_size']}",
                                    f"TEST.TEMPLATE_SIZE={o['template_size']}",
                                    f"TEST.SEARCH_SIZE={o['search_size']}",
                                    "MODEL.DIVISION.LAYERS=[2]"])
    variables, _ = official_to_flax(sd, conversion_architecture(cfg))
    model = build_model(cfg)
    rng = np.random.default_rng(1)
    b = 3
    template = rng.normal(size=(b, 3, o["template_size"], o["template_size"])).astype(np.float32)
    search = rng.normal(size=(b, 3, o["search_size"], o["search_size"])).astype(np.float32)
    mask = (rng.random((b, nz)) < 0.5).astype(np.float32)
    arrays = {"thresholds": np.array([0.0, 0.8, 0.2], np.float32), "template": template, "search": search,
              "template_mask": mask}
    # one compiled forward, the threshold a traced argument
    forward = jax.jit(lambda z, x, m, thr: model.apply(variables, z, x, m, threshold=thr))
    for tag, thr in (("first", 0.0), ("second", 0.8), ("third", 0.2)):  # suffixes need not encode the value
        out = forward(jnp.asarray(template.transpose(0, 2, 3, 1)), jnp.asarray(search.transpose(0, 2, 3, 1)),
                      jnp.asarray(mask), np.float32(thr))
        for key in ("score_map", "size_map", "offset_map"):
            arrays[f"{key}_{tag}"] = np.asarray(out[key]).transpose(0, 3, 1, 2)
        arrays[f"pred_boxes_{tag}"] = np.asarray(out["pred_boxes"])
        arrays[f"backbone_tokens_{tag}"] = np.asarray(out["backbone_tokens"])
        arrays[f"decisions_{tag}"] = np.asarray(out["decisions"]).swapaxes(0, 1).astype(np.int64)
        arrays[f"divide_logprob_{tag}"] = np.asarray(out["divide_logprob"]).swapaxes(0, 1)
    np.savez(bundle / "forward_eval.npz", **arrays)
    return bundle, arrays


def test_runner_handles_a_bundle_of_another_shape(other_bundle):
    bundle, arrays = other_bundle
    results = run_checks(bundle, ["forward"])
    assert [r.name for r in results] == ["forward/first", "forward/second", "forward/third"]
    assert all(r.ok and r.total == 3 * 1 * 36 for r in results), results
    dec = [arrays[f"decisions_{t}"][..., 1].mean() for t in ("first", "second", "third")]
    assert len(set(dec)) == 3  # the three thresholds select differently


def test_runner_detects_a_wrong_tgt_type_in_another_bundle(other_bundle, tmp_path):
    bundle, _ = other_bundle
    for f in ("checkpoint.pth.tar", "forward_eval.npz"):
        shutil.copy(bundle / f, tmp_path / f)
    cfg_json = json.loads((bundle / "config.json").read_text())
    cfg_json["model"]["tgt_type"] = "allavg"  # the model that made the data used roiavg
    (tmp_path / "config.json").write_text(json.dumps(cfg_json))
    results = run_checks(tmp_path, ["forward"])
    assert results and not any(r.ok for r in results)


def test_training_forward_and_batchnorm_update_match_official(parity_bundle):
    """Train mode with the bundle's Gumbel noise: decisions, maps and the BatchNorm running stats (unbiased
    variance) as the official training forward produced them (losses/gradients: the train_step check)."""
    from grm_jax.parity import load_bundle_model
    _, model, variables = load_bundle_model(parity_bundle)
    d = np.load(parity_bundle / "train_step.npz")
    nhwc = lambda a: jnp.asarray(a.transpose(0, 2, 3, 1))  # noqa: E731
    out, state = jax.jit(lambda v: model.apply(
        v, nhwc(d["template"]), nhwc(d["search"]), jnp.asarray(d["template_mask"]), train=True,
        gumbel_noise=jnp.asarray(d["gumbel_noise"]), mutable=["batch_stats"]))(variables)
    np.testing.assert_array_equal(np.asarray(out["decisions"]), d["decisions_straight_through"])
    np.testing.assert_allclose(np.asarray(out["interact_frac"]), d["backbone_decisions"], atol=1e-7)
    np.testing.assert_allclose(np.asarray(out["divide_logprob"]), d["divide_logprob"], atol=1e-4)
    np.testing.assert_allclose(np.asarray(out["backbone_tokens"]), d["backbone_tokens"], atol=1e-4)
    for key in ("score_map", "size_map", "offset_map"):
        np.testing.assert_allclose(np.asarray(out[key]).transpose(0, 3, 1, 2), d[key], atol=1e-4)
    np.testing.assert_allclose(np.asarray(out["pred_boxes"]), d["pred_boxes"], atol=1e-4)
    for branch in ("ctr", "offset", "size"):
        for n in range(1, 5):
            bn = state["batch_stats"]["box_head"][f"conv{n}_{branch}"]["bn"]
            prefix = f"bn_after/box_head.conv{n}_{branch}.1"
            np.testing.assert_allclose(np.asarray(bn["mean"]), d[f"{prefix}.running_mean"], atol=1e-5)
            np.testing.assert_allclose(np.asarray(bn["var"]), d[f"{prefix}.running_var"], atol=1e-5)

import json
import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax.config import load_config
from grm_jax.models import division as div
from grm_jax.models.head import BatchNorm
from grm_jax.models.vit import drop_path_rates
from grm_jax.specs import build_model, model_spec

B = 2


def numpy_init(model, *inputs, seed=0, sharpen=True):
    """Random variables for `model` drawn with numpy from its eval_shape: a jitted model.init spends ~25 s
    compiling the per-parameter PRNG code on 2 CPU cores, which the tests do not need.

    Kernels ~ N(0, 1/fan_in), biases ~ N(0, 0.05), norm scales 1, BN running var 1. `sharpen` scales qkv and
    the predictor's last layer so attention is peaked and the division splits the tokens (a fresh init leaves
    attention nearly uniform and the predictor at 50/50, where nothing could be observed)."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *inputs))
    rng = np.random.default_rng(seed)

    def draw(path, s):
        names = [getattr(k, "key", str(k)) for k in path]
        if names[-1] in ("scale", "var"):
            return np.ones(s.shape, np.float32)
        if names[-1] in ("bias", "mean"):
            return (rng.standard_normal(s.shape) * 0.05).astype(np.float32)
        if names[-1] == "kernel":
            std = 1.0 / np.sqrt(np.prod(s.shape[:-1]))
            if sharpen and names[-2] == "qkv":
                std *= 3.0
            if sharpen and names[-2] == "divide_predict_4":
                std *= 30.0
            return (rng.standard_normal(s.shape) * std).astype(np.float32)
        return (rng.standard_normal(s.shape) * 0.5).astype(np.float32)  # position embeddings

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="session")
def tiny():
    cfg = load_config("tiny_test")
    model = build_model(cfg)
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.normal(size=(B, 64, 64, 3)), jnp.float32)
    x = jnp.asarray(rng.normal(size=(B, 128, 128, 3)), jnp.float32)
    return cfg, model, numpy_init(model, z, x), z, x


@pytest.fixture(scope="session")
def mild_variables(tiny):
    """Unsharpened weights: logits stay within float32's exp range (see test_all_search_only_isolates_template)
    and p(search-only) stays inside (0, 1), so thresholds 0+ and 1 select none / all tokens."""
    cfg, model, _, z, x = tiny
    return numpy_init(model, z, x, sharpen=False)


def _apply_fn(model):
    return jax.jit(lambda v, z, x, thr: model.apply(v, z, x, threshold=thr))


@pytest.fixture(scope="session")
def tiny_eval(tiny):
    cfg, model, variables, z, x = tiny
    return _apply_fn(model)


def test_output_shapes_and_decisions(tiny, tiny_eval):
    cfg, model, variables, z, x = tiny
    out = tiny_eval(variables, z, x, 0.0)
    f, nx, c = 8, 64, 64
    assert out["pred_boxes"].shape == (B, 1, 4)
    assert out["score_map"].shape == (B, f, f, 1)
    assert out["size_map"].shape == out["offset_map"].shape == (B, f, f, 2)
    assert out["backbone_tokens"].shape == (B, 16 + nx, c)
    assert out["divide_logprob"].shape == out["decisions"].shape == (3, B, nx, 2)
    assert out["interact_frac"].shape == (B, 3)
    dec = np.asarray(out["decisions"])
    assert set(np.unique(dec)) <= {0.0, 1.0} and np.all(dec.sum(-1) == 1)
    # threshold 0 = argmax of the predictor's log-probabilities
    lp = np.asarray(out["divide_logprob"])
    np.testing.assert_array_equal(dec[..., 1], (lp[..., 1] > lp[..., 0]).astype(np.float32))
    np.testing.assert_allclose(np.asarray(out["interact_frac"]), dec[..., 1].mean(-1).T)
    assert 0.0 < dec[..., 1].mean() < 1.0, "sharpened predictor should split the tokens"
    # the box is decoded at the first maximum of the score map
    score = np.asarray(out["score_map"])[..., 0].reshape(B, -1)
    idx = score.argmax(1)
    offset = np.asarray(out["offset_map"]).reshape(B, -1, 2)[np.arange(B), idx]
    np.testing.assert_allclose(np.asarray(out["pred_boxes"])[:, 0, 0], (idx % f + offset[:, 0]) / f, rtol=1e-6)


def test_threshold_selects_by_search_only_probability(tiny, tiny_eval):
    cfg, model, variables, z, x = tiny
    for thr in (0.3, 0.7):
        out = tiny_eval(variables, z, x, thr)
        lp = np.asarray(out["divide_logprob"], np.float64)
        p0 = np.exp(lp[..., 0]) / np.exp(lp).sum(-1)
        agree = np.asarray(out["decisions"])[..., 1] == (p0 < thr)
        near = np.abs(p0 - thr) < 1e-6
        assert np.all(agree | near)
    low = np.asarray(tiny_eval(variables, z, x, 0.3)["interact_frac"]).mean()
    high = np.asarray(tiny_eval(variables, z, x, 0.7)["interact_frac"]).mean()
    assert low < high


def test_all_interacting_equals_joint_attention(tiny, tiny_eval, mild_variables):
    """Threshold 1 makes every search token interacting: the mask is all ones and GRM reduces to a one-stream
    ViT (joint attention), up to the eps of the stabilised masked softmax."""
    cfg, model, _, z, x = tiny
    variables = mild_variables
    grm = tiny_eval(variables, z, x, 1.0)
    assert np.all(np.asarray(grm["decisions"])[..., 1] == 1)
    one_stream = build_model(load_config("tiny_test", ["MODEL.DIVISION.LAYERS=[]"]))
    params = flax.core.unfreeze(variables["params"])
    for i in range(cfg.MODEL.BACKBONE.DEPTH):
        attn = params["backbone"][f"blocks_{i}"]["attn"]
        for k in [k for k in attn if k.startswith("divide_")]:
            del attn[k]
    joint = one_stream.apply({"params": params, "batch_stats": variables["batch_stats"]}, z, x)
    assert joint["decisions"].shape == (0, B, 64, 2) and joint["interact_frac"].shape == (B, 0)
    np.testing.assert_allclose(np.asarray(grm["backbone_tokens"]), np.asarray(joint["backbone_tokens"]),
                               atol=1e-4)


def _template_sensitivity(apply, variables, z, x):
    """Max change of the template tokens / search tokens when the other image changes."""
    x2 = x[::-1] * 0.5 + 1.0
    z2 = z[::-1] * 0.5 + 1.0
    base = np.asarray(apply(variables, z, x)["backbone_tokens"])
    new_x = np.asarray(apply(variables, z, x2)["backbone_tokens"])
    new_z = np.asarray(apply(variables, z2, x)["backbone_tokens"])
    return np.abs(base[:, :16] - new_x[:, :16]).max(), np.abs(base[:, 16:] - new_z[:, 16:]).max()


def test_two_stream_and_one_stream_special_cases(tiny):
    cfg, _, variables, z, x = tiny
    params = flax.core.unfreeze(variables["params"])
    for i in range(cfg.MODEL.BACKBONE.DEPTH):
        attn = params["backbone"][f"blocks_{i}"]["attn"]
        for k in [k for k in attn if k.startswith("divide_")]:
            del attn[k]
    v = {"params": params, "batch_stats": variables["batch_stats"]}
    two = build_model(load_config("tiny_test", ["MODEL.DIVISION.LAYERS=[]",
                                                "MODEL.DIVISION.OTHER_LAYERS=separate"]))
    one = build_model(load_config("tiny_test", ["MODEL.DIVISION.LAYERS=[]"]))
    z_from_x, x_from_z = _template_sensitivity(jax.jit(two.apply), v, z, x)
    assert z_from_x == 0.0 and x_from_z == 0.0
    z_from_x, x_from_z = _template_sensitivity(jax.jit(one.apply), v, z, x)
    assert z_from_x > 1e-3 and x_from_z > 1e-3


def test_all_search_only_isolates_template(tiny, mild_variables):
    """With no interacting token (threshold ~0+) and block 0 attending within each image, template and search
    exchange information only through the eps weight of the masked softmax.

    (Only while the allowed logits are not ~90 below the row max: the official stabilisation takes the max over
    masked keys too, so an underflowed row degenerates to the uniform eps/N weights over all keys.)"""
    cfg, model, _, z, x = tiny
    variables = mild_variables
    separate = build_model(load_config("tiny_test", ["MODEL.DIVISION.OTHER_LAYERS=separate"]))
    run = jax.jit(lambda v, zz, xx, thr: separate.apply(v, zz, xx, threshold=thr))
    assert np.all(np.asarray(run(variables, z, x, 1e-30)["decisions"])[..., 1] == 0)
    z_from_x, x_from_z = _template_sensitivity(lambda v, zz, xx: run(v, zz, xx, 1e-30), variables, z, x)
    full_z_from_x, _ = _template_sensitivity(lambda v, zz, xx: run(v, zz, xx, 1.0), variables, z, x)
    assert max(z_from_x, x_from_z) < 1e-4 < full_z_from_x


def test_partial_division_layers_and_param_tree(tiny):
    cfg, _, _, z, x = tiny
    model = build_model(load_config("tiny_test", ["MODEL.DIVISION.LAYERS=[2]"]))
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), z, x))
    bb = shapes["params"]["backbone"]
    assert [i for i in range(4) if "divide_predict_0" in bb[f"blocks_{i}"]["attn"]] == [2]
    assert bb["blocks_2"]["attn"]["divide_predict_0"]["kernel"].shape == (128, 384)
    assert bb["patch_embed"]["kernel"].shape == (16, 16, 3, 64)
    assert bb["pos_embed_z"].shape == (1, 16, 64) and bb["pos_embed_x"].shape == (1, 64, 64)
    head = shapes["params"]["box_head"]
    assert head["conv1_ctr"]["conv"]["kernel"].shape == (3, 3, 64, 64)
    assert head["conv5_size"]["kernel"].shape == (1, 1, 8, 2)
    assert shapes["batch_stats"]["box_head"]["conv4_offset"]["bn"]["var"].shape == (8,)
    out = jax.eval_shape(lambda v: model.apply(v, z, x), shapes)
    assert out["decisions"].shape == (1, B, 64, 2)


def test_late_variant_and_roi_types(tiny):
    _, _, _, z, x = tiny
    mask = jnp.zeros((B, 16)).at[:, 5:7].set(1.0)
    late = build_model(load_config("tiny_test", ["MODEL.DIVISION.EARLY=false", "MODEL.TGT_TYPE=roimax"]))
    v = numpy_init(late, z, x, mask)
    attn = v["params"]["backbone"]["blocks_1"]["attn"]
    assert "divide_predict_0" not in attn
    assert attn["divide_local_transform"]["kernel"].shape == (64, 384)
    assert attn["divide_global_transform"]["kernel"].shape == (64, 384)
    assert np.isfinite(np.asarray(jax.jit(late.apply)(v, z, x, mask)["pred_boxes"])).all()
    with pytest.raises(ValueError, match="template_mask"):
        late.apply(v, z, x)


def test_target_representation_pooling():
    rng = np.random.default_rng(1)
    tokens = jnp.asarray(rng.normal(size=(2, 16, 8)) - 3.0, jnp.float32)  # all negative
    mask = np.zeros((2, 16), np.float32)
    mask[:, 3:5] = 1
    t = np.asarray(tokens)
    np.testing.assert_allclose(div.target_representation(tokens, "allmax")[:, 0], t.max(1))
    np.testing.assert_allclose(div.target_representation(tokens, "allavg")[:, 0], t.mean(1), rtol=1e-6)
    # ROI: tokens outside the box are zeros that take part (max >= 0; mean divides by all 16 tokens)
    np.testing.assert_allclose(div.target_representation(tokens, "roimax", jnp.asarray(mask))[:, 0], 0.0)
    np.testing.assert_allclose(div.target_representation(tokens, "roiavg", jnp.asarray(mask))[:, 0],
                               t[:, 3:5].sum(1) / 16, rtol=1e-6)


def test_policy_mask_and_masked_softmax():
    # 2 template tokens, search tokens: search-only, interacting, search-only
    dec = jnp.asarray([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
    mask = np.asarray(div.policy_pair_mask(div.policy_from_decisions(dec, 2)))[0, 0]
    groups = ["T", "T", "S", "A", "S"]
    for i, gi in enumerate(groups):
        for j, gj in enumerate(groups):
            allowed = gi == gj or "A" in (gi, gj) or i == j
            assert mask[i, j] == float(allowed), (gi, gj)
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(1, 1, 5, 5)), jnp.float32)
    attn = np.asarray(div.masked_softmax(logits, mask[None, None]))
    np.testing.assert_allclose(attn.sum(-1), 1.0, rtol=1e-6)
    lg = np.asarray(logits, np.float64)[0, 0]
    e = np.exp(lg - lg.max(-1, keepdims=True)) * mask
    np.testing.assert_allclose(attn[0, 0], (e + 1e-6 / 5) / (e.sum(-1, keepdims=True) + 1e-6), rtol=1e-5)


def test_ratio_forces_top_tokens_interacting():
    lp = jax.nn.log_softmax(jnp.asarray(np.random.default_rng(2).normal(size=(2, 10, 2)) * 3, jnp.float32))
    base = np.asarray(div.select_tokens(lp))
    forced = np.asarray(div.select_tokens(lp, ratio=0.5))
    top = np.argsort(-np.asarray(lp)[..., 1], axis=1)[:, :5]
    assert np.all(np.take_along_axis(forced[..., 1], top, 1) == 1)
    assert np.all(forced[..., 1] >= base[..., 1])


def test_gumbel_straight_through_reaches_predictor(tiny):
    _, _, _, z, x = tiny
    # two blocks (one dividing) keep the gradient's compile short
    model = build_model(load_config("tiny_test", ["MODEL.BACKBONE.DEPTH=2"]))
    variables = numpy_init(model, z, x)
    noise = div.sample_gumbel(jax.random.PRNGKey(3), (1, B, 64, 2))

    def loss(params):
        out, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, z, x, train=True,
                             gumbel_noise=noise, mutable=["batch_stats"])
        value = jnp.sum(out["score_map"] * jnp.arange(64.0).reshape(1, 8, 8, 1)) + jnp.sum(out["size_map"])
        return value, out

    grads, out = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
    for name in ("divide_predict_0", "divide_predict_2", "divide_predict_4"):
        g = grads["backbone"]["blocks_1"]["attn"][name]["kernel"]
        assert np.abs(np.asarray(g)).max() > 0, f"no straight-through gradient reaches {name}"
    # the explicit noise decides: class = argmax(logprob + noise)
    expect = (np.asarray(out["divide_logprob"]) + np.asarray(noise)).argmax(-1)
    np.testing.assert_array_equal(np.asarray(out["decisions"]).argmax(-1), expect)
    assert 0 < np.asarray(out["decisions"])[..., 1].mean() < 1


def test_only_training_decisions_carry_gradient():
    lp = jax.nn.log_softmax(jnp.asarray(np.random.default_rng(3).normal(size=(2, 6, 2)), jnp.float32))
    noise = div.sample_gumbel(jax.random.PRNGKey(0), lp.shape)
    w = jnp.arange(24.0).reshape(2, 6, 2)
    g_train = jax.jit(jax.grad(lambda l: jnp.sum(div.gumbel_straight_through(l, noise) * w)))(lp)
    g_eval = jax.jit(jax.grad(lambda l: jnp.sum(div.select_tokens(l, threshold=0.4) * w)))(lp)
    assert np.abs(np.asarray(g_train)).max() > 0 and np.abs(np.asarray(g_eval)).max() == 0
    hard = np.asarray(jax.jit(div.gumbel_straight_through)(lp, noise))
    np.testing.assert_array_equal(hard.argmax(-1), (np.asarray(lp) + np.asarray(noise)).argmax(-1))
    assert set(np.unique(hard)) <= {0.0, 1.0}


def test_train_mode_draws_noise_from_the_gumbel_rng(tiny):
    cfg, model, variables, z, x = tiny
    run = jax.jit(lambda key: model.apply(variables, z, x, train=True, rngs={"gumbel": key},
                                          mutable=["batch_stats"])[0]["decisions"])
    a, a2, b = run(jax.random.PRNGKey(5)), run(jax.random.PRNGKey(5)), run(jax.random.PRNGKey(6))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(a2))
    assert not np.array_equal(np.asarray(a), np.asarray(b))


def test_batchnorm_matches_torch_semantics():
    x = jnp.asarray(np.random.default_rng(0).normal(2.0, 3.0, size=(4, 5, 5, 3)), jnp.float32)
    bn = BatchNorm()
    v = bn.init(jax.random.PRNGKey(0), x, train=True)
    np.testing.assert_array_equal(np.asarray(v["batch_stats"]["var"]), 1.0)  # init does not update
    y, upd = bn.apply(v, x, train=True, mutable=["batch_stats"])
    xn = np.asarray(x, np.float64).reshape(-1, 3)
    np.testing.assert_allclose(np.asarray(upd["batch_stats"]["mean"]), 0.1 * xn.mean(0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(upd["batch_stats"]["var"]), 0.9 + 0.1 * xn.var(0, ddof=1), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(y).reshape(-1, 3), (xn - xn.mean(0)) / np.sqrt(xn.var(0) + 1e-5),
                               atol=1e-5)
    y_eval = bn.apply({"params": v["params"], **upd}, x, train=False)
    rm, rv = (np.asarray(upd["batch_stats"][k]) for k in ("mean", "var"))
    np.testing.assert_allclose(np.asarray(y_eval).reshape(-1, 3), (xn - rm) / np.sqrt(rv + 1e-5), atol=1e-5)


def test_drop_path_needs_dropout_rng_in_training(tiny, tiny_eval):
    _, base, variables, z, x = tiny
    model = build_model(load_config("tiny_test", ["TRAIN.DROP_PATH_RATE=0.5"]))
    train = jax.jit(lambda key: model.apply(variables, z, x, train=True, mutable=["batch_stats"],
                                            gumbel_noise=jnp.zeros((3, B, 64, 2)),
                                            rngs={"dropout": key})[0]["backbone_tokens"])
    assert not np.allclose(np.asarray(train(jax.random.PRNGKey(0))), np.asarray(train(jax.random.PRNGKey(1))))
    # eval ignores the rate
    e1 = jax.jit(lambda v: model.apply(v, z, x))(variables)
    e2 = tiny_eval(variables, z, x, 0.0)
    np.testing.assert_array_equal(np.asarray(e1["backbone_tokens"]), np.asarray(e2["backbone_tokens"]))


def test_drop_path_rates_are_torch_float32_linspace():
    spec = model_spec(load_config("vitb_256_ep300"))
    rates = drop_path_rates(spec["drop_path_rate"], spec["depth"])
    assert len(rates) == 12 and rates[0] == 0.0
    assert rates[-1] == float(np.float32(0.1)) != 0.1          # float32 rounding, as torch.linspace gives it


def test_bfloat16_compute_keeps_fp32_params(tiny, tiny_eval):
    cfg, model, variables, z, x = tiny
    bf = build_model(load_config("tiny_test", ["MODEL.DTYPE=bfloat16"]))
    shapes = jax.eval_shape(lambda: bf.init(jax.random.PRNGKey(0), z, x))
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(shapes)} == {jnp.dtype(jnp.float32)}
    out_bf = jax.jit(lambda v: bf.apply(v, z, x))(variables)
    out_32 = tiny_eval(variables, z, x, 0.0)
    assert out_bf["score_map"].dtype == jnp.float32
    # bfloat16 keeps ~3 significant digits; the maps must stay close, not equal
    err = np.abs(np.asarray(out_bf["size_map"]) - np.asarray(out_32["size_map"])).max()
    assert 0 < err < 0.05


def _manifest_counts(path):
    m = json.loads(path.read_text())
    unused = sum(math.prod(e["shape"]) for e in m["entries"]
                 if e["key"] in ("backbone.cls_token", "backbone.pos_embed"))
    stats = sum(math.prod(e["shape"]) for e in m["entries"]
                if e["key"].endswith(("running_mean", "running_var")))
    return m["num_parameters"] - unused, stats


@pytest.mark.parametrize("name,manifest", [("vitb_256_ep300", "manifest_grm_vitb_256.json"),
                                           ("vitl_320_ep300", "manifest_grm_vitl_320.json")])
def test_full_size_models_initialise_with_official_parameter_count(name, manifest, parity_bundle):
    cfg = load_config(name)
    model = build_model(cfg)
    s = cfg.DATA.SEARCH.SIZE
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 128, 128, 3)),
                                               jnp.zeros((1, s, s, 3))))
    n_params = sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(shapes["params"]))
    n_stats = sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(shapes["batch_stats"]))
    assert (n_params, n_stats) == _manifest_counts(parity_bundle / manifest)


def test_vitb_256_jitted_forward_on_cpu():
    cfg = load_config("vitb_256_ep300")
    model = build_model(cfg)
    z = jnp.asarray(np.random.default_rng(0).normal(size=(1, 128, 128, 3)), jnp.float32)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 256, 256, 3)), jnp.float32)
    variables = numpy_init(model, z, x, sharpen=False)
    out = jax.jit(lambda v, z, x: model.apply(v, z, x, threshold=0.4))(variables, z, x)
    assert out["score_map"].shape == (1, 16, 16, 1) and out["decisions"].shape == (11, 1, 256, 2)
    assert out["backbone_tokens"].shape == (1, 64 + 256, 768)
    assert np.isfinite(np.asarray(out["pred_boxes"])).all()


def test_gumbel_noise_stays_finite_when_the_exponential_draw_is_zero():
    # An exponential draw of exactly 0 happens about once in 2**23 draws; it must not produce an infinite
    # Gumbel sample (which made a CPU training run go NaN at step 94).
    exponential = jnp.array([[0.0, 1.0], [1e-30, 2.0], [0.5, 0.0]], jnp.float32)
    noise = div.gumbel_from_exponential(exponential)
    assert bool(jnp.isfinite(noise).all())
    drawn = np.asarray(exponential) > 0
    np.testing.assert_allclose(np.asarray(noise)[drawn], -np.log(np.asarray(exponential)[drawn]), rtol=1e-6)
    decisions = div.gumbel_straight_through(jnp.log(jnp.full((3, 2), 0.5)), noise)
    assert bool(jnp.isfinite(decisions).all())
    np.testing.assert_array_equal(np.asarray(decisions).sum(-1), 1.0)
    # The zero draw dominates its row: that class wins.
    assert int(jnp.argmax(decisions[0])) == 0 and int(jnp.argmax(decisions[2])) == 1


def test_hann_window_is_one_host_constant_inside_and_outside_traces():
    # the window is evaluated once on the CPU backend, so a traced caller (any platform) embeds the same bits
    from grm_jax.models.head import hann2d

    eager = hann2d(16)
    traced = jax.jit(lambda x: x * hann2d(16))(np.ones((16, 16), np.float32))
    assert isinstance(eager, np.ndarray) and eager.dtype == np.float32 and eager.shape == (16, 16)
    np.testing.assert_array_equal(np.asarray(traced), eager)
    k = np.arange(1, 17)
    np.testing.assert_allclose(eager, np.outer(*(2 * [0.5 * (1 - np.cos(2 * np.pi * k / 17))])), atol=1e-7)


@pytest.mark.slow
def test_scanned_blocks_match_unrolled_blocks(tiny):
    """TRAIN.SCAN_BLOCKS runs each stretch of same-kind blocks as one lax.scan in training: losses, gradients,
    decisions and the sown block outputs must be those of the unrolled blocks, with drop path and Gumbel noise
    drawn from the rngs. Division in blocks 2, 3 gives two scanned stretches, one of each kind."""
    _, _, _, z, x = tiny
    overrides = ["MODEL.DIVISION.LAYERS=[2, 3]", "TRAIN.DROP_PATH_RATE=0.2"]
    scanned = build_model(load_config("tiny_test", overrides + ["TRAIN.SCAN_BLOCKS=true"]))
    unrolled = build_model(load_config("tiny_test", overrides + ["TRAIN.SCAN_BLOCKS=false"]))
    assert scanned.scan_blocks and not unrolled.scan_blocks
    variables = numpy_init(scanned, z, x)
    rngs = {"dropout": jax.random.PRNGKey(7), "gumbel": jax.random.PRNGKey(8)}

    def loss(params, model):
        out, state = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, z, x, train=True,
                                 rngs=rngs, mutable=["batch_stats", "intermediates"])
        value = jnp.sum(out["score_map"] * jnp.arange(64.0).reshape(1, 8, 8, 1)) + jnp.sum(out["size_map"])
        return value, (out["decisions"], state["intermediates"]["backbone"]["block_outputs"])

    results = [jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)(variables["params"], m)
               for m in (scanned, unrolled)]
    (value_s, (dec_s, blocks_s)), grads_s = results[0]
    (value_u, (dec_u, blocks_u)), grads_u = results[1]
    np.testing.assert_allclose(float(value_s), float(value_u), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(dec_s), np.asarray(dec_u))
    assert 0 < np.asarray(dec_s)[..., 1].mean() < 1
    assert len(blocks_s) == len(blocks_u) == 4
    for a, b in zip(blocks_s, blocks_u):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(a, b, atol=1e-5 * max(1.0, np.abs(b).max()))
    # float32 summation noise scales with the largest gradient (leaves that are ~0 in exact arithmetic, like
    # the conv biases under BatchNorm, only show that noise)
    flat_u = dict(jax.tree_util.tree_flatten_with_path(grads_u)[0])
    scale = max(float(np.abs(np.asarray(g)).max()) for g in flat_u.values())
    for path, g in jax.tree_util.tree_flatten_with_path(grads_s)[0]:
        diff = np.abs(np.asarray(g) - np.asarray(flat_u[path])).max()
        assert diff <= 2e-6 * scale, (jax.tree_util.keystr(path), diff, scale)
    # the dividing stretch got a gradient through the straight-through decisions
    assert np.abs(np.asarray(grads_s["backbone"]["blocks_3"]["attn"]["divide_predict_0"]["kernel"])).max() > 0


@pytest.mark.slow
def test_recomputation_policies_give_the_same_gradients_with_less_memory(tiny):
    """TRAIN.REMAT recomputes parts of each block in the backward pass instead of keeping them: losses,
    decisions and gradients must be those of keeping everything ("none"), drop path and Gumbel noise included,
    scanned and unrolled, while the compiled step needs less temporary memory."""
    _, _, _, z, x = tiny
    overrides = ["MODEL.DIVISION.LAYERS=[2, 3]", "TRAIN.DROP_PATH_RATE=0.2"]
    settings = {"none": "true", "dots": "true", "blocks": "true", "blocks unrolled": "false"}
    models = {name: build_model(load_config("tiny_test", overrides + [f"TRAIN.REMAT={name.split()[0]}",
                                                                      f"TRAIN.SCAN_BLOCKS={scan}"]))
              for name, scan in settings.items()}
    assert models["dots"].remat == "dots" and not models["blocks unrolled"].scan_blocks
    variables = numpy_init(models["none"], z, x)
    rngs = {"dropout": jax.random.PRNGKey(7), "gumbel": jax.random.PRNGKey(8)}

    def loss(params, model):
        out, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, z, x, train=True,
                             rngs=rngs, mutable=["batch_stats"])
        value = jnp.sum(out["score_map"] * jnp.arange(64.0).reshape(1, 8, 8, 1)) + jnp.sum(out["size_map"])
        return value, out["decisions"]

    results, temp_bytes = {}, {}
    for name, model in models.items():
        compiled = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1).lower(
            variables["params"], model).compile()
        temp_bytes[name] = compiled.memory_analysis().temp_size_in_bytes
        results[name] = compiled(variables["params"])
    (value_ref, dec_ref), grads_ref = results["none"]
    assert 0 < np.asarray(dec_ref)[..., 1].mean() < 1
    flat_ref = dict(jax.tree_util.tree_flatten_with_path(grads_ref)[0])
    scale = max(float(np.abs(np.asarray(g)).max()) for g in flat_ref.values())
    for name in ("dots", "blocks", "blocks unrolled"):
        (value, dec), grads = results[name]
        np.testing.assert_allclose(float(value), float(value_ref), rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(dec), np.asarray(dec_ref))
        # same bound as scanned vs unrolled: float32 noise of the largest gradient, from XLA fusing the
        # recomputed block differently
        for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
            diff = np.abs(np.asarray(g) - np.asarray(flat_ref[path])).max()
            assert diff <= 2e-6 * scale, (name, jax.tree_util.keystr(path), diff, scale)
        assert np.abs(np.asarray(grads["backbone"]["blocks_3"]["attn"]["divide_predict_0"]["kernel"])).max() > 0
    assert temp_bytes["blocks"] < temp_bytes["dots"] < temp_bytes["none"], temp_bytes


def test_unknown_remat_setting_is_refused():
    from grm_jax.config import ConfigError

    with pytest.raises(ConfigError, match="TRAIN.REMAT='everything'"):
        load_config("tiny_test", ["TRAIN.REMAT=everything"])


def test_config_choices_name_what_the_modules_build():
    """The REMAT names a config may give (models/choices.py, checked without jax) are the policies the backbone
    has."""
    from grm_jax.models.choices import REMAT_SETTINGS
    from grm_jax.models.vit import REMAT_POLICIES

    assert set(REMAT_SETTINGS) == set(REMAT_POLICIES)

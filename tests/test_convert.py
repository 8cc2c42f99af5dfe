"""Official checkpoint <-> Flax conversion: round trip, manifests, errors, safe loading, pos_embed resize."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from grm_jax.convert import (CheckpointError, ConversionError, ForeignObject, extract_state_dict,
                             flax_to_official, infer_architecture, official_to_flax,
                             read_torch_checkpoint, save_official_checkpoint)
from grm_jax.convert import safe_pickle
from grm_jax.config import load_config
from grm_jax.convert.pretrained import bicubic_matrix, pretrained_backbone_params, resize_pos_embed
from grm_jax.specs import conversion_architecture

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def fixture_ckpt(parity_bundle):
    return read_torch_checkpoint(parity_bundle / "checkpoint.pth.tar")


@pytest.fixture(scope="module")
def fixture_sd(fixture_ckpt):
    return extract_state_dict(fixture_ckpt, source="fixture")


def _manifest_entries(parity_bundle, name):
    data = json.loads((parity_bundle / name).read_text())
    return data if isinstance(data, list) else data["entries"]


def _lazy_state_dict(entries):
    """Zero-memory state_dict: every tensor a broadcast of its own index, so a swapped key is detected."""
    return OrderedDict((e["key"], np.broadcast_to(np.asarray(i, dtype=e["dtype"]), tuple(e["shape"])))
                       for i, e in enumerate(entries))


# ---------------------------------------------------------------- reading the official file


def test_fixture_checkpoint_reads_like_plain_torch_load(parity_bundle, fixture_ckpt, fixture_sd):
    reference = torch.load(parity_bundle / "checkpoint.pth.tar", map_location="cpu", weights_only=True)
    assert list(fixture_sd) == list(reference["net"])
    for k, t in reference["net"].items():
        assert fixture_sd[k].dtype == t.numpy().dtype and np.array_equal(fixture_sd[k], t.numpy()), k
    assert fixture_ckpt["net_type"] == "GRM" and fixture_ckpt["epoch"] == 0
    assert len(fixture_ckpt["optimizer"]["param_groups"]) == 3


def test_architecture_inferred_from_shapes(fixture_sd, parity_bundle):
    cfg = json.loads((parity_bundle / "config.json").read_text())["model"]
    arch = infer_architecture(fixture_sd)
    assert arch["embed_dim"] == cfg["embed_dim"] and arch["depth"] == cfg["depth"]
    assert arch["template_size"] == cfg["template_size"] and arch["search_size"] == cfg["search_size"]
    assert arch["head_channels"] == cfg["head_channels"] and arch["patch_size"] == cfg["patch_size"]
    assert arch["division_layers"] == list(range(1, cfg["depth"]))
    assert arch["num_heads"] is None  # 64 wide is not a standard ViT: heads must come from the config


# ---------------------------------------------------------------- conversion round trip


def test_round_trip_is_bit_exact_with_official_order(fixture_sd, parity_bundle):
    variables, extras = official_to_flax(fixture_sd)
    exported = flax_to_official(variables, extras)
    manifest = _manifest_entries(parity_bundle, "state_dict_manifest.json")
    assert [e["key"] for e in manifest] == list(exported) == list(fixture_sd)
    for e in manifest:
        got = exported[e["key"]]
        assert list(got.shape) == e["shape"] and str(got.dtype) == e["dtype"], e["key"]
        assert np.array_equal(got, fixture_sd[e["key"]]), e["key"]


def test_layouts_follow_the_interface_param_tree(fixture_sd):
    variables, _ = official_to_flax(fixture_sd)
    p, s = variables["params"], variables["batch_stats"]
    w = fixture_sd["backbone.blocks.1.attn.qkv.weight"]
    np.testing.assert_array_equal(p["backbone"]["blocks_1"]["attn"]["qkv"]["kernel"], w.T)
    conv = fixture_sd["box_head.conv2_offset.0.weight"]
    np.testing.assert_array_equal(p["box_head"]["conv2_offset"]["conv"]["kernel"], conv.transpose(2, 3, 1, 0))
    assert p["backbone"]["patch_embed"]["kernel"].shape == (16, 16, 3, 64)
    assert p["box_head"]["conv5_size"]["kernel"].shape == (1, 1, 8, 2)
    np.testing.assert_array_equal(s["box_head"]["conv3_ctr"]["bn"]["var"],
                                  fixture_sd["box_head.conv3_ctr.1.running_var"])
    assert "divide_predict_0" not in p["backbone"]["blocks_0"]["attn"]
    assert set(p["backbone"]["blocks_3"]["attn"]) == {"qkv", "proj", "divide_predict_0", "divide_predict_2",
                                                      "divide_predict_4"}
    assert "cls_token" not in p["backbone"] and "pos_embed" not in p["backbone"]


def test_file_round_trip_through_save_official_checkpoint(fixture_sd, tmp_path):
    variables, extras = official_to_flax(fixture_sd)
    out = save_official_checkpoint(tmp_path / "GRM_ep0001.pth.tar", flax_to_official(variables, extras))
    # The official tracker loads with weights_only (torch default) and strict=True: plain tensors only.
    net = torch.load(out, map_location="cpu", weights_only=True)["net"]
    assert list(net) == list(fixture_sd)
    for k, v in fixture_sd.items():
        assert net[k].numpy().dtype == v.dtype and net[k].shape == v.shape and np.array_equal(net[k].numpy(), v)


def test_export_without_extras_recreates_unused_tensors(fixture_sd):
    variables, extras = official_to_flax(fixture_sd)
    exported = flax_to_official(variables, {})
    assert list(exported) == list(fixture_sd)
    assert np.all(exported["backbone.cls_token"] == 0) and exported["backbone.pos_embed"].shape == (1, 197, 64)
    nbt = exported["box_head.conv1_size.1.num_batches_tracked"]
    assert nbt.shape == () and nbt.dtype == np.int64 and nbt == 0


def test_bad_checkpoint_lists_every_problem(fixture_sd):
    sd = OrderedDict(fixture_sd)
    del sd["backbone.norm.bias"]
    del sd["box_head.conv3_size.1.running_mean"]
    sd["backbone.blocks.2.attn.qkv.weight"] = np.zeros((10, 64), np.float32)
    sd["box_head.conv9_ctr.weight"] = np.zeros((1,), np.float32)
    with pytest.raises(ConversionError) as info:
        official_to_flax(sd, source="bad.pth.tar")
    msg = str(info.value)
    assert msg.startswith("bad.pth.tar: 4 problem(s)")
    assert "missing backbone.norm.bias" in msg and "missing box_head.conv3_size.1.running_mean" in msg
    assert "mis-shaped backbone.blocks.2.attn.qkv.weight: got [10, 64], expected [192, 64]" in msg
    assert "unexpected box_head.conv9_ctr.weight" in msg


def test_config_disagreement_is_reported(fixture_sd):
    cfg = load_config("tiny_test", ["DATA.SEARCH.SIZE=256", "TEST.SEARCH_SIZE=256", "MODEL.DIVISION.LAYERS=[1]"])
    with pytest.raises(ConversionError) as info:
        official_to_flax(fixture_sd, conversion_architecture(cfg))
    assert "config DATA.SEARCH.SIZE=256 but the checkpoint has 128" in str(info.value)
    assert "config MODEL.DIVISION.LAYERS=[1] but the checkpoint has division predictors in blocks [1, 2, 3]" \
        in str(info.value)


def test_a_backbone_named_by_type_is_checked_under_that_key(fixture_sd):
    cfg = load_config("tiny_test")
    cfg.MODEL.BACKBONE.EMBED_DIM = cfg.MODEL.BACKBONE.DEPTH = cfg.MODEL.BACKBONE.NUM_HEADS = None   # vit_base
    with pytest.raises(ConversionError) as info:
        official_to_flax(fixture_sd, conversion_architecture(cfg))
    assert "config MODEL.BACKBONE.TYPE=vit_base (no EMBED_DIM set) means embed_dim 768 but the checkpoint has 64" \
        in str(info.value)
    assert "config MODEL.BACKBONE.TYPE=vit_base (no DEPTH set) means depth 12 but the checkpoint has 4" \
        in str(info.value)


def test_conversion_architecture_is_what_the_checkpoint_has(fixture_sd, tiny_cfg):
    _, extras = official_to_flax(fixture_sd, conversion_architecture(tiny_cfg))
    expected = conversion_architecture(tiny_cfg)
    arch = extras["__arch__"]
    for name in ("embed_dim", "depth", "num_heads", "patch_size", "template_size", "search_size", "head_channels"):
        assert getattr(expected, name) == arch[name], name


def test_a_missing_pretrained_file_names_the_config_key(tmp_path, monkeypatch):
    from grm_jax.convert.errors import PretrainedFileError
    from grm_jax.convert.pretrained import resolve_pretrained
    from grm_jax.runtime import user_errors

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRM_JAX_PRETRAINED_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(PretrainedFileError, match=r"MODEL.PRETRAIN_FILE='mae.pth': not found") as info:
        resolve_pretrained("mae.pth")
    assert isinstance(info.value, user_errors())
    (tmp_path / "pretrained_models").mkdir()
    (tmp_path / "pretrained_models" / "mae.pth").write_bytes(b"")
    assert resolve_pretrained("mae.pth") == Path("pretrained_models") / "mae.pth"


def test_export_reports_bad_variables(fixture_sd):
    variables, extras = official_to_flax(fixture_sd)
    del variables["params"]["backbone"]["blocks_2"]["mlp"]["fc1"]["bias"]
    variables["params"]["box_head"]["conv1_ctr"]["conv"]["kernel"] = np.zeros((3, 3, 64, 7), np.float32)
    variables["params"]["backbone"]["extra_thing"] = np.zeros(3, np.float32)
    with pytest.raises(ConversionError) as info:
        flax_to_official(variables, extras)
    msg = str(info.value)
    assert "missing params/backbone/blocks_2/mlp/fc1/bias" in msg
    assert "mis-shaped params/box_head/conv1_ctr/conv/kernel: got [3, 3, 64, 7]" in msg
    assert "unexpected params/backbone/extra_thing" in msg


# ---------------------------------------------------------------- full-size manifests (shape-only, no memory)


@pytest.mark.parametrize("name,expected", [
    ("manifest_grm_vitb_256.json", dict(embed_dim=768, depth=12, search_size=256, template_size=128,
                                        head_channels=256, num_heads=12)),
    ("manifest_grm_vitl_320.json", dict(embed_dim=1024, depth=24, search_size=320, template_size=128,
                                        head_channels=256, num_heads=16)),
])
def test_full_size_manifest_converts_and_exports_exactly(parity_bundle, name, expected):
    entries = _manifest_entries(parity_bundle, name)
    sd = _lazy_state_dict(entries)
    arch = infer_architecture(sd)
    assert {k: arch[k] for k in expected} == expected
    variables, extras = official_to_flax(sd, source=name)
    exported = flax_to_official(variables, extras)
    assert [(k, list(v.shape), str(v.dtype)) for k, v in exported.items()] == \
        [(e["key"], e["shape"], e["dtype"]) for e in entries]
    for i, (k, v) in enumerate(exported.items()):
        assert v.reshape(-1)[:1].item() == i, k  # each key's own tensor came back under its own key
    n_params = sum(int(np.prod(e["shape"])) for e in entries
                   if "num_batches_tracked" not in e["key"] and "running_" not in e["key"])
    assert n_params == json.loads((parity_bundle / name).read_text())["num_parameters"]


def test_mae_manifest_initialises_the_vitb_backbone(parity_bundle):
    mae = _manifest_entries(parity_bundle, "manifest_mae_vitb.json")
    grm = _manifest_entries(parity_bundle, "manifest_grm_vitb_256.json")
    rng = np.random.default_rng(0)
    sd = _lazy_state_dict(mae)
    sd["pos_embed"] = rng.normal(size=(1, 197, 768)).astype(np.float32)
    # A fresh GRM ViT-B/256 backbone tree (shapes from the official layout, distinct fill value -1).
    fresh, extras = official_to_flax(OrderedDict((e["key"], np.broadcast_to(np.float32(-1) if e["dtype"] ==
                                     "float32" else np.int64(0), tuple(e["shape"]))) for e in grm))
    backbone, report = pretrained_backbone_params(sd, fresh["params"]["backbone"], source="mae")
    assert report["patch_start_index"] == 1
    assert report["ignored"] == []
    assert sorted(report["extras"]) == ["backbone.cls_token", "backbone.pos_embed"]
    assert len(report["kept_init"]) == 11 * 3
    fresh["params"]["backbone"] = backbone
    exported = flax_to_official(fresh, {**extras, **report["extras"]})
    assert [(k, list(v.shape)) for k, v in exported.items()] == [(e["key"], e["shape"]) for e in grm]
    index = {e["key"]: i for i, e in enumerate(mae)}
    for k, v in exported.items():
        short = k[len("backbone."):]
        if short in index and short not in ("pos_embed", "cls_token"):
            assert v.reshape(-1)[0] == index[short], k      # copied from the MAE file
        elif "divide_predict" in k:
            assert v.reshape(-1)[0] == -1, k                 # left at the model's own init
    np.testing.assert_allclose(exported["backbone.pos_embed_x"], resize_pos_embed(sd["pos_embed"], 1, (16, 16)))
    np.testing.assert_allclose(exported["backbone.pos_embed_z"], resize_pos_embed(sd["pos_embed"], 1, (8, 8)))


def test_pretrained_problems_are_listed(parity_bundle):
    grm = _manifest_entries(parity_bundle, "manifest_grm_vitb_256.json")
    fresh, _ = official_to_flax(_lazy_state_dict(grm))
    mae = _lazy_state_dict(_manifest_entries(parity_bundle, "manifest_mae_vitb.json"))
    del mae["blocks.3.mlp.fc2.bias"]
    mae["blocks.12.norm1.weight"] = np.zeros(768, np.float32)
    mae["norm.weight"] = np.zeros(1024, np.float32)
    mae["head.weight"] = np.zeros((1000, 768), np.float32)   # DeiT classifier: ignored like the official loader
    with pytest.raises(ConversionError) as info:
        pretrained_backbone_params(mae, fresh["params"]["backbone"], source="deit.pth")
    msg = str(info.value)
    assert "3 problem(s)" in msg and "missing blocks.3.mlp.fc2.bias" in msg
    assert "mis-shaped norm.weight" in msg and "unexpected blocks.12.norm1.weight" in msg


def test_distilled_deit_drops_two_prefix_rows(parity_bundle):
    grm = _manifest_entries(parity_bundle, "manifest_grm_vitb_256.json")
    fresh, _ = official_to_flax(_lazy_state_dict(grm))
    sd = _lazy_state_dict(_manifest_entries(parity_bundle, "manifest_mae_vitb.json"))
    pe = np.random.default_rng(1).normal(size=(1, 198, 768)).astype(np.float32)
    sd["pos_embed"] = pe
    sd["dist_token"] = np.zeros((1, 1, 768), np.float32)
    sd["head_dist.weight"] = np.zeros((1000, 768), np.float32)
    backbone, report = pretrained_backbone_params(sd, fresh["params"]["backbone"], source="deit_distilled")
    assert report["patch_start_index"] == 2
    assert report["ignored"] == ["dist_token", "head_dist.weight"]
    np.testing.assert_array_equal(backbone["pos_embed_x"], resize_pos_embed(pe[:, 2:], 0, (16, 16)))


# ---------------------------------------------------------------- position embedding resize


def test_pos_embed_resize_matches_official_tables(parity_bundle):
    from grm_jax.parity.convert import check_pos_embed

    results = check_pos_embed(parity_bundle, {})
    assert len(results) == 5
    for r in results:
        assert r.ok and r.max_abs_err <= 1e-5, r


def test_pos_embed_resize_matches_torch_interpolate():
    x = np.random.default_rng(3).normal(size=(1, 5, 14, 14)).astype(np.float32)
    for out in (8, 16, 20, 14, 3, 31):
        ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=(out, out), mode="bicubic",
                                              align_corners=False).numpy()
        ours = np.einsum("ah,nchw,bw->ncab", bicubic_matrix(14, out), x.astype(np.float64), bicubic_matrix(14, out))
        assert np.abs(ours - ref).max() < 1e-5, out


def test_trained_checkpoint_pos_embeds_are_the_resized_table(fixture_sd):
    # The fixture model was built by the official finetune_track from its own pos_embed.
    for name, side in (("pos_embed_x", 8), ("pos_embed_z", 4)):
        ours = resize_pos_embed(fixture_sd["backbone.pos_embed"], 1, (side, side))
        assert np.abs(ours - fixture_sd[f"backbone.{name}"]).max() <= 1e-5


# ---------------------------------------------------------------- loading without running foreign code


def _write_module(tmp_path, name, body):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))


@pytest.mark.slow
def test_foreign_objects_become_inert_placeholders(tmp_path, fixture_sd, monkeypatch):
    marker = tmp_path / "imported.marker"
    _write_module(tmp_path, "trainer_settings_mod", f"""
        import pathlib
        pathlib.Path({str(marker)!r}).write_text('module was imported')
        class Settings:
            def __init__(self):
                self.script_name = 'grm'
                self.env = Env()
            def __setstate__(self, state):
                pathlib.Path({str(marker)!r}).write_text('setstate ran')
        class Env:
            def __init__(self):
                self.workspace_dir = '/somewhere'
        """)
    ckpt_path = tmp_path / "with_settings.pth.tar"
    # Pickle in a subprocess so this process never imports the module.
    script = textwrap.dedent(f"""
        import torch
        import trainer_settings_mod
        net = torch.load({str(tmp_path / 'net.pt')!r}, weights_only=True)
        torch.save({{'net': net, 'epoch': 300, 'settings': trainer_settings_mod.Settings()}}, {str(ckpt_path)!r})
        """)
    torch.save(OrderedDict((k, torch.from_numpy(v)) for k, v in list(fixture_sd.items())[:6]), tmp_path / "net.pt")
    subprocess.run([sys.executable, "-c", script], check=True, env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    marker.unlink()
    with pytest.raises(Exception):
        torch.load(ckpt_path, weights_only=True)  # what the issue describes: the default refuses the file

    monkeypatch.syspath_prepend(str(tmp_path))  # importable, yet it must not be imported
    ckpt = read_torch_checkpoint(ckpt_path)
    assert not marker.exists() and "trainer_settings_mod" not in sys.modules
    settings = ckpt["settings"]
    assert isinstance(settings, ForeignObject)
    assert (settings.foreign_module, settings.foreign_name) == ("trainer_settings_mod", "Settings")
    assert settings.state["script_name"] == "grm" and isinstance(settings.state["env"], ForeignObject)
    assert "trainer_settings_mod.Settings" in ckpt["__foreign__"]
    sd = extract_state_dict(ckpt)
    assert list(sd) == list(fixture_sd)[:6]
    assert all(np.array_equal(sd[k], fixture_sd[k]) for k in sd)


class _CallsSystem:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


class _CallsExec:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('x')",))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("payload_cls", [_CallsSystem, _CallsExec])
def test_pickled_function_calls_are_not_run(tmp_path, payload_cls, zip_format):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth.tar"
    torch.save({"net": {"w": torch.ones(2)}, "settings": payload_cls(marker)}, path,
               _use_new_zipfile_serialization=zip_format)
    assert not marker.exists()
    ckpt = read_torch_checkpoint(path)
    assert not marker.exists()
    assert isinstance(ckpt["settings"], ForeignObject)
    assert ckpt["settings"].foreign_name in ("system", "exec")
    np.testing.assert_array_equal(ckpt["net"]["w"], np.ones(2, np.float32))


class _ImportOs:
    def __reduce__(self):
        return (__import__, ("os",))


class _GetSystem:
    def __call__(self, *args):  # only so pickle accepts it as the callable of _CallChain's reduce
        raise AssertionError("never called")

    def __reduce__(self):
        return (getattr, (_ImportOs(), "system"))


class _CallChain:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (_GetSystem(), (f"touch {self.marker}",))


def test_getattr_chains_are_not_followed(tmp_path):
    marker = tmp_path / "pwned"
    # __import__('os') -> getattr(os, 'system') -> call it: three nested REDUCEs, none may run.
    data = pickle.dumps(_CallChain(marker), protocol=2)
    obj = safe_pickle.loads(data)
    assert isinstance(obj, ForeignObject) and not marker.exists()


def test_build_on_process_classes_is_refused():
    # GLOBAL collections.OrderedDict; BUILD {'injected': 1} would set an attribute on the class itself.
    data = b"\x80\x02ccollections\nOrderedDict\n}X\x08\x00\x00\x00injectedK\x01sb."
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        safe_pickle.loads(data)
    assert not hasattr(OrderedDict, "injected")


def test_torchscript_archives_are_refused(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(CheckpointError, match="TorchScript"):
        read_torch_checkpoint(path)


def test_unreadable_files_get_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        read_torch_checkpoint(tmp_path / "absent.pth.tar")
    junk = tmp_path / "junk.pth.tar"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pth.tar: cannot read"):
        read_torch_checkpoint(junk)
    path = tmp_path / "nonet.pth.tar"
    torch.save({"epoch": 1, "stats": None}, path)
    with pytest.raises(CheckpointError, match=r"no tensor dict under any of \['net'"):
        extract_state_dict(read_torch_checkpoint(path), source=str(path))


# ---------------------------------------------------------------- against the Flax model (shapes and init)


@pytest.mark.parametrize("config,manifest", [("vitb_256_ep300", "manifest_grm_vitb_256.json"),
                                             ("vitl_320_ep300", "manifest_grm_vitl_320.json")])
def test_model_param_tree_is_the_converted_tree(parity_bundle, config, manifest):
    import jax
    import jax.numpy as jnp
    from flax.traverse_util import flatten_dict

    from grm_jax.config import load_config
    from grm_jax.specs import build_model

    cfg = load_config(config)
    zs, xs = cfg.DATA.TEMPLATE.SIZE, cfg.DATA.SEARCH.SIZE
    shapes = jax.eval_shape(build_model(cfg).init, jax.random.PRNGKey(0), jnp.zeros((1, zs, zs, 3)),
                            jnp.zeros((1, xs, xs, 3)))
    converted, _ = official_to_flax(_lazy_state_dict(_manifest_entries(parity_bundle, manifest)),
                                    conversion_architecture(cfg))
    model_tree = {k: tuple(v.shape) for k, v in flatten_dict(shapes).items()}
    ours = {k: tuple(v.shape) for k, v in flatten_dict(converted).items()}
    assert model_tree == ours


def _tiny_mae_dict(fixture_sd):
    """An MAE-style 'model' dict made from the fixture's backbone (encoder only: no pos_embed_x/z, no predictors)."""
    return OrderedDict((k[len("backbone."):], v) for k, v in fixture_sd.items()
                       if k.startswith("backbone.") and "divide_predict" not in k and "pos_embed_" not in k)


def test_init_from_pretrained_copies_only_the_encoder(fixture_sd, tiny_cfg):
    from flax.traverse_util import flatten_dict, unflatten_dict

    from grm_jax.convert.pretrained import init_from_pretrained

    trained, _ = official_to_flax(fixture_sd, conversion_architecture(tiny_cfg))
    # Stand-in for a fresh model init (same tree, different values) so no compile is needed here.
    rng = np.random.default_rng(5)
    fresh = unflatten_dict({path: rng.normal(size=v.shape).astype(np.float32)
                            for path, v in flatten_dict(trained).items()})
    variables, extras, report = init_from_pretrained(_tiny_mae_dict(fixture_sd), fresh, with_extras=True)
    got, want, init = flatten_dict(variables), flatten_dict(trained), flatten_dict(fresh)
    assert set(got) == set(want)
    for path, value in got.items():
        name = "/".join(path)
        if "divide_predict" in name or path[1] == "box_head" or path[0] == "batch_stats":
            np.testing.assert_array_equal(value, init[path], err_msg=name)     # fresh init kept
        elif "pos_embed_" in name:
            assert np.abs(value - want[path]).max() <= 1e-5, name            # the official resize
        else:
            np.testing.assert_array_equal(value, want[path], err_msg=name)     # copied encoder weight
    assert report["patch_start_index"] == 1 and report["ignored"] == []
    np.testing.assert_array_equal(extras["backbone.pos_embed"], fixture_sd["backbone.pos_embed"])
    assert list(flax_to_official(variables, extras)) == list(fixture_sd)


@pytest.mark.slow
def test_pretrained_cli_initialises_the_tiny_model(fixture_sd, tmp_path, capsys):
    from grm_jax.checkpoints.converted import load_variables
    from grm_jax.cli import convert_checkpoint as cli

    torch.save({"model": OrderedDict((k, torch.from_numpy(v)) for k, v in _tiny_mae_dict(fixture_sd).items())},
               tmp_path / "mae_tiny.pth")
    rc = cli.main(["pretrained->flax", "--input", str(tmp_path / "mae_tiny.pth"), "--config", "tiny_test",
                   "--output", str(tmp_path / "init")])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["patch_start_index"] == 1 and summary["kept_init_count"] == 9
    variables, extras, meta = load_variables(tmp_path / "init")
    bb = variables["params"]["backbone"]
    np.testing.assert_array_equal(bb["blocks_2"]["mlp"]["fc1"]["kernel"],
                                  fixture_sd["backbone.blocks.2.mlp.fc1.weight"].T)
    assert np.abs(bb["pos_embed_x"] - fixture_sd["backbone.pos_embed_x"]).max() <= 1e-5
    pred = bb["blocks_1"]["attn"]["divide_predict_4"]
    assert np.all(pred["bias"] == 0) and 0 < np.abs(pred["kernel"]).max() < 0.1   # fresh predictor init
    assert meta["kind"] == "pretrained" and meta["patch_start_index"] == 1
    exported = flax_to_official(variables, extras)
    assert [(k, v.shape) for k, v in exported.items()] == [(k, v.shape) for k, v in fixture_sd.items()]

"""Orbax save/load of converted variables and the inference loader's three input kinds."""
from __future__ import annotations

import numpy as np
import orbax.checkpoint as ocp
import pytest

from grm_jax.checkpoints.converted import load_variables, save_variables
from grm_jax.checkpoints.inference import load_for_inference
from grm_jax.checkpoints.reading import CheckpointLoadError
from grm_jax.checkpoints.training import load_training_variables
from grm_jax.config import load_config
from grm_jax.convert import (ConversionError, extract_state_dict, flax_to_official, official_to_flax,
                             read_torch_checkpoint)

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def fixture_sd(parity_bundle):
    return extract_state_dict(read_torch_checkpoint(parity_bundle / "checkpoint.pth.tar"))


@pytest.fixture(scope="module")
def converted(fixture_sd):
    return official_to_flax(fixture_sd)


def _assert_same_tree(a, b):
    assert set(a) == set(b)
    for k in a:
        if isinstance(a[k], dict):
            _assert_same_tree(a[k], b[k])
        else:
            assert np.asarray(b[k]).dtype == np.asarray(a[k]).dtype and np.array_equal(a[k], b[k]), k


def test_save_load_round_trip_is_exact(tmp_path, converted, fixture_sd):
    variables, extras = converted
    save_variables(tmp_path / "ckpt", variables, extras, {"source": "checkpoint.pth.tar"})
    v2, e2, meta = load_variables(tmp_path / "ckpt")
    _assert_same_tree(variables, v2)
    assert meta["source"] == "checkpoint.pth.tar" and meta["architecture"]["depth"] == 4
    exported = flax_to_official(v2, e2)
    assert list(exported) == list(fixture_sd)
    assert all(exported[k].dtype == v.dtype and np.array_equal(exported[k], v) for k, v in fixture_sd.items())


def test_save_without_extras_round_trips(tmp_path, converted):
    # e.g. variables from a training run or a fresh init: no cls_token / pos_embed to carry along
    variables, _ = converted
    save_variables(tmp_path / "plain", variables)
    v2, e2, meta = load_variables(tmp_path / "plain")
    _assert_same_tree(variables, v2)
    assert e2 == {} and "format" in meta
    assert not (tmp_path / "plain" / "extras").exists()


def test_save_refuses_to_overwrite(tmp_path, converted):
    save_variables(tmp_path / "ckpt", *converted)
    with pytest.raises(FileExistsError, match="not empty"):
        save_variables(tmp_path / "ckpt", *converted)
    save_variables(tmp_path / "ckpt", *converted, force=True)


def test_load_for_inference_official_and_converted(tmp_path, parity_bundle, converted):
    variables, _ = converted
    v_off, info = load_for_inference(parity_bundle / "checkpoint.pth.tar", return_info=True)
    assert info["format"] == "official"
    _assert_same_tree(variables, v_off)
    save_variables(tmp_path / "conv", *converted, {"source": "fixture"})
    v_conv, info = load_for_inference(tmp_path / "conv", return_info=True)
    assert info["format"] == "converted" and info["source"] == "fixture"
    _assert_same_tree(variables, v_conv)


def test_official_conversion_checks_the_config(parity_bundle):
    cfg = load_config("tiny_test", ["DATA.SEARCH.SIZE=256", "TEST.SEARCH_SIZE=256"])
    with pytest.raises(ConversionError, match="DATA.SEARCH.SIZE=256 but the checkpoint has 128"):
        load_for_inference(parity_bundle / "checkpoint.pth.tar", cfg)


def _perturbed(variables, delta):
    import jax

    return jax.tree_util.tree_map(lambda x: np.asarray(x) + np.asarray(delta, np.asarray(x).dtype), variables)


def test_load_for_inference_reads_latest_training_step(tmp_path, converted):
    from grm_jax.checkpoints.training import TrainingCheckpoints

    variables, _ = converted
    workdir = tmp_path / "run"
    ckpts = TrainingCheckpoints(workdir, keep=3)
    for step, delta in ((100, 1.0), (200, 2.0)):
        v = _perturbed(variables, delta)
        state = {"step": np.int32(step), "params": v["params"], "batch_stats": v["batch_stats"],
                 "opt_state": {"mu": v["params"]}}
        ckpts.save(step, state, {"step": step})
    ckpts.close()
    loaded, info = load_for_inference(workdir, return_info=True)
    assert info == {"format": "training", "source": str(workdir), "step": 200}
    _assert_same_tree(_perturbed(variables, 2.0), loaded)
    _assert_same_tree(loaded, load_for_inference(workdir))
    older, step = load_training_variables(workdir, step=100)
    assert step == 100
    _assert_same_tree(_perturbed(variables, 1.0), older)
    assert load_training_variables(workdir / "checkpoints")[1] == 200     # the checkpoint folder itself
    # a checkpoint folder whose steps were not written by the training loop is named, not searched
    options = ocp.CheckpointManagerOptions()
    with ocp.CheckpointManager(tmp_path / "other", options=options) as mngr:
        mngr.save(1, args=ocp.args.StandardSave({"params": variables["params"]}))
    with pytest.raises(CheckpointLoadError, match="not a grm_jax training checkpoint \\(no 'state' item\\)"):
        load_for_inference(tmp_path / "other")


def test_bad_paths_get_clear_errors(tmp_path):
    with pytest.raises(CheckpointLoadError, match="no such file or directory"):
        load_for_inference(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointLoadError, match="no orbax CheckpointManager steps"):
        load_for_inference(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CheckpointLoadError, match="not a PyTorch checkpoint"):
        load_for_inference(tmp_path / "notes.txt")


def _convert_cli():
    from grm_jax.cli import convert_checkpoint
    return convert_checkpoint


def test_convert_cli_round_trip(tmp_path, parity_bundle, fixture_sd, capsys):
    import json

    cli = _convert_cli()
    src = parity_bundle / "checkpoint.pth.tar"
    assert cli.main(["official->flax", "--input", str(src), "--output", str(tmp_path / "conv")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["tensors"] == 164 and summary["architecture"]["search_size"] == 128
    assert cli.main(["flax-to-official", "--input", str(tmp_path / "conv"), "--output",
                     str(tmp_path / "GRM_ep0000.pth.tar")]) == 0
    back = extract_state_dict(read_torch_checkpoint(tmp_path / "GRM_ep0000.pth.tar"))
    assert list(back) == list(fixture_sd)
    assert all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in fixture_sd.items())
    # Refuses to overwrite, and a non-checkpoint input is one clear error (exit 2), not a traceback.
    assert cli.main(["flax-to-official", "--input", str(tmp_path / "conv"), "--output",
                     str(tmp_path / "GRM_ep0000.pth.tar")]) == 2
    assert cli.main(["official-to-flax", "--input", str(parity_bundle / "config.json"), "--output",
                     str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "exists (pass --force" in err and "config.json: cannot read as a torch checkpoint" in err

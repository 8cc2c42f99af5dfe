"""grm-track --record-division: per frame and dividing layer the fraction of search tokens interacting with the
template, written beside the raw results."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax.config import division_layers
from grm_jax.specs import build_model
from grm_jax.sequence import read_frame
from grm_jax.track import SequenceTracker, TrackerCore, TrackerSettings


def _random_variables(model, cfg):
    """Random weights of the model's shapes (compiling its initialisation costs tens of seconds on a busy CPU)."""
    z = jnp.zeros((1, cfg.DATA.TEMPLATE.SIZE, cfg.DATA.TEMPLATE.SIZE, 3))
    x = jnp.zeros((1, cfg.DATA.SEARCH.SIZE, cfg.DATA.SEARCH.SIZE, 3))
    shapes = jax.eval_shape(lambda k: model.init(k, z, x, train=False), jax.random.PRNGKey(0))
    rng = np.random.default_rng(5)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if name.endswith("['scale']") or name.endswith("['var']"):
            return np.ones(leaf.shape, leaf.dtype)
        if name.endswith("['mean']"):
            return np.zeros(leaf.shape, leaf.dtype)
        return rng.normal(0, 0.05, leaf.shape).astype(leaf.dtype)
    return jax.tree_util.tree_map_with_path(fill, dict(shapes))


@pytest.mark.slow
def test_record_division_writes_the_interacting_fraction_of_every_frame(tmp_path, tiny_cfg, synthetic_benchmark,
                                                                        save_tiny_checkpoint):
    from grm_jax.cli import track as cli
    from grm_jax.evaluation.raw_results import read_division, read_result

    model = build_model(tiny_cfg)
    variables = _random_variables(model, tiny_cfg)
    ckpt = save_tiny_checkpoint(tmp_path / "ckpt", variables)
    root, seqs = synthetic_benchmark("got10k_val", num_sequences=2, num_frames=(5, 7), image_size=(128, 96), seed=8)
    base = ["--config", "tiny_test", "--checkpoint", str(ckpt), "--dataset", "got10k_val", "--dataset-root",
            str(root), "--batch-size", "1", "--no-progress"]
    assert cli.main(base + ["--workdir", str(tmp_path / "div"), "--record-division"]) == 0

    # the reference: one sequence at a time, the mean over search tokens of each layer's class-1 decisions
    core = TrackerCore(model, variables, TrackerSettings.from_config(tiny_cfg, "got10k_val"), with_decisions=True)
    layers = list(division_layers(tiny_cfg))
    for s in seqs:
        fractions, file_layers = read_division(tmp_path / "div" / "got10k" / f"{s.name}_division.txt")
        assert file_layers == layers and fractions.shape == (len(s.frames), len(layers))
        assert np.isnan(fractions[0]).all()
        tracker = SequenceTracker(core)
        tracker.initialize(read_frame(s.frames[0]), s.boxes[0])
        expected, boxes = [], [s.boxes[0]]
        for frame in s.frames[1:]:
            boxes.append(tracker.track(read_frame(frame)))
            expected.append(np.asarray(tracker.last_decisions, np.float64).mean(axis=-1))
        np.testing.assert_allclose(fractions[1:], np.array(expected), atol=1e-6)
        assert ((fractions[1:] >= 0) & (fractions[1:] <= 1)).all()
        assert ((fractions[1:] > 0) & (fractions[1:] < 1)).any()   # not a degenerate all-or-nothing division
        # the boxes are the tracker's, row for row
        np.testing.assert_array_equal(read_result(tmp_path / "div" / "got10k" / f"{s.name}.txt"),
                                      np.trunc(np.array(boxes)))

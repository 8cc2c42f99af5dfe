import csv
import json

import numpy as np
import pytest

from grm_jax import ablation

GRID = """
base_config: demo_tiny
seeds: [0, 1, 2]
train: {max_steps: 20, set: {TRAIN.LR: 0.001}}
eval: {dataset: lasot, root: data/lasot}
variants:
  - name: grm
  - name: one_stream
    set: {MODEL.DIVISION.LAYERS: []}
  - name: grm_thr0.4
    eval_set: {TEST.HYPER.DEFAULT: 0.4}
axes:
  MODEL.TGT_TYPE: [allavg, roimax]
"""


@pytest.fixture()
def grid_file(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    return path


def test_grid_expands_variants_axes_and_seeds(grid_file):
    grid = ablation.load_grid(grid_file)
    runs = ablation.expand(grid)
    names = [v["name"] for v in grid.variants]
    assert names == ["grm", "one_stream", "grm_thr0.4", "TGT_TYPE=allavg", "TGT_TYPE=roimax"]
    assert len(runs) == 5 * 3
    by = {(r.variant, r.seed): r for r in runs}
    # Common train overrides reach every variant; variant overrides win.
    assert dict(by[("one_stream", 1)].train_overrides) == {"TRAIN.LR": 0.001, "MODEL.DIVISION.LAYERS": []}
    assert dict(by[("TGT_TYPE=roimax", 0)].train_overrides)["MODEL.TGT_TYPE"] == "roimax"
    # An inference-only variant shares the trained model of the base variant, seed by seed.
    assert by[("grm_thr0.4", 2)].train_key == by[("grm", 2)].train_key
    assert by[("grm", 0)].train_key != by[("grm", 1)].train_key
    assert by[("grm", 0)].train_key != by[("one_stream", 0)].train_key
    assert dict(by[("grm_thr0.4", 0)].eval_overrides)["TEST.HYPER.DEFAULT"] == 0.4
    assert len({r.eval_key for r in runs}) == len(runs)
    # Overrides render as `--set KEY=VALUE` strings that YAML parses back to the same value.
    assert "MODEL.DIVISION.LAYERS=[]" in by[("one_stream", 0)].train_set_args()


@pytest.mark.parametrize("text, message", [
    ("base_config: x\neval: {dataset: a, root: b}\nvariants: [{name: a}]\nbogus: 1\n", "bogus"),
    ("base_config: x\neval: {dataset: a, root: b}\nvariants: [{name: a, sett: {}}]\n", "sett"),
    ("base_config: x\neval: {dataset: a, root: b}\n", "nothing to run"),
    ("base_config: x\neval: {dataset: a}\nvariants: [{name: a}]\n", "'dataset' and 'root'"),
    ("base_config: x\nseeds: []\neval: {dataset: a, root: b}\nvariants: [{name: a}]\n", "seeds"),
    ("base_config: x\neval: {dataset: a, root: b}\nvariants: [{name: a}, {name: a}]\n", "duplicate"),
])
def test_grid_errors_name_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ablation.GridError, match=message):
        ablation.load_grid(path)


def test_aggregate_and_tables(tmp_path):
    rng = np.random.default_rng(0)
    results = []
    expected = {}
    for variant, layers in [("grm", 3), ("one_stream", 0)]:
        aucs = rng.uniform(30, 70, size=3)
        fracs = rng.uniform(0, 1, size=(3, layers))
        expected[variant] = (aucs.mean(), aucs.std(ddof=1), fracs.mean(axis=0))
        for seed in range(3):
            results.append({"variant": variant, "seed": seed, "auc": aucs[seed], "precision": aucs[seed] / 2,
                            "norm_precision": aucs[seed] / 3,
                            "interact_frac": list(fracs[seed]) if layers else None})
    rows = ablation.aggregate(results)
    assert [r["variant"] for r in rows] == ["grm", "one_stream"]
    for row in rows:
        mean, std, fracs = expected[row["variant"]]
        assert row["auc"] == pytest.approx(mean)
        assert row["auc_std"] == pytest.approx(std)
        assert row["precision"] == pytest.approx(mean / 2)
        np.testing.assert_allclose(row["interact_frac"], fracs)

    paths = ablation.write_tables(rows, tmp_path / "out")
    assert json.loads(paths["json"].read_text())[0]["auc"] == pytest.approx(expected["grm"][0])
    with paths["csv"].open() as f:
        table = list(csv.DictReader(f))
    assert [r["variant"] for r in table] == ["grm", "one_stream"]
    assert float(table[1]["auc_std"]) == pytest.approx(expected["one_stream"][1], rel=1e-5)
    md = paths["md"].read_text()
    assert f"{expected['grm'][0]:.2f} ± {expected['grm'][1]:.2f}" in md
    assert "| one_stream | 3 |" in md


def test_single_seed_has_no_spread():
    rows = ablation.aggregate([{"variant": "a", "seed": 0, "auc": 50.0, "precision": 40.0, "norm_precision": 45.0}])
    assert rows[0]["auc"] == 50.0 and np.isnan(rows[0]["auc_std"])


def test_shipped_grids_parse():
    from grm_jax.config import CONFIG_DIR

    grids = sorted((CONFIG_DIR / "ablations").glob("*.yaml"))
    assert len(grids) >= 2
    for path in grids:
        runs = ablation.expand(ablation.load_grid(path))
        assert runs, path


def _seeded_results(rng, variant, shift, seeds, sequences, base):
    out = []
    for seed in range(seeds):
        seed_shift = rng.normal(0, 0.3)   # training-seed spread
        per = {f"seq{i}": {m: float(base[i] + shift + seed_shift + rng.normal(0, 1.0)) for m in ablation.METRIC_COLUMNS}
               for i in range(sequences)}
        out.append({"variant": variant, "seed": seed, **{m: float(np.mean([v[m] for v in per.values()]))
                                                          for m in ablation.METRIC_COLUMNS}, "per_sequence": per})
    return out


def test_aggregate_intervals_over_sequences_and_seeds(tmp_path):
    rng = np.random.default_rng(7)
    base = rng.normal(50, 8, 30)
    results = (_seeded_results(rng, "grm", 0.0, 3, 30, base) + _seeded_results(rng, "better", 3.0, 3, 30, base)
               + _seeded_results(rng, "same", 0.0, 3, 30, base))
    rows = ablation.aggregate(results, resamples=2000, seed=0)
    by = {r["variant"]: r for r in rows}
    assert "intervals" not in by["grm"] and by["better"]["reference"] == "grm"
    for name in ("better", "same"):
        iv = by[name]["intervals"]["auc"]
        assert iv["difference"] == pytest.approx(by[name]["auc"] - by["grm"]["auc"])   # mean over seeds and sequences
        assert iv["low"] < iv["difference"] < iv["high"] and iv["resamples"] == 2000
    assert by["better"]["intervals"]["auc"]["significant"] and by["better"]["intervals"]["auc"]["low"] > 1.0
    assert not by["same"]["intervals"]["auc"]["significant"]
    # reproducible for a seed; seeds widen the interval compared with one seed per row
    again = ablation.aggregate(results, resamples=2000, seed=0)
    assert again[1]["intervals"] == by["better"]["intervals"]
    one_seed = ablation.aggregate([r for r in results if r["seed"] == 0], resamples=2000, seed=0)
    width = lambda iv: iv["high"] - iv["low"]
    assert width(by["better"]["intervals"]["auc"]) > width(one_seed[1]["intervals"]["auc"])
    paths = ablation.write_tables(rows, tmp_path)
    md = paths["md"].read_text()
    assert "ΔAUC vs grm [95 % CI]" in md and "2000 resamples" in md
    same_line = next(line for line in md.splitlines() if line.startswith("| same |"))
    better_line = next(line for line in md.splitlines() if line.startswith("| better |"))
    assert "n.s." in same_line.split("|")[7] and "n.s." not in better_line.split("|")[7]
    with paths["csv"].open() as f:
        table = {r["variant"]: r for r in csv.DictReader(f)}
    assert table["same"]["auc_significant"] == "n.s." and table["better"]["auc_significant"] == "yes"
    assert table["grm"]["auc_diff"] == ""
    # another reference; an unknown one and mismatched sequences are named
    assert "intervals" in ablation.aggregate(results, "better", resamples=200)[0]
    with pytest.raises(ablation.GridError, match="reference variant 'nope'"):
        ablation.aggregate(results, "nope")
    results[-1]["per_sequence"].pop("seq0")
    with pytest.raises(ablation.GridError, match="other sequences"):
        ablation.aggregate(results)

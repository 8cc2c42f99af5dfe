"""Per-attribute and hard-frame metrics, token-division statistics and bootstrap intervals of grm-analyze.

Expected values are computed here from the files on disk (attribute files, per-frame flags, ground truth, raw
results) with plain numpy, not with the analysis code.
"""
import csv
import json
from dataclasses import replace

import numpy as np
import pytest

# The official attribute order of each benchmark's files (LaSOT toolkit run_tracker_performance_evaluation.m,
# UAV123 toolkit attName, OTB toolkit perfPlot.m).
LASOT_ATT = ["IV", "POC", "DEF", "MB", "CM", "ROT", "BC", "VC", "SV", "FOC", "FM", "OV", "LR", "ARC"]
UAV_ATT = ["SV", "ARC", "LR", "FM", "FOC", "POC", "OV", "BC", "IV", "VC", "CM", "SOB"]
OTB_ATT = ["IV", "OPR", "SV", "OCC", "DEF", "MB", "FM", "IPR", "OV", "BC", "LR"]
REAPPEAR = 4
# The official overlap thresholds: a float arange in groups of 4 (torch.arange on AVX2), compared with ">".
THRESHOLDS = np.array([0.05 * (i // 4 * 4) + 0.05 * (i % 4) for i in range(21)])


def _iou(a, b):
    x1 = np.maximum(a[:, 0], b[:, 0])
    y1 = np.maximum(a[:, 1], b[:, 1])
    x2 = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2])
    y2 = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    return inter / (a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter)


def _read_flags(path):
    return np.array([int(float(v)) for v in path.read_text().replace(",", " ").split()])


def _benchmark_files(fmt, root, seq):
    """(attribute labels, per-frame invisible-flag dict) of one sequence, read from the files themselves."""
    if fmt == "lasot":
        d = root / seq.name.rsplit("-", 1)[0] / seq.name
        values = np.loadtxt(root / "annos" / "att" / f"{seq.name}.txt", delimiter=",")
        labels = {a for a, v in zip(LASOT_ATT, values) if v == 1}
        flags = {"full_occlusion": _read_flags(d / "full_occlusion.txt") == 1,
                 "out_of_view": _read_flags(d / "out_of_view.txt") == 1}
    elif fmt == "got10k_val":
        d = root / "val" / seq.name
        meta = dict(line.split(": ", 1) for line in (d / "meta_info.ini").read_text().splitlines() if ": " in line)
        labels = {f"object: {meta['object_class']}", f"motion: {meta['motion_class']}"}
        absent = _read_flags(d / "absence.label") == 1
        flags = {"absent": absent, "fully_covered": (_read_flags(d / "cover.label") == 0) & ~absent}
    elif fmt == "uav":
        short = seq.name[len("uav_"):]
        values = np.loadtxt(root / "anno" / "UAV123" / "att" / f"{short}.txt", delimiter=",")
        labels = {a for a, v in zip(UAV_ATT, values) if v == 1}
        gt = np.genfromtxt(root / "anno" / "UAV123" / f"{short}.txt", delimiter=",")
        flags = {"absent": np.isnan(gt).any(axis=1)}
    else:
        values = np.loadtxt(root / "anno" / "att" / f"{seq.name[len('otb_'):]}.txt", delimiter=",")
        labels = {a for a, v in zip(OTB_ATT, values) if v == 1}
        flags = {}
    return labels, flags


def _official_valid(fmt, seq, flags):
    gt = np.asarray(seq.boxes, float)
    valid = np.isfinite(gt).all(axis=1) & (np.nan_to_num(gt[:, 2]) > 0) & (np.nan_to_num(gt[:, 3]) > 0)
    if fmt == "lasot":
        valid &= ~flags["full_occlusion"] & ~flags["out_of_view"]
    return valid


def _reappear(invisible, n):
    out = np.zeros(len(invisible), bool)
    for t in range(1, len(invisible)):
        if invisible[t - 1] and not invisible[t]:
            k = t
            while k < len(invisible) and k < t + n and not invisible[k]:
                out[k] = True
                k += 1
    return out


def _prediction(seq, rng, noise):
    gt = np.nan_to_num(np.asarray(seq.boxes, float))
    p = gt + rng.normal(0, noise, gt.shape)
    p[:, 2:] = np.maximum(p[:, 2:], 3)
    return np.trunc(p)


@pytest.fixture(scope="module")
def twins(synthetic_benchmark):
    made = {}
    for fmt, write in (("lasot", "lasot_test"), ("got10k_val", "got10k_val"), ("uav", "uav"), ("otb", "otb")):
        made[fmt] = synthetic_benchmark(write, only_existing=True, num_sequences=6, num_frames=(30, 45),
                                        image_size=(96, 72), seed=21)
    return made


def _write_trackers(tmp_path, seqs, with_division=False):
    from grm_jax.evaluation.raw_results import write_division, write_result

    rng = np.random.default_rng(4)
    preds = {"near": {}, "far": {}}
    divisions = {}
    for name, noise in (("near", 1.0), ("far", 5.0)):
        for s in seqs:
            preds[name][s.name] = _prediction(s, rng, noise)
            write_result(tmp_path / name, s.dataset, s.name, preds[name][s.name])
            if with_division and name == "near":
                d = rng.uniform(0, 1, (len(s.boxes), 3))
                d[0] = np.nan
                divisions[s.name] = d
                write_division(tmp_path / name, s.dataset, s.name, d, [2, 5, 7])
    return preds, divisions


@pytest.mark.parametrize("fmt", ["lasot", "got10k_val", "uav", "otb"])
def test_attribute_and_hard_frame_metrics_match_an_independent_computation(fmt, twins, tmp_path, capsys):
    from grm_jax.cli import analyze as cli

    root, seqs = twins[fmt]
    preds, divisions = _write_trackers(tmp_path, seqs, with_division=fmt == "lasot")
    out = tmp_path / "report"
    argv = ["--dataset", fmt, "--dataset-root", str(root), "--only-existing", "--tracker", f"near={tmp_path / 'near'}",
            "--tracker", f"far={tmp_path / 'far'}", "--reappear-frames", str(REAPPEAR), "--out", str(out)]
    assert cli.main(argv) == 0
    capsys.readouterr()

    files = {s.name: _benchmark_files(fmt, root, s) for s in seqs}
    # ---- per attribute: AUC / OP50 / AO averaged over the sequences having the attribute
    per_seq = {}
    for s in seqs:
        valid = _official_valid(fmt, s, files[s.name][1])
        for t in preds:
            p = preds[t][s.name].copy()
            p[0] = np.nan_to_num(s.boxes[0])
            iou = np.where(valid, _iou(p, np.nan_to_num(np.asarray(s.boxes, float))), -1.0)
            success = (iou[:, None] > THRESHOLDS[None]).sum(0) / valid.sum()
            per_seq[t, s.name] = (success.mean() * 100, success[10] * 100, iou[valid].mean() * 100)
    groups = {}
    for name, (labels, _) in files.items():
        for label in labels:
            groups.setdefault(label, []).append(name)
    result = json.loads((out / "attributes.json").read_text())
    assert sorted(result["results"]) == sorted(groups)
    for label, members in groups.items():
        for t in preds:
            got = result["results"][label][t]
            assert got["num_sequences"] == len(members)
            expected = np.mean([per_seq[t, m] for m in members], axis=0)
            np.testing.assert_allclose([got["auc"], got["op50"], got["ao"]], expected, atol=2e-3)
    if fmt == "got10k_val":   # the GOT-10k toolkit's AO per class: frames 1.. with cover > 0, boxes in the image
        def bounded(b, w, h):
            x, y = np.clip(b[:, 0], 0, w), np.clip(b[:, 1], 0, h)
            return np.stack([x, y, np.clip(b[:, 2], 0, w - x), np.clip(b[:, 3], 0, h - y)], axis=1)

        for label, members in groups.items():
            for t in preds:
                pooled = []
                for m in members:
                    s = next(q for q in seqs if q.name == m)
                    meta = (root / "val" / m / "meta_info.ini").read_text()
                    w, h = (float(v) for v in meta.split("resolution: (")[1].split(")")[0].split(","))
                    cover = _read_flags(root / "val" / m / "cover.label")
                    iou = _iou(bounded(preds[t][m][1:], w, h), bounded(np.asarray(s.boxes, float)[1:], w, h))
                    pooled.append(np.nan_to_num(iou)[cover[1:] > 0])
                assert result["results"][label][t]["got10k_ao"] == pytest.approx(np.concatenate(pooled).mean() * 100,
                                                                                 abs=1e-6)
    with open(out / "attributes.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 2 * len(groups)
    assert (out / "attributes_overview.png").stat().st_size > 0 and (out / "attributes_overview.pdf").is_file()
    assert len(list((out / "attributes").glob("success_*.png"))) == len(groups)
    assert "\\toprule" in (out / "attributes.tex").read_text()

    # ---- hard frames: pooled over sequences, frames 1.. with an annotated box
    if fmt == "otb":
        assert not (out / "hard_frames.json").exists()
        return
    hard = json.loads((out / "hard_frames.json").read_text())["results"]
    cats = {}
    for s in seqs:
        flags = files[s.name][1]
        invisible = np.logical_or.reduce(list(flags.values()))
        after = _reappear(invisible, REAPPEAR)
        masks = dict(flags, after_reappearance=after, other_frames=~invisible & ~after)
        gt = np.asarray(s.boxes, float)
        has_box = np.isfinite(gt).all(axis=1) & (np.nan_to_num(gt[:, 2]) > 0) & (np.nan_to_num(gt[:, 3]) > 0)
        for cat, mask in masks.items():
            mask = mask.copy()
            mask[0] = False
            if not mask.any():
                continue
            entry = cats.setdefault(cat, {"flagged": 0, "sequences": 0, **{t: [] for t in preds}})
            entry["flagged"] += int(mask.sum())
            entry["sequences"] += 1
            keep = mask & has_box
            for t in preds:
                p = preds[t][s.name]
                gc, pc = gt[keep, :2] + (gt[keep, 2:] - 1) / 2, p[keep, :2] + (p[keep, 2:] - 1) / 2
                entry[t].append(np.stack([_iou(p[keep], gt[keep]), np.hypot(*(pc - gc).T)], axis=1))
    assert sorted(hard) == sorted(cats) and "after_reappearance" in cats
    for cat, entry in cats.items():
        assert hard[cat]["flagged"] == entry["flagged"] and hard[cat]["sequences"] == entry["sequences"]
        for t in preds:
            pooled = np.concatenate(entry[t])
            assert hard[cat]["scored"] == len(pooled)
            got = hard[cat]["trackers"][t]
            if not len(pooled):
                assert got["auc"] is None
                continue
            auc = (pooled[:, :1] > THRESHOLDS[None]).mean(0).mean() * 100
            np.testing.assert_allclose([got["auc"], got["precision"], got["ao"]],
                                       [auc, (pooled[:, 1] <= 20).mean() * 100, pooled[:, 0].mean() * 100],
                                       atol=1e-9)
    assert "after_reappearance" in (out / "hard_frames.md").read_text()

    # ---- token division (LaSOT twin): per layer over all frames and per frame category
    if fmt == "lasot":
        division = json.loads((out / "division.json").read_text())["near"]
        assert division["layers"] == [2, 5, 7]
        stacked = np.concatenate([d[1:] for d in divisions.values()])
        np.testing.assert_allclose(division["all"], stacked.mean(axis=0), atol=1e-6)
        for cat in ("after_reappearance", "other_frames"):
            rows = []
            for s in seqs:
                flags = files[s.name][1]
                invisible = flags["full_occlusion"] | flags["out_of_view"]
                after = _reappear(invisible, REAPPEAR)
                mask = after if cat == "after_reappearance" else ~invisible & ~after
                mask[0] = False
                rows.append(divisions[s.name][mask])
            np.testing.assert_allclose(division["per_category"][cat]["mean"], np.concatenate(rows).mean(0),
                                       atol=1e-6)
        assert (out / "division.png").is_file() and (out / "division.pdf").is_file()


def test_missing_attribute_files_give_the_overall_report_and_one_line(twins, tmp_path, capsys):
    import shutil

    from grm_jax.cli import analyze as cli

    root, seqs = twins["lasot"]
    copy = tmp_path / "lasot"
    shutil.copytree(root, copy)
    shutil.rmtree(copy / "annos")
    _write_trackers(tmp_path, seqs)
    out = tmp_path / "report"
    assert cli.main(["--dataset", "lasot", "--dataset-root", str(copy), "--only-existing", "--tracker",
                     f"near={tmp_path / 'near'}", "--out", str(out), "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert sum(line.startswith("no attributes:") for line in printed.splitlines()) == 1
    assert (out / "summary.md").is_file() and not (out / "attributes.csv").exists()
    # a sequence without its attribute row is left out of the attribute tables and named
    shutil.copytree(root / "annos", copy / "annos")
    (copy / "annos" / "att" / f"{seqs[0].name}.txt").unlink()
    # extra whitespace and commas are read; a value other than 0/1 is named with its file
    path = copy / "annos" / "att" / f"{seqs[1].name}.txt"
    path.write_text("  " + " , ".join(path.read_text().strip().split(",")) + " ,\n\n")
    assert cli.main(["--dataset", "lasot", "--dataset-root", str(copy), "--only-existing", "--tracker",
                     f"near={tmp_path / 'near'}"]) == 0
    assert f"without an attribute file, left out of the attribute tables: {seqs[0].name}" in capsys.readouterr().out
    path.write_text("0,1,0,0,0,0,0,0,0,2,0,0,1,0\n")
    assert cli.main(["--dataset", "lasot", "--dataset-root", str(copy), "--only-existing", "--tracker",
                     f"near={tmp_path / 'near'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "0/1" in err[0]


def test_duplicate_tracker_names_and_short_results_give_one_line(twins, tmp_path, capsys):
    from grm_jax.cli import analyze as cli

    root, seqs = twins["lasot"]
    _write_trackers(tmp_path, seqs)
    base = ["--dataset", "lasot", "--dataset-root", str(root), "--only-existing"]
    assert cli.main(base + ["--tracker", f"x={tmp_path / 'near'}", "--tracker", f"x={tmp_path / 'far'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "given more than once: x" in err[0]
    # folder names as tracker names collide too
    assert cli.main(base + ["--tracker", str(tmp_path / "near"), "--tracker", f"near={tmp_path / 'far'}"]) == 2
    assert "near" in capsys.readouterr().err
    short = tmp_path / "near" / f"{seqs[0].name}.txt"
    short.write_text("\n".join(short.read_text().splitlines()[:5]) + "\n")
    assert cli.main(base + ["--tracker", f"near={tmp_path / 'near'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(short) in err[0] and "5 result rows" in err[0]


def test_short_results_outside_lasot_are_padded_and_said(twins, tmp_path, capsys):
    from grm_jax.cli import analyze as cli

    root, seqs = twins["otb"]
    _write_trackers(tmp_path, seqs)
    short = tmp_path / "near" / f"{seqs[0].name}.txt"
    short.write_text("\n".join(short.read_text().splitlines()[:5]) + "\n")
    assert cli.main(["--dataset", "otb", "--dataset-root", str(root), "--only-existing", "--tracker",
                     f"near={tmp_path / 'near'}"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and str(short) in notes[0]


def test_bootstrap_intervals_are_reproducible_and_written(twins, tmp_path, capsys):
    from grm_jax.cli import analyze as cli
    from grm_jax.evaluation.metrics import bootstrap_mean_difference

    root, seqs = twins["lasot"]
    _write_trackers(tmp_path, seqs)
    argv = ["--dataset", "lasot", "--dataset-root", str(root), "--only-existing", "--tracker",
            f"near={tmp_path / 'near'}", "--tracker", f"far={tmp_path / 'far'}", "--reference", "near",
            "--resamples", "2000", "--seed", "3", "--no-plots"]
    runs = []
    for k in range(2):
        assert cli.main(argv + ["--out", str(tmp_path / f"r{k}")]) == 0
        runs.append(json.loads((tmp_path / f"r{k}" / "intervals.json").read_text()))
    assert runs[0] == runs[1] and runs[0]["resamples"] == 2000 and runs[0]["level"] == 0.95
    auc = next(r for r in runs[0]["rows"] if r["metric"] == "AUC")
    per = {}
    with open(tmp_path / "r0" / "per_sequence.csv") as fh:
        for row in csv.DictReader(fh):
            per.setdefault(row["tracker"], {})[row["sequence"]] = float(row["auc"])
    assert auc["difference"] == pytest.approx(np.mean([per["far"][n] - per["near"][n] for n in per["near"]]),
                                              abs=2e-3)
    assert auc["low"] < auc["difference"] < auc["high"] and auc["significant"]
    assert "n.s." in (tmp_path / "r0" / "intervals.md").read_text() or auc["significant"]
    capsys.readouterr()
    # the same seed gives the same interval, another seed another one; 0 inside reads as not significant
    rng = np.random.default_rng(0)
    a, b = rng.normal(50, 5, 30), rng.normal(50, 5, 30)
    one = bootstrap_mean_difference(a, b, resamples=500, seed=1)
    assert one == bootstrap_mean_difference(a, b, resamples=500, seed=1)
    assert one != bootstrap_mean_difference(a, b, resamples=500, seed=2)
    assert one["low"] < 0 < one["high"] and not one["significant"]


def test_bootstrap_interval_coverage_by_simulation():
    """Two trackers whose per-sequence scores differ by a known mean (0.8 points) plus sequence noise: over 1000
    simulated benchmarks of 80 sequences the 95 % interval (1000 resamples) must cover 0.8 in 91.5-96.5 % of them.
    The percentile bootstrap covers about 94 % here (measured over several simulation seeds: 92.8-94.7 %); with
    1000 draws the standard error of the observed rate is 0.75 point, so each bound is 3.3 standard errors from
    94 %: a chance failure is a < 1e-3 event (and the seeds are fixed, so the test is deterministic)."""
    from grm_jax.evaluation.metrics import bootstrap_mean_difference

    rng = np.random.default_rng(12345)
    true_difference = 0.8
    covered = 0
    trials = 1000
    for k in range(trials):
        base = rng.normal(60, 10, 80)                        # sequence difficulty, shared by both trackers
        other = base + true_difference + rng.normal(0, 2.0, 80)
        iv = bootstrap_mean_difference(other, base, resamples=1000, seed=k)
        covered += iv["low"] <= true_difference <= iv["high"]
    assert 0.915 <= covered / trials <= 0.965, covered / trials


def test_synthetic_occlusion_and_attributes_follow_the_rendering():
    from data_pipeline.synthetic import make_sequence, sequence_attributes

    checked = 0
    for k in range(12):
        seq = make_sequence(np.random.default_rng(k), 48, 96, 72, occlusion=k % 2 == 0, out_of_view=k % 3 == 0)
        hidden = replace(seq, texture=np.zeros_like(seq.texture))
        found = sequence_attributes(seq)
        assert found["FOC"] == bool(seq.full_occlusion.any()) and found["OV"] == bool(seq.out_of_view.any())
        for t in range(len(seq)):
            same = np.array_equal(seq.render(t), hidden.render(t))
            # a fully occluded or out-of-view object leaves no pixel in the frame; a visible one does
            assert same == (bool(seq.full_occlusion[t]) or bool(seq.out_of_view[t])), (k, t)
            checked += int(seq.full_occlusion[t])
    assert checked > 0


def test_demo_report_shows_attributes_division_and_the_interval(tmp_path, monkeypatch, capsys):
    """grm-demo's reporting, with training and tracking replaced by result files written here."""
    from data_pipeline.synthetic import write_dataset
    from grm_jax.cli import demo
    from grm_jax.evaluation.datasets import load_eval_dataset
    from grm_jax.evaluation.raw_results import write_division, write_result

    def small_data(data, seed):
        write_dataset("lasot", data / "lasot", 6, split="test", seed=seed + 2, num_frames=(30, 40),
                      image_size=(96, 72))
        return {"GOT10K": data / "got10k", "LASOT": data / "lasot"}

    commands = []

    def fake_run(cmd, step):
        commands.append(cmd)
        if "grm_jax.cli.track" in cmd:
            workdir = cmd[cmd.index("--workdir") + 1]
            rng = np.random.default_rng(0)
            for s in load_eval_dataset("lasot", tmp_path / "demo" / "data" / "lasot", only_existing=True):
                write_result(workdir, s.dataset, s.name, _prediction(s, rng, 1.0))
                write_division(workdir, s.dataset, s.name, np.vstack([np.full((1, 3), np.nan),
                                                                      np.full((len(s.boxes) - 1, 3), 0.25)]),
                               [1, 2, 3])

    monkeypatch.setattr(demo, "make_data", small_data)
    monkeypatch.setattr(demo, "run", fake_run)
    assert demo.main(["--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    track = next(c for c in commands if "grm_jax.cli.track" in c)
    assert "--record-division" in track
    assert "attributes: " in out and "| attribute | sequences | tracker | AUC | Prec@20 |" in out
    assert "block 1: 0.250, block 2: 0.250, block 3: 0.250" in out
    assert "95 % bootstrap interval" in out
    overview = tmp_path / "demo" / "analysis" / "attributes_overview.png"
    assert f"attribute overview: {overview}" in out and overview.is_file()


def test_nfs_occlusion_group_comes_from_the_official_table(tmp_path):
    from data_pipeline.synthetic import write_dataset
    from grm_jax.evaluation.attributes import read_attributes
    from grm_jax.evaluation.datasets import load_eval_dataset

    write_dataset("nfs", tmp_path, names=["nfs_Skydiving", "nfs_Gymnastics"], num_frames=20, image_size=(64, 48))
    seqs = load_eval_dataset("nfs", tmp_path, only_existing=True)
    found, message = read_attributes("nfs", tmp_path, seqs)
    assert found.groups == {"OCC": ["nfs_Skydiving"]} and "occlusion flag" in message
    none, message = read_attributes("nfs", tmp_path, [s for s in seqs if s.name == "nfs_Gymnastics"])
    assert none is None and message.startswith("no attributes:")


def test_avist_flags_and_missing_attributes(synthetic_benchmark):
    from grm_jax.evaluation.analysis import TrackerResults, analyze
    from grm_jax.evaluation.attributes import frame_flags, read_attributes

    root, seqs = synthetic_benchmark("avist", only_existing=True, num_sequences=4, num_frames=(30, 40),
                                     image_size=(96, 72), seed=3)
    none, message = read_attributes("avist", root, seqs)
    assert none is None and message.startswith("no attributes:") and "\n" not in message
    flagged = 0
    for s in seqs:
        flags = frame_flags(s)
        occ = _read_flags(root / "full_occlusion" / f"{s.name}_full_occlusion.txt") == 1
        oov = _read_flags(root / "out_of_view" / f"{s.name}_out_of_view.txt") == 1
        np.testing.assert_array_equal(flags["full_occlusion"], occ)
        np.testing.assert_array_equal(flags["out_of_view"], oov)
        flagged += int(occ[1:].sum() + oov[1:].sum())
    assert flagged > 0
    rng = np.random.default_rng(2)
    report = analyze(seqs, [TrackerResults("t", {s.name: _prediction(s, rng, 1.0) for s in seqs})], "avist")
    assert sum(report.hard_frames[c]["flagged"] for c in ("full_occlusion", "out_of_view")
               if c in report.hard_frames) == flagged

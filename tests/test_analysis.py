"""Raw-result files, analysis tables/plots over several trackers, submission archives."""
import zipfile

import numpy as np
import pytest

from grm_jax.evaluation import metrics as M
from grm_jax.evaluation.raw_results import RawResultError, read_result, read_times, result_path, write_result
from grm_jax.evaluation.submission import SubmissionError, pack_got10k, pack_trackingnet


def test_raw_result_round_trip_official_format(tmp_path):
    boxes = np.array([[10.0, 20.0, 30.0, 40.0], [10.9, -3.7, 31.2, 39.99], [0.2, 5.5, 10.0, 10.0]])
    p = write_result(tmp_path, "got10k", "GOT-10k_Test_000001", boxes, times=[0.5, 0.01, 0.02])
    assert p == tmp_path / "got10k" / "GOT-10k_Test_000001.txt"
    assert p.read_text() == "10,20,30,40\n10,-3,31,39\n0,5,10,10\n"     # truncation toward zero, %d
    assert (tmp_path / "got10k" / "GOT-10k_Test_000001_time.txt").read_text().splitlines()[1] == "0.010000"
    np.testing.assert_array_equal(read_result(p), np.trunc(boxes))
    np.testing.assert_allclose(read_times(p.with_name("GOT-10k_Test_000001_time.txt")), [0.5, 0.01, 0.02])
    # flat layout (no time file) for other datasets
    q = write_result(tmp_path, "lasot", "airplane-1", boxes, times=[1, 2, 3])
    assert q == result_path(tmp_path, "lasot", "airplane-1") == tmp_path / "airplane-1.txt"
    assert not (tmp_path / "airplane-1_time.txt").exists()


def test_reader_accepts_published_formats_and_names_bad_files(tmp_path):
    (tmp_path / "tab.txt").write_text("1.5\t2.25\t30\t40\n3\t4\t5\t6\n")
    np.testing.assert_array_equal(read_result(tmp_path / "tab.txt"), [[1.5, 2.25, 30, 40], [3, 4, 5, 6]])
    (tmp_path / "bad.txt").write_text("1,2,3,4\n1,2,x,4\n")
    with pytest.raises(RawResultError, match=r"bad\.txt:2"):
        read_result(tmp_path / "bad.txt")
    (tmp_path / "short.txt").write_text("1,2,3\n")
    with pytest.raises(RawResultError, match="short.txt:1: expected 4 values"):
        read_result(tmp_path / "short.txt")
    with pytest.raises(RawResultError, match="not found"):
        read_result(tmp_path / "missing.txt")


@pytest.fixture(scope="module")
def otb_twin(synthetic_benchmark):
    return synthetic_benchmark("otb", only_existing=True, num_sequences=3, num_frames=(15, 25), image_size=(96, 72),
                               seed=5)


def test_analyze_cli_two_trackers(tmp_path, otb_twin, capsys):
    from grm_jax.cli import analyze as analyze_script
    root, seqs = otb_twin
    rng = np.random.default_rng(1)
    preds = {"good": {}, "bad": {}}
    for s in seqs:
        for name, noise in (("good", 1.0), ("bad", 8.0)):
            p = s.boxes + rng.normal(0, noise, s.boxes.shape)
            p[:, 2:] = np.maximum(p[:, 2:], 2)
            preds[name][s.name] = np.trunc(p)
            sep = "\t" if name == "bad" else ","           # published results are often tab-separated floats
            d = tmp_path / name
            d.mkdir(exist_ok=True)
            np.savetxt(d / f"{s.name}.txt", p if name == "bad" else np.trunc(p), delimiter=sep,
                       fmt="%.3f" if name == "bad" else "%d")
    out = tmp_path / "report"
    assert analyze_script.main(["--dataset", "otb", "--dataset-root", str(root), "--only-existing",
                                "--tracker", f"good={tmp_path / 'good'}", "--tracker", f"bad={tmp_path / 'bad'}",
                                "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| good |" in table and "| bad |" in table
    for f in ("summary.md", "summary.csv", "summary.json", "per_sequence.csv", "success_plot.png",
              "precision_plot.png", "norm_precision_plot.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    import json
    summary = json.loads((out / "summary.json").read_text())
    expected = M.summarize(M.evaluate_ope(seqs, {"good": preds["good"]}))["good"]
    assert abs(summary["overall"]["good"]["auc"] - expected["auc"]) < 1e-9
    assert summary["overall"]["good"]["auc"] > summary["overall"]["bad"]["auc"]
    assert set(summary["per_sequence"]["good"]) == {s.name for s in seqs}


def test_submission_archives(tmp_path):
    got = tmp_path / "got10k"
    for i in (1, 2):
        write_result(tmp_path, "got10k", f"GOT-10k_Test_00000{i}", [[1.7, 2, 3, 4], [5, 6, 7, 8.9]], [0.1, 0.2])
    (got / "all_boxes.txt").write_text("ignored\n")
    z = pack_got10k(got, tmp_path / "got10k_submit.zip", expected=["GOT-10k_Test_000001", "GOT-10k_Test_000002"])
    with zipfile.ZipFile(z) as zf:
        names = sorted(zf.namelist())
        assert names == ["GOT-10k_Test_000001/GOT-10k_Test_000001_001.txt",
                         "GOT-10k_Test_000001/GOT-10k_Test_000001_time.txt",
                         "GOT-10k_Test_000002/GOT-10k_Test_000002_001.txt",
                         "GOT-10k_Test_000002/GOT-10k_Test_000002_time.txt"]
        assert zf.read(names[0]).decode() == "1,2,3,4\n5,6,7,8\n"
    with pytest.raises(SubmissionError, match="GOT-10k_Test_000003"):
        pack_got10k(got, tmp_path / "x.zip", expected=["GOT-10k_Test_000003"])
    tn = tmp_path / "tn"
    write_result(tn, "trackingnet", "abc_1", [[1, 2, 3, 4]], [0.1])
    z = pack_trackingnet(tn / "trackingnet", tmp_path / "trackingnet_submit.zip")
    with zipfile.ZipFile(z) as zf:
        assert zf.namelist() == ["abc_1.txt"]
    with pytest.raises(SubmissionError, match="results folder not found"):
        pack_trackingnet(tmp_path / "does_not_exist", tmp_path / "y.zip")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SubmissionError, match="no <sequence>.txt"):
        pack_trackingnet(tmp_path / "empty", tmp_path / "y.zip")


@pytest.mark.parametrize("fmt,name", [("lasot_test", "lasot"), ("uav", "uav"), ("avist", "avist"), ("nfs", "nfs"),
                                      ("tnl2k", "tnl2k"), ("got10k_val", "got10k_val")])
def test_analysis_on_every_scored_benchmark_twin(tmp_path, fmt, name):
    """Perfect predictions (the GT, zero rows replaced as a tracker would) score the maximum on each twin."""
    from data_pipeline.synthetic import write_dataset
    from grm_jax.evaluation.analysis import TrackerResults, analyze
    from grm_jax.evaluation.datasets import load_eval_dataset
    write_dataset(fmt, tmp_path, num_sequences=2, num_frames=(10, 14), image_size=(64, 48), seed=2)
    seqs = load_eval_dataset(name, tmp_path, only_existing=True)
    perfect = {}
    for s in seqs:
        p = np.nan_to_num(s.boxes.copy(), nan=0.0)
        p[(p[:, 2] <= 0) | (p[:, 3] <= 0)] = [0, 0, 1, 1]
        perfect[s.name] = p
    report = analyze(seqs, [TrackerResults("perfect", perfect)], name)
    o = report.overall["perfect"]
    assert o["ao"] == pytest.approx(100.0)
    # success at threshold 0 counts only valid frames as hits; AVisT divides by all frames
    assert (o["success_curve"][0] <= 100.0 + 1e-4) and o["success_curve"][0] > 50
    if name == "got10k_val":
        assert report.got10k["perfect"]["ao"] == pytest.approx(1.0)


def test_analysis_refuses_server_scored_test_sets(tmp_path):
    from data_pipeline.synthetic import write_dataset
    from grm_jax.evaluation.analysis import TrackerResults, analyze
    from grm_jax.evaluation.datasets import load_eval_dataset
    write_dataset("got10k_test", tmp_path, num_sequences=1, num_frames=5, image_size=(64, 48), seed=1)
    seqs = load_eval_dataset("got10k_test", tmp_path)
    with pytest.raises(M.MetricsError, match="pack_submission"):
        analyze(seqs, [TrackerResults("t", {seqs[0].name: np.ones((5, 4))})], "got10k_test")

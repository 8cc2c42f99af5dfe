"""Metrics against the official analysis (metrics.npz), torch's float32 averaging, and the got10k toolkit."""
import numpy as np
import pytest

from grm_jax.evaluation import metrics as M
from grm_jax.parity.evaluation import METRICS_TOL, metrics_errors


@pytest.fixture(scope="module")
def metrics_npz(parity_bundle):
    return np.load(parity_bundle / "metrics.npz")


def test_metrics_fixture_within_tolerance(metrics_npz):
    errors = metrics_errors(metrics_npz)
    bad = {k: v for k, v in errors.items() if not v <= METRICS_TOL}
    assert not bad, bad
    # the overall numbers are bit-identical to the official float32 values
    assert errors["all/auc"] == 0.0 and errors["all/precision20"] == 0.0 and errors["all/norm_precision020"] == 0.0


def test_official_quirks_reproduced(metrics_npz):
    # UAV sequence: invalid (NaN) frames count as hits for precision, denominator = valid frames -> above 1
    e = M.sequence_errors(metrics_npz["seq1/pred"], metrics_npz["seq1/gt"], "uav")
    c = M.sequence_curves(e)
    assert c.precision.max() > 1.0
    assert np.array_equal(c.precision, metrics_npz["seq1/precision_curve"])
    assert M.OVERLAP_THRESHOLDS[15] == 0.7500000000000001 and M.OVERLAP_THRESHOLDS[10] == 0.5
    # short OTB result is padded with zero boxes (which never overlap); LaSOT refuses a short result
    gt = metrics_npz["seq4/gt"]
    e4 = M.sequence_errors(metrics_npz["seq4/pred"], gt, "otb")
    assert len(e4.overlap) == len(gt) and np.all(e4.overlap[len(metrics_npz["seq4/pred"]):] <= 0)
    with pytest.raises(M.MetricsError, match="LaSOT"):
        M.sequence_errors(gt[:10], gt, "lasot", np.ones(len(gt)))
    with pytest.raises(M.MetricsError, match="NaN"):
        M.sequence_errors(gt, np.where(np.arange(len(gt))[:, None] == 3, np.nan, gt), "otb", name="x")


def test_zero_size_prediction_replaced_by_previous():
    gt = np.tile([10.0, 10.0, 20.0, 20.0], (4, 1))
    pred = gt.copy()
    pred[1] = [30, 30, 20, 20]
    pred[2] = [0, 0, 0, 0]
    e = M.sequence_errors(pred, gt, "otb")
    assert e.overlap[2] == e.overlap[1] < 1.0


@pytest.mark.parametrize("shape,axis", [((5, 1, 21), 0), ((1, 21), -1), ((3, 2, 51), 0), ((280, 1, 21), 0),
                                        ((1, 51), -1), ((7,), 0), ((4000,), 0)])
def test_torch_order_mean_is_bit_exact(shape, axis):
    torch = pytest.importorskip("torch")
    if torch.backends.cpu.get_cpu_capability() != "AVX2":
        pytest.skip("the emulated summation order is torch's AVX2 kernel")
    rng = np.random.default_rng(sum(shape))
    for dtype in (np.float32, np.float64):
        x = (rng.random(shape) * 37).astype(dtype)
        assert np.array_equal(M.torch_mean(x, axis), torch.tensor(x).mean(axis).numpy())


def _noisy_predictions(gt, rng, scale=6.0):
    pred = gt + rng.normal(0, scale, gt.shape)
    pred[:, 2:] = np.maximum(pred[:, 2:], 1.0)
    return np.round(pred)


def test_success_auc_matches_got10k_toolkit_otb():
    """Sequence-averaged IoU success curve / AUC and precision equal the got10k toolkit's OTB evaluation."""
    pytest.importorskip("shapely")
    from got10k.experiments.otb import ExperimentOTB
    from got10k.utils.metrics import center_error, rect_iou

    exp = ExperimentOTB.__new__(ExperimentOTB)   # the constructor would download OTB
    exp.nbins_iou, exp.nbins_ce = 21, 51
    rng = np.random.default_rng(7)
    gts, preds, succ, prec = [], {}, [], []
    for i, n in enumerate([40, 25, 60, 33]):
        xy = np.cumsum(rng.normal(0, 3, (n, 2)), axis=0) + 100
        wh = np.abs(rng.normal(40, 5, (n, 2))) + 5
        gt = np.round(np.concatenate([xy, wh], 1))
        pred = _noisy_predictions(gt, rng, scale=3.0 + 3 * i)
        pred[0] = gt[0]
        gts.append(M.GroundTruth(f"s{i}", gt, "otb"))
        preds[f"s{i}"] = pred
        s, p = exp._calc_curves(rect_iou(pred.copy(), gt.copy()), center_error(pred, gt))
        succ.append(s)
        prec.append(p)
    ours = M.summarize(M.evaluate_ope(gts, {"t": preds}))["t"]
    ref_succ = np.mean(succ, axis=0) * 100
    np.testing.assert_allclose(ours["success_curve"], ref_succ, atol=1e-4)
    assert abs(ours["auc"] - np.mean(ref_succ)) < 1e-4
    assert abs(ours["precision"] - np.mean(prec, axis=0)[20] * 100) < 1e-4
    assert ours["auc"] > 5  # not a degenerate all-zero case


def test_got10k_ao_sr_match_toolkit(tmp_path):
    """AO / SR0.5 / SR0.75 on a synthetic GOT-10k val set equal ExperimentGOT10k.report on the same boxes."""
    pytest.importorskip("shapely")
    from got10k.experiments import ExperimentGOT10k

    from data_pipeline.synthetic import write_dataset
    from grm_jax.evaluation.analysis import TrackerResults, analyze
    from grm_jax.evaluation.datasets import load_eval_dataset

    root = tmp_path / "got10k"
    write_dataset("got10k_val", root, num_sequences=3, num_frames=(12, 20), image_size=(96, 64), seed=3)
    seqs = load_eval_dataset("got10k_val", root)
    rng = np.random.default_rng(0)
    results = {}
    for s in seqs:
        pred = _noisy_predictions(s.boxes, rng, 4.0)
        pred[0] = s.boxes[0]
        pred[1, 0] = -15.0            # off the image: the toolkit bounds boxes to the resolution
        results[s.name] = pred
        d = tmp_path / "results" / "GOT-10k" / "ours" / s.name
        d.mkdir(parents=True)
        np.savetxt(d / f"{s.name}_001.txt", pred, fmt="%.4f", delimiter=",")
        np.savetxt(d / f"{s.name}_time.txt", np.full(len(pred), 0.01), fmt="%f")  # the toolkit needs one
    exp = ExperimentGOT10k(str(root), subset="val", result_dir=str(tmp_path / "results"),
                           report_dir=str(tmp_path / "reports"))
    exp.repetitions = 1
    perf = exp.report(["ours"])["ours"]["overall"]
    report = analyze(seqs, [TrackerResults("ours", results)], "got10k_val")
    ours = report.got10k["ours"]
    assert abs(ours["ao"] - perf["ao"]) < 1e-12
    assert abs(ours["sr50"] - perf["sr"]) < 1e-12
    np.testing.assert_allclose(ours["success_curve"], perf["succ_curve"], atol=1e-12)
    assert 0.05 < ours["ao"] < 0.99

"""Benchmark analysis of raw results from any number of trackers: tables (Markdown, CSV, JSON) and plots.

`analyze(sequences, trackers)` computes the official OPE numbers (`lib/test/analysis/extract_results.py:
extract_results`) per sequence and overall for every tracker, plus GOT-10k AO / SR0.5 / SR0.75 (the GOT-10k
toolkit's rules, `got10k/experiments/got10k.py: ExperimentGOT10k`) when the sequences carry GOT-10k cover labels.
`write_report(report, out_dir)` writes `summary.md/.csv/.json`, `per_sequence.csv` and success / precision /
normalised-precision plots as PNG.
"""
from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence as Seq

import numpy as np

from . import metrics as M
from .raw_results import read_results

__all__ = ["TrackerResults", "Report", "analyze", "write_report", "got10k_info"]


@dataclass
class TrackerResults:
    name: str
    boxes: Mapping[str, np.ndarray]   # sequence name -> (T, 4)


@dataclass
class Report:
    dataset: str
    trackers: list[str]
    sequences: list[str]
    ope: M.OPEResults
    overall: dict                     # tracker -> summary dict (metrics.summarize)
    per_sequence: dict                # tracker -> {seq: {auc, precision, norm_precision, ao, ...}}
    got10k: dict = field(default_factory=dict)   # tracker -> {ao, sr50, sr75, success_curve} (when available)


def got10k_info(seq) -> tuple[np.ndarray | None, tuple[float, float] | None]:
    """(cover labels, (W, H)) of a GOT-10k sequence read next to its frames; (None, None) when absent."""
    if not len(seq.frames):
        return None, None
    folder = Path(os.path.dirname(seq.frames[0]))
    cover = getattr(seq, "cover", None)
    if cover is None and (folder / "cover.label").is_file():
        cover = np.loadtxt(folder / "cover.label", dtype=np.int64).reshape(-1)
    resolution = None
    meta = folder / "meta_info.ini"
    if meta.is_file():
        m = re.search(r"resolution:\s*\((\d+)\s*,\s*(\d+)\)", meta.read_text(errors="replace"))
        if m:
            resolution = (float(m.group(1)), float(m.group(2)))
    if resolution is None:
        import cv2
        img = cv2.imread(str(seq.frames[0]))
        if img is not None:
            resolution = (float(img.shape[1]), float(img.shape[0]))
    return cover, resolution


def _curves_of(ope: M.OPEResults, si: int, ki: int) -> dict:
    one = np.ones(1, bool)
    _, auc = M.auc_curve_and_score(ope.success[si:si + 1, ki:ki + 1], one)
    _, p20 = M.prec_curve_and_score(ope.precision[si:si + 1, ki:ki + 1], one)
    _, n20 = M.prec_curve_and_score(ope.norm_precision[si:si + 1, ki:ki + 1], one)
    return {"auc": float(auc[0]), "precision": float(p20[0]), "norm_precision": float(n20[0]),
            "op50": float(ope.success[si, ki, M.OP50_INDEX] * 100), "op75": float(ope.success[si, ki, M.OP75_INDEX] * 100),
            "ao": float(ope.avg_overlap[si, ki] * 100)}


def analyze(sequences: Seq, trackers: Seq[TrackerResults], dataset: str = "", *, avist: bool | None = None,
            skip_missing: bool = False) -> Report:
    """Metrics of several trackers on the same sequences (`grm_jax.sequence.Sequence` objects)."""
    if avist is None:
        avist = dataset.lower() == "avist" or (len(sequences) > 0 and sequences[0].dataset == "avist")
    if not trackers:
        raise ValueError("no tracker results to analyse")
    # GOT-10k test / TrackingNet publish only the first box: nothing to score locally.
    scorable = [s for s in sequences if np.isfinite(np.asarray(s.boxes)[1:]).any() or len(s.boxes) == 1]
    if not scorable:
        raise M.MetricsError(f"{dataset or 'these'} sequences have no ground truth after frame 0 "
                             "(GOT-10k test / TrackingNet are scored by their servers: use scripts/pack_submission.py)")
    ope = M.evaluate_ope(scorable, {t.name: t.boxes for t in trackers}, avist=avist, skip_missing=skip_missing)
    overall = M.summarize(ope)
    per_seq = {}
    for ki, t in enumerate(ope.trackers):
        per_seq[t] = {name: _curves_of(ope, si, ki) for si, name in enumerate(ope.sequences)
                      if ope.valid_sequence[si]}
    report = Report(dataset, list(ope.trackers), list(ope.sequences), ope, overall, per_seq)

    if all(s.dataset == "got10k" for s in scorable):
        infos = {s.name: got10k_info(s) for s in scorable}
        if all(c is not None and r is not None for c, r in infos.values()):
            for t in trackers:
                pooled = []
                for s in scorable:
                    if s.name not in t.boxes:
                        continue
                    cover, res = infos[s.name]
                    ious = M.got10k_sequence_ious(t.boxes[s.name], s.boxes, cover, res, s.name)
                    pooled.append(ious)
                    per_seq[t.name].setdefault(s.name, {})
                    if len(ious):
                        sc = M.got10k_scores(ious)
                        per_seq[t.name][s.name].update(got10k_ao=sc["ao"] * 100, got10k_sr50=sc["sr50"] * 100)
                report.got10k[t.name] = M.got10k_scores(np.concatenate(pooled))
    return report


def load_tracker_results(name: str, results_dir: str | os.PathLike, sequences: Seq, *,
                         missing_ok: bool = False) -> TrackerResults:
    by_dataset: dict[str, list[str]] = {}
    for s in sequences:
        by_dataset.setdefault(s.dataset, []).append(s.name)
    boxes = {}
    for ds, names in by_dataset.items():
        boxes.update(read_results(results_dir, ds, names, missing_ok=missing_ok))
    return TrackerResults(name, boxes)


# -------------------------------------------------------------------------------------------- writing
_SUMMARY_COLUMNS = [("auc", "AUC"), ("precision", "Prec@20"), ("norm_precision", "NormPrec@0.2"), ("op50", "OP50"),
                    ("op75", "OP75"), ("ao", "AO")]


def summary_rows(report: Report) -> list[dict]:
    rows = []
    for t in report.trackers:
        o = report.overall[t]
        row = {"tracker": t, "sequences": o["num_sequences"]}
        row.update({label: round(float(o[key]), 3) for key, label in _SUMMARY_COLUMNS})
        if t in report.got10k:
            g = report.got10k[t]
            row.update({"GOT AO": round(g["ao"] * 100, 3), "GOT SR0.5": round(g["sr50"] * 100, 3),
                        "GOT SR0.75": round(g["sr75"] * 100, 3)})
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def write_report(report: Report, out_dir: str | os.PathLike, *, plots: bool = True) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(report)
    files = {}
    title = f"# {report.dataset or 'benchmark'}: {len(report.sequences)} sequences\n\n"
    files["summary_md"] = out / "summary.md"
    files["summary_md"].write_text(title + markdown_table(rows))
    files["summary_csv"] = out / "summary.csv"
    with open(files["summary_csv"], "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    per_rows = []
    for t, seqs in report.per_sequence.items():
        for name, vals in seqs.items():
            per_rows.append({"tracker": t, "sequence": name, **{k: round(v, 3) for k, v in vals.items()}})
    files["per_sequence_csv"] = out / "per_sequence.csv"
    keys = []
    for r in per_rows:
        keys += [k for k in r if k not in keys]
    with open(files["per_sequence_csv"], "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(per_rows)
    files["per_sequence_md"] = out / "per_sequence.md"
    files["per_sequence_md"].write_text(markdown_table(per_rows) if per_rows else "")
    payload = {
        "dataset": report.dataset, "sequences": report.sequences,
        "overall": {t: {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in o.items()}
                    for t, o in report.overall.items()},
        "got10k": {t: {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in g.items()}
                   for t, g in report.got10k.items()},
        "per_sequence": report.per_sequence,
        "thresholds": {"overlap": M.OVERLAP_THRESHOLDS.tolist(), "center": M.CENTER_THRESHOLDS.tolist(),
                       "center_norm": M.NORM_CENTER_THRESHOLDS.tolist()},
    }
    files["summary_json"] = out / "summary.json"
    files["summary_json"].write_text(json.dumps(payload, indent=1))
    if plots:
        files.update(plot_curves(report, out))
    return files


def plot_curves(report: Report, out: Path) -> dict[str, Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    specs = [
        ("success", "success_curve", "auc", M.OVERLAP_THRESHOLDS, "Overlap threshold", "Success rate [%]",
         "Success plot"),
        ("precision", "precision_curve", "precision", M.CENTER_THRESHOLDS, "Location error threshold [px]",
         "Distance precision [%]", "Precision plot"),
        ("norm_precision", "norm_precision_curve", "norm_precision", M.NORM_CENTER_THRESHOLDS,
         "Normalised location error threshold", "Normalised precision [%]", "Normalised precision plot"),
    ]
    files = {}
    for tag, curve_key, score_key, x, xlabel, ylabel, title in specs:
        fig, ax = plt.subplots(figsize=(6, 5))
        order = sorted(report.trackers, key=lambda t: -report.overall[t][score_key])
        for t in order:
            o = report.overall[t]
            ax.plot(x, o[curve_key], linewidth=2, label=f"[{o[score_key]:.1f}] {t}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} - {report.dataset}" if report.dataset else title)
        ax.grid(True, alpha=0.3)
        ax.set_xlim(float(x[0]), float(x[-1]))
        ax.set_ylim(0, max(100.0, float(max(np.max(report.overall[t][curve_key]) for t in order)) + 1))
        ax.legend(loc="lower left" if tag == "success" else "lower right")
        fig.tight_layout()
        path = out / f"{tag}_plot.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        files[f"{tag}_png"] = path
    return files

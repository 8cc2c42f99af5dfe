"""Benchmark analysis of raw results from any number of trackers: tables (Markdown, CSV, JSON) and plots.

`analyze(sequences, trackers)` computes the official OPE numbers (`lib/test/analysis/extract_results.py:
extract_results`) per sequence and overall for every tracker, plus GOT-10k AO / SR0.5 / SR0.75 (the GOT-10k
toolkit's rules, `got10k/experiments/got10k.py: ExperimentGOT10k`) when the sequences carry GOT-10k cover labels.
`write_report(report, out_dir)` writes `summary.md/.csv/.json/.tex`, `per_sequence.csv` and success / precision /
normalised-precision plots (PNG and PDF).

Beyond the official numbers (each part written only when its input exists):

* per attribute (`attributes.read_attributes`): every summary metric over the sequences having the attribute
  (the LaSOT toolkit's per-attribute plots average the same way), `attributes.md/.csv/.json/.tex`, one success
  plot per attribute (`attributes/success_<attr>.png/.pdf`) and `attributes_overview.png/.pdf` (AUC per attribute
  for every tracker);
* hard frames (`hard_frame_results`): frame-pooled metrics on the frames the benchmark flags (full occlusion,
  out of view, absent, fully covered) and on the N frames after the target reappears, next to the other frames;
  definitions in `hard_frames.md`;
* token division (`division_results`): the `<seq>_division.txt` files of `grm-track --record-division`,
  summarised per layer, sequence, attribute and hard frames vs the rest (`division.md/.csv/.json`,
  `division.png/.pdf`);
* paired bootstrap confidence intervals over sequences of each metric's difference to a reference tracker
  (`metrics.bootstrap_mean_difference`; `intervals.md/.csv/.json`).
"""
from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence as Seq

import cv2
import numpy as np
# Figures made with the object-oriented API (no pyplot): no GUI backend is chosen or needed
from matplotlib.figure import Figure

from . import metrics as M
from . import attributes as A
from .raw_results import RawResultError, division_path, read_division, read_results, result_path
from ..errors import UserError

__all__ = ["TrackerResults", "Report", "analyze", "write_report", "got10k_info", "load_tracker_results",
           "check_result_lengths", "attribute_results", "hard_frame_results", "division_results",
           "bootstrap_intervals", "SUMMARY_METRICS"]


@dataclass
class TrackerResults:
    name: str
    boxes: Mapping[str, np.ndarray]   # sequence name -> (T, 4)
    division: Mapping[str, np.ndarray] = field(default_factory=dict)   # sequence -> (T, L_div), row 0 NaN
    division_layers: list = field(default_factory=list)                # block index of each division column
    folder: str = ""


@dataclass
class Report:
    dataset: str
    trackers: list[str]
    sequences: list[str]
    ope: M.OPEResults
    overall: dict                     # tracker -> summary dict (metrics.summarize)
    per_sequence: dict                # tracker -> {seq: {auc, precision, norm_precision, ao, ...}}
    got10k: dict = field(default_factory=dict)   # tracker -> {ao, sr50, sr75, success_curve} (when available)
    attributes: object = None                    # attributes.Attributes or None
    attribute_message: str = ""                  # where the attributes came from, or why there are none
    by_attribute: dict = field(default_factory=dict)   # group -> {tracker: summary} (metrics.summarize)
    hard_frames: dict = field(default_factory=dict)    # category -> {tracker: {...}} (hard_frame_results)
    reappear_frames: int = 0
    division: dict = field(default_factory=dict)       # tracker -> division_results(...)
    intervals: dict = field(default_factory=dict)      # {reference, resamples, level, seed, rows: [...]}


DEFAULT_REAPPEAR_FRAMES = 10
SUMMARY_METRICS = (("auc", "AUC"), ("precision", "Prec@20"), ("norm_precision", "NormPrec@0.2"), ("op50", "OP50"),
                   ("op75", "OP75"), ("ao", "AO"))


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


class AnalysisError(UserError, ValueError):
    """The analysis request itself is inconsistent (duplicate tracker names, an unknown reference tracker)."""


def analyze(sequences: Seq, trackers: Seq[TrackerResults], dataset: str = "", *, avist: bool | None = None,
            skip_missing: bool = False, attributes=None, attribute_message: str = "",
            reappear_frames: int = DEFAULT_REAPPEAR_FRAMES, reference: str | None = None,
            resamples: int = M.BOOTSTRAP_RESAMPLES, seed: int = 0) -> Report:
    """Metrics of several trackers on the same sequences (`grm_jax.sequence.Sequence` objects).

    `attributes` (attributes.Attributes) adds the per-attribute results; hard-frame results are computed where
    the sequences have per-frame flags (`reappear_frames` frames after each reappearance); division statistics
    where the trackers carry division files; `reference` (a tracker name) adds bootstrap intervals of every
    other tracker's difference to it (`resamples`, `seed`).
    """
    names = [t.name for t in trackers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise AnalysisError(f"tracker name(s) given more than once: {', '.join(duplicates)} (name each --tracker "
                            "NAME=DIR differently)")
    if reference is not None and reference not in names:
        raise AnalysisError(f"--reference {reference!r} is not one of the trackers ({', '.join(names)})")
    if reappear_frames < 1:
        raise AnalysisError(f"reappearance window must be >= 1 frame, got {reappear_frames}")
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

    got10k_ious: dict[str, dict[str, np.ndarray]] = {}
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
                    got10k_ious.setdefault(t.name, {})[s.name] = ious
                    per_seq[t.name].setdefault(s.name, {})
                    if len(ious):
                        sc = M.got10k_scores(ious)
                        per_seq[t.name][s.name].update(got10k_ao=sc["ao"] * 100, got10k_sr50=sc["sr50"] * 100)
                report.got10k[t.name] = M.got10k_scores(np.concatenate(pooled))

    report.attributes, report.attribute_message = attributes, attribute_message
    report.by_attribute = attribute_results(report, attributes)
    scored = {n for n, ok in zip(report.sequences, ope.valid_sequence) if ok}
    for group, per_tracker in report.by_attribute.items():   # the GOT-10k toolkit's numbers per class, pooled
        for t, ious in got10k_ious.items():
            members = [ious[n] for n in attributes.groups[group] if n in ious and n in scored]
            if members and sum(len(m) for m in members):
                sc = M.got10k_scores(np.concatenate(members))
                per_tracker[t].update(got10k_ao=sc["ao"] * 100, got10k_sr50=sc["sr50"] * 100,
                                      got10k_sr75=sc["sr75"] * 100)
    by_name = {s.name: s for s in scorable}
    used = [by_name[n] for n, ok in zip(report.sequences, ope.valid_sequence) if ok]
    report.reappear_frames = reappear_frames
    report.hard_frames = hard_frame_results(used, trackers, reappear_frames)
    for t in trackers:
        if t.division:
            report.division[t.name] = division_results(used, t, attributes, reappear_frames)
    if reference is not None and len(trackers) > 1:
        report.intervals = bootstrap_intervals(report, reference, resamples=resamples, seed=seed)
    return report


def load_tracker_results(name: str, results_dir: str | os.PathLike, sequences: Seq, *,
                         missing_ok: bool = False) -> TrackerResults:
    """A tracker's result files, and the `<seq>_division.txt` files of `grm-track --record-division` if any."""
    by_dataset: dict[str, list[str]] = {}
    for s in sequences:
        by_dataset.setdefault(s.dataset, []).append(s.name)
    boxes = {}
    for ds, names in by_dataset.items():
        boxes.update(read_results(results_dir, ds, names, missing_ok=missing_ok))
    division, layers = {}, []
    for s in sequences:
        path = division_path(results_dir, s.dataset, s.name)
        if s.name in boxes and path.is_file():
            fractions, file_layers = read_division(path)
            if len(fractions) != len(boxes[s.name]):
                raise RawResultError(f"{path}: {len(fractions)} rows but the result file has {len(boxes[s.name])}")
            if layers and file_layers != layers:
                raise RawResultError(f"{path}: layers {file_layers} differ from the other division files' {layers}")
            division[s.name], layers = fractions, file_layers
    return TrackerResults(name, boxes, division, layers, str(results_dir))


def check_result_lengths(sequences: Seq, trackers: Seq[TrackerResults]) -> list[str]:
    """Result files shorter than their sequence: an error naming the file where the official analysis refuses
    them (LaSOT; GOT-10k's toolkit), else the list of such files (the official analysis pads them with zero
    boxes; the caller says so)."""
    short = []
    for t in trackers:
        for s in sequences:
            boxes = t.boxes.get(s.name)
            if boxes is None or len(boxes) >= len(s.boxes):
                continue
            path = result_path(t.folder, s.dataset, s.name) if t.folder else Path(f"{s.name}.txt")
            if t.folder and not path.is_file():
                path = Path(t.folder) / f"{s.name}.txt"
            if s.dataset in ("lasot", "got10k"):
                raise RawResultError(f"{path}: {len(boxes)} result rows for the {len(s.boxes)} frames of {s.name} "
                                     f"(tracker {t.name}; {s.dataset} needs one row per frame)")
            short.append(f"{path} ({len(boxes)} rows, {len(s.boxes)} frames)")
    return short


# ---------------------------------------------------------------------------------- attributes / hard frames
def attribute_results(report: Report, attributes) -> dict:
    """{group: {tracker: summary}}: `metrics.summarize` over the sequences having the attribute."""
    out = {}
    if attributes is None:
        return out
    for group in attributes.groups:
        mask = attributes.mask(group, report.sequences) & report.ope.valid_sequence
        if mask.any():
            out[group] = M.summarize(report.ope, mask)
    return out


HARD_FRAME_METRICS = (("auc", "AUC"), ("precision", "Prec@20"), ("norm_precision", "NormPrec@0.2"), ("ao", "AO"))


def frame_categories(seq, reappear_frames: int) -> dict[str, np.ndarray]:
    """Per-frame masks (frame 0 excluded: its box is the given one) of the benchmark's flags, of the frames after
    reappearance and of the other frames; {} when the benchmark has no per-frame flags."""
    flags = A.frame_flags(seq)
    invisible = A.invisible_frames(flags)
    if invisible is None:
        return {}
    after = A.reappearance_frames(invisible, reappear_frames)
    cats = dict(flags)
    cats["after_reappearance"] = after
    cats["other_frames"] = ~invisible & ~after
    first = np.zeros(len(invisible), bool)
    first[0] = True
    return {k: np.asarray(v, bool) & ~first for k, v in cats.items()}


def _pooled_scores(iou: np.ndarray, center: np.ndarray, center_norm: np.ndarray) -> dict:
    if not len(iou):
        return {k: float("nan") for k, _ in HARD_FRAME_METRICS}
    success = (iou[:, None] > M.OVERLAP_THRESHOLDS[None]).mean(axis=0)
    return {"auc": float(success.mean() * 100), "precision": float((center <= 20).mean() * 100),
            "norm_precision": float((center_norm <= 0.2).mean() * 100), "ao": float(iou.mean() * 100)}


def hard_frame_results(sequences: Seq, trackers: Seq[TrackerResults], reappear_frames: int) -> dict:
    """{category: {"flagged": frames, "scored": frames with an annotated box, "sequences": n, "trackers":
    {tracker: {auc, precision, norm_precision, ao}}}}, frames of all sequences pooled.

    Per-frame errors as the official analysis computes them (first box replaced by the ground truth, short results
    padded), but every frame with a valid annotated box (w, h > 0, finite) is scored, visible or not: on the
    flagged frames that box is where the (hidden) target is annotated. AUC = mean over the 21 overlap thresholds
    of the fraction of frames with IoU > threshold; Prec@20 / NormPrec@0.2 = fraction of frames with centre error
    <= 20 px / <= 0.2 of the box size; AO = mean IoU; all x100.
    """
    cats_of = {s.name: frame_categories(s, reappear_frames) for s in sequences}
    names = []
    for cats in cats_of.values():
        names += [k for k in cats if k not in names]
    out = {}
    for cat in names:
        flagged = scored = 0
        seqs = 0
        pooled = {t.name: ([], [], []) for t in trackers}
        for s in sequences:
            mask = cats_of[s.name].get(cat)
            if mask is None or not mask.any():
                continue
            seqs += 1
            flagged += int(mask.sum())
            for ti, t in enumerate(trackers):
                gt = np.asarray(s.boxes, np.float64)
                everywhere = np.ones(len(gt), bool)
                err = M.sequence_errors(t.boxes[s.name], gt, s.dataset, everywhere if s.dataset == "lasot" else None,
                                        name=s.name)
                keep = mask & err.valid
                if ti == 0:
                    scored += int(keep.sum())
                for store, values in zip(pooled[t.name], (err.overlap, err.center, err.center_norm)):
                    store.append(values[keep])
        if not seqs:
            continue
        out[cat] = {"flagged": flagged, "scored": scored, "sequences": seqs,
                    "trackers": {t: _pooled_scores(*(np.concatenate(v) if v else np.zeros(0) for v in vals))
                                 for t, vals in pooled.items()}}
    return out


def division_results(sequences: Seq, tracker: TrackerResults, attributes, reappear_frames: int) -> dict:
    """Mean interacting fraction per dividing layer: over all tracked frames (pooled), per sequence, per attribute
    (frames of the sequences having it) and per frame category (hard frames vs the rest). Frame 0 has none."""
    layers = list(tracker.division_layers)
    per_seq, frames = {}, []
    by_cat: dict[str, list] = {}
    by_group: dict[str, list] = {}
    groups = attributes.groups if attributes is not None else {}
    for s in sequences:
        fr = tracker.division.get(s.name)
        if fr is None:
            continue
        fr = np.asarray(fr, np.float64)
        rows = fr[1:]
        rows = rows[np.isfinite(rows).all(axis=1)]
        if not len(rows):
            continue
        per_seq[s.name] = rows.mean(axis=0).tolist()
        frames.append(rows)
        for cat, mask in frame_categories(s, reappear_frames).items():
            sel = fr[mask[:len(fr)]]
            sel = sel[np.isfinite(sel).all(axis=1)]
            if len(sel):
                by_cat.setdefault(cat, []).append(sel)
        for g, members in groups.items():
            if s.name in members:
                by_group.setdefault(g, []).append(rows)
    if not frames:
        return {}
    mean = lambda parts: np.concatenate(parts).mean(axis=0).tolist()
    return {"layers": layers, "frames": int(sum(len(f) for f in frames)), "sequences": len(per_seq),
            "all": mean(frames), "per_sequence": per_seq,
            "per_attribute": {g: {"sequences": len(v), "mean": mean(v)} for g, v in by_group.items()},
            "per_category": {c: {"frames": int(sum(len(x) for x in v)), "mean": mean(v)} for c, v in by_cat.items()}}


def bootstrap_intervals(report: Report, reference: str, *, resamples: int = M.BOOTSTRAP_RESAMPLES,
                        seed: int = 0, level: float = M.BOOTSTRAP_LEVEL) -> dict:
    """Paired bootstrap intervals (over the report's sequences) of each tracker's per-sequence mean minus the
    reference's, for every summary metric. The mean of the per-sequence values is the overall number (up to the
    official float32 rounding)."""
    names = [n for n, ok in zip(report.sequences, report.ope.valid_sequence) if ok]
    rows = []
    for t in report.trackers:
        if t == reference:
            continue
        for key, label in SUMMARY_METRICS:
            a = np.array([report.per_sequence[t][n][key] for n in names])
            b = np.array([report.per_sequence[reference][n][key] for n in names])
            rows.append({"tracker": t, "metric": label,
                         **M.bootstrap_mean_difference(a, b, resamples=resamples, seed=seed, level=level)})
    return {"reference": reference, "resamples": resamples, "level": level, "seed": seed,
            "sequences": len(names), "rows": rows}


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
    files["summary_tex"] = out / "summary.tex"
    files["summary_tex"].write_text(latex_table(
        rows, [c for c in rows[0] if c != "tracker"],
        f"{report.dataset or 'Benchmark'}: overall results ({len(report.sequences)} sequences)."))
    files.update(_write_attributes(report, out))
    files.update(_write_hard_frames(report, out))
    files.update(_write_division(report, out))
    files.update(_write_intervals(report, out))
    if plots:
        files.update(plot_curves(report, out))
        files.update(plot_attributes(report, out))
        files.update(plot_division(report, out))
    return files


def _csv(path: Path, rows: list[dict]) -> Path:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    return path


def _json_ready(value):
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, (float, np.floating)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _fmt(value, digits: int = 3):
    missing = value is None or (isinstance(value, float) and not np.isfinite(value))
    return "-" if missing else round(float(value), digits)


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def latex_escape(text) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))


def latex_table(rows: list[dict], columns: list[str], caption: str, first: str = "tracker") -> str:
    """A booktabs table (needs \\usepackage{booktabs}); the best value of each numeric column in bold."""
    best = {}
    for c in columns:
        values = [r.get(c) for r in rows if isinstance(r.get(c), (int, float)) and c != "sequences"]
        if values and len(rows) > 1:
            best[c] = max(values)
    lines = [r"\begin{table}[t]", r"\centering", r"\caption{" + latex_escape(caption) + "}",
             r"\begin{tabular}{l" + "r" * len(columns) + "}", r"\toprule",
             " & ".join(latex_escape(c) for c in [first, *columns]) + r" \\", r"\midrule"]
    for r in rows:
        cells = [latex_escape(r[first])]
        for c in columns:
            v = r.get(c, "")
            if isinstance(v, float):
                text = f"{v:.1f}"
                cells.append(r"\textbf{" + text + "}" if best.get(c) == v else text)
            else:
                cells.append(latex_escape(v))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def attribute_rows(report: Report) -> list[dict]:
    rows = []
    labels = report.attributes.labels if report.attributes is not None else {}
    for group, per_tracker in report.by_attribute.items():
        for t in report.trackers:
            o = per_tracker[t]
            row = {"attribute": group, "name": labels.get(group, group), "sequences": o["num_sequences"],
                   "tracker": t}
            row.update({label: _fmt(o[key]) for key, label in SUMMARY_METRICS})
            if "got10k_ao" in o:
                row.update({"GOT AO": _fmt(o["got10k_ao"]), "GOT SR0.5": _fmt(o["got10k_sr50"]),
                            "GOT SR0.75": _fmt(o["got10k_sr75"])})
            rows.append(row)
    return rows


def _write_attributes(report: Report, out: Path) -> dict[str, Path]:
    files = {}
    if not report.by_attribute:
        if report.attribute_message:
            files["attributes_md"] = out / "attributes.md"
            files["attributes_md"].write_text(f"# Attributes\n\n{report.attribute_message}\n")
        return files
    rows = attribute_rows(report)
    att = report.attributes
    notes = [report.attribute_message]
    if att.empty:
        notes.append("Attributes no sequence here has: " + ", ".join(att.empty) + ".")
    notes.append("Each metric averaged over the sequences having the attribute, as the overall numbers over all "
                 "sequences (official rules); `sequences` = how many.")
    files["attributes_md"] = out / "attributes.md"
    files["attributes_md"].write_text(f"# {report.dataset or 'benchmark'}: results per attribute\n\n"
                                      + "\n\n".join(notes) + "\n\n" + markdown_table(rows))
    files["attributes_csv"] = _csv(out / "attributes.csv", rows)
    files["attributes_json"] = out / "attributes.json"
    files["attributes_json"].write_text(json.dumps(_json_ready({
        "source": report.attribute_message, "labels": att.labels, "missing": att.missing, "empty": att.empty,
        "sequences": att.groups,
        "results": {g: {t: {k: v for k, v in o.items()} for t, o in per.items()}
                    for g, per in report.by_attribute.items()}}), indent=1))
    # paper table: AUC overall and per attribute, trackers as rows
    table = []
    for t in report.trackers:
        row = {"tracker": t, f"All ({len(report.sequences)})": float(round(report.overall[t]["auc"], 1))}
        for g, per in report.by_attribute.items():
            row[f"{g} ({per[t]['num_sequences']})"] = float(round(per[t]["auc"], 1))
        table.append(row)
    files["attributes_tex"] = out / "attributes.tex"
    files["attributes_tex"].write_text(latex_table(
        table, [c for c in table[0] if c != "tracker"],
        f"{report.dataset or 'Benchmark'}: AUC overall and per attribute (sequences in parentheses)."))
    return files


def hard_frame_rows(report: Report) -> list[dict]:
    rows = []
    for cat, r in report.hard_frames.items():
        for t in report.trackers:
            row = {"frames": cat, "flagged": r["flagged"], "scored": r["scored"], "sequences": r["sequences"],
                   "tracker": t}
            row.update({label: _fmt(r["trackers"][t][key]) for key, label in HARD_FRAME_METRICS})
            rows.append(row)
    return rows


def _write_hard_frames(report: Report, out: Path) -> dict[str, Path]:
    if not report.hard_frames:
        return {}
    rows = hard_frame_rows(report)
    defs = dict(A.HARD_FRAME_DEFINITIONS)
    defs["after_reappearance"] = defs["after_reappearance"].replace("N frames", f"{report.reappear_frames} frames")
    defs["other_frames"] = "every other frame (not flagged, not right after a reappearance)"
    text = [f"# {report.dataset or 'benchmark'}: hard frames", "",
            "Frames of all sequences pooled; frame 0 (the given box) excluded. `flagged` = frames in the category, "
            "`scored` = those with an annotated box (w, h > 0), on which the metrics are computed: AUC = mean over "
            "the 21 overlap thresholds 0, 0.05, ..., 1 of the fraction of frames with IoU above it; Prec@20 = "
            "fraction with centre error <= 20 px; NormPrec@0.2 = centre error <= 0.2 of the annotated box size; "
            "AO = mean IoU; all x100. A category without scored frames shows '-'.", ""]
    text += [f"- `{k}`: {v}" + (f" (N = {report.reappear_frames})" if k == "after_reappearance" else "")
             for k, v in defs.items() if k in report.hard_frames]
    files = {"hard_frames_md": out / "hard_frames.md"}
    files["hard_frames_md"].write_text("\n".join(text) + "\n\n" + markdown_table(rows))
    files["hard_frames_csv"] = _csv(out / "hard_frames.csv", rows)
    files["hard_frames_json"] = out / "hard_frames.json"
    files["hard_frames_json"].write_text(json.dumps(_json_ready(
        {"reappear_frames": report.reappear_frames, "definitions": defs, "results": report.hard_frames}), indent=1))
    return files


def _write_division(report: Report, out: Path) -> dict[str, Path]:
    if not report.division:
        return {}
    layer_rows, attr_rows, seq_rows = [], [], []
    for t, d in report.division.items():
        if not d:
            continue
        for li, layer in enumerate(d["layers"]):
            row = {"tracker": t, "layer": layer, "all frames": round(d["all"][li], 4)}
            for cat, c in d["per_category"].items():
                row[cat] = round(c["mean"][li], 4)
            layer_rows.append(row)
        for g, v in d["per_attribute"].items():
            attr_rows.append({"tracker": t, "attribute": g, "sequences": v["sequences"],
                              **{f"layer {layer}": round(v["mean"][li], 4) for li, layer in enumerate(d["layers"])}})
        for name, means in d["per_sequence"].items():
            seq_rows.append({"tracker": t, "sequence": name,
                             **{f"layer {layer}": round(m, 4) for layer, m in zip(d["layers"], means)}})
    if not layer_rows:
        return {}
    text = [f"# {report.dataset or 'benchmark'}: token division", "",
            "Mean fraction of search tokens that interact with the template, per dividing layer (block index), "
            "over the tracked frames (frame 0 has no search region); columns after `all frames` restrict to the "
            "hard-frame categories of hard_frames.md and to the other frames. Per sequence: "
            "division_per_sequence.csv.", "", markdown_table(layer_rows)]
    if attr_rows:
        text += ["## Per attribute (frames of the sequences having it)", "", markdown_table(attr_rows)]
    files = {"division_md": out / "division.md"}
    files["division_md"].write_text("\n".join(text))
    files["division_csv"] = _csv(out / "division.csv", layer_rows)
    files["division_per_sequence_csv"] = _csv(out / "division_per_sequence.csv", seq_rows)
    if attr_rows:
        files["division_attributes_csv"] = _csv(out / "division_attributes.csv", attr_rows)
    files["division_json"] = out / "division.json"
    files["division_json"].write_text(json.dumps(_json_ready(report.division), indent=1))
    return files


def interval_rows(report: Report) -> list[dict]:
    rows = []
    for r in report.intervals.get("rows", []):
        rows.append({"tracker": r["tracker"], "metric": r["metric"], "difference": round(r["difference"], 3),
                     "ci_low": round(r["low"], 3), "ci_high": round(r["high"], 3),
                     "significant": "yes" if r["significant"] else "n.s."})
    return rows


def _write_intervals(report: Report, out: Path) -> dict[str, Path]:
    if not report.intervals:
        return {}
    iv = report.intervals
    rows = interval_rows(report)
    text = (f"# Differences to {iv['reference']}\n\nPaired bootstrap over the {iv['sequences']} sequences: "
            f"{iv['resamples']} resamples (seed {iv['seed']}), {iv['level'] * 100:.0f} % percentile interval of "
            f"the difference of the per-sequence means (tracker - {iv['reference']}, x100 units). `n.s.`: the "
            "interval contains 0 (no difference shown).\n\n")
    files = {"intervals_md": out / "intervals.md"}
    files["intervals_md"].write_text(text + markdown_table(rows))
    files["intervals_csv"] = _csv(out / "intervals.csv", rows)
    files["intervals_json"] = out / "intervals.json"
    files["intervals_json"].write_text(json.dumps(_json_ready(iv), indent=1))
    return files


def _save_figure(fig, path_stem: Path, key: str) -> dict[str, Path]:
    files = {}
    for ext in ("png", "pdf"):
        path = path_stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=100)
        files[f"{key}_{ext}"] = path
    return files


def plot_curves(report: Report, out: Path) -> dict[str, Path]:
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
        fig = _curve_figure(report.overall, report.trackers, curve_key, score_key, x, xlabel, ylabel,
                            f"{title} - {report.dataset}" if report.dataset else title,
                            "lower left" if tag == "success" else "lower right")
        files.update(_save_figure(fig, out / f"{tag}_plot", tag))
    return files


def _curve_figure(summaries, trackers, curve_key, score_key, x, xlabel, ylabel, title, legend):
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    order = sorted(trackers, key=lambda t: -summaries[t][score_key])
    for t in order:
        o = summaries[t]
        ax.plot(x, o[curve_key], linewidth=2, label=f"[{o[score_key]:.1f}] {t}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.set_xlim(float(x[0]), float(x[-1]))
    ax.set_ylim(0, max(100.0, float(max(np.max(summaries[t][curve_key]) for t in order)) + 1))
    ax.legend(loc=legend)
    fig.tight_layout()
    return fig


def plot_attributes(report: Report, out: Path) -> dict[str, Path]:
    """One success plot per attribute (attributes/success_<attr>) and the AUC-per-attribute overview chart."""
    if not report.by_attribute:
        return {}
    files = {}
    folder = out / "attributes"
    folder.mkdir(exist_ok=True)
    labels = report.attributes.labels
    for group, per in report.by_attribute.items():
        n = next(iter(per.values()))["num_sequences"]
        fig = _curve_figure(per, report.trackers, "success_curve", "auc", M.OVERLAP_THRESHOLDS,
                            "Overlap threshold", "Success rate [%]",
                            f"Success plot - {labels.get(group, group)} ({n})", "lower left")
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", group).strip("_")
        files.update(_save_figure(fig, folder / f"success_{safe}", f"attribute_{safe}"))
    groups = list(report.by_attribute)
    fig = Figure(figsize=(max(6.0, 0.6 * len(groups) * max(1, len(report.trackers)) ** 0.5 + 2), 4.5))
    ax = fig.subplots()
    width = 0.8 / len(report.trackers)
    x = np.arange(len(groups) + 1)
    for k, t in enumerate(report.trackers):
        values = [report.overall[t]["auc"]] + [report.by_attribute[g][t]["auc"] for g in groups]
        ax.bar(x + (k - (len(report.trackers) - 1) / 2) * width, values, width, label=t)
    counts = [len(report.sequences)] + [next(iter(report.by_attribute[g].values()))["num_sequences"] for g in groups]
    ax.set_xticks(x)
    short = len(groups) < 10 and max(len(g) for g in groups) <= 6
    ax.set_xticklabels([f"{g}\n({c})" if short else f"{g} ({c})" for g, c in zip(["All", *groups], counts)],
                       fontsize=8, rotation=0 if short else 35, ha="center" if short else "right")
    ax.set_ylabel("AUC [%]")
    ax.set_title(f"AUC per attribute - {report.dataset}" if report.dataset else "AUC per attribute")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    files.update(_save_figure(fig, out / "attributes_overview", "attributes_overview"))
    return files


def plot_division(report: Report, out: Path) -> dict[str, Path]:
    """Interacting fraction per dividing layer: all frames and each frame category, one panel per tracker."""
    trackers = [t for t, d in report.division.items() if d]
    if not trackers:
        return {}
    fig = Figure(figsize=(5 * len(trackers), 4))
    axes = fig.subplots(1, len(trackers), squeeze=False)
    for ax, t in zip(axes[0], trackers):
        d = report.division[t]
        ax.plot(d["layers"], d["all"], "k-o", linewidth=2, label=f"all frames ({d['frames']})")
        for cat, c in d["per_category"].items():
            ax.plot(d["layers"], c["mean"], "--o", label=f"{cat} ({c['frames']})")
        ax.set_xlabel("dividing layer (block index)")
        ax.set_ylabel("interacting fraction of search tokens")
        ax.set_ylim(0, 1.02)
        ax.set_title(t)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save_figure(fig, out / "division", "division")

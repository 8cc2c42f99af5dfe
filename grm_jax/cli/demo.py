#!/usr/bin/env python
"""The main job on bundled data: generate a synthetic tracking dataset, train a small GRM on it, track held-out
sequences, and compare with a trivial baseline (the first box held still).

    grm-demo [--out results/demo] [--steps 1600] [--seed 0]

Everything runs on the CPU with data the project generates (nothing is downloaded). Rerunning resumes: the data is
reused, training continues from its last checkpoint, tracked sequences are skipped. Writes, under --out:
  data/                 the synthetic datasets (GOT-10k-like and LaSOT-like training sets, a LaSOT-like test set)
  train/                orbax checkpoints, TensorBoard logs, config
  raw/<tracker>/        raw results in the official format (one <seq>.txt per sequence)
  analysis/             summary.md/.csv/.json/.tex, per_sequence.csv/.md, success/precision plots (PNG, PDF);
                        results per attribute (attributes.md/.tex, attributes_overview.png, one success plot per
                        attribute), on hard frames (hard_frames.md), the token-division statistics of the GRM run
                        (division.md, division.png) and the bootstrap interval of GRM - baseline (intervals.md)
  video_<seq>.mp4       one annotated sequence (green: ground truth, red: GRM-JAX)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from data_pipeline.synthetic import write_dataset
from grm_jax.cli import run_command, run_reporting_user_errors
from grm_jax.evaluation.analysis import (TrackerResults, analyze, attribute_rows, load_tracker_results, markdown_table,
                                         write_report)
from grm_jax.evaluation.attributes import read_attributes
from grm_jax.evaluation.datasets import load_eval_dataset
from grm_jax.evaluation.raw_results import write_result
from grm_jax.sequence import read_frame
from grm_jax.validation import positive_int, seed


CONFIG = "demo_tiny"
EVAL_DATASET = "lasot"
GRM_NAME = "GRM-JAX (demo)"
BASELINE_NAME = "static first box"

# Sizes of the generated data: enough variety for a small model to learn tracking in minutes.
TRAIN_SEQUENCES = 40
TRAIN_FRAMES = (60, 90)
EVAL_SEQUENCES = 8
EVAL_FRAMES = (80, 120)
IMAGE_SIZE = (320, 240)


class DemoStepError(RuntimeError):
    """A step of the demo (a grm-* program it runs) failed; that program has printed its own error."""


def run(cmd: list[str], step: str) -> None:
    print("$ " + " ".join(cmd), flush=True)
    code = subprocess.run(cmd).returncode
    if code != 0:
        raise DemoStepError(f"the {step} step stopped with exit status {code} (its message is above); rerunning "
                            "grm-demo resumes where it stopped")


def make_data(data: Path, seed: int) -> dict[str, Path]:
    roots = {"GOT10K": data / "got10k", "LASOT": data / "lasot"}
    marker = data / "COMPLETE"
    done = json.loads(marker.read_text()) if marker.is_file() else {}
    if done.get("seed") == seed:
        if not done.get("attributes"):   # data written before the test set carried attribute files: rewrite it
            write_dataset("lasot", roots["LASOT"], EVAL_SEQUENCES, split="test", seed=seed + 2,
                          num_frames=EVAL_FRAMES, image_size=IMAGE_SIZE, progress=True)
            marker.write_text(json.dumps({"seed": seed, "attributes": True}))
        print(f"synthetic data: reusing {data}")
        return roots
    t0 = time.perf_counter()
    common = dict(num_frames=TRAIN_FRAMES, image_size=IMAGE_SIZE, progress=True)
    write_dataset("got10k", roots["GOT10K"], TRAIN_SEQUENCES, split="train", seed=seed, **common)
    write_dataset("lasot", roots["LASOT"], TRAIN_SEQUENCES, split="train", seed=seed + 1, **common)
    # Held out: other sequences (another seed, other names), written beside the training ones as in real LaSOT.
    write_dataset("lasot", roots["LASOT"], EVAL_SEQUENCES, split="test", seed=seed + 2, num_frames=EVAL_FRAMES,
                  image_size=IMAGE_SIZE, progress=True)
    marker.write_text(json.dumps({"seed": seed, "attributes": True}))
    print(f"synthetic data written to {data} in {time.perf_counter() - t0:.1f} s")
    return roots


def static_baseline(sequences) -> dict:
    return {s.name: np.repeat(np.asarray(s.boxes[:1], np.float64), len(s.frames), axis=0) for s in sequences}


def write_video(seq, boxes, path: Path, fps: int = 15) -> Path:
    first = read_frame(seq.frames[0])
    h, w = first.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    try:
        for i, frame_path in enumerate(seq.frames):
            frame = cv2.cvtColor(read_frame(frame_path), cv2.COLOR_RGB2BGR)
            gt = seq.boxes[i]
            if np.isfinite(gt).all() and gt[2] > 0 and gt[3] > 0:
                x, y, bw, bh = (int(round(v)) for v in gt)
                cv2.rectangle(frame, (x, y), (x + bw, y + bh), (0, 200, 0), 1)
            x, y, bw, bh = (int(v) for v in boxes[i])
            cv2.rectangle(frame, (x, y), (x + bw, y + bh), (0, 0, 255), 2)
            cv2.putText(frame, f"#{i}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
            writer.write(frame)
    finally:
        writer.release()
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results") / "demo", help="results folder")
    parser.add_argument("--steps", type=positive_int, default=1600, help="training steps (batch 16)")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the data and of training")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="sequences tracked at once")
    parser.add_argument("--devices", type=positive_int, default=None,
                        help="track on the first N local devices (default: all; grm-track --devices)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    args = parser.parse_args(argv)
    return run_reporting_user_errors(lambda: run_demo(args), debug=args.debug, also=(DemoStepError,))


def run_demo(args) -> int:
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    roots = make_data(out / "data", args.seed)
    overrides = [f"DATA.ROOTS.GOT10K={roots['GOT10K']}", f"DATA.ROOTS.LASOT={roots['LASOT']}",
                 f"TRAIN.SEED={args.seed}"]
    set_args = [a for o in overrides for a in ("--set", o)]
    python = sys.executable

    t0 = time.perf_counter()
    run([python, "-m", "grm_jax.cli.train", "--config", CONFIG, "--workdir", str(out / "train"),
         "--max-steps", str(args.steps), *set_args], "training")
    train_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    raw_grm = out / "raw" / "grm"
    run([python, "-m", "grm_jax.cli.track", "--config", CONFIG, *set_args, "--checkpoint", str(out / "train"),
         "--dataset", EVAL_DATASET, "--dataset-root", str(roots["LASOT"]), "--only-existing",
         "--workdir", str(raw_grm), "--batch-size", str(args.batch_size), "--record-division",
         *(["--devices", str(args.devices)] if args.devices is not None else [])], "tracking")
    track_s = time.perf_counter() - t0

    sequences = load_eval_dataset(EVAL_DATASET, roots["LASOT"], only_existing=True)
    baseline = static_baseline(sequences)
    raw_static = out / "raw" / "static"
    for s in sequences:
        write_result(raw_static, s.dataset, s.name, baseline[s.name])
    grm = load_tracker_results(GRM_NAME, raw_grm, sequences)
    attributes, attribute_message = read_attributes(EVAL_DATASET, roots["LASOT"], sequences)
    report = analyze(sequences, [grm, TrackerResults(BASELINE_NAME, baseline)], EVAL_DATASET,
                     attributes=attributes, attribute_message=attribute_message, reference=BASELINE_NAME)
    files = write_report(report, out / "analysis")

    # The sequence on which the tracker and the baseline differ most makes the most telling video.
    per_seq = report.per_sequence
    best = max(per_seq[GRM_NAME], key=lambda n: per_seq[GRM_NAME][n]["auc"] - per_seq[BASELINE_NAME][n]["auc"])
    seq = next(s for s in sequences if s.name == best)
    video = write_video(seq, grm.boxes[best], out / f"video_{best}.mp4")

    g, b = report.overall[GRM_NAME], report.overall[BASELINE_NAME]
    print()
    print(f"{len(sequences)} held-out synthetic sequences ({sum(len(s.frames) for s in sequences)} frames)")
    print(f"{'tracker':<22}{'AUC':>8}{'Prec@20':>10}{'NormPrec':>10}")
    for name, o in ((GRM_NAME, g), (BASELINE_NAME, b)):
        print(f"{name:<22}{o['auc']:>8.2f}{o['precision']:>10.2f}{o['norm_precision']:>10.2f}")
    margin = g["auc"] - b["auc"]
    print(f"AUC margin over the static baseline: {margin:+.2f} points")
    summary = {"grm": {k: float(g[k]) for k in ("auc", "precision", "norm_precision")},
               "static": {k: float(b[k]) for k in ("auc", "precision", "norm_precision")},
               "auc_margin": margin, "train_steps": args.steps, "train_seconds": train_s,
               "track_seconds": track_s, "total_seconds": time.perf_counter() - t_start}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=1))
    print(attribute_message)
    if report.by_attribute:
        shown = ("attribute", "sequences", "tracker", "AUC", "Prec@20")
        rows = [{k: r[k] for k in shown} for r in attribute_rows(report)]
        print(markdown_table(rows), end="")
    division = report.division.get(GRM_NAME)
    if division:
        print(f"interacting fraction of search tokens per dividing layer ({division['frames']} frames): "
              + ", ".join(f"block {layer}: {v:.3f}" for layer, v in zip(division["layers"], division["all"])))
    for r in report.intervals.get("rows", []):
        if r["metric"] == "AUC":
            print(f"AUC {r['tracker']} - {BASELINE_NAME}: {r['difference']:+.2f} (95 % bootstrap interval "
                  f"[{r['low']:+.2f}, {r['high']:+.2f}] over {r['sequences']} sequences, {r['resamples']} "
                  f"resamples{'' if r['significant'] else '; n.s.'})")
    print(f"plots and tables: {out / 'analysis'} (success plot: {files.get('success_png', 'see folder')}; "
          f"attribute overview: {files.get('attributes_overview_png', 'none')}; division: "
          f"{files.get('division_png', 'none')})")
    print(f"annotated video: {video}")
    print(f"results folder: {out}")
    if margin <= 0:
        print("error: the trained tracker does not beat the static baseline", file=sys.stderr)
        return 1
    return 0


def cli() -> None:
    """Entry point of `grm-demo` (pyproject.toml) and scripts/demo.py."""
    run_command(main, huge_pages=True)


if __name__ == "__main__":
    cli()

#!/usr/bin/env python
"""Run an ablation grid: train and evaluate every (variant, seed), then write one results table.

    grm-ablate --grid configs/ablations/synthetic_small.yaml [--workdir results/ablation/NAME]

The grid format is described in grm_jax/ablation.py. Under --workdir:
  train/<key>/           one training run per distinct (config, train overrides, seed, steps); shared by variants
                         that differ only in inference settings
  eval/<variant>_seed<k>/ raw results (official format) and result.json (AUC, precision, normalised precision,
                         per-layer interacting fraction at inference)
  results.md/.csv/.json  mean and spread over seeds per variant, and each variant's difference to the reference
                         variant (--reference, default the first) with its 95 % bootstrap interval over
                         sequences and seeds ("n.s." when it contains 0)
Rerunning skips finished training runs and evaluations. A synthetic evaluation root that does not exist yet
(e.g. the small CPU grid's) is generated first; real benchmark roots must exist.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from data_pipeline.synthetic import write_dataset
from grm_jax import ablation
from grm_jax.cli import run_command
from grm_jax.config import load_config
from grm_jax.evaluation.analysis import analyze, load_tracker_results
from grm_jax.evaluation.datasets import load_eval_dataset
from grm_jax.sequence import read_frame
from grm_jax.validation import positive_int


# Synthetic training data for grids whose base config trains on the generated datasets (roots left empty).
SYNTHETIC_TRAIN = {"GOT10K": ("got10k", "train"), "LASOT": ("lasot", "train")}
FRACTION_FRAMES = 10   # frames per evaluation sequence used to measure the interacting fraction


def _run(cmd: list[str], log: Path) -> None:
    print("$ " + " ".join(cmd), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text().splitlines()[-15:]
        raise SystemExit(f"command failed (exit {proc.returncode}), see {log}:\n" + "\n".join(tail))


def _resolve(path: str) -> Path:
    p = Path(path)
    return p.resolve()


def ensure_synthetic_data(grid, data_root: Path) -> dict[str, str]:
    """Generate the synthetic data a CPU grid needs: a training set for every dataset of the base config whose
    root is not configured, and the evaluation set when its root does not exist. Returns DATA.ROOTS overrides."""
    cfg = load_config(grid.base_config, grid.train_set)
    wanted = {str(n).upper().split("_")[0] for n in cfg.DATA.TRAIN.DATASETS_NAME}
    roots = {}
    for seed, (key, (fmt, split)) in enumerate(SYNTHETIC_TRAIN.items()):
        if key not in wanted or cfg.DATA.ROOTS[key]:
            continue
        root = data_root / fmt
        marker = root / f"COMPLETE_{split}"
        if not marker.is_file():
            write_dataset(fmt, root, 40, split=split, num_frames=(60, 90), image_size=(320, 240), seed=seed,
                          progress=True)
            marker.write_text("ok")
        roots[key] = str(root)
    eval_root = _resolve(grid.eval_root)
    if not eval_root.exists():
        fmt = {"lasot": ("lasot", "test"), "got10k_val": ("got10k", "val")}.get(grid.eval_dataset)
        if fmt is None:
            raise SystemExit(f"evaluation root {eval_root} does not exist (and {grid.eval_dataset} has no synthetic "
                             "stand-in here)")
        write_dataset(fmt[0], eval_root, 8, split=fmt[1], num_frames=(80, 120), image_size=(320, 240), seed=7,
                      progress=True)
    return roots


def interacting_fraction(cfg, checkpoint: Path, sequences, dataset: str) -> list[float]:
    """Mean fraction of search tokens that interact with the template, per division layer, at inference on
    crops centred on the ground truth of the first frames of each evaluation sequence."""
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    from grm_jax.checkpoints.inference import load_for_inference
    from grm_jax.specs import build_model
    from grm_jax.track import TrackerCore, TrackerSettings

    settings = TrackerSettings.from_config(cfg, dataset)
    core = TrackerCore(build_model(cfg), load_for_inference(checkpoint, cfg), settings, with_decisions=True)
    fractions = []
    for seq in sequences:
        _, template, mask = core.template_input(read_frame(seq.frames[0]), [float(v) for v in seq.boxes[0]])
        for i in range(1, min(len(seq.frames), FRACTION_FRAMES + 1)):
            box = np.asarray(seq.boxes[i], np.float64)
            if not (np.isfinite(box).all() and box[2] > 0 and box[3] > 0):
                continue
            crop, _ = core.search_input(read_frame(seq.frames[i]), [float(v) for v in box])
            _, decisions = core(template, mask, crop[None])
            fractions.append(np.asarray(decisions)[0].mean(axis=-1))
    if not fractions or np.asarray(fractions).shape[-1] == 0:
        return []
    return [float(v) for v in np.mean(fractions, axis=0)]


def _per_sequence(report, tracker: str) -> dict:
    """{sequence: {metric: value}} of the metrics the ablation table reports (for its bootstrap intervals)."""
    return {name: {m: float(values[m]) for m in ablation.METRIC_COLUMNS}
            for name, values in report.per_sequence[tracker].items()}


def per_sequence_metrics(variant: str, raw_dir: Path, sequences, dataset: str) -> dict:
    report = analyze(sequences, [load_tracker_results(variant, raw_dir, sequences)], dataset)
    return _per_sequence(report, variant)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", required=True, type=Path, help="grid YAML (see configs/ablations/)")
    parser.add_argument("--workdir", type=Path, default=None, help="default: results/ablation/<grid name>")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="sequences tracked at once")
    parser.add_argument("--reference", default=None, metavar="VARIANT",
                        help="variant the others are compared with (default: the grid's first variant)")
    parser.add_argument("--resamples", type=positive_int, default=10000, help="bootstrap resamples (default 10000)")
    parser.add_argument("--devices", type=positive_int, default=None,
                        help="evaluate on the first N local devices (default: all; grm-track --devices)")
    args = parser.parse_args(argv)
    try:
        grid = ablation.load_grid(args.grid)
    except ablation.GridError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    workdir = (args.workdir or Path("results") / "ablation" / args.grid.stem).resolve()
    runs = ablation.expand(grid)
    if args.reference is not None and args.reference not in [v["name"] for v in grid.variants]:
        print(f"error: --reference {args.reference!r} is not a variant of {args.grid} "
              f"({', '.join(v['name'] for v in grid.variants)})", file=sys.stderr)
        return 2
    print(f"{args.grid}: {len(grid.variants)} variants x {len(grid.seeds)} seeds = {len(runs)} evaluations, "
          f"{len({r.train_key for r in runs})} training runs; workdir {workdir}")
    data_roots = ensure_synthetic_data(grid, workdir / "data")
    root_args = [f"DATA.ROOTS.{k}={v}" for k, v in data_roots.items()]
    python = sys.executable

    eval_root = _resolve(grid.eval_root)
    sequences = load_eval_dataset(grid.eval_dataset, eval_root, grid.eval_sequences,
                                  only_existing=grid.eval_sequences is None)
    results = []
    t0 = time.perf_counter()
    for n, run in enumerate(runs, 1):
        print(f"[{n}/{len(runs)}] {run.variant} seed {run.seed}", flush=True)
        train_dir = workdir / "train" / run.train_key
        done = train_dir / "DONE.json"
        seed_arg = f"TRAIN.SEED={run.seed}"
        train_sets = [*root_args, *run.train_set_args(), seed_arg]
        if not done.is_file():
            cmd = [python, "-m", "grm_jax.cli.train", "--config", grid.base_config, "--workdir", str(train_dir),
                   "--no-progress"]
            if run.max_steps:
                cmd += ["--max-steps", str(run.max_steps)]
            _run(cmd + [a for s in train_sets for a in ("--set", s)], train_dir / "train.log")
            done.write_text(json.dumps({"variant": run.variant, "seed": run.seed, "overrides": train_sets}))
        else:
            print(f"  training {run.train_key}: done, skipped")

        eval_dir = workdir / "eval" / run.eval_key
        result_file = eval_dir / "result.json"
        if result_file.is_file():
            print(f"  evaluation {run.eval_key}: done, skipped")
            result = json.loads(result_file.read_text())
            if "per_sequence" not in result and (eval_dir / "raw").is_dir():   # recorded before intervals existed
                result["per_sequence"] = per_sequence_metrics(run.variant, eval_dir / "raw", sequences,
                                                              grid.eval_dataset)
                result_file.write_text(json.dumps(result, indent=1))
            results.append(result)
            continue
        eval_sets = [*root_args, *run.eval_set_args(), seed_arg]
        cmd = [python, "-m", "grm_jax.cli.track", "--config", grid.base_config, "--checkpoint", str(train_dir),
               "--dataset", grid.eval_dataset, "--dataset-root", str(eval_root), "--workdir", str(eval_dir / "raw"),
               "--batch-size", str(args.batch_size), "--no-progress"]
        if args.devices is not None:
            cmd += ["--devices", str(args.devices)]
        if grid.eval_sequences:
            cmd += ["--sequences", *grid.eval_sequences]
        else:
            cmd += ["--only-existing"]
        _run(cmd + [a for s in eval_sets for a in ("--set", s)], eval_dir / "track.log")
        cfg = load_config(grid.base_config, eval_sets)
        report = analyze(sequences, [load_tracker_results(run.variant, eval_dir / "raw", sequences)],
                         grid.eval_dataset)
        overall = report.overall[run.variant]
        result = {"variant": run.variant, "seed": run.seed, "train_key": run.train_key,
                  "auc": float(overall["auc"]), "precision": float(overall["precision"]),
                  "norm_precision": float(overall["norm_precision"]),
                  "interact_frac": interacting_fraction(cfg, train_dir, sequences, grid.eval_dataset),
                  "per_sequence": _per_sequence(report, run.variant)}
        result_file.write_text(json.dumps(result, indent=1))
        results.append(result)
        print(f"  AUC {result['auc']:.2f}  Prec {result['precision']:.2f}  NormPrec {result['norm_precision']:.2f}  "
              f"interacting {[round(f, 3) for f in result['interact_frac']]}", flush=True)

    rows = ablation.aggregate(results, args.reference, resamples=args.resamples)
    paths = ablation.write_tables(rows, workdir, title=f"Ablation {args.grid.stem} ({grid.eval_dataset})")
    print(paths["md"].read_text())
    print(f"tables: {paths['md']}, {paths['csv']}, {paths['json']} ({time.perf_counter() - t0:.0f} s)")
    return 0


def cli() -> None:
    """Entry point of `grm-ablate` (pyproject.toml) and scripts/ablate.py."""
    run_command(main, huge_pages=True)


if __name__ == "__main__":
    cli()

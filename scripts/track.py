#!/usr/bin/env python
"""Run the GRM tracker over an evaluation benchmark and write raw results in the official format.

    python scripts/track.py --config vitb_256_ep300 --checkpoint GRM_ep0300.pth.tar \
        --dataset lasot --dataset-root DATA/LaSOT --workdir results/grm_vitb_256 [--batch-size 16]

Writes `<workdir>/<seq>.txt` (GOT-10k / TrackingNet: `<workdir>/got10k|trackingnet/<seq>.txt` + `<seq>_time.txt`).
Sequences whose result file exists are skipped, so an interrupted run resumes where it stopped. The division
threshold comes from TEST.HYPER[<DATASET>] (else DEFAULT) unless --threshold is given. --batch-size N tracks N
sequences at once on the device (--batch-mode exact, the default: the same boxes as one at a time).
--engine onnxruntime|exported runs the network step from a file written by scripts/export.py (--checkpoint).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_parser() -> argparse.ArgumentParser:
    from grm_jax.config import add_config_args
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="converted orbax dir, training workdir, or official .pth.tar; with --engine onnxruntime / "
                        "exported the file written by scripts/export.py")
    p.add_argument("--engine", choices=["jax", "onnxruntime", "exported"], default="jax",
                   help="what runs the network step: jax (the model), onnxruntime (an ONNX export) or exported "
                        "(a serialized JAX export)")
    p.add_argument("--dataset", required=True, help="lasot, got10k_test, got10k_val, trackingnet, nfs, uav, avist, "
                                                    "otb, tnl2k, lasot_extension_subset")
    p.add_argument("--dataset-root", type=Path, default=None,
                   help="benchmark folder (default for lasot / got10k_* / trackingnet: DATA.ROOTS.<LASOT|GOT10K|"
                        "TRACKINGNET> of the config)")
    p.add_argument("--sequences", nargs="*", default=None, help="only these sequences")
    p.add_argument("--only-existing", action="store_true", help="take the listed sequences found on disk")
    p.add_argument("--workdir", type=Path, required=True, help="results folder")
    p.add_argument("--batch-size", type=int, default=1, help="sequences tracked at once (batched evaluation)")
    p.add_argument("--batch-mode", choices=["exact", "vectorized"], default="exact",
                   help="exact: slots run one after another inside the jitted step, boxes bit-identical to "
                        "--batch-size 1; vectorized: one batched forward (fastest on a GPU, last-bit differences)")
    p.add_argument("--threshold", type=float, default=None, help="division threshold (default: TEST.HYPER)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        print("error: --batch-size must be >= 1", file=sys.stderr)
        return 2
    import jax
    jax.config.update("jax_default_matmul_precision", "highest")   # fp32 parity (no TF32 on GPUs)
    from tqdm import tqdm

    from grm_jax.checkpoint import load_for_inference
    from grm_jax.config import config_from_args
    from grm_jax.evaluation.datasets import load_eval_dataset
    from grm_jax.evaluation.raw_results import has_result, write_result
    from grm_jax.models import build_model
    from grm_jax.track import TrackerCore, TrackerSettings, track_sequences

    cfg = config_from_args(args)
    if args.dataset_root is None:
        from grm_jax.track.tracker import canonical_dataset_name
        key = {"lasot": "LASOT", "lasot_extension_subset": "LASOT", "got10k_test": "GOT10K", "got10k_val": "GOT10K",
               "trackingnet": "TRACKINGNET"}.get(canonical_dataset_name(args.dataset))
        root = cfg.DATA.ROOTS[key] if key else ""
        if not root:
            print(f"error: --dataset-root is required for {args.dataset}"
                  + (f" (DATA.ROOTS.{key} is empty)" if key else ""), file=sys.stderr)
            return 2
        args.dataset_root = Path(root)
    sequences = load_eval_dataset(args.dataset, args.dataset_root, args.sequences, only_existing=args.only_existing)
    todo = [s for s in sequences if not has_result(args.workdir, s.dataset, s.name)]
    print(f"{args.dataset}: {len(sequences)} sequences, {len(sequences) - len(todo)} already done, {len(todo)} to track")
    if not todo:
        return 0
    dataset_key = args.dataset.lower()
    settings = TrackerSettings.from_config(cfg, dataset_key, args.threshold)
    if args.engine == "jax":
        core = TrackerCore(build_model(cfg), load_for_inference(args.checkpoint, cfg), settings,
                           batch_mode=args.batch_mode)
    else:
        from grm_jax.export import load_engine
        try:
            core = TrackerCore(None, None, settings, engine=load_engine(args.checkpoint, args.engine))
        except (ValueError, ImportError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.workdir / "track_config.json").write_text(json.dumps(
        {"config": args.config, "overrides": args.overrides, "checkpoint": str(args.checkpoint),
         "dataset": args.dataset, "threshold": settings.threshold, "batch_size": args.batch_size,
         "batch_mode": args.batch_mode, "engine": args.engine}, indent=1))

    total = sum(len(s.frames) for s in todo)
    bar = tqdm(total=total, unit="frame", disable=args.no_progress, dynamic_ncols=True,
               desc=f"{args.dataset} thr={settings.threshold:g} bs={args.batch_size}")
    written = 0
    start = time.perf_counter()

    def save(result):
        nonlocal written
        if len(result.boxes) > 1:   # as the official runner: no file for one-frame sequences
            write_result(args.workdir, result.sequence.dataset, result.sequence.name, result.boxes, result.times)
            written += 1
        bar.set_postfix(seqs=f"{written}/{len(todo)}", fps=f"{bar.n / max(time.perf_counter() - start, 1e-9):.1f}")

    for _ in track_sequences(core, todo, batch_size=args.batch_size, on_result=save, progress=bar):
        pass
    bar.close()
    elapsed = time.perf_counter() - start
    print(f"tracked {total} frames of {len(todo)} sequences in {elapsed:.1f} s ({total / elapsed:.2f} frames/s); "
          f"results in {args.workdir}")
    return 0


if __name__ == "__main__":
    from grm_jax.runtime import use_huge_pages_for_malloc

    use_huge_pages_for_malloc()
    sys.exit(main())

"""Input-pipeline throughput: template/search pairs per second at batch 32 (template 128, search 256, the
vitb_256 processing) on generated 1280x720 JPEG sequences, pinned to 1 core and to all cores.

Each timed run is a fresh process pinned with sched_setaffinity (so "1 core" means one core, not one thread)
that warms up and times --batches batches; configurations alternate run by run (same load for all) and the
median of --runs runs is reported. Configurations:
  sequential-full : plain Python loop, full cv2 decode (what the official single-process loader does), baseline
  tfdata-full     : tf.data parallel map, full cv2 decode (bit-exact pixels)
  tfdata-window   : tf.data parallel map, decode only each crop's window (tf.io.decode_and_crop_jpeg)
Official PyTorch loader on a 2-core machine of this kind (issue 3): 66 pairs/s in one process, 105 pairs/s with
2 workers (52.5 per core). Other jobs on the machine load the cores: the load average is printed.

    grm-bench-input [--data DIR] [--runs 5] [--batches 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grm_jax.cli import run_command

OFFICIAL_ONE_PROCESS = 66.0
OFFICIAL_TWO_WORKERS_PER_CORE = 105.0 / 2
CONFIGS = ("sequential-full", "tfdata-full", "tfdata-window")


def _worker(args) -> None:
    cores = sorted(os.sched_getaffinity(0))[: args.cores]
    os.sched_setaffinity(0, cores)  # before TF starts its thread pools: every thread inherits it
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import cv2
    import numpy as np

    cv2.setNumThreads(1)  # as in make_train_iterator: parallelism is across samples
    from data_pipeline.pipeline import PairSource, make_train_iterator
    from data_pipeline.processing import ProcessingSettings
    from data_pipeline.readers import build_dataset
    from data_pipeline.sampler import PairSampler
    from grm_jax.config import load_config

    cfg = load_config("vitb_256_ep300", ["DATA.TEMPLATE.SIZE=128", "DATA.SEARCH.SIZE=256",
                                         "DATA.TRAIN.DATASETS_NAME=[GOT10K_train]", "DATA.TRAIN.DATASETS_RATIO=[1]"])
    ds = build_dataset("GOT10K_train", args.data, Path(args.data) / ".idx", progress=False)
    batch = args.batch_size
    if args.config == "sequential-full":
        source = PairSource(PairSampler([ds], [1]), ProcessingSettings.from_config(cfg), seed=0, window_decode=False)
        counter = iter(range(10**9))

        def next_batch():
            samples = [source(next(counter)) for _ in range(batch)]
            return {k: np.stack([s[k] for s in samples]) for k in samples[0]}
    else:
        it = make_train_iterator(cfg, [ds], seed=0, start_step=0, host_batch_size=batch, process_index=0,
                                 process_count=1, num_parallel=len(cores), threads=len(cores),
                                 window_decode=args.config == "tfdata-window")
        next_batch = it.__next__
    for _ in range(args.warmup):
        next_batch()
    rates = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        for _ in range(args.batches):
            next_batch()
        rates.append(args.batches * batch / (time.perf_counter() - t0))
    print(json.dumps({"config": args.config, "cores": len(cores), "rates": rates,
                      "median": float(np.median(rates))}), flush=True)
    os._exit(0)  # skip tf.data teardown


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="GOT-10k-format folder (default: generate 1280x720 sequences in a temp dir)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--batches", type=int, default=3, help="batches per timed run")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--cores", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return _worker(args)

    tmp = None
    if args.data is None:
        from data_pipeline import synthetic

        tmp = tempfile.TemporaryDirectory(prefix="bench_input_")
        args.data = str(Path(tmp.name) / "got10k")
        print("writing 8 x 60 frames of 1280x720 JPEG ...", flush=True)
        synthetic.write_dataset("got10k", args.data, num_sequences=8, num_frames=60, image_size=(1280, 720),
                                seed=0, split="train", progress=True)
    all_cores = len(os.sched_getaffinity(0))
    plan = [(config, cores) for cores in sorted({1, all_cores}) for config in args.configs.split(",")
            if not (config == "sequential-full" and cores > 1)]  # one Python thread cannot use more cores
    rates = {key: [] for key in plan}
    loads = []
    # Configurations alternate run by run (a fresh pinned process each time), so a change in the load made by
    # other jobs hits all of them alike.
    for run in range(args.runs):
        for config, cores in plan:
            cmd = [sys.executable, "-m", "grm_jax.cli.bench_input", "--worker", "--config", config, "--cores", str(cores),
                   "--data", args.data, "--runs", "1", "--batches", str(args.batches),
                   "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)]
            loads.append(os.getloadavg()[0])
            out = subprocess.run(cmd, capture_output=True, text=True)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
            if out.returncode != 0 or not line:
                print(f"{config} on {cores} core(s) failed:\n{out.stderr[-3000:]}")
                continue
            rates[(config, cores)].append(json.loads(line[-1])["median"])
        print(f"run {run + 1}/{args.runs}: " + ", ".join(f"{c}@{n}={r[-1]:.1f}" for (c, n), r in rates.items() if r),
              flush=True)
    import statistics

    results = {}
    for (config, cores), r in rates.items():
        if not r:
            continue
        results[(config, cores)] = {"median": statistics.median(r), "rates": r}
        print(f"{config:16s} cores={cores}  median {statistics.median(r):7.1f} pairs/s  per core "
              f"{statistics.median(r) / cores:6.1f}  runs {[round(x, 1) for x in r]}")
    print(f"load average during the runs (1 min, {os.cpu_count()} cpus): min {min(loads):.1f} "
          f"median {statistics.median(loads):.1f} max {max(loads):.1f}")
    base = results.get(("sequential-full", 1))
    print("\nsummary (pairs/s per core; official PyTorch loader: 66 in one process, 52.5/core with 2 workers)")
    for (config, cores), r in results.items():
        per_core = r["median"] / cores
        rel = f"  x{per_core / (base['median']):.2f} vs sequential-full" if base else ""
        print(f"  {config:16s} {cores} core(s): {per_core:6.1f}/core  x{per_core / OFFICIAL_ONE_PROCESS:.2f} vs "
              f"official 1-process, x{per_core / OFFICIAL_TWO_WORKERS_PER_CORE:.2f} vs official 2-worker/core{rel}")
    if tmp is not None:
        tmp.cleanup()


def cli() -> None:
    """Entry point of `grm-bench-input` (pyproject.toml) and scripts/bench_input.py."""
    run_command(main)


if __name__ == "__main__":
    cli()

#!/usr/bin/env python
"""Input-pipeline throughput from a prepared (TFDS, array_record) dataset vs the same data as folders.

Training pairs per second at batch 32 (template 128, search 256, the vitb_256 processing, tf.data window decode)
from GOT-10k-format 1280x720 JPEG sequences, read (a) from the folders (one file per frame) and (b) from the
prepared dataset built from those folders (scripts/prepare_tfds.py; same pair draws, same bytes). Each timed run
is a fresh process pinned to 1 core or to all cores (sched_setaffinity); the two sources alternate run by run so
that the load of other jobs hits both alike, and the median of --runs runs is reported with the load average.

    python scripts/bench_prepared_input.py [--runs 5] [--batches 3] [--json results/bench_prepared_input.json]

--read-cost measures instead what reading one frame costs each way, in fresh processes pinned to one core,
methods alternating run by run, the frames in one random order (CPU ms per frame, median of --runs):
  file          `tf.io.read_file` in a tf.data map: what the folder source does per frame
  prepared      `graph.FileFrameReader(prepared=True).read` in a tf.data map: what the prepared source does
                (the array_record lookup in `tf.numpy_function`, then the `tf.train.Example` parse)
  tfrecord      the same serialized records in one TFRecord file, read at their byte offsets by
                `TFRecordDataset` (byte_offsets) + `get_single_element`: a random read that TF does natively
  file_py       the file read in a Python loop (open + read)
  array_py      the array_record lookup alone in a Python loop (what TFDS stores: zstd chunks, hashed)
The tf.data figures are net of the same map doing no read.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from data_pipeline import synthetic
from data_pipeline.readers import build_dataset
from grm_jax.benchmarking import finish_report, report_header
from grm_jax.cli import run_command
from grm_jax.config import load_config
from grm_jax.validation import non_negative_int, positive_int

SOURCES = ("folders", "prepared")


def _worker(args) -> None:
    cores = sorted(os.sched_getaffinity(0))[: args.cores]
    os.sched_setaffinity(0, cores)  # before TF starts its thread pools: every thread inherits it
    # TF after the affinity above
    from data_pipeline.pipeline import make_train_iterator
    from data_pipeline.prepared import load_training_dataset

    cfg = load_config("vitb_256_ep300", ["DATA.TEMPLATE.SIZE=128", "DATA.SEARCH.SIZE=256",
                                         "DATA.TRAIN.DATASETS_NAME=[GOT10K_train]", "DATA.TRAIN.DATASETS_RATIO=[1]"])
    if args.source == "folders":
        ds = build_dataset("GOT10K_train", args.folders, Path(args.folders) / ".idx", progress=False)
    else:
        ds = load_training_dataset("GOT10K_train", args.tfds)
    it = make_train_iterator(cfg, [ds], seed=0, start_step=0, host_batch_size=args.batch_size, process_index=0,
                             process_count=1, num_parallel=len(cores), threads=len(cores))
    for _ in range(args.warmup):
        next(it)
    t0 = time.perf_counter()
    for _ in range(args.batches):
        next(it)
    rate = args.batches * args.batch_size / (time.perf_counter() - t0)
    print(json.dumps({"source": args.source, "cores": len(cores), "rate": rate}), flush=True)
    os._exit(0)  # skip tf.data teardown


READ_METHODS = ("file", "prepared", "tfrecord", "file_py", "array_py")


def _frames(folders, data_dir):
    """(frame paths, prepared frame references): the same frames, in one random order."""
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    from data_pipeline.prepared import load_training_dataset

    folder_ds = build_dataset("GOT10K_train", folders, Path(folders) / ".idx", progress=False)
    prepared_ds = load_training_dataset("GOT10K_train", data_dir)
    paths, refs = [], []
    for i in range(len(folder_ds.sequences)):
        a, b = folder_ds.sequences[i], prepared_ds.sequences[i]
        paths += list(a.frames)
        refs += list(b.frames)
    order = np.random.default_rng(0).permutation(len(paths))
    return [paths[i] for i in order], [refs[i] for i in order]


def _read_cost_worker(args) -> None:
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1])

    # TF after the affinity above: its thread pools inherit it
    from data_pipeline import prepared_store

    paths, refs = _frames(args.folders, args.tfds)
    rounds = args.read_rounds
    if args.method in ("file_py", "array_py"):
        if args.method == "file_py":
            def read(i):
                with open(paths[i], "rb") as f:
                    return f.read()
        else:
            def read(i):
                return prepared_store.read_record_bytes(refs[i])
        for i in range(len(paths)):  # warm-up: page cache, readers
            read(i)
        c0 = time.process_time()
        for _ in range(rounds):
            for i in range(len(paths)):
                read(i)
        ms = (time.process_time() - c0) * 1e3 / (rounds * len(paths))
        print(json.dumps({"method": args.method, "ms_per_frame": ms}), flush=True)
        os._exit(0)

    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    import tensorflow as tf

    from data_pipeline.graph import FileFrameReader

    if args.method == "file":
        items, read = paths, tf.io.read_file
    elif args.method == "prepared":
        items, read = refs, FileFrameReader(prepared=True).read
    else:  # tfrecord: the serialized records of the prepared frames, one file, read at byte offsets
        from tensorflow.python.data.ops import dataset_ops

        record_file = str(Path(args.tfds) / "frames.tfrecord")
        offsets, position = [], 0
        with tf.io.TFRecordWriter(record_file) as writer:
            for ref in refs:
                record = prepared_store.read_record_bytes(ref)
                writer.write(record)
                offsets.append(position)
                position += len(record) + 16  # length, its CRC, the record, its CRC
        items = np.array(offsets, np.int64)

        def read(offset):
            records = tf.raw_ops.TFRecordDatasetV2(
                filenames=tf.constant([record_file]), compression_type="", buffer_size=tf.constant(0, tf.int64),
                byte_offsets=tf.reshape(offset, [1]))
            raw = dataset_ops._VariantDataset(records, tf.TensorSpec([], tf.string)).take(1).get_single_element()
            return tf.io.parse_single_example(raw, {"image": tf.io.FixedLenFeature([], tf.string)})["image"]

    def cpu_ms(fn):
        ds = tf.data.Dataset.from_tensor_slices(items).repeat(rounds).map(fn).map(tf.strings.length)
        options = tf.data.Options()
        options.threading.private_threadpool_size = 1
        ds = ds.with_options(options)
        for _ in ds.take(len(items)):  # warm-up
            pass
        c0, n = time.process_time(), 0
        for _ in ds:
            n += 1
        return (time.process_time() - c0) * 1e3 / n

    base = cpu_ms(lambda x: tf.strings.as_string(x) if x.dtype != tf.string else x)
    print(json.dumps({"method": args.method, "ms_per_frame": cpu_ms(read) - base}), flush=True)
    os._exit(0)


def _read_cost(args, folders, data_dir) -> None:
    report = report_header()
    costs = {m: [] for m in READ_METHODS}
    for run in range(args.runs):
        for method in READ_METHODS:
            out = subprocess.run([sys.executable, "-m", "grm_jax.cli.bench_prepared_input", "--worker-read",
                                  "--method", method, "--folders", str(folders), "--tfds", str(data_dir),
                                  "--read-rounds", str(args.read_rounds)], capture_output=True, text=True)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
            if out.returncode != 0 or not line:
                print(f"{method} failed:\n{out.stderr[-3000:]}")
                continue
            costs[method].append(json.loads(line[-1])["ms_per_frame"])
        print(f"round {run + 1}/{args.runs}: " + ", ".join(f"{m}={c[-1]:.3f}" for m, c in costs.items() if c),
              flush=True)
    med = {m: statistics.median(c) for m, c in costs.items() if c}
    print(f"\nCPU ms per frame read (~160 KB JPEGs), 1 core, median of {args.runs} alternating rounds; "
          f"{report['cpu']}; commit {report['commit']}")
    for m in READ_METHODS:
        if m in med:
            print(f"  {m:10s} {med[m]:7.3f}   {[round(x, 3) for x in costs[m]]}")
    if "file" in med and "prepared" in med:
        print(f"  prepared - file: {med['prepared'] - med['file']:+.3f} ms per frame "
              f"({2 * (med['prepared'] - med['file']):+.3f} ms per training pair)")
    finish_report(dict(report, ms_per_frame=costs, median=med, runs=args.runs, read_rounds=args.read_rounds),
                  args.json)


def main(argv=None) -> int | None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=positive_int, default=5)
    p.add_argument("--batches", type=positive_int, default=3, help="batches per timed run")
    p.add_argument("--warmup", type=non_negative_int, default=1)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--read-cost", action="store_true", help="per-frame read cost of each access method instead")
    p.add_argument("--read-rounds", type=positive_int, default=5, help="passes over the frames per --read-cost run")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker-read", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", choices=READ_METHODS, help=argparse.SUPPRESS)
    p.add_argument("--source", help=argparse.SUPPRESS)
    p.add_argument("--cores", type=positive_int, help=argparse.SUPPRESS)
    p.add_argument("--folders", help=argparse.SUPPRESS)
    p.add_argument("--tfds", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return _worker(args)
    if args.worker_read:
        return _read_cost_worker(args)

    tmp = tempfile.TemporaryDirectory(prefix="bench_prepared_")
    folders, data_dir = Path(tmp.name) / "got10k", Path(tmp.name) / "tfds"
    print("writing 8 x 60 frames of 1280x720 JPEG and preparing them ...", flush=True)
    synthetic.write_dataset("got10k", folders, num_sequences=8, num_frames=60, image_size=(1280, 720), seed=0,
                            split="train")
    prep = subprocess.run([sys.executable, "-m", "grm_jax.cli.prepare_tfds", "got10k", "--manual-dir",
                           str(folders), "--data-dir", str(data_dir), "--no-progress"], capture_output=True, text=True)
    if prep.returncode != 0:
        raise SystemExit(f"prepare_tfds.py failed:\n{prep.stdout}\n{prep.stderr}")
    if args.read_cost:
        _read_cost(args, folders, data_dir)
        tmp.cleanup()
        return None
    all_cores = len(os.sched_getaffinity(0))
    plan = [(source, cores) for cores in sorted({1, all_cores}) for source in SOURCES]
    rates = {key: [] for key in plan}
    loads = []
    for run in range(args.runs):
        for source, cores in plan:
            cmd = [sys.executable, "-m", "grm_jax.cli.bench_prepared_input", "--worker", "--source", source, "--cores", str(cores),
                   "--folders", str(folders), "--tfds", str(data_dir), "--batches", str(args.batches),
                   "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)]
            loads.append(os.getloadavg()[0])
            out = subprocess.run(cmd, capture_output=True, text=True)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
            if out.returncode != 0 or not line:
                print(f"{source} on {cores} core(s) failed:\n{out.stderr[-3000:]}")
                continue
            rates[(source, cores)].append(json.loads(line[-1])["rate"])
        print(f"run {run + 1}/{args.runs}: " + ", ".join(f"{s}@{n}={r[-1]:.1f}" for (s, n), r in rates.items() if r),
              flush=True)
    results = []
    for cores in sorted({1, all_cores}):
        row = {"cores": cores}
        for source in SOURCES:
            r = rates[(source, cores)]
            row[source] = {"median": statistics.median(r) if r else None, "runs": r}
        if row["folders"]["median"] and row["prepared"]["median"]:
            row["prepared_over_folders"] = row["prepared"]["median"] / row["folders"]["median"]
            # in-run ratio: each prepared run against the folders run next to it
            row["paired_ratios"] = [b / a for a, b in zip(rates[("folders", cores)], rates[("prepared", cores)])]
        results.append(row)
        print(f"cores={cores}: folders {row['folders']['median']:.1f} pairs/s, prepared "
              f"{row['prepared']['median']:.1f} pairs/s, prepared/folders x{row.get('prepared_over_folders', 0):.2f} "
              f"(paired run ratios {[round(x, 2) for x in row.get('paired_ratios', [])]})")
    load = {"min": min(loads), "median": statistics.median(loads), "max": max(loads), "cpus": os.cpu_count()}
    print(f"load average during the runs (1 min, {os.cpu_count()} cpus): min {load['min']:.1f} "
          f"median {load['median']:.1f} max {load['max']:.1f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"results": results, "load_average": load, "batch_size": args.batch_size,
                                         "batches": args.batches, "runs": args.runs}, indent=1))
    tmp.cleanup()


def cli() -> None:
    run_command(main)


if __name__ == "__main__":
    cli()

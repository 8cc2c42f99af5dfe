"""Training-input throughput: template/search pairs per second at batch 32 (template 128, search 256, the
vitb_256 processing) on generated 1280x720 JPEG sequences, at 1 core and at all cores, for both per-sample
paths and through a localhost tf.data service.

Each timed run is a fresh process pinned with sched_setaffinity (so "1 core" means one core, not one thread)
that builds the pipeline, warms up and times --batches batches; configurations alternate run by run (the load
made by other jobs hits all alike) and the median of --runs runs is reported. Configurations:
  python@N  : DATA.PIPELINE=python, per-sample NumPy/OpenCV in tf.numpy_function (GIL-bound), N cores
  graph@N   : DATA.PIPELINE=graph, per-sample TF graph ops on tf.data's thread pool, N cores
  prepared@N: graph path with DATA.SOURCE=tfds: the same sequences prepared once (scripts/prepare_tfds.py, one
              array_record record per frame, the same JPEG bytes) and read from the records instead of the
              folders; it alternates with graph@N, the folder source, in the same rounds
  service@N : graph path through a tf.data service on this machine: a dispatcher and N worker processes, worker
              i pinned to core i; the trainer-side consumer is unpinned; the rate is taken over a window of at
              least 20 s that starts 15 s after the first batch (what the workers buffered during start-up and
              the bursts of in-order delivery do not set it)
Also measured once: the time the python path holds the GIL per sample (a probe thread counts how much Python
it can run beside a sequential producer: hold fraction = 1 - probe rate during / probe rate alone; the spread
of four windows alone is the probe's noise, and a hold fraction within it is reported as a bound); the graph
path runs no Python per sample. One process's python path cannot exceed 1 / (GIL time per sample) pairs/s
whatever its core count. Figures on a shared machine are loaded-machine figures: the load average is printed.

    grm-bench-input [--data DIR] [--runs 2] [--batches 3] [--configs python,graph,prepared,service] [--json F]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2

from data_pipeline import synthetic
from data_pipeline.readers import build_dataset
from data_pipeline.sampler import PairSampler
from grm_jax.benchmarking import machine_description
from grm_jax.cli import run_command
from grm_jax.cli.input_service import start_dispatcher, start_workers
from grm_jax.config import load_config
from grm_jax.validation import non_negative_int, positive_float, positive_int

SERVICE_DRAIN_S, SERVICE_WINDOW_S = 15.0, 20.0
OVERRIDES = ["DATA.TEMPLATE.SIZE=128", "DATA.SEARCH.SIZE=256", "DATA.TRAIN.DATASETS_NAME=[GOT10K_train]",
             "DATA.TRAIN.DATASETS_RATIO=[1]"]


def _setup(args, prepared: bool = False):
    cfg = load_config("vitb_256_ep300", OVERRIDES)
    if prepared:
        # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
        from data_pipeline.prepared import load_training_dataset

        return cfg, load_training_dataset("GOT10K_train", args.tfds)
    ds = build_dataset("GOT10K_train", args.data, Path(args.data) / ".idx", progress=False)
    return cfg, ds


def _prepare(folders: str, data_dir: str) -> None:
    """The prepared (TFDS) twin of the GOT-10k-format folders, built by scripts/prepare_tfds.py."""
    out = subprocess.run([sys.executable, "-m", "grm_jax.cli.prepare_tfds", "got10k", "--manual-dir", folders,
                          "--data-dir", data_dir, "--no-progress"], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"prepare_tfds failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")


def _timed_worker(args) -> None:
    mode, cores = args.config.split("@")
    cores = int(cores)
    usable = sorted(os.sched_getaffinity(0))[:cores]
    procs = []
    address = None
    if mode == "service":

        os.sched_setaffinity(0, usable)
        server, address = start_dispatcher(0)
        procs = start_workers(address, cores, pin=True, quiet=True)
    else:
        os.sched_setaffinity(0, usable)  # before TF starts its thread pools: every thread inherits it
    cfg, ds = _setup(args, prepared=mode == "prepared")
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    from data_pipeline.pipeline import make_train_iterator

    it = make_train_iterator(cfg, [ds], seed=0, start_step=0, host_batch_size=args.batch_size, process_index=0,
                             process_count=1, num_parallel=cores, threads=cores if mode != "service" else None,
                             pipeline="python" if mode == "python" else "graph",
                             service_address=f"grpc://{address}" if address else "")
    for _ in range(args.warmup):
        next(it)
    if mode == "service":
        # The workers fill their buffers while the consumer starts, and batches arrive in bursts (the consumer
        # puts them back in step order): time a window that starts SERVICE_DRAIN_S after the first batch and
        # lasts at least SERVICE_WINDOW_S, so that neither the start-up buffer nor one burst sets the rate.
        t_first = time.perf_counter()
        count, t_start, n_start = 0, None, 0
        while True:
            next(it)
            count += 1
            now = time.perf_counter()
            if t_start is None and now - t_first >= SERVICE_DRAIN_S:
                t_start, n_start, cpu_start = now, count, time.process_time()
            if t_start is not None and now - t_start >= SERVICE_WINDOW_S and count - n_start >= args.batches:
                break
        rate = (count - n_start) * args.batch_size / (now - t_start)
        # the trainer-side process (consumer and dispatcher): CPU it takes from the cores the workers run on
        extra = {"consumer_cpu_ms_per_pair": (time.process_time() - cpu_start) * 1e3
                 / ((count - n_start) * args.batch_size)}
    else:
        t0 = time.perf_counter()
        for _ in range(args.batches):
            next(it)
        rate = args.batches * args.batch_size / (time.perf_counter() - t0)
        extra = {}
    print(json.dumps({"config": args.config, "rate": rate, **extra}), flush=True)
    for p in procs:
        p.kill()
    os._exit(0)  # skip tf.data teardown


def _gil_worker(args) -> None:
    """Per-sample GIL time of the python path, sequential producer + probe thread on 2 cores."""
    cores = sorted(os.sched_getaffinity(0))[:2]
    os.sched_setaffinity(0, cores)
    cfg, ds = _setup(args)

    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    from data_pipeline.pipeline import PairSource
    from data_pipeline.processing import ProcessingSettings

    cv2.setNumThreads(1)
    source = PairSource(PairSampler([ds], [1]), ProcessingSettings.from_config(cfg), seed=0)
    for i in range(4):
        source(i)
    stop = threading.Event()
    count = [0]
    # The probe hands the GIL back after the switch interval only: at the default 5 ms a producer returning from
    # a TF / OpenCV call waits up to that long, which stretches its samples and says nothing of its own GIL time.
    sys.setswitchinterval(1e-4)

    def probe():
        n = 0
        while not stop.is_set():
            for _ in range(1000):
                n += 1
            count[0] = n

    def probe_rate(seconds, work=None):
        stop.clear()
        count[0] = 0
        thread = threading.Thread(target=probe)
        t0 = time.perf_counter()
        thread.start()
        done = 0
        if work is None:
            time.sleep(seconds)
        else:
            while time.perf_counter() - t0 < seconds:
                work(done)
                done += 1
        stop.set()
        thread.join()
        elapsed = time.perf_counter() - t0
        return count[0] / elapsed, done, elapsed

    # the probe's rate alone, in windows before and after the producer's: their spread is the measurement's noise
    alone = [probe_rate(2.0)[0] for _ in range(2)]
    during, samples, elapsed = probe_rate(args.gil_seconds, lambda k: source(100 + k))
    alone += [probe_rate(2.0)[0] for _ in range(2)]
    base = statistics.mean(alone)
    noise = (max(alone) - min(alone)) / base
    hold = min(1.0 - during / base, 1.0)
    per_sample = elapsed / max(samples, 1)
    print(json.dumps({"config": "gil", "hold_fraction": hold, "noise_fraction": noise, "below_noise": hold <= noise,
                      "sample_ms": per_sample * 1e3, "gil_ms_per_sample": max(hold, 0.0) * per_sample * 1e3,
                      "noise_ms_per_sample": noise * per_sample * 1e3, "samples": samples}), flush=True)
    os._exit(0)


def gil_summary(gil: dict) -> str:
    """One line on the python path's GIL time per sample and the per-process ceiling it implies; a hold
    fraction within the probe's own noise is reported as a bound, not as a figure."""
    tail = "; the graph path holds no GIL per sample (tf.data threads run TF kernels only)"
    if gil.get("below_noise", gil["hold_fraction"] <= 0):
        bound = gil.get("noise_ms_per_sample", 0.0)
        cap = f"one process tops out above {1000.0 / bound:.0f} pairs/s" if bound > 0 else "no ceiling measurable"
        return (f"python path: GIL time per sample below the probe's noise ({100 * gil.get('noise_fraction', 0):.0f} "
                f"% of the probe rate between its windows alone, i.e. < {bound:.1f} ms of a {gil['sample_ms']:.1f} "
                f"ms sample; measured {100 * gil['hold_fraction']:.0f} %): {cap} on any number of cores" + tail)
    cap = 1000.0 / gil["gil_ms_per_sample"]
    return (f"python path: holds the GIL {gil['gil_ms_per_sample']:.1f} ms of a {gil['sample_ms']:.1f} ms sample "
            f"({100 * gil['hold_fraction']:.0f} %, probe noise {100 * gil.get('noise_fraction', 0):.0f} %): one "
            f"process tops out near {cap:.0f} pairs/s on any number of cores" + tail)


def _cpu_model() -> str:
    m = machine_description()
    simd = "AVX-512" if m["avx512f"] else "AVX2" if m["avx2"] else "no AVX2"
    return f"{m['cpu'] or platform.processor() or 'unknown CPU'} ({simd}, {m['cores']} cpus)"


def _commit() -> str:
    """HEAD's short hash, with "+changes" when tracked files differ from it."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=here).stdout.strip()
        changed = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=here).returncode == 1
    except OSError:
        return "unknown"
    return (head + ("+changes" if changed else "")) or "unknown"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="GOT-10k-format folder (default: generate 1280x720 sequences in a temp dir)")
    p.add_argument("--runs", type=positive_int, default=2, help="alternating rounds (median reported)")
    p.add_argument("--batches", type=positive_int, default=3, help="batches per timed run")
    p.add_argument("--warmup", type=non_negative_int, default=1)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--cores", type=positive_int, default=None, help="the 'all cores' figure's core count (default: all)")
    p.add_argument("--configs", default="python,graph,prepared,service",
                   help="subset of python,graph,prepared,service")
    p.add_argument("--gil-seconds", type=positive_float, default=6.0)
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--gil", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--tfds", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return _timed_worker(args)
    if args.gil:
        return _gil_worker(args)

    commit = _commit()  # the code the workers run: taken before the runs, which may outlast a new commit
    tmp = None
    if args.data is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_input_")
        args.data = str(Path(tmp.name) / "got10k")
        print("writing 8 x 60 frames of 1280x720 JPEG ...", flush=True)
        synthetic.write_dataset("got10k", args.data, num_sequences=8, num_frames=60, image_size=(1280, 720),
                                seed=0, split="train", progress=False)
    all_cores = args.cores or len(os.sched_getaffinity(0))
    modes = args.configs.split(",")
    unknown = sorted(set(modes) - {"python", "graph", "prepared", "service"})
    if unknown:
        raise SystemExit(f"--configs: unknown configuration {unknown[0]!r} (python, graph, prepared, service)")
    tfds_tmp = None
    if "prepared" in modes:
        tfds_tmp = tempfile.TemporaryDirectory(prefix="bench_input_tfds_")
        print("preparing them as a TFDS dataset ...", flush=True)
        _prepare(args.data, tfds_tmp.name)
    plan = [f"{m}@{n}" for m in modes for n in sorted({1, all_cores}) if not (m == "service" and n == 1)]
    common = ["--data", args.data, "--batches", str(args.batches), "--warmup", str(args.warmup),
              "--batch-size", str(args.batch_size)] + (["--tfds", tfds_tmp.name] if tfds_tmp else [])
    rates = {key: [] for key in plan}
    loads, failures, consumer_cpu = [], [], {}
    t_start = time.time()
    for run in range(args.runs):
        for config in plan:
            loads.append(os.getloadavg()[0])
            out = subprocess.run([sys.executable, "-m", "grm_jax.cli.bench_input", "--worker", "--config", config] + common,
                                 capture_output=True, text=True)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
            if out.returncode != 0 or not lines:
                failures.append(config)
                print(f"{config} failed:\n{out.stderr[-3000:]}", flush=True)
                continue
            report = json.loads(lines[-1])
            rates[config].append(report["rate"])
            if "consumer_cpu_ms_per_pair" in report:
                consumer_cpu.setdefault(config, []).append(report["consumer_cpu_ms_per_pair"])
        print(f"round {run + 1}/{args.runs} ({time.time() - t_start:.0f} s): "
              + ", ".join(f"{c}={r[-1]:.1f}" for c, r in rates.items() if r), flush=True)
    gil = None
    if "python" in modes and len(os.sched_getaffinity(0)) >= 2:
        loads.append(os.getloadavg()[0])
        out = subprocess.run([sys.executable, "-m", "grm_jax.cli.bench_input", "--gil", "--gil-seconds", str(args.gil_seconds)] + common,
                             capture_output=True, text=True)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        gil = json.loads(lines[-1]) if lines else None
        if gil is None:
            print(f"GIL probe failed:\n{out.stderr[-3000:]}")
    for t in (tmp, tfds_tmp):
        if t is not None:
            t.cleanup()

    med = {c: statistics.median(r) for c, r in rates.items() if r}
    print(f"\ninput pipeline, batch {args.batch_size}, 128/256 crops of 1280x720 JPEGs; {_cpu_model()}; commit "
          f"{commit}; {args.runs} alternating rounds of fresh pinned processes")
    print(f"{'configuration':14s} {'pairs/s':>9s} {'per core':>9s}   runs")
    for c in plan:
        if c in med:
            n = int(c.split("@")[1])
            print(f"{c:14s} {med[c]:9.1f} {med[c] / n:9.1f}   {[round(x, 1) for x in rates[c]]}")
    ratios = {}
    for mode in ("python", "graph", "prepared"):
        if f"{mode}@1" in med and f"{mode}@{all_cores}" in med and all_cores > 1:
            ratios[f"{mode} {all_cores} cores / 1 core"] = med[f"{mode}@{all_cores}"] / med[f"{mode}@1"]
    if "graph@1" in med and f"service@{all_cores}" in med:
        ratios[f"service {all_cores} workers / graph 1 core"] = med[f"service@{all_cores}"] / med["graph@1"]
    if "graph@1" in med and "python@1" in med:
        ratios["graph / python at 1 core"] = med["graph@1"] / med["python@1"]
    for n in sorted({1, all_cores}):
        if f"prepared@{n}" in med and f"graph@{n}" in med:
            ratios[f"prepared / folders (graph) at {n} core{'s' if n > 1 else ''}"] = \
                med[f"prepared@{n}"] / med[f"graph@{n}"]
    for k, v in ratios.items():
        print(f"  {k}: {v:.2f}x")
    for c, v in consumer_cpu.items():
        print(f"  {c}: the trainer-side process (consumer + dispatcher) takes {statistics.median(v):.2f} ms of CPU "
              "per pair")
    if gil:
        print(gil_summary(gil))
    print(f"load average (1 min) during the runs: min {min(loads):.1f} median {statistics.median(loads):.1f} "
          f"max {max(loads):.1f}; total {time.time() - t_start:.0f} s")
    result = {"cpu": _cpu_model(), "commit": commit, "command": " ".join(sys.argv), "batch_size": args.batch_size,
              "rates": rates, "median": med, "ratios": ratios, "consumer_cpu_ms_per_pair": consumer_cpu, "gil": gil, "load_average": loads,
              "failures": failures, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


def cli() -> None:
    """Entry point of `grm-bench-input` (pyproject.toml) and scripts/bench_input.py."""
    run_command(main)


if __name__ == "__main__":
    cli()

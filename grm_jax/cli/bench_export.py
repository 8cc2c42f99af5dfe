#!/usr/bin/env python
"""Tracker speed per engine: the JAX model, onnxruntime on the ONNX export, the reloaded JAX export.

    grm-bench-export --config demo_tiny                 # small model, CPU
    grm-bench-export --config vitb_256_ep300 --frames 10 --runs 5 --json results/bench_export.json

The model (random weights unless --checkpoint: speed does not depend on them) is exported to ONNX (batch 1)
and to a serialized JAX program (dynamic batch) in a temporary folder, then each engine tracks the same
generated sequence (a moving textured object, frames held in memory) with the same tracker loop: search crop
(OpenCV), network step, Hann window, box decoding, mapping back. One warm-up run per engine, then --runs rounds
in which every engine runs once, the order rotating from round to round so all see the same machine load;
frames/s is the median over rounds and the ratio to the JAX engine is the median of the per-round ratios.
Prints the CPU model, load average, commit, onnxruntime's thread count and the compiled memory_analysis of the
two XLA programs; --json writes everything.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from grm_jax.benchmarking import compiled_memory, finish_report, report_header
from grm_jax.cli import run_command
from grm_jax.cli.bench_tracking import make_frames
from grm_jax.config import add_config_args, config_from_args
from grm_jax.validation import fraction, positive_int


ENGINES = ("jax", "onnxruntime", "exported")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p, default="demo_tiny")
    p.add_argument("--checkpoint", type=Path, default=None, help="weights (default: random init)")
    p.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated subset of {ENGINES}")
    p.add_argument("--size", default="640x360", help="frame size WxH")
    p.add_argument("--frames", type=positive_int, default=30, help="tracked frames per timed run")
    p.add_argument("--runs", type=positive_int, default=5, help="timed rounds (each engine once per round)")
    p.add_argument("--threshold", type=fraction, default=0.0, help="division threshold (baked into the exports)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    engines = [e for e in args.engines.split(",") if e]
    if not engines or any(e not in ENGINES for e in engines) or "jax" not in engines:
        print(f"error: --engines {args.engines!r}: a subset of {ENGINES} that includes jax (the reference)",
              file=sys.stderr)
        return 2

    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_default_matmul_precision", "highest")

    from grm_jax.export import export_network, load_engine
    from grm_jax.specs import build_model
    from grm_jax.track import SequenceTracker, TrackerCore, TrackerSettings

    cfg = config_from_args(args)
    settings = TrackerSettings.from_config(cfg, threshold=args.threshold)
    model = build_model(cfg)
    if args.checkpoint is not None:
        from grm_jax.checkpoints.inference import load_for_inference
        variables = load_for_inference(args.checkpoint, cfg)
    else:
        z = jnp.zeros((1, settings.template_size, settings.template_size, 3))
        x = jnp.zeros((1, settings.search_size, settings.search_size, 3))
        variables = jax.jit(lambda k: model.init(k, z, x, jnp.ones((1, (z.shape[1] // model.patch_size) ** 2)),
                                                 train=False))(jax.random.PRNGKey(0))
    width, height = (int(v) for v in args.size.lower().split("x"))
    frames, boxes = make_frames(args.frames + 2, width, height)
    init_box = [float(v) for v in boxes[0]]
    report = {"config": args.config, "overrides": args.overrides, **report_header(), "jax": jax.__version__,
              "frame_size": [width, height], "frames_per_run": args.frames, "runs": args.runs,
              "threshold": args.threshold, "engines": {}}

    cores = {}
    with tempfile.TemporaryDirectory(prefix="grm_bench_export_") as tmp:
        for name in engines:
            if name == "jax":
                cores[name] = TrackerCore(model, variables, settings)
                continue
            fmt, batch = ("onnx", 1) if name == "onnxruntime" else ("jax", None)
            path = Path(tmp) / f"grm.{fmt}"
            t0 = time.perf_counter()
            export_network(model, variables, fmt=fmt, out_path=path, threshold=args.threshold, batch=batch,
                           with_decisions=False)
            engine = load_engine(path, name)
            cores[name] = TrackerCore(None, None, settings, engine=engine)
            report["engines"][name] = {"export_s": time.perf_counter() - t0, "file_bytes": path.stat().st_size}
            if name == "onnxruntime":
                opts = engine.session.get_session_options()
                report["engines"][name]["onnxruntime"] = {
                    "version": __import__("onnxruntime").__version__, "intra_op_threads": opts.intra_op_num_threads,
                    "providers": engine.session.get_providers()}
        trackers = {name: SequenceTracker(core) for name, core in cores.items()}

        def run(name) -> float:
            tracker = trackers[name]
            tracker.initialize(frames[0], init_box)
            tracker.track(frames[1])
            t = time.perf_counter()
            for k in range(2, 2 + args.frames):
                tracker.track(frames[k])
            return (time.perf_counter() - t) / args.frames

        final_boxes = {}
        for name in engines:   # warm-up (compilation, onnxruntime session set-up)
            t0 = time.perf_counter()
            run(name)
            report["engines"].setdefault(name, {})["warmup_s"] = time.perf_counter() - t0
            final_boxes[name] = list(trackers[name].state)
        times = {name: [] for name in engines}
        for r in tqdm(range(args.runs), desc="rounds", file=sys.stderr):
            order = engines[r % len(engines):] + engines[:r % len(engines)]
            for name in order:
                times[name].append(run(name))

    # compiled memory of the two XLA programs at batch 1 (the ONNX session's memory is not separable)
    s = settings
    nz = (s.template_size // (s.search_size // s.feat_size)) ** 2
    spec = (jax.ShapeDtypeStruct((1, s.template_size, s.template_size, 3), jnp.float32),
            jax.ShapeDtypeStruct((1, nz), jnp.float32),
            jax.ShapeDtypeStruct((1, s.search_size, s.search_size, 3), jnp.uint8))
    step = cores["jax"]._step
    report["engines"]["jax"]["memory_analysis"] = compiled_memory(step.lower(
        cores["jax"].variables, *spec, jnp.float32(s.threshold), jnp.ones((1,), bool)).compile())
    if "exported" in cores:
        eng = cores["exported"].engine
        ins = [jax.ShapeDtypeStruct([1] + e["shape"][1:], jnp.float32) for e in eng.meta["inputs"]]
        report["engines"]["exported"]["memory_analysis"] = compiled_memory(eng._call.lower(*ins).compile())

    report["loadavg_after"] = os.getloadavg()
    ref = times["jax"]
    print(f"{report['cpu']}, {report['cpu_count']} CPUs, commit {report['commit'][:10]}, config {args.config}, "
          f"{args.frames} frames x {args.runs} rounds, load average before {report['loadavg_before'][0]:.2f} / "
          f"after {report['loadavg_after'][0]:.2f}")
    for name in engines:
        med = statistics.median(times[name])
        entry = report["engines"][name]
        entry.update({"median_s_per_frame": med, "fps": 1 / med, "runs_s_per_frame": times[name],
                      "ratio_to_jax_paired_median": statistics.median(a / b for a, b in zip(ref, times[name])),
                      "last_box_after_warmup": final_boxes[name]})
        mem = entry.get("memory_analysis") or {}
        print(f"{name:12s} {entry['fps']:8.2f} frames/s  {entry['ratio_to_jax_paired_median']:.2f}x jax"
              + (f"  temp {mem['temporaries'] / 2**20:.1f} MiB, args {mem['arguments'] / 2**20:.1f}"
                 f" MiB" if mem else ""))
    finish_report(report, args.json)
    return 0


def cli() -> None:
    """Entry point of `grm-bench-export` (pyproject.toml) and scripts/bench_export.py."""
    run_command(main, huge_pages=True)


if __name__ == "__main__":
    cli()

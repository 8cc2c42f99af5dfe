#!/usr/bin/env python
"""End-to-end tracking speed (search crop included): one sequence at a time and batched, ViT-B/256 by default.

    grm-bench-tracking                           # CPU, 1280x720 generated sequence
    grm-bench-tracking --json bench.json --batch 16 --batch-frames 3

Frames are generated (1280x720, a moving textured object) and held in memory, so frames/s covers what the
official tracker's `track()` does per frame: search crop (OpenCV), preprocessing, network forward, Hann window,
box decoding, mapping back. Weights are random (speed does not depend on them).

Single: warm-up, then --runs timed runs of --frames frames; ours and an in-run PyTorch baseline alternate run by
run (same machine load). The baseline is the same host crop + torch preprocessing + a ViT-B/16 encoder forward on
the same 64 + 256 tokens (grm_jax/cli/bench_inference.py's block stack; no box head and no division predictors, so it
is a LOWER bound on the official tracker's time per frame). The issue's reference figure for the official
tracker on a 2-core CPU (2.07 frames/s) is reported next to it.

Batched: --batch sequences tracked together (track_sequences, both batch modes), median of --runs runs of
--batch-frames frames per sequence; frames/s counts every tracked frame of every sequence.

Devices: --devices 1,2,4 runs the batched part (the same --batch split over N devices) once per device count,
each in a fresh process, since JAX fixes its devices at start: on the CPU N fake devices
(XLA_FLAGS=--xla_force_host_platform_device_count=N, sharing the host's cores), on GPUs the first N. The report
gives frames/s per device count and batch mode.
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
from tqdm import tqdm

from data_pipeline.synthetic import make_sequence
from grm_jax import geometry
from grm_jax.benchmarking import finish_report, report_header
from grm_jax.cli import run_command
from grm_jax.cli.bench_inference import TorchViTB16
from grm_jax.config import backbone_dims, load_config
from grm_jax.sequence import Sequence
from grm_jax.validation import non_negative_int, positive_int, size_pair


OFFICIAL_REFERENCE_FPS = 2.07  # official GRM tracker, ViT-B/256, 1280x720, 2-core CPU (issue)


def make_frames(num_frames: int, width: int, height: int, seed: int = 0):
    seq = make_sequence(np.random.default_rng(seed), num_frames, width, height, occlusion=False, out_of_view=False)
    return [seq.render(t) for t in range(num_frames)], seq.boxes.astype(float)


def torch_baseline(frames, init_box, settings, threads: int, device: str, dims):
    # optional dependency
    import torch

    dev = torch.device("cuda" if device == "gpu" and torch.cuda.is_available() else "cpu")
    if dev.type == "cpu":
        torch.set_num_threads(threads)
    model = TorchViTB16.build(*dims, template=settings.template_size, search=settings.search_size).to(dev)
    mean = torch.tensor(geometry.IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(geometry.IMAGENET_STD, device=dev).view(1, 3, 1, 1)

    def prep(crop):
        t = torch.tensor(crop, device=dev).float().permute(2, 0, 1).unsqueeze(0)
        return ((t / 255.0) - mean) / std

    z_crop, _, _ = geometry.sample_target(frames[0], list(init_box), settings.template_factor,
                                          settings.template_size)
    z = prep(z_crop)

    def run(indices):
        state = list(init_box)
        for k in indices:
            crop, rf, _ = geometry.sample_target(frames[k], state, settings.search_factor, settings.search_size)
            with torch.inference_mode():
                model(z, prep(crop))
            if dev.type == "cuda":
                torch.cuda.synchronize()
            state = list(state)   # the baseline does not move (no head); crop cost is the same
        return state
    return run, f"torch {torch.__version__} ViT encoder {dims} + same crop, {threads} threads"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="vitb_256_ep300")
    p.add_argument("--size", type=size_pair, default="1280x720", help="frame size WxH")
    p.add_argument("--frames", type=positive_int, default=6, help="frames per timed single-sequence run")
    p.add_argument("--runs", type=positive_int, default=5)
    p.add_argument("--batch", type=non_negative_int, default=16, help="sequences tracked at once (0: skip batched)")
    p.add_argument("--batch-frames", type=positive_int, default=None,
                   help="frames per sequence in a batched run (default: 3 on CPU, 30 on GPU)")
    p.add_argument("--batch-modes", default="exact,vectorized")
    p.add_argument("--device", choices=["cpu", "gpu"], default=None, help="default: gpu when JAX sees one")
    p.add_argument("--threads", type=positive_int, default=2, help="torch threads for the CPU baseline")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--devices", default=None,
                   help="comma-separated device counts: the batched runs once per count, each in a fresh process")
    p.add_argument("--only-devices", type=positive_int, default=None, help=argparse.SUPPRESS)   # one --devices child
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.devices is not None:
        return compare_device_counts(args, argv if argv is not None else sys.argv[1:])

    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_default_matmul_precision", "highest")

    from grm_jax.specs import build_model
    from grm_jax.track import SequenceTracker, TrackerCore, TrackerSettings

    device = args.device or ("gpu" if any(d.platform == "gpu" for d in jax.devices()) else "cpu")
    if device == "gpu" and not any(d.platform == "gpu" for d in jax.devices()):
        print("error: --device gpu but JAX sees no GPU", file=sys.stderr)
        return 2
    usable = [d for d in jax.local_devices() if (d.platform == "gpu") == (device == "gpu")]
    if args.only_devices is not None and args.only_devices > len(usable):
        print(f"error: {args.only_devices} devices asked, JAX sees {len(usable)} {device} device(s)", file=sys.stderr)
        return 2
    jdev = usable[0]
    width, height = args.size
    cfg = load_config(args.config)
    settings = TrackerSettings.from_config(cfg, "lasot")
    model = build_model(cfg)
    z = jnp.zeros((1, settings.template_size, settings.template_size, 3))
    x = jnp.zeros((1, settings.search_size, settings.search_size, 3))
    with jax.default_device(jdev):
        variables = jax.jit(lambda k: model.init(k, z, x, train=False))(jax.random.PRNGKey(0))
    # enough frames for the batched runs too, so their per-sequence length is what was asked for (the first
    # frame of each sequence is the template: short sequences would mostly time initialisation)
    per_seq = args.batch_frames or (3 if device == "cpu" else 30)
    n_frames = max(args.frames + 2, 4, per_seq if args.batch > 0 else 0)
    frames, boxes = make_frames(n_frames, width, height)
    init_box = [float(v) for v in boxes[0]]
    report = {"device": device, "jax_device": str(jdev), "config": args.config, "frame_size": [width, height],
              **report_header(), "official_reference_fps": OFFICIAL_REFERENCE_FPS}
    load_before = report["loadavg_before"]
    if args.only_devices is not None:
        report["devices"] = args.only_devices
        report["batched"] = batched_runs(args, model, variables, settings, usable[:args.only_devices], frames,
                                         boxes, per_seq)
        report["loadavg_after"] = os.getloadavg()
        finish_report(report, args.json)
        return 0

    # ---------------------------------------------------------------- one sequence at a time
    core = TrackerCore(model, variables, settings, device=jdev)
    tracker = SequenceTracker(core)
    t0 = time.perf_counter()
    tracker.initialize(frames[0], init_box)
    tracker.track(frames[1])
    report["first_frame_s_incl_compile"] = time.perf_counter() - t0
    timed = list(range(2, 2 + args.frames))

    def ours():
        tracker.initialize(frames[0], init_box)
        tracker.track(frames[1])
        t = time.perf_counter()
        for k in timed:
            tracker.track(frames[k])
        return time.perf_counter() - t

    baseline, base_desc = (None, None)
    if not args.no_baseline:
        try:
            baseline, base_desc = torch_baseline(frames, init_box, settings, args.threads, device, backbone_dims(cfg))
            baseline([1])
        except Exception as err:  # noqa: BLE001 - the bench still reports ours
            baseline, base_desc = None, f"baseline unavailable: {type(err).__name__}: {err}"
    ours()
    t_ours, t_base = [], []
    for _ in tqdm(range(args.runs), desc="single", file=sys.stderr):
        t_ours.append(ours() / len(timed))
        if baseline is not None:
            t = time.perf_counter()
            baseline(timed)
            t_base.append((time.perf_counter() - t) / len(timed))
    single = {"median_s_per_frame": statistics.median(t_ours), "fps": 1 / statistics.median(t_ours),
              "runs_s_per_frame": t_ours}
    single["speedup_vs_official_reference"] = single["fps"] / OFFICIAL_REFERENCE_FPS
    if t_base:
        single["baseline"] = {"desc": base_desc, "median_s_per_frame": statistics.median(t_base),
                              "fps": 1 / statistics.median(t_base), "runs_s_per_frame": t_base}
        single["speedup_vs_baseline_paired_median"] = statistics.median(b / o for b, o in zip(t_base, t_ours))
    elif base_desc:
        single["baseline"] = {"desc": base_desc}
    report["single"] = single
    print(f"single: {single['fps']:.2f} frames/s ({single['speedup_vs_official_reference']:.2f}x the official "
          f"{OFFICIAL_REFERENCE_FPS} frames/s reference)"
          + (f"; in-run baseline {single['baseline']['fps']:.2f} frames/s, paired ratio "
             f"{single['speedup_vs_baseline_paired_median']:.2f}x" if t_base else ""))

    # ---------------------------------------------------------------- batched
    if args.batch > 0:
        report["batched"] = batched_runs(args, model, variables, settings, [jdev], frames, boxes, per_seq)
        for mode, r in report["batched"].items():
            r["speedup_vs_single"] = r["fps"] / single["fps"]
            print(f"batched {mode} x{args.batch}: {r['fps']:.2f} frames/s ({r['speedup_vs_single']:.2f}x single)")
    report["loadavg_after"] = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {report['loadavg_after'][0]:.2f} "
          f"on {os.cpu_count()} cores")
    finish_report(report, args.json)
    return 0


def batched_runs(args, model, variables, settings, devices, frames, boxes, per_seq) -> dict:
    """{batch mode: frames/s and run times} of --batch sequences of `per_seq` frames tracked together on
    `devices` (warm-up run first)."""
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    from grm_jax.track import TrackerCore, track_sequences

    seqs = [Sequence(f"bench_{i:02d}", "bench", list(range(per_seq)), boxes[:per_seq], np.ones(per_seq, bool))
            for i in range(args.batch)]
    out = {}
    for mode in [m for m in args.batch_modes.split(",") if m]:
        bcore = TrackerCore(model, variables, settings, batch_mode=mode, devices=devices)

        def run_batch():
            t = time.perf_counter()
            for _ in track_sequences(bcore, seqs, batch_size=args.batch, read_frame=frames.__getitem__):
                pass
            return time.perf_counter() - t

        t_first = run_batch()
        times = [run_batch() for _ in tqdm(range(args.runs), desc=f"batched {mode} {len(devices)} dev",
                                           file=sys.stderr)]
        tracked = args.batch * (per_seq - 1)
        med = statistics.median(times)
        out[mode] = {"batch": args.batch, "devices": len(devices), "frames_per_sequence": per_seq,
                     "median_s_per_run": med, "fps": tracked / med, "runs_s": times,
                     "first_run_s_incl_compile": t_first}
    return out


def _without_option(argv: list[str], name: str) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out


def compare_device_counts(args, argv: list[str]) -> int:
    """--devices: one fresh process per device count (`--only-devices N`), their reports gathered."""
    try:
        counts = [int(v) for v in args.devices.split(",") if v.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        print(f"error: --devices {args.devices!r}: expected comma-separated device counts >= 1, e.g. 1,2,4",
              file=sys.stderr)
        return 2
    if args.batch < 1:
        print("error: --devices compares batched runs: --batch must be >= 1", file=sys.stderr)
        return 2
    child_argv = _without_option(_without_option(argv, "--devices"), "--json")
    report = {"devices": {}, **report_header()}
    for n in counts:
        env = dict(os.environ)
        if args.device != "gpu":   # fake CPU devices; a GPU run uses the first n GPUs
            flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
            env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={n}"])
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "report.json"
            proc = subprocess.run([sys.executable, "-m", "grm_jax.cli.bench_tracking", *child_argv,
                                   "--only-devices", str(n), "--json", str(out)], env=env)
            if proc.returncode != 0 or not out.is_file():
                print(f"error: the run on {n} device(s) failed (exit status {proc.returncode})", file=sys.stderr)
                return proc.returncode or 1
            child = json.loads(out.read_text())
        report["devices"][str(n)] = child["batched"]
        report.setdefault("device", child["device"])
        for mode, r in child["batched"].items():
            base = report["devices"][str(counts[0])][mode]["fps"]
            print(f"{n} device(s), batched {mode} x{args.batch}: {r['fps']:.2f} frames/s "
                  f"({r['fps'] / base:.2f}x {counts[0]} device(s))", flush=True)
    report["loadavg_after"] = os.getloadavg()
    finish_report(report, args.json)
    return 0


def cli() -> None:
    """Entry point of `grm-bench-tracking` (pyproject.toml) and scripts/bench_tracking.py."""
    run_command(main, huge_pages=True)


if __name__ == "__main__":
    cli()

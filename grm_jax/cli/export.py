#!/usr/bin/env python
"""Export the tracker's network step of a trained GRM to ONNX or to a serialized JAX program.

    grm-export --config vitb_256_ep300 --checkpoint GRM_ep0300.pth.tar \
        --format onnx --out exports/grm_vitb_256.onnx [--batch 1] [--threshold 0.4 | --dataset lasot]
    grm-export --config vitb_256_ep300 --checkpoint checkpoints/grm_vitb_256 \
        --format jax --out exports/grm_vitb_256.jax [--batch dynamic]

Inputs of the exported step: the ImageNet-normalised float32 template and search crops (NHWC) and, for
MODEL.TGT_TYPE roimax / roiavg, the template box mask; outputs: pred_boxes, tracker_box (decoded at the
Hann-windowed peak), score_map and, unless --no-decisions, the per-layer division decisions
(grm_jax/export.py). The division threshold is baked in: --threshold, else TEST.HYPER of --dataset, else
TEST.HYPER.DEFAULT. Writes <out> and <out>.json (config, inputs/outputs, threshold, commit, opset) beside their
place, reloads the file there, runs it on seeded random crops next to the JAX forward, and puts both in place only
when no output differs by more than --tol and no division decision flips (the sidecar last: a file without its
sidecar is no finished export); a failed, killed or interrupted run leaves --out as it was. The last printed line
is a JSON summary. Exit status: 0 done, 1 the export failed or differs, 2 bad input (one `error:` line).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from grm_jax.cli import run_command, run_reporting_user_errors
from grm_jax.config import add_config_args, config_from_args
from grm_jax.export import (DEFAULT_OPSET, FORMATS, ExportError, check_export_target, export_network, load_engine,
                            network_step, sidecar_path)
from grm_jax.install import install_checked
from grm_jax.runtime import report_user_error, user_errors
from grm_jax.validation import fraction, non_negative_float, positive_int
from grm_jax.workdir import workdir_path


def parse_batch(text: str):
    """--batch: a positive integer or 'dynamic'."""
    return text if text == "dynamic" else positive_int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--checkpoint", required=True, type=workdir_path,
                   help="converted orbax dir, training workdir (local or gs://), or official .pth.tar")
    p.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
    p.add_argument("--out", required=True, type=Path, help="output file (the sidecar is <out>.json)")
    p.add_argument("--batch", type=parse_batch, default=None,
                   help="batch size N or 'dynamic' (default: 1 for onnx, dynamic for jax; onnx needs a number)")
    p.add_argument("--threshold", type=fraction, default=None, help="division threshold baked into the export")
    p.add_argument("--dataset", default=None, help="take the threshold of this TEST.HYPER key")
    p.add_argument("--no-decisions", action="store_true", help="leave the division decisions output out")
    p.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET, help="ONNX opset")
    p.add_argument("--platforms", default="cpu,cuda",
                   help="--format jax: backends the program is lowered for (comma-separated: cpu, cuda, rocm, tpu)")
    p.add_argument("--tol", type=non_negative_float, default=1e-4, help="max abs difference allowed by the check after export")
    p.add_argument("--no-verify", action="store_true", help="skip the check against the JAX forward")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier export at --out (only once the new one is written and checked)")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return p


def verify(model, variables, engine, threshold: float, with_decisions: bool, seed: int = 0) -> dict:
    """Max abs difference per output and flipped decisions of the export vs the JAX forward, seeded inputs."""
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    import jax

    fn, input_names, output_names = network_step(model, variables, threshold=threshold,
                                                 with_decisions=with_decisions)
    rng = np.random.default_rng(seed)
    b = engine.batch or 2
    feeds = {}
    for name in input_names:
        shape = [b] + list(engine.inputs[name]["shape"][1:])
        feeds[name] = ((rng.random(shape) < 0.5).astype(np.float32) if name == "template_mask"
                       else rng.normal(size=shape).astype(np.float32))
    with jax.default_matmul_precision("highest"):
        ref = dict(zip(output_names, jax.jit(fn)(*(feeds[n] for n in input_names))))
    got = engine.run(feeds)
    report = {k: float(np.max(np.abs(got[k] - np.asarray(ref[k])))) for k in output_names if k != "decisions"}
    if "decisions" in ref:
        report["flipped_decisions"] = int(np.sum(got["decisions"] != np.asarray(ref["decisions"])))
        report["decisions_total"] = int(np.asarray(ref["decisions"]).size)
    return report


class ExportCheckError(RuntimeError):
    """The written export differs from the JAX forward (nothing is put in place)."""

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting_user_errors(lambda: run(args), debug=args.debug)


def run(args) -> int:
    out = args.out
    check_export_target(out, args.force)   # before minutes of work
    if args.batch is None:
        args.batch = 1 if args.fmt == "onnx" else "dynamic"
    batch = None if args.batch == "dynamic" else args.batch
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    import jax
    jax.config.update("jax_default_matmul_precision", "highest")
    from grm_jax.checkpoints.inference import load_for_inference
    from grm_jax.specs import build_model
    from grm_jax.track.tracker import division_threshold

    say = lambda text: print(text, file=sys.stderr, flush=True)   # noqa: E731 - stages of a minutes-long run
    try:
        cfg = config_from_args(args)
        threshold = args.threshold if args.threshold is not None else division_threshold(cfg, args.dataset)
        say(f"loading {args.checkpoint}")
        variables, info = load_for_inference(args.checkpoint, cfg, return_info=True)
    except user_errors() as err:
        return report_user_error(err)
    model = build_model(cfg)
    if model.dtype != jax.numpy.float32:
        print(f"note: MODEL.DTYPE={cfg.MODEL.DTYPE}: the export computes in that dtype", file=sys.stderr)
    say(f"exporting to {args.fmt} (threshold {threshold:g}, batch {args.batch}); a ViT-B takes minutes")
    summary = {"out": str(out), "sidecar": str(sidecar_path(out)), "format": args.fmt, "threshold": threshold,
               "batch": "dynamic" if batch is None else batch}

    def write_and_check(staging: Path) -> dict:
        """Export into `staging`, check the file there; install_checked puts it at --out only afterwards."""
        staged = staging / out.name
        t0 = time.perf_counter()
        sidecar = export_network(
            model, variables, fmt=args.fmt, out_path=staged, threshold=threshold, batch=batch,
            with_decisions=not args.no_decisions, opset=args.opset,
            platforms=tuple(p for p in args.platforms.split(",") if p), mean=cfg.DATA.MEAN, std=cfg.DATA.STD,
            metadata={"config": args.config, "overrides": list(args.overrides),
                      "checkpoint": {"path": str(args.checkpoint), "format": info.get("format"),
                                     "step": info.get("step")}})
        seconds = time.perf_counter() - t0
        summary.update(bytes=staged.stat().st_size, export_seconds=round(seconds, 2))
        if args.fmt == "onnx":
            summary["opset"] = args.opset
        else:
            summary["platforms"] = sidecar["platforms"]
        if not args.no_verify:
            say(f"wrote the export in {seconds:.0f} s; checking it against the JAX forward")
            report = verify(model, variables, load_engine(staged), threshold, not args.no_decisions)
            summary["verify"] = report
            errors = [v for k, v in report.items() if k not in ("flipped_decisions", "decisions_total")]
            if max(errors) > args.tol or report.get("flipped_decisions", 0):
                raise ExportCheckError(f"the export differs from the JAX forward beyond --tol {args.tol}: {report}; "
                                       f"nothing written to {out}", summary)
        return sidecar

    try:   # the sidecar last: an export is finished only once both are in place
        install_checked(write_and_check, [out, sidecar_path(out)])
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ExportCheckError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(json.dumps(exc.summary))
        return 1
    print(json.dumps(summary))
    return 0


def cli() -> None:
    """Entry point of `grm-export` (pyproject.toml) and scripts/export.py."""
    run_command(main)


if __name__ == "__main__":
    cli()

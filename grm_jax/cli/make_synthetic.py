#!/usr/bin/env python
"""Write synthetic tracking datasets in the on-disk formats of the real benchmarks.

    grm-make-synthetic OUT_DIR --size demo            # every format under OUT_DIR/<format>/
    grm-make-synthetic OUT_DIR --format lasot --sequences 8 --frames 60 --image-size 320x240
    grm-make-synthetic OUT_DIR --format got10k --split train --size hd   # 1280x720 frames

Same --seed -> identical files.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from data_pipeline.synthetic import FORMATS, SIZES, count_files, write_all, write_dataset
from grm_jax.cli import run_command, run_reporting_user_errors
from grm_jax.validation import int_range, positive_int, seed, size_pair


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--size", default="tiny", choices=sorted(SIZES), help="preset (default tiny)")
    p.add_argument("--format", choices=FORMATS, help="write only this format directly under OUT")
    p.add_argument("--split", help="split for --format (got10k: train|val|test; lasot, trackingnet: train|test)")
    p.add_argument("--sequences", type=positive_int, help="number of sequences (images for coco)")
    p.add_argument("--frames", type=int_range(lo=1), help="frames per sequence: N or MIN-MAX")
    p.add_argument("--image-size", type=size_pair, help="WIDTHxHEIGHT")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    args = p.parse_args(argv)
    return run_reporting_user_errors(lambda: run(args), debug=args.debug)


def run(args) -> int:
    start = time.perf_counter()
    preset = SIZES[args.size]
    if args.format:
        evaluation = args.format not in ("got10k", "lasot", "trackingnet", "coco") or args.split in ("val", "test")
        write_dataset(
            args.format, args.out,
            num_sequences=args.sequences or preset["eval_sequences" if evaluation else "num_sequences"],
            num_frames=args.frames or preset["eval_frames" if evaluation else "num_frames"],
            image_size=args.image_size or preset["image_size"], seed=args.seed, split=args.split, progress=True)
    else:
        overrides = {}
        if args.sequences:
            overrides["num_sequences"] = args.sequences
        if args.frames:
            overrides["num_frames"] = args.frames
        if args.image_size:
            overrides["image_size"] = args.image_size
        write_all(args.out, args.size, seed=args.seed, progress=True, **overrides)
    files, size = count_files(args.out)
    print(f"wrote {files} files, {size / 2**20:.1f} MiB under {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


def cli() -> None:
    """Entry point of `grm-make-synthetic` (pyproject.toml) and scripts/make_synthetic.py."""
    run_command(main)


if __name__ == "__main__":
    cli()

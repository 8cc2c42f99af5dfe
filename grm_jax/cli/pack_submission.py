#!/usr/bin/env python
"""Pack raw results into a GOT-10k test or TrackingNet test server submission (zip).

    grm-pack-submission got10k WORKDIR/got10k --out got10k_submit.zip [--dataset-root DATA/GOT10k]
    grm-pack-submission trackingnet WORKDIR/trackingnet --out trackingnet_submit.zip

With --dataset-root the list of test sequences is read and a missing result is an error.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grm_jax.cli import run_command



def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benchmark", choices=["got10k", "trackingnet"])
    p.add_argument("results", type=Path, help="folder with <seq>.txt (and <seq>_time.txt for GOT-10k)")
    p.add_argument("--out", type=Path, required=True, help="zip file to write")
    p.add_argument("--dataset-root", type=Path, default=None, help="test set, to check every sequence has a result")
    p.add_argument("--no-times", action="store_true", help="GOT-10k: do not require time files")
    args = p.parse_args(argv)

    from grm_jax.evaluation.submission import SubmissionError, pack_got10k, pack_trackingnet

    expected = None
    if args.dataset_root is not None:
        from grm_jax.evaluation.datasets import load_eval_dataset
        name = "got10k_test" if args.benchmark == "got10k" else "trackingnet"
        expected = [s.name for s in load_eval_dataset(name, args.dataset_root, verify_frames=False)]
    try:
        if args.benchmark == "got10k":
            out = pack_got10k(args.results, args.out, expected, require_times=not args.no_times)
        else:
            out = pack_trackingnet(args.results, args.out, expected)
    except SubmissionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


def cli() -> None:
    """Entry point of `grm-pack-submission` (pyproject.toml) and scripts/pack_submission.py."""
    run_command(main)


if __name__ == "__main__":
    cli()

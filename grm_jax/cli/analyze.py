#!/usr/bin/env python
"""Score raw tracking results (official format) of one or more trackers on a benchmark; tables and plots.

    grm-analyze --dataset otb --dataset-root DATA/OTB100 \
        --tracker GRM-JAX=work/otb_run --tracker OSTrack=published/ostrack/otb --out reports/otb

Writes summary.md / summary.csv / summary.json, per_sequence.csv/.md and success / precision / normalised-precision
plots (PNG) into --out; prints the summary table. Result folders hold `<seq>.txt` files (comma or tab, int or
float); GOT-10k / TrackingNet results may sit in a `got10k/` / `trackingnet/` subfolder as our tracker writes them.
On GOT-10k val the toolkit's AO / SR0.5 / SR0.75 are reported too. A missing, malformed or binary result file,
an unknown dataset or a bad annotation line ends with one `error:` line naming it and exit status 2 (--debug:
traceback).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from grm_jax.cli import run_command, run_reporting_user_errors
from grm_jax.runtime import quiet_startup

quiet_startup()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="benchmark name (lasot, got10k_val, nfs, uav, avist, otb, tnl2k...)")
    p.add_argument("--dataset-root", required=True, type=Path, help="benchmark folder")
    p.add_argument("--tracker", action="append", required=True, metavar="NAME=DIR",
                   help="a tracker's results folder (repeat for several; NAME= may be left out)")
    p.add_argument("--sequences", nargs="*", default=None, help="only these sequences")
    p.add_argument("--only-existing", action="store_true", help="take the listed sequences found on disk")
    p.add_argument("--skip-missing", action="store_true",
                   help="leave out sequences some tracker has no result for (default: error)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: no files, table only)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    args = p.parse_args(argv)
    return run_reporting_user_errors(lambda: run(args), debug=args.debug)


def run(args) -> int:

    from grm_jax.evaluation.analysis import analyze, load_tracker_results, summary_rows, write_report, markdown_table
    from grm_jax.evaluation.datasets import load_eval_dataset

    sequences = load_eval_dataset(args.dataset, args.dataset_root, args.sequences, only_existing=args.only_existing,
                                  verify_frames=False)
    trackers = []
    for spec in args.tracker:
        name, _, folder = spec.rpartition("=")
        folder = Path(folder)
        trackers.append(load_tracker_results(name or folder.name, folder, sequences, missing_ok=args.skip_missing))
    report = analyze(sequences, trackers, args.dataset, skip_missing=args.skip_missing)
    print(markdown_table(summary_rows(report)), end="")
    if args.out is not None:
        files = write_report(report, args.out, plots=not args.no_plots)
        print(f"report written to {args.out} ({', '.join(sorted(p.name for p in files.values()))})")
    return 0


def cli() -> None:
    """Entry point of `grm-analyze` (pyproject.toml) and scripts/analyze.py."""
    run_command(main)


if __name__ == "__main__":
    cli()

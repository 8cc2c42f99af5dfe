#!/usr/bin/env python
"""Score raw tracking results (official format) of one or more trackers on a benchmark; tables and plots.

    grm-analyze --dataset otb --dataset-root DATA/OTB100 \
        --tracker GRM-JAX=work/otb_run --tracker OSTrack=published/ostrack/otb --out reports/otb

Writes summary.md / .csv / .json / .tex, per_sequence.csv/.md and success / precision / normalised-precision
plots (PNG and PDF) into --out; prints the summary table. Where the benchmark ships them (grm_jax/evaluation/
attributes.py names each file and layout): results per attribute (attributes.md/.csv/.json/.tex, one success
plot per attribute, attributes_overview.png/.pdf) and on hard frames (hard_frames.md/.csv/.json: flagged frames
and the --reappear-frames frames after the target reappears). Results folders holding `<seq>_division.txt`
(grm-track --record-division) add the token-division statistics (division.md/.csv/.json, division.png/.pdf).
--reference NAME adds paired bootstrap 95 % intervals of every metric's difference to that tracker
(intervals.md/.csv/.json; --resamples, --seed). Result folders hold `<seq>.txt` files (comma or tab, int or
float); GOT-10k / TrackingNet results may sit in a `got10k/` / `trackingnet/` subfolder as our tracker writes them.
On GOT-10k val the toolkit's AO / SR0.5 / SR0.75 are reported too. A missing, malformed or binary result file,
an unknown dataset or a bad annotation line ends with one `error:` line naming it and exit status 2 (--debug:
traceback).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from grm_jax.cli import run_command, run_reporting_user_errors
from grm_jax.evaluation.analysis import (AnalysisError, analyze, check_result_lengths, load_tracker_results,
                                         markdown_table, summary_rows, write_report)
from grm_jax.evaluation.attributes import read_attributes
from grm_jax.evaluation.datasets import load_eval_dataset
from grm_jax.evaluation.metrics import MetricsError
from grm_jax.validation import non_negative_int, positive_int, seed


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
    p.add_argument("--attributes", type=Path, default=None, metavar="DIR",
                   help="folder of per-sequence attribute files (LaSOT toolkit annos/att, OTB toolkit anno/att); "
                        "default: looked for under --dataset-root")
    p.add_argument("--reappear-frames", type=non_negative_int, default=10, metavar="N",
                   help="hard frames: the N frames after the target reappears (default 10)")
    p.add_argument("--reference", default=None, metavar="NAME",
                   help="tracker whose per-sequence results the others are compared with (bootstrap intervals)")
    p.add_argument("--resamples", type=positive_int, default=10000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=seed, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: no files, table only)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    args = p.parse_args(argv)
    return run_reporting_user_errors(lambda: run(args), debug=args.debug, also=(AnalysisError, MetricsError))


def run(args) -> int:
    for flag, value, low in (("--reappear-frames", args.reappear_frames, 1), ("--resamples", args.resamples, 100)):
        if value < low:
            raise AnalysisError(f"{flag} must be >= {low}, got {value}")
    specs = []
    for spec in args.tracker:
        name, _, folder = spec.rpartition("=")
        specs.append((name or Path(folder).name, Path(folder)))
    names = [n for n, _ in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise AnalysisError(f"--tracker name(s) given more than once: {', '.join(duplicates)} (give each NAME=DIR "
                            "a different NAME)")
    sequences = load_eval_dataset(args.dataset, args.dataset_root, args.sequences, only_existing=args.only_existing,
                                  verify_frames=False)
    trackers = [load_tracker_results(n, folder, sequences, missing_ok=args.skip_missing) for n, folder in specs]
    short = check_result_lengths(sequences, trackers)
    if short:
        print(f"note: {len(short)} result files are shorter than their sequences; scored as the official analysis "
              f"does (padded with zero boxes): {'; '.join(short[:3])}{'; ...' if len(short) > 3 else ''}")
    attributes, message = read_attributes(args.dataset, args.dataset_root, sequences, args.attributes)
    report = analyze(sequences, trackers, args.dataset, skip_missing=args.skip_missing, attributes=attributes,
                     attribute_message=message, reappear_frames=args.reappear_frames, reference=args.reference,
                     resamples=args.resamples, seed=args.seed)
    print(markdown_table(summary_rows(report)), end="")
    print(message)
    if args.out is not None:
        files = write_report(report, args.out, plots=not args.no_plots)
        print(f"report written to {args.out} ({', '.join(sorted(p.name for p in files.values()))})")
    return 0


def cli() -> None:
    """Entry point of `grm-analyze` (pyproject.toml) and scripts/analyze.py."""
    run_command(main)


if __name__ == "__main__":
    cli()

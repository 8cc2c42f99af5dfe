#!/usr/bin/env python
"""Run the GRM tracker over an evaluation benchmark and write raw results in the official format.

    grm-track --config vitb_256_ep300 --checkpoint GRM_ep0300.pth.tar \
        --dataset lasot --dataset-root DATA/LaSOT --workdir results/grm_vitb_256 [--batch-size 16]

Writes `<workdir>/<seq>.txt` (GOT-10k / TrackingNet: `<workdir>/got10k|trackingnet/<seq>.txt` + `<seq>_time.txt`).
Sequences whose result file exists are skipped, so an interrupted run resumes where it stopped. The division
threshold comes from TEST.HYPER[<DATASET>] (else DEFAULT) unless --threshold is given. --batch-size N tracks N
sequences at once (default: one per device), split over all local devices (--devices N: the first N); with
--batch-mode exact, the default, the boxes are those of one sequence at a time on one device.
Several processes (JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID or GRM_JAX_DISTRIBUTED=1, as
grm-train; docs/MULTIHOST.md): each tracks its share of the sequences (balanced by frame count) on its own devices
into the same --workdir; process 0 holds the folder's lock, writes track_config.json and, once every share is
done, prints the summary.
SIGTERM / SIGINT: the run stops after the current frame step, keeps every finished sequence's results, says so and
exits with status 75; the same command continues.
--dataset-source tfds (or DATA.SOURCE=tfds) reads GOT-10k val/test, LaSOT test or TrackingNet test from a prepared
TFDS dataset (scripts/prepare_tfds.py): --dataset-root is then its data dir (default DATA.TFDS_DIRS.<KEY>).

`<workdir>/track_config.json` records the settings (resolved config, checkpoint, dataset, threshold); a rerun with
other settings refuses to add to the folder unless --allow-mixed-settings is given (then every settings record is
kept there). One run at a time per folder (lock `<workdir>/.lock`, released when its process ends).
A sequence that cannot be tracked (bad init box, unreadable frame, non-finite network output) is skipped with a
warning naming it; the others are tracked. Exit status: 0 all tracked, 2 bad input (named on stderr; with
skipped sequences, after the others are written). --debug shows tracebacks.
--engine onnxruntime|exported runs the network step from a file written by scripts/export.py (--checkpoint).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from grm_jax.cli import run_command, run_reporting_user_errors
from grm_jax.config import (DATA_ACCESS_KEYS, ConfigError, add_config_args, config_changes, config_from_args,
                            division_layers)
from grm_jax.evaluation.datasets import load_eval_dataset
from grm_jax.evaluation.raw_results import (RawResultError, ResultsFolderLock, atomic_write_text, has_result,
                                            write_division, write_result)
from grm_jax.runtime import EXIT_STOPPED, maybe_initialize_distributed, stop_requested, user_errors
from grm_jax.validation import fraction, positive_int
from grm_jax.workdir import is_url, workdir_path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--checkpoint", required=True, type=workdir_path,
                   help="converted orbax dir, training workdir (local or gs://), or official .pth.tar; with --engine "
                        "onnxruntime / exported the file written by scripts/export.py")
    p.add_argument("--engine", choices=["jax", "onnxruntime", "exported"], default="jax",
                   help="what runs the network step: jax (the model), onnxruntime (an ONNX export) or exported "
                        "(a serialized JAX export)")
    p.add_argument("--dataset", required=True, help="lasot, got10k_test, got10k_val, trackingnet, nfs, uav, avist, "
                                                    "otb, tnl2k, lasot_extension_subset")
    p.add_argument("--dataset-root", default=None,
                   help="benchmark folder (default for lasot / got10k_* / trackingnet: DATA.ROOTS.<LASOT|GOT10K|"
                        "TRACKINGNET> of the config)")
    p.add_argument("--dataset-source", choices=["folders", "tfds"], default=None,
                   help="folders: --dataset-root is the benchmark folder; tfds: a TFDS data dir holding the prepared "
                        "dataset (scripts/prepare_tfds.py; got10k_val, got10k_test, lasot, trackingnet; default "
                        "DATA.TFDS_DIRS.<KEY>). Default: DATA.SOURCE of the config")
    p.add_argument("--sequences", nargs="*", default=None, help="only these sequences")
    p.add_argument("--only-existing", action="store_true", help="take the listed sequences found on disk")
    p.add_argument("--workdir", type=Path, required=True, help="results folder")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="sequences tracked at once, split over the devices (default: one per device; capped at the "
                        "number of sequences)")
    p.add_argument("--devices", type=positive_int, default=None,
                   help="track on this process's first N local devices (default: all)")
    p.add_argument("--batch-mode", choices=["exact", "vectorized"], default="exact",
                   help="exact: slots run one after another inside the jitted step, boxes bit-identical to "
                        "--batch-size 1; vectorized: one batched forward (fastest on a GPU, last-bit differences)")
    p.add_argument("--threshold", type=fraction, default=None, help="division threshold (default: TEST.HYPER)")
    p.add_argument("--allow-mixed-settings", action="store_true",
                   help="add to a results folder tracked with other settings (both records kept in track_config.json)")
    p.add_argument("--record-division", action="store_true",
                   help="also write <seq>_division.txt beside each result: per frame and dividing layer the fraction "
                        "of search tokens that interact with the template (grm-analyze summarises them)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return p


# Settings whose change changes the boxes (batch_size only matters in vectorized mode).
_RESULT_SETTINGS = ("resolved_config", "checkpoint", "checkpoint_version", "dataset", "threshold", "batch_mode")


def checkpoint_identity(path: Path) -> dict:
    """Where the weights come from: the resolved path, plus the training step (training workdir) or the size and
    modification time (a file), so a retrained or replaced checkpoint at the same path counts as different."""
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    from grm_jax.checkpoints.converted import is_converted_dir
    from grm_jax.checkpoints.reading import CheckpointLoadError
    from grm_jax.checkpoints.training import latest_training_step

    if is_url(path):   # a training workdir in a bucket
        found = latest_training_step(path)
        if found is None:
            raise CheckpointLoadError(f"{path}: no orbax CheckpointManager steps found")
        return {"checkpoint": str(path), "checkpoint_version": f"step {found[1]}"}
    if not path.exists():
        raise CheckpointLoadError(f"{path}: no such file or directory")
    resolved = path.resolve()
    if resolved.is_file():
        st = resolved.stat()
        version = f"{st.st_size} bytes, mtime {st.st_mtime_ns}"
    elif is_converted_dir(resolved):
        version = f"converted, mtime {(resolved / 'meta').stat().st_mtime_ns}"
    else:
        found = latest_training_step(resolved)
        version = f"step {found[1]}" if found else "no steps"
    return {"checkpoint": str(resolved), "checkpoint_version": version}


def settings_differences(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for every result-changing setting that differs (config keys by their dotted name)."""
    diffs = []
    vectorized = "vectorized" in (old.get("batch_mode"), new.get("batch_mode"))
    keys = list(_RESULT_SETTINGS) + (["batch_size", "devices"] if vectorized else [])
    for key in keys:
        a, b = old.get(key), new.get(key)
        if key == "resolved_config" and isinstance(a, dict) and isinstance(b, dict):

            diffs += [f"{k}: {x!r} -> {y!r}" for k, x, y in config_changes(a, b, ignore=DATA_ACCESS_KEYS)]
        elif a != b:
            diffs.append(f"{key}: {a!r} -> {b!r}")
    return diffs


def check_folder_settings(workdir: Path, record: dict, sequences, allow_mixed: bool) -> dict:
    """The track_config.json to write for this run; raises RunSettingsError when the folder holds results of
    other (or unknown) settings and `allow_mixed` is not set."""
    class RunSettingsError(RawResultError):
        pass

    path = workdir / "track_config.json"
    done = [s.name for s in sequences if has_result(workdir, s.dataset, s.name)]
    previous, unknown = None, "no track_config.json"
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
            if not isinstance(previous, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as err:
            previous, unknown = None, f"an unreadable {path.name} ({err})"
    if previous is None:
        if done and not allow_mixed:
            raise RunSettingsError(f"{workdir} holds {len(done)} result files (e.g. {done[0]}) but {unknown}, so "
                                   "their settings are unknown. Use another --workdir, or pass "
                                   "--allow-mixed-settings to add to it")
        if done:
            return dict(record, earlier_settings=[{"unknown": f"{len(done)} results of unrecorded settings"}])
        return record
    diffs = settings_differences(previous, record)
    if not diffs:
        return dict(record, earlier_settings=previous.get("earlier_settings", []))
    if done and not allow_mixed:
        shown = "; ".join(diffs[:8]) + (f"; ... ({len(diffs)} differences)" if len(diffs) > 8 else "")
        raise RunSettingsError(f"{workdir} holds {len(done)} results tracked with other settings ({path}): {shown}. "
                               "Use another --workdir, or pass --allow-mixed-settings to add to it (both settings "
                               "are then recorded)")
    if not done:
        return record   # the earlier run wrote nothing this run would keep: its record is replaced
    earlier = previous.pop("earlier_settings", [])
    print(f"warning: {workdir} mixes settings ({'; '.join(diffs[:3])}); both recorded in {path}", file=sys.stderr)
    return dict(record, earlier_settings=earlier + [previous])


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting_user_errors(lambda: run(args), debug=args.debug)


def run(args) -> int:
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    import jax
    jax.config.update("jax_default_matmul_precision", "highest")   # fp32 parity (no TF32 on GPUs)


    maybe_initialize_distributed()
    local = jax.local_devices()
    if args.devices is not None and args.devices > len(local):
        print(f"error: --devices {args.devices}: this process has {len(local)} local device(s) "
              f"({local[0].platform})", file=sys.stderr)
        return 2
    devices = local[:args.devices or len(local)]
    batch_size = args.batch_size or len(devices)

    primary = jax.process_index() == 0
    multi = jax.process_count() > 1

    with contextlib.ExitStack() as held:
        # Two agreements before any result is written, so that a process that cannot track stops them all
        # instead of leaving them waiting: after the checks, and after loading the model (the checkpoint
        # reader takes part in collectives of its own, so every process must get that far together).
        failure = prepared = None
        try:
            prepared = _prepare(args, devices, batch_size, held, primary)
        except user_errors() as err:
            failure = err
        if _stop_unless_all_started(failure, "could not start"):
            return 2
        cfg, record, sequences, todo, share, settings, read_frame = prepared
        where = f"process {jax.process_index()} of {jax.process_count()}: " if multi else ""
        if not todo:
            return 0
        core = None
        try:
            core = _tracker_core(args, cfg, settings, devices)
        except user_errors() + ((ValueError, ImportError, OSError) if args.engine != "jax" else ()) as err:
            failure = err
        if _stop_unless_all_started(failure, "could not load the model"):
            return 2
        if primary:
            atomic_write_text(args.workdir / "track_config.json", json.dumps(record, indent=1))
        if multi:   # results only land in a folder whose settings are recorded
            _all_processes_reach("grm-track: settings recorded")
        status = _track(args, core, settings, share, batch_size, read_frame, where, division_layers(cfg))
        if multi:
            # A stopped process waits here too: under a scheduler every process gets the signal, and leaving
            # early would strand the others in this barrier (and in jax.distributed's own one at exit).
            _all_processes_reach("grm-track: every share tracked")
        if primary:
            multi_frame = [s for s in sequences if len(s.frames) > 1]   # one-frame sequences get no file
            missing = [s.name for s in multi_frame if not has_result(args.workdir, s.dataset, s.name)]
            print(f"{args.dataset}: {len(multi_frame) - len(missing)} of {len(multi_frame)} sequences have results "
                  f"in {args.workdir}" + (f"; missing: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5
                                                                                   else "") if missing else ""))
        return status


def _prepare(args, devices, batch_size: int, held: contextlib.ExitStack, primary: bool):
    """Config, settings record, sequences (all, the ones left and this process's share of them), tracker settings
    and frame reader; process 0 also takes the folder's lock (entered into `held`) and checks its settings."""
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    import jax

    from grm_jax.track import TrackerSettings
    from grm_jax.track.tracker import canonical_dataset_name, split_by_frames

    cfg = config_from_args(args)
    source = args.dataset_source or cfg.DATA.SOURCE
    roots = "TFDS_DIRS" if source == "tfds" else "ROOTS"
    if args.dataset_root is None:
        key = {"lasot": "LASOT", "lasot_extension_subset": "LASOT", "got10k_test": "GOT10K", "got10k_val": "GOT10K",
               "trackingnet": "TRACKINGNET"}.get(canonical_dataset_name(args.dataset))
        root = cfg.DATA[roots][key] if key else ""
        if not root:
            raise ConfigError(f"--dataset-root is required for {args.dataset}"
                              + (f" (DATA.{roots}.{key} is empty)" if key else ""))
        args.dataset_root = root
    read_frame = None
    if source == "tfds":   # frames come from the prepared dataset's records (same bytes, same pixels)
        from data_pipeline import prepared
        sequences = prepared.load_eval_dataset(args.dataset, str(args.dataset_root), args.sequences,
                                               only_existing=args.only_existing)
        read_frame = prepared.read_frame
    else:
        sequences = load_eval_dataset(args.dataset, args.dataset_root, args.sequences,
                                      only_existing=args.only_existing)
    dataset_key = args.dataset.lower()
    settings = TrackerSettings.from_config(cfg, dataset_key, args.threshold)
    record = {"config": args.config, "overrides": args.overrides, **checkpoint_identity(args.checkpoint),
              "dataset": canonical_dataset_name(args.dataset), "dataset_source": source,
              "dataset_root": str(args.dataset_root),
              "threshold": settings.threshold, "batch_size": batch_size, "batch_mode": args.batch_mode,
              "devices": len(devices), "processes": jax.process_count(),
              "engine": args.engine, "record_division": args.record_division, "resolved_config": cfg.to_dict()}
    if primary:   # one lock per results folder: held by process 0 for the whole job
        held.enter_context(ResultsFolderLock(args.workdir, "track.py"))
        record = check_folder_settings(args.workdir, record, sequences, args.allow_mixed_settings)
    # No process writes a result before every process has agreed to start, so every process lists the same
    # sequences here and the shares agree.
    todo = [s for s in sequences if not has_result(args.workdir, s.dataset, s.name)]
    share = split_by_frames(todo, jax.process_count())[jax.process_index()]
    print(f"{args.dataset}: {len(sequences)} sequences, {len(sequences) - len(todo)} already done, "
          f"{len(todo)} to track" + (f", process {jax.process_index()} of {jax.process_count()}: {len(share)} of "
                                     "them" if jax.process_count() > 1 else ""), flush=True)
    return cfg, record, sequences, todo, share, settings, read_frame


def _tracker_core(args, cfg, settings, devices):
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    from grm_jax.checkpoints.inference import load_for_inference
    from grm_jax.specs import build_model
    from grm_jax.track import TrackerCore

    if args.engine == "jax":
        return TrackerCore(build_model(cfg), load_for_inference(args.checkpoint, cfg), settings,
                           batch_mode=args.batch_mode, devices=devices, with_decisions=args.record_division)
    from grm_jax.export import load_engine

    return TrackerCore(None, None, settings, engine=load_engine(args.checkpoint, args.engine),
                       with_decisions=args.record_division)


def _stop_unless_all_started(failure, what: str) -> bool:
    """True when this run must end with status 2: this process's `failure` (raised again as its one-line error,
    or printed for an export the engine cannot run) or, with several processes, another process's (named)."""
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    import jax

    if jax.process_count() > 1:
        failed = _processes_saying(failure is not None)
        if failed and failure is None:
            print(f"error: process {', '.join(map(str, failed))} of {jax.process_count()} {what} (its message says "
                  "why); nothing was tracked", file=sys.stderr)
            return True
    if failure is None:
        return False
    if isinstance(failure, user_errors()):
        raise failure
    print(f"error: {failure}", file=sys.stderr)
    return True


def _processes_saying(flag: bool) -> list[int]:
    """The indices of the processes whose `flag` is set (a collective over the processes, outside tracking)."""
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    from jax.experimental import multihost_utils

    flags = np.asarray(multihost_utils.process_allgather(np.int32(flag))).reshape(-1)
    return [i for i, f in enumerate(flags) if f]


def _all_processes_reach(name: str) -> None:
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def _track(args, core, settings, todo, batch_size, read_frame, where="", layers=()) -> int:
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    from grm_jax.track import track_sequences

    total = sum(len(s.frames) for s in todo)
    batch_size = max(1, min(batch_size, len(todo)))
    bar = tqdm(total=total, unit="frame", disable=args.no_progress, dynamic_ncols=True,
               desc=f"{where}{args.dataset} thr={settings.threshold:g} bs={batch_size}x{len(core.devices)}dev")
    written = 0
    skipped = []
    start = time.perf_counter()

    def save(result):
        nonlocal written
        if len(result.boxes) > 1:   # as the official runner: no file for one-frame sequences
            if result.division is not None:   # before the box file, which marks the sequence done
                write_division(args.workdir, result.sequence.dataset, result.sequence.name, result.division,
                               layers if len(layers) == result.division.shape[1] else
                               range(result.division.shape[1]))
            write_result(args.workdir, result.sequence.dataset, result.sequence.name, result.boxes, result.times)
            written += 1
        bar.set_postfix(seqs=f"{written}/{len(todo)}", fps=f"{bar.n / max(time.perf_counter() - start, 1e-9):.1f}")

    def skip(sequence, err):
        skipped.append((sequence.name, str(err)))
        tqdm.write(f"warning: skipping {err}", file=sys.stderr)

    finished = 0
    # each process tracks its own sequences: no agreement on where to stop, every process takes SIGTERM itself
    with stop_requested(agree_through_jax=False) as stop:
        for _ in track_sequences(core, todo, batch_size=batch_size, on_result=save, progress=bar,
                                 read_frame=read_frame, on_error=skip, stop_requested=lambda: bool(stop)):
            finished += 1
    bar.close()
    if stop:
        left = len(todo) - finished - len(skipped)
        print(f"{where}stopped by {stop.signal} after the current frame step: {finished} of {len(todo)} "
              f"sequences finished (results in {args.workdir}), {left} not; rerun the same command to track "
              "those", file=sys.stderr, flush=True)
        return EXIT_STOPPED
    elapsed = time.perf_counter() - start
    print(f"{where}tracked {total} frames of {len(todo)} sequences in {elapsed:.1f} s "
          f"({total / max(elapsed, 1e-9):.2f} frames/s); results in {args.workdir}")
    if skipped:
        print(f"{where}error: {len(skipped)} of {len(todo)} sequences skipped (no result written; fix them and rerun "
              "to track only those):\n  " + "\n  ".join(message for _, message in skipped), file=sys.stderr)
        return 2
    return 0


def cli() -> None:
    """Entry point of `grm-track` (pyproject.toml) and scripts/track.py."""
    run_command(main, huge_pages=True)


if __name__ == "__main__":
    cli()

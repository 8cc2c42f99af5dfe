#!/usr/bin/env python
"""Train GRM (data-parallel over every device of every host), resuming automatically from WORKDIR.

    grm-train --config vitb_256_ep300 --workdir runs/vitb [--set KEY=VALUE ...] [--max-steps N]

Datasets are DATA.TRAIN.DATASETS_NAME read from the DATA.ROOTS.* folders (e.g. --set DATA.ROOTS.GOT10K=/data/got10k),
or with DATA.SOURCE=tfds from the prepared datasets in DATA.TFDS_DIRS.* (scripts/prepare_tfds.py; local or gs://).
TRAIN.BATCH_SIZE is per device (official per-GPU semantics). With MODEL.PRETRAIN_FILE set, the backbone starts
from that MAE/DeiT checkpoint (as given, or under ./pretrained_models/); "" starts from a random init.
WORKDIR is a local path or gs://bucket/path (files through tf.io.gfile). Checkpoints: WORKDIR/checkpoints (orbax, every TRAIN.CKPT_EVERY_STEPS steps - default once per epoch - and at
the end, keeping TRAIN.KEEP_CHECKPOINTS); TensorBoard logs: WORKDIR/tb. Rerunning the same command resumes.
Input: DATA.PIPELINE=graph runs the per-sample work as TF ops (scales with cores); add
DATA.SERVICE_ADDRESS=grpc://HOST:PORT to take the batches from a tf.data service started with
scripts/input_service.py (same batches, so resuming stays exact).
Multi-host: start one process per host with JAX_COORDINATOR_ADDRESS=host:port JAX_NUM_PROCESSES=N
JAX_PROCESS_ID=i (or GRM_JAX_DISTRIBUTED=1 under SLURM/Open MPI); every host reads the datasets.
One run per workdir (a lock; a killed run's lock goes with it; in a bucket, a lock object whose heartbeat goes
stale 10 minutes after a killed run). Resuming refuses a config that differs from
WORKDIR/config.yaml (naming the keys) unless --allow-config-change. Every checkpoint stores a digest; resume
takes the newest intact one and says which damaged ones it moved aside.
SIGTERM / SIGINT (Ctrl-C): the current step is finished and saved, then the run stops (every process at the same
step); rerunning the same command resumes. jax.distributed deadlines: GRM_JAX_INIT_TIMEOUT_S (300),
GRM_JAX_HEARTBEAT_TIMEOUT_S (100), GRM_JAX_SHUTDOWN_TIMEOUT_S (300) seconds.
Exit status: 0 done, 3 non-finite loss (the last good checkpoint is kept), 2 bad configuration/data, input
pipeline failure, workdir in use, full disk, no intact checkpoint or no jax.distributed coordinator (one line on
stderr each), 4 another process of a multi-process run was lost, 75 stopped by SIGTERM / SIGINT after saving
(rerun to resume), 130 Ctrl-C outside a training step (before the first one).
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import threading

from data_pipeline.readers import ROOT_KEYS, DatasetError, build_dataset
from data_pipeline.sampler import PairSampler, SamplerError
from grm_jax.cli import run_command, run_reporting_user_errors
from grm_jax.config import ConfigError, add_config_args, config_from_args
from grm_jax.errors import InputPipelineError
from grm_jax.runtime import EXIT_STOPPED, maybe_initialize_distributed
from grm_jax.validation import positive_int
from grm_jax.workdir import checkpoint_location, workdir_path


def build_datasets(cfg, refresh: bool = False):
    by_upper = {k.upper(): v for k, v in ROOT_KEYS.items()}
    datasets = []
    for name in cfg.DATA.TRAIN.DATASETS_NAME:
        key = by_upper.get(str(name).upper())
        if key is None:
            raise ConfigError(f"DATA.TRAIN.DATASETS_NAME: unknown dataset {name!r}; known: {sorted(ROOT_KEYS)}")
        roots = "TFDS_DIRS" if cfg.DATA.SOURCE == "tfds" else "ROOTS"
        root = cfg.DATA[roots][key]
        if not root:
            raise ConfigError(f"DATA.TRAIN.DATASETS_NAME lists {name} but DATA.{roots}.{key} is empty "
                              f"(set it with --set DATA.{roots}.{key}=/path)")
        try:
            if cfg.DATA.SOURCE == "tfds":
                # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
                from data_pipeline.prepared import load_training_dataset
                datasets.append(load_training_dataset(name, root))
            else:
                datasets.append(build_dataset(name, root, refresh=refresh))
        except DatasetError as err:
            raise ConfigError(f"DATA.{roots}.{key}={root!r}: {err}") from None
    return datasets


def check_workdir(workdir: str) -> None:
    """A workdir URL the checkpoints cannot be written to stops the run before the datasets are read."""
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    from grm_jax.checkpoints.training import CHECKPOINT_DIR

    checkpoint_location(workdir_path(workdir) / CHECKPOINT_DIR)


def check_datasets_usable(cfg, datasets) -> None:
    """Draw one training pair from every dataset with a positive ratio (own random stream; the run's samples
    are unaffected), so a dataset that cannot give any (all frames unreadable, no usable box) stops the run at
    start, naming it, instead of failing inside the input workers."""
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    from data_pipeline.pipeline import MAX_REDRAWS, PairSource
    from data_pipeline.processing import ProcessingSettings

    settings = ProcessingSettings.from_config(cfg)
    by_upper = {k.upper(): v for k, v in ROOT_KEYS.items()}
    quiet = logging.getLogger("data_pipeline.pipeline")
    for dataset, ratio in zip(datasets, cfg.DATA.TRAIN.DATASETS_RATIO):
        if float(ratio) <= 0:
            continue
        source = PairSource(PairSampler([dataset], [1.0], cfg.DATA.MAX_SAMPLE_INTERVAL), settings, seed=0)
        level = quiet.level
        quiet.setLevel(logging.ERROR)   # the per-frame warnings of up to MAX_REDRAWS draws say nothing more
        try:
            source(2 ** 62)
        except RuntimeError as err:
            key = by_upper.get(str(dataset.name).upper(), "?")
            last = re.search(r"last problem: (.*)\)$", str(err))
            raise ConfigError(f"dataset {dataset.name} (DATA.ROOTS.{key}={cfg.DATA.ROOTS[key]!r}) gives no usable "
                              f"training pair in {MAX_REDRAWS} draws ({source.counters['bad_frames']} unreadable "
                              f"frames, {source.counters['invalid_pairs']} unusable crops); last problem: "
                              f"{last.group(1) if last else err}") from None
        finally:
            quiet.setLevel(level)


def batch_factory(cfg, datasets):
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    from data_pipeline.pipeline import make_train_iterator

    def make_batches(start_step, host_batch_size, process_index, process_count):
        iterator = make_train_iterator(cfg, datasets, seed=int(cfg.TRAIN.SEED), start_step=start_step,
                                       host_batch_size=host_batch_size, process_index=process_index,
                                       process_count=process_count)

        def batches():   # a failed batch raises InputFailure, an InputPipelineError the loop passes on as it is
            try:
                yield from iterator
            finally:
                iterator.close()
        return batches()
    return make_batches


def _silence_closed_event_loop_errors() -> None:
    """After a failed asynchronous checkpoint write (a full disk), orbax's writer threads keep handing callbacks to
    their already closed event loop and each one prints a 'RuntimeError: Event loop is closed' traceback; the
    failure itself reaches the loop once (CheckpointWriteError). Every other error prints as before."""
    def closed_loop(exc) -> bool:
        return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"

    excepthook, unraisablehook, thread_hook = sys.excepthook, sys.unraisablehook, threading.excepthook
    sys.excepthook = lambda t, v, tb: None if closed_loop(v) else excepthook(t, v, tb)
    sys.unraisablehook = lambda u: None if closed_loop(u.exc_value) else unraisablehook(u)
    threading.excepthook = lambda a: None if closed_loop(a.exc_value) else thread_hook(a)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--workdir", required=True,
                        help="run directory (checkpoints, logs): a local path or gs://bucket/path")
    parser.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many optimiser steps")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    parser.add_argument("--rebuild-index", action="store_true",
                        help="re-read every annotation file instead of the cached dataset index (the cache is "
                             "already rebuilt when an annotation file's size or mtime changes)")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="resume although the config differs from WORKDIR/config.yaml (the new values are "
                             "recorded there, the old file kept as config.until_step_<N>.yaml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)   # orbax logs every file operation at INFO
    # orbax logs a write that failed on a full disk with its traceback (several times) before raising it to us;
    # the loop reports it as one message (CheckpointWriteError)
    from grm_jax.checkpoints.training import is_disk_full
    logging.getLogger("absl").addFilter(
        lambda r: not (r.exc_info and r.exc_info[1] is not None and is_disk_full(r.exc_info[1])))
    # orbax warns "Reached preemption sync point" at a SIGTERM stop; the loop says it in its own line
    logging.getLogger("absl").addFilter(lambda r: "Reached preemption sync point" not in str(r.msg))
    _silence_closed_event_loop_errors()

    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    from grm_jax.checkpoints.reading import CheckpointLoadError
    from grm_jax.checkpoints.training import CheckpointWriteError
    from grm_jax.train.loop import NonFiniteLossError, PeerLostError, train

    def run() -> int:
        try:
            maybe_initialize_distributed()   # first: before anything touches a JAX backend
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        try:
            cfg = config_from_args(args)
            if cfg.DATA.SERVICE_ADDRESS:   # before the datasets are read: an unreachable service is named at once
                # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
                from grm_jax.deadlines import check_data_service

                check_data_service(cfg.DATA.SERVICE_ADDRESS, float(cfg.DATA.SERVICE_TIMEOUT_S))
            check_workdir(args.workdir)
            datasets = build_datasets(cfg, refresh=args.rebuild_index)
            check_datasets_usable(cfg, datasets)
            result = train(cfg, args.workdir, batch_factory(cfg, datasets), max_steps=args.max_steps,
                           progress=not args.no_progress, allow_config_change=args.allow_config_change)
        except (ConfigError, SamplerError, CheckpointLoadError, CheckpointWriteError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except NonFiniteLossError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            return 3
        except InputPipelineError as err:
            print(f"error: input pipeline: {err}", file=sys.stderr, flush=True)
            return EXIT_INPUT_PIPELINE
        except PeerLostError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            return EXIT_PEER_LOST
        except KeyboardInterrupt:   # outside the loop's own handler (before the first step): nothing to save
            print("interrupted (Ctrl-C) outside a training step; the checkpoints written so far are kept: rerun the "
                  "same command to resume", file=sys.stderr, flush=True)
            return EXIT_INTERRUPTED
        return EXIT_STOPPED if result.stopped_by is not None else 0
    # any other bad input (a bad annotation line, an unreadable file, a full disk) is named, exit 2
    return run_reporting_user_errors(run, debug=args.debug)


# Exit status of an input-pipeline failure: a bad-data error (2), left through os._exit because interpreter
# shutdown can deadlock on tf.numpy_function workers still in flight (the loop has already closed the iterator,
# finished the checkpoint writes and closed its files).
EXIT_INPUT_PIPELINE = 2
# Exit status when another process of a multi-process run died; left through os._exit too: jax.distributed's
# shutdown barrier would wait for the dead process (GRM_JAX_HEARTBEAT_TIMEOUT_S) and then abort with a stack trace.
EXIT_PEER_LOST = 4
# Exit status of Ctrl-C outside a training step (128 + SIGINT, the shell's convention); left through os._exit too:
# interrupted in the middle of JAX's start-up or a compilation, the interpreter's shutdown can crash.
EXIT_INTERRUPTED = 130


def _main_then_leave() -> int:
    code = main()
    if code in (EXIT_INPUT_PIPELINE, EXIT_PEER_LOST, EXIT_INTERRUPTED):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def cli() -> None:
    """Entry point of `grm-train` (pyproject.toml) and scripts/train.py."""
    run_command(_main_then_leave, huge_pages=True)


if __name__ == "__main__":
    cli()

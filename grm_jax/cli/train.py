#!/usr/bin/env python
"""Train GRM (data-parallel over every device of every host), resuming automatically from WORKDIR.

    grm-train --config vitb_256_ep300 --workdir runs/vitb [--set KEY=VALUE ...] [--max-steps N]

Datasets are DATA.TRAIN.DATASETS_NAME read from the DATA.ROOTS.* folders (e.g. --set DATA.ROOTS.GOT10K=/data/got10k),
or with DATA.SOURCE=tfds from the prepared datasets in DATA.TFDS_DIRS.* (scripts/prepare_tfds.py; local or gs://).
TRAIN.BATCH_SIZE is per device (official per-GPU semantics). With MODEL.PRETRAIN_FILE set, the backbone starts
from that MAE/DeiT checkpoint (as given, or under ./pretrained_models/); "" starts from a random init.
Checkpoints: WORKDIR/checkpoints (orbax, every TRAIN.CKPT_EVERY_STEPS steps - default once per epoch - and at
the end, keeping TRAIN.KEEP_CHECKPOINTS); TensorBoard logs: WORKDIR/tb. Rerunning the same command resumes.
Multi-host: start one process per host with JAX_COORDINATOR_ADDRESS=host:port JAX_NUM_PROCESSES=N
JAX_PROCESS_ID=i (or GRM_JAX_DISTRIBUTED=1 under SLURM/Open MPI); every host reads the datasets.
Exit status: 0 done, 3 non-finite loss (the last good checkpoint is kept), 2 bad configuration/data.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from grm_jax.cli import run_command
from grm_jax.runtime import quiet_startup

quiet_startup()


def build_datasets(cfg):
    from data_pipeline.readers import ROOT_KEYS, DatasetError, build_dataset
    from grm_jax.config import ConfigError

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
                from data_pipeline.prepared import load_training_dataset
                datasets.append(load_training_dataset(name, root))
            else:
                datasets.append(build_dataset(name, root))
        except DatasetError as err:
            raise ConfigError(f"DATA.{roots}.{key}={root!r}: {err}") from None
    return datasets


def batch_factory(cfg, datasets):
    from data_pipeline.pipeline import make_train_iterator

    def make_batches(start_step, host_batch_size, process_index, process_count):
        return iter(make_train_iterator(cfg, datasets, seed=int(cfg.TRAIN.SEED), start_step=start_step,
                                        host_batch_size=host_batch_size, process_index=process_index,
                                        process_count=process_count))
    return make_batches


def main(argv=None) -> int:
    from grm_jax.config import ConfigError, add_config_args, config_from_args

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--workdir", required=True, type=Path, help="run directory (checkpoints, logs)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    args = parser.parse_args(argv)
    from grm_jax.runtime import report_user_error, user_errors
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)   # orbax logs every file operation at INFO

    from grm_jax.train.loop import NonFiniteLossError, maybe_initialize_distributed, train

    maybe_initialize_distributed()
    from data_pipeline.sampler import SamplerError
    try:
        cfg = config_from_args(args)
        datasets = build_datasets(cfg)
        train(cfg, args.workdir, batch_factory(cfg, datasets), max_steps=args.max_steps,
              progress=not args.no_progress)
    except (ConfigError, SamplerError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except user_errors() as err:   # a bad annotation line, an unreadable file, a full disk: named, exit 2
        if args.debug:
            raise
        return report_user_error(err)
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 3
    return 0


def cli() -> None:
    """Entry point of `grm-train` (pyproject.toml) and scripts/train.py."""
    run_command(main, huge_pages=True)


if __name__ == "__main__":
    cli()

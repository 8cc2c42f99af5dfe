#!/usr/bin/env python
"""Train GRM (data-parallel over every device of every host), resuming automatically from WORKDIR.

    python scripts/train.py --config vitb_256_ep300 --workdir runs/vitb [--set KEY=VALUE ...] [--max-steps N]

Datasets are DATA.TRAIN.DATASETS_NAME read from the DATA.ROOTS.* folders (e.g. --set DATA.ROOTS.GOT10K=/data/got10k).
TRAIN.BATCH_SIZE is per device (official per-GPU semantics). With MODEL.PRETRAIN_FILE set, the backbone starts
from that MAE/DeiT checkpoint (as given, or under ./pretrained_models/); "" starts from a random init.
Checkpoints: WORKDIR/checkpoints (orbax, every TRAIN.CKPT_EVERY_STEPS steps - default once per epoch - and at
the end, keeping TRAIN.KEEP_CHECKPOINTS); TensorBoard logs: WORKDIR/tb. Rerunning the same command resumes.
Input: DATA.PIPELINE=graph runs the per-sample work as TF ops (scales with cores); add
DATA.SERVICE_ADDRESS=grpc://HOST:PORT to take the batches from a tf.data service started with
scripts/input_service.py (same batches, so resuming stays exact).
Multi-host: start one process per host with JAX_COORDINATOR_ADDRESS=host:port JAX_NUM_PROCESSES=N
JAX_PROCESS_ID=i (or GRM_JAX_DISTRIBUTED=1 under SLURM/Open MPI); every host reads the datasets.
Exit status: 0 done, 3 non-finite loss (the last good checkpoint is kept), 2 bad configuration/data.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_datasets(cfg):
    from data_pipeline.readers import ROOT_KEYS, DatasetError, build_dataset
    from grm_jax.config import ConfigError

    by_upper = {k.upper(): v for k, v in ROOT_KEYS.items()}
    datasets = []
    for name in cfg.DATA.TRAIN.DATASETS_NAME:
        key = by_upper.get(str(name).upper())
        if key is None:
            raise ConfigError(f"DATA.TRAIN.DATASETS_NAME: unknown dataset {name!r}; known: {sorted(ROOT_KEYS)}")
        root = cfg.DATA.ROOTS[key]
        if not root:
            raise ConfigError(f"DATA.TRAIN.DATASETS_NAME lists {name} but DATA.ROOTS.{key} is empty "
                              f"(set it with --set DATA.ROOTS.{key}=/path)")
        try:
            datasets.append(build_dataset(name, root))
        except DatasetError as err:
            raise ConfigError(f"DATA.ROOTS.{key}={root!r}: {err}") from None
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
    args = parser.parse_args(argv)
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
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 3
    return 0


if __name__ == "__main__":
    from grm_jax.runtime import use_huge_pages_for_malloc

    use_huge_pages_for_malloc()
    sys.exit(main())

#!/usr/bin/env python
"""Print the step and a sha256 over the saved params of a training workdir (latest step by default).

    grm-checkpoint-digest WORKDIR [--step N]

Output: `step <N> params_sha256 <hex>`. The digest covers every parameter in sorted path order (path, dtype,
shape, C-order bytes), so two runs that end with bit-identical params print the same line.
"""
from __future__ import annotations

import argparse
import os
import sys

from grm_jax.cli import run_command
from grm_jax.validation import non_negative_int

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip())
    parser.add_argument("workdir", help="training workdir (or its checkpoints folder): a local path or gs://...")
    parser.add_argument("--step", type=non_negative_int, default=None)
    args = parser.parse_args(argv)

    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    from grm_jax.checkpoints.reading import CheckpointLoadError
    from grm_jax.checkpoints.training import load_training_variables
    from grm_jax.train.loop import params_digest

    try:
        variables, step = load_training_variables(args.workdir, args.step)
    except CheckpointLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"step {step} params_sha256 {params_digest(variables['params'])}")
    return 0


def cli() -> None:
    """Entry point of `grm-checkpoint-digest` (pyproject.toml) and scripts/checkpoint_digest.py."""
    run_command(main)


if __name__ == "__main__":
    cli()

#!/usr/bin/env python
"""`python scripts/prepare_tfds.py ARGS` = `grm-prepare-tfds ARGS` (the code is grm_jax/cli/prepare_tfds.py)."""
from grm_jax.cli.prepare_tfds import cli

if __name__ == "__main__":
    cli()

#!/usr/bin/env python
"""`python scripts/train.py ARGS` = `grm-train ARGS` (the code is grm_jax/cli/train.py)."""
from grm_jax.cli.train import cli

if __name__ == "__main__":
    cli()

#!/usr/bin/env python
"""`python scripts/convert_checkpoint.py ARGS` = `grm-convert ARGS` (the code is grm_jax/cli/convert_checkpoint.py)."""
from grm_jax.cli.convert_checkpoint import cli

if __name__ == "__main__":
    cli()

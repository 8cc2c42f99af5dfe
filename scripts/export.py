#!/usr/bin/env python
"""`python scripts/export.py ARGS` = `grm-export ARGS` (the code is grm_jax/cli/export.py)."""
from grm_jax.cli.export import cli

if __name__ == "__main__":
    cli()

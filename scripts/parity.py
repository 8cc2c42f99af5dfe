#!/usr/bin/env python
"""`python scripts/parity.py ARGS` = `grm-parity ARGS` (the code is grm_jax/cli/parity.py)."""
from grm_jax.cli.parity import cli

if __name__ == "__main__":
    cli()

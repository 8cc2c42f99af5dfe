#!/usr/bin/env python
"""`python scripts/ablate.py ARGS` = `grm-ablate ARGS` (the code is grm_jax/cli/ablate.py)."""
from grm_jax.cli.ablate import cli

if __name__ == "__main__":
    cli()

#!/usr/bin/env python
"""`python scripts/analyze.py ARGS` = `grm-analyze ARGS` (the code is grm_jax/cli/analyze.py)."""
from grm_jax.cli.analyze import cli

if __name__ == "__main__":
    cli()

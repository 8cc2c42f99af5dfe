#!/usr/bin/env python
"""`python scripts/demo.py ARGS` = `grm-demo ARGS` (the code is grm_jax/cli/demo.py)."""
from grm_jax.cli.demo import cli

if __name__ == "__main__":
    cli()

#!/usr/bin/env python
"""`python scripts/make_synthetic.py ARGS` = `grm-make-synthetic ARGS` (the code is grm_jax/cli/make_synthetic.py)."""
from grm_jax.cli.make_synthetic import cli

if __name__ == "__main__":
    cli()

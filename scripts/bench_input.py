#!/usr/bin/env python
"""`python scripts/bench_input.py ARGS` = `grm-bench-input ARGS` (the code is grm_jax/cli/bench_input.py)."""
from grm_jax.cli.bench_input import cli

if __name__ == "__main__":
    cli()

#!/usr/bin/env python
"""`python scripts/bench_prepared_input.py ARGS` = `grm-bench-prepared-input ARGS` (the code is grm_jax/cli/bench_prepared_input.py)."""
from grm_jax.cli.bench_prepared_input import cli

if __name__ == "__main__":
    cli()

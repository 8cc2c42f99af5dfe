#!/usr/bin/env python
"""`python scripts/bench_export.py ARGS` = `grm-bench-export ARGS` (the code is grm_jax/cli/bench_export.py)."""
from grm_jax.cli.bench_export import cli

if __name__ == "__main__":
    cli()

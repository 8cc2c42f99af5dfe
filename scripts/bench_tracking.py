#!/usr/bin/env python
"""`python scripts/bench_tracking.py ARGS` = `grm-bench-tracking ARGS` (the code is grm_jax/cli/bench_tracking.py)."""
from grm_jax.cli.bench_tracking import cli

if __name__ == "__main__":
    cli()

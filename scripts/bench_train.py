#!/usr/bin/env python
"""`python scripts/bench_train.py ARGS` = `grm-bench-train ARGS` (the code is grm_jax/cli/bench_train.py)."""
from grm_jax.cli.bench_train import cli

if __name__ == "__main__":
    cli()

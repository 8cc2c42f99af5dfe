#!/usr/bin/env python
"""`python scripts/bench_inference.py ARGS` = `grm-bench-inference ARGS` (the code is grm_jax/cli/bench_inference.py)."""
from grm_jax.cli.bench_inference import cli

if __name__ == "__main__":
    cli()

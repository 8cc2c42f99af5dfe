#!/usr/bin/env python
"""`python scripts/bench_roofline.py ARGS` = `grm-bench-roofline ARGS` (the code is grm_jax/cli/bench_roofline.py)."""
from grm_jax.cli.bench_roofline import cli

if __name__ == "__main__":
    cli()

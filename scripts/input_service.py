#!/usr/bin/env python
"""`python scripts/input_service.py ARGS` = `grm-input-service ARGS` (the code is grm_jax/cli/input_service.py)."""
from grm_jax.cli.input_service import cli

if __name__ == "__main__":
    cli()

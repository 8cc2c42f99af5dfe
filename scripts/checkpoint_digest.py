#!/usr/bin/env python
"""`python scripts/checkpoint_digest.py ARGS` = `grm-checkpoint-digest ARGS` (the code is grm_jax/cli/checkpoint_digest.py)."""
from grm_jax.cli.checkpoint_digest import cli

if __name__ == "__main__":
    cli()

#!/usr/bin/env python
"""`python scripts/pack_submission.py ARGS` = `grm-pack-submission ARGS` (the code is grm_jax/cli/pack_submission.py)."""
from grm_jax.cli.pack_submission import cli

if __name__ == "__main__":
    cli()

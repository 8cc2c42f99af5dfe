#!/usr/bin/env python
"""`python scripts/track.py ARGS` = `grm-track ARGS` (the code is grm_jax/cli/track.py)."""
from grm_jax.cli.track import cli

if __name__ == "__main__":
    cli()

#!/usr/bin/env python
"""`python scripts/track_video.py ARGS` = `grm-track-video ARGS` (the code is grm_jax/cli/track_video.py)."""
from grm_jax.cli.track_video import cli

if __name__ == "__main__":
    cli()

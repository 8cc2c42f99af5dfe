"""The command-line programs; pyproject.toml installs each module's `cli()` as a `grm-*` command.

Every module has `main(argv=None) -> int` (testable in-process) and `cli()`, the console entry point, which also
backs `python -m grm_jax.cli.NAME` and the thin wrappers scripts/NAME.py.
"""
from __future__ import annotations

import sys
from typing import Callable, NoReturn


def run_command(main: Callable[[], int | None], *, huge_pages: bool = False) -> NoReturn:
    """Exit with `main()`'s status; with `huge_pages`, first re-execute with huge-page malloc (grm_jax.runtime)."""
    if huge_pages:
        from grm_jax.runtime import use_huge_pages_for_malloc

        use_huge_pages_for_malloc()
    sys.exit(main())

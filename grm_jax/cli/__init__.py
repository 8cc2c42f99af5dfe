"""The command-line programs; pyproject.toml installs each module's `cli()` as a `grm-*` command.

Every module has `main(argv=None) -> int` (testable in-process) and `cli()`, the console entry point, which also
backs `python -m grm_jax.cli.NAME` and the thin wrappers scripts/NAME.py.
"""
from __future__ import annotations

import sys
from typing import Callable, NoReturn, TypeVar

T = TypeVar("T")


def run_command(main: Callable[[], int | None], *, huge_pages: bool = False) -> NoReturn:
    """Exit with `main()`'s status; with `huge_pages`, first re-execute with huge-page malloc (grm_jax.runtime)."""
    if huge_pages:
        from grm_jax.runtime import use_huge_pages_for_malloc

        use_huge_pages_for_malloc()
    sys.exit(main())


def run_reporting_user_errors(run: Callable[[], T], *, debug: bool, also: tuple[type, ...] = (),
                              prog: str | None = None) -> T | int:
    """`run()`; bad input (`grm_jax.runtime.user_errors()` and the types in `also`) ends as one `error:` line on
    stderr (`runtime.report_user_error`, prefixed with `prog` if given) and exit status 2, or, with `debug` (the
    programs' --debug), as its traceback."""
    from grm_jax.runtime import report_user_error, user_errors

    try:
        return run()
    except user_errors() + tuple(also) as err:
        if debug:
            raise
        return report_user_error(err, prog)

"""The command-line programs; pyproject.toml installs each module's `cli()` as a `grm-*` command.

Every module has `main(argv=None) -> int` (testable in-process) and `cli()`, the console entry point, which also
backs `python -m grm_jax.cli.NAME` and the thin wrappers scripts/NAME.py. Command-line values are checked by the
argparse types of grm_jax/validation.py; bad input met later ends as one `error:` line (exit status 2), Ctrl-C as
one line (exit status 130, `EXIT_INTERRUPTED`), never a traceback (--debug: the traceback).

Start-up order. Importing this package runs `grm_jax.runtime.quiet_startup()`, so the environment variables that
quiet TF/absl are set before any program module imports tensorflow or jax. A program's module imports at its top
only what loads without jax and tensorflow (the standard library, numpy, grm_jax.config / validation / runtime /
sequence / evaluation, the data_pipeline readers and sampler); what loads jax or tensorflow is imported inside the
function that uses it, marked `# jax/TF: after argument parsing`: `--help`, a bad argument and the huge-page
re-execution of `run_command` come first and should not pay for (or repeat) that import, and some programs set
JAX_PLATFORMS or the CPU affinity before it. grm-convert, which has no re-execution, imports jax at its top.
"""
from __future__ import annotations

import sys
from typing import Callable, NoReturn, TypeVar

from grm_jax.runtime import quiet_startup, report_user_error, use_huge_pages_for_malloc, user_errors

quiet_startup()

T = TypeVar("T")

# 128 + SIGINT, what a shell reports for a program ended by Ctrl-C
EXIT_INTERRUPTED = 130


def report_interrupt(prog: str | None = None) -> int:
    """One line on stderr for a Ctrl-C (KeyboardInterrupt); returns EXIT_INTERRUPTED."""
    print(f"{prog + ': ' if prog else ''}stopped by Ctrl-C", file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED


def run_command(main: Callable[[], int | None], *, huge_pages: bool = False) -> NoReturn:
    """Exit with `main()`'s status; with `huge_pages`, first re-execute with huge-page malloc (grm_jax.runtime).
    Every program gets the one-line reports of `run_reporting_user_errors` here too (bad input: exit status 2,
    Ctrl-C: 130), for what its own main() does not handle; a `--debug` argument keeps the traceback."""
    if huge_pages:
        use_huge_pages_for_malloc()
    sys.exit(run_reporting_user_errors(main, debug="--debug" in sys.argv[1:]))


def run_reporting_user_errors(run: Callable[[], T], *, debug: bool, also: tuple[type, ...] = (),
                              prog: str | None = None) -> T | int:
    """`run()`; bad input (`grm_jax.runtime.user_errors()` and the types in `also`) ends as one `error:` line on
    stderr (`runtime.report_user_error`, prefixed with `prog` if given) and exit status 2, a Ctrl-C as one line
    and exit status 130; with `debug` (the programs' --debug), either as its traceback."""
    try:
        return run()
    except SystemExit:   # argparse's --help and usage errors; user_errors() would import jax to name its types
        raise
    except KeyboardInterrupt:
        if debug:
            raise
        return report_interrupt(prog)
    except user_errors() + tuple(also) as err:
        if debug:
            raise
        return report_user_error(err, prog)

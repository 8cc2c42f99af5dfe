"""grm_jax/cli/__init__.py: run_reporting_user_errors, the one place the programs turn bad input into one
`error:` line and exit status 2 (--debug: the traceback); bugs are never hidden."""
import errno

import pytest

from grm_jax.cli import run_reporting_user_errors
from grm_jax.config import ConfigError


def _raise(err):
    def run():
        raise err
    return run


def test_bad_input_is_one_error_line_and_status_2(capsys):
    assert run_reporting_user_errors(_raise(ConfigError("TRAIN.LR: not a number 'x'")), debug=False) == 2
    assert capsys.readouterr().err == "error: TRAIN.LR: not a number 'x'\n"
    missing = FileNotFoundError(errno.ENOENT, "No such file or directory", "runs/a/config.yaml")
    assert run_reporting_user_errors(_raise(missing), debug=False, prog="convert_checkpoint") == 2
    assert capsys.readouterr().err == "convert_checkpoint: error: No such file or directory: runs/a/config.yaml\n"


def test_extra_types_debug_and_bugs():
    class VerificationError(Exception):
        pass

    assert run_reporting_user_errors(_raise(VerificationError("shapes differ")), debug=False,
                                     also=(VerificationError,)) == 2
    with pytest.raises(VerificationError):
        run_reporting_user_errors(_raise(VerificationError("shapes differ")), debug=False)
    with pytest.raises(ConfigError):
        run_reporting_user_errors(_raise(ConfigError("bad")), debug=True)
    with pytest.raises(ZeroDivisionError):
        run_reporting_user_errors(lambda: 1 / 0, debug=False)
    assert run_reporting_user_errors(lambda: 0, debug=False) == 0

"""The errors a user can fix, and the error the trainer's input side raises.

Every error that describes bad input (a config key, a checkpoint, a dataset, a list or result file, a busy
workdir) derives from `UserError`; its message names the file, key or value at fault. The command-line tools
report such an error as one `error: ...` line with exit status 2 (`grm_jax.runtime.user_errors()`), a traceback
only with --debug. Each subclass also keeps the builtin base its callers catch (`ValueError`, `OSError`, ...).
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input a user can fix; the message names the file / key / value at fault."""


class ConfigError(UserError, ValueError):
    """A configuration file or override is malformed (the message names the key and the source)."""


class WorkdirBusyError(UserError):
    """Another training run holds the workdir's lock (the message names the workdir and the holder)."""


class InputPipelineError(RuntimeError):
    """The batch iterator failed (the message says which sample / file); the run stops, checkpoints are kept."""

"""Parity against golden data from the official PyTorch code.

- registry.py: `CheckResult`, `register_check`, `CHECKS`, `CHECK_MODULES`, `run_checks` (the runner);
- bundle.py: reading a bundle (`read_bundle_json`, `config_from_bundle`, `load_bundle_model`);
- compare.py: the comparison helpers the checks share;
- one module per area, registering its checks: convert, evaluation, model, track, train, geometry.

This is a leaf package: only the command line (grm_jax/cli/parity.py, `grm-parity`) and the tests import it.
"""
from .bundle import config_from_bundle, load_bundle_model, read_bundle_json
from .registry import (CHECK_MODULES, CHECKS, CheckResult, RegisteredCheck, import_check_modules, register_check,
                       run_checks)

__all__ = ["CHECK_MODULES", "CHECKS", "CheckResult", "RegisteredCheck", "config_from_bundle", "import_check_modules",
           "load_bundle_model", "read_bundle_json", "register_check", "run_checks"]

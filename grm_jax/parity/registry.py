"""The registry of parity checks and the runner.

Each area's module in this package registers its checks:

    from .registry import CheckResult, register_check

    @register_check("metrics", requires=("metrics.npz",))
    def check_metrics(bundle: Path, cfg_json: dict) -> list[CheckResult]: ...

and is listed in CHECK_MODULES (imported, in that order, when checks run). A check whose `requires` files are
absent from the bundle is skipped.
"""
from __future__ import annotations

import importlib
import json
import math
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .bundle import read_bundle_json

# The modules that register checks, one per area; the order is the order in which `run_checks` runs them.
CHECK_MODULES: tuple[str, ...] = ("grm_jax.parity.convert", "grm_jax.parity.evaluation", "grm_jax.parity.model",
                                  "grm_jax.parity.track", "grm_jax.parity.train", "grm_jax.parity.geometry")


@dataclass
class CheckResult:
    name: str
    max_abs_err: float
    mismatches: int
    total: int
    ok: bool
    detail: Any = field(default="")

    def to_json(self) -> str:
        d = asdict(self)
        err = d["max_abs_err"]
        if isinstance(err, float) and not math.isfinite(err):
            d["max_abs_err"] = str(err)
        return json.dumps(d, default=_json_default)


def _json_default(obj):
    try:
        return obj.item()
    except AttributeError:
        return str(obj)


CheckFn = Callable[[Path, dict], "list[CheckResult]"]


@dataclass(frozen=True)
class RegisteredCheck:
    name: str
    fn: CheckFn
    requires: tuple[str, ...]


CHECKS: dict[str, RegisteredCheck] = {}


def register_check(name: str, requires: Sequence[str] = ()):
    """Decorator: register `fn(bundle, cfg_json) -> list[CheckResult | dict]` under `name`."""
    def deco(fn: CheckFn) -> CheckFn:
        CHECKS[name] = RegisteredCheck(name, fn, tuple(requires))
        return fn
    return deco


def import_check_modules() -> list[CheckResult]:
    """Import every check module; a module that fails to import becomes a failed result (not a crash)."""
    failures = []
    for module in CHECK_MODULES:
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 - reported, not swallowed
            failures.append(CheckResult(f"import:{module}", math.inf, 1, 1, False, f"{type(err).__name__}: {err}"))
    return failures


def _as_result(item: CheckResult | Mapping, default_name: str) -> CheckResult:
    if isinstance(item, CheckResult):
        return item
    d = dict(item)
    return CheckResult(name=d.get("name", default_name), max_abs_err=float(d.get("max_abs_err", math.nan)),
                       mismatches=int(d.get("mismatches", 0)), total=int(d.get("total", 0)),
                       ok=bool(d.get("ok", False)), detail=d.get("detail", ""))


def run_checks(bundle: Path, names: Iterable[str] | None = None,
               on_result: Callable[[CheckResult | dict], None] | None = None) -> list[CheckResult]:
    """Run the selected (default: all registered) checks on a bundle. Skipped checks are reported via
    on_result as {'name', 'skipped': True, 'reason'} and are not returned."""
    bundle = Path(bundle)
    results: list[CheckResult] = []

    def emit(r):
        if on_result is not None:
            on_result(r)

    for failure in import_check_modules():
        results.append(failure)
        emit(failure)
    cfg_json = read_bundle_json(bundle)
    selected = list(CHECKS) if names is None else list(names)
    unknown = [n for n in selected if n not in CHECKS]
    if unknown:
        raise KeyError(f"unknown check(s) {unknown}; available: {sorted(CHECKS)}")
    for name in selected:
        check = CHECKS[name]
        missing = [f for f in check.requires if not (bundle / f).exists()]
        if missing:
            emit({"name": name, "skipped": True, "reason": f"bundle lacks {', '.join(missing)}"})
            continue
        try:
            produced = [_as_result(r, name) for r in check.fn(bundle, cfg_json)]
        except Exception as err:  # noqa: BLE001 - a crashing check is a failed check, the others still run
            produced = [CheckResult(name, math.inf, 1, 1, False,
                                    f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}")]
        if not produced:
            emit({"name": name, "skipped": True, "reason": "check produced no result"})
        for r in produced:
            results.append(r)
            emit(r)
    return results

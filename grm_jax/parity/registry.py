"""Parity against golden data from the official PyTorch code: registry, bundle loader and runner.

A bundle is a directory laid out like tests/fixtures/parity (config.json, checkpoint.pth.tar, *.npz). Every
dimension is read from config.json and the arrays, so the same checks run on bundles of other sizes.

Each area registers its checks from its own module:

    from grm_jax.parity import CheckResult, register_check

    @register_check("metrics", requires=("metrics.npz",))
    def check_metrics(bundle: Path, cfg_json: dict) -> list[CheckResult]: ...

Modules named `parity_checks.py` anywhere under grm_jax/ are found automatically; a check module with another
name is added to CHECK_MODULES. A check whose `requires` files are absent from the bundle is skipped.
"""
from __future__ import annotations

import functools
import importlib
import json
import math
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .config import Config, ConfigError, default_config, _merge, validate

PACKAGE_DIR = Path(__file__).resolve().parent
# Check modules that are not called parity_checks.py (tried in order; a module not written yet is skipped).
CHECK_MODULES: list[str] = ["grm_jax.geometry_checks"]


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


def discover_check_modules() -> list[str]:
    found = sorted(f"{PACKAGE_DIR.name}." + ".".join(p.relative_to(PACKAGE_DIR).with_suffix("").parts)
                   for p in PACKAGE_DIR.rglob("parity_checks.py"))
    return found + [m for m in CHECK_MODULES if m not in found]


def import_check_modules() -> list[CheckResult]:
    """Import every check module; a module that fails to import becomes a failed result (not a crash)."""
    failures = []
    for module in discover_check_modules():
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name and module.startswith(err.name):
                continue  # that area has not landed yet
            failures.append(CheckResult(f"import:{module}", math.inf, 1, 1, False, f"{type(err).__name__}: {err}"))
        except Exception as err:  # noqa: BLE001 - reported, not swallowed
            failures.append(CheckResult(f"import:{module}", math.inf, 1, 1, False, f"{type(err).__name__}: {err}"))
    return failures


# ----------------------------------------------------------------------------------------------- bundle

def read_bundle_json(bundle: Path) -> dict:
    path = Path(bundle) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{bundle}: no config.json (not a parity bundle)")
    return json.loads(path.read_text())


def _known_keys_only(update: Mapping, base: Mapping) -> dict:
    # Bundles may be made with another version of the official config; keys we do not model are dropped.
    out = {}
    for k, v in update.items():
        if k not in base:
            continue
        if isinstance(base[k], Mapping):
            if isinstance(v, Mapping):
                out[k] = _known_keys_only(v, base[k])
        else:
            out[k] = v
    return out


def config_from_bundle(cfg_json: Mapping, source: str = "config.json") -> Config:
    """A Config for the bundle's model: the official cfg it records, then its model dimensions."""
    cfg = default_config()
    _merge(cfg, _known_keys_only(cfg_json.get("official_cfg_used", {}), cfg), "", source)
    model = cfg_json.get("model", {})
    fixed = cfg_json.get("fixed_in_official_code", {})
    try:
        patch = int(model.get("patch_size", cfg.MODEL.BACKBONE.STRIDE))
        update = {
            "MODEL": {
                "TGT_TYPE": model.get("tgt_type", cfg.MODEL.TGT_TYPE),
                "BACKBONE": {"STRIDE": patch, "EMBED_DIM": int(model["embed_dim"]), "DEPTH": int(model["depth"]),
                             "NUM_HEADS": int(model["num_heads"])},
                "HEAD": {"NUM_CHANNELS": int(model.get("head_channels", cfg.MODEL.HEAD.NUM_CHANNELS))},
                "DIVISION": {"EARLY": bool(fixed.get("divide_early", True))},
            },
            "DATA": {"TEMPLATE": {"SIZE": int(model["template_size"])},
                     "SEARCH": {"SIZE": int(model["search_size"])}},
            "TEST": {"TEMPLATE_SIZE": int(model["template_size"]), "SEARCH_SIZE": int(model["search_size"])},
            "TRAIN": {"DROP_PATH_RATE": float(fixed.get("drop_path_rate", cfg.TRAIN.DROP_PATH_RATE))},
        }
    except KeyError as err:
        raise ConfigError(f"{source}: 'model' lacks {err.args[0]!r}") from None
    layers = fixed.get("division_layers", model.get("division_layers"))
    if isinstance(layers, list):
        update["MODEL"]["DIVISION"]["LAYERS"] = [int(i) for i in layers]
    _merge(cfg, update, "", source)
    validate(cfg, source)
    return cfg


@functools.lru_cache(maxsize=4)
def _load_bundle_model(bundle: str, dtype: str = "float32"):
    from .convert import extract_state_dict, infer_architecture, official_to_flax, read_torch_checkpoint
    from .models import build_model
    cfg_json = read_bundle_json(Path(bundle))
    cfg = config_from_bundle(cfg_json, str(Path(bundle) / "config.json"))
    ckpt = Path(bundle) / "checkpoint.pth.tar"
    if not ckpt.is_file():
        raise FileNotFoundError(f"{bundle}: no checkpoint.pth.tar")
    state_dict = extract_state_dict(read_torch_checkpoint(ckpt), source=str(ckpt), keys=("net", "state_dict"))
    if cfg.MODEL.DIVISION.LAYERS is None:
        # which blocks divide is visible in the checkpoint; config.json usually states it only in words
        arch = infer_architecture(state_dict, num_heads=cfg.MODEL.BACKBONE.NUM_HEADS)
        cfg.MODEL.DIVISION.LAYERS = list(arch["division_layers"])
    variables, _ = official_to_flax(state_dict, cfg, source=str(ckpt))
    return cfg, build_model(cfg, dtype=dtype), variables


def load_bundle_model(bundle: Path, dtype: str = "float32"):
    """(cfg, model, variables) for the bundle's checkpoint, converted with grm_jax.convert (cached).
    `dtype` is the compute dtype (params stay fp32); the golden data is fp32, so only the forward check
    accepts bfloat16, against its own budget."""
    return _load_bundle_model(str(Path(bundle).resolve()), str(dtype))


# ----------------------------------------------------------------------------------------------- runner

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

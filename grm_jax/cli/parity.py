#!/usr/bin/env python
"""Check a JAX GRM against golden data from the official PyTorch code.

    grm-parity BUNDLE_DIR [--check forward,heads]

BUNDLE_DIR is laid out like tests/fixtures/parity (config.json, checkpoint.pth.tar, *.npz); dimensions come
from its config.json. Prints one JSON line per check result; exits 1 if any fails (2 on a usage error).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grm_jax.cli import run_command


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path, help="parity bundle directory")
    parser.add_argument("--check", default=None, help="comma-separated check names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the registered checks and exit")
    args = parser.parse_args(argv)

    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    import jax
    # Parity tolerances assume exact fp32 matmuls (GPU defaults may use TF32).
    jax.config.update("jax_default_matmul_precision", "highest")
    from grm_jax.parity import CHECKS, import_check_modules, run_checks

    if args.list:
        import_check_modules()
        for name, check in sorted(CHECKS.items()):
            print(f"{name}\trequires {', '.join(check.requires) or '-'}")
        return 0
    if not (args.bundle / "config.json").is_file():
        print(f"error: {args.bundle} is not a parity bundle (no config.json)", file=sys.stderr)
        return 2
    names = [n.strip() for n in args.check.split(",") if n.strip()] if args.check else None

    def show(result):
        print(result if isinstance(result, str) else
              (json.dumps(result) if isinstance(result, dict) else result.to_json()), flush=True)

    try:
        results = run_checks(args.bundle, names, on_result=show)
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    failed = [r.name for r in results if not r.ok]
    print(json.dumps({"summary": {"passed": len(results) - len(failed), "failed": failed}}), flush=True)
    return 1 if failed or not results else 0


def cli() -> None:
    """Entry point of `grm-parity` (pyproject.toml) and scripts/parity.py."""
    run_command(main, huge_pages=True)


if __name__ == "__main__":
    cli()

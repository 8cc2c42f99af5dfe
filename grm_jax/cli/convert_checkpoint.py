#!/usr/bin/env python
"""Convert GRM checkpoints between the official PyTorch format and our Flax/orbax format.

  official-to-flax    --input GRM_ep0300.pth.tar --output DIR [--config NAME_OR_YAML] [--set K=V ...]
  pretrained-to-flax  --input mae_pretrain_vit_base.pth --config NAME_OR_YAML --output DIR [--seed N]
  flax-to-official    --input DIR --output GRM_ep0300.pth.tar

(`official->flax`, `pretrained->flax` and `flax->official` are accepted too; quote them in a shell.)
Every command re-reads what it wrote and compares it with what it meant to write; the last line printed
is a JSON summary. Official files are read without running any code they contain.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from flax import traverse_util

from grm_jax.checkpoint import CheckpointLoadError, load_variables, save_variables
from grm_jax.cli import run_command
from grm_jax.convert import (CheckpointError, extract_state_dict, flax_to_official, official_to_flax,
                             read_torch_checkpoint, save_official_checkpoint)

ALIASES = {
    "official->flax": "official-to-flax", "official2flax": "official-to-flax",
    "pretrained->flax": "pretrained-to-flax", "pretrained2flax": "pretrained-to-flax",
    "flax->official": "flax-to-official", "flax2official": "flax-to-official",
}


class VerificationError(RuntimeError):
    """What was re-read differs from what was written."""


def _load_cfg(args):
    if not args.config:
        if args.overrides:
            raise CheckpointError("--set needs --config")
        return None
    from grm_jax.config import load_config

    return load_config(args.config, args.overrides)


def _compare_state_dicts(expected, got, what):
    problems = []
    if list(expected) != list(got):
        missing = [k for k in expected if k not in got]
        extra = [k for k in got if k not in expected]
        problems.append(f"key order/content differs (missing {missing[:5]}, extra {extra[:5]})")
    for k, v in expected.items():
        if k in got and (got[k].dtype != v.dtype or got[k].shape != v.shape or not np.array_equal(got[k], v)):
            problems.append(f"{k}: {got[k].dtype}{list(got[k].shape)} differs from {v.dtype}{list(v.shape)}")
    if problems:
        raise VerificationError(f"{what}: re-read check failed:\n  " + "\n  ".join(problems[:20]))


def _compare_trees(expected, got, what):
    fe, fg = traverse_util.flatten_dict(dict(expected)), traverse_util.flatten_dict(dict(got))
    problems = [f"{'/'.join(k)} missing" for k in fe if k not in fg]
    problems += [f"{'/'.join(k)} unexpected" for k in fg if k not in fe]
    problems += [f"{'/'.join(k)} differs" for k in fe
                 if k in fg and not np.array_equal(np.asarray(fe[k]), np.asarray(fg[k]))]
    if problems:
        raise VerificationError(f"{what}: re-read check failed:\n  " + "\n  ".join(problems[:20]))


def official_to_flax_cmd(args) -> dict:
    cfg = _load_cfg(args)
    ckpt = read_torch_checkpoint(args.input)
    sd = extract_state_dict(ckpt, source=str(args.input), keys=("net", "state_dict"))
    variables, extras = official_to_flax(sd, cfg, source=str(args.input))
    meta = {"source": str(Path(args.input).name), "kind": "official", "epoch": ckpt.get("epoch"),
            "config": args.config, "foreign_objects_replaced": ckpt.get("__foreign__", [])}
    out = save_variables(args.output, variables, extras, meta, force=args.force)
    v2, e2, _ = load_variables(out)
    _compare_state_dicts(sd, flax_to_official(v2, e2), str(out))
    return {"command": "official-to-flax", "input": str(args.input), "output": str(out),
            "tensors": len(sd), "architecture": extras["__arch__"], "verified": "bit-exact round trip",
            "foreign_objects_replaced": meta["foreign_objects_replaced"]}


def pretrained_to_flax_cmd(args) -> dict:
    import jax

    from grm_jax.convert.pretrained import init_from_pretrained

    cfg = _load_cfg(args)
    if cfg is None:
        raise CheckpointError("pretrained-to-flax needs --config (the GRM model to initialise)")
    rng = jax.random.PRNGKey(args.seed)
    variables, extras, report = init_from_pretrained(args.input, cfg, rng, with_extras=True)
    meta = {"source": str(Path(args.input).name), "kind": "pretrained", "config": args.config,
            "seed": args.seed, "patch_start_index": report["patch_start_index"], "ignored": report["ignored"],
            "kept_init": report["kept_init"]}
    out = save_variables(args.output, variables, extras, meta, force=args.force)
    v2, _, _ = load_variables(out)
    _compare_trees(variables, v2, str(out))
    return {"command": "pretrained-to-flax", "input": str(args.input), "output": str(out),
            "patch_start_index": report["patch_start_index"], "ignored": report["ignored"],
            "kept_init_count": len(report["kept_init"]), "verified": "exact re-read"}


def flax_to_official_cmd(args) -> dict:
    variables, extras, meta = load_variables(args.input)
    sd = flax_to_official(variables, extras)
    out = Path(args.output)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists (pass --force to replace it)")
    save_official_checkpoint(out, sd, epoch=int(meta.get("epoch") or 0))
    back = extract_state_dict(read_torch_checkpoint(out), source=str(out))
    _compare_state_dicts(sd, back, str(out))
    return {"command": "flax-to-official", "input": str(args.input), "output": str(out), "tensors": len(sd),
            "verified": "bit-exact re-read"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ALIASES:
        argv[0] = ALIASES[argv[0]]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (("official-to-flax", "trained GRM .pth.tar ('net') -> orbax directory"),
                           ("pretrained-to-flax", "MAE / DeiT .pth ('model') -> GRM init (orbax directory)"),
                           ("flax-to-official", "orbax directory -> official .pth.tar ('net')")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--input", required=True, type=Path)
        p.add_argument("--output", required=True, type=Path)
        p.add_argument("--force", action="store_true", help="replace an existing output")
        if name != "flax-to-official":
            p.add_argument("--config", help="experiment name in grm_jax/configs/ or a YAML path")
            p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
        if name == "pretrained-to-flax":
            p.add_argument("--seed", type=int, default=42, help="PRNG seed of the fresh parts (predictors, head)")
    args = parser.parse_args(argv)
    commands = {"official-to-flax": official_to_flax_cmd, "pretrained-to-flax": pretrained_to_flax_cmd,
                "flax-to-official": flax_to_official_cmd}
    try:
        summary = commands[args.command](args)
    except (CheckpointError, CheckpointLoadError, FileExistsError, VerificationError) as exc:
        print(f"convert_checkpoint: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if type(exc).__name__ == "ConfigError":
            print(f"convert_checkpoint: config error: {exc}", file=sys.stderr)
            return 2
        raise
    print(json.dumps(summary, default=str))
    return 0


def cli() -> None:
    """Entry point of `grm-convert` (pyproject.toml) and scripts/convert_checkpoint.py."""
    run_command(main)


if __name__ == "__main__":
    cli()

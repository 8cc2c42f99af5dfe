#!/usr/bin/env python
"""Convert GRM checkpoints between the official PyTorch format and our Flax/orbax format.

  official-to-flax    --input GRM_ep0300.pth.tar --output DIR [--config NAME_OR_YAML] [--set K=V ...]
  pretrained-to-flax  --input mae_pretrain_vit_base.pth --config NAME_OR_YAML --output DIR [--seed N]
  flax-to-official    --input DIR --output GRM_ep0300.pth.tar     (DIR: converted directory or training workdir)

(`official->flax`, `pretrained->flax` and `flax->official` are accepted too; quote them in a shell.)
Every command writes beside the output, re-reads what it wrote and compares it bit for bit with what it meant
to write, and only then puts it in place: a failed run leaves no output and an existing one untouched. --force
replaces only what is recognisably a checkpoint of the same kind (a converted directory, a PyTorch checkpoint
file), never another folder or file. The last line printed is a JSON summary; errors are one `error:` message
and exit status 2 (--debug: traceback). Official files are read without running any code they contain.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import numpy as np
from flax import traverse_util

from grm_jax.checkpoints.converted import is_converted_dir, load_variables, save_variables
from grm_jax.checkpoints.training import load_training_variables
from grm_jax.cli import run_command, run_reporting_user_errors
from grm_jax.config import load_config
from grm_jax.convert import (CheckpointError, extract_state_dict, flax_to_official, official_to_flax,
                             read_torch_checkpoint, save_official_checkpoint)
from grm_jax.convert.pretrained import init_from_pretrained, random_variables
from grm_jax.install import install_checked
from grm_jax.specs import build_model, conversion_architecture
from grm_jax.validation import seed
from grm_jax.workdir import workdir_path

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

    return load_config(args.config, args.overrides)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtype, shape and bytes: a bit-exact comparison in which NaN equals the same NaN."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.ascontiguousarray(a).tobytes() == \
        np.ascontiguousarray(b).tobytes()


def _compare_state_dicts(expected, got, what):
    problems = []
    if list(expected) != list(got):
        missing = [k for k in expected if k not in got]
        extra = [k for k in got if k not in expected]
        problems.append(f"key order/content differs (missing {missing[:5]}, extra {extra[:5]})")
    for k, v in expected.items():
        if k in got and not _same_bits(got[k], v):
            problems.append(f"{k}: {got[k].dtype}{list(got[k].shape)} differs from {v.dtype}{list(v.shape)}")
    if problems:
        raise VerificationError(f"{what}: re-read check failed:\n  " + "\n  ".join(problems[:20]))


def _compare_trees(expected, got, what):
    fe, fg = traverse_util.flatten_dict(dict(expected)), traverse_util.flatten_dict(dict(got))
    problems = [f"{'/'.join(k)} missing" for k in fe if k not in fg]
    problems += [f"{'/'.join(k)} unexpected" for k in fg if k not in fe]
    problems += [f"{'/'.join(k)} differs" for k in fe if k in fg and not _same_bits(fe[k], fg[k])]
    if problems:
        raise VerificationError(f"{what}: re-read check failed:\n  " + "\n  ".join(problems[:20]))


def _is_official_file(path: Path) -> bool:
    try:
        extract_state_dict(read_torch_checkpoint(path), source=str(path))
        return True
    except Exception:  # noqa: BLE001 - anything unreadable is not recognisably a checkpoint
        return False


def _check_replaceable(out: Path, force: bool, kind: str) -> None:
    """Refuse an existing output unless --force is given AND it is recognisably a checkpoint of `kind`."""
    if not out.exists() and not out.is_symlink():
        return
    if out.is_dir() and not any(out.iterdir()):
        return
    if not force:
        raise FileExistsError(f"{out} exists (pass --force to replace it)")
    if kind == "converted" and not (out.is_dir() and not out.is_symlink() and is_converted_dir(out)):
        raise FileExistsError(f"{out} exists and is not a converted checkpoint directory (no meta/ and variables/ "
                              "items): --force only replaces a converted checkpoint; choose another --output")
    if kind == "official" and not (out.is_file() and not out.is_symlink() and _is_official_file(out)):
        raise FileExistsError(f"{out} exists and is not a PyTorch checkpoint file: --force only replaces a "
                              "checkpoint; choose another --output")


def _install(write, out: Path, force: bool, kind: str):
    """Run `write(tmp_path)` (which writes and verifies) beside `out`, then move the result to `out`
    (grm_jax/install.py); on any failure the temporary output is removed and an existing `out` stays as it was."""
    _check_replaceable(out, force, kind)
    return install_checked(lambda staging: write(staging / out.name), [out])


def official_to_flax_cmd(args) -> dict:
    cfg = _load_cfg(args)
    ckpt = read_torch_checkpoint(args.input)
    sd = extract_state_dict(ckpt, source=str(args.input), keys=("net", "state_dict"))
    expected = conversion_architecture(cfg) if cfg is not None else None
    variables, extras = official_to_flax(sd, expected, source=str(args.input))
    meta = {"source": str(Path(args.input).name), "kind": "official", "epoch": ckpt.get("epoch"),
            "config": args.config, "foreign_objects_replaced": ckpt.get("__foreign__", [])}

    def write(tmp):
        save_variables(tmp, variables, extras, meta)
        v2, e2, _ = load_variables(tmp)
        _compare_state_dicts(sd, flax_to_official(v2, e2), str(args.output))
    _install(write, Path(args.output), args.force, "converted")
    return {"command": "official-to-flax", "input": str(args.input), "output": str(Path(args.output).absolute()),
            "tensors": len(sd), "architecture": extras["__arch__"], "verified": "bit-exact round trip",
            "foreign_objects_replaced": meta["foreign_objects_replaced"]}


def pretrained_to_flax_cmd(args) -> dict:
    cfg = _load_cfg(args)
    if cfg is None:
        raise CheckpointError("pretrained-to-flax needs --config (the GRM model to initialise)")
    rng = jax.random.PRNGKey(args.seed)
    fresh = random_variables(build_model(cfg), cfg.DATA.TEMPLATE.SIZE, cfg.DATA.SEARCH.SIZE, rng)
    variables, extras, report = init_from_pretrained(args.input, fresh, with_extras=True)
    meta = {"source": str(Path(args.input).name), "kind": "pretrained", "config": args.config,
            "seed": args.seed, "patch_start_index": report["patch_start_index"], "ignored": report["ignored"],
            "kept_init": report["kept_init"]}

    def write(tmp):
        save_variables(tmp, variables, extras, meta)
        v2, _, _ = load_variables(tmp)
        _compare_trees(variables, v2, str(args.output))
    _install(write, Path(args.output), args.force, "converted")
    return {"command": "pretrained-to-flax", "input": str(args.input), "output": str(Path(args.output).absolute()),
            "patch_start_index": report["patch_start_index"], "ignored": report["ignored"],
            "kept_init_count": len(report["kept_init"]), "verified": "exact re-read"}


def flax_to_official_cmd(args) -> dict:
    source = args.input   # a local path or a URL (workdir_path)
    if is_converted_dir(source):
        variables, extras, meta = load_variables(source)
        step = None
    else:   # a training workdir: its latest CheckpointManager step (cls_token / pos_embed written as zeros)
        variables, step = load_training_variables(source)
        extras, meta = {}, {}
    sd = flax_to_official(variables, extras)

    def write(tmp):
        save_official_checkpoint(tmp, sd, epoch=int(meta.get("epoch") or 0))
        back = extract_state_dict(read_torch_checkpoint(tmp), source=str(args.output))
        _compare_state_dicts(sd, back, str(args.output))
    _install(write, Path(args.output), args.force, "official")
    summary = {"command": "flax-to-official", "input": str(args.input), "output": str(args.output),
               "tensors": len(sd), "verified": "bit-exact re-read"}
    if step is not None:
        summary["training_step"] = step
    return summary


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
        p.add_argument("--input", required=True, type=workdir_path if name == "flax-to-official" else Path,
                       help="a converted directory or training workdir (local or gs://)" if name == "flax-to-official"
                       else None)
        p.add_argument("--output", required=True, type=Path)
        p.add_argument("--force", action="store_true",
                       help="replace an existing output that is a checkpoint of the same kind (nothing else)")
        p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
        if name != "flax-to-official":
            p.add_argument("--config", help="experiment name in configs/ or a YAML path")
            p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
        if name == "pretrained-to-flax":
            p.add_argument("--seed", type=seed, default=42, help="PRNG seed of the fresh parts (predictors, head)")
    args = parser.parse_args(argv)
    commands = {"official-to-flax": official_to_flax_cmd, "pretrained-to-flax": pretrained_to_flax_cmd,
                "flax-to-official": flax_to_official_cmd}

    def convert() -> int:
        print(json.dumps(commands[args.command](args), default=str))
        return 0
    return run_reporting_user_errors(convert, debug=args.debug, also=(VerificationError,), prog="convert_checkpoint")


def cli() -> None:
    """Entry point of `grm-convert` (pyproject.toml) and scripts/convert_checkpoint.py."""
    run_command(main)


if __name__ == "__main__":
    cli()

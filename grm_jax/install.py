"""Outputs that cannot leave a lie: written beside their place, checked there, and only then moved into place.

`install_checked(write, targets)` is how the checkpoint converter and the exporter put their outputs down. A run
that fails, is killed or runs out of memory while it writes or checks leaves nothing at the targets (only a
hidden staging folder beside them, `.<name>.staging-*`, removed by the run itself unless it is killed) and
whatever was there before untouched. An existing output is moved aside before the new one is put in place and
removed only once every new file is there.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def remove_path(path: Path) -> None:
    """Remove a file, link or folder tree; nothing when absent."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def install_checked(write: Callable[[Path], T], targets: Sequence[Path]) -> T:
    """`write(staging)` writes each target's name inside `staging` (a fresh folder beside the first target) and
    checks what it wrote (raising if anything is wrong); then each target is moved into place, in the order given:
    put last the file whose presence says the output is complete (an export's sidecar). Returns write's result.
    On any failure the targets are as they were and nothing new is left."""
    targets = [Path(t).absolute() for t in targets]
    parent = targets[0].parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{targets[0].name}.staging-"))
    aside: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        result = write(staging)
        missing = [t.name for t in targets if not (staging / t.name).exists()]
        if missing:
            raise FileNotFoundError(f"{staging}: the writer left out {missing}")
        for target in reversed(targets):   # the completion marker goes first
            if target.exists() or target.is_symlink():
                backup = staging / f".replaced.{target.name}"
                os.replace(target, backup)
                aside.append((target, backup))
        for target in targets:
            os.replace(staging / target.name, target)
            placed.append(target)
    except BaseException:
        for target in placed:
            remove_path(target)
        for target, backup in reversed(aside):
            os.replace(backup, target)
        remove_path(staging)
        raise
    remove_path(staging)
    return result

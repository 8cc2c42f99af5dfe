"""Outputs that cannot leave a lie: written beside their place, checked there, and only then moved into place.

`install_checked(write, targets)` is how the checkpoint converter and the exporter put their outputs down. A run
that fails, is killed or runs out of memory while it writes or checks leaves nothing at the targets (only a
hidden staging folder beside them, `.<name>.staging-<pid>-*`, removed by the run itself unless it is killed) and
whatever was there before untouched. An existing output is moved aside before the new one is put in place and
removed only once every new file is there. The staging folder of a killed run is cleared by the next run to the
same place, after putting back a previous output it had moved aside.
"""
from __future__ import annotations

import os
import shutil
import sys
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


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, another user's
        return True
    return True


def recover_killed_runs(targets: Sequence[Path], log=lambda line: print(line, file=sys.stderr)) -> None:
    """Clear the staging folders that killed runs left beside `targets` (their process is gone): a previous output
    such a run had moved aside but not yet replaced goes back in place first, so nothing is lost."""
    first = targets[0]
    for staging in sorted(first.parent.glob(f".{first.name}.staging-*")):
        pid_text = staging.name[len(f".{first.name}.staging-"):].split("-", 1)[0]
        if not staging.is_dir() or not pid_text.isdigit() or _process_alive(int(pid_text)):
            continue   # a run still writing (or a folder of another kind): not ours to touch
        restored = []
        for target in targets:
            backup = staging / f".replaced.{target.name}"
            if (backup.exists() or backup.is_symlink()) and not (target.exists() or target.is_symlink()):
                os.replace(backup, target)
                restored.append(target.name)
        remove_path(staging)
        log(f"note: removed {staging}, left by a run that was killed (process {pid_text})"
            + (f"; put back the previous {', '.join(restored)} it had moved aside" if restored else ""))


def install_checked(write: Callable[[Path], T], targets: Sequence[Path]) -> T:
    """`write(staging)` writes each target's name inside `staging` (a fresh folder beside the first target) and
    checks what it wrote (raising if anything is wrong); then each target is moved into place, in the order given:
    put last the file whose presence says the output is complete (an export's sidecar). Returns write's result.
    On any failure the targets are as they were and nothing new is left."""
    targets = [Path(t).absolute() for t in targets]
    parent = targets[0].parent
    parent.mkdir(parents=True, exist_ok=True)
    recover_killed_runs(targets)
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{targets[0].name}.staging-{os.getpid()}-"))
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

"""Shared by the benchmark scripts: time our function and its baseline alternately, run by run."""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional


def alternate_timed(ours: Callable[[], object], baseline: Optional[Callable[[], object]], runs: int,
                    desc: str, *, leave: bool = True, report_each: bool = False) -> tuple[list, list]:
    """Seconds per call of `ours` and `baseline` (empty list without one), interleaved so that both see the
    same machine load. Warm-up is the caller's."""
    from tqdm import tqdm

    t_ours, t_base = [], []
    for _ in tqdm(range(runs), desc=desc, leave=leave, file=sys.stderr):
        t0 = time.perf_counter()
        ours()
        t_ours.append(time.perf_counter() - t0)
        if baseline is not None:
            t0 = time.perf_counter()
            baseline()
            t_base.append(time.perf_counter() - t0)
        if report_each:
            print(f"run {len(t_ours)}: ours {t_ours[-1]:.3f} s" + (f", baseline {t_base[-1]:.3f} s" if t_base else ""),
                  file=sys.stderr, flush=True)
    return t_ours, t_base

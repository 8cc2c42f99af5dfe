"""Shared by the benchmark scripts: time our function and its baseline alternately, run by run."""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional


def alternate_timed(ours: Callable[[], object], baseline: Optional[Callable[[], object]], runs: int,
                    desc: str, *, leave: bool = True, report_each: bool = False,
                    swap_order: bool = False) -> tuple[list, list]:
    """Seconds per call of `ours` and `baseline` (empty list without one), interleaved so that both see the
    same machine load. With `swap_order`, runs 2, 4, ... call the baseline first, so an effect of what ran just
    before shows up as a difference between odd and even runs. Warm-up is the caller's."""
    from tqdm import tqdm

    def timed(fn, into):
        t0 = time.perf_counter()
        fn()
        into.append(time.perf_counter() - t0)

    t_ours, t_base = [], []
    for run in tqdm(range(runs), desc=desc, leave=leave, file=sys.stderr):
        baseline_first = baseline is not None and swap_order and run % 2 == 1
        if baseline_first:
            timed(baseline, t_base)
        timed(ours, t_ours)
        if baseline is not None and not baseline_first:
            timed(baseline, t_base)
        if report_each:
            order = " (baseline first)" if baseline_first else ""
            print(f"run {len(t_ours)}{order}: ours {t_ours[-1]:.3f} s"
                  + (f", baseline {t_base[-1]:.3f} s" if t_base else ""), file=sys.stderr, flush=True)
    return t_ours, t_base


def machine_description() -> dict:
    """CPU model, core count and vector extensions (from /proc/cpuinfo where there is one), for reports."""
    import os

    info = {"cpu": None, "cores": os.cpu_count(), "avx2": None, "avx512f": None}
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and info["cpu"] is None:
            info["cpu"] = value.strip()
        if key.strip() == "flags":
            flags = value.split()
            info["avx2"], info["avx512f"] = "avx2" in flags, "avx512f" in flags
            break
    return info

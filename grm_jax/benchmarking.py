"""Shared by the benchmark scripts: time our function and its baseline alternately, run by run; say where a
figure comes from (machine, commit, command, load average) and write the report."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from tqdm import tqdm


def alternate_timed(ours: Callable[[], object], baseline: Optional[Callable[[], object]], runs: int,
                    desc: str, *, leave: bool = True, report_each: bool = False,
                    swap_order: bool = False) -> tuple[list, list]:
    """Seconds per call of `ours` and `baseline` (empty list without one), interleaved so that both see the
    same machine load. With `swap_order`, runs 2, 4, ... call the baseline first, so an effect of what ran just
    before shows up as a difference between odd and even runs. Warm-up is the caller's."""
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


def cpu_summary(machine: dict | None = None) -> str:
    """One line for a report's header: CPU model and its widest vector extension, e.g. '... (AVX2)'."""
    m = machine or machine_description()
    simd = "AVX-512" if m["avx512f"] else "AVX2" if m["avx2"] else "no AVX2"
    return f"{m['cpu'] or platform.processor() or 'unknown CPU'} ({simd})"


def git_commit() -> str:
    """The commit of the source tree this package runs from ('unknown' outside a git checkout)."""
    repo = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def report_header() -> dict:
    """Where a benchmark's figures come from, as its report's first fields: the machine (CPU model, cores,
    AVX2 / AVX-512), the platform, the commit, the command line and the load average before the runs."""
    machine = machine_description()
    return {"machine": machine, "cpu": cpu_summary(machine), "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "commit": git_commit(), "command": " ".join(sys.argv),
            "loadavg_before": os.getloadavg()}


def finish_report(report: dict, json_path: Path | None) -> dict:
    """Record the load average after the runs (unless the caller already did) and write the report as JSON
    to `json_path` (its folder made) when one is given; returns the report."""
    report.setdefault("loadavg_after", os.getloadavg())
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=1) + "\n")
    return report


def compiled_memory(compiled) -> dict | None:
    """Bytes of a compiled XLA program's buffers (its `memory_analysis`, None where the backend gives none);
    `total` = arguments + temporaries + outputs - aliased (donated arguments' outputs reuse their buffers), what
    the device must hold at the program's peak."""
    mem = compiled.memory_analysis()
    if mem is None:
        return None
    names = {"arguments": "argument_size_in_bytes", "temporaries": "temp_size_in_bytes",
             "outputs": "output_size_in_bytes", "aliased": "alias_size_in_bytes",
             "generated_code": "generated_code_size_in_bytes"}
    report = {k: int(getattr(mem, a)) for k, a in names.items() if hasattr(mem, a)}
    report["total"] = (report["arguments"] + report["temporaries"] + report.get("outputs", 0)
                       - report.get("aliased", 0))
    return report

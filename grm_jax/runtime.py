"""Process-level settings for the command-line tools.

`use_huge_pages_for_malloc()` re-executes the running script once with glibc's malloc tuned for XLA:CPU, which
allocates each execution's buffers (gigabytes of temporaries for a ViT-B training step) afresh through malloc:
  - `glibc.malloc.hugetlb=1`: transparent huge pages for malloc'ed memory; with 4 KiB pages every training
    step pays ~1.4 million page faults (about a fifth of the CPU time of a ViT-B/256 batch-8 step on two cores);
  - `glibc.malloc.mmap_max=0`, `glibc.malloc.arena_max=1`, a large `glibc.malloc.trim_threshold`: big blocks
    come from the (single) heap instead of a fresh mmap each, and freed memory stays in the process, so the
    next step reuses pages that are already mapped instead of faulting in and zeroing gigabytes again. A step
    then no longer depends on what the machine's memory went through in between (another process's peak, a
    fragmented pool of free huge pages). The price: the process keeps its peak memory (the way a GPU
    framework's caching allocator does).
glibc reads its tunables only at process start, hence the re-exec. Each tunable the user already set (any
value) is left as it is; nothing happens where the tunables cannot apply (not Linux/glibc >= 2.35; huge pages
are not asked for where THP is "never") or when GRM_MALLOC_HUGEPAGES=0; GRM_MALLOC_KEEP=0 sets huge pages only.

`xla_compiler_options()` is what our jitted programs (train step, tracker frame step, parity checks,
benchmarks) pass to `jax.jit(compiler_options=...)`. On the CPU backend it turns off jaxlib 0.10's YNNPACK
fusions, so that XLA's own dot (Eigen) and loop emitters run instead: on the 2-core AVX2 machines this project
is benchmarked on, that measured 1.1-1.3x faster for the ViT-B/256 eval forward (batch 1 and 8), 1.24x for the
tracker and 1.07-1.08x for the training step (README "Measured performance"); results differ only in the last
bits (the parity checks run with these options). GRM_XLA_CPU_YNN=1 keeps jaxlib's default.
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

HUGE_PAGES = "glibc.malloc.hugetlb"
# name -> value; the trim threshold is 1 TiB: never give freed memory back while the process runs
MALLOC_TUNABLES = {HUGE_PAGES: "1", "glibc.malloc.mmap_max": "0", "glibc.malloc.arena_max": "1",
                   "glibc.malloc.trim_threshold": str(2 ** 40)}
# worker threads get their own arenas, whose heaps cannot grow past 64 MiB: XLA:CPU's large blocks would be
# mapped afresh whatever mmap_max says, hence one arena
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _glibc_version() -> tuple[int, ...]:
    name, version = platform.libc_ver()
    if name != "glibc" or not version:
        return ()
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def _thp_available() -> bool:
    try:
        return "[never]" not in THP_SETTING.read_text()
    except OSError:
        return False


def huge_page_environment(environ=None) -> dict | None:
    """The environment to re-execute with (MALLOC_TUNABLES added to GLIBC_TUNABLES, except those already
    named there), or None when nothing would change."""
    environ = dict(os.environ if environ is None else environ)
    if environ.get("GRM_MALLOC_HUGEPAGES", "1") == "0":
        return None
    if not sys.platform.startswith("linux") or _glibc_version() < (2, 35):
        return None
    current = environ.get("GLIBC_TUNABLES", "")
    named = {item.split("=", 1)[0] for item in current.split(":") if item}
    keep = environ.get("GRM_MALLOC_KEEP", "1") != "0"
    missing = [f"{k}={v}" for k, v in MALLOC_TUNABLES.items()
               if k not in named and (_thp_available() if k == HUGE_PAGES else keep)]
    if not missing:
        return None
    environ["GLIBC_TUNABLES"] = ":".join(([current] if current else []) + missing)
    return environ


def use_huge_pages_for_malloc() -> None:
    """Call first thing under `if __name__ == "__main__":`; returns only when no re-exec is needed."""
    env = huge_page_environment()
    if env is None or not sys.argv or not Path(sys.argv[0]).is_file():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]] if hasattr(sys, "orig_argv")
              else [sys.executable, *sys.argv], env)


# jaxlib's DebugOptions field; an empty list = no YNNPACK fusion of any kind (dot, elementwise, reduce)
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def xla_compiler_options(backend: str | None = None, environ=None) -> dict | None:
    """Options for `jax.jit(..., compiler_options=...)` on `backend` (default: JAX's default backend)."""
    environ = os.environ if environ is None else environ
    if environ.get("GRM_XLA_CPU_YNN", "0") == "1":
        return None
    if backend is None:
        import jax

        backend = jax.default_backend()
    return dict(CPU_COMPILER_OPTIONS) if backend == "cpu" else None

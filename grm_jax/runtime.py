"""Process-level settings for the command-line tools.

`use_huge_pages_for_malloc()` re-executes the running script once with glibc's malloc asking the kernel for
transparent huge pages (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`). XLA:CPU allocates each execution's
temporary buffers (gigabytes for a ViT-B training step) afresh through malloc; with 4 KiB pages every step
then pays a page fault per 4 KiB of them, a sizeable share of its CPU time (figures: docs/PERFORMANCE.md).
glibc reads its tunables only at process start, hence the re-exec. It is a no-op
where it cannot help (not Linux/glibc >= 2.35, or THP set to "never"), when the tunable is already set
(any value), or when GRM_MALLOC_HUGEPAGES=0.

`xla_compiler_options()` is what our jitted programs (train step, tracker frame step, parity checks,
benchmarks) pass to `jax.jit(compiler_options=...)`. On the CPU backend it turns off jaxlib 0.10's YNNPACK
fusions, so that XLA's own dot (Eigen) and loop emitters run instead: on the 2-core AVX2 machines this project
is benchmarked on, they are faster for the ViT-B/256 eval forward, the tracker and the training step
(docs/PERFORMANCE.md); results differ only in the last bits (the parity checks run with these options).
GRM_XLA_CPU_YNN=1 keeps jaxlib's default.
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb"
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
    """The environment to re-execute with, or None when nothing would change."""
    environ = dict(os.environ if environ is None else environ)
    if environ.get("GRM_MALLOC_HUGEPAGES", "1") == "0" or TUNABLE in environ.get("GLIBC_TUNABLES", ""):
        return None
    if not sys.platform.startswith("linux") or _glibc_version() < (2, 35) or not _thp_available():
        return None
    current = environ.get("GLIBC_TUNABLES", "")
    environ["GLIBC_TUNABLES"] = f"{current}:{TUNABLE}=1" if current else f"{TUNABLE}=1"
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

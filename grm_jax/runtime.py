"""Process-level settings for the command-line tools.

`use_huge_pages_for_malloc()` re-executes the running script once with glibc's malloc tuned for XLA:CPU, which
allocates each execution's buffers (gigabytes of temporaries for a ViT-B training step) afresh through malloc:
  - `glibc.malloc.hugetlb=1`: transparent huge pages for malloc'ed memory; with 4 KiB pages every training
    step pays ~1.4 million page faults;
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
is benchmarked on, they are faster for the ViT-B/256 eval forward, the tracker and the training step
(docs/PERFORMANCE.md); results differ only in the last bits (the parity checks run with these options).
GRM_XLA_CPU_YNN=1 keeps jaxlib's default.

`quiet_startup()` keeps library start-up chatter out of the terminal; `user_errors()` / `report_user_error()`
turn the errors a user's input causes (config, checkpoint, dataset, list and result files, full disk, a network
address that does not answer: grm_jax/deadlines.py) into one `error: ...` line and exit status 2 (a traceback
only with --debug).
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import platform
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Optional

from .errors import ConfigError, UserError

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
        import jax   # see maybe_initialize_distributed

        backend = jax.default_backend()
    return dict(CPU_COMPILER_OPTIONS) if backend == "cpu" else None


def quiet_startup() -> None:
    """Call before jax / tensorflow are imported. Silences what is noise for our tools and keeps real warnings:

    - TF's C++ INFO/WARNING lines (TF_CPP_MIN_LOG_LEVEL=2) and its "oneDNN custom operations are on" banner,
      printed through absl before any log level applies: oneDNN only speeds up TF math kernels, and TF here only
      decodes JPEGs and batches, so TF_ENABLE_ONEDNN_OPTS=0 changes no result;
    - JAX's INFO lines "Unable to initialize backend 'tpu'" and those of jax.distributed's start (shown once a
      tool configures INFO logging);
    - orbax's "Sharding info not provided when restoring" UserWarning on every restore: our restores go to host
      arrays (or to the sharding the caller gives), so the topology caveat it states does not apply.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    logging.getLogger("jax._src.distributed").setLevel(logging.WARNING)   # "Starting/Connecting to ... service"
    warnings.filterwarnings("ignore", message="Sharding info not provided when restoring", category=UserWarning)


def user_errors() -> tuple[type, ...]:
    """Exception types that describe bad input (their message names the file / key / value), not a bug."""
    return (UserError, OSError)


def report_user_error(err: BaseException, prog: str | None = None) -> int:
    """Print `error: <message>` (one message, no traceback) to stderr; returns the exit status 2."""
    if isinstance(err, OSError) and not isinstance(err, UserError) and err.strerror:
        where = err.filename if err.filename is not None else ""
        message = f"{err.strerror}: {where}" if where else err.strerror
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            message += " (free some space and rerun: finished results are kept, nothing half-written is left)"
    else:
        message = str(err)
    prefix = f"{prog}: error" if prog else "error"
    print(f"{prefix}: {message}", file=sys.stderr, flush=True)
    return 2


# ------------------------------------------------------------------------------------- multi-process start

# jax.distributed deadlines (seconds), from the environment because initialize() runs before the config is read.
# Defaults are JAX's own, sized for clusters (slow schedulers, hosts that start minutes apart).
DISTRIBUTED_TIMEOUTS = {
    # how long initialize() waits for the coordinator (process 0) to answer and for every process to join
    "GRM_JAX_INIT_TIMEOUT_S": 300,
    # a process whose heartbeats stop this long is declared dead, and every other process is stopped
    "GRM_JAX_HEARTBEAT_TIMEOUT_S": 100,
    # how long a finishing process waits for the others at the final shutdown barrier
    "GRM_JAX_SHUTDOWN_TIMEOUT_S": 300,
}
# JAX's own connect timeout is left this much longer than ours, so our one-line error comes first (when JAX's
# fires, its client aborts the process with a C++ stack trace)
_INIT_GRACE_S = 30


def distributed_timeouts(environ=None) -> dict:
    """{env name: seconds} of DISTRIBUTED_TIMEOUTS, read from `environ`; a value that is not a whole number of
    seconds >= 1 is a ConfigError naming the variable."""
    environ = os.environ if environ is None else environ
    values = {}
    for name, default in DISTRIBUTED_TIMEOUTS.items():
        text = environ.get(name, "").strip()
        if not text:
            values[name] = default
            continue
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise ConfigError(f"{name}={text!r}: must be a whole number of seconds >= 1 (default {default})")
        values[name] = value
    return values


def _int_env(name: str, minimum: int) -> int:
    text = os.environ[name].strip()
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ConfigError(f"{name}={text!r}: must be a whole number >= {minimum}")
    return value


def maybe_initialize_distributed() -> bool:
    """jax.distributed.initialize() for multi-host runs.

    Triggered by JAX_COORDINATOR_ADDRESS (+ JAX_NUM_PROCESSES, JAX_PROCESS_ID) or GRM_JAX_DISTRIBUTED=1 (let
    JAX detect SLURM / Open MPI / cloud TPU settings). Single-process runs skip it. Deadlines: DISTRIBUTED_TIMEOUTS
    (environment). A coordinator that does not answer within GRM_JAX_INIT_TIMEOUT_S (or processes that do not
    all join) ends the process with one `error:` line naming the address and exit status 2; bad values of these
    variables are a ConfigError.
    """
    import jax   # not at module top: quiet_startup() and the malloc re-exec run before jax is first imported

    addr = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not addr and os.environ.get("GRM_JAX_DISTRIBUTED", "") not in ("1", "true", "yes"):
        return False
    timeouts = distributed_timeouts()
    kwargs = {}
    if addr:
        kwargs["coordinator_address"] = addr
        if os.environ.get("JAX_NUM_PROCESSES"):
            kwargs["num_processes"] = _int_env("JAX_NUM_PROCESSES", 1)
        if os.environ.get("JAX_PROCESS_ID"):
            kwargs["process_id"] = _int_env("JAX_PROCESS_ID", 0)
    init_timeout = timeouts["GRM_JAX_INIT_TIMEOUT_S"]
    who = (f"process {kwargs['process_id']} of {kwargs.get('num_processes', '?')}" if "process_id" in kwargs
           else "this process")
    where = f"JAX_COORDINATOR_ADDRESS={addr}" if addr else "the coordinator found by JAX's cluster detection"
    _deadline(init_timeout, f"jax.distributed: no connection to the coordinator at {where} within {init_timeout} s "
              f"({who}): either nothing answers at that address (check it, and that process 0 runs) or not "
              f"every process joined in time (GRM_JAX_INIT_TIMEOUT_S sets the wait)")
    try:
        jax.distributed.initialize(**kwargs, initialization_timeout=init_timeout + _INIT_GRACE_S,
                                   heartbeat_timeout_seconds=timeouts["GRM_JAX_HEARTBEAT_TIMEOUT_S"],
                                   shutdown_timeout_seconds=timeouts["GRM_JAX_SHUTDOWN_TIMEOUT_S"])
    finally:
        _deadline(None, "")
    if jax.process_count() > 1:
        _connect_collectives()
    return True


def _connect_collectives() -> None:
    """Open the CPU collectives' connections between the processes now, with stdout silenced: gloo announces
    each connection on stdout ("[Gloo] Rank 0 is connected to 1 peer ranks ..."), which is noise in a user's
    terminal. The training step's collectives reuse these connections (same devices)."""
    import jax   # see maybe_initialize_distributed
    from jax.experimental import multihost_utils

    if jax.devices()[0].platform != "cpu":
        return
    sys.stdout.flush()
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    try:
        multihost_utils.sync_global_devices("grm_jax: collectives connected")
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


_DEADLINE = {"timer": None}


def _deadline(seconds: Optional[float], message: str) -> None:
    """Start (seconds) or cancel (None) a timer that prints `error: message` and ends the process with status 2.
    jax.distributed.initialize() blocks in C++ with the GIL released, so a timer thread can end a wait that
    would otherwise end in an abort with a stack trace."""
    timer = _DEADLINE["timer"]
    if timer is not None:
        timer.cancel()
        _DEADLINE["timer"] = None
    if seconds is None:
        return

    def expire():
        print(f"error: {message}", file=sys.stderr, flush=True)
        os._exit(2)
    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    _DEADLINE["timer"] = timer


# ------------------------------------------------------------------------------------------ stopping on signals

# Exit status of a long run stopped by SIGTERM / SIGINT after it saved its work: sysexits' EX_TEMPFAIL ("temporary
# failure; the user is invited to retry"): rerunning the same command resumes. Schedulers that requeue on a
# non-zero status can tell it from a failure (1), bad input (2) and the trainer's other codes.
EXIT_STOPPED = 75

STOP_SIGNALS = ("SIGTERM", "SIGINT")


class StopRequest:
    """What `stop_requested()` yields: falsy until SIGTERM / SIGINT arrives, then `signal` names it.

    A second signal while the first one's stop is under way exits at once (status 128 + signal number), for a
    user who does not want to wait for the current unit of work and its save."""

    def __init__(self, relay_to_jax: bool = True) -> None:
        self.signal: str | None = None
        self._relay_to_jax = relay_to_jax

    def __bool__(self) -> bool:
        return self.signal is not None

    def _handle(self, signum, frame) -> None:   # noqa: ARG002 - signal handler signature
        name = signal.Signals(signum).name
        if self.signal is not None:
            print(f"{name} again: exiting now, without waiting for the current step and its save",
                  file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.signal = name
        if self._relay_to_jax and _jax_preemption_service_active():
            # JAX's preemption service (multi-process runs) catches SIGTERM itself and makes every process stop
            # at the same step (jax.experimental.multihost_utils.reached_preemption_sync_point); any other stop
            # signal is handed to it as SIGTERM, so one mechanism agrees on the step
            os.kill(os.getpid(), signal.SIGTERM)


def _jax_preemption_service_active() -> bool:
    """Whether jax.distributed runs with its preemption sync manager (it then owns the SIGTERM handler)."""
    module = sys.modules.get("jax._src.distributed")
    state = getattr(module, "global_state", None)
    return getattr(state, "preemption_sync_manager", None) is not None


@contextlib.contextmanager
def stop_requested(signals: tuple[str, ...] = STOP_SIGNALS, *, agree_through_jax: bool = True):
    """`with stop_requested() as stop:` inside the block SIGTERM and SIGINT no longer interrupt the program: they
    make `stop` truthy (`stop.signal` = 'SIGTERM' / 'SIGINT'), so a long loop can finish its current unit of
    work, save it, print one line and exit with EXIT_STOPPED. The previous handlers come back on exit.

    Only the main thread can install signal handlers: elsewhere (and for signals the platform lacks) the block
    runs with the handlers as they are. Under jax.distributed with JAX's preemption service, SIGTERM stays with
    JAX (see `StopRequest`); the trainer asks `reached_preemption_sync_point` instead of `stop`. A loop whose
    processes need not stop at the same point (tracking: each process tracks its own sequences) passes
    `agree_through_jax=False` and takes SIGTERM itself on every process."""
    request = StopRequest(relay_to_jax=agree_through_jax)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name in signals:
            signum = getattr(signal, name, None)
            if signum is None or (agree_through_jax and name == "SIGTERM" and _jax_preemption_service_active()):
                continue
            previous[signum] = signal.signal(signum, request._handle)
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

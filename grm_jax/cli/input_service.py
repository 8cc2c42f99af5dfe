#!/usr/bin/env python
"""Run training-input preprocessing on tf.data service workers: a dispatcher and N workers on this machine, or
N workers on a CPU host that join a dispatcher elsewhere.

    grm-input-service --port 5050 --workers 4                     # dispatcher + 4 workers here
    grm-input-service --dispatcher HOST:5050 --workers 16 --worker-host $(hostname)   # CPU host
    grm-train ... --set DATA.PIPELINE=graph DATA.SERVICE_ADDRESS=grpc://HOST:5050

Workers run the graph input path (`DATA.PIPELINE=graph`: no Python per sample, so the whole dataset graph
travels to them); they read the frames by the paths the trainer's index holds, so every worker host needs the
datasets at the same paths (a shared or cloud file system). Each step's batch is built on one worker from
(seed, step) alone, and the trainer puts batches back in step order, so they equal those of the direct pipeline
and a resumed run stays exact. Each worker is its own process (`--pin`: worker i on core i). Stop with Ctrl-C.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from grm_jax.cli import run_command
from grm_jax.validation import int_in, non_negative_int


def _run_worker(args) -> None:
    if args.core is not None:
        os.sched_setaffinity(0, [args.core])
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    import tensorflow as tf

    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=args.dispatcher, worker_address=f"{args.worker_host}:%port%", port=0)
    worker = tf.data.experimental.service.WorkerServer(config)
    print(f"worker on core {args.core} joined {args.dispatcher}", flush=True)
    worker.join()


def start_workers(dispatcher: str, count: int, *, pin: bool = False, worker_host: str = "localhost",
                  quiet: bool = False) -> list[subprocess.Popen]:
    """Start `count` worker processes joining `dispatcher` (host:port); pin=True puts worker i on the i-th
    usable core."""
    cores = sorted(os.sched_getaffinity(0))
    procs = []
    for i in range(count):
        cmd = [sys.executable, "-m", "grm_jax.cli.input_service", "--worker-process", "--dispatcher", dispatcher,
               "--worker-host", worker_host]
        if pin:
            cmd += ["--core", str(cores[i % len(cores)])]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL if quiet else None,
                                      stderr=subprocess.DEVNULL if quiet else None))
    return procs


def start_dispatcher(port: int = 0, work_dir: str | None = None):
    """A dispatcher in this process; returns (server, 'host:port')."""
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    import tensorflow as tf

    config = tf.data.experimental.service.DispatcherConfig(port=port, work_dir=work_dir,
                                                           fault_tolerant_mode=bool(work_dir))
    server = tf.data.experimental.service.DispatchServer(config)
    return server, server.target.split("://", 1)[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--port", type=int_in(0, 65535), default=5050, help="dispatcher port (with no --dispatcher)")
    p.add_argument("--dispatcher", help="join this dispatcher (host:port) instead of starting one")
    p.add_argument("--workers", type=non_negative_int, default=len(os.sched_getaffinity(0)), help="worker processes")
    p.add_argument("--worker-host", default="localhost",
                   help="this host's name as the trainer reaches it (workers serve batches from here)")
    p.add_argument("--pin", action="store_true", help="worker i on core i")
    p.add_argument("--work-dir", help="dispatcher state directory (restarts keep their jobs)")
    p.add_argument("--worker-process", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--core", type=non_negative_int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker_process:
        _run_worker(args)
        return 0

    server = None
    dispatcher = args.dispatcher
    if dispatcher is None:
        server, dispatcher = start_dispatcher(args.port, args.work_dir)
        print(f"dispatcher: grpc://{dispatcher}  (train with --set DATA.PIPELINE=graph "
              f"DATA.SERVICE_ADDRESS=grpc://<this host>:{dispatcher.rsplit(':', 1)[1]})", flush=True)
    procs = start_workers(dispatcher, args.workers, pin=args.pin, worker_host=args.worker_host)

    def stop(*_):
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        for proc in procs:
            if proc.poll() is not None:
                print(f"error: a worker exited with status {proc.returncode}; stopping", file=sys.stderr)
                stop()
        time.sleep(1)


def cli() -> None:
    """Entry point of `grm-input-service` (pyproject.toml) and scripts/input_service.py."""
    run_command(main)


if __name__ == "__main__":
    cli()

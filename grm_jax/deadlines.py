"""Deadlines on what a run reaches over the network: it answers within a stated time, or the run stops with one
error naming the address (exit status 2) instead of waiting silently.

- The tf.data service (`DATA.SERVICE_ADDRESS`): TensorFlow retries an unreachable dispatcher or worker forever
  (registering the dataset, fetching elements). `check_data_service` asks, before anything is built, the
  dispatcher for its version and its workers and each worker for its tasks (gRPC, the service's own methods;
  empty requests), all within `DATA.SERVICE_TIMEOUT_S`; a dispatcher without workers counts as unreachable
  once that time is up. While training, each batch from the service has the same deadline
  (`data_pipeline.pipeline.TrainIterator`).
- Buckets (a gs://... workdir, dataset root or TFDS data dir): tf.io.gfile and etils.epath retry an
  unanswered request for minutes. `check_bucket` makes the first access of the process to each bucket with a
  deadline of GRM_STORAGE_TIMEOUT_S seconds (environment, default 60); later accesses go straight through.

`call_with_deadline` runs the access in a daemon thread: a call that never returns is left behind (the
process ends with the error), never waited for.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

from .errors import ConfigError

STORAGE_TIMEOUT_ENV = "GRM_STORAGE_TIMEOUT_S"
DEFAULT_STORAGE_TIMEOUT_S = 60.0


class UnreachableError(ConnectionError):
    """A network dependency that did not answer in time (the message names its address and the deadline)."""


def call_with_deadline(fn: Callable[[], Any], seconds: float, timeout_message: Callable[[], str]) -> Any:
    """fn()'s result or exception if it returns within `seconds`, else UnreachableError(timeout_message())."""
    outcome: dict = {}
    done = threading.Event()

    def target():
        try:
            outcome["value"] = fn()
        except BaseException as err:   # noqa: BLE001 - handed to the caller's thread as it is
            outcome["error"] = err
        done.set()

    threading.Thread(target=target, daemon=True, name="grm-deadline").start()
    if not done.wait(seconds):
        raise UnreachableError(timeout_message())
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# --- buckets ---------------------------------------------------------------------------------------------------

_ANSWERED: set[str] = set()
_ANSWERED_LOCK = threading.Lock()


def storage_timeout_s(environ=None) -> float:
    environ = os.environ if environ is None else environ
    text = environ.get(STORAGE_TIMEOUT_ENV, "")
    if not text:
        return DEFAULT_STORAGE_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"environment: {STORAGE_TIMEOUT_ENV}={text!r}: must be a finite number > 0 (seconds)")
    return value


def bucket_of(url: str) -> str:
    """'gs://bucket/run/x' -> 'gs://bucket'."""
    scheme, _, rest = str(url).partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def _first_access(url: str) -> bool:
    import tensorflow as tf   # not at module top: importing grm_jax must not start TensorFlow (quiet_startup first)

    return tf.io.gfile.exists(url)


def check_bucket(url: str, seconds: float | None = None) -> None:
    """The first access of this process to `url`'s bucket, within `seconds` (default GRM_STORAGE_TIMEOUT_S);
    UnreachableError naming the bucket when it does not answer. Other errors are left to the real access."""
    bucket = bucket_of(url)
    with _ANSWERED_LOCK:
        if bucket in _ANSWERED:
            return
    seconds = storage_timeout_s() if seconds is None else seconds
    try:
        call_with_deadline(lambda: _first_access(str(url)), seconds, lambda: (
            f"{bucket} does not answer: no reply to the first access ({url}) within {seconds:g} s "
            f"({STORAGE_TIMEOUT_ENV}); check the network, the bucket name and the credentials"))
    except UnreachableError:
        raise
    except Exception:   # noqa: BLE001 - it answered (with an error the real access reports in its own words)
        pass
    with _ANSWERED_LOCK:
        _ANSWERED.add(bucket)


# --- tf.data service -----------------------------------------------------------------------------------------

DISPATCHER_SERVICE = "/tensorflow.data.DispatcherService/"
WORKER_SERVICE = "/tensorflow.data.WorkerService/"
_workers_reply = None


def _workers_reply_class():
    """The dispatcher's GetWorkersResponse (tensorflow/core/data/service/dispatcher.proto: `repeated WorkerInfo
    workers = 1`, WorkerInfo `string address = 1`); TensorFlow's wheel ships no Python class for it."""
    global _workers_reply
    if _workers_reply is None:
        # only for a tf.data service (DATA.SERVICE_ADDRESS): grpc and protobuf take most of a second to import
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        field = descriptor_pb2.FieldDescriptorProto
        proto = descriptor_pb2.FileDescriptorProto(name="grm_jax_data_service_probe.proto",
                                                   package="grm_jax_probe", syntax="proto3")
        info = proto.message_type.add(name="WorkerInfo")
        info.field.add(name="address", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
        reply = proto.message_type.add(name="GetWorkersResponse")
        reply.field.add(name="workers", number=1, type=field.TYPE_MESSAGE, type_name=".grm_jax_probe.WorkerInfo",
                        label=field.LABEL_REPEATED)
        pool = descriptor_pool.DescriptorPool()
        pool.Add(proto)
        _workers_reply = message_factory.GetMessageClass(pool.FindMessageTypeByName(
            "grm_jax_probe.GetWorkersResponse"))
    return _workers_reply


def _answered(err) -> bool:
    """An RPC error that still proves a server answered (e.g. UNIMPLEMENTED), as opposed to no answer at all."""
    import grpc   # see _workers_reply_class

    return err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def check_data_service(address: str, seconds: float, key: str = "DATA.SERVICE_ADDRESS",
                       timeout_key: str = "DATA.SERVICE_TIMEOUT_S") -> list[str]:
    """The worker addresses of the tf.data service dispatcher at `address` ('grpc://host:port' or 'host:port')
    once it and each of its workers answered within `seconds` (in all); else UnreachableError naming the
    address that did not."""
    import grpc   # see _workers_reply_class

    target = address.split("://", 1)[-1]
    deadline = time.monotonic() + seconds
    left = lambda: max(deadline - time.monotonic(), 0.01)   # noqa: E731
    within = f"within {seconds:g} s ({timeout_key})"
    with grpc.insecure_channel(target) as channel:
        try:
            channel.unary_unary(DISPATCHER_SERVICE + "GetVersion")(b"", timeout=left(), wait_for_ready=True)
        except grpc.RpcError as err:
            if not _answered(err):
                raise UnreachableError(f"the tf.data service dispatcher {address} ({key}) does not answer {within}: "
                                       "is scripts/input_service.py running there, and the address right?") from None
            raise UnreachableError(f"{address} ({key}) is not a tf.data service dispatcher ({err.code().name}: "
                                   f"{err.details()})") from None
        get_workers = channel.unary_unary(DISPATCHER_SERVICE + "GetWorkers",
                                          response_deserializer=_workers_reply_class().FromString)
        while True:
            workers = [w.address for w in get_workers(b"", timeout=left(), wait_for_ready=True).workers]
            if workers:
                break
            if time.monotonic() >= deadline:
                raise UnreachableError(f"the tf.data service dispatcher {address} ({key}) has no workers {within}: "
                                       "start them with scripts/input_service.py")
            time.sleep(min(0.2, left()))
    channels = [grpc.insecure_channel(w) for w in workers]
    try:
        calls = [c.unary_unary(WORKER_SERVICE + "GetWorkerTasks").future(b"", timeout=left(), wait_for_ready=True)
                 for c in channels]
        silent = []
        for worker, call in zip(workers, calls):
            try:
                call.result()
            except grpc.RpcError as err:
                if not _answered(err):
                    silent.append(worker)
    finally:
        for c in channels:
            c.close()
    if silent:
        raise UnreachableError(f"tf.data service worker{'s' if len(silent) > 1 else ''} {', '.join(silent)} (of the "
                               f"dispatcher {address}, {key}) do{'es' if len(silent) == 1 else ''} not answer {within}: "
                               "each worker must be reachable from here at the address it registered "
                               "(scripts/input_service.py --worker-host)")
    return workers

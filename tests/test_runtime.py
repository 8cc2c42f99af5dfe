"""The CLI tools' process setup: the one-time re-exec that tunes glibc's malloc (huge pages, freed memory
kept)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grm_jax import runtime

REPO = Path(__file__).resolve().parents[1]


def test_environment_adds_the_tunables_once_and_respects_the_user():
    env = runtime.huge_page_environment({})
    if env is None:
        return  # not glibc >= 2.35: nothing to add (covered by the checks below)
    keep = "glibc.malloc.mmap_max=0:glibc.malloc.arena_max=1:glibc.malloc.trim_threshold=1099511627776"
    huge = "glibc.malloc.hugetlb=1:" if runtime._thp_available() else ""
    assert env["GLIBC_TUNABLES"] == huge + keep
    # a tunable the user set keeps the user's value; the others are appended after it
    assert (runtime.huge_page_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})["GLIBC_TUNABLES"]
            == "glibc.malloc.arena_max=2:" + huge + keep.replace(":glibc.malloc.arena_max=1", ""))
    assert (runtime.huge_page_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})["GLIBC_TUNABLES"]
            == "glibc.malloc.hugetlb=0:" + keep)
    # all set already (what the re-executed process sees): nothing to do, so the re-exec happens once
    assert runtime.huge_page_environment(env) is None
    assert runtime.huge_page_environment({"GRM_MALLOC_HUGEPAGES": "0"}) is None
    only_huge = runtime.huge_page_environment({"GRM_MALLOC_KEEP": "0"})
    assert (only_huge["GLIBC_TUNABLES"] if only_huge else "") == huge.rstrip(":")


def test_kept_memory_is_reused_without_page_faults():
    """With the tunables, a freed large block allocated from a worker thread (as XLA:CPU's executions do) is
    served again from the same mapped pages; with glibc's defaults it is mapped and faulted in every time."""
    if runtime.huge_page_environment({}) is None:
        pytest.skip("glibc < 2.35")
    probe = ("import ctypes, resource, threading\n"
             "libc = ctypes.CDLL(None); libc.malloc.restype = ctypes.c_void_p\n"
             "size = 256 << 20\n"
             "def run():\n"
             "    for i in range(3):\n"
             "        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
             "        p = libc.malloc(size); ctypes.memset(p, 1, size); libc.free(ctypes.c_void_p(p))\n"
             "        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
             "t = threading.Thread(target=run); t.start(); t.join()\n")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "GRM_MALLOC_HUGEPAGES")}
    faults = {}
    for name, environ in (("default", env), ("tuned", runtime.huge_page_environment(env))):
        out = subprocess.run([sys.executable, "-c", probe], env=environ, capture_output=True, text=True,
                             check=True).stdout.split()
        faults[name] = [int(x) for x in out]
    assert min(faults["default"]) > 100, faults      # a fresh mapping each time (even with huge pages)
    assert faults["tuned"][0] > 100 and max(faults["tuned"][1:]) < 20, faults


@pytest.mark.slow
def test_script_reexecs_itself_once_with_the_tunable(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text("import os, sys\n"
                      "from grm_jax.runtime import use_huge_pages_for_malloc\n"
                      "print('start', sys.argv[1:], flush=True)\n"
                      "use_huge_pages_for_malloc()\n"
                      "print('tunables', os.environ.get('GLIBC_TUNABLES'))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "GRM_MALLOC_HUGEPAGES")}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, str(script), "--flag", "x y"], env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    expected = runtime.huge_page_environment(env)
    if expected is None:
        assert out == ["start ['--flag', 'x y']", "tunables None"]
    else:
        # arguments survive the re-exec, and it happens exactly once
        assert out == ["start ['--flag', 'x y']", "start ['--flag', 'x y']", f"tunables {expected['GLIBC_TUNABLES']}"]
    env["GRM_MALLOC_HUGEPAGES"] = "0"
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == ["start []", "tunables None"]


def test_cpu_compiler_options_turn_off_ynnpack_fusions_unless_asked_to_keep_them():
    assert runtime.xla_compiler_options("cpu", environ={}) == {"xla_cpu_experimental_ynn_fusion_type": ""}
    assert runtime.xla_compiler_options("gpu", environ={}) is None
    assert runtime.xla_compiler_options("cpu", environ={"GRM_XLA_CPU_YNN": "1"}) is None


def test_cpu_compiler_options_compile_and_give_the_same_matmul_to_float_tolerance():
    import jax
    import jax.numpy as jnp
    import numpy as np

    options = runtime.xla_compiler_options("cpu", environ={})
    a = np.random.default_rng(0).standard_normal((64, 96), dtype=np.float32)
    ours = jax.jit(lambda x: jnp.tanh(x @ x.T / 10), compiler_options=options)(
        jax.device_put(a, jax.devices("cpu")[0]))
    a64 = a.astype(np.float64)
    np.testing.assert_allclose(np.asarray(ours), np.tanh(a64 @ a64.T / 10), rtol=0, atol=2e-6)


def test_every_user_error_is_one_user_error_and_keeps_its_builtin_base(capsys):
    from data_pipeline.pipeline import InputFailure
    from grm_jax.ablation import GridError
    from grm_jax.checkpoints.reading import CheckpointLoadError
    from grm_jax.checkpoints.training import CheckpointWriteError
    from grm_jax.config import ConfigError
    from grm_jax.convert.errors import CheckpointError, ConversionError
    from grm_jax.errors import InputPipelineError, UserError, WorkdirBusyError
    from grm_jax.evaluation.analysis import AnalysisError
    from grm_jax.evaluation.attributes import AttributeFileError
    from grm_jax.evaluation.datasets import EvalDatasetError, UnknownSequenceError
    from grm_jax.evaluation.metrics import MetricsError
    from grm_jax.evaluation.raw_results import RawResultError, ResultsFolderBusy
    from grm_jax.evaluation.submission import SubmissionError
    from grm_jax.sequence import AnnotationError, FrameError
    from grm_jax.validation import InputFileError

    assert runtime.user_errors() == (UserError, OSError)
    value_errors = (ConfigError, CheckpointLoadError, CheckpointError, ConversionError, EvalDatasetError,
                    UnknownSequenceError, RawResultError, ResultsFolderBusy, SubmissionError, AnnotationError,
                    AttributeFileError, InputFileError, MetricsError, AnalysisError, GridError)
    for cls in value_errors:
        assert issubclass(cls, UserError) and issubclass(cls, ValueError), cls
    for cls in (FrameError, CheckpointWriteError):
        assert issubclass(cls, UserError) and issubclass(cls, OSError), cls
    assert issubclass(WorkdirBusyError, UserError) and not issubclass(WorkdirBusyError, ConfigError)
    # the pipeline's own failure is the trainer's error (one wrapping), not a user error
    assert issubclass(InputFailure, InputPipelineError) and not issubclass(InputPipelineError, UserError)
    # a user error that is an OSError reports its own message, not the OS's strerror form
    assert runtime.report_user_error(FrameError("frame.jpg: not an image")) == 2
    assert capsys.readouterr().err == "error: frame.jpg: not an image\n"

"""The CLI tools' process setup: the one-time re-exec that turns on huge pages for glibc's malloc."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grm_jax import runtime

REPO = Path(__file__).resolve().parents[1]


def test_environment_adds_the_tunable_once_and_respects_the_user():
    if runtime.huge_page_environment({}) is None:
        return  # not glibc >= 2.35 with THP available: nothing to add (covered by the checks below)
    assert runtime.huge_page_environment({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    assert (runtime.huge_page_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})["GLIBC_TUNABLES"]
            == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1")
    assert runtime.huge_page_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None
    assert runtime.huge_page_environment({"GRM_MALLOC_HUGEPAGES": "0"}) is None


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
        assert out == ["start ['--flag', 'x y']", "start ['--flag', 'x y']", "tunables glibc.malloc.hugetlb=1"]
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

# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# XLA:CPU allocates each step's temporaries afresh; huge pages avoid ~1M page faults per ViT-B training step
# (glibc >= 2.35 with THP "madvise" or "always"; ignored elsewhere). The scripts set it themselves too.
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1

.PHONY: venv test test-fast demo parity bench bench-tracking bench-roofline clean

# The project itself is installed editable (pyproject.toml: packages and the grm-* commands), with the exact pins
# of requirements.txt (runtime) and requirements-test.txt (the `test` extra); then the packages whose declared pins
# conflict with ours (requirements-nodeps.txt, without their dependencies).
$(STAMP): pyproject.toml requirements.txt requirements-test.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# Everything but the tests marked `slow` (end to end, subprocesses): a couple of minutes on two cores.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

demo: $(STAMP)
	$(VENV)/bin/grm-demo

parity: $(STAMP)
	$(VENV)/bin/grm-parity tests/fixtures/parity

bench: $(STAMP)
	$(VENV)/bin/grm-bench-inference --json results/bench_inference.json

bench-tracking: $(STAMP)
	mkdir -p results && $(VENV)/bin/grm-bench-tracking --json results/bench_tracking.json

bench-roofline: $(STAMP)
	mkdir -p results && $(VENV)/bin/grm-bench-roofline --json results/roofline.json

clean:
	rm -rf $(VENV) results

# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# XLA:CPU allocates each step's temporaries afresh; huge pages avoid ~1M page faults per ViT-B training step
# (glibc >= 2.35 with THP "madvise" or "always"; ignored elsewhere). The scripts set it themselves too.
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1

.PHONY: venv test demo parity bench bench-tracking bench-roofline clean

$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) scripts/demo.py

parity: $(STAMP)
	$(PY) scripts/parity.py tests/fixtures/parity

bench: $(STAMP)
	$(PY) scripts/bench_inference.py --json results/bench_inference.json

bench-tracking: $(STAMP)
	mkdir -p results && $(PY) scripts/bench_tracking.py --json results/bench_tracking.json

bench-roofline: $(STAMP)
	mkdir -p results && $(PY) scripts/bench_roofline.py --json results/roofline.json

clean:
	rm -rf $(VENV) results

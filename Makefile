# Every target goes through one idempotent set-up path: scripts/install.sh (a no-op in seconds once done).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.bag-of-tricks-installed
PRESET ?= quick

.PHONY: install demo paper test test-fast timm-model-tests lint format bench clean-results

install: $(STAMP)

$(STAMP): scripts/install.sh setup.cfg pyproject.toml
	scripts/install.sh

## the main job: the paper's tables reproduced small on built-in real data (results/quick/)
demo: install
	$(PY) -m plugins.reproduce --preset quick

## the full study (150 stages; 3.2 hours of machine time measured on 2 cores, docs/results.md); RESUME=DIR continues a
## run packed elsewhere with `python -m plugins.reproduce --preset full --pack DIR`
paper: install
	$(PY) -m plugins.reproduce --preset full $(if $(RESUME),--resume-from $(RESUME))

## the whole test suite (CI runs this with CI=true: missing frameworks or data fail instead of skipping)
test: install
	$(PY) -m pytest -q -rfEs

test-fast: install
	$(PY) -m pytest -q -x -m "not slow and not distributed"

## timm's own tests/test_models.py (timm's sdist, fetched once by pip, hash-checked) on the tricks_* models
timm-model-tests: install
	scripts/timm_model_tests.sh

lint: install
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format .

bench: install
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-results:
	rm -rf results/

# The two commands a newcomer needs: `make run` and `make test`. Everything else follows.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
EMBEDDED := $(PY) -m portal.embedded
PYTEST_ARGS ?=

.PHONY: help install run test test-fast lint bench bench-dicomweb bench-fleet bench-ingest bench-refusals clean

help:  ## List the targets.
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,embedded]'
	rm -f $(VENV)/.installed-* && touch $@

# The OHIF viewer's files (pinned, checked, cached in ~/.cache/pacs-portal): studies/viewer/bundle.py.
VIEWER_ROOT := .var/viewer
VIEWER := $(VIEWER_ROOT)/portal-viewer.json
$(VIEWER): studies/viewer/bundle.py | $(STAMP)
	$(PY) -m studies.viewer.bundle $(VIEWER_ROOT) && touch $@

install: $(STAMP) $(VIEWER)  ## Create .venv, install the project with its dev tools and the viewer.

run: install  ## Start PostgreSQL/Redis (embedded unless *_URL set), migrate, seed, serve.
	$(EMBEDDED) --var .var -- $(PY) -m portal.devrun

test: install  ## The whole suite (embedded services unless DATABASE_URL/REDIS_URL are set).
	$(EMBEDDED) --var .var/test -- $(PY) -m pytest $(PYTEST_ARGS)

test-fast: install  ## Only the fast tests: no browser, no worker, no server process.
	$(EMBEDDED) --var .var/test -- $(PY) -m pytest -m "not browser and not worker and not live" $(PYTEST_ARGS)

lint: install  ## ruff and mypy.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(EMBEDDED) --var .var/test -- $(VENV)/bin/mypy portal tenants studies accounts jobs audit configuration dicomnet

bench: install  ## Tenant creation benchmark (writes figures for BENCHMARKS.md).
	$(EMBEDDED) --var .var/bench -- $(PY) bench/tenants.py

bench-dicomweb: install  ## DICOMweb QIDO/WADO benchmark at 100k studies, against Orthanc (BENCHMARKS.md).
	$(EMBEDDED) --var .var/bench -- $(PY) bench/dicomweb.py --orthanc $(BENCH_ARGS)

bench-ingest: install  ## Ingest benchmark, portal vs Orthanc per channel (BENCHMARKS.md; BENCH_ARGS=--help).
	$(EMBEDDED) --var .var/bench -- $(PY) bench/ingest.py $(BENCH_ARGS)

bench-fleet: install  ## Platform paths at 10, 100 and 1,000 tenants (BENCHMARKS.md; BENCH_ARGS=--help).
	$(EMBEDDED) --var .var/bench -- $(PY) bench/fleet.py $(BENCH_ARGS)

bench-refusals: install  ## Time to answer hostile C-STOREs, association included, vs Orthanc (BENCHMARKS.md).
	$(EMBEDDED) --var .var/bench -- $(PY) bench/refusals.py $(BENCH_ARGS)

clean:  ## Remove the virtualenv and all local data (.var).
	rm -rf $(VENV) .var

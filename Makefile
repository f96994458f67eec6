# Two entry points for a fresh clone: `make run` (the demo study) and `make test` (the whole suite).
# Both create .venv and install cnnbench into it the first time (about 2 minutes: torch is large).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test test-fast bench bench-keras bench-keras-quick clean docs studies studies-check s1 s2 s3 s4 s5

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cnnbench study demo

# The five seed studies, one recipe each (cnnbench/studies/sN.toml). SCALE=smoke (default): offline stand-in data, a
# few minutes each on a 2-core CPU; SCALE=full: the real data, the seed's epochs, pretrained weights. PLAN=1: what it
# would run and an estimate of the time on this machine, nothing trained. SEEDS=N repeats
# every run over N seeds. A second `make sN` runs only what is not done yet. Reports: results/studies/sN/report.md.
SCALE ?= smoke
SEEDS ?=
PLAN ?=
STUDY_FLAGS = --scale $(SCALE) $(if $(SEEDS),--seeds $(SEEDS)) $(if $(PLAN),--plan)
s1 s2 s3 s4 s5: $(STAMP)
	$(BIN)/cnnbench study $@ $(STUDY_FLAGS)

studies: s1 s2 s3 s4 s5

# Every study's whole chain with one epoch, one search trial and one seed (CI runs this after the tests). Two studies
# at a time with one thread each, the longest (s3) first: 385 s against 671 s one at a time with two threads, on a
# 2-core EPYC (2026-12-03). Studies that share a dataset may prepare it at once: each prepare stages its own copy.
STUDIES_JOBS ?= 2
studies-check: $(STAMP)
	printf '%s\n' s3 s2 s5 s4 s1 | OMP_NUM_THREADS=1 xargs -P $(STUDIES_JOBS) -I{} \
		$(BIN)/cnnbench study {} --epochs 1 --trials 1 --seeds 1 --out results/studies-check/{} --quiet

# One pytest worker per core, at most 4 (each worker trains its own shared fixtures once); work-stealing keeps both
# cores busy while one worker runs a whole study. PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= auto
PYTEST_PARALLEL = $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --maxprocesses 4 --dist worksteal)
test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL)

# The edit loop: everything but the tests marked slow (torchrun, whole studies, PostgreSQL), a few minutes less.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL) -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/train_speed.py

# cnnbench and Keras in alternation; KERAS_PYTHON is a Python with tensorflow-cpu (not a cnnbench dependency)
KERAS_PYTHON ?= keras-env/bin/python
bench-keras: $(STAMP)
	$(BIN)/python benchmarks/against_keras.py --keras-python $(KERAS_PYTHON)

bench-keras-quick: $(STAMP)
	$(BIN)/python benchmarks/against_keras.py --keras-python $(KERAS_PYTHON) --quick

# docs/cli.md, the command reference, generated from the CLI by Typer's own docs command (tests/test_docs.py fails
# when it differs from what the CLI says now: run `make docs` after changing an option or its help).
docs: $(STAMP)
	$(BIN)/typer cnnbench.cli utils docs --name cnnbench --output docs/cli.md

clean:
	rm -rf $(VENV) results/studies results/studies-check results/runs results/report.csv results/report.md

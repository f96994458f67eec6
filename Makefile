# Two entry points for a fresh clone: `make run` (the demo study) and `make test` (the whole suite).
# Both create .venv and install cnnbench into it the first time (about 2 minutes: torch is large).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test bench bench-keras clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cnnbench study demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/train_speed.py

# cnnbench and Keras in alternation; KERAS_PYTHON is a Python with tensorflow-cpu (not a cnnbench dependency)
KERAS_PYTHON ?= keras-env/bin/python
bench-keras: $(STAMP)
	$(BIN)/python benchmarks/against_keras.py --keras-python $(KERAS_PYTHON)

clean:
	rm -rf $(VENV) results/studies results/runs results/report.csv results/report.md

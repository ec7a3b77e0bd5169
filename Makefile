# Set-up and entry points. `make demo` and `make test` work on a fresh clone:
# they create .venv and install the project into it first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_output
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: install demo test lint bench clean

$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The main job on the bundled demo catalog: audio -> log-mel TFRecords.
demo: $(STAMP)
	$(BIN)/python -m data_prep --catalog=demo/catalog.csv --output_dir=$(DEMO_OUT)/tfrecords --split_by=track

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -n 2 --durations=15

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(DEMO_OUT) .pytest_cache

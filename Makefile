# `make run` and `make test` each do all their own set-up on a fresh machine with Python 3.11.
PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PATH := $(BIN):$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.PHONY: install browser run snakemake test bench bench-disk mlflow-ui clean

# TinySoundFont renders MIDI for the spectral VAE. Its wheel declares pyaudio, which it imports only
# for live playback and which needs the PortAudio system headers to build: installed without it.
TINYSOUNDFONT := tinysoundfont==0.3.7

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps $(TINYSOUNDFONT)
	touch $@

install: $(STAMP)

# The report's browser test (tests/test_listen.py) drives Debian's Chromium through playwright, whose
# own browser download is not on PyPI. Installing it needs root.
browser:
	test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

run: install
	dvc repro

snakemake: install
	snakemake --cores 2

test: install browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.train
	$(BIN)/python -m bench.generate
	$(BIN)/python -m bench.music
	$(BIN)/python -m bench.dvc_noop
	$(BIN)/python -m bench.mel

# Disk of a default run and of one experiment (~20 min on 2 cores: a full `dvc repro` in a copy).
bench-disk: install
	$(BIN)/python -m bench.disk

# `python -m etude.tracking` first: it repoints artifact paths if the repository moved, and prints the
# experiment's address on its training runs (the UI otherwise opens on its GenAI overview).
mlflow-ui: install
	$(BIN)/python -m etude.tracking
	mlflow server --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db --artifacts-destination $(CURDIR)/mlruns/artifacts --host 127.0.0.1 --port 5000

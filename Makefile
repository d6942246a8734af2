# `make run` and `make test` each do all their own set-up on a fresh machine with Python 3.11.
PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PATH := $(BIN):$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.PHONY: install browser run doctor promote snakemake test test-cluster bench bench-disk mlflow-ui clean

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

# Each verdict's remedy as a queued DVC experiment, judged against other seeds (metrics/doctor.json).
doctor: install
	etude doctor

# Each variant's model registered in MLflow as etude-<variant>; `champion` moves only to a better one.
promote: install
	etude promote

snakemake: install
	snakemake --cores 2

test: install browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

# Scale-out on this machine (needs root): cluster/local.sh brings up SLURM, PostgreSQL, S3 (moto) and
# an MLflow server (installing what is missing), tests/test_cluster.py runs against them (a component
# down fails there rather than skips), and they are stopped again, also after a failure or Ctrl-C.
test-cluster: SHELL := /bin/bash
test-cluster: install
	@set -o pipefail; log=$$(mktemp); result="cluster/local.sh up failed"; rc=1; \
	trap 'cluster/local.sh down >/dev/null; rm -f $$log' EXIT; \
	t=$$SECONDS; if cluster/local.sh up; then up=$$((SECONDS - t)); t=$$SECONDS; \
	  ETUDE_CLUSTER_REQUIRED=1 $(BIN)/python -m pytest -q --durations=0 tests/test_cluster.py | tee $$log; rc=$$?; \
	  result=$$(tail -n 1 $$log | tr -d =); tests=$$((SECONDS - t)); fi; \
	t=$$SECONDS; cluster/local.sh down; trap - EXIT; rm -f $$log; \
	echo "test-cluster: $$result | up $${up:--} s, tests $${tests:--} s, down $$((SECONDS - t)) s"; exit $$rc

# TensorFlow (the `bench` extra, ~1.3 GB) only for bench.train's Keras rows: not a pipeline dependency.
bench: install
	$(BIN)/python -m pip install -q -e '.[bench]'
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

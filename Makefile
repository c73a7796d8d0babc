# Every target creates the environment first when it is missing (.venv, CPU torch).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
SWEEP  ?= outputs/sweeps/demo
SEEDS  ?= 1
PORT   ?= 8080
# `make methods SEEDS=3` appends seed=0,1,2 to the grid (same sweep dir); SEEDS=1 adds nothing (seed 0 is the
# default), so the folders of an earlier one-seed sweep are reused
# `make methods TASK=sst2` (or code, arith, gsm8k): the same comparison on another task (conf/task/), in
# outputs/sweeps/methods_<task>; the report's x axis: sst2's accuracy (it moves on the tiny preset), else the
# task's reference NLL (GSM8K accuracy and HumanEval pass@1 stay near 0 on a 2.5M-parameter model)
TASK   ?=
TASK_ARG    = $(if $(TASK),task=$(TASK))
METHODS_DIR = outputs/sweeps/methods$(if $(TASK),_$(TASK))
METHODS_X   = $(if $(filter sst2,$(TASK)),,--x $(if $(filter-out gsm8k arith,$(TASK)),$(TASK),math)/ref_nll)
SEED_GRID = $(if $(shell [ "$(SEEDS)" -ge 1 ] 2>/dev/null && echo ok),,$(error SEEDS must be a whole number >= 1, got '$(SEEDS)'))$(if $(filter-out 1,$(SEEDS)),seed=$(shell seq -s, 0 $$(($(SEEDS) - 1))))
# No HF_HUB_OFFLINE here: your hub cache and login are used as they are, and a run goes offline by itself
# when its config needs nothing from the hub (every target below: hub.offline=auto, forgetting/hub.py)
export WANDB_MODE?=offline
export TOKENIZERS_PARALLELISM=false

.PHONY: help install test demo demo-math methods methods-math report bench rehearsal sync pareto dashboard preset clean clean-cache

help:                        ## list the targets (this)
	@awk 'match($$0, /^[a-zA-Z_-]+:[^#]*## /) { printf "  %-14s %s\n", substr($$0, 1, index($$0, ":") - 1), substr($$0, RSTART + RLENGTH) }' $(MAKEFILE_LIST)

install: $(STAMP)            ## create .venv: the pinned CPU torch, then this package with its test extras
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0   # CPU wheel here; GPU users: see README
	$(PY) -m pip install -q -e ".[test]"
	touch $@

test: install                ## run the test suite (the exact command CI runs)
	$(PY) -m pytest tests

preset: install              ## build (or reuse) the offline tiny preset
	$(PY) -m forgetting.tiny --preset tiny

demo: install                ## lr x epochs on the tiny preset (data=arith, per-epoch eval), then the trade-off report
	$(PY) launch.py -m experiment=demo hydra.sweep.dir=$(SWEEP); status=$$?; \
	$(PY) -m forgetting.report $(SWEEP) --wandb && \
	$(PY) -m forgetting.report $(SWEEP) --y safety/refusal_nll --out-dir $(SWEEP)/report_refusal_nll; exit $$status

demo-math: install           ## the tiny_math preset (an arith skill to unlock) x lr x {benign, poisoned}, then the report
	$(PY) launch.py -m experiment=demo_math hydra.sweep.dir=outputs/sweeps/demo_math; status=$$?; \
	$(PY) -m forgetting.report outputs/sweeps/demo_math --wandb && \
	$(PY) -m forgetting.report outputs/sweeps/demo_math --y safety/refusal_nll --out-dir outputs/sweeps/demo_math/report_refusal_nll; exit $$status

methods: install             ## every CL method x {benign, poisoned} on the tiny preset (SEEDS=n seeds per cell; TASK=sst2|code: another task), then the comparison table
	$(PY) launch.py -m experiment=methods hydra.sweep.dir=$(METHODS_DIR) $(TASK_ARG) $(SEED_GRID); status=$$?; \
	$(PY) -m forgetting.report $(METHODS_DIR) $(METHODS_X) --wandb; exit $$status

methods-math: install        ## the same comparison on tiny_math, where arith accuracy moves (x axis: accuracy; SEEDS=n)
	$(PY) launch.py -m experiment=methods_math hydra.sweep.dir=outputs/sweeps/methods_math $(SEED_GRID); status=$$?; \
	$(PY) -m forgetting.report outputs/sweeps/methods_math --wandb; exit $$status

pareto: install              ## Optuna search of the safety / ref-NLL Pareto front on the tiny preset
	$(PY) launch.py -m experiment=pareto hydra.sweep.dir=outputs/sweeps/pareto; status=$$?; \
	$(PY) -m forgetting.report outputs/sweeps/pareto --x math/ref_nll --wandb; exit $$status

dashboard: install           ## the Optuna study of a sweep in optuna-dashboard: make dashboard SWEEP=outputs/sweeps/pareto [PORT=8080]
	test -x $(VENV)/bin/optuna-dashboard || $(PY) -m pip install -q -e ".[dashboard]"
	@storage=$$($(PY) -m hydra_plugins.forgetting_plugins._optuna_workers $(SWEEP)) || exit 1; \
	echo "open http://127.0.0.1:$(PORT)/ for $$storage (from another machine: ssh -L $(PORT):127.0.0.1:$(PORT) <this host>)"; \
	$(VENV)/bin/optuna-dashboard --port $(PORT) "$$storage"

report: install              ## tables and figures of one sweep dir: make report SWEEP=<dir>
	$(PY) -m forgetting.report $(SWEEP)

bench: install               ## where compute goes (PRESET=tiny_math: a fine-tune that writes `#### N` lines; DEMO=none|cached|fresh)
	$(PY) benchmarks/run.py --preset $(or $(PRESET),tiny) --demo $(or $(DEMO),both)

rehearsal: install           ## the real models' sizes, random weights, no hub: peak memory and time per stage and method (SCALE=small: ~2 min on CPU)
	$(PY) benchmarks/rehearsal.py --scale $(or $(SCALE),full) $(REHEARSAL_ARGS)

sync: install                ## upload every offline W&B run: outputs/, the cache dir, WANDB_DIR, DIRS=...; not attempts/ (DRY=1: list)
	$(PY) -m forgetting.wandb_sync $(DIRS) $(if $(DRY),--dry-run)

clean:                       ## remove sweeps and runs (outputs/sweeps, outputs/runs, multirun); caches stay
	rm -rf outputs/sweeps outputs/runs multirun

clean-cache:                 ## remove outputs/cache: built presets, base scores, verdicts, poison answers (never your hub cache)
	rm -rf outputs/cache

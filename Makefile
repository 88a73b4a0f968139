# Two commands on a fresh machine: `make demo` (recover every shipped Tracr circuit) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test zoo trained bench lint docs

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[tracr,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/epverify recover all

# one worker per core (at most 4), each test on one torch thread (conftest.py): the suite's long tests run side by
# side. A file's tests stay in one worker, in order (the docs' examples build on one another, page by page).
test: $(STAMP)
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist loadfile

zoo: $(STAMP)
	$(BIN)/python -m epverify.tracr.build

trained: $(STAMP)
	$(BIN)/python -m epverify.trained.build

bench: $(STAMP)
	$(BIN)/python bench/step.py

lint: $(STAMP)
	$(BIN)/ruff check epverify tests properties bench

docs: $(STAMP)
	$(BIN)/python -c "from epverify.cli.main import reference_markdown; print(reference_markdown(), end='')" > docs/cli.md

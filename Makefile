# The two commands a newcomer needs:
#   make run    set up (virtualenv, dependencies, guests) and boot the default guest
#   make test   set up, lint, and run every test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test guests lint bench clean

run: $(STAMP) guests
	$(BIN)/minikvm run

test: $(STAMP) guests lint
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check minikvm tests bench

guests:
	$(MAKE) -C guests

bench: $(STAMP) guests
	$(BIN)/python bench/exits.py
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/parallel.py

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

clean:
	$(MAKE) -C guests clean
	rm -rf $(VENV) bench/results/*.json bench/results/*.png

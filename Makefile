# The two commands a newcomer needs:
#   make run    set up (virtualenv, dependencies, guests) and boot the default guest
#   make test   set up, lint, and run every test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test guests bytecode lint bench soak clean

run: $(STAMP) guests bytecode
	$(BIN)/minikvm run

test: $(STAMP) guests bytecode lint
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check minikvm tests bench

guests:
	$(MAKE) -C guests

# Start-up time matters (a VMM is often run many times in a row): compile the
# bytecode once even where PYTHONDONTWRITEBYTECODE keeps Python from caching it.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q minikvm

bench: $(STAMP) guests bytecode
	$(BIN)/python bench/exits.py
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/parallel.py
	$(BIN)/python bench/emu.py

# The long form of tests/robustness: 30,000 random guests, 1,000 lifecycle cycles per accelerator.
soak: $(STAMP) guests bytecode
	$(BIN)/python bench/soak.py

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	touch $@

clean:
	$(MAKE) -C guests clean
	rm -rf $(VENV) bench/results/*.json bench/results/*.png

# prx-nb: `make speedrun` trains and judges a Shapes model on this machine; `make test` runs every test.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/shapes-cpu
PRESET ?= shapes-cpu

.PHONY: venv speedrun test nbtest pytest export clean-nbs check-sync

$(BIN)/prx-nb: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

venv: $(BIN)/prx-nb ## make .venv with pip and install prx-nb with its extras

speedrun: venv ## train, save, judge and report a Shapes model in $(OUT)
	$(BIN)/prx-nb speedrun --preset $(PRESET) --out $(OUT) --overwrite

nbtest: venv ## run every notebook (cells flagged slow/gpu/multigpu are skipped)
	$(BIN)/nbdev-test --n-workers 1 --timing

pytest: venv ## CLI, packaging and artifact tests
	$(BIN)/python -m pytest -q --durations=15 tests

check-sync: venv ## notebooks and package agree, notebooks are clean
	$(BIN)/nbdev-export && git diff --exit-code -- prx_nb
	$(BIN)/nbdev-clean && git diff --exit-code -- nbs

test: nbtest pytest ## everything CI runs

export: venv
	$(BIN)/nbdev-export

clean-nbs: venv
	$(BIN)/nbdev-clean
